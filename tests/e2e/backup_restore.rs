//! Backup → restore round trips through the binaries, on the fs store and the S3 tiers, plus the
//! break-glass path with the stock `age` and `zstd` CLIs and Object Lock enforcement.

use crate::common::{assert_databases_equal, backup, rich_source, workspace};
use lifeboat_core::restore::{load_identities, read_catalog, resolve_snapshot};
use lifeboat_core::store::{AnyStore, FsStore, ReadStore};
use lifeboat_tests::compare::table_row_counts;
use lifeboat_tests::lifeboat::{fs_store_toml, lifeboat, pg_job_toml, s3_store_toml, write_config};
use lifeboat_tests::postgres::{run, PgCluster};
use lifeboat_tests::s3;
use lifeboat_tests::skip::{binary_on_path, require_or};
use std::process::Command;

#[tokio::test(flavor = "multi_thread")]
async fn backup_to_fs_restores_an_identical_database_and_refuses_a_non_empty_target() {
    let src = rich_source();
    let (dir, k) = workspace();
    let store_dir = dir.path().join("store");
    let config = write_config(
        dir.path(),
        &k.recipient,
        &[
            fs_store_toml("local", &store_dir),
            pg_job_toml("app", "local", &src.url("app"), &["app"], ""),
        ],
    );
    let id = backup(&config, "app");

    let listing = lifeboat(&config, &["snapshots", "--json"]);
    listing.expect_code(0);
    let rows: serde_json::Value = serde_json::from_str(&listing.stdout).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 1);
    assert_eq!(rows[0]["id"], id.as_str());
    assert_eq!(rows[0]["ok"], true);
    let objects: Vec<&str> = rows[0]["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(objects, ["globals.sql", "app.dump", "catalog.json"]);

    // The catalog holds exact row counts taken in the dump's snapshot.
    let store = AnyStore::Fs(FsStore::open("local", &store_dir, "").unwrap());
    let (_, manifest, signature) = resolve_snapshot(
        &store,
        &format!("app/{id}"),
        None,
        &lifeboat_core::snapshot::TrustedKeys::none(),
    )
    .await
    .unwrap();
    // No key trusted here: the signature exists but nothing vouches for it.
    assert!(
        matches!(
            signature,
            lifeboat_core::snapshot::SignatureStatus::Invalid { .. }
        ),
        "{signature}"
    );
    let identities = load_identities(&k.identity_file).unwrap();
    let catalog = read_catalog(&store, &manifest, identities).await.unwrap();
    let counted = table_row_counts(&src, "app").await.unwrap();
    let db = &catalog.databases[0];
    assert_eq!(db.name, "app");
    for t in &db.tables {
        if let Some(rows) = counted.get(&(t.schema.clone(), t.name.clone())) {
            assert_eq!(t.rows, *rows, "{}.{}", t.schema, t.name);
        }
    }
    assert!(
        db.tables.len() >= 10,
        "fixture tables counted: {:?}",
        db.tables
    );
    // The manifest is public: no table names in it.
    let manifest_text =
        std::fs::read_to_string(store_dir.join(format!("snapshots/app/{id}/manifest.json")))
            .unwrap();
    for t in &db.tables {
        if t.name.len() > 6 {
            assert!(
                !manifest_text.contains(&t.name),
                "table name {} leaked into the manifest",
                t.name
            );
        }
    }

    let target = PgCluster::start().unwrap();
    let target_url = target.url("restored");
    let out = lifeboat(
        &config,
        &[
            "restore",
            &format!("app/{id}"),
            "--identity",
            k.identity_file.to_str().unwrap(),
            "--to-database",
            &target_url,
            "--with-globals",
        ],
    );
    out.expect_code(0);
    assert!(!out.stderr.contains(&k.identity_text), "identity leaked");
    assert_databases_equal((&src, "app"), (&target, "restored")).await;

    // A second restore into the now non-empty database is refused without --confirm, and changes nothing.
    let again = lifeboat(
        &config,
        &[
            "restore",
            "app/latest",
            "--identity",
            k.identity_file.to_str().unwrap(),
            "--to-database",
            &target_url,
        ],
    );
    again.expect_code(2);
    assert!(
        again.stderr.contains("--confirm restored"),
        "{}",
        again.stderr
    );
    assert_databases_equal((&src, "app"), (&target, "restored")).await;

    // With --confirm naming it the restore is attempted; the snapshot's objects already exist, so
    // pg_restore fails — and its single transaction leaves the (damaged) database exactly as it was.
    target
        .psql("restored", "delete from public.blobs;")
        .unwrap();
    let before = lifeboat_tests::compare::fingerprint(&target, "restored")
        .await
        .unwrap();
    let confirmed = lifeboat(
        &config,
        &[
            "restore",
            "app/latest",
            "--identity",
            k.identity_file.to_str().unwrap(),
            "--to-database",
            &target_url,
            "--confirm",
            "restored",
        ],
    );
    confirmed.expect_code(1);
    assert!(
        confirmed.stderr.contains("pg_restore failed"),
        "{}",
        confirmed.stderr
    );
    assert!(
        confirmed.stderr.contains("already exists"),
        "{}",
        confirmed.stderr
    );
    let after = lifeboat_tests::compare::fingerprint(&target, "restored")
        .await
        .unwrap();
    lifeboat_tests::compare::assert_same(&before, &after);

    // --to-file writes the pg_dump archive, refusing to replace an existing file.
    let file = dir.path().join("app.dump");
    lifeboat(
        &config,
        &[
            "restore",
            "app/latest",
            "--identity",
            k.identity_file.to_str().unwrap(),
            "--to-file",
            file.to_str().unwrap(),
        ],
    )
    .expect_code(0);
    let mut list = Command::new(src.bin_dir().join("pg_restore"));
    list.arg("--list").arg(&file);
    let listed = run(&mut list).unwrap();
    assert!(listed.status.success());
    assert!(String::from_utf8_lossy(&listed.stdout).contains("TABLE DATA"));
    lifeboat(
        &config,
        &[
            "restore",
            "app/latest",
            "--identity",
            k.identity_file.to_str().unwrap(),
            "--to-file",
            file.to_str().unwrap(),
        ],
    )
    .expect_code(2);
}

