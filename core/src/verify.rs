//! `lifeboat verify`: proves a snapshot is intact. Without an identity from the stored bytes, versions and locks
//! alone (an auditor's check); with one, also by decrypting and decompressing every object and checking its format.

use crate::pipeline::{HashingReader, PipelineError};
use crate::restore::{decode_into_child, restore_object, Identities, IntoChildError, RestoreError};
use crate::snapshot::{
    Catalog, CatalogFile, LockInfo, Manifest, ObjectEntry, ObjectKind, SnapshotRef,
};
use crate::source::PgTools;
use crate::store::ReadStore;
use crate::verification::CheckResult;
use chrono::{DateTime, Utc};
use std::io::Read;
use tokio::process::Command;
use tokio_util::io::SyncIoBridge;
use tokio_util::sync::CancellationToken;

/// What a full verification needs besides the store.
pub struct DecodeChecks {
    /// The age identities that can decrypt the snapshot.
    pub identities: Identities,
    /// Client tools (`pg_restore`) for the format check of logical dumps.
    pub tools: PgTools,
}

fn check(name: String, passed: bool, detail: impl Into<String>) -> CheckResult {
    CheckResult {
        name,
        passed,
        detail: detail.into(),
    }
}

/// Runs every check on one snapshot; never stops at the first failure. `decode` adds the decrypting checks.
pub async fn verify_snapshot<S: ReadStore>(
    store: &S,
    snapshot: &SnapshotRef,
    manifest: &Manifest,
    decode: Option<&DecodeChecks>,
    now: DateTime<Utc>,
) -> Vec<CheckResult> {
    let mut checks = Vec::new();
    let manifest_key = snapshot.manifest_key();
    checks.push(match store.version_count(&manifest_key).await {
        Ok(1) => check("manifest: one version".into(), true, "written once, never replaced"),
        Ok(n) => check(
            "manifest: one version".into(),
            false,
            format!("{manifest_key} has {n} versions: it was replaced or deleted after it was written; compare them (aws s3api list-object-versions) before trusting this snapshot"),
        ),
        Err(e) => check("manifest: one version".into(), false, e.to_string()),
    });
    // A physical backup's per-file digests are pg_basebackup's backup_manifest inside the archive; a volume's
    // live in the (encrypted) catalog, read first when decrypting.
    let physical = manifest.source.kind == "postgres_physical";
    let files = match decode {
        Some(d) if manifest.objects.iter().any(|o| o.kind == ObjectKind::Tar) => {
            crate::restore::read_catalog(store, manifest, d.identities.clone())
                .await
                .ok()
                .map(|c| c.files)
        }
        _ => None,
    };
    for entry in &manifest.objects {
        let present = object_present(store, entry).await;
        let present_ok = present.passed;
        checks.push(present);
        if !present_ok {
            continue;
        }
        checks.push(lock_check(store, entry, now).await);
        match decode {
            None => checks.push(stored_sha256(store, entry).await),
            Some(d) => {
                checks.extend(decode_checks(store, entry, d, files.as_deref(), physical).await)
            }
        }
    }
    checks
}

async fn object_present<S: ReadStore>(store: &S, entry: &ObjectEntry) -> CheckResult {
    let name = format!("{}: present", entry.name);
    match store.head(&entry.key).await {
        Err(e) if e.is_not_found() => check(
            name,
            false,
            format!("{} is missing from the store", entry.key),
        ),
        Err(e) => check(name, false, e.to_string()),
        Ok(info) => {
            if info.size != entry.stored_bytes {
                return check(
                    name,
                    false,
                    format!(
                        "{} bytes stored, the manifest says {}",
                        info.size, entry.stored_bytes
                    ),
                );
            }
            match (&entry.version_id, &info.version_id) {
                (Some(want), Some(have)) if want != have => check(
                    name,
                    false,
                    format!("the current version is {have}, the manifest recorded {want}: the object was overwritten"),
                ),
                _ => check(name, true, format!("{} bytes", info.size)),
            }
        }
    }
}

