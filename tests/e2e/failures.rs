//! Failure paths: a pg_dump that fails (wrong database, killed mid-stream) leaves no manifest and no
//! incomplete multipart upload, on the fs store and on Ceph.

use crate::common::{assert_no_snapshot, workspace};
use lifeboat_tests::lifeboat::{
    fs_store_toml, lifeboatd, pg_job_toml, s3_store_toml, write_config,
};
use lifeboat_tests::postgres::PgCluster;
use lifeboat_tests::s3;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// A client-tools directory whose pg_dump writes ~2 MB of the real dump and is then killed (SIGKILL).
fn killing_pg_dump(dir: &Path, real: &Path) -> PathBuf {
    let bin = dir.join("fakebin");
    std::fs::create_dir_all(&bin).unwrap();
    let script = format!(
        "#!/bin/bash\nif [ \"$1\" = --version ]; then exec '{0}/pg_dump' --version; fi\n'{0}/pg_dump' \"$@\" | head -c 2000000\nkill -KILL $$\n",
        real.display()
    );
    let p = bin.join("pg_dump");
    std::fs::write(&p, script).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink(real.join("pg_dumpall"), bin.join("pg_dumpall")).unwrap();
    bin
}

fn bulky_source() -> PgCluster {
    let pg = PgCluster::start().unwrap();
    pg.create_database("app").unwrap();
    // Random text compresses badly, so the dump is well past the 2 MB cut and several 5 MiB parts.
    pg.psql("app", "create table big as select i, md5(i::text) || md5((i*7)::text) as t from generate_series(1, 400000) i;").unwrap();
    pg
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_dumps_leave_no_manifest_on_fs() {
    let pg = bulky_source();
    let (dir, k) = workspace();
    let store_dir = dir.path().join("store");
    let fake = killing_pg_dump(dir.path(), pg.bin_dir());
    let extra = format!("pg_bin_dir = \"{}\"\n", fake.display());
    let config = write_config(
        dir.path(),
        &k.recipient,
        &[
            fs_store_toml("local", &store_dir),
            pg_job_toml("wrongdb", "local", &pg.url("app"), &["no_such_db"], ""),
            pg_job_toml("killed", "local", &pg.url("app"), &["app"], &extra),
        ],
    );
    let out = lifeboatd(&config, &["run", "wrongdb"]);
    out.expect_code(1);
    assert!(out.stderr.contains("no_such_db"), "{}", out.stderr);
    let out = lifeboatd(&config, &["run", "killed"]);
    out.expect_code(1);
    assert!(
        out.stderr.contains("signal 9"),
        "the kill is reported: {}",
        out.stderr
    );
    assert_no_snapshot(&config);
    // No partial files left behind either.
    let leftovers: Vec<String> = walk(&store_dir)
        .into_iter()
        .filter(|p| p.contains(".partial-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert!(!walk(&store_dir)
        .iter()
        .any(|p| p.ends_with("manifest.json")));
}

fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p.display().to_string());
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_dumps_leave_no_manifest_and_no_multipart_upload_on_ceph() {
    let Some(tier) = s3::require_ceph() else {
        return;
    };
    let pg = bulky_source();
    let (dir, k) = workspace();
    let bucket = tier.create_locked_bucket("e2e-failures").await;
    let fake = killing_pg_dump(dir.path(), pg.bin_dir());
    let extra = format!("pg_bin_dir = \"{}\"\n", fake.display());
    let config = write_config(
        dir.path(),
        &k.recipient,
        &[
            s3_store_toml("offsite", &tier, &bucket, "compliance"),
            pg_job_toml("wrongdb", "offsite", &pg.url("app"), &["no_such_db"], ""),
            pg_job_toml("killed", "offsite", &pg.url("app"), &["app"], &extra),
        ],
    );
    lifeboatd(&config, &["run", "wrongdb"]).expect_code(1);
    let out = lifeboatd(&config, &["run", "killed"]);
    out.expect_code(1);
    assert!(out.stderr.contains("signal 9"), "{}", out.stderr);
    assert_no_snapshot(&config);

    let client = tier.client().await;
    crate::common::assert_no_multipart_uploads(&tier, &bucket).await;
    let objects = client
        .list_objects_v2()
        .bucket(&bucket)
        .send()
        .await
        .unwrap();
    let keys: Vec<&str> = objects.contents().iter().filter_map(|o| o.key()).collect();
    assert!(
        !keys.iter().any(|k| k.ends_with("manifest.json")),
        "{keys:?}"
    );
    assert!(
        !keys.iter().any(|k| k.ends_with("app.dump.zst.age")),
        "the killed dump was never completed: {keys:?}"
    );
}
