//! One snapshot, end to end: plan the source's streams, encode and upload each, store the encrypted catalog,
//! and write `manifest.json` LAST — a snapshot without a manifest does not exist.

use crate::pipeline::{
    encode, encode_to_vec, Chunk, EncodeReport, EncodeSettings, PartWriter, PipelineError,
};
use crate::snapshot::{
    manifest_key, object_key, signature_key, Catalog, LockInfo, Manifest, ManifestSigner,
    ObjectEntry, ObjectKind, SnapshotId, SnapshotRef, FORMAT_VERSION,
};
use crate::source::{Source, SourceError, StreamSpec};
use crate::store::{LockSpec, PutReceipt, StoreError, WriteStore};
use bytes::Bytes;
use chrono::Utc;
use lifeboat_config::LockMode;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::io::SyncIoBridge;
use tokio_util::sync::CancellationToken;

/// Everything a backup needs besides its source and store.
#[derive(Clone)]
pub struct BackupSettings {
    /// Job name.
    pub job: String,
    /// zstd settings.
    pub compression: EncodeSettings,
    /// Initial multipart part size in bytes.
    pub part_size: u64,
    /// age recipients (public keys only).
    pub recipients: Arc<Vec<age::x25519::Recipient>>,
    /// Lock mode for every object.
    pub lock_mode: LockMode,
    /// Lock period from the snapshot's start.
    pub retention: Option<Duration>,
    /// Signs the manifest (`manifest.json.sig`); `None` writes it unsigned.
    pub signer: Option<Arc<ManifestSigner>>,
}

/// The result of a successful backup.
#[derive(Debug, Clone)]
pub struct BackupReport {
    /// Where the snapshot is.
    pub snapshot: SnapshotRef,
    /// Its manifest, as written.
    pub manifest: Manifest,
    /// Wall time.
    pub duration: Duration,
}

