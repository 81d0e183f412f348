//! Object stores behind three capability traits that match the three credential roles:
//! `ReadStore` (reader, drills), `WriteStore` (the daemon: add objects, never delete), `AdminStore` (prune, init).

mod any;
pub mod audit;
mod fs;
mod s3;
pub mod setup;

pub use any::AnyStore;
pub use fs::FsStore;
pub use s3::S3Store;

use crate::pipeline::PartReceiver;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use lifeboat_config::LockMode;
use std::future::Future;
use std::pin::Pin;
use tokio::io::AsyncRead;

/// An async byte stream read from a store.
pub type ObjectReader = Pin<Box<dyn AsyncRead + Send>>;

/// The lock to apply to every object of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockSpec {
    /// Lock mode.
    pub mode: LockMode,
    /// Retain-until date (`None` only with [`LockMode::None`]).
    pub retain_until: Option<DateTime<Utc>>,
}

impl LockSpec {
    /// The lock of an object written at `from` under a store's `mode` and `retention`, in whole seconds (what
    /// stores record). Fails only for a retention too long to add to a date.
    pub fn starting(
        mode: LockMode,
        retention: Option<std::time::Duration>,
        from: DateTime<Utc>,
    ) -> Result<LockSpec, String> {
        let retain_until = match (mode, retention) {
            (LockMode::None, _) | (_, None) => None,
            (_, Some(r)) => {
                let until = from + chrono::Duration::from_std(r).map_err(|e| e.to_string())?;
                DateTime::from_timestamp(until.timestamp(), 0)
            }
        };
        Ok(LockSpec { mode, retain_until })
    }

    /// The S3 name of the mode: `COMPLIANCE`, `GOVERNANCE` or `NONE`.
    pub fn mode_name(&self) -> &'static str {
        mode_name(self.mode)
    }
}

/// The S3 name of a lock mode.
pub fn mode_name(mode: LockMode) -> &'static str {
    match mode {
        LockMode::Compliance => "COMPLIANCE",
        LockMode::Governance => "GOVERNANCE",
        LockMode::None => "NONE",
    }
}

/// The lock a store reports for an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectLock {
    /// `COMPLIANCE`, `GOVERNANCE` (or `NONE` when unlocked).
    pub mode: String,
    /// Retain-until date, if any.
    pub retain_until: Option<DateTime<Utc>>,
}

impl ObjectLock {
    /// Whether this lock is at least as strong and as long as `wanted`.
    pub fn satisfies(&self, wanted: &LockSpec) -> bool {
        match wanted.mode {
            LockMode::None => true,
            mode => {
                let mode_ok = self.mode == mode_name(mode)
                    || (mode == LockMode::Governance && self.mode == "COMPLIANCE");
                let until_ok = match (self.retain_until, wanted.retain_until) {
                    (_, None) => true,
                    // Stores keep whole seconds.
                    (Some(have), Some(want)) => have.timestamp() >= want.timestamp(),
                    (None, Some(_)) => false,
                };
                mode_ok && until_ok
            }
        }
    }
}

/// Metadata of a stored object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Key relative to the store prefix.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// Version id, on versioned stores.
    pub version_id: Option<String>,
    /// The object's lock, when the store reports one.
    pub lock: Option<ObjectLock>,
}

/// What a completed write produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutReceipt {
    /// Key relative to the store prefix.
    pub key: String,
    /// Bytes stored.
    pub size: u64,
    /// Version id, on versioned stores.
    pub version_id: Option<String>,
    /// The lock read back from the store after the write.
    pub lock: ObjectLock,
}

