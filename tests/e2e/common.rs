//! Shared steps of the end-to-end tests: a source cluster with the rich fixture, a config, a backup.

use lifeboat_tests::compare::{assert_same, fingerprint, DbFingerprint};
use lifeboat_tests::fixture::create_rich_database;
use lifeboat_tests::lifeboat::{keys, lifeboatd, Keys};
use lifeboat_tests::postgres::PgCluster;
use std::path::Path;

/// A source cluster holding the rich fixture database `app`.
pub fn rich_source() -> PgCluster {
    let pg = PgCluster::start().expect("start source cluster");
    create_rich_database(&pg, "app").expect("create fixture");
    pg
}

/// A fresh temp dir and key pair.
pub fn workspace() -> (tempfile::TempDir, Keys) {
    let dir = tempfile::tempdir().expect("tempdir");
    let k = keys(dir.path());
    (dir, k)
}

/// Runs `lifeboatd run JOB` and returns the printed snapshot id.
pub fn backup(config: &Path, job: &str) -> String {
    let out = lifeboatd(config, &["run", job]);
    out.expect_code(0);
    let id = out.stdout.trim().to_owned();
    assert_eq!(
        id.len(),
        23,
        "snapshot id printed on stdout: {:?}",
        out.stdout
    );
    id
}

/// Compares two databases. Database-level properties (settings, comment) only survive
/// `pg_restore --create`, which a restore into a new database name does not use.
pub async fn assert_databases_equal(a: (&PgCluster, &str), b: (&PgCluster, &str)) {
    let mut fa: DbFingerprint = fingerprint(a.0, a.1).await.expect("fingerprint source");
    let mut fb: DbFingerprint = fingerprint(b.0, b.1).await.expect("fingerprint restored");
    fa.database = Default::default();
    fb.database = Default::default();
    assert_same(&fa, &fb);
}

/// A cluster with database `db` holding one table `t` of `rows` integers.
pub fn small_source(db: &str, rows: u32) -> PgCluster {
    let pg = PgCluster::start().expect("start source cluster");
    pg.create_database(db).expect("create database");
    pg.psql(
        db,
        &format!("create table t as select generate_series(1, {rows}) i;"),
    )
    .expect("fill table");
    pg
}

/// `lifeboat snapshots --json` lists nothing.
pub fn assert_no_snapshot(config: &Path) {
    let out = lifeboat_tests::lifeboat::lifeboat(config, &["snapshots", "--json"]);
    out.expect_code(0);
    assert_eq!(out.stdout.trim(), "[]", "no snapshot may be listed");
}

/// No incomplete multipart upload is left in `bucket`.
pub async fn assert_no_multipart_uploads(tier: &lifeboat_tests::s3::S3Tier, bucket: &str) {
    let uploads = tier
        .client()
        .await
        .list_multipart_uploads()
        .bucket(bucket)
        .send()
        .await
        .expect("ListMultipartUploads");
    assert!(
        uploads.uploads().is_empty(),
        "{}: multipart uploads left behind: {:?}",
        tier.name,
        uploads.uploads()
    );
}

/// Holds an ACCESS EXCLUSIVE lock on `app.t` in an open transaction, so that pg_dump waits forever for its
/// ACCESS SHARE lock. Roll back (or drop the client) to release it.
pub async fn block_pg_dump(pg: &PgCluster, db: &str) -> tokio_postgres::Client {
    let locker = pg.connect(db).await.expect("connect");
    locker
        .batch_execute("BEGIN; LOCK TABLE t IN ACCESS EXCLUSIVE MODE;")
        .await
        .expect("lock table t");
    locker
}

/// Whether a pg_dump of the cluster on `port` is running.
pub fn pg_dump_running(port: u16) -> bool {
    let out = lifeboat_tests::postgres::run(
        std::process::Command::new("pgrep").args(["-f", &format!("pg_dump.*port={port}")]),
    )
    .expect("pgrep");
    out.status.success()
}

/// pg_dump of the cluster on `port` is gone (within 10 s).
pub fn assert_pg_dump_gone(port: u16) {
    assert!(
        lifeboat_tests::postgres::wait_until(std::time::Duration::from_secs(10), || {
            !pg_dump_running(port)
        }),
        "pg_dump was left running"
    );
}

/// The ids `lifeboat snapshots --json` lists (in `store`, or the config's default store), oldest first.
pub fn listed_ids(config: &Path, store: Option<&str>) -> Vec<String> {
    let mut args = vec!["snapshots", "--json"];
    if let Some(s) = store {
        args.extend(["--store", s]);
    }
    let out = lifeboat_tests::lifeboat::lifeboat(config, &args);
    out.expect_code(0);
    let list: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    list.as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .collect()
}
