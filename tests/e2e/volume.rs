//! Volume backups (`kind = "volume"`) through the real binaries: a rich tree (unicode and 300-character names, a
//! 2 GiB sparse file, every link and file type, special modes) round-trips identically through the fs store and
//! through Ceph RGW; hostile archives cannot write outside the restore target; a file growing while it is read is
//! reported; an unreadable file fails the run unless `ignore_unreadable`; hooks run in order; `verify` catches a
//! file whose content contradicts the catalog, and checks a volume against its catalog whatever its files are named.

use crate::common::{assert_no_multipart_uploads, backup, workspace};
use lifeboat_core::pipeline::{encode_to_vec, EncodeSettings};
use lifeboat_core::snapshot::{Manifest, ObjectKind};
use lifeboat_tests::lifeboat::{
    bin, fs_store_toml, lifeboat, lifeboatd, other_filesystem, s3_store_toml, sign_manifest,
    volume_job_toml, write_config, Run,
};
use lifeboat_tests::postgres::run;
use lifeboat_tests::s3;
use lifeboat_tests::skip::{binary_on_path, require, require_or};
use lifeboat_tests::tree::{allocated_bytes, assert_same_tree, walk, Kind, Tree};
use serde_json::Value;
use std::collections::BTreeSet;
use std::fs::{File, FileTimes};
use std::io::Write;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
/// Logical size of the sparse file of the rich tree.
const SPARSE_SIZE: u64 = 2 * GIB;
/// 2001-09-09T01:46:40Z: an mtime no test run could produce by accident.
const OLD: u64 = 1_000_000_000;
const NOBODY: u32 = 65534;

// ---------------------------------------------------------------------------------------------------------------
// Building trees

/// Deterministic incompressible bytes (xorshift64*), so a test's data does not depend on an RNG's API.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

fn at(secs: u64, nanos: u32) -> SystemTime {
    UNIX_EPOCH + Duration::new(secs, nanos)
}

/// Sets the mtime of a file or directory (opened read-only; root may change the times of what it does not own).
fn set_mtime(path: &Path, when: SystemTime) {
    File::open(path)
        .and_then(|f| f.set_times(FileTimes::new().set_modified(when)))
        .unwrap_or_else(|e| panic!("setting the mtime of {}: {e}", path.display()));
}

fn write_file(path: &Path, content: &[u8], mode: u32) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(path, content).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn mkfifo(path: &Path) {
    let out = run(Command::new("mkfifo").arg(path)).unwrap();
    assert!(out.status.success(), "mkfifo {}: {out:?}", path.display());
}

/// Names of the rich tree the tests look at.
const SPARSE: &str = "images/sparse.img";
const LONG_DIRS: [&str; 2] = ["long", "nested-directory-name"];

/// The 300-character relative path of the rich tree (components under the 255-byte NAME_MAX).
fn long_path() -> PathBuf {
    let p = PathBuf::from(LONG_DIRS[0])
        .join(LONG_DIRS[1].repeat(5))
        .join(format!("{}.txt", "x".repeat(190)));
    assert!(p.as_os_str().len() >= 300, "{}", p.display());
    p
}