#[tokio::test(flavor = "multi_thread")]
async fn stored_objects_decode_with_the_stock_age_and_zstd_clis() {
    if !require_or(
        "the age and zstd CLIs",
        "apt-get install -y age zstd",
        binary_on_path("age") && binary_on_path("zstd"),
    ) {
        return;
    }
    let src = rich_source();
    let (dir, k) = workspace();
    let store_dir = dir.path().join("store");
    let config = write_config(
        dir.path(),
        &k.recipient,
        &[
            fs_store_toml("local", &store_dir),
            pg_job_toml("app", "local", &src.url("app"), &["app"], ""),
        ],
    );
    let id = backup(&config, "app");
    let object = store_dir.join(format!("snapshots/app/{id}/app.dump.zst.age"));
    // The whole stream decodes to exactly the payload the manifest describes...
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(store_dir.join(format!("snapshots/app/{id}/manifest.json"))).unwrap(),
    )
    .unwrap();
    let entry = manifest["objects"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == "app.dump")
        .unwrap();
    let script = format!(
        "set -o pipefail; age -d -i '{}' '{}' | zstd -d | sha256sum",
        k.identity_file.display(),
        object.display()
    );
    let out = run(Command::new("bash").args(["-c", &script])).unwrap();
    assert!(
        out.status.success(),
        "age -d | zstd -d failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next(),
        entry["payload_sha256"].as_str()
    );
    // ...which pg_restore reads (--list stops after the table of contents, so no pipefail here).
    let script = format!(
        "age -d -i '{}' '{}' | zstd -d | '{}' --list",
        k.identity_file.display(),
        object.display(),
        src.bin_dir().join("pg_restore").display()
    );
    let out = run(Command::new("bash").args(["-c", &script])).unwrap();
    assert!(
        out.status.success(),
        "pg_restore --list failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let toc = String::from_utf8_lossy(&out.stdout);
    assert!(toc.contains("TABLE DATA"), "{toc}");
    assert!(
        toc.contains("BLOB"),
        "large objects are in the archive: {toc}"
    );

    let globals = store_dir.join(format!("snapshots/app/{id}/globals.sql.zst.age"));
    let script = format!(
        "set -o pipefail; age -d -i '{}' '{}' | zstd -d",
        k.identity_file.display(),
        globals.display()
    );
    let out = run(Command::new("bash").args(["-c", &script])).unwrap();
    assert!(out.status.success());
    let sql = String::from_utf8_lossy(&out.stdout);
    assert!(sql.contains("CREATE ROLE app_owner"), "{sql}");
    assert!(
        !sql.contains("PASSWORD 'SCRAM") && !sql.contains("PASSWORD 'md5"),
        "role passwords are never dumped"
    );
}

