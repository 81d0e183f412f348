//! The read path: find snapshots, fetch and decode objects (`age -d` → `zstd -d`, checksums checked against the
//! manifest), and restore into a new file or a new database through `pg_restore`, refusing non-empty targets.

use crate::pipeline::{decode, DecodeReport, PipelineError};
use crate::snapshot::{
    Catalog, FormatError, Manifest, ObjectEntry, ObjectKind, SignatureStatus, SnapshotRef,
    TrustedKeys, SNAPSHOTS_DIR,
};
use crate::source::conn::db_error;
use crate::source::{find_pg_tools, ChildStream, ConnParams, SourceError};
use crate::store::{ReadStore, StoreError};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::process::Command;
use tokio_util::io::SyncIoBridge;
use tokio_util::sync::CancellationToken;

/// Largest manifest this build reads.
const MAX_MANIFEST_BYTES: u64 = 16 * 1024 * 1024;

/// Decryption identities loaded from an age identity file.
pub type Identities = Arc<Vec<Box<dyn age::Identity + Send + Sync>>>;

/// Called with the number of stored bytes read so far.
pub type Progress = Arc<dyn Fn(u64) + Send + Sync>;

/// Why a restore (or a listing) failed.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Decoding failed.
    #[error("decoding {object} failed: {source}")]
    Pipeline {
        /// Object name.
        object: String,
        /// Cause.
        #[source]
        source: Box<PipelineError>,
    },
    /// A manifest is unreadable.
    #[error("manifest of {snapshot} is unreadable: {source}")]
    Format {
        /// Snapshot.
        snapshot: String,
        /// Cause.
        #[source]
        source: FormatError,
    },
    /// The identity file is unusable.
    #[error("identity file {path}: {reason}")]
    Identity {
        /// Path.
        path: String,
        /// Why.
        reason: String,
    },
    /// No snapshot matches.
    #[error("{0}")]
    NotFound(String),
    /// The request is ambiguous or invalid.
    #[error("{0}")]
    Usage(String),
    /// The target holds data and `--confirm` did not name it.
    #[error("{0}")]
    TargetNotEmpty(String),
    /// Talking to the target database failed.
    #[error("{0}")]
    Database(String),
    /// A client tool failed.
    #[error(transparent)]
    Tool(#[from] SourceError),
    /// Writing the target failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The manifest's signature does not verify with a trusted key (and `--allow-unsigned` was not given).
    #[error("{0}")]
    Untrusted(String),
    /// Extracting an archive failed or was refused (an entry escaping the target, a malformed archive).
    #[error("{0}")]
    Extract(String),
    /// Internal task failure.
    #[error("internal error: {0}")]
    Internal(String),
}

/// A snapshot found in a store, with its manifest (or why it could not be read).
#[derive(Debug)]
pub struct SnapshotListing {
    /// Where it is.
    pub snapshot: SnapshotRef,
    /// Its manifest.
    pub manifest: Result<Manifest, RestoreError>,
    /// What its signature says (`None` when the manifest could not be read).
    pub signature: Option<SignatureStatus>,
}

impl SnapshotListing {
    /// The manifest, if it was read and its signature verifies with a trusted key.
    pub fn verified(&self) -> Option<&Manifest> {
        match (&self.manifest, &self.signature) {
            (Ok(m), Some(s)) if s.is_verified() => Some(m),
            _ => None,
        }
    }
}

/// Lists every snapshot (optionally of one job), oldest first, with each manifest's signature checked against
/// `trusted`. A snapshot is listed only if its manifest exists.
pub async fn list_snapshots<S: ReadStore>(
    store: &S,
    job: Option<&str>,
    trusted: &TrustedKeys,
) -> Result<Vec<SnapshotListing>, StoreError> {
    let prefix = match job {
        Some(j) => format!("{SNAPSHOTS_DIR}{j}/"),
        None => SNAPSHOTS_DIR.to_owned(),
    };
    let mut refs: Vec<SnapshotRef> = store
        .list(&prefix)
        .await?
        .iter()
        .filter_map(|o| SnapshotRef::from_manifest_key(&o.key))
        .collect();
    refs.sort_by(|a, b| a.id.cmp(&b.id).then(a.job.cmp(&b.job)));
    let mut out = Vec::with_capacity(refs.len());
    for snapshot in refs {
        let (manifest, signature) = match read_verified_manifest(store, &snapshot, trusted).await {
            Ok((m, s)) => (Ok(m), Some(s)),
            Err(e) => (Err(e), None),
        };
        out.push(SnapshotListing {
            snapshot,
            manifest,
            signature,
        });
    }
    // Ids have whole seconds: within one second, the manifest's start time (sub-second) orders snapshots, so
    // `latest` is the one that really started last.
    out.sort_by(|a, b| {
        let started = |l: &SnapshotListing| l.manifest.as_ref().ok().map(|m| m.started_at);
        a.snapshot
            .id
            .time()
            .cmp(&b.snapshot.id.time())
            .then_with(|| started(a).cmp(&started(b)))
            .then_with(|| a.snapshot.id.cmp(&b.snapshot.id))
            .then_with(|| a.snapshot.job.cmp(&b.snapshot.job))
    });
    Ok(out)
}

