//! `lifeboat copy`: copies a complete snapshot from one store to another without decrypting it (to seed a new
//! store, or to repair a second copy), checking every object's stored SHA-256 on the way, manifest LAST.
//!
//! The copy's objects are locked under the target store's settings from the time of the copy; its manifest records
//! the target's version ids and locks, is otherwise the source manifest, and is signed with the caller's key.

use crate::pipeline::{Chunk, HashingWriter, PartWriter};
use crate::snapshot::{
    signature_key, LockInfo, Manifest, ManifestSigner, ObjectEntry, SnapshotRef,
};
use crate::store::{LockSpec, ObjectLock, PutReceipt, ReadStore, StoreError, WriteStore};
use bytes::Bytes;
use std::io::Write;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tokio_util::io::SyncIoBridge;

/// What happened to one object.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CopiedObject {
    /// Object name (e.g. `app.dump`).
    pub name: String,
    /// Bytes stored.
    pub bytes: u64,
    /// `copied`, or `present` when the target already held the same bytes (an earlier, interrupted copy).
    pub action: &'static str,
}

/// The result of a copy.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CopyReport {
    /// `job/id`.
    pub snapshot: String,
    /// Source store name.
    pub from: String,
    /// Target store name.
    pub to: String,
    /// The target already had the snapshot's manifest: nothing was written.
    pub already_complete: bool,
    /// Per object.
    pub objects: Vec<CopiedObject>,
    /// The manifest as written to the target (absent when `already_complete`).
    #[serde(skip)]
    pub manifest: Option<Manifest>,
}

/// Why a copy failed. Whatever the cause, no manifest was written to the target.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// A store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An object read from the source does not match the manifest.
    #[error("{key} in store {store} does not match the manifest ({detail}); the source copy is damaged: copy from another store, or run `lifeboat verify` on it")]
    Corrupt {
        /// Store.
        store: String,
        /// Key.
        key: String,
        /// What differs.
        detail: String,
    },
    /// The target holds different bytes under one of the snapshot's keys.
    #[error("store {store} already holds {key} with different content ({detail}); lifeboat never overwrites an object, so this snapshot cannot be copied there")]
    Conflict {
        /// Store.
        store: String,
        /// Key.
        key: String,
        /// What differs.
        detail: String,
    },
    /// Internal task failure.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Copies `snapshot` (whose manifest, read from `from`, is `manifest`) into `to`, locking each object with `lock`.
/// Objects go through in stored form (`age(zstd(payload))`): nothing is decrypted. Objects already in `to` with the
/// manifest's SHA-256 are kept (a resumed copy); the target manifest is written last.
pub async fn copy_snapshot<R: ReadStore, W: WriteStore>(
    from: &R,
    to: &W,
    snapshot: &SnapshotRef,
    manifest: &Manifest,
    lock: &LockSpec,
    part_size: u64,
    signer: Option<&ManifestSigner>,
) -> Result<CopyReport, CopyError> {
    let mut report = CopyReport {
        snapshot: snapshot.to_string(),
        from: from.name().to_owned(),
        to: to.name().to_owned(),
        already_complete: false,
        objects: Vec::new(),
        manifest: None,
    };
    match to.head(&snapshot.manifest_key()).await {
        Ok(_) => {
            report.already_complete = true;
            return Ok(report);
        }
        Err(e) if e.is_not_found() => {}
        Err(e) => return Err(e.into()),
    }
    let mut copied = manifest.clone();
    for entry in &mut copied.objects {
        let (receipt, action) = match existing(to, entry).await? {
            Some(receipt) => (receipt, "present"),
            None => (
                copy_object(from, to, entry, lock, part_size).await?,
                "copied",
            ),
        };
        report.objects.push(CopiedObject {
            name: entry.name.clone(),
            bytes: receipt.size,
            action,
        });
        entry.version_id = receipt.version_id;
        entry.lock = LockInfo {
            mode: receipt.lock.mode,
            retain_until: receipt.lock.retain_until,
        };
    }
    let body = Bytes::from(copied.to_json());
    // The copy records the target's versions and locks, so it is signed anew (the signature object first).
    if let Some(signer) = signer {
        let signature = signer.sign(&body);
        to.put_small(
            &signature_key(&snapshot.job, &snapshot.id),
            Bytes::copy_from_slice(&signature),
            lock,
        )
        .await?;
    }
    // LAST: only now does the snapshot exist in the target.
    to.put_small(&snapshot.manifest_key(), body, lock).await?;
    report.manifest = Some(copied);
    Ok(report)
}