/// A tree with every kind of entry a volume backup must keep: unicode names, a 300-character path, a 2 GiB sparse
/// file with three data regions, relative / absolute / dangling / directory symlinks, a hard-link pair, empty
/// directories, modes 0600, 0640, 0755, 1777 and 04755, a file owned by nobody, a FIFO, old and sub-second mtimes.
fn build_rich_tree(root: &Path) {
    std::fs::create_dir_all(root).unwrap();
    write_file(
        &root.join("données/élan.txt"),
        "café crème\n".as_bytes(),
        0o644,
    );
    write_file(
        &root.join("日本語/ファイル.txt"),
        "こんにちは\n".as_bytes(),
        0o644,
    );
    write_file(&root.join("emoji 🚀 and spaces.txt"), b"launch\n", 0o644);
    write_file(&root.join(long_path()), b"a long way down\n", 0o644);
    write_file(&root.join("modes/private.txt"), b"only root\n", 0o600);
    write_file(
        &root.join("modes/script.sh"),
        b"#!/bin/sh\necho hi\n",
        0o755,
    );
    write_file(&root.join("modes/setuid-tool"), b"\x7fELF pretend\n", 0o755);
    std::fs::set_permissions(
        root.join("modes/setuid-tool"),
        std::fs::Permissions::from_mode(0o4755),
    )
    .unwrap();
    std::fs::create_dir_all(root.join("modes/shared-tmp")).unwrap();
    std::fs::set_permissions(
        root.join("modes/shared-tmp"),
        std::fs::Permissions::from_mode(0o1777),
    )
    .unwrap();
    write_file(
        &root.join("modes/owned-by-nobody.txt"),
        b"nobody's\n",
        0o640,
    );
    std::os::unix::fs::chown(
        root.join("modes/owned-by-nobody.txt"),
        Some(NOBODY),
        Some(NOBODY),
    )
    .unwrap();
    write_file(&root.join("data/random.bin"), &noise(7, 300_000), 0o644);
    write_file(&root.join("data/empty-file"), b"", 0o644);

    // A 2 GiB file with data at the start, at an unaligned offset in the middle, and in its last 100 bytes.
    let sparse = root.join(SPARSE);
    std::fs::create_dir_all(sparse.parent().unwrap()).unwrap();
    let f = File::create(&sparse).unwrap();
    f.set_len(SPARSE_SIZE).unwrap();
    f.write_all_at(&noise(1, 64 * 1024), 0).unwrap();
    f.write_all_at(&noise(2, MIB as usize), GIB + 12_345)
        .unwrap();
    f.write_all_at(&noise(3, 100), SPARSE_SIZE - 100).unwrap();
    f.sync_all().unwrap();
    drop(f);
    std::fs::set_permissions(&sparse, std::fs::Permissions::from_mode(0o640)).unwrap();
    assert!(
        allocated_bytes(&sparse) < 16 * MIB,
        "the test file system did not keep {} sparse ({} bytes allocated)",
        sparse.display(),
        allocated_bytes(&sparse)
    );

    std::fs::create_dir_all(root.join("links")).unwrap();
    std::os::unix::fs::symlink("../données/élan.txt", root.join("links/relative")).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", root.join("links/absolute")).unwrap();
    std::os::unix::fs::symlink("../nowhere/missing.txt", root.join("links/dangling")).unwrap();
    std::os::unix::fs::symlink("../données", root.join("links/to-a-directory")).unwrap();
    write_file(&root.join("hard/one.txt"), b"one inode, two names\n", 0o644);
    std::fs::hard_link(root.join("hard/one.txt"), root.join("hard/two.txt")).unwrap();
    std::fs::create_dir_all(root.join("empty")).unwrap();
    std::fs::create_dir_all(root.join("nested/empty/deeper")).unwrap();
    mkfifo(&root.join("pipe"));

    // Times last: creating entries changes their directory's mtime.
    set_mtime(&root.join("données/élan.txt"), at(OLD, 500_000_000));
    set_mtime(&root.join(SPARSE), at(OLD + 10, 0));
    set_mtime(&root.join("modes/setuid-tool"), at(OLD + 20, 999_999_999));
    set_mtime(&root.join("hard/one.txt"), at(OLD + 30, 0));
    let tree = walk(root);
    for (i, (rel, entry)) in tree.entries.iter().enumerate() {
        if entry.kind == Kind::Dir {
            set_mtime(&root.join(rel), at(OLD + 100 + i as u64, 250_000_000));
        }
    }
}

/// Regular files with their own content (a hard-linked inode counts once), as the manifest counts them.
fn distinct_files(tree: &Tree) -> u64 {
    let inodes: BTreeSet<&Path> = tree
        .entries
        .iter()
        .filter(|(_, e)| matches!(e.kind, Kind::File { .. }))
        .map(|(path, e)| e.hard_link_group.as_deref().unwrap_or(path))
        .collect();
    inodes.len() as u64
}

/// The rich tree's properties that a plain comparison would not show, checked on the source (so the test really
/// exercises them) and on a restored copy.
fn assert_rich_tree_properties(tree: &Tree, root: &Path) {
    let sparse = tree.get(SPARSE);
    assert!(
        matches!(sparse.kind, Kind::File { size, .. } if size == SPARSE_SIZE),
        "{sparse:?}"
    );
    assert!(
        allocated_bytes(&root.join(SPARSE)) < 64 * MIB,
        "{} is not sparse: {} bytes allocated for {SPARSE_SIZE}",
        root.join(SPARSE).display(),
        allocated_bytes(&root.join(SPARSE))
    );
    assert_eq!(tree.get("modes/setuid-tool").mode, 0o4755);
    assert_eq!(tree.get("modes/shared-tmp").mode, 0o1777);
    assert_eq!(tree.get("modes/private.txt").mode, 0o600);
    assert_eq!(tree.get("modes/owned-by-nobody.txt").uid, NOBODY);
    assert_eq!(tree.get("pipe").kind, Kind::Fifo);
    assert_eq!(
        tree.get("links/dangling").kind,
        Kind::Symlink {
            target: "../nowhere/missing.txt".into()
        }
    );
    assert_eq!(
        tree.get("hard/two.txt").hard_link_group,
        Some(PathBuf::from("hard/one.txt"))
    );
    let one = std::fs::metadata(root.join("hard/one.txt")).unwrap();
    let two = std::fs::metadata(root.join("hard/two.txt")).unwrap();
    assert_eq!(
        (one.dev(), one.ino()),
        (two.dev(), two.ino()),
        "hard links share an inode"
    );
    assert_eq!(tree.get("données/élan.txt").mtime, OLD as i64);
    assert_eq!(tree.get(long_path()).mode, 0o644);
    assert_eq!(tree.get("nested/empty/deeper").kind, Kind::Dir);
}

// ---------------------------------------------------------------------------------------------------------------
// Store access

fn snapshot_dir(store: &Path, job: &str, id: &str) -> PathBuf {
    store.join("snapshots").join(job).join(id)
}

/// The manifest of a snapshot in an fs store, as JSON.
fn fs_manifest(store: &Path, job: &str, id: &str) -> Value {
    let path = snapshot_dir(store, job, id).join("manifest.json");
    serde_json::from_slice(
        &std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap()
}

/// The ids `lifeboat snapshots --json` lists for `job`.
fn listed_ids(config: &Path, job: &str) -> Vec<String> {
    let out = lifeboat(config, &["snapshots", "--job", job, "--json"]);
    out.expect_code(0);
    let listed: Value = serde_json::from_str(&out.stdout).unwrap();
    listed
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            s["id"]
                .as_str()
                .unwrap_or_else(|| panic!("no id in {s}"))
                .to_owned()
        })
        .collect()
}