/// Backs the rich database up into a fresh locked bucket of every S3 tier, restores it, and checks the locks.
#[tokio::test(flavor = "multi_thread")]
async fn backup_to_s3_is_locked_in_compliance_mode_and_restores_identically() {
    let tiers = s3::require_all();
    if tiers.is_empty() {
        return;
    }
    let src = rich_source();
    let target = PgCluster::start().unwrap();
    for tier in tiers {
        let (dir, k) = workspace();
        let bucket = tier.create_locked_bucket("e2e-roundtrip").await;
        let config = write_config(
            dir.path(),
            &k.recipient,
            &[
                s3_store_toml("offsite", &tier, &bucket, "compliance"),
                pg_job_toml("app", "offsite", &src.url("app"), &["app"], ""),
            ],
        );
        let started = chrono::Utc::now();
        let id = backup(&config, "app");

        let client = tier.client().await;
        let listed = client
            .list_object_versions()
            .bucket(&bucket)
            .send()
            .await
            .unwrap();
        let versions = listed.versions();
        assert_eq!(
            versions.len(),
            5,
            "{}: globals, dump, catalog, manifest signature, manifest: {versions:?}",
            tier.name
        );
        for v in versions {
            let key = v.key().unwrap();
            assert!(
                key.starts_with(&format!("lifeboat/snapshots/app/{id}/")),
                "{key}"
            );
            let head = client
                .head_object()
                .bucket(&bucket)
                .key(key)
                .version_id(v.version_id().unwrap())
                .send()
                .await
                .unwrap();
            assert_eq!(
                head.object_lock_mode().map(|m| m.as_str()),
                Some("COMPLIANCE"),
                "{}: {key}",
                tier.name
            );
            let until = head.object_lock_retain_until_date().unwrap().secs();
            assert!(
                until >= (started + chrono::Duration::days(1)).timestamp() - 5,
                "{}: {key} locked until {until}",
                tier.name
            );
            // The store itself refuses to delete the locked version, whoever asks.
            #[allow(clippy::disallowed_methods)]
            let deleted = client
                .delete_object()
                .bucket(&bucket)
                .key(key)
                .version_id(v.version_id().unwrap())
                .send()
                .await;
            assert!(
                deleted.is_err(),
                "{}: deleting locked version of {key} succeeded",
                tier.name
            );
        }
        crate::common::assert_no_multipart_uploads(&tier, &bucket).await;

        let db = format!("restored_{}", tier.name);
        let out = lifeboat(
            &config,
            &[
                "restore",
                &format!("app/{id}"),
                "--identity",
                k.identity_file.to_str().unwrap(),
                "--to-database",
                &target.url(&db),
                "--with-globals",
            ],
        );
        out.expect_code(0);
        assert_databases_equal((&src, "app"), (&target, &db)).await;
    }
}

/// A bucket without Object Lock is refused unless the store explicitly says lock_mode = "none".
#[tokio::test(flavor = "multi_thread")]
async fn a_bucket_without_object_lock_is_refused_unless_lock_mode_is_none() {
    let Some(tier) = s3::require_ceph() else {
        return;
    };
    let src = crate::common::small_source("small", 100);
    let (dir, k) = workspace();
    let bucket = format!("plain-{}", chrono::Utc::now().timestamp_micros());
    tier.client()
        .await
        .create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .unwrap();
    let config = write_config(
        dir.path(),
        &k.recipient,
        &[
            s3_store_toml("offsite", &tier, &bucket, "compliance"),
            pg_job_toml("small", "offsite", &src.url("small"), &["small"], ""),
        ],
    );
    let out = lifeboat_tests::lifeboat::lifeboatd(&config, &["run", "small"]);
    out.expect_code(1);
    assert!(out.stderr.contains("Object Lock"), "{}", out.stderr);
    let listed = tier
        .client()
        .await
        .list_objects_v2()
        .bucket(&bucket)
        .send()
        .await
        .unwrap();
    assert!(
        listed.contents().is_empty(),
        "nothing written to an unlocked bucket"
    );

    let config = write_config(
        dir.path(),
        &k.recipient,
        &[
            s3_store_toml("offsite", &tier, &bucket, "none"),
            pg_job_toml("small", "offsite", &src.url("small"), &["small"], ""),
        ],
    );
    backup(&config, "small");
    let store = lifeboat_core::store::AnyStore::build(
        &lifeboat_config::load(&config).unwrap().stores["offsite"],
    )
    .await
    .unwrap();
    assert!(!store.lock_status().await.unwrap().enabled);
}