/// The target's object under `entry.key`, if it already holds exactly the manifest's bytes.
async fn existing<W: WriteStore>(
    to: &W,
    entry: &ObjectEntry,
) -> Result<Option<PutReceipt>, CopyError> {
    let info = match to.head(&entry.key).await {
        Ok(info) => info,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let conflict = |detail: String| CopyError::Conflict {
        store: to.name().to_owned(),
        key: entry.key.clone(),
        detail,
    };
    if info.size != entry.stored_bytes {
        return Err(conflict(format!(
            "{} bytes, the manifest says {}",
            info.size, entry.stored_bytes
        )));
    }
    let reader = to.get(&entry.key).await?;
    let sha = tokio::task::spawn_blocking(move || {
        let mut hashing = HashingWriter::new(std::io::sink());
        std::io::copy(&mut SyncIoBridge::new(reader), &mut hashing)?;
        let (_, _, sha) = hashing.finish();
        Ok::<_, std::io::Error>(sha)
    })
    .await
    .map_err(|e| CopyError::Internal(e.to_string()))?
    .map_err(|e| {
        CopyError::Store(StoreError::Backend {
            store: to.name().to_owned(),
            op: "GetObject",
            key: entry.key.clone(),
            message: e.to_string(),
        })
    })?;
    if sha != entry.stored_sha256 {
        return Err(conflict(format!(
            "SHA-256 {sha}, the manifest says {}",
            entry.stored_sha256
        )));
    }
    Ok(Some(PutReceipt {
        key: entry.key.clone(),
        size: info.size,
        version_id: info.version_id,
        lock: info.lock.unwrap_or(ObjectLock {
            mode: "NONE".to_owned(),
            retain_until: None,
        }),
    }))
}

/// Streams one object from `from` into `to`; the upload is committed only if size and SHA-256 match the manifest.
async fn copy_object<R: ReadStore, W: WriteStore>(
    from: &R,
    to: &W,
    entry: &ObjectEntry,
    lock: &LockSpec,
    part_size: u64,
) -> Result<PutReceipt, CopyError> {
    let mut reader = from.get(&entry.key).await?;
    let (tx, rx) = mpsc::channel::<Chunk>(1);
    let expected_sha = entry.stored_sha256.clone();
    let expected_bytes = entry.stored_bytes;
    let key = entry.key.clone();
    let store = from.name().to_owned();
    let pump = async move {
        // Read on the async side, hash and cut parts on a blocking thread.
        let (bytes_tx, bytes_rx) = tokio::sync::mpsc::channel::<Bytes>(4);
        let hasher = tokio::task::spawn_blocking(move || {
            let mut rx = bytes_rx;
            let mut out = HashingWriter::new(PartWriter::new(tx, part_size));
            while let Some(buf) = rx.blocking_recv() {
                out.write_all(&buf)?;
            }
            let (parts, bytes, sha) = out.finish();
            let tx = parts.finish()?;
            Ok::<_, std::io::Error>((tx, bytes, sha))
        });
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = reader.read(&mut buf).await.map_err(|e| {
                CopyError::Store(StoreError::Backend {
                    store: store.clone(),
                    op: "GetObject",
                    key: key.clone(),
                    message: e.to_string(),
                })
            })?;
            if n == 0 {
                break;
            }
            if bytes_tx
                .send(Bytes::copy_from_slice(&buf[..n]))
                .await
                .is_err()
            {
                break;
            }
        }
        drop(bytes_tx);
        let (tx, bytes, sha) = hasher
            .await
            .map_err(|e| CopyError::Internal(e.to_string()))?
            .map_err(|e| CopyError::Internal(format!("the target stopped: {e}")))?;
        if bytes != expected_bytes || sha != expected_sha {
            return Err(CopyError::Corrupt {
                store: store.clone(),
                key: key.clone(),
                detail: format!(
                    "read {bytes} bytes with SHA-256 {sha}; the manifest says {expected_bytes} bytes, {expected_sha}"
                ),
            });
        }
        // Only now may the target complete the upload.
        tx.send(Chunk::Commit)
            .await
            .map_err(|_| CopyError::Internal("the target stopped before the commit".to_owned()))?;
        Ok(())
    };
    let (uploaded, pumped) = tokio::join!(to.put_stream(&entry.key, rx, lock), pump);
    match (pumped, uploaded) {
        (Ok(()), Ok(receipt)) => Ok(receipt),
        (Err(CopyError::Internal(_)), Err(store_error)) => Err(store_error.into()),
        (Err(e), _) => Err(e),
        (Ok(()), Err(store_error)) => Err(store_error.into()),
    }
}
