//! Signed manifests: what the daemon signs verifies with stock openssl; restore, verify and drill refuse a
//! tampered, unsigned or foreign-key manifest (exit 1) unless `--allow-unsigned`; prune neither counts nor deletes
//! a planted snapshot.

use crate::common::{backup, small_source, workspace};
use lifeboat_core::snapshot::{Manifest, SnapshotId};
use lifeboat_tests::lifeboat::{
    fs_store_toml, lifeboat, lifeboatd, pg_job_toml, signing_key, write_config, Run,
};
use lifeboat_tests::postgres::run;
use lifeboat_tests::skip::{binary_on_path, require_or};
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

fn snapshot_dir(store: &Path, id: &str) -> PathBuf {
    store.join("snapshots/app").join(id)
}

/// Makes a snapshot directory and its files writable (the fs store leaves them read-only).
fn unlock(dir: &Path) {
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
}

fn restore_file(config: &Path, identity: &Path, snapshot: &str, to: &Path, extra: &[&str]) -> Run {
    let mut args = vec![
        "restore",
        snapshot,
        "--identity",
        identity.to_str().unwrap(),
        "--to-file",
        to.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    lifeboat(config, &args)
}

/// Exit 1 and a message containing every one of `needles`.
#[track_caller]
fn assert_refused(out: &Run, needles: &[&str]) {
    out.expect_code(1);
    for n in needles {
        assert!(out.stderr.contains(n), "{n:?} not in:\n{}", out.stderr);
    }
}

fn signature_of(config: &Path, id: &str) -> String {
    let out = lifeboat(config, &["snapshots", "--json"]);
    out.expect_code(0);
    let rows: Value = serde_json::from_str(&out.stdout).unwrap();
    rows.as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id)
        .unwrap_or_else(|| panic!("{id} not listed: {}", out.stdout))["signature"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn restore_verify_and_drill_refuse_tampered_unsigned_and_foreign_manifests() {
    let pg = small_source("app", 100);
    let (dir, k) = workspace();
    let store = dir.path().join("store");
    let config = write_config(
        dir.path(),
        &k.recipient,
        &[
            fs_store_toml("local", &store),
            pg_job_toml("app", "local", &pg.url("app"), &["app"], ""),
        ],
    );
    let (key_file, public_key) = signing_key(dir.path());

    // `lifeboatd check` names the public key.
    let check = lifeboatd(&config, &["check"]);
    check.expect_code(0);
    assert!(
        check.stdout.contains("manifest signing") && check.stdout.contains(&public_key),
        "{}",
        check.stdout
    );

    let tampered = backup(&config, "app");
    let unsigned = backup(&config, "app");
    let identity = k.identity_file.as_path();
    assert_eq!(signature_of(&config, &tampered), "verified");

    // A signed snapshot restores.
    restore_file(
        &config,
        identity,
        &format!("app/{tampered}"),
        &dir.path().join("ok.dump"),
        &[],
    )
    .expect_code(0);
    lifeboat(
        &config,
        &["verify", &format!("app/{tampered}"), "--no-record"],
    )
    .expect_code(0);

    // Stock openssl verifies the signature over the exact manifest bytes, and derives the configured key.
    if require_or(
        "openssl (signature interoperability)",
        "apt-get install -y openssl",
        binary_on_path("openssl"),
    ) {
        let pub_pem = dir.path().join("pub.pem");
        let out = run(Command::new("openssl").args([
            "pkey",
            "-in",
            key_file.to_str().unwrap(),
            "-pubout",
            "-out",
            pub_pem.to_str().unwrap(),
        ]))
        .unwrap();
        assert!(out.status.success(), "{out:?}");
        let snap = snapshot_dir(&store, &tampered);
        let out = run(Command::new("openssl").args([
            "pkeyutl",
            "-verify",
            "-pubin",
            "-inkey",
            pub_pem.to_str().unwrap(),
            "-rawin",
            "-in",
            snap.join("manifest.json").to_str().unwrap(),
            "-sigfile",
            snap.join("manifest.json.sig").to_str().unwrap(),
        ]))
        .unwrap();
        assert!(out.status.success(), "openssl pkeyutl -verify: {out:?}");
        let out = run(Command::new("sh").arg("-c").arg(format!(
            "openssl pkey -in '{}' -pubout -outform DER | tail -c 32 | base64",
            key_file.display()
        )))
        .unwrap();
        assert!(out.status.success(), "{out:?}");
        assert_eq!(
            format!("ed25519:{}", String::from_utf8_lossy(&out.stdout).trim()),
            public_key
        );
    }

    // A config trusting another key refuses the genuine snapshot.
    let other_dir = tempfile::tempdir().unwrap();
    let (_, other_key) = signing_key(other_dir.path());
    let text = std::fs::read_to_string(&config).unwrap();
    let foreign = dir.path().join("foreign.toml");
    std::fs::write(
        &foreign,
        text.lines()
            .filter(|l| !l.starts_with("signing_key_file"))
            .map(|l| l.replace(&public_key, &other_key))
            .collect::<Vec<_>>()
            .join("\n"),
    )
    .unwrap();
    let out = restore_file(
        &foreign,
        identity,
        &format!("app/{tampered}"),
        &dir.path().join("foreign.dump"),
        &[],
    );
    assert_refused(
        &out,
        &[
            "manifest signature does not verify with any key in [encryption] signing_public_keys",
            "--allow-unsigned",
        ],
    );
    assert!(!dir.path().join("foreign.dump").exists());
    // A config trusting no key at all says to add one.
    let keyless = dir.path().join("keyless.toml");
    std::fs::write(
        &keyless,
        text.lines()
            .filter(|l| !l.starts_with("signing_"))
            .collect::<Vec<_>>()
            .join("\n"),
    )
    .unwrap();
    let out = restore_file(
        &keyless,
        identity,
        &format!("app/{tampered}"),
        &dir.path().join("keyless.dump"),
        &[],
    );
    assert_refused(
        &out,
        &["no signing public key is configured", "signing_public_keys"],
    );

    // One value changed in the manifest: refused by restore, verify and drill.
    let snap = snapshot_dir(&store, &tampered);
    unlock(&snap);
    let original = std::fs::read_to_string(snap.join("manifest.json")).unwrap();
    let changed = original.replacen("\"lifeboat_version\": \"", "\"lifeboat_version\": \"9", 1);
    assert_ne!(changed, original, "{original}");
    Manifest::from_json(changed.as_bytes()).unwrap();
    std::fs::write(snap.join("manifest.json"), changed).unwrap();
    assert_eq!(signature_of(&config, &tampered), "invalid");
    let listing = lifeboat(&config, &["snapshots"]);
    listing.expect_code(0);
    assert!(listing.stdout.contains("INVALID"), "{}", listing.stdout);
    let message = [
        "manifest signature does not verify with any key in [encryption] signing_public_keys",
        "planted or tampered",
        "--allow-unsigned",
    ];
    let to = dir.path().join("tampered.dump");
    assert_refused(
        &restore_file(&config, identity, &format!("app/{tampered}"), &to, &[]),
        &message,
    );
    assert!(!to.exists());
    assert_refused(
        &lifeboat(
            &config,
            &["verify", &format!("app/{tampered}"), "--no-record"],
        ),
        &message,
    );
    assert_refused(
        &lifeboat(
            &config,
            &[
                "drill",
                "--snapshot",
                &format!("app/{tampered}"),
                "--identity",
                identity.to_str().unwrap(),
                "--no-record",
            ],
        ),
        &message,
    );
    // The operator may override (the objects themselves are intact), with a warning.
    let out = restore_file(
        &config,
        identity,
        &format!("app/{tampered}"),
        &to,
        &["--allow-unsigned"],
    );
    out.expect_code(0);
    assert!(out.stderr.contains("--allow-unsigned"), "{}", out.stderr);

    // A removed signature: refused as unsigned, accepted with --allow-unsigned.
    let snap = snapshot_dir(&store, &unsigned);
    unlock(&snap);
    std::fs::remove_file(snap.join("manifest.json.sig")).unwrap();
    assert_eq!(signature_of(&config, &unsigned), "unsigned");
    let to = dir.path().join("unsigned.dump");
    assert_refused(
        &restore_file(&config, identity, &format!("app/{unsigned}"), &to, &[]),
        &[
            "is not signed",
            "manifest.json.sig was removed",
            "--allow-unsigned",
        ],
    );
    assert_refused(
        &lifeboat(
            &config,
            &["verify", &format!("app/{unsigned}"), "--no-record"],
        ),
        &["is not signed"],
    );
    restore_file(
        &config,
        identity,
        &format!("app/{unsigned}"),
        &to,
        &["--allow-unsigned"],
    )
    .expect_code(0);
    // `latest` is the newest snapshot that verifies: here none does, so it is refused rather than guessed (the
    // tampered and the unsigned one may share their second, so either may count as the newest).
    let latest = lifeboat(&config, &["verify", "app/latest", "--no-record"]);
    assert_refused(&latest, &["--allow-unsigned"]);
    assert!(
        latest.stderr.contains("is not signed") || latest.stderr.contains("does not verify"),
        "{}",
        latest.stderr
    );
}

#[test]
fn prune_neither_counts_nor_deletes_a_planted_snapshot() {
    let pg = small_source("app", 100);
    let (dir, k) = workspace();
    let store = dir.path().join("store");
    let config = write_config(
        dir.path(),
        &k.recipient,
        &[
            fs_store_toml("local", &store),
            pg_job_toml(
                "app",
                "local",
                &pg.url("app"),
                &["app"],
                "keep_last = 1\nkeep_min = 1\n",
            ),
        ],
    );
    let real = backup(&config, "app");

    // Planted: a copy of the real snapshot an hour newer (id and times rewritten), the old signature kept.
    let at = chrono::Utc::now() + chrono::Duration::hours(1);
    let planted = SnapshotId::new(at).to_string();
    let src = snapshot_dir(&store, &real);
    let dst = snapshot_dir(&store, &planted);
    std::fs::create_dir_all(&dst).unwrap();
    let mut manifest =
        Manifest::from_json(&std::fs::read(src.join("manifest.json")).unwrap()).unwrap();
    manifest.snapshot_id = planted.parse().unwrap();
    manifest.started_at = at;
    manifest.finished_at = at + chrono::Duration::seconds(5);
    for o in &mut manifest.objects {
        o.key = o.key.replace(&real, &planted);
        std::fs::copy(
            src.join(format!("{}.zst.age", o.name)),
            dst.join(format!("{}.zst.age", o.name)),
        )
        .unwrap();
    }
    std::fs::copy(src.join("manifest.json.sig"), dst.join("manifest.json.sig")).unwrap();
    std::fs::write(dst.join("manifest.json"), manifest.to_json()).unwrap();
    assert_eq!(signature_of(&config, &planted), "invalid");

    let plan = |extra: &[&str]| -> Vec<Value> {
        let mut args = vec!["prune", "--dry-run", "--json"];
        args.extend_from_slice(extra);
        let out = lifeboat(&config, &args);
        out.expect_code(0);
        let rows: Value = serde_json::from_str(&out.stdout).unwrap();
        rows.as_array().unwrap().clone()
    };
    let row = |rows: &[Value], id: &str| -> Value {
        rows.iter()
            .find(|r| r["snapshot"] == id)
            .unwrap_or_else(|| panic!("{id} not in {rows:?}"))
            .clone()
    };
    // The real snapshot is still the newest counted one ("last"); the planted one is reported, kept, not counted.
    let rows = plan(&[]);
    let r = row(&rows, &real);
    assert!(
        r["reasons"].as_array().unwrap().iter().any(|x| x == "last"),
        "{r}"
    );
    assert_eq!(r["signature"], "verified");
    let p = row(&rows, &planted);
    assert_eq!(p["keep"], true, "{p}");
    assert_eq!(p["signature"], "invalid");
    assert!(
        p["reasons"][0].as_str().unwrap().contains("not counted"),
        "{p}"
    );
    // A real prune deletes neither.
    lifeboat(&config, &["prune"]).expect_code(0);
    assert!(dst.join("manifest.json").exists());
    assert_eq!(signature_of(&config, &real), "verified");

    // With --allow-unsigned the planted one counts like the others, and takes "last" from the real one (which
    // only its lock protects): exactly the retention attack the default prevents.
    let rows = plan(&["--allow-unsigned"]);
    let p = row(&rows, &planted);
    assert!(
        p["reasons"].as_array().unwrap().iter().any(|x| x == "last"),
        "{p}"
    );
    let r = row(&rows, &real);
    assert!(
        !r["reasons"].as_array().unwrap().iter().any(|x| x == "last"),
        "{r}"
    );
}