/// `lifeboatd check` reports every probe and fails when a store cannot guarantee immutability.
#[tokio::test(flavor = "multi_thread")]
async fn check_reports_reachability_and_object_lock() {
    let src = PgCluster::start().unwrap();
    src.create_database("small").unwrap();
    let (dir, k) = workspace();
    let config = write_config(
        dir.path(),
        &k.recipient,
        &[
            fs_store_toml("local", &dir.path().join("store")),
            pg_job_toml("small", "local", &src.url("small"), &["small"], ""),
        ],
    );
    let out = lifeboat_tests::lifeboat::lifeboatd(&config, &["check"]);
    out.expect_code(0);
    assert!(
        out.stdout
            .contains("warn store local: immutability: fs_store: not required")
            && out
                .stdout
                .contains("warn job small: independent of store local: store local is a directory"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("ok   job small: source: PostgreSQL 15"),
        "{}",
        out.stdout
    );

    let Some(tier) = s3::require_ceph() else {
        return;
    };
    let bucket = format!("check-plain-{}", chrono::Utc::now().timestamp_micros());
    tier.client()
        .await
        .create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .unwrap();
    let config = write_config(
        dir.path(),
        &k.recipient,
        &[
            s3_store_toml("offsite", &tier, &bucket, "compliance")
                .replace("require_immutable = false\n", ""),
            pg_job_toml("small", "offsite", &src.url("small"), &["no_such_db"], ""),
        ],
    );
    let out = lifeboat_tests::lifeboat::lifeboatd(&config, &["check", "--json"]);
    out.expect_code(1);
    let probes: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let failed: Vec<&str> = probes
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["ok"] == false)
        .map(|p| p["what"].as_str().unwrap())
        .collect();
    assert!(
        failed.contains(&"store offsite: immutability: object_lock")
            && failed.contains(&"job small: source")
            && failed.iter().all(
                |w| w.starts_with("store offsite: immutability: ") || *w == "job small: source"
            ),
        "{}",
        out.stdout
    );
}

/// `lock_mode = "none"` on a bucket without versioning or Object Lock: stores answer without version ids (moto
/// says `null`), and the snapshot must still be written, listed and restorable.
#[tokio::test(flavor = "multi_thread")]
async fn lock_mode_none_works_on_an_unversioned_bucket() {
    for tier in lifeboat_tests::s3::require_all() {
        let src = crate::common::small_source("app", 500);
        let (dir, k) = workspace();
        let bucket = tier.create_plain_bucket("e2e-plain").await;
        let config = write_config(
            dir.path(),
            &k.recipient,
            &[
                s3_store_toml("plain", &tier, &bucket, "none"),
                pg_job_toml("app", "plain", &src.url("app"), &["app"], ""),
            ],
        );
        let id = crate::common::backup(&config, "app");
        let listed = lifeboat(&config, &["snapshots", "--json"]);
        listed.expect_code(0);
        assert!(
            listed.stdout.contains(&id),
            "{}: {}",
            tier.name,
            listed.stdout
        );
        let file = dir.path().join("app.dump");
        lifeboat(
            &config,
            &[
                "restore",
                &format!("app/{id}"),
                "--identity",
                k.identity_file.to_str().unwrap(),
                "--to-file",
                file.to_str().unwrap(),
            ],
        )
        .expect_code(0);
        assert!(std::fs::metadata(&file).unwrap().len() > 0, "{}", tier.name);
    }
}