async fn lock_check<S: ReadStore>(
    store: &S,
    entry: &ObjectEntry,
    now: DateTime<Utc>,
) -> CheckResult {
    let name = format!("{}: locked", entry.name);
    let want: &LockInfo = &entry.lock;
    if want.mode.eq_ignore_ascii_case("none") {
        return check(name, true, "not locked: the store's lock_mode is \"none\"");
    }
    let info = match store.head(&entry.key).await {
        Ok(i) => i,
        Err(e) => return check(name, false, e.to_string()),
    };
    let Some(lock) = info.lock else {
        return check(
            name,
            false,
            format!(
                "the store reports no lock; the manifest says {} until {}",
                want.mode,
                fmt_time(want.retain_until)
            ),
        );
    };
    if !lock.mode.eq_ignore_ascii_case(&want.mode) {
        return check(
            name,
            false,
            format!("lock mode {}, the manifest says {}", lock.mode, want.mode),
        );
    }
    match (lock.retain_until, want.retain_until) {
        (Some(have), Some(wanted)) if have < wanted => check(
            name,
            false,
            format!(
                "retained until {}, earlier than the manifest's {}",
                fmt_time(Some(have)),
                fmt_time(Some(wanted))
            ),
        ),
        (Some(have), _) if have <= now => check(
            name,
            false,
            format!(
                "the lock expired at {}: the object can now be deleted",
                fmt_time(Some(have))
            ),
        ),
        (Some(have), _) => check(
            name,
            true,
            format!("{} until {}", lock.mode, fmt_time(Some(have))),
        ),
        (None, _) => check(
            name,
            false,
            "the store reports a lock mode but no retain-until date",
        ),
    }
}

fn fmt_time(t: Option<DateTime<Utc>>) -> String {
    t.map_or_else(
        || "(none)".to_owned(),
        |t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
    )
}

/// SHA-256 of the stored (encrypted) bytes, without decrypting: what an auditor without the key can check.
async fn stored_sha256<S: ReadStore>(store: &S, entry: &ObjectEntry) -> CheckResult {
    let name = format!("{}: stored SHA-256", entry.name);
    let body = match store.get(&entry.key).await {
        Ok(b) => b,
        Err(e) => return check(name, false, e.to_string()),
    };
    let hashed = tokio::task::spawn_blocking(move || {
        let mut reader = HashingReader::new(SyncIoBridge::new(body));
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            match reader.read(&mut buf) {
                Ok(0) => return Ok(reader.finish()),
                Ok(_) => {}
                Err(e) => return Err(e),
            }
        }
    })
    .await;
    match hashed {
        Ok(Ok((bytes, sha))) if bytes == entry.stored_bytes && sha == entry.stored_sha256 => {
            check(name, true, sha)
        }
        Ok(Ok((bytes, sha))) => check(
            name,
            false,
            format!(
                "the stored bytes do not match the manifest: {bytes} bytes with SHA-256 {sha}, the manifest says {} bytes with {}",
                entry.stored_bytes, entry.stored_sha256
            ),
        ),
        Ok(Err(e)) => check(name, false, format!("reading the object failed: {e}")),
        Err(e) => check(name, false, format!("internal error: {e}")),
    }
}

