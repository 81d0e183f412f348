//! `lifeboat copy`: a snapshot copied between stores without decryption restores identically from the copy; a second
//! run changes nothing; an interrupted copy resumes with what is there; a damaged source or a conflicting target
//! object fails the copy without writing a manifest.

use crate::common::{backup, listed_ids, small_source, workspace};
use lifeboat_tests::lifeboat::{
    fs_store_toml, lifeboat, other_filesystem, pg_job_toml, s3_store_toml, write_config,
};
use lifeboat_tests::s3;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

fn restore(config: &Path, store: &str, id: &str, identity: &Path, out: &Path) -> Vec<u8> {
    lifeboat(
        config,
        &[
            "restore",
            &format!("app/{id}"),
            "--store",
            store,
            "--identity",
            identity.to_str().unwrap(),
            "--to-file",
            out.to_str().unwrap(),
            "--database",
            "app",
        ],
    )
    .expect_code(0);
    std::fs::read(out).unwrap()
}

fn writable(path: &Path) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn copy_seeds_another_store_without_decrypting_and_refuses_damage() {
    let (dir, k) = workspace();
    let pg = small_source("app", 5_000);
    let other_fs = other_filesystem();
    let local = other_fs.path().join("local");
    let seed = other_fs.path().join("seed");
    let mut tables = vec![
        fs_store_toml("local", &local),
        fs_store_toml("seed", &seed),
        fs_store_toml("fresh", &other_fs.path().join("fresh")),
        pg_job_toml("app", "local", &pg.url("app"), &["app"], ""),
    ];
    let ceph = s3::ceph();
    let bucket = match &ceph {
        Some(tier) => Some(tier.create_locked_bucket("e2e-copy").await),
        None => None,
    };
    if let (Some(tier), Some(bucket)) = (&ceph, &bucket) {
        tables.push(s3_store_toml("offsite", tier, bucket, "compliance"));
    }
    let config = write_config(dir.path(), &k.recipient, &tables);
    let id = backup(&config, "app");
    let original = restore(
        &config,
        "local",
        &id,
        &k.identity_file,
        &dir.path().join("a.dump"),
    );
    let snapshot_dir = local.join("snapshots/app").join(&id);
    let dump_key = format!("snapshots/app/{id}/app.dump.zst.age");

    // An interrupted earlier copy left one object in `seed`: it is kept, the rest copied, the manifest last.
    std::fs::create_dir_all(seed.join(format!("snapshots/app/{id}"))).unwrap();
    std::fs::copy(local.join(&dump_key), seed.join(&dump_key)).unwrap();
    let out = lifeboat(
        &config,
        &["copy", &format!("app/{id}"), "--to", "seed", "--json"],
    );
    out.expect_code(0);
    let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let actions: Vec<(String, String)> = report["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["name"].as_str().unwrap().to_owned(),
                o["action"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(
        actions.contains(&("app.dump".to_owned(), "present".to_owned())),
        "{actions:?}"
    );
    assert!(
        actions.contains(&("catalog.json".to_owned(), "copied".to_owned())),
        "{actions:?}"
    );
    assert_eq!(listed_ids(&config, Some("seed")), [id.as_str()]);
    let copied = restore(
        &config,
        "seed",
        &id,
        &k.identity_file,
        &dir.path().join("b.dump"),
    );
    assert!(copied == original, "the copy restores to other bytes");
    lifeboat(
        &config,
        &[
            "verify",
            &format!("app/{id}"),
            "--store",
            "seed",
            "--no-record",
        ],
    )
    .expect_code(0);

    // Again: nothing to do.
    let again = lifeboat(&config, &["copy", &format!("app/{id}"), "--to", "seed"]);
    again.expect_code(0);
    assert!(
        again.stdout.contains("already holds it"),
        "{}",
        again.stdout
    );

    // To Ceph: the target's own versions and locks, byte-identical objects, an identical restore.
    if let (Some(tier), Some(bucket)) = (&ceph, &bucket) {
        lifeboat(&config, &["copy", &format!("app/{id}"), "--to", "offsite"]).expect_code(0);
        assert_eq!(listed_ids(&config, Some("offsite")), [id.as_str()]);
        let verify = lifeboat(
            &config,
            &[
                "verify",
                &format!("app/{id}"),
                "--store",
                "offsite",
                "--no-record",
                "--json",
            ],
        );
        verify.expect_code(0);
        let got = tier
            .client()
            .await
            .get_object()
            .bucket(bucket)
            .key(format!("lifeboat/{dump_key}"))
            .send()
            .await
            .unwrap();
        assert!(got
            .object_lock_mode()
            .is_some_and(|m| m.as_str() == "COMPLIANCE"));
        let bytes = got.body.collect().await.unwrap().into_bytes();
        assert!(bytes.as_ref() == std::fs::read(local.join(&dump_key)).unwrap());
        let from_ceph = restore(
            &config,
            "offsite",
            &id,
            &k.identity_file,
            &dir.path().join("c.dump"),
        );
        assert!(from_ceph == original);
    }

    // A target object with other bytes under the same key: refused, never overwritten, no manifest.
    let conflict_dir = other_fs
        .path()
        .join("fresh")
        .join(format!("snapshots/app/{id}"));
    std::fs::create_dir_all(&conflict_dir).unwrap();
    std::fs::write(conflict_dir.join("app.dump.zst.age"), b"something else").unwrap();
    let out = lifeboat(&config, &["copy", &format!("app/{id}"), "--to", "fresh"]);
    out.expect_code(1);
    assert!(out.stderr.contains("never overwrites"), "{}", out.stderr);
    assert!(listed_ids(&config, Some("fresh")).is_empty());
    std::fs::remove_file(conflict_dir.join("app.dump.zst.age")).unwrap();

    // A damaged source object: the copy fails before that upload completes, and no manifest is written.
    let damaged = snapshot_dir.join("app.dump.zst.age");
    writable(&damaged);
    let mut bytes = std::fs::read(&damaged).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    std::fs::write(&damaged, &bytes).unwrap();
    let out = lifeboat(&config, &["copy", &format!("app/{id}"), "--to", "fresh"]);
    out.expect_code(1);
    assert!(
        out.stderr.contains("does not match the manifest"),
        "{}",
        out.stderr
    );
    assert!(listed_ids(&config, Some("fresh")).is_empty());
    assert!(
        !conflict_dir.join("app.dump.zst.age").exists(),
        "a damaged object must not be stored"
    );
}