fn restore_to_dir(config: &Path, identity: &Path, snapshot: &str, dir: &Path) -> Run {
    lifeboat(
        config,
        &[
            "restore",
            snapshot,
            "--identity",
            identity.to_str().unwrap(),
            "--to-dir",
            dir.to_str().unwrap(),
        ],
    )
}

/// A copy of snapshot `id` in the fs store under a new id (`<same time>-<suffix>`), as a real snapshot is stored:
/// every object, its lock record and the manifest, except that the payload of `volume.tar` is replaced by `tar`
/// (encoded to `recipient` like the daemon does) and its sizes and checksums fixed in the manifest. The catalog is
/// the original's, untouched. The manifest is signed with the signing key of the config in `config_dir`, so that
/// only the hostile payload is judged. Returns the new id.
fn forge_volume_snapshot(
    config_dir: &Path,
    store: &Path,
    job: &str,
    id: &str,
    suffix: &str,
    tar: &[u8],
    recipient: &str,
) -> String {
    let forged_id = format!("{}-{suffix}", &id[..16]);
    let src = snapshot_dir(store, job, id);
    let dst = snapshot_dir(store, job, &forged_id);
    std::fs::create_dir_all(&dst).unwrap();
    let locks = store.join(".lifeboat-locks");
    let copy_lock = |old_key: &str, new_key: &str| {
        let to = locks.join(format!("{new_key}.json"));
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(locks.join(format!("{old_key}.json")), &to)
            .unwrap_or_else(|e| panic!("lock record of {old_key}: {e}"));
    };
    let mut manifest =
        Manifest::from_json(&std::fs::read(src.join("manifest.json")).unwrap()).unwrap();
    manifest.snapshot_id = forged_id.parse().unwrap();
    let mut replaced = false;
    for object in &mut manifest.objects {
        let old_key = object.key.clone();
        object.key = old_key.replace(id, &forged_id);
        assert_ne!(object.key, old_key);
        copy_lock(&old_key, &object.key);
        if object.kind != ObjectKind::Tar {
            std::fs::copy(store.join(&old_key), store.join(&object.key)).unwrap();
            continue;
        }
        let recipient: age::x25519::Recipient = recipient.parse().unwrap();
        let (report, bytes) = encode_to_vec(
            tar,
            &[recipient],
            EncodeSettings {
                level: 3,
                threads: 0,
            },
        )
        .unwrap();
        std::fs::write(store.join(&object.key), bytes).unwrap();
        object.payload_bytes = report.payload_bytes;
        object.payload_sha256 = report.payload_sha256;
        object.stored_bytes = report.stored_bytes;
        object.stored_sha256 = report.stored_sha256;
        replaced = true;
    }
    assert!(replaced, "snapshot {id} has no tar object");
    let manifest_key = format!("snapshots/{job}/{forged_id}/manifest.json");
    copy_lock(
        &format!("snapshots/{job}/{id}/manifest.json"),
        &manifest_key,
    );
    let json = manifest.to_json();
    copy_lock(
        &format!("snapshots/{job}/{id}/manifest.json.sig"),
        &format!("snapshots/{job}/{forged_id}/manifest.json.sig"),
    );
    std::fs::write(
        store.join(format!("snapshots/{job}/{forged_id}/manifest.json.sig")),
        sign_manifest(config_dir, &json),
    )
    .unwrap();
    std::fs::write(store.join(manifest_key), json).unwrap();
    forged_id
}

// ---------------------------------------------------------------------------------------------------------------
// a. The rich tree, fs store and Ceph

