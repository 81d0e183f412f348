//! `lifeboat doctor` on a real host: a healthy config passes with its warnings said, a wrong identity and an
//! unreachable store fail naming the fix, and against Ceph it checks the store's clock and runs the audit.

use crate::common::{small_source, workspace};
use lifeboat_tests::lifeboat::{
    fs_store_toml, keys, lifeboat, other_filesystem, pg_job_toml, s3_store_toml, write_config,
};
use lifeboat_tests::s3;

fn line<'a>(stdout: &'a str, start: &str) -> &'a str {
    stdout
        .lines()
        .find(|l| l.starts_with(start))
        .unwrap_or_else(|| panic!("no line starting with {start:?} in:\n{stdout}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn doctor_checks_keys_stores_clock_and_sources_and_names_fixes() {
    let (dir, k) = workspace();
    let pg = small_source("app", 10);
    let other_fs = other_filesystem();
    let mut tables = vec![
        fs_store_toml("local", &other_fs.path().join("store")),
        pg_job_toml("app", "local", &pg.url("app"), &["app"], ""),
    ];
    let ceph = s3::ceph();
    if let Some(tier) = &ceph {
        let bucket = tier.create_locked_bucket("e2e-doctor").await;
        tables.push(s3_store_toml("offsite", tier, &bucket, "compliance"));
    }
    let config = write_config(dir.path(), &k.recipient, &tables);
    let identity = k.identity_file.to_str().unwrap();

    let out = lifeboat(&config, &["doctor", "--identity", identity]);
    out.expect_code(0);
    let s = &out.stdout;
    line(s, "ok   configuration: ");
    assert!(line(s, &format!("ok   identity {identity}")).contains("decrypts"));
    assert!(line(s, "warn encryption: recipients").contains("add a second one"));
    assert!(line(s, "ok   manifest signing").contains("ed25519:"));
    line(s, "ok   store local: reachable");
    assert!(line(s, "warn store local: immutability: fs_store").contains("fix:"));
    assert!(line(s, "ok   job app: source: PostgreSQL 15").contains("pg_dump (PostgreSQL) 15"));
    if ceph.is_some() {
        assert!(
            line(s, "ok   store offsite: clock").contains("s ahead of") || s.contains("s behind")
        );
        line(s, "ok   store offsite: immutability: locked_version_delete");
        // Read-only: the bucket's lock configuration only, no canary.
        let ro = lifeboat(&config, &["doctor", "--read-only", "--json"]);
        ro.expect_code(0);
        let probes: serde_json::Value = serde_json::from_str(&ro.stdout).unwrap();
        let whats: Vec<&str> = probes
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["what"].as_str().unwrap())
            .collect();
        assert!(whats.contains(&"store offsite: object lock"), "{whats:?}");
        assert!(
            !whats.iter().any(|w| w.contains("immutability")),
            "{whats:?}"
        );
    }

    // Someone else's identity cannot decrypt these backups; the fix is named.
    let other_dir = tempfile::tempdir().unwrap();
    let stranger = keys(other_dir.path());
    let out = lifeboat(
        &config,
        &[
            "doctor",
            "--identity",
            stranger.identity_file.to_str().unwrap(),
        ],
    );
    out.expect_code(1);
    assert!(
        line(&out.stdout, "FAIL identity").contains("fix: use the identity of one of"),
        "{}",
        out.stdout
    );
    assert!(
        !out.stdout.contains(&stranger.identity_text)
            && !out.stderr.contains(&stranger.identity_text)
    );

    // A store nobody answers for, and a database that is down.
    let port = lifeboat_tests::daemon::free_port();
    let broken = write_config(
        other_dir.path(),
        &k.recipient,
        &[
            format!(
                "[stores.gone]\nkind = \"s3\"\nendpoint = \"http://127.0.0.1:{port}\"\nregion = \"us-east-1\"\nbucket = \"gone\"\npath_style = true\nlock_mode = \"compliance\"\nretention = \"1d\"\naccess_key_id_env = \"LIFEBOAT_TEST_CEPH_ACCESS_KEY\"\nsecret_access_key_env = \"LIFEBOAT_TEST_CEPH_SECRET_KEY\"\n"
            ),
            pg_job_toml("app", "gone", &format!("postgres://postgres@127.0.0.1:{port}/app"), &["app"], ""),
        ],
    );
    let out = lifeboat(&broken, &["doctor", "--read-only"]);
    out.expect_code(1);
    line(&out.stdout, "FAIL store gone: reachable");
    line(&out.stdout, "FAIL job app: source");
    assert!(out.stderr.contains("problem(s)"), "{}", out.stderr);
}