/// Decrypts and decompresses one object into its format check: stored and payload checksums, then the format.
async fn decode_checks<S: ReadStore>(
    store: &S,
    entry: &ObjectEntry,
    d: &DecodeChecks,
    files: Option<&[CatalogFile]>,
    physical: bool,
) -> Vec<CheckResult> {
    let decrypt_name = format!("{}: decrypts, payload SHA-256", entry.name);
    let format_name = format!("{}: format", entry.name);
    let ids = d.identities.clone();
    let result = match entry.kind {
        ObjectKind::PgDumpCustom => pg_restore_list(store, entry, ids, &d.tools).await,
        ObjectKind::GlobalsSql => decode_small(store, entry, ids)
            .await
            .map(|sql| globals_format(&sql)),
        ObjectKind::Catalog => decode_small(store, entry, ids)
            .await
            .map(|json| catalog_format(&json)),
        ObjectKind::Tar => tar_files(store, entry, ids, files, physical).await,
    };
    match result {
        Ok(format) => vec![
            check(decrypt_name, true, entry.payload_sha256.clone()),
            match format {
                Ok(detail) => check(format_name, true, detail),
                Err(detail) => check(format_name, false, detail),
            },
        ],
        Err(DecodeFailure::Stored(detail)) => vec![check(
            format!("{}: stored SHA-256", entry.name),
            false,
            detail,
        )],
        Err(DecodeFailure::Other(detail)) => {
            // Tell corrupt bytes from a wrong key: hash the stored bytes without decrypting.
            let stored = stored_sha256(store, entry).await;
            if stored.passed {
                vec![stored, check(decrypt_name, false, detail)]
            } else {
                vec![stored]
            }
        }
    }
}

enum DecodeFailure {
    /// The stored bytes are not what the manifest says.
    Stored(String),
    /// Anything else: the wrong identity, a payload mismatch, a failing format tool.
    Other(String),
}

fn decode_failure(e: RestoreError) -> DecodeFailure {
    match e {
        RestoreError::Pipeline { source, .. } => match *source {
            PipelineError::ChecksumMismatch { what: "stored", .. }
            | PipelineError::SizeMismatch { what: "stored", .. } => {
                DecodeFailure::Stored(source.to_string())
            }
            other => DecodeFailure::Other(other.to_string()),
        },
        other => DecodeFailure::Other(other.to_string()),
    }
}

async fn decode_small<S: ReadStore>(
    store: &S,
    entry: &ObjectEntry,
    identities: Identities,
) -> Result<Vec<u8>, DecodeFailure> {
    restore_object(
        store,
        entry,
        identities,
        Vec::new(),
        None,
        CancellationToken::new(),
    )
    .await
    .map(|(_, bytes)| bytes)
    .map_err(decode_failure)
}

fn globals_format(sql: &[u8]) -> Result<String, String> {
    let text =
        std::str::from_utf8(sql).map_err(|_| "the globals script is not UTF-8 text".to_owned())?;
    if text.trim().is_empty() {
        return Err("the globals script is empty".into());
    }
    if !text.contains("PostgreSQL database cluster dump") {
        return Err(
            "the globals script lacks pg_dumpall's header (\"PostgreSQL database cluster dump\")"
                .into(),
        );
    }
    let roles = text
        .lines()
        .filter(|l| l.starts_with("CREATE ROLE "))
        .count();
    Ok(format!(
        "pg_dumpall SQL script, {} bytes, {roles} roles",
        sql.len()
    ))
}

fn catalog_format(json: &[u8]) -> Result<String, String> {
    let catalog: Catalog =
        serde_json::from_slice(json).map_err(|e| format!("the catalog is not valid JSON: {e}"))?;
    let tables: usize = catalog.databases.iter().map(|d| d.tables.len()).sum();
    if !catalog.files.is_empty() {
        return Ok(format!("SHA-256 of {} files", catalog.files.len()));
    }
    Ok(format!(
        "{} databases, {tables} tables with row counts",
        catalog.databases.len()
    ))
}