/// Reads and parses a snapshot's manifest, without looking at its signature.
pub async fn read_manifest<S: ReadStore>(
    store: &S,
    snapshot: &SnapshotRef,
) -> Result<Manifest, RestoreError> {
    let bytes = store
        .get_small(&snapshot.manifest_key(), MAX_MANIFEST_BYTES)
        .await?;
    parse_manifest(snapshot, &bytes)
}

/// Reads and parses a snapshot's manifest and checks its signature (`manifest.json.sig`) over the exact bytes
/// read: a missing signature object is [`SignatureStatus::Unsigned`], one no trusted key verifies is
/// [`SignatureStatus::Invalid`]. Callers decide what to do with an unverified manifest.
pub async fn read_verified_manifest<S: ReadStore>(
    store: &S,
    snapshot: &SnapshotRef,
    trusted: &TrustedKeys,
) -> Result<(Manifest, SignatureStatus), RestoreError> {
    let bytes = store
        .get_small(&snapshot.manifest_key(), MAX_MANIFEST_BYTES)
        .await?;
    let manifest = parse_manifest(snapshot, &bytes)?;
    // Any size up to a few KiB is read, so that a wrong-sized object is reported as an invalid signature.
    let signature = match store.get_small(&snapshot.signature_key(), 4096).await {
        Ok(sig) => Some(sig),
        Err(e) if e.is_not_found() => None,
        Err(e) => return Err(e.into()),
    };
    let status = trusted.verify(&bytes, signature.as_deref());
    Ok((manifest, status))
}

fn parse_manifest(snapshot: &SnapshotRef, bytes: &[u8]) -> Result<Manifest, RestoreError> {
    let manifest = Manifest::from_json(bytes).map_err(|source| RestoreError::Format {
        snapshot: snapshot.to_string(),
        source,
    })?;
    if manifest.snapshot_id != snapshot.id || manifest.job != snapshot.job {
        return Err(RestoreError::NotFound(format!(
            "manifest at {} names another snapshot ({}/{}); the store is inconsistent",
            snapshot.manifest_key(),
            manifest.job,
            manifest.snapshot_id
        )));
    }
    Ok(manifest)
}

/// Refuses a snapshot whose manifest signature does not verify, with what it means and what to do, unless
/// `allow_unsigned` (then it only warns).
pub fn check_signature(
    snapshot: &SnapshotRef,
    status: &SignatureStatus,
    trusted: &TrustedKeys,
    allow_unsigned: bool,
) -> Result<(), RestoreError> {
    const OVERRIDE: &str = "pass --allow-unsigned to override";
    let message = match status {
        SignatureStatus::Verified { .. } => return Ok(()),
        SignatureStatus::Unsigned if trusted.is_empty() => format!(
            "snapshot {snapshot} is not signed, and no signing public key is configured to check it: give the \
             daemon a signing_key_file and add its public key to [encryption] signing_public_keys here (see \
             docs/runbook.md); to restore unsigned snapshots anyway, {OVERRIDE}"
        ),
        SignatureStatus::Unsigned => format!(
            "snapshot {snapshot} is not signed (written without signing_key_file, or its manifest.json.sig was \
             removed): whoever can write to the store could have planted it; do not restore it unless you know \
             why; {OVERRIDE}"
        ),
        SignatureStatus::Invalid { reason } if trusted.is_empty() => format!(
            "snapshot {snapshot}: its manifest is signed, but no signing public key is configured to check it \
             ({reason}): add the daemon's public key to [encryption] signing_public_keys (`openssl pkey -in \
             signing.pem -pubout -outform DER | tail -c 32 | base64`, after \"ed25519:\"); {OVERRIDE}"
        ),
        SignatureStatus::Invalid { reason } => format!(
            "snapshot {snapshot}: manifest signature does not verify with any key in [encryption] \
             signing_public_keys ({reason}) — it may have been planted or tampered with; do not restore it unless \
             you know why; {OVERRIDE}"
        ),
    };
    if allow_unsigned {
        tracing::warn!(snapshot = %snapshot, signature = %status, "Using a snapshot whose manifest signature does not verify (--allow-unsigned).");
        Ok(())
    } else {
        Err(RestoreError::Untrusted(message))
    }
}

