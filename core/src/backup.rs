//! One snapshot, end to end: plan the source's streams, encode each once and upload it to every target store at
//! the same time, store the encrypted catalog, and write each store's `manifest.json` LAST.
//!
//! A snapshot without a manifest does not exist; a run succeeds only when every target store holds the snapshot.

use crate::pipeline::{
    encode, encode_to_vec, Chunk, EncodeReport, EncodeSettings, PartReceiver, PartWriter,
    PipelineError,
};
use crate::snapshot::{
    manifest_key, object_key, signature_key, Catalog, LockInfo, Manifest, ManifestSigner,
    ObjectEntry, ObjectKind, SnapshotId, SnapshotRef, FORMAT_VERSION,
};
use crate::source::{Source, SourceError, StreamSpec};
use crate::store::{LockSpec, PutReceipt, StoreError, WriteStore};
use bytes::Bytes;
use chrono::Utc;
use futures::future::join_all;
use lifeboat_config::LockMode;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::io::SyncIoBridge;
use tokio_util::sync::CancellationToken;

/// Everything a backup needs besides its source and stores.
#[derive(Clone)]
pub struct BackupSettings {
    /// Job name.
    pub job: String,
    /// zstd settings.
    pub compression: EncodeSettings,
    /// Initial multipart part size in bytes (one size for all targets: the stream is cut once).
    pub part_size: u64,
    /// age recipients (public keys only).
    pub recipients: Arc<Vec<age::x25519::Recipient>>,
    /// Signs each manifest (`manifest.json.sig`); `None` writes them unsigned.
    pub signer: Option<Arc<ManifestSigner>>,
}

/// One store a snapshot is written to, with that store's lock settings.
#[derive(Debug, Clone)]
pub struct Target<S> {
    /// The store.
    pub store: S,
    /// Lock mode for every object written there.
    pub lock_mode: LockMode,
    /// Lock period from the snapshot's start.
    pub retention: Option<Duration>,
}

impl<S: WriteStore> Target<S> {
    fn lock(&self, started_at: chrono::DateTime<Utc>) -> Result<LockSpec, String> {
        LockSpec::starting(self.lock_mode, self.retention, started_at)
    }
}

