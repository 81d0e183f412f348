//! The immutability preflight on Ceph RGW: after `store init`, the writer role's credentials pass every probe and
//! back up; admin credentials on a governance bucket (they may bypass) fail it, and the daemon refuses to back up
//! and says which probe failed in its log and metrics; a bucket without Object Lock fails `lifeboatd check`.

use crate::common::{assert_no_snapshot, small_source, workspace};
use lifeboat_tests::daemon::{daemon_toml, free_port, metric, Daemon};
use lifeboat_tests::lifeboat::{
    lifeboat, lifeboatd, pg_job_toml, s3_store_toml, s3_writer_store_toml, volume_job_toml,
    write_config,
};
use lifeboat_tests::s3::{self, unique_bucket_name};
use std::path::{Path, PathBuf};
use std::time::Duration;

const PROBES: &[&str] = &[
    "object_lock",
    "canary_write",
    "retention_shorten",
    "locked_version_delete",
    "delete_marker",
    "lock_config_change",
    "lifecycle_change",
];

/// `lifeboat store audit --json`: (immutable, [(probe, ok, detail, fix)]).
fn audit(config: &Path, code: i32) -> (bool, Vec<(String, bool, String, String)>) {
    let out = lifeboat(config, &["store", "audit", "offsite", "--json"]);
    out.expect_code(code);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let probes = v["probes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["probe"].as_str().unwrap().to_owned(),
                p["ok"].as_bool().unwrap(),
                p["detail"].as_str().unwrap().to_owned(),
                p["fix"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    (v["immutable"].as_bool().unwrap(), probes)
}

/// Sets the bucket up with `lifeboat store init` and the admin credentials, in `lock_mode`.
fn store_init(dir: &Path, tier: &s3::S3Tier, bucket: &str, lock_mode: &str) {
    let admin_dir = dir.join(format!("admin-{lock_mode}"));
    std::fs::create_dir_all(&admin_dir).unwrap();
    let admin = write_config(
        &admin_dir,
        "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p",
        &[s3_store_toml("offsite", tier, bucket, lock_mode)],
    );
    lifeboat(&admin, &["store", "init", "offsite"]).expect_code(0);
}

fn config_in(dir: &Path, sub: &str, recipient: &str, tables: &[String]) -> PathBuf {
    let d = dir.join(sub);
    std::fs::create_dir_all(&d).unwrap();
    write_config(&d, recipient, tables)
}

#[tokio::test(flavor = "multi_thread")]
async fn writer_credentials_pass_the_preflight_and_admin_credentials_that_can_bypass_are_refused() {
    let Some(tier) = s3::require_ceph() else {
        return;
    };
    let (dir, k) = workspace();
    let pg = small_source("app", 100);
    let job = pg_job_toml(
        "app",
        "offsite",
        &pg.url("app"),
        &["app"],
        "retry_attempts = 1\n",
    );

    // Compliance bucket from store init; the daemon runs as the writer role.
    let bucket = unique_bucket_name("e2e-audit-writer");
    store_init(dir.path(), &tier, &bucket, "compliance");
    tier.apply_writer_policy(&bucket).await;
    let writer = config_in(
        dir.path(),
        "writer",
        &k.recipient,
        &[
            s3_writer_store_toml("offsite", &tier, &bucket, "compliance"),
            job.clone(),
        ],
    );
    let (immutable, probes) = audit(&writer, 0);
    assert!(immutable, "{probes:#?}");
    let names: Vec<&str> = probes.iter().map(|p| p.0.as_str()).collect();
    assert_eq!(names, PROBES);
    assert!(probes.iter().all(|p| p.1), "{probes:#?}");
    for (probe, _, detail, _) in &probes[2..] {
        assert!(detail.contains("refused"), "{probe}: {detail}");
    }
    let check = lifeboatd(&writer, &["check"]);
    check.expect_code(0);
    assert!(
        check
            .stdout
            .contains("ok   store offsite: immutability: locked_version_delete"),
        "{}",
        check.stdout
    );
    let run = lifeboatd(&writer, &["run", "app"]);
    run.expect_code(0);
    assert!(run.stderr.contains("Store audit passed"), "{}", run.stderr);
    let snapshots = lifeboat(&writer, &["snapshots", "--json"]);
    snapshots.expect_code(0);
    assert!(snapshots.stdout.contains(run.stdout.trim()));
    // The canaries are where the lifecycle rule expires them.
    let canaries = tier
        .client()
        .await
        .list_objects_v2()
        .bucket(&bucket)
        .prefix("lifeboat/canary/")
        .send()
        .await
        .unwrap();
    assert!(canaries.key_count().unwrap_or(0) >= 3, "{canaries:?}");

    // Governance bucket; the daemon holds the admin (owner) credentials, which may bypass governance.
    let bucket = unique_bucket_name("e2e-audit-admin");
    store_init(dir.path(), &tier, &bucket, "governance");
    let port = free_port();
    let admin_store = s3_store_toml("offsite", &tier, &bucket, "governance")
        .replace("require_immutable = false\n", "");
    let admin = config_in(
        dir.path(),
        "daemon-admin",
        &k.recipient,
        &[daemon_toml(port, ""), admin_store, job],
    );
    let (immutable, probes) = audit(&admin, 1);
    assert!(!immutable);
    for name in ["retention_shorten", "locked_version_delete"] {
        let p = probes.iter().find(|p| p.0 == name).unwrap();
        assert!(!p.1 && p.2.contains("ALLOWED"), "{p:?}");
        assert!(
            p.3.contains("compliance"),
            "the fix names compliance mode: {p:?}"
        );
    }
    let run = lifeboatd(&admin, &["run", "app"]);
    run.expect_code(1);
    assert!(
        run.stderr
            .contains("refusing to back up into store offsite")
            && run.stderr.contains("locked_version_delete failed"),
        "{}",
        run.stderr
    );
    assert_no_snapshot(&admin);

    // The service: the audit at start-up exports the verdict per probe, and the catch-up run is refused.
    let daemon = Daemon::start(&admin, port);
    let text = daemon.wait_for("the refused catch-up run", Duration::from_secs(90), |t| {
        metric(
            t,
            "lifeboat_backup_runs_total{job=\"app\",result=\"failure\"}",
        )
        .unwrap_or(0.0)
            >= 1.0
    });
    assert_eq!(
        metric(&text, "lifeboat_store_immutable{store=\"offsite\"}"),
        Some(0.0)
    );
    assert_eq!(
        metric(
            &text,
            "lifeboat_store_immutability_required{store=\"offsite\"}"
        ),
        Some(1.0),
        "the alert pages for this store"
    );
    assert_eq!(
        metric(
            &text,
            "lifeboat_store_audit_probe_ok{store=\"offsite\",probe=\"locked_version_delete\"}"
        ),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "lifeboat_store_audit_probe_ok{store=\"offsite\",probe=\"canary_write\"}"
        ),
        Some(1.0)
    );
    let log = daemon.log();
    assert!(log.contains("Store audit FAILED"), "{log}");
    assert_no_snapshot(&admin);
}

#[tokio::test(flavor = "multi_thread")]
async fn check_fails_on_a_bucket_without_object_lock_and_names_the_fix() {
    let Some(tier) = s3::require_ceph() else {
        return;
    };
    let (dir, k) = workspace();
    let bucket = tier.create_plain_bucket("e2e-audit-plain").await;
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let config = write_config(
        dir.path(),
        &k.recipient,
        &[
            s3_store_toml("offsite", &tier, &bucket, "compliance")
                .replace("require_immutable = false\n", ""),
            volume_job_toml("files", "offsite", &data, ""),
        ],
    );
    let check = lifeboatd(&config, &["check"]);
    check.expect_code(1);
    assert!(
        check
            .stdout
            .contains("FAIL store offsite: immutability: object_lock"),
        "{}",
        check.stdout
    );
    assert!(
        check
            .stdout
            .contains("Object Lock can only be enabled when a bucket is created")
            && check.stdout.contains("lifeboat store init offsite"),
        "{}",
        check.stdout
    );
    let run = lifeboatd(&config, &["run", "files"]);
    run.expect_code(1);
    assert!(run.stderr.contains("object_lock failed"), "{}", run.stderr);
}