/// Finds a snapshot by `job/id`, by bare `id`, or `latest` (with `job`, or when the store has one job only), and
/// says what its manifest signature is. `latest` is the newest snapshot whose signature verifies; only when none
/// does is it the newest readable one (which [`check_signature`] then refuses).
pub async fn resolve_snapshot<S: ReadStore>(
    store: &S,
    spec: &str,
    job: Option<&str>,
    trusted: &TrustedKeys,
) -> Result<(SnapshotRef, Manifest, SignatureStatus), RestoreError> {
    let (job_part, id_part) = match spec.split_once('/') {
        Some((j, i)) => (Some(j), i),
        None => (job, spec),
    };
    let listing = list_snapshots(store, job_part, trusted).await?;
    let candidates: Vec<&SnapshotListing> = if id_part == "latest" {
        let jobs: std::collections::BTreeSet<&str> =
            listing.iter().map(|l| l.snapshot.job.as_str()).collect();
        if jobs.len() > 1 {
            return Err(RestoreError::Usage(format!(
                "\"latest\" is ambiguous: the store has snapshots of several jobs ({}); add --job or write JOB/latest",
                jobs.into_iter().collect::<Vec<_>>().join(", ")
            )));
        }
        let newest_verified = listing.iter().rev().find(|l| l.verified().is_some());
        let newest_readable = listing.iter().rev().find(|l| l.manifest.is_ok());
        if let (Some(v), Some(r)) = (newest_verified, newest_readable) {
            if v.snapshot != r.snapshot {
                let skipped = listing
                    .iter()
                    .filter(|l| l.manifest.is_ok() && l.snapshot.id > v.snapshot.id)
                    .count();
                tracing::warn!(latest = %v.snapshot, skipped, "\"latest\" is the newest snapshot whose signature verifies; newer ones do not verify (see `lifeboat snapshots`).");
            }
        }
        newest_verified.or(newest_readable).into_iter().collect()
    } else {
        listing
            .iter()
            .filter(|l| l.snapshot.id.as_str() == id_part)
            .collect()
    };
    match candidates.as_slice() {
        [] => Err(RestoreError::NotFound(format!(
            "no complete snapshot {spec:?} in store {} (only snapshots with a manifest exist); run `lifeboat snapshots` to list them",
            store.name()
        ))),
        [one] => {
            let (manifest, signature) =
                read_verified_manifest(store, &one.snapshot, trusted).await?;
            Ok((one.snapshot.clone(), manifest, signature))
        }
        many => Err(RestoreError::Usage(format!(
            "snapshot id {id_part} exists for several jobs ({}); write JOB/ID",
            many.iter().map(|l| l.snapshot.job.as_str()).collect::<Vec<_>>().join(", ")
        ))),
    }
}

/// Why [`decode_into_child`] failed.
pub(crate) enum IntoChildError {
    /// The child failed (exit status, error lines); its stderr says why.
    Child(SourceError),
    /// Fetching or decoding the object failed (wrong key, corrupt data, store error).
    Decode(RestoreError),
}

/// Decodes `entry` into the stdin of `cmd` and waits for the child. When the child stops reading early, its own
/// error is the one reported.
pub(crate) async fn decode_into_child<S: ReadStore>(
    store: &S,
    entry: &ObjectEntry,
    identities: Identities,
    cmd: Command,
    program: &str,
    progress: Option<Progress>,
) -> Result<DecodeReport, IntoChildError> {
    let (child, stdin) =
        ChildStream::spawn_sink(cmd, program).map_err(|e| IntoChildError::Decode(e.into()))?;
    let restored = restore_object(
        store,
        entry,
        identities,
        SyncIoBridge::new(stdin),
        progress,
        CancellationToken::new(),
    )
    .await;
    match restored {
        Ok((report, stdin)) => {
            drop(stdin);
            child.finish().await.map_err(IntoChildError::Child)?;
            Ok(report)
        }
        Err(e) if is_broken_pipe(&e) => Err(match child.finish().await {
            Err(child_error) => IntoChildError::Child(child_error),
            Ok(()) => IntoChildError::Decode(e),
        }),
        Err(e) => {
            drop(child);
            Err(IntoChildError::Decode(e))
        }
    }
}

