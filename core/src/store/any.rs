//! `AnyStore`: the closed set of store kinds (s3, fs), dispatched with a `match`, built from a store's config.
//! Building resolves secret references and checks nothing else; the backup checks the lock status itself.

use super::s3::S3Credentials;
use super::{
    AdminStore, FsStore, LockStatus, ObjectInfo, ObjectReader, PutReceipt, ReadStore, S3Store,
    StoreError, WriteStore,
};
use crate::pipeline::PartReceiver;
use crate::secret::{resolve, SecretError};
use bytes::Bytes;
use lifeboat_config::{StoreConfig, StoreKind};

use super::LockSpec;

/// One of the supported stores.
#[derive(Debug, Clone)]
pub enum AnyStore {
    /// An S3-compatible bucket.
    S3(S3Store),
    /// A local directory.
    Fs(FsStore),
}

/// Why a store could not be built from its config.
#[derive(Debug, thiserror::Error)]
pub enum BuildStoreError {
    /// A credential reference did not resolve.
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// The store itself failed to open.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl AnyStore {
    /// Builds the store named in `cfg`.
    pub async fn build(cfg: &StoreConfig) -> Result<AnyStore, BuildStoreError> {
        match &cfg.kind {
            StoreKind::Fs(fs) => Ok(AnyStore::Fs(FsStore::open(
                &cfg.name, &fs.path, &fs.prefix,
            )?)),
            StoreKind::S3(s3) => {
                let credentials = match (&s3.access_key_id, &s3.secret_access_key) {
                    (Some(id), Some(secret)) => Some(S3Credentials {
                        access_key_id: resolve(&format!("stores.{}.access_key_id", cfg.name), id)?,
                        secret_access_key: resolve(
                            &format!("stores.{}.secret_access_key", cfg.name),
                            secret,
                        )?,
                        session_token: match &s3.session_token {
                            Some(t) => {
                                Some(resolve(&format!("stores.{}.session_token", cfg.name), t)?)
                            }
                            None => None,
                        },
                    }),
                    _ => None,
                };
                Ok(AnyStore::S3(
                    S3Store::connect(&cfg.name, s3, credentials).await?,
                ))
            }
        }
    }
}

macro_rules! dispatch {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            AnyStore::S3($s) => $e,
            AnyStore::Fs($s) => $e,
        }
    };
}

impl ReadStore for AnyStore {
    fn name(&self) -> &str {
        dispatch!(self, s => s.name())
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        dispatch!(self, s => s.list(prefix).await)
    }
    async fn head(&self, key: &str) -> Result<ObjectInfo, StoreError> {
        dispatch!(self, s => s.head(key).await)
    }
    async fn get(&self, key: &str) -> Result<ObjectReader, StoreError> {
        dispatch!(self, s => s.get(key).await)
    }
    async fn get_small(&self, key: &str, max_bytes: u64) -> Result<Bytes, StoreError> {
        dispatch!(self, s => s.get_small(key, max_bytes).await)
    }
    async fn lock_status(&self) -> Result<LockStatus, StoreError> {
        dispatch!(self, s => s.lock_status().await)
    }
    async fn version_count(&self, key: &str) -> Result<usize, StoreError> {
        dispatch!(self, s => s.version_count(key).await)
    }
}

impl WriteStore for AnyStore {
    async fn put_stream(
        &self,
        key: &str,
        parts: PartReceiver,
        lock: &LockSpec,
    ) -> Result<PutReceipt, StoreError> {
        dispatch!(self, s => s.put_stream(key, parts, lock).await)
    }
    async fn put_small(
        &self,
        key: &str,
        body: Bytes,
        lock: &LockSpec,
    ) -> Result<PutReceipt, StoreError> {
        dispatch!(self, s => s.put_small(key, body, lock).await)
    }
}

impl AdminStore for AnyStore {
    async fn list_versions(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, Option<String>)>, StoreError> {
        dispatch!(self, s => s.list_versions(prefix).await)
    }
    async fn delete_version(&self, key: &str, version_id: Option<&str>) -> Result<(), StoreError> {
        dispatch!(self, s => s.delete_version(key, version_id).await)
    }
}