#[test]
fn a_rich_tree_round_trips_through_the_fs_store_identically() {
    if !require_or(
        "GNU tar (the stock-tools check)",
        "apt-get install -y tar",
        binary_on_path("tar"),
    ) || !require("mkfifo", binary_on_path("mkfifo"))
    {
        return;
    }
    let (dir, k) = workspace();
    let vol = dir.path().join("vol");
    build_rich_tree(&vol);
    let source = walk(&vol);
    assert_rich_tree_properties(&source, &vol);
    let other_fs = other_filesystem();
    let store = other_fs.path().join("store");
    let config = write_config(
        dir.path(),
        &k.recipient,
        &[
            fs_store_toml("local", &store),
            volume_job_toml("files", "local", &vol, ""),
        ],
    );
    let id = backup(&config, "files");

    // The manifest counts what the tree holds; nothing changed, vanished or was skipped.
    let manifest = fs_manifest(&store, "files", &id);
    let volume = &manifest["volume"];
    assert_eq!(manifest["source"]["kind"], "volume");
    assert_eq!(
        volume["entries"].as_u64(),
        Some(source.entries.len() as u64),
        "{volume}"
    );
    assert_eq!(
        volume["files"].as_u64(),
        Some(distinct_files(&source)),
        "{volume}"
    );
    assert!(
        volume["bytes"].as_u64().unwrap() >= SPARSE_SIZE,
        "volume.bytes counts the sparse file's logical size: {volume}"
    );
    for list in ["changed", "vanished", "unreadable"] {
        assert_eq!(volume[list], serde_json::json!([]), "{list}: {volume}");
    }
    // Holes are not stored: 2 GiB of logical data is a few stored MiB.
    let stored = snapshot_dir(&store, "files", &id).join("volume.tar.zst.age");
    let stored_len = std::fs::metadata(&stored).unwrap().len();
    assert!(
        stored_len < 10 * MIB,
        "volume.tar.zst.age is {stored_len} bytes"
    );

    let restored = dir.path().join("restored");
    let out = restore_to_dir(&config, &k.identity_file, &format!("files/{id}"), &restored);
    out.expect_code(0);
    assert!(
        out.stderr
            .contains("every file's SHA-256 matches the catalog"),
        "{}",
        out.stderr
    );
    let back = walk(&restored);
    assert_same_tree(&source, &back);
    assert_rich_tree_properties(&back, &restored);

    // A second restore into the now non-empty directory is refused, and changes nothing.
    let again = restore_to_dir(&config, &k.identity_file, "files/latest", &restored);
    assert_ne!(again.code, 0, "{again:?}");
    assert!(again.stderr.contains("--confirm"), "{}", again.stderr);
    assert_same_tree(&source, &walk(&restored));

    // The raw tar (what the break-glass path gets from age and zstd) is read by GNU tar into the same tree.
    let raw = dir.path().join("volume.tar");
    lifeboat(
        &config,
        &[
            "restore",
            &format!("files/{id}"),
            "--identity",
            k.identity_file.to_str().unwrap(),
            "--to-file",
            raw.to_str().unwrap(),
        ],
    )
    .expect_code(0);
    let gnu = dir.path().join("gnu-tar");
    std::fs::create_dir(&gnu).unwrap();
    let out = run(Command::new("tar")
        .args([
            "--extract",
            "--same-permissions",
            "--same-owner",
            "--numeric-owner",
            "--file",
        ])
        .arg(&raw)
        .arg("--directory")
        .arg(&gnu))
    .unwrap();
    assert!(out.status.success(), "GNU tar: {out:?}");
    let by_gnu_tar = walk(&gnu);
    assert_same_tree(&source, &by_gnu_tar);
    assert!(allocated_bytes(&gnu.join(SPARSE)) < 64 * MIB);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rich_tree_round_trips_through_ceph_in_a_multipart_upload() {
    let Some(tier) = s3::require_ceph() else {
        return;
    };
    if !require("mkfifo", binary_on_path("mkfifo")) {
        return;
    }
    let (dir, k) = workspace();
    let vol = dir.path().join("vol");
    build_rich_tree(&vol);
    // 12 MiB that do not compress, so the stream spans several 5 MiB parts.
    write_file(
        &vol.join("data/incompressible.bin"),
        &noise(11, 12 * MIB as usize),
        0o644,
    );
    set_mtime(&vol.join("data"), at(OLD + 99, 0));
    let source = walk(&vol);
    let bucket = tier.create_locked_bucket("e2e-volume").await;
    let config = write_config(
        dir.path(),
        &k.recipient,
        &[
            s3_store_toml("offsite", &tier, &bucket, "compliance"),
            volume_job_toml("files", "offsite", &vol, ""),
        ],
    );
    let id = backup(&config, "files");

    let client = tier.client().await;
    let key = format!("lifeboat/snapshots/files/{id}/volume.tar.zst.age");
    let head = client
        .head_object()
        .bucket(&bucket)
        .key(&key)
        .send()
        .await
        .unwrap();
    let size = u64::try_from(head.content_length().unwrap()).unwrap();
    assert!(
        (12 * MIB..20 * MIB).contains(&size),
        "{key} is {size} bytes"
    );
    // A multipart object's ETag is `<md5 of the part md5s>-<parts>`.
    let etag = head
        .e_tag()
        .unwrap_or_default()
        .trim_matches('"')
        .to_owned();
    let parts: u32 = etag
        .rsplit_once('-')
        .and_then(|(_, n)| n.parse().ok())
        .unwrap_or_else(|| panic!("{key} was not uploaded in parts: ETag {etag}"));
    assert!(parts >= 3, "{parts} parts for {size} bytes");
    assert_eq!(
        head.object_lock_mode().map(|m| m.as_str()),
        Some("COMPLIANCE")
    );
    assert_no_multipart_uploads(&tier, &bucket).await;

    let restored = dir.path().join("restored");
    let out = restore_to_dir(&config, &k.identity_file, &format!("files/{id}"), &restored);
    out.expect_code(0);
    let back = walk(&restored);
    assert_same_tree(&source, &back);
    assert_rich_tree_properties(&back, &restored);
    let verify = lifeboat(
        &config,
        &[
            "verify",
            &format!("files/{id}"),
            "--identity",
            k.identity_file.to_str().unwrap(),
            "--no-record",
        ],
    );
    verify.expect_code(0);
    assert!(
        verify.stdout.contains(&format!(
            "ok   volume.tar: format: all {} files match",
            distinct_files(&source)
        )),
        "{}",
        verify.stdout
    );
}

// ---------------------------------------------------------------------------------------------------------------
// b. Hostile archives

/// A minimal ustar writer, for archives Lifeboat itself would never write.
#[derive(Default)]
struct RawTar(Vec<u8>);

impl RawTar {
    fn entry(mut self, name: &[u8], typeflag: u8, link: &[u8], data: &[u8]) -> Self {
        assert!(name.len() <= 100 && link.len() <= 100, "ustar name fields");
        let mut h = [0u8; 512];
        let octal = |field: &mut [u8], value: u64| {
            let text = format!("{value:0width$o}\0", width = field.len() - 1);
            field.copy_from_slice(text.as_bytes());
        };
        h[..name.len()].copy_from_slice(name);
        octal(
            &mut h[100..108],
            if typeflag == b'2' { 0o777 } else { 0o644 },
        );
        octal(&mut h[108..116], 0);
        octal(&mut h[116..124], 0);
        octal(&mut h[124..136], data.len() as u64);
        octal(&mut h[136..148], OLD);
        h[148..156].fill(b' ');
        h[156] = typeflag;
        h[157..157 + link.len()].copy_from_slice(link);
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        self.0.extend_from_slice(&h);
        self.0.extend_from_slice(data);
        self.0.resize(self.0.len().div_ceil(512) * 512, 0);
        self
    }

    fn file(self, name: &[u8], data: &[u8]) -> Self {
        self.entry(name, b'0', b"", data)
    }

    fn finish(mut self) -> Vec<u8> {
        self.0.extend_from_slice(&[0; 1024]);
        self.0
    }
}

/// Backs up a one-file volume, forges a snapshot of it whose tar is `hostile` (after a harmless first entry
/// `ok.txt`), restores that into a new directory and checks that the restore fails naming `entry`, that the harmless
/// entry was extracted (so the archive was read and the refusal is about `entry`), and that nothing appeared
/// outside the target: not in the workspace around it, not in `outside`, and not at `must_not_exist`.
fn assert_restore_refuses(
    suffix: &str,
    hostile: impl FnOnce(RawTar, &Path) -> RawTar,
    entry: impl FnOnce(&Path) -> String,
    must_not_exist: impl FnOnce(&Path, &Path) -> PathBuf,
) {
    let (dir, k) = workspace();
    let vol = dir.path().join("vol");
    write_file(&vol.join("ok.txt"), b"fine\n", 0o644);
    let other_fs = other_filesystem();
    let store = other_fs.path().join("store");
    let config = write_config(
        dir.path(),
        &k.recipient,
        &[
            fs_store_toml("local", &store),
            volume_job_toml("files", "local", &vol, ""),
        ],
    );
    let id = backup(&config, "files");
    let outside_dir = tempfile::tempdir().unwrap();
    let outside = outside_dir.path();
    let tar = hostile(RawTar::default().file(b"ok.txt", b"fine\n"), outside).finish();
    let forged =
        forge_volume_snapshot(dir.path(), &store, "files", &id, suffix, &tar, &k.recipient);

    let names = |p: &Path| -> BTreeSet<PathBuf> {
        std::fs::read_dir(p)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect()
    };
    let around_before = names(dir.path());
    let target = dir.path().join("restored");
    let victim = must_not_exist(dir.path(), outside);
    assert!(!victim.starts_with(&target));
    let out = restore_to_dir(
        &config,
        &k.identity_file,
        &format!("files/{forged}"),
        &target,
    );
    assert!(
        out.code > 0,
        "the hostile restore must fail (exit status, not a crash): {out:?}"
    );
    let entry = entry(outside);
    assert!(
        out.stderr
            .contains(&format!("refusing archive entry `{entry}`")),
        "the error names the unsafe entry `{entry}`:\n{}",
        out.stderr
    );
    assert_eq!(
        std::fs::read(target.join("ok.txt")).unwrap(),
        b"fine\n",
        "the entry before the attack was extracted"
    );
    assert!(
        std::fs::symlink_metadata(&victim).is_err(),
        "{} was written outside the target",
        victim.display()
    );
    let mut around_after = names(dir.path());
    assert!(around_after.remove(&target));
    assert_eq!(
        around_before, around_after,
        "new entries next to the target"
    );
    assert!(
        names(outside).is_empty(),
        "entries appeared in {}: {:?}",
        outside.display(),
        names(outside)
    );
    // The genuine snapshot still restores.
    restore_to_dir(
        &config,
        &k.identity_file,
        &format!("files/{id}"),
        &dir.path().join("genuine"),
    )
    .expect_code(0);
}

#[test]
fn restore_refuses_an_entry_climbing_out_with_dot_dot() {
    assert_restore_refuses(
        "zzzzza",
        |tar, _| tar.file(b"../escape.txt", b"escaped\n"),
        |_| "../escape.txt".to_owned(),
        // `restored/../escape.txt`
        |around, _| around.join("escape.txt"),
    );
}

#[test]
fn restore_refuses_an_absolute_entry() {
    assert_restore_refuses(
        "zzzzzb",
        |tar, outside| {
            tar.file(
                outside.join("absolute.txt").to_str().unwrap().as_bytes(),
                b"absolute\n",
            )
        },
        |outside| outside.join("absolute.txt").display().to_string(),
        |_, outside| outside.join("absolute.txt"),
    );
}

#[test]
fn restore_refuses_to_write_through_a_symlink_from_the_archive() {
    assert_restore_refuses(
        "zzzzzc",
        |tar, outside| {
            tar.entry(b"evil", b'2', outside.to_str().unwrap().as_bytes(), b"")
                .file(b"evil/pwned", b"pwned\n")
        },
        |_| "evil/pwned".to_owned(),
        |_, outside| outside.join("pwned"),
    );
}

// ---------------------------------------------------------------------------------------------------------------
// c. A file changing while it is read

#[test]
fn a_file_growing_while_it_is_read_is_archived_and_reported() {
    let (dir, k) = workspace();
    let vol = dir.path().join("vol");
    let big = vol.join("growing.log");
    write_file(&big, &noise(5, 64 * MIB as usize), 0o644);
    write_file(&vol.join("stable.txt"), b"does not change\n", 0o644);
    let other_fs = other_filesystem();
    let store = other_fs.path().join("store");
    let config = write_config(
        dir.path(),
        &k.recipient,
        &[
            fs_store_toml("local", &store),
            volume_job_toml("files", "local", &vol, ""),
        ],
    );

    // Deterministic, not a race: the appender writes a line every millisecond from before lifeboatd starts until
    // after it exits, so the file grows while its 64 MiB are read (which takes far longer than a millisecond) and
    // its size after reading always differs from the size stat'ed before.
    let stop = Arc::new(AtomicBool::new(false));
    let appended = Arc::new(AtomicU64::new(0));
    let appender = {
        let (stop, appended, big) = (stop.clone(), appended.clone(), big.clone());
        std::thread::spawn(move || {
            let mut f = std::fs::OpenOptions::new().append(true).open(&big).unwrap();
            while !stop.load(Ordering::SeqCst) {
                writeln!(f, "appended line {}", appended.load(Ordering::SeqCst)).unwrap();
                appended.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    while appended.load(Ordering::SeqCst) == 0 {
        std::thread::sleep(Duration::from_millis(1));
    }
    let before_run = appended.load(Ordering::SeqCst);
    let out = lifeboatd(&config, &["run", "files"]);
    let after_run = appended.load(Ordering::SeqCst);
    stop.store(true, Ordering::SeqCst);
    appender.join().unwrap();
    assert!(after_run > before_run, "the appender was running");
    out.expect_code(0);
    let id = out.stdout.trim().to_owned();

    let manifest = fs_manifest(&store, "files", &id);
    assert_eq!(
        manifest["volume"]["changed"],
        serde_json::json!(["growing.log"]),
        "{}",
        manifest["volume"]
    );
    let warning = out
        .stderr
        .lines()
        .find(|l| l.contains("File changed while it was read"))
        .unwrap_or_else(|| panic!("no warning in the log:\n{}", out.stderr));
    assert!(warning.contains("growing.log"), "{warning}");
    assert!(!out.stderr.contains("stable.txt"), "{}", out.stderr);

    // What was archived is consistent with the catalog, and is a prefix of the file as it is now.
    let restored = dir.path().join("restored");
    restore_to_dir(&config, &k.identity_file, &format!("files/{id}"), &restored).expect_code(0);
    let archived = std::fs::read(restored.join("growing.log")).unwrap();
    let now = std::fs::read(&big).unwrap();
    assert!(archived.len() as u64 >= 64 * MIB, "{}", archived.len());
    assert!(
        archived.len() < now.len(),
        "the file grew after it was read"
    );
    assert!(
        now.starts_with(&archived),
        "the archived copy is a prefix of the file"
    );
}

// ---------------------------------------------------------------------------------------------------------------
// d. Unreadable files

/// Runs the built `lifeboatd` (copied to `bin_copy`, since `target/` may sit in a home only root can enter) as the
/// user `nobody`.
fn lifeboatd_as_nobody(bin_copy: &Path, config: &Path, args: &[&str]) -> Run {
    let mut cmd = Command::new("runuser");
    cmd.args(["-u", "nobody", "--", "env", "RUST_LOG=info"])
        .arg(bin_copy)
        .arg("--config")
        .arg(config)
        .args(args);
    let out = run(&mut cmd).unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Every file below `dir`.
fn files_below(dir: &Path) -> Vec<PathBuf> {
    walk(dir)
        .entries
        .into_iter()
        .filter(|(_, e)| e.kind != Kind::Dir)
        .map(|(p, _)| p)
        .collect()
}

#[test]
fn an_unreadable_file_fails_the_run_unless_ignore_unreadable() {
    let (dir, k) = workspace();
    let is_root = std::fs::metadata(dir.path()).unwrap().uid() == 0;
    if !require_or(
        "running as root with runuser and a user `nobody` (to back up as an unprivileged user)",
        "run the suite as root (tests/run does in CI); apt-get install -y util-linux",
        is_root && binary_on_path("runuser") && Path::new("/etc/passwd").is_file(),
    ) {
        return;
    }
    // nobody must reach the workspace, the config, the binary and the volume, and write the store.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin_copy = dir.path().join("lifeboatd");
    std::fs::copy(bin("lifeboatd"), &bin_copy).unwrap();
    std::fs::set_permissions(&bin_copy, std::fs::Permissions::from_mode(0o755)).unwrap();
    let other_fs = other_filesystem();
    let store = other_fs.path().join("store");
    std::fs::create_dir(&store).unwrap();
    std::os::unix::fs::chown(&store, Some(NOBODY), Some(NOBODY)).unwrap();
    let vol = dir.path().join("vol");
    write_file(&vol.join("readable.txt"), b"anyone\n", 0o644);
    write_file(&vol.join("sub/also-readable.txt"), b"anyone\n", 0o644);
    write_file(&vol.join("sub/secret.txt"), b"root only\n", 0o600);
    let secret = vol.join("sub/secret.txt");
    let tables = |extra: &str| {
        [
            fs_store_toml("local", &store),
            volume_job_toml("files", "local", &vol, extra),
        ]
    };
    let config = write_config(dir.path(), &k.recipient, &tables(""));
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();

    let out = lifeboatd_as_nobody(&bin_copy, &config, &["run", "files"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stdout.trim().is_empty(), "no snapshot id: {out:?}");
    assert!(
        out.stderr
            .contains(&format!("cannot read {}", secret.display())),
        "the error names the file:\n{}",
        out.stderr
    );
    assert!(out.stderr.contains("Permission denied"), "{}", out.stderr);
    assert!(
        out.stderr.contains("ignore_unreadable = true"),
        "the error says how to fix it:\n{}",
        out.stderr
    );
    crate::common::assert_no_snapshot(&config);
    assert_eq!(
        files_below(&store.join("snapshots")),
        Vec::<PathBuf>::new(),
        "a failed run leaves no object"
    );

    let config = write_config(
        dir.path(),
        &k.recipient,
        &tables("ignore_unreadable = true\n"),
    );
    let out = lifeboatd_as_nobody(&bin_copy, &config, &["run", "files"]);
    out.expect_code(0);
    let id = out.stdout.trim().to_owned();
    assert_eq!(listed_ids(&config, "files"), vec![id.clone()]);
    let manifest = fs_manifest(&store, "files", &id);
    let unreadable = manifest["volume"]["unreadable"].as_array().unwrap();
    assert_eq!(unreadable.len(), 1, "{unreadable:?}");
    let line = unreadable[0].as_str().unwrap();
    assert!(
        line.starts_with("sub/secret.txt: ") && line.contains("Permission denied"),
        "{line}"
    );
    assert!(
        out.stderr.contains("sub/secret.txt"),
        "skipping is logged:\n{}",
        out.stderr
    );
    // Everything else is in the snapshot.
    let restored = dir.path().join("restored");
    restore_to_dir(&config, &k.identity_file, &format!("files/{id}"), &restored).expect_code(0);
    let mut expected = walk(&vol);
    expected.remove("sub/secret.txt");
    assert_same_tree(&expected, &walk(&restored));
}

// ---------------------------------------------------------------------------------------------------------------
// e. Hooks

fn toml_argv(args: &[&str]) -> String {
    let quoted: Vec<String> = args.iter().map(|a| format!("{a:?}")).collect();
    format!("[{}]", quoted.join(", "))
}

#[test]
fn hooks_run_before_and_after_and_a_failing_before_hook_fails_the_run() {
    let (dir, k) = workspace();
    let vol = dir.path().join("vol");
    write_file(&vol.join("data.txt"), b"data\n", 0o644);
    let other_fs = other_filesystem();
    let store = other_fs.path().join("store");
    let marks = dir.path().join("marks.txt");
    let hook = |script: String| toml_argv(&["/bin/sh", "-c", &script]);
    let tables = |before: String, after: String| {
        [
            fs_store_toml("local", &store),
            volume_job_toml(
                "files",
                "local",
                &vol,
                &format!("before = {before}\nafter = {after}\nhook_timeout = \"30s\"\n"),
            ),
        ]
    };
    // `before` leaves a file in the volume (so it ran before the tree was read), `after` another one (so it ran
    // after); both append their name to the marks file.
    let config = write_config(
        dir.path(),
        &k.recipient,
        &tables(
            hook(format!(
                "echo \"$LIFEBOAT_HOOK $LIFEBOAT_JOB\" >> {m}; echo frozen > {v}/by-before.txt",
                m = marks.display(),
                v = vol.display()
            )),
            hook(format!(
                "echo \"$LIFEBOAT_HOOK $LIFEBOAT_JOB\" >> {m}; echo thawed > {v}/by-after.txt",
                m = marks.display(),
                v = vol.display()
            )),
        ),
    );
    let id = backup(&config, "files");
    assert_eq!(
        std::fs::read_to_string(&marks).unwrap(),
        "before files\nafter files\n"
    );
    assert!(vol.join("by-after.txt").is_file(), "after ran");
    let restored = dir.path().join("restored");
    restore_to_dir(&config, &k.identity_file, &format!("files/{id}"), &restored).expect_code(0);
    assert_eq!(
        std::fs::read_to_string(restored.join("by-before.txt")).unwrap(),
        "frozen\n",
        "before ran before the tree was read"
    );
    assert!(
        !restored.join("by-after.txt").exists(),
        "after ran after the tree was read"
    );

    // A failing `before` fails the run without reading the source, and `after` still runs.
    std::fs::remove_file(&marks).unwrap();
    let config = write_config(
        dir.path(),
        &k.recipient,
        &tables(
            hook(format!(
                "echo \"$LIFEBOAT_HOOK\" >> {m}; echo cannot freeze the volume >&2; exit 3",
                m = marks.display()
            )),
            hook(format!("echo \"$LIFEBOAT_HOOK\" >> {}", marks.display())),
        ),
    );
    let out = lifeboatd(&config, &["run", "files"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stdout.trim().is_empty(), "no snapshot id: {out:?}");
    assert!(
        out.stderr.contains("before hook \"/bin/sh\" failed")
            && out.stderr.contains("exit status: 3")
            && out.stderr.contains("cannot freeze the volume"),
        "the error names the hook, its status and its last words:\n{}",
        out.stderr
    );
    assert_eq!(
        std::fs::read_to_string(&marks).unwrap(),
        "before\nafter\n",
        "after ran after the failed before"
    );
    assert_eq!(
        listed_ids(&config, "files"),
        vec![id],
        "no snapshot from the failed run"
    );
}

// ---------------------------------------------------------------------------------------------------------------
// f. verify

#[test]
fn verify_passes_a_volume_snapshot_and_names_a_file_that_contradicts_the_catalog() {
    let (dir, k) = workspace();
    let vol = dir.path().join("vol");
    write_file(
        &vol.join("docs/contract.txt"),
        b"the quick brown fox pays 100 EUR\n",
        0o644,
    );
    write_file(&vol.join("docs/other.txt"), b"unchanged\n", 0o644);
    write_file(&vol.join("big.bin"), &noise(9, 3 * MIB as usize), 0o644);
    let other_fs = other_filesystem();
    let store = other_fs.path().join("store");
    let config = write_config(
        dir.path(),
        &k.recipient,
        &[
            fs_store_toml("local", &store),
            volume_job_toml("files", "local", &vol, ""),
        ],
    );
    let id = backup(&config, "files");
    let verify = |snapshot: &str| {
        lifeboat(
            &config,
            &[
                "verify",
                &format!("files/{snapshot}"),
                "--identity",
                k.identity_file.to_str().unwrap(),
                "--no-record",
            ],
        )
    };
    let ok = verify(&id);
    ok.expect_code(0);
    assert!(
        ok.stdout
            .contains("ok   volume.tar: format: all 3 files match"),
        "{}",
        ok.stdout
    );

    // The same archive with one byte of one file changed, under the original catalog.
    let raw = dir.path().join("volume.tar");
    lifeboat(
        &config,
        &[
            "restore",
            &format!("files/{id}"),
            "--identity",
            k.identity_file.to_str().unwrap(),
            "--to-file",
            raw.to_str().unwrap(),
        ],
    )
    .expect_code(0);
    let mut tar = std::fs::read(&raw).unwrap();
    let needle = b"pays 100 EUR";
    let at = tar
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("the file's content is in the tar");
    tar[at + 5] = b'9'; // 100 EUR -> 900 EUR
    let forged = forge_volume_snapshot(
        dir.path(),
        &store,
        "files",
        &id,
        "zzzzzf",
        &tar,
        &k.recipient,
    );

    let bad = verify(&forged);
    assert_eq!(bad.code, 1, "{bad:?}");
    assert!(
        bad.stdout.contains("ok   volume.tar: stored SHA-256")
            || bad.stdout.contains("ok   volume.tar: decrypts"),
        "the stored bytes are intact, only the content contradicts the catalog:\n{}",
        bad.stdout
    );
    let fail = bad
        .stdout
        .lines()
        .map(str::trim_start)
        .find(|l| l.starts_with("FAIL"))
        .unwrap_or_else(|| panic!("no failed check:\n{}", bad.stdout));
    assert!(
        fail.starts_with("FAIL volume.tar: format: 1 files differ: docs/contract.txt: "),
        "{fail}"
    );
    assert!(fail.contains("the catalog says"), "{fail}");
    assert!(
        !fail.contains("other.txt") && !fail.contains("big.bin"),
        "{fail}"
    );
    assert_eq!(
        bad.stdout
            .lines()
            .filter(|l| l.trim_start().starts_with("FAIL"))
            .count(),
        1,
        "{}",
        bad.stdout
    );

    // A restore of it extracts, then fails naming the file.
    let out = restore_to_dir(
        &config,
        &k.identity_file,
        &format!("files/{forged}"),
        &dir.path().join("restored"),
    );
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr
            .contains("docs/contract.txt: content differs from the catalog"),
        "{}",
        out.stderr
    );
}

/// A volume is checked against its own catalog whatever its files are called: a file named `backup_manifest` at
/// its root (a copy of a pg_basebackup, or any application's file of that name) is just a file.
#[test]
fn verify_checks_a_volume_holding_a_file_named_backup_manifest_against_its_catalog() {
    let (dir, k) = workspace();
    let vol = dir.path().join("vol");
    write_file(
        &vol.join("backup_manifest"),
        br#"{"PostgreSQL-Backup-Manifest-Version": 1, "Files": []}"#,
        0o644,
    );
    write_file(&vol.join("notes.txt"), b"an ordinary file\n", 0o644);
    let other_fs = other_filesystem();
    let store = other_fs.path().join("store");
    let config = write_config(
        dir.path(),
        &k.recipient,
        &[
            fs_store_toml("local", &store),
            volume_job_toml("files", "local", &vol, ""),
        ],
    );
    let id = backup(&config, "files");
    let out = lifeboat(
        &config,
        &[
            "verify",
            &format!("files/{id}"),
            "--identity",
            k.identity_file.to_str().unwrap(),
            "--no-record",
        ],
    );
    assert!(
        out.code == 0
            && out
                .stdout
                .contains("ok   volume.tar: format: all 2 files match"),
        "a healthy volume snapshot must verify against its catalog:\n{}",
        out.stdout
    );
}