/// Whether decoding failed only because the sink (a child process such as pg_restore) stopped reading: then the
/// child's own error is the real one. Any other decoding error (wrong key, corrupt data) is reported as is.
pub(crate) fn is_broken_pipe(e: &RestoreError) -> bool {
    matches!(e, RestoreError::Pipeline { source, .. }
        if matches!(source.as_ref(), PipelineError::Io { source, .. } if source.kind() == std::io::ErrorKind::BrokenPipe))
}

/// The major version of the newest tool that wrote the snapshot (`pg_dump (PostgreSQL) 15.18` → 15), 0 if unknown:
/// restoring needs client tools at least that new.
pub fn dump_major(manifest: &Manifest) -> u32 {
    manifest
        .source
        .tools
        .iter()
        .filter_map(|t| {
            t.split_whitespace()
                .find(|w| w.chars().next().is_some_and(|c| c.is_ascii_digit()))
        })
        .filter_map(|v| v.split('.').next()?.parse::<u32>().ok())
        .max()
        .unwrap_or(0)
}

/// Loads the identities of an age identity file (`AGE-SECRET-KEY-1…` lines). Never prints the keys.
pub fn load_identities(path: &Path) -> Result<Identities, RestoreError> {
    let err = |reason: String| RestoreError::Identity {
        path: path.display().to_string(),
        reason,
    };
    let file = age::IdentityFile::from_file(path.display().to_string())
        .map_err(|e| err(format!("cannot read it ({})", e.kind())))?;
    let identities = file
        .into_identities()
        .map_err(|_| err("it does not hold usable age identities (expected AGE-SECRET-KEY-1… lines, as written by age-keygen)".to_owned()))?;
    if identities.is_empty() {
        return Err(err("it holds no identities".to_owned()));
    }
    Ok(Arc::new(identities))
}

struct CountingReader<R> {
    inner: R,
    total: u64,
    progress: Option<Progress>,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.total += n as u64;
        if let Some(p) = &self.progress {
            p(self.total);
        }
        Ok(n)
    }
}

/// Fetches one object and decodes it into `sink`, checking sizes and both SHA-256 sums against the manifest.
pub async fn restore_object<S: ReadStore, W: Write + Send + 'static>(
    store: &S,
    entry: &ObjectEntry,
    identities: Identities,
    sink: W,
    progress: Option<Progress>,
    cancel: CancellationToken,
) -> Result<(DecodeReport, W), RestoreError> {
    let body = store.get(&entry.key).await?;
    let name = entry.name.clone();
    let (report, sink) = tokio::task::spawn_blocking(move || {
        let reader = CountingReader {
            inner: SyncIoBridge::new(body),
            total: 0,
            progress,
        };
        decode(reader, &identities, sink, &cancel)
    })
    .await
    .map_err(|e| RestoreError::Internal(e.to_string()))?
    .map_err(|source| RestoreError::Pipeline {
        object: name.clone(),
        source: Box::new(source),
    })?;
    check_against_manifest(entry, &report).map_err(|source| RestoreError::Pipeline {
        object: name,
        source: Box::new(source),
    })?;
    Ok((report, sink))
}

/// Compares what decoding measured with what the manifest promises.
pub fn check_against_manifest(
    entry: &ObjectEntry,
    report: &DecodeReport,
) -> Result<(), PipelineError> {
    if report.stored_bytes != entry.stored_bytes {
        return Err(PipelineError::SizeMismatch {
            what: "stored",
            expected: entry.stored_bytes,
            actual: report.stored_bytes,
        });
    }
    if report.stored_sha256 != entry.stored_sha256 {
        return Err(PipelineError::ChecksumMismatch {
            what: "stored",
            expected: entry.stored_sha256.clone(),
            actual: report.stored_sha256.clone(),
        });
    }
    if report.payload_bytes != entry.payload_bytes {
        return Err(PipelineError::SizeMismatch {
            what: "payload",
            expected: entry.payload_bytes,
            actual: report.payload_bytes,
        });
    }
    if report.payload_sha256 != entry.payload_sha256 {
        return Err(PipelineError::ChecksumMismatch {
            what: "payload",
            expected: entry.payload_sha256.clone(),
            actual: report.payload_sha256.clone(),
        });
    }
    Ok(())
}