/// Streams the decoded dump through `pg_restore --file=/dev/null`, which reads the whole archive (its table of
/// contents and every data block) as a restore would, without a database.
async fn pg_restore_list<S: ReadStore>(
    store: &S,
    entry: &ObjectEntry,
    identities: Identities,
    tools: &PgTools,
) -> Result<Result<String, String>, DecodeFailure> {
    let mut cmd = Command::new(tools.tool("pg_restore"));
    cmd.arg("--file=/dev/null");
    match decode_into_child(store, entry, identities, cmd, "pg_restore", None).await {
        Ok(_) => Ok(Ok(format!(
            "pg_restore reads the whole archive ({} bytes: table of contents and every data block)",
            entry.payload_bytes
        ))),
        Err(IntoChildError::Child(e)) => Ok(Err(format!("pg_restore rejects the dump: {e}"))),
        Err(IntoChildError::Decode(e)) => Err(decode_failure(e)),
    }
}

/// Streams the decoded tar through a reader that hashes every regular file, and compares with the catalog.
async fn tar_files<S: ReadStore>(
    store: &S,
    entry: &ObjectEntry,
    identities: Identities,
    expected: Option<&[CatalogFile]>,
    physical: bool,
) -> Result<Result<String, String>, DecodeFailure> {
    let (reader, writer) =
        std::io::pipe().map_err(|e| DecodeFailure::Other(format!("creating a pipe: {e}")))?;
    let hashing = tokio::task::spawn_blocking(move || tar_digests(reader));
    let decoded = restore_object(
        store,
        entry,
        identities,
        writer,
        None,
        CancellationToken::new(),
    )
    .await
    // Close the pipe (the writer comes back with the report) so the hashing side sees the end.
    .map(|(report, writer)| {
        drop(writer);
        report
    });
    let digests = hashing.await;
    if let Err(e) = decoded {
        return Err(decode_failure(e));
    }
    let contents = match digests {
        Ok(Ok(d)) => d,
        Ok(Err(e)) => return Ok(Err(format!("not a readable tar archive: {e}"))),
        Err(e) => return Err(DecodeFailure::Other(format!("internal error: {e}"))),
    };
    let found = contents.files;
    // A physical backup carries its own per-file SHA-256 list: pg_basebackup's backup_manifest.
    if physical {
        let Some(json) = &contents.backup_manifest else {
            return Ok(Err(
                "the archive has no backup_manifest: not a pg_basebackup of PostgreSQL 13 or newer"
                    .into(),
            ));
        };
        return Ok(match backup_manifest_files(json) {
            Err(e) => Err(e),
            Ok(listed) => compare_files(&listed, &found, |path| {
                path == "backup_manifest" || path.starts_with("pg_wal/")
            })
            .map(|ok| format!("pg_basebackup's backup_manifest: {ok}")),
        });
    }
    let Some(expected) = expected else {
        return Ok(Err(format!(
            "tar reads ({} files), but the catalog with the per-file SHA-256 could not be read",
            found.len()
        )));
    };
    Ok(compare_files(expected, &found, |_| false))
}

/// What a tar stream holds: every regular file's digest, and pg_basebackup's `backup_manifest` if present.
struct TarContents {
    files: Vec<CatalogFile>,
    backup_manifest: Option<Vec<u8>>,
}

/// Largest `backup_manifest` read into memory (it lists every file of a cluster: ~200 bytes each).
const MAX_BACKUP_MANIFEST: u64 = 512 * 1024 * 1024;

/// Reads a tar stream to the end, hashing the content of every regular file (sparse ones as their logical content).
fn tar_digests<R: Read>(src: R) -> std::io::Result<TarContents> {
    let mut archive = tar::Archive::new(src);
    let mut files = Vec::new();
    let mut backup_manifest = None;
    let mut buf = vec![0u8; 256 * 1024];
    for entry in archive.entries()? {
        let mut entry = entry?;
        let kind = entry.header().entry_type();
        if !(kind.is_file() || kind.is_gnu_sparse()) {
            continue;
        }
        let path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        if path == "backup_manifest" && entry.size() <= MAX_BACKUP_MANIFEST {
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes)?;
            let mut hasher = HashingReader::new(&bytes[..]);
            while hasher.read(&mut buf)? > 0 {}
            let (size, sha256) = hasher.finish();
            files.push(CatalogFile { path, size, sha256 });
            backup_manifest = Some(bytes);
            continue;
        }
        let mut hasher = HashingReader::new(&mut entry);
        while hasher.read(&mut buf)? > 0 {}
        let (size, sha256) = hasher.finish();
        files.push(CatalogFile { path, size, sha256 });
    }
    // Drain the end-of-archive padding so the writer never sees a broken pipe.
    let mut rest = archive.into_inner();
    std::io::copy(&mut rest, &mut std::io::sink())?;
    Ok(TarContents {
        files,
        backup_manifest,
    })
}

