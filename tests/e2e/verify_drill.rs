//! `lifeboat verify` and `lifeboat drill`: a healthy snapshot passes and its proof reaches the store and the
//! daemon's metrics; corrupt bytes, a foreign key, a lying catalog and a failing SQL check are each caught.

use crate::common::{backup, small_source, workspace};
use lifeboat_core::pipeline::{decode, encode_to_vec, EncodeSettings};
use lifeboat_core::snapshot::{Catalog, Manifest, ObjectKind};
use lifeboat_tests::daemon::{daemon_toml, free_port, metric, Daemon};
use lifeboat_tests::lifeboat::{
    fs_store_toml, keys, lifeboat, pg_job_toml, s3_store_toml, sign_manifest, write_config,
};
use lifeboat_tests::s3;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

fn snapshot_dir(store: &Path, job: &str, id: &str) -> PathBuf {
    store.join("snapshots").join(job).join(id)
}

/// Makes a stored file writable again (the fs store marks objects read-only) and applies `f` to its bytes.
fn rewrite(path: &Path, f: impl FnOnce(&mut Vec<u8>)) {
    let mut perms = std::fs::metadata(path).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    std::fs::set_permissions(path, perms).unwrap();
    let mut bytes = std::fs::read(path).unwrap();
    f(&mut bytes);
    std::fs::write(path, bytes).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_drill_of_a_healthy_snapshot_passes_is_recorded_and_exported_by_the_daemon() {
    let Some(tier) = s3::require_ceph() else {
        return;
    };
    let pg = small_source("app", 3000);
    pg.psql(
        "app",
        "create table \"Ünïcode Tab\" as select g from generate_series(1, 7) g;",
    )
    .unwrap();
    let (dir, k) = workspace();
    let bucket = tier.create_locked_bucket("e2e-drill").await;
    let port = free_port();
    let config = write_config(
        dir.path(),
        &k.recipient,
        &[
            daemon_toml(port, ""),
            s3_store_toml("offsite", &tier, &bucket, "compliance"),
            pg_job_toml(
                "app",
                "offsite",
                &pg.url("app"),
                &["app"],
                "schedule = \"0 0 1 1 *\"\ncatch_up = false\n\n[jobs.app.drill]\nchecks = [\"select count(*) = 3000 from t\"]\n",
            ),
        ],
    );
    let id = backup(&config, "app");
    let textfile = dir.path().join("drill.prom");
    let out = lifeboat(
        &config,
        &[
            "drill",
            "--identity",
            k.identity_file.to_str().unwrap(),
            "--textfile",
            textfile.to_str().unwrap(),
        ],
    );
    out.expect_code(0);
    assert!(
        out.stdout.contains(&format!("drill app/{id}: PASSED")),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("row counts in app: all 2 tables exist with the exact row counts"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("check `select count(*) = 3000 from t`: true"),
        "{}",
        out.stdout
    );
    let prom = std::fs::read_to_string(&textfile).unwrap();
    assert_eq!(
        metric(&prom, "lifeboat_drill_success{job=\"app\"}"),
        Some(1.0),
        "{prom}"
    );
    assert!(
        metric(
            &prom,
            "lifeboat_restore_drill_duration_seconds{job=\"app\"}"
        )
        .unwrap()
            > 0.0
    );

    // The record is in the store, locked like the snapshots.
    let client = tier.client().await;
    let listed = client
        .list_objects_v2()
        .bucket(&bucket)
        .prefix(format!("lifeboat/verifications/app/{id}/"))
        .send()
        .await
        .unwrap();
    let keys: Vec<&str> = listed.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(keys.len(), 1, "{keys:?}");
    let head = client
        .head_object()
        .bucket(&bucket)
        .key(keys[0])
        .send()
        .await
        .unwrap();
    assert_eq!(
        head.object_lock_mode().map(|m| m.as_str()),
        Some("COMPLIANCE")
    );
    let body = client
        .get_object()
        .bucket(&bucket)
        .key(keys[0])
        .send()
        .await
        .unwrap();
    let bytes = body.body.collect().await.unwrap().into_bytes();
    let record: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(record["kind"], "drill");
    assert_eq!(record["passed"], true);
    let finished =
        chrono::DateTime::parse_from_rfc3339(record["finished_at"].as_str().unwrap()).unwrap();

    // The daemon reads it at start-up: the verify gauge is the record's time.
    let daemon = Daemon::start(&config, port);
    daemon.wait_ready(200, Duration::from_secs(30));
    let text = daemon.metrics();
    let exported = metric(
        &text,
        "lifeboat_verify_last_success_timestamp_seconds{job=\"app\"}",
    )
    .unwrap_or_else(|| panic!("no verify gauge:\n{text}"));
    assert!(
        (exported - finished.timestamp_millis() as f64 / 1000.0).abs() < 0.01,
        "{exported} vs {finished}"
    );
    assert!(
        metric(
            &text,
            "lifeboat_restore_drill_duration_seconds{job=\"app\"}"
        )
        .unwrap()
            > 0.0
    );
    // The alerting gauges of the newest drill (LifeboatDrillFailing reads the first).
    assert_eq!(
        metric(&text, "lifeboat_drill_last_passed{job=\"app\"}"),
        Some(1.0),
        "{text}"
    );
    let drilled = metric(
        &text,
        "lifeboat_drill_last_finished_timestamp_seconds{job=\"app\"}",
    )
    .unwrap_or_else(|| panic!("no drill time gauge:\n{text}"));
    assert!((drilled - finished.timestamp_millis() as f64 / 1000.0).abs() < 0.01);
}

/// A job on an fs store in `dir`, backed up once; returns (config, store dir, snapshot id).
fn fs_backup(
    dir: &Path,
    recipient: &str,
    pg: &lifeboat_tests::postgres::PgCluster,
    drill: &str,
) -> (PathBuf, PathBuf, String) {
    let store = dir.join("store");
    let config = write_config(
        dir,
        recipient,
        &[
            fs_store_toml("local", &store),
            pg_job_toml("app", "local", &pg.url("app"), &["app"], drill),
        ],
    );
    let id = backup(&config, "app");
    (config, store, id)
}

#[test]
fn verify_without_identity_catches_a_corrupted_object() {
    let pg = small_source("app", 2000);
    let (dir, k) = workspace();
    let (config, store, id) = fs_backup(dir.path(), &k.recipient, &pg, "");
    lifeboat(&config, &["verify", &format!("app/{id}"), "--no-record"]).expect_code(0);
    rewrite(
        &snapshot_dir(&store, "app", &id).join("app.dump.zst.age"),
        |b| {
            let mid = b.len() / 2;
            b[mid] ^= 0x01;
        },
    );
    let out = lifeboat(
        &config,
        &["verify", "--latest", "--job", "app", "--no-record"],
    );
    out.expect_code(1);
    assert!(
        out.stdout
            .contains("FAIL app.dump: stored SHA-256: the stored bytes do not match the manifest"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("ok   globals.sql: stored SHA-256"),
        "{}",
        out.stdout
    );
    assert!(out.stderr.contains("failed verification"), "{}", out.stderr);
}

#[test]
fn verify_with_an_identity_the_snapshot_is_not_encrypted_to_says_so() {
    let pg = small_source("app", 100);
    let (dir, k) = workspace();
    let (config, _, id) = fs_backup(dir.path(), &k.recipient, &pg, "");
    let other_dir = tempfile::tempdir().unwrap();
    let other = keys(other_dir.path());
    let out = lifeboat(
        &config,
        &[
            "verify",
            &format!("app/{id}"),
            "--identity",
            other.identity_file.to_str().unwrap(),
            "--no-record",
        ],
    );
    out.expect_code(1);
    assert!(
        out.stdout.contains("not encrypted to this identity"),
        "{}",
        out.stdout
    );
    // The stored bytes themselves are fine, and that is reported too.
    assert!(
        out.stdout.contains("ok   app.dump: stored SHA-256"),
        "{}",
        out.stdout
    );
    // With the right key everything passes and a record is written.
    let ok = lifeboat(
        &config,
        &[
            "verify",
            &format!("app/{id}"),
            "--identity",
            k.identity_file.to_str().unwrap(),
        ],
    );
    ok.expect_code(0);
    assert!(
        ok.stdout
            .contains("app.dump: format: pg_restore reads the whole archive"),
        "{}",
        ok.stdout
    );
    assert!(
        ok.stdout.contains("record: verifications/app/"),
        "{}",
        ok.stdout
    );
}

#[test]
fn a_drill_fails_naming_the_table_whose_row_count_the_catalog_contradicts() {
    let pg = small_source("app", 1000);
    let (dir, k) = workspace();
    let (config, store, id) = fs_backup(dir.path(), &k.recipient, &pg, "");
    let identities = lifeboat_core::restore::load_identities(&k.identity_file).unwrap();

    // Craft a second snapshot: the same objects, but a catalog claiming one more row in `t`.
    let src = snapshot_dir(&store, "app", &id);
    let forged_id = format!("{}-zzzzzz", &id[..16]);
    let dst = snapshot_dir(&store, "app", &forged_id);
    std::fs::create_dir_all(&dst).unwrap();
    let mut manifest =
        Manifest::from_json(&std::fs::read(src.join("manifest.json")).unwrap()).unwrap();
    manifest.snapshot_id = forged_id.parse().unwrap();
    for object in &mut manifest.objects {
        let from = src.join(format!("{}.zst.age", object.name));
        let to = dst.join(format!("{}.zst.age", object.name));
        object.key = object.key.replace(&id, &forged_id);
        if object.kind != ObjectKind::Catalog {
            std::fs::copy(&from, &to).unwrap();
            continue;
        }
        let stored = std::fs::read(&from).unwrap();
        let (_, plain) = decode(
            &stored[..],
            &identities,
            Vec::new(),
            &CancellationToken::new(),
        )
        .unwrap();
        let mut catalog: Catalog = serde_json::from_slice(&plain).unwrap();
        let table = catalog.databases[0]
            .tables
            .iter_mut()
            .find(|t| t.name == "t")
            .unwrap();
        table.rows += 1;
        let recipient: age::x25519::Recipient = k.recipient.parse().unwrap();
        let (report, bytes) = encode_to_vec(
            &serde_json::to_vec(&catalog).unwrap(),
            &[recipient],
            EncodeSettings {
                level: 3,
                threads: 0,
            },
        )
        .unwrap();
        std::fs::write(&to, bytes).unwrap();
        object.payload_bytes = report.payload_bytes;
        object.payload_sha256 = report.payload_sha256;
        object.stored_bytes = report.stored_bytes;
        object.stored_sha256 = report.stored_sha256;
    }
    // Signed with the test's key: only the catalog is wrong.
    let json = manifest.to_json();
    std::fs::write(
        dst.join("manifest.json.sig"),
        sign_manifest(dir.path(), &json),
    )
    .unwrap();
    std::fs::write(dst.join("manifest.json"), json).unwrap();

    let out = lifeboat(
        &config,
        &[
            "drill",
            "--snapshot",
            &format!("app/{forged_id}"),
            "--identity",
            k.identity_file.to_str().unwrap(),
            "--no-record",
        ],
    );
    out.expect_code(1);
    assert!(
        out.stdout.contains(
            "FAIL row counts in app: table public.t: 1001 rows at dump time, 1000 restored"
        ),
        "{}",
        out.stdout
    );
    assert!(out.stderr.contains("drill FAILED"), "{}", out.stderr);
    // The genuine snapshot still drills clean.
    lifeboat(
        &config,
        &[
            "drill",
            "--snapshot",
            &format!("app/{id}"),
            "--identity",
            k.identity_file.to_str().unwrap(),
            "--no-record",
        ],
    )
    .expect_code(0);
}

#[test]
fn a_failing_sql_check_fails_the_drill_and_is_recorded() {
    let pg = small_source("app", 50);
    let (dir, k) = workspace();
    let (config, store, id) = fs_backup(
        dir.path(),
        &k.recipient,
        &pg,
        "\n[jobs.app.drill]\nchecks = [\"select count(*) > 50 from t\", \"select 1\", \"select * from missing\"]\n",
    );
    let out = lifeboat(
        &config,
        &[
            "drill",
            "--identity",
            k.identity_file.to_str().unwrap(),
            "--json",
        ],
    );
    out.expect_code(1);
    let records: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let checks = records[0]["checks"].as_array().unwrap();
    let find = |name: &str| {
        checks
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("{name}: {checks:?}"))
    };
    assert_eq!(
        find("check `select count(*) > 50 from t`")["detail"],
        "returned false"
    );
    assert!(find("check `select 1`")["detail"]
        .as_str()
        .unwrap()
        .contains("does not return a boolean"));
    assert!(find("check `select * from missing`")["detail"]
        .as_str()
        .unwrap()
        .contains("does not exist"));
    assert_eq!(find("row counts in app")["passed"], true);
    // The failure is recorded too, so the daemon does not count it as a success, and exports it as failed.
    let records_dir = store.join("verifications").join("app").join(&id);
    assert_eq!(std::fs::read_dir(records_dir).unwrap().count(), 1);
    let port = free_port();
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!("\n{}", daemon_toml(port, "")));
    std::fs::write(&config, text).unwrap();
    let daemon = Daemon::start(&config, port);
    daemon.wait_ready(200, Duration::from_secs(30));
    let metrics = daemon.metrics();
    assert_eq!(
        metric(&metrics, "lifeboat_drill_last_passed{job=\"app\"}"),
        Some(0.0),
        "{metrics}"
    );
    assert_eq!(
        metric(
            &metrics,
            "lifeboat_verify_last_success_timestamp_seconds{job=\"app\"}"
        ),
        None,
        "a failed drill is no success"
    );
}

#[test]
fn a_drill_on_a_scratch_server_uses_fresh_databases_and_drops_them() {
    let pg = small_source("app", 500);
    let scratch = lifeboat_tests::postgres::PgCluster::start().unwrap();
    let (dir, k) = workspace();
    let (config, _, id) = fs_backup(
        dir.path(),
        &k.recipient,
        &pg,
        "\n[jobs.app.drill]\nchecks = [\"select count(*) = 500 from t\"]\n",
    );
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "\n[drill]\nscratch_url = \"{}\"\n",
        scratch.url("postgres")
    ));
    std::fs::write(&config, text).unwrap();
    let out = lifeboat(
        &config,
        &[
            "drill",
            "--identity",
            k.identity_file.to_str().unwrap(),
            "--no-record",
        ],
    );
    out.expect_code(0);
    assert!(
        out.stdout.contains(&format!("drill app/{id}: PASSED")),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("into lifeboat_drill_"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("check `select count(*) = 500 from t`: true"),
        "{}",
        out.stdout
    );
    let left = scratch
        .psql(
            "postgres",
            "select count(*) from pg_database where datname like 'lifeboat_drill_%'",
        )
        .unwrap();
    assert_eq!(
        left.trim(),
        "0",
        "drill databases left on the scratch server"
    );
}