/// Why a backup failed. Whatever the cause, no manifest was written.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The store refuses to guarantee immutability.
    #[error("refusing to back up: {0}")]
    NotImmutable(#[source] StoreError),
    /// The source failed.
    #[error("source failed: {0}")]
    Source(#[from] SourceError),
    /// Encoding failed.
    #[error("encoding {stream} failed: {source}")]
    Pipeline {
        /// Stream name.
        stream: String,
        /// Cause.
        #[source]
        source: PipelineError,
    },
    /// The store failed.
    #[error("storing failed: {0}")]
    Store(#[from] StoreError),
    /// Cancelled (shutdown or timeout).
    #[error("cancelled")]
    Cancelled,
    /// Internal task failure.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Runs one backup of `source` into `store`.
pub async fn run_backup<Src: Source, S: WriteStore>(
    source: &mut Src,
    store: &S,
    settings: &BackupSettings,
    id: SnapshotId,
    cancel: CancellationToken,
) -> Result<BackupReport, BackupError> {
    let started = Instant::now();
    let started_at = Utc::now();
    if settings.lock_mode != LockMode::None {
        let status = store.lock_status().await?;
        if !status.enabled {
            return Err(BackupError::NotImmutable(StoreError::LockNotEnabled {
                store: store.name().to_owned(),
                detail: status.detail,
            }));
        }
    }
    let plan = source.prepare().await?;
    let snapshot = SnapshotRef {
        job: settings.job.clone(),
        id: id.clone(),
    };
    let lock = LockSpec {
        mode: settings.lock_mode,
        retain_until: match (settings.lock_mode, settings.retention) {
            (LockMode::None, _) | (_, None) => None,
            (_, Some(r)) => {
                let until = started_at
                    + chrono::Duration::from_std(r)
                        .map_err(|e| BackupError::Internal(e.to_string()))?;
                // Stores keep whole seconds; ask for exactly what they can record.
                chrono::DateTime::from_timestamp(until.timestamp(), 0)
            }
        },
    };
    tracing::debug!(job = %settings.job, snapshot = %id, store = store.name(), streams = plan.streams.len(), "Backup started.");

    let mut objects = Vec::new();
    let mut catalog = Catalog {
        format_version: 1,
        databases: Vec::new(),
        files: Vec::new(),
    };
    let mut volume = None;
    for spec in &plan.streams {
        if cancel.is_cancelled() {
            return Err(BackupError::Cancelled);
        }
        let key = object_key(&settings.job, &id, &spec.name);
        let (report, receipt, meta) =
            store_stream(source, store, settings, spec, &key, &lock, &cancel).await?;
        tracing::info!(job = %settings.job, snapshot = %id, stream = %spec.name, payload_bytes = report.payload_bytes, stored_bytes = report.stored_bytes, "Stream stored.");
        catalog.databases.extend(meta.catalog);
        if let Some(v) = meta.volume {
            for path in &v.summary.changed {
                tracing::warn!(job = %settings.job, snapshot = %id, path = %path, "File changed while it was read: archived, but it may be torn (listed in the manifest).");
            }
            for path in &v.summary.vanished {
                tracing::warn!(job = %settings.job, snapshot = %id, path = %path, "File vanished before it was read: not archived (listed in the manifest).");
            }
            for problem in &v.summary.unreadable {
                tracing::warn!(job = %settings.job, snapshot = %id, problem = %problem, "Entry skipped (listed in the manifest).");
            }
            catalog.files.extend(v.files);
            volume = Some(v.summary);
        }
        objects.push(entry(spec, &report, receipt));
    }

    // The catalog names tables (data), so it is encrypted like the dumps.
    let catalog_json =
        serde_json::to_vec(&catalog).map_err(|e| BackupError::Internal(e.to_string()))?;
    let recipients = settings.recipients.clone();
    let compression = settings.compression;
    let (report, stored) =
        tokio::task::spawn_blocking(move || encode_to_vec(&catalog_json, &recipients, compression))
            .await
            .map_err(|e| BackupError::Internal(e.to_string()))?
            .map_err(|source| BackupError::Pipeline {
                stream: "catalog.json".to_owned(),
                source,
            })?;
    let catalog_spec = StreamSpec {
        name: "catalog.json".to_owned(),
        kind: ObjectKind::Catalog,
        database: None,
    };
    let key = object_key(&settings.job, &id, &catalog_spec.name);
    let receipt = store.put_small(&key, Bytes::from(stored), &lock).await?;
    objects.push(entry(&catalog_spec, &report, receipt));

    let manifest = Manifest {
        format_version: FORMAT_VERSION,
        snapshot_id: id.clone(),
        job: settings.job.clone(),
        source: plan.identity,
        lifeboat_version: crate::VERSION.to_owned(),
        started_at,
        finished_at: Utc::now(),
        compression: "zstd".to_owned(),
        compression_level: settings.compression.level,
        encryption: "age".to_owned(),
        recipients: settings.recipients.iter().map(|r| r.to_string()).collect(),
        volume,
        objects,
    };
    if cancel.is_cancelled() {
        return Err(BackupError::Cancelled);
    }
    let manifest_json = Bytes::from(manifest.to_json());
    // The signature covers the exact manifest bytes and goes first, so the manifest is still the last object.
    if let Some(signer) = &settings.signer {
        let signature = signer.sign(&manifest_json);
        store
            .put_small(
                &signature_key(&settings.job, &id),
                Bytes::copy_from_slice(&signature),
                &lock,
            )
            .await?;
    }
    // LAST: only now does the snapshot exist.
    store
        .put_small(&manifest_key(&settings.job, &id), manifest_json, &lock)
        .await?;
    let duration = started.elapsed();
    tracing::debug!(job = %settings.job, snapshot = %id, stored_bytes = manifest.stored_bytes(), payload_bytes = manifest.payload_bytes(), duration_s = duration.as_secs_f64(), "Backup completed.");
    Ok(BackupReport {
        snapshot,
        manifest,
        duration,
    })
}

fn entry(spec: &StreamSpec, report: &EncodeReport, receipt: PutReceipt) -> ObjectEntry {
    ObjectEntry {
        name: spec.name.clone(),
        key: receipt.key,
        kind: spec.kind,
        database: spec.database.clone(),
        payload_bytes: report.payload_bytes,
        payload_sha256: report.payload_sha256.clone(),
        stored_bytes: report.stored_bytes,
        stored_sha256: report.stored_sha256.clone(),
        version_id: receipt.version_id,
        lock: LockInfo {
            mode: receipt.lock.mode,
            retain_until: receipt.lock.retain_until,
        },
    }
}

/// Streams one source stream through the encoder into the store. The upload is committed only after the
/// encoder finished AND the producer exited cleanly; otherwise the store aborts it.
async fn store_stream<Src: Source, S: WriteStore>(
    source: &Src,
    store: &S,
    settings: &BackupSettings,
    spec: &StreamSpec,
    key: &str,
    lock: &LockSpec,
    cancel: &CancellationToken,
) -> Result<(EncodeReport, PutReceipt, crate::source::StreamMeta), BackupError> {
    let open = source.open(spec).await?;
    let (tx, rx) = mpsc::channel::<Chunk>(1);
    let recipients = settings.recipients.clone();
    let compression = settings.compression;
    let part_size = settings.part_size;
    let encode_cancel = cancel.clone();
    let reader = open.reader;
    let encoder = tokio::task::spawn_blocking(move || {
        let reader = SyncIoBridge::new(reader);
        let writer = PartWriter::new(tx, part_size);
        let (report, writer) = encode(reader, &recipients, compression, writer, &encode_cancel)?;
        let tx = writer.finish().map_err(|source| PipelineError::Io {
            context: "handing the last part to the store",
            source,
        })?;
        Ok::<_, PipelineError>((report, tx))
    });
    let finish = open.finish;
    let produce = async move {
        let (report, tx) = match encoder.await {
            Ok(Ok(done)) => done,
            // Dropping `finish` here kills the producer (e.g. pg_dump) instead of waiting for it.
            Ok(Err(PipelineError::Cancelled)) => return Err(BackupError::Cancelled),
            Ok(Err(source)) => {
                return Err(BackupError::Pipeline {
                    stream: spec.name.clone(),
                    source,
                })
            }
            Err(e) => return Err(BackupError::Internal(e.to_string())),
        };
        let meta = finish.await?;
        if tx.send(Chunk::Commit).await.is_err() {
            return Err(BackupError::Internal(
                "the store stopped before the commit".to_owned(),
            ));
        }
        Ok((report, meta))
    };
    // Cancellation must not wait for the producer: a pg_dump stuck on a lock may never write again.
    // Dropping `produce` drops `finish`, which kills pg_dump; its pipe closes, the encoder ends without
    // a Commit, and the upload (still polled below) sees the channel close and aborts.
    let produce = async {
        tokio::select! {
            produced = produce => produced,
            () = cancel.cancelled() => Err(BackupError::Cancelled),
        }
    };
    let (uploaded, produced) = tokio::join!(store.put_stream(key, rx, lock), produce);
    let (report, meta, receipt) = match (produced, uploaded) {
        (Ok((report, meta)), Ok(receipt)) => (report, meta, receipt),
        // The encoder only fails to hand over parts because the store stopped: report the store's error.
        (Err(BackupError::Pipeline { .. }), Err(store_error)) => return Err(store_error.into()),
        // Otherwise the producer's failure explains the aborted upload better than the abort itself.
        (Err(e), _) => return Err(e),
        (Ok(_), Err(store_error)) => return Err(store_error.into()),
    };
    if receipt.size != report.stored_bytes {
        return Err(BackupError::Store(StoreError::Backend {
            store: store.name().to_owned(),
            op: "verify size",
            key: key.to_owned(),
            message: format!(
                "store reports {} bytes, encoder wrote {}",
                receipt.size, report.stored_bytes
            ),
        }));
    }
    Ok((report, receipt, meta))
}
