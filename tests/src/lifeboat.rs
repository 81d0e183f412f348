//! Running the real `lifeboatd` and `lifeboat` binaries from tests: locating them, throw-away age keys,
//! and config files written per test (fs or S3 store, PostgreSQL or volume job).

use crate::postgres::run;
use crate::s3::S3Tier;
use age::secrecy::ExposeSecret;
use lifeboat_core::secret::Secret;
use lifeboat_core::snapshot::ManifestSigner;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The directory holding the built binaries (`target/debug`), derived from the test executable's path.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    // target/debug/deps/e2e-HASH -> target/debug
    exe.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// Path of a built binary; panics with the fix if it was not built.
pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.is_file(),
        "{} not found: build the binaries first (`cargo build --workspace --bins`, as tests/run does)",
        p.display()
    );
    p
}

/// A throw-away age key pair; the identity is written to a file.
pub struct Keys {
    /// File holding the identity (secret key).
    pub identity_file: PathBuf,
    /// The identity's text, for tests that check it never leaks.
    pub identity_text: String,
    /// The public key.
    pub recipient: String,
}

/// Generates a key pair, writing the identity into `dir/identity.txt`.
pub fn keys(dir: &Path) -> Keys {
    let id = age::x25519::Identity::generate();
    let identity_text = id.to_string().expose_secret().to_owned();
    let identity_file = dir.join("identity.txt");
    std::fs::write(&identity_file, format!("{identity_text}\n")).expect("write identity");
    Keys {
        identity_file,
        identity_text,
        recipient: id.to_public().to_string(),
    }
}

/// The outcome of running a binary.
#[derive(Debug)]
pub struct Run {
    /// Exit code (-1 if killed).
    pub code: i32,
    /// Stdout.
    pub stdout: String,
    /// Stderr.
    pub stderr: String,
}

impl Run {
    /// Panics with both outputs unless the exit code is `code`.
    #[track_caller]
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code, code,
            "expected exit code {code}, got {}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        );
        self
    }
}