/// Reads and decrypts a snapshot's catalog.
pub async fn read_catalog<S: ReadStore>(
    store: &S,
    manifest: &Manifest,
    identities: Identities,
) -> Result<Catalog, RestoreError> {
    let entry = manifest
        .objects
        .iter()
        .find(|o| o.kind == ObjectKind::Catalog)
        .ok_or_else(|| RestoreError::NotFound("the snapshot has no catalog".to_owned()))?;
    let (_, bytes) = restore_object(
        store,
        entry,
        identities,
        Vec::new(),
        None,
        CancellationToken::new(),
    )
    .await?;
    serde_json::from_slice(&bytes)
        .map_err(|e| RestoreError::Internal(format!("catalog is not valid JSON: {e}")))
}

/// Picks the object to restore: by name, by database, or the only database dump.
pub fn select_object<'m>(
    manifest: &'m Manifest,
    object: Option<&str>,
    database: Option<&str>,
) -> Result<&'m ObjectEntry, RestoreError> {
    let dumps: Vec<&ObjectEntry> = manifest
        .objects
        .iter()
        .filter(|o| o.kind == ObjectKind::PgDumpCustom)
        .collect();
    let names = || {
        manifest
            .objects
            .iter()
            .map(|o| o.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if let Some(name) = object {
        return manifest.object(name).ok_or_else(|| {
            RestoreError::NotFound(format!(
                "snapshot has no object {name:?}; it has: {}",
                names()
            ))
        });
    }
    if let Some(db) = database {
        return dumps
            .into_iter()
            .find(|o| o.database.as_deref() == Some(db))
            .ok_or_else(|| {
                RestoreError::NotFound(format!(
                    "snapshot has no dump of database {db:?}; it has: {}",
                    names()
                ))
            });
    }
    if dumps.is_empty() {
        // A volume snapshot: its one archive.
        if let Some(tar) = manifest.objects.iter().find(|o| o.kind == ObjectKind::Tar) {
            return Ok(tar);
        }
    }
    match dumps.as_slice() {
        [one] => Ok(one),
        [] => Err(RestoreError::NotFound(format!(
            "snapshot has no database dump; it has: {}",
            names()
        ))),
        _ => Err(RestoreError::Usage(format!(
            "snapshot has dumps of several databases ({}); choose one with --database",
            dumps
                .iter()
                .filter_map(|o| o.database.as_deref())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// What a directory restore did.
#[derive(Debug, Clone)]
pub struct DirRestoreReport {
    /// Decode measurements of the tar stream (payload SHA-256 verified).
    pub decode: DecodeReport,
    /// What was extracted.
    pub extract: crate::extract::ExtractReport,
    /// Files whose content does not match the catalog's SHA-256 (empty when all match), or why the catalog
    /// could not be compared.
    pub mismatches: Vec<String>,
}

/// Restores a volume snapshot's tar stream into `dest` (an empty or new directory, or a non-empty one when
/// `allow_non_empty`), refusing entries that would land outside it, then compares every file with the catalog.
pub async fn restore_to_dir<S: ReadStore>(
    store: &S,
    manifest: &Manifest,
    entry: &ObjectEntry,
    identities: Identities,
    dest: &Path,
    allow_non_empty: bool,
    progress: Option<Progress>,
) -> Result<DirRestoreReport, RestoreError> {
    use crate::extract::{check_target, extract, ExtractOptions};
    if entry.kind != ObjectKind::Tar {
        return Err(RestoreError::Usage(format!(
            "{} is not a directory archive; restore it with --to-file or --to-database",
            entry.name
        )));
    }
    check_target(dest, allow_non_empty).map_err(|e| RestoreError::TargetNotEmpty(format!(
        "{e}; restore into a new or empty directory, or pass --confirm {} to extract into it anyway",
        dest.display()
    )))?;
    let catalog = read_catalog(store, manifest, identities.clone()).await?;
    let (reader, writer) = std::io::pipe().map_err(|e| RestoreError::Internal(e.to_string()))?;
    let cancel = CancellationToken::new();
    let extract_cancel = cancel.clone();
    let target = dest.to_path_buf();
    let extracting = tokio::task::spawn_blocking(move || {
        let opts = ExtractOptions {
            preserve_ownership: true,
            preserve_permissions: true,
        };
        extract(reader, &target, &opts, &extract_cancel)
    });
    let decoded = restore_object(store, entry, identities, writer, progress, cancel.clone())
        .await
        .map(|(report, writer)| {
            drop(writer);
            report
        });
    if decoded.is_err() {
        cancel.cancel();
    }
    let extracted = extracting
        .await
        .map_err(|e| RestoreError::Internal(e.to_string()))?;
    let decode = decoded?;
    let extract = extracted
        .map_err(|e| RestoreError::Extract(format!("extracting into {}: {e}", dest.display())))?;
    let mut mismatches = Vec::new();
    let mut expected = catalog.files;
    if manifest.source.kind == "postgres_physical" {
        // pg_basebackup's own list of every file with its SHA-256 travels inside the archive.
        // The archive made `backup_manifest`: read it only if it is a plain file (never through a symlink).
        let path = dest.join("backup_manifest");
        let plain = std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_file());
        match (if plain {
            std::fs::read(&path).map_err(|e| e.to_string())
        } else {
            Err("missing, or not a plain file".to_owned())
        })
        .and_then(|json| crate::verify::backup_manifest_files(&json))
        {
            Ok(files) => expected = files,
            Err(e) => mismatches.push(format!("backup_manifest: {e}")),
        }
        make_data_directory(dest, &mut mismatches);
    }
    let found: std::collections::HashMap<&str, (&u64, &String)> = extract
        .digests
        .iter()
        .map(|(p, size, sha)| (p.as_str(), (size, sha)))
        .collect();
    for file in &expected {
        match found.get(file.path.as_str()) {
            Some((size, sha)) if **size == file.size && **sha == file.sha256 => {}
            Some(_) => mismatches.push(format!("{}: content differs from the catalog", file.path)),
            None => mismatches.push(format!("{}: in the catalog but not extracted", file.path)),
        }
    }
    Ok(DirRestoreReport {
        decode,
        extract,
        mismatches,
    })
}

/// A restored physical backup becomes a data directory PostgreSQL will start from: mode 0700 and, as root, owned
/// by the owner of its files (pg_ctl refuses a group- or world-accessible data directory).
fn make_data_directory(dest: &Path, problems: &mut Vec<String>) {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    if let Ok(meta) = std::fs::metadata(dest.join("PG_VERSION")) {
        if let Err(e) = std::os::unix::fs::chown(dest, Some(meta.uid()), Some(meta.gid())) {
            if e.kind() != std::io::ErrorKind::PermissionDenied {
                problems.push(format!("{}: cannot set its owner: {e}", dest.display()));
            }
        }
    }
    if let Err(e) = std::fs::set_permissions(dest, std::fs::Permissions::from_mode(0o700)) {
        problems.push(format!("{}: cannot set mode 0700: {e}", dest.display()));
    }
}

/// Restores one object's payload into a new file. An existing file is replaced only when `overwrite` is set.
pub async fn restore_to_file<S: ReadStore>(
    store: &S,
    entry: &ObjectEntry,
    identities: Identities,
    path: &Path,
    overwrite: bool,
    progress: Option<Progress>,
) -> Result<DecodeReport, RestoreError> {
    let io = |context: String| move |source| RestoreError::Io { context, source };
    let file = if overwrite {
        std::fs::File::create(path)
    } else {
        std::fs::File::create_new(path)
    }
    .map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => RestoreError::TargetNotEmpty(format!(
            "{} already exists; choose a new path, or pass --confirm {} to replace it",
            path.display(),
            path.display()
        )),
        _ => RestoreError::Io {
            context: format!("creating {}", path.display()),
            source: e,
        },
    })?;
    match restore_object(
        store,
        entry,
        identities,
        file,
        progress,
        CancellationToken::new(),
    )
    .await
    {
        Ok((report, file)) => {
            file.sync_all()
                .map_err(io(format!("syncing {}", path.display())))?;
            Ok(report)
        }
        Err(e) => {
            let _removed = std::fs::remove_file(path);
            Err(e)
        }
    }
}

/// Where and how to restore a logical dump.
#[derive(Debug, Clone)]
pub struct DatabaseTarget {
    /// Target server and database (`dbname` is the database to create or fill).
    pub conn: ConnParams,
    /// `--confirm`: must equal the database name to restore into a database that already has tables.
    pub confirm: Option<String>,
    /// Restore the snapshot's globals (roles, tablespaces) first, and keep object ownership.
    pub with_globals: bool,
    /// Extra directories to search for client tools.
    pub search_dirs: Vec<PathBuf>,
    /// A specific client-tools directory.
    pub pg_bin_dir: Option<PathBuf>,
}

/// What a database restore did.
#[derive(Debug, Clone)]
pub struct DatabaseRestoreReport {
    /// Database restored into.
    pub database: String,
    /// Whether Lifeboat created it.
    pub created: bool,
    /// Whether the database already held tables (restore confirmed with `--confirm`).
    pub into_non_empty: bool,
    /// Decode measurements of the dump.
    pub dump: DecodeReport,
    /// Errors psql reported while applying globals (e.g. roles that already exist).
    pub globals_errors: Vec<String>,
}

async fn maintenance_client(conn: &ConnParams) -> Result<tokio_postgres::Client, RestoreError> {
    let mut last = String::new();
    for db in ["postgres", "template1"] {
        match conn.with_dbname(db).connect().await {
            Ok(c) => return Ok(c),
            Err(e) => last = e,
        }
    }
    Err(RestoreError::Database(last))
}

/// Restores a `pg_dump` archive into a database, creating it (from template0) if absent.
///
/// Refuses a database that already has user tables unless `confirm` names it exactly; confirmed, the
/// snapshot's objects are added to it. The dump is streamed into `pg_restore --single-transaction`, so a
/// failed restore (e.g. an object that already exists) leaves the database exactly as it was.
pub async fn restore_to_database<S: ReadStore>(
    store: &S,
    manifest: &Manifest,
    dump: &ObjectEntry,
    identities: Identities,
    target: &DatabaseTarget,
    progress: Option<Progress>,
) -> Result<DatabaseRestoreReport, RestoreError> {
    let dbname = target.conn.dbname.clone();
    let admin = maintenance_client(&target.conn).await?;
    let version_num: String = admin
        .query_one("SHOW server_version_num", &[])
        .await
        .map_err(|e| RestoreError::Database(db_error(&e)))?
        .get(0);
    let server_major = version_num.parse::<u32>().unwrap_or(0) / 10_000;
    let dump_major = dump_major(manifest);
    let tools = find_pg_tools(
        server_major.max(dump_major),
        target.pg_bin_dir.as_deref(),
        &target.search_dirs,
    )
    .await?;

    let exists = admin
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&dbname])
        .await
        .map_err(|e| RestoreError::Database(db_error(&e)))?
        .is_some();
    let created = !exists;
    let mut replace = false;
    if exists {
        let client = target
            .conn
            .connect()
            .await
            .map_err(RestoreError::Database)?;
        let tables: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                  WHERE c.relkind IN ('r', 'p', 'm', 'v', 'f', 'S')
                    AND n.nspname NOT IN ('pg_catalog', 'information_schema')
                    AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'",
                &[],
            )
            .await
            .map_err(|e| RestoreError::Database(db_error(&e)))?
            .get(0);
        if tables > 0 && target.confirm.as_deref() != Some(dbname.as_str()) {
            return Err(RestoreError::TargetNotEmpty(format!(
                "database {dbname:?} on {}:{} already has {tables} user tables, views or sequences; restore into a new database name instead, or pass --confirm {dbname} to restore into it anyway (objects that already exist make the whole restore fail and change nothing)",
                target.conn.host, target.conn.port
            )));
        }
        replace = tables > 0;
    } else {
        let sql = format!(
            "CREATE DATABASE {} TEMPLATE template0",
            crate::source::quote_ident(&dbname)
        );
        admin.batch_execute(&sql).await.map_err(|e| {
            RestoreError::Database(format!("creating database {dbname:?}: {}", db_error(&e)))
        })?;
        tracing::info!(database = %dbname, "Created the target database.");
    }

    let mut globals_errors = Vec::new();
    if target.with_globals {
        if let Some(globals) = manifest
            .objects
            .iter()
            .find(|o| o.kind == ObjectKind::GlobalsSql)
        {
            globals_errors = restore_globals(
                store,
                globals,
                identities.clone(),
                &tools.tool("psql"),
                target,
            )
            .await?;
        }
    }

    let mut cmd = Command::new(tools.tool("pg_restore"));
    for (k, v) in target.conn.child_env() {
        cmd.env(k, v);
    }
    cmd.arg("--no-password")
        .arg("--single-transaction")
        .arg(format!("--dbname={}", target.conn.conninfo()));
    if !target.with_globals {
        cmd.arg("--no-owner").arg("--no-privileges");
    }
    if replace {
        // Confirmed: the snapshot's objects are added to what is there. pg_restore's --clean is not used:
        // it cannot drop partitioned tables' inherited constraints, among others. Any conflict fails the
        // single transaction and leaves the database exactly as it was.
        tracing::warn!(database = %dbname, "Restoring into a non-empty database (confirmed); conflicting objects fail the whole restore.");
    }
    let report = decode_into_child(store, dump, identities, cmd, "pg_restore", progress)
        .await
        .map_err(|e| match e {
            IntoChildError::Child(e) => e.into(),
            IntoChildError::Decode(e) => e,
        })?;
    Ok(DatabaseRestoreReport {
        database: dbname,
        created,
        into_non_empty: replace,
        dump: report,
        globals_errors,
    })
}