/// The files pg_basebackup's `backup_manifest` lists with a SHA-256 checksum.
pub(crate) fn backup_manifest_files(json: &[u8]) -> Result<Vec<CatalogFile>, String> {
    #[derive(serde::Deserialize)]
    struct Manifest {
        #[serde(rename = "Files")]
        files: Vec<File>,
    }
    #[derive(serde::Deserialize)]
    struct File {
        #[serde(rename = "Path")]
        path: Option<String>,
        #[serde(rename = "Size")]
        size: u64,
        #[serde(rename = "Checksum-Algorithm")]
        algorithm: Option<String>,
        #[serde(rename = "Checksum")]
        checksum: Option<String>,
    }
    let manifest: Manifest = serde_json::from_slice(json)
        .map_err(|e| format!("backup_manifest is not pg_basebackup's JSON: {e}"))?;
    let mut out = Vec::new();
    for f in manifest.files {
        let (Some(path), Some(algorithm), Some(checksum)) = (f.path, f.algorithm, f.checksum)
        else {
            return Err("backup_manifest lists a file without a path or checksum (encoded paths are not supported)".into());
        };
        if !algorithm.eq_ignore_ascii_case("SHA256") {
            return Err(format!(
                "backup_manifest uses {algorithm} checksums, not SHA256"
            ));
        }
        out.push(CatalogFile {
            path,
            size: f.size,
            sha256: checksum.to_ascii_lowercase(),
        });
    }
    Ok(out)
}

/// Every expected file found with its SHA-256, and nothing extra (except what `unlisted_ok` accepts).
fn compare_files(
    expected: &[CatalogFile],
    found: &[CatalogFile],
    unlisted_ok: impl Fn(&str) -> bool,
) -> Result<String, String> {
    let by_path: std::collections::HashMap<&str, &CatalogFile> =
        found.iter().map(|f| (f.path.as_str(), f)).collect();
    let mut problems = Vec::new();
    for want in expected {
        match by_path.get(want.path.as_str()) {
            None => problems.push(format!("{}: missing from the archive", want.path)),
            Some(have) if have.sha256 != want.sha256 || have.size != want.size => {
                problems.push(format!(
                    "{}: {} bytes with SHA-256 {}, the catalog says {} bytes with {}",
                    want.path, have.size, have.sha256, want.size, want.sha256
                ))
            }
            Some(_) => {}
        }
    }
    let known: std::collections::HashSet<&str> = expected.iter().map(|f| f.path.as_str()).collect();
    for extra in found
        .iter()
        .filter(|f| !known.contains(f.path.as_str()) && !unlisted_ok(&f.path))
    {
        problems.push(format!(
            "{}: in the archive but not in the catalog",
            extra.path
        ));
    }
    if problems.is_empty() {
        let bytes: u64 = found.iter().map(|f| f.size).sum();
        Ok(format!(
            "all {} files match their recorded SHA-256 ({bytes} bytes)",
            found.len()
        ))
    } else {
        let total = problems.len();
        problems.truncate(10);
        Err(format!("{total} files differ: {}", problems.join("; ")))
    }
}

/// Whether every check passed.
pub fn all_passed(checks: &[CheckResult]) -> bool {
    !checks.is_empty() && checks.iter().all(|c| c.passed)
}