/// Runs `name` (lifeboatd or lifeboat) with `--config config` and `args`.
pub fn run_bin(name: &str, config: &Path, args: &[&str]) -> Run {
    let mut cmd = Command::new(bin(name));
    cmd.arg("--config")
        .arg(config)
        .args(args)
        .env("RUST_LOG", "info");
    let out = run(&mut cmd).expect("run binary");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `lifeboatd --config CONFIG ARGS...`
pub fn lifeboatd(config: &Path, args: &[&str]) -> Run {
    run_bin("lifeboatd", config, args)
}

/// `lifeboat --config CONFIG ARGS...`
pub fn lifeboat(config: &Path, args: &[&str]) -> Run {
    run_bin("lifeboat", config, args)
}

/// A temporary directory (mode 0755) on another filesystem than the system temp dir, for an fs store that the
/// independence check accepts next to a volume in a temp dir: tmpfs `/dev/shm`. Panics with the fix without one.
pub fn other_filesystem() -> tempfile::TempDir {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let tmp_dev = std::fs::metadata(std::env::temp_dir())
        .map(|m| m.dev())
        .ok();
    let dir = tempfile::tempdir_in("/dev/shm").expect(
        "volume tests keep their fs store on another filesystem than the temp dir: mount a tmpfs at /dev/shm",
    );
    let dev = std::fs::metadata(dir.path()).map(|m| m.dev()).ok();
    assert_ne!(
        dev, tmp_dev,
        "/dev/shm is on the temp dir's filesystem; volume tests need a tmpfs there (or TMPDIR elsewhere)"
    );
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    dir
}

/// A `[stores.NAME]` table for an fs store.
pub fn fs_store_toml(name: &str, path: &Path) -> String {
    format!(
        "[stores.{name}]\nkind = \"fs\"\npath = \"{}\"\nlock_mode = \"compliance\"\nretention = \"1d\"\n",
        path.display()
    )
}

/// A `[stores.NAME]` table for a bucket of an S3 tier; credentials come from the tier's environment variables.
///
/// These are the tier's admin (bucket owner) credentials, which fail the immutability audit by design, so the
/// table says `require_immutable = false`; tests of the audit and its gate use [`s3_writer_store_toml`].
pub fn s3_store_toml(name: &str, tier: &S3Tier, bucket: &str, lock_mode: &str) -> String {
    let table = s3_table(name, tier, bucket, lock_mode, "");
    if lock_mode == "none" {
        table
    } else {
        format!("{table}require_immutable = false\n")
    }
}

/// A `[stores.NAME]` table for a Ceph bucket written with the second user's (`lifeboat-other`) credentials, meant
/// to hold the writer role (see [`crate::s3::S3Tier::apply_writer_policy`]); `require_immutable` keeps its default.
pub fn s3_writer_store_toml(name: &str, tier: &S3Tier, bucket: &str, lock_mode: &str) -> String {
    s3_table(name, tier, bucket, lock_mode, "_OTHER")
}

fn s3_table(name: &str, tier: &S3Tier, bucket: &str, lock_mode: &str, user: &str) -> String {
    let env_prefix = format!("LIFEBOAT_TEST_{}{user}", tier.name.to_ascii_uppercase());
    let retention = if lock_mode == "none" {
        String::new()
    } else {
        "retention = \"1d\"\n".to_owned()
    };
    format!(
        "[stores.{name}]\nkind = \"s3\"\nendpoint = \"{}\"\nregion = \"{}\"\nbucket = \"{bucket}\"\nprefix = \"lifeboat/\"\npath_style = true\nlock_mode = \"{lock_mode}\"\n{retention}part_size = \"5MiB\"\naccess_key_id_env = \"{env_prefix}_ACCESS_KEY\"\nsecret_access_key_env = \"{env_prefix}_SECRET_KEY\"\n",
        tier.endpoint, tier.region
    )
}

/// A `[jobs.NAME]` table for a PostgreSQL job; `extra` lines are appended verbatim (a `schedule` line there
/// replaces the default `0 3 * * *`).
pub fn pg_job_toml(name: &str, store: &str, url: &str, databases: &[&str], extra: &str) -> String {
    let dbs = databases
        .iter()
        .map(|d| format!("{d:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    let schedule = if extra
        .lines()
        .any(|l| l.trim_start().starts_with("schedule"))
    {
        ""
    } else {
        "schedule = \"0 3 * * *\"\n"
    };
    format!(
        "[jobs.{name}]\nkind = \"postgres\"\nurl = \"{url}\"\ndatabases = [{dbs}]\n{schedule}store = \"{store}\"\n{extra}"
    )
}

/// A `[jobs.NAME]` table for a volume job backing up `path`; `extra` lines are appended verbatim (a `schedule` line
/// there replaces the default `0 3 * * *`).
pub fn volume_job_toml(name: &str, store: &str, path: &Path, extra: &str) -> String {
    let schedule = if extra
        .lines()
        .any(|l| l.trim_start().starts_with("schedule"))
    {
        ""
    } else {
        "schedule = \"0 3 * * *\"\n"
    };
    format!(
        "[jobs.{name}]\nkind = \"volume\"\npath = {:?}\n{schedule}store = \"{store}\"\n{extra}",
        path.display().to_string()
    )
}

/// The manifest-signing key of a test directory: `dir/signing.pem`, made on first use and reused after (so
/// configs rewritten in the same directory keep trusting earlier snapshots). Returns the file and the
/// `ed25519:…` public key.
pub fn signing_key(dir: &Path) -> (PathBuf, String) {
    let path = dir.join("signing.pem");
    let signer = test_signer(dir);
    (path, signer.public_key())
}

fn test_signer(dir: &Path) -> ManifestSigner {
    let path = dir.join("signing.pem");
    if path.is_file() {
        let pem = std::fs::read_to_string(&path).expect("read signing key");
        ManifestSigner::from_pem("test signing key", &Secret::new(pem)).expect("parse signing key")
    } else {
        let signer = ManifestSigner::generate().expect("generate signing key");
        let pem = signer.to_pem().expect("encode signing key");
        std::fs::write(&path, pem.expose()).expect("write signing key");
        signer
    }
}

/// Signs `manifest` (the exact bytes of a `manifest.json`) with the test directory's signing key, as the daemon
/// would: the contents of its `manifest.json.sig`.
pub fn sign_manifest(dir: &Path, manifest: &[u8]) -> Vec<u8> {
    test_signer(dir).sign(manifest).to_vec()
}

/// Writes a complete config file: the given store and job tables plus `[encryption]` for `recipient`, with a
/// manifest-signing key ([`signing_key`]) configured both as `signing_key_file` and in `signing_public_keys`.
pub fn write_config(dir: &Path, recipient: &str, tables: &[String]) -> PathBuf {
    let path = dir.join("lifeboat.toml");
    let (key_file, public_key) = signing_key(dir);
    let text = format!(
        "[encryption]\nrecipients = [\"{recipient}\"]\nsigning_key_file = {:?}\nsigning_public_keys = [\"{public_key}\"]\n\n{}",
        key_file.display().to_string(),
        tables.join("\n")
    );
    std::fs::write(&path, text).expect("write config");
    path
}