async fn restore_globals<S: ReadStore>(
    store: &S,
    globals: &ObjectEntry,
    identities: Identities,
    psql: &Path,
    target: &DatabaseTarget,
) -> Result<Vec<String>, RestoreError> {
    let (_, sql) = restore_object(
        store,
        globals,
        identities,
        Vec::new(),
        None,
        CancellationToken::new(),
    )
    .await?;
    let mut cmd = Command::new(psql);
    for (k, v) in target.conn.child_env() {
        cmd.env(k, v);
    }
    cmd.arg("-X")
        .arg("-q")
        .arg("--no-password")
        .arg("-v")
        .arg("ON_ERROR_STOP=0")
        .arg(format!(
            "--dbname={}",
            target.conn.with_dbname("postgres").conninfo()
        ));
    let (child, mut stdin) = ChildStream::spawn_sink(cmd, "psql")?;
    tokio::io::AsyncWriteExt::write_all(&mut stdin, &sql)
        .await
        .map_err(|source| RestoreError::Io {
            context: "sending globals to psql".to_owned(),
            source,
        })?;
    drop(stdin);
    // Existing roles ("already exists") are expected when restoring next to other databases: report, don't fail.
    match child.finish().await {
        Ok(()) => Ok(Vec::new()),
        Err(SourceError::ChildFailed { stderr, .. }) => {
            tracing::warn!(errors = %stderr, "Some globals were not applied (roles that already exist are normal).");
            Ok(stderr.split(" | ").map(str::to_owned).collect())
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{FsStore, LockSpec, WriteStore};
    use lifeboat_config::LockMode;

    async fn put_manifest(store: &FsStore, id: &str, started_at: &str) {
        let manifest = serde_json::json!({
            "format_version": 1, "snapshot_id": id, "job": "app",
            "source": {"kind": "postgres", "host": "h", "port": 5432, "user": "u", "databases": ["app"],
                       "server_version": "15", "tools": []},
            "lifeboat_version": "0", "started_at": started_at, "finished_at": started_at,
            "compression": "zstd", "compression_level": 3, "encryption": "age", "recipients": [], "objects": []
        });
        let key = format!("{SNAPSHOTS_DIR}app/{id}/manifest.json");
        store
            .put_small(
                &key,
                bytes::Bytes::from(manifest.to_string()),
                &LockSpec {
                    mode: LockMode::None,
                    retain_until: None,
                },
            )
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn snapshots_of_the_same_second_are_ordered_by_their_start_not_their_random_suffix() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open("local", dir.path(), "").unwrap();
        // `zzzzzz` sorts after `aaaaaa` but started first.
        put_manifest(
            &store,
            "20261126T082714Z-zzzzzz",
            "2026-11-26T08:27:14.100Z",
        )
        .await;
        put_manifest(
            &store,
            "20261126T082714Z-aaaaaa",
            "2026-11-26T08:27:14.900Z",
        )
        .await;
        put_manifest(
            &store,
            "20261126T082713Z-mmmmmm",
            "2026-11-26T08:27:13.950Z",
        )
        .await;
        let listing = list_snapshots(&store, Some("app"), &TrustedKeys::none())
            .await
            .unwrap();
        let ids: Vec<String> = listing.iter().map(|l| l.snapshot.id.to_string()).collect();
        assert_eq!(
            ids,
            [
                "20261126T082713Z-mmmmmm",
                "20261126T082714Z-zzzzzz",
                "20261126T082714Z-aaaaaa"
            ]
        );
    }
}