/// The result of a successful backup.
#[derive(Debug, Clone)]
pub struct BackupReport {
    /// Where the snapshot is.
    pub snapshot: SnapshotRef,
    /// Its manifest as written to the first target store (the others differ only in version ids and locks).
    pub manifest: Manifest,
    /// Every store that holds the snapshot, in target order.
    pub stores: Vec<String>,
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

/// Runs one backup of `source` into every store of `targets` (at least one).
pub async fn run_backup<Src: Source, S: WriteStore>(
    source: &mut Src,
    targets: &[Target<S>],
    settings: &BackupSettings,
    id: SnapshotId,
    cancel: CancellationToken,
) -> Result<BackupReport, BackupError> {
    let started = Instant::now();
    let started_at = Utc::now();
    if targets.is_empty() {
        return Err(BackupError::Internal(
            "a backup needs at least one store".to_owned(),
        ));
    }
    for t in targets {
        if t.lock_mode != LockMode::None {
            let status = t.store.lock_status().await?;
            if !status.enabled {
                return Err(BackupError::NotImmutable(StoreError::LockNotEnabled {
                    store: t.store.name().to_owned(),
                    detail: status.detail,
                }));
            }
        }
    }
    let plan = source.prepare().await?;
    let snapshot = SnapshotRef {
        job: settings.job.clone(),
        id: id.clone(),
    };
    let locks = targets
        .iter()
        .map(|t| t.lock(started_at))
        .collect::<Result<Vec<_>, _>>()
        .map_err(BackupError::Internal)?;
    let store_names: Vec<String> = targets.iter().map(|t| t.store.name().to_owned()).collect();
    tracing::debug!(job = %settings.job, snapshot = %id, stores = ?store_names, streams = plan.streams.len(), "Backup started.");

    // One list of manifest entries per store: same bytes and checksums, each store's own version ids and locks.
    let mut objects: Vec<Vec<ObjectEntry>> = vec![Vec::new(); targets.len()];
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
        let (report, receipts, meta) =
            store_stream(source, targets, &locks, settings, spec, &key, &cancel).await?;
        tracing::info!(job = %settings.job, snapshot = %id, stream = %spec.name, payload_bytes = report.payload_bytes, stored_bytes = report.stored_bytes, stores = targets.len(), "Stream stored.");
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
        for (list, receipt) in objects.iter_mut().zip(receipts) {
            list.push(entry(spec, &report, receipt));
        }
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
    let stored = Bytes::from(stored);
    let receipts = all_ok(
        join_all(
            targets
                .iter()
                .zip(&locks)
                .map(|(t, lock)| t.store.put_small(&key, stored.clone(), lock)),
        )
        .await,
    )?;
    for (list, receipt) in objects.iter_mut().zip(receipts) {
        list.push(entry(&catalog_spec, &report, receipt));
    }

    let finished_at = Utc::now();
    let manifests: Vec<Manifest> = objects
        .into_iter()
        .map(|objects| Manifest {
            format_version: FORMAT_VERSION,
            snapshot_id: id.clone(),
            job: settings.job.clone(),
            source: plan.identity.clone(),
            lifeboat_version: crate::VERSION.to_owned(),
            started_at,
            finished_at,
            compression: "zstd".to_owned(),
            compression_level: settings.compression.level,
            encryption: "age".to_owned(),
            recipients: settings.recipients.iter().map(|r| r.to_string()).collect(),
            volume: volume.clone(),
            objects,
        })
        .collect();
    if cancel.is_cancelled() {
        return Err(BackupError::Cancelled);
    }
    // LAST: only now does the snapshot exist, in each store once its manifest is there. A signature covers the
    // exact manifest bytes and goes first, so the manifest is still the last object of the snapshot.
    let manifest_key = manifest_key(&settings.job, &id);
    let signature_key = signature_key(&settings.job, &id);
    let signer = settings.signer.clone();
    all_ok(
        join_all(
            targets
                .iter()
                .zip(&locks)
                .zip(&manifests)
                .map(|((t, lock), manifest)| {
                    let json = Bytes::from(manifest.to_json());
                    let signer = signer.clone();
                    let manifest_key = &manifest_key;
                    let signature_key = &signature_key;
                    async move {
                        if let Some(signer) = signer {
                            let signature = signer.sign(&json);
                            t.store
                                .put_small(signature_key, Bytes::copy_from_slice(&signature), lock)
                                .await?;
                        }
                        t.store.put_small(manifest_key, json, lock).await
                    }
                }),
        )
        .await,
    )?;
    let duration = started.elapsed();
    let Some(manifest) = manifests.into_iter().next() else {
        return Err(BackupError::Internal("no manifest was built".to_owned()));
    };
    tracing::debug!(job = %settings.job, snapshot = %id, stored_bytes = manifest.stored_bytes(), payload_bytes = manifest.payload_bytes(), duration_s = duration.as_secs_f64(), "Backup completed.");
    Ok(BackupReport {
        snapshot,
        manifest,
        stores: store_names,
        duration,
    })
}

/// Every result, or the first error (the others are logged: each names its store).
fn all_ok<T>(results: Vec<Result<T, StoreError>>) -> Result<Vec<T>, StoreError> {
    let mut out = Vec::with_capacity(results.len());
    let mut first = None;
    for r in results {
        match r {
            Ok(v) => out.push(v),
            Err(e) if first.is_none() => first = Some(e),
            Err(e) => tracing::error!(error = %e, "Another store failed as well."),
        }
    }
    match first {
        Some(e) => Err(e),
        None => Ok(out),
    }
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

/// Sends every chunk from the encoder to each store's upload, in order (the slowest store sets the pace). Stops
/// at the first store that stopped receiving; dropping the senders then makes every other upload abort.
async fn fan_out(
    mut from_encoder: PartReceiver,
    to_stores: Vec<mpsc::Sender<Chunk>>,
) -> Result<(), ()> {
    while let Some(chunk) = from_encoder.recv().await {
        for tx in &to_stores {
            if tx.send(chunk.clone()).await.is_err() {
                return Err(());
            }
        }
    }
    Ok(())
}

/// Streams one source stream through the encoder into every target store. The uploads are committed only after
/// the encoder finished AND the producer exited cleanly; otherwise every store aborts its upload.
async fn store_stream<Src: Source, S: WriteStore>(
    source: &Src,
    targets: &[Target<S>],
    locks: &[LockSpec],
    settings: &BackupSettings,
    spec: &StreamSpec,
    key: &str,
    cancel: &CancellationToken,
) -> Result<(EncodeReport, Vec<PutReceipt>, crate::source::StreamMeta), BackupError> {
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
    // a Commit, and the uploads (still polled below) see their channels close and abort.
    let produce = async {
        tokio::select! {
            produced = produce => produced,
            () = cancel.cancelled() => Err(BackupError::Cancelled),
        }
    };
    let mut senders = Vec::with_capacity(targets.len());
    let mut uploads = Vec::with_capacity(targets.len());
    for (t, lock) in targets.iter().zip(locks) {
        let (store_tx, store_rx) = mpsc::channel::<Chunk>(1);
        senders.push(store_tx);
        uploads.push(t.store.put_stream(key, store_rx, lock));
    }
    let (uploaded, produced, _) = tokio::join!(join_all(uploads), produce, fan_out(rx, senders));
    let uploaded = all_ok(uploaded);
    let (report, meta, receipts) = match (produced, uploaded) {
        (Ok((report, meta)), Ok(receipts)) => (report, meta, receipts),
        // The encoder only fails to hand over parts because a store stopped: report the store's error.
        (Err(BackupError::Pipeline { .. } | BackupError::Internal(_)), Err(store_error)) => {
            return Err(store_error.into())
        }
        // Otherwise the producer's failure explains the aborted uploads better than the aborts themselves.
        (Err(e), _) => return Err(e),
        (Ok(_), Err(store_error)) => return Err(store_error.into()),
    };
    for (t, receipt) in targets.iter().zip(&receipts) {
        if receipt.size != report.stored_bytes {
            return Err(BackupError::Store(StoreError::Backend {
                store: t.store.name().to_owned(),
                op: "verify size",
                key: key.to_owned(),
                message: format!(
                    "store reports {} bytes, encoder wrote {}",
                    receipt.size, report.stored_bytes
                ),
            }));
        }
    }
    Ok((report, receipts, meta))
}