/// Whether a store enforces immutability for new objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockStatus {
    /// Object Lock is enabled on the bucket (or emulated by the fs store).
    pub enabled: bool,
    /// Human description, e.g. `bucket default COMPLIANCE 35 days`, or why not.
    pub detail: String,
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The object does not exist.
    #[error("object {key} not found in store {store}")]
    NotFound {
        /// Store name.
        store: String,
        /// Key.
        key: String,
    },
    /// The key is already taken; objects are never overwritten.
    #[error("object {key} already exists in store {store}; lifeboat never overwrites an object")]
    AlreadyExists {
        /// Store name.
        store: String,
        /// Key.
        key: String,
    },
    /// The bucket has no Object Lock, and the store config asks for one.
    #[error("store {store}: {detail}; create the bucket with Object Lock enabled (`aws s3api create-bucket --object-lock-enabled-for-bucket`), or set lock_mode = \"none\" on the store if you accept deletable backups")]
    LockNotEnabled {
        /// Store name.
        store: String,
        /// What was found.
        detail: String,
    },
    /// The store did not apply the requested lock to an object.
    #[error("store {store} did not lock {key} as asked: wanted {wanted}, store reports {got}")]
    LockNotApplied {
        /// Store name.
        store: String,
        /// Key.
        key: String,
        /// Requested lock.
        wanted: String,
        /// What the store reports.
        got: String,
    },
    /// The store refused a delete (e.g. the object is locked).
    #[error("store {store} refused to delete {key}: {reason}")]
    DeleteRefused {
        /// Store name.
        store: String,
        /// Key.
        key: String,
        /// Why.
        reason: String,
    },
    /// The upload was aborted because the producer did not finish cleanly.
    #[error("upload of {key} to store {store} aborted: the stream did not finish cleanly")]
    Aborted {
        /// Store name.
        store: String,
        /// Key.
        key: String,
    },
    /// Any other failure talking to the store.
    #[error("store {store}: {op} {key} failed: {message}")]
    Backend {
        /// Store name.
        store: String,
        /// Operation, e.g. `UploadPart`.
        op: &'static str,
        /// Key (or bucket for bucket-level operations).
        key: String,
        /// Rendered error (never contains credentials).
        message: String,
    },
}

impl StoreError {
    /// Whether the error means the object does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, StoreError::NotFound { .. })
    }

    /// The name of the store that failed.
    pub fn store(&self) -> &str {
        match self {
            StoreError::NotFound { store, .. }
            | StoreError::AlreadyExists { store, .. }
            | StoreError::LockNotEnabled { store, .. }
            | StoreError::LockNotApplied { store, .. }
            | StoreError::DeleteRefused { store, .. }
            | StoreError::Aborted { store, .. }
            | StoreError::Backend { store, .. } => store,
        }
    }
}

/// Read access: the reader/drill role.
pub trait ReadStore: Send + Sync {
    /// The store's configured name.
    fn name(&self) -> &str;

    /// Lists objects whose key starts with `prefix` (relative to the store prefix), sorted by key.
    fn list(
        &self,
        prefix: &str,
    ) -> impl Future<Output = Result<Vec<ObjectInfo>, StoreError>> + Send;

    /// Metadata of one object, including its lock.
    fn head(&self, key: &str) -> impl Future<Output = Result<ObjectInfo, StoreError>> + Send;

    /// Streams an object's bytes.
    fn get(&self, key: &str) -> impl Future<Output = Result<ObjectReader, StoreError>> + Send;

    /// Reads a small object whole (manifests), refusing objects larger than `max_bytes`.
    fn get_small(
        &self,
        key: &str,
        max_bytes: u64,
    ) -> impl Future<Output = Result<Bytes, StoreError>> + Send;

    /// Whether new objects will be immutable (bucket Object Lock configuration).
    fn lock_status(&self) -> impl Future<Output = Result<LockStatus, StoreError>> + Send;

    /// How many versions (delete markers included) the store keeps of exactly `key`: 0 if none. A store
    /// without versioning reports 1 for an existing object.
    fn version_count(&self, key: &str) -> impl Future<Output = Result<usize, StoreError>> + Send;
}

/// Write access: the daemon's role. There is deliberately no delete here.
pub trait WriteStore: ReadStore {
    /// Uploads a stream received as [`crate::pipeline::Chunk`]s, locked with `lock`.
    ///
    /// Completes only on `Chunk::Commit`; if the channel closes without it, or anything fails,
    /// the partial upload is aborted and nothing becomes visible. Never overwrites a key.
    /// After completion the lock is read back (and extended where the store applied less);
    /// a lock the store will not apply fails the write.
    fn put_stream(
        &self,
        key: &str,
        parts: PartReceiver,
        lock: &LockSpec,
    ) -> impl Future<Output = Result<PutReceipt, StoreError>> + Send;

    /// Uploads a small object from memory (manifests, catalogs) with the same guarantees.
    fn put_small(
        &self,
        key: &str,
        body: Bytes,
        lock: &LockSpec,
    ) -> impl Future<Output = Result<PutReceipt, StoreError>> + Send;
}

/// Admin access: prune and bucket set-up. Never used by the daemon.
pub trait AdminStore: WriteStore {
    /// Every version (and delete marker) of every object under `prefix`: (key, version id). A store without
    /// versions reports each object once with `None`.
    fn list_versions(
        &self,
        prefix: &str,
    ) -> impl Future<Output = Result<Vec<(String, Option<String>)>, StoreError>> + Send;

    /// Deletes one version of an object; the store refuses while it is locked.
    fn delete_version(
        &self,
        key: &str,
        version_id: Option<&str>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}
