//! A job with two stores (`stores = [...]`): each snapshot is read once and stored byte-identically in both, each
//! store with its own manifest; with one store down the snapshot fails, the healthy store gets no manifest, and the
//! per-store metrics say which store failed.

use crate::common::{listed_ids, small_source, workspace};
use lifeboat_tests::daemon::{daemon_toml, free_port, metric, Daemon};
use lifeboat_tests::lifeboat::{
    fs_store_toml, lifeboat, lifeboatd, other_filesystem, pg_job_toml, s3_store_toml, write_config,
};
use lifeboat_tests::s3;
use std::path::Path;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread")]
async fn two_stores_get_identical_bytes_and_one_store_down_fails_the_snapshot() {
    let Some(tier) = s3::require_ceph() else {
        return;
    };
    let (dir, k) = workspace();
    let pg = small_source("app", 20_000);
    let bucket = tier.create_locked_bucket("e2e-fan-out").await;
    let other_fs = other_filesystem();
    let local = other_fs.path().join("store");
    let job = pg_job_toml(
        "app",
        "offsite",
        &pg.url("app"),
        &["app"],
        "retry_attempts = 1\n",
    )
    .replace("store = \"offsite\"", "stores = [\"offsite\", \"local\"]");
    let config = write_config(
        dir.path(),
        &k.recipient,
        &[
            s3_store_toml("offsite", &tier, &bucket, "compliance"),
            fs_store_toml("local", &local),
            job.clone(),
        ],
    );
    let run = lifeboatd(&config, &["run", "app"]);
    run.expect_code(0);
    let id = run.stdout.trim().to_owned();
    assert_eq!(
        listed_ids(&config, Some("offsite")),
        std::slice::from_ref(&id)
    );
    assert_eq!(
        listed_ids(&config, Some("local")),
        std::slice::from_ref(&id)
    );

    // Every data object is the same bytes in both stores; each manifest records its own store's versions.
    let snapshot = local.join("snapshots/app").join(&id);
    let fs_manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(snapshot.join("manifest.json")).unwrap()).unwrap();
    let client = tier.client().await;
    let get = |key: String| {
        let client = client.clone();
        let bucket = bucket.clone();
        async move {
            client
                .get_object()
                .bucket(&bucket)
                .key(format!("lifeboat/{key}"))
                .send()
                .await
                .unwrap()
                .body
                .collect()
                .await
                .unwrap()
                .into_bytes()
        }
    };
    let s3_manifest: serde_json::Value =
        serde_json::from_slice(&get(format!("snapshots/app/{id}/manifest.json")).await).unwrap();
    let objects = fs_manifest["objects"].as_array().unwrap();
    assert!(
        objects.len() >= 3,
        "globals, app.dump, catalog: {fs_manifest}"
    );
    for (fs_obj, s3_obj) in objects
        .iter()
        .zip(s3_manifest["objects"].as_array().unwrap())
    {
        let key = fs_obj["key"].as_str().unwrap().to_owned();
        assert_eq!(fs_obj["stored_sha256"], s3_obj["stored_sha256"]);
        let in_fs = std::fs::read(local.join(&key)).unwrap();
        let in_s3 = get(key.clone()).await;
        assert!(in_fs == in_s3.as_ref(), "{key} differs between the stores");
        assert!(s3_obj["version_id"].is_string(), "{s3_obj}");
        assert!(fs_obj["version_id"].is_null(), "{fs_obj}");
    }
    // Either copy restores.
    let out = dir.path().join("from-local.dump");
    lifeboat(
        &config,
        &[
            "restore",
            &format!("app/{id}"),
            "--store",
            "local",
            "--identity",
            k.identity_file.to_str().unwrap(),
            "--to-file",
            out.to_str().unwrap(),
            "--database",
            "app",
        ],
    )
    .expect_code(0);
    assert!(std::fs::metadata(&out).unwrap().len() > 1000);

    // A third store that is down (nothing listens on its port): the snapshot fails everywhere.
    let down_port = free_port();
    let down = format!(
        "[stores.down]\nkind = \"s3\"\nendpoint = \"http://127.0.0.1:{down_port}\"\nregion = \"us-east-1\"\nbucket = \"gone\"\npath_style = true\nlock_mode = \"none\"\naccess_key_id_env = \"LIFEBOAT_TEST_CEPH_ACCESS_KEY\"\nsecret_access_key_env = \"LIFEBOAT_TEST_CEPH_SECRET_KEY\"\n"
    );
    let port = free_port();
    let config = write_config(
        dir.path(),
        &k.recipient,
        &[
            daemon_toml(port, ""),
            s3_store_toml("offsite", &tier, &bucket, "compliance"),
            fs_store_toml("local", &local),
            down,
            job.replace(
                "stores = [\"offsite\", \"local\"]",
                "stores = [\"offsite\", \"local\", \"down\"]",
            ),
        ],
    );
    let run = lifeboatd(&config, &["run", "app"]);
    run.expect_code(1);
    assert!(run.stderr.contains("store down"), "{}", run.stderr);
    assert_eq!(
        listed_ids(&config, Some("offsite")),
        std::slice::from_ref(&id),
        "no new manifest in a healthy store"
    );
    assert_eq!(
        listed_ids(&config, Some("local")),
        std::slice::from_ref(&id),
        "no new manifest in a healthy store"
    );
    let leftovers: Vec<_> = walkdir(&local)
        .into_iter()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().contains(".partial"))
        })
        .collect();
    assert!(leftovers.is_empty(), "partial files left: {leftovers:?}");

    // The service says which store failed, and how fresh each store is.
    let daemon = Daemon::start(&config, port);
    let text = daemon.wait_for("the failed catch-up run", Duration::from_secs(120), |t| {
        metric(
            t,
            "lifeboat_backup_store_failures_total{job=\"app\",store=\"down\"}",
        )
        .unwrap_or(0.0)
            >= 1.0
    });
    assert!(
        metric(
            &text,
            "lifeboat_backup_runs_total{job=\"app\",result=\"failure\"}"
        )
        .unwrap_or(0.0)
            >= 1.0
    );
    assert_eq!(
        metric(
            &text,
            "lifeboat_backup_store_failures_total{job=\"app\",store=\"local\"}"
        ),
        None
    );
    for store in ["offsite", "local"] {
        let t = metric(
            &text,
            &format!(
                "lifeboat_backup_store_last_success_timestamp_seconds{{job=\"app\",store=\"{store}\"}}"
            ),
        );
        assert!(t.is_some_and(|t| t > 0.0), "{store}: {text}");
    }
    assert_eq!(
        metric(
            &text,
            "lifeboat_backup_store_last_success_timestamp_seconds{job=\"app\",store=\"down\"}"
        ),
        None
    );
}

fn walkdir(root: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p.clone());
            }
            out.push(p);
        }
    }
    out
}
