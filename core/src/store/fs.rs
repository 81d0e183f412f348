//! The `fs` store: a local directory with the same key layout as S3, for quick starts and a second disk.
//! It emulates Object Lock (read-only files, a lock record per object, deletes refused before retain-until) but is NOT independent storage.

use super::{
    mode_name, AdminStore, LockSpec, LockStatus, ObjectInfo, ObjectLock, ObjectReader, PutReceipt,
    ReadStore, StoreError, WriteStore,
};
use crate::pipeline::{Chunk, PartReceiver};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use rand::RngExt;
use serde::{Deserialize, Serialize};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use tokio::io::AsyncWriteExt;

/// Directory (under the store root) holding one lock record per object.
const LOCKS_DIR: &str = ".lifeboat-locks";
const PARTIAL_MARK: &str = ".partial-";

/// A store in a local directory.
#[derive(Debug, Clone)]
pub struct FsStore {
    name: String,
    root: PathBuf,
}

#[derive(Serialize, Deserialize)]
struct LockRecord {
    mode: String,
    retain_until: Option<DateTime<Utc>>,
}

impl FsStore {
    /// A store rooted at `path`/`prefix`. Creates the directory if needed.
    pub fn open(name: &str, path: &Path, prefix: &str) -> Result<FsStore, StoreError> {
        let root = path.join(prefix);
        std::fs::create_dir_all(&root).map_err(|e| StoreError::Backend {
            store: name.to_owned(),
            op: "create directory",
            key: root.display().to_string(),
            message: e.to_string(),
        })?;
        tracing::warn!(
            store = name,
            path = %root.display(),
            "The fs store is not independent storage: whoever controls this machine can delete it. Use an S3 store with Object Lock for real backups."
        );
        Ok(FsStore {
            name: name.to_owned(),
            root,
        })
    }

    fn path_of(&self, key: &str) -> Result<PathBuf, StoreError> {
        let safe = !key.is_empty()
            && !key.starts_with('/')
            && key.split('/').all(|seg| {
                !seg.is_empty() && seg != "." && seg != ".." && !seg.starts_with(".lifeboat")
            });
        if !safe {
            return Err(self.err("resolve key", key, "invalid key".to_owned()));
        }
        Ok(self.root.join(key))
    }

    fn lock_path(&self, key: &str) -> PathBuf {
        self.root.join(LOCKS_DIR).join(format!("{key}.json"))
    }

    fn err(&self, op: &'static str, key: &str, message: String) -> StoreError {
        StoreError::Backend {
            store: self.name.clone(),
            op,
            key: key.to_owned(),
            message,
        }
    }

    fn io_err(&self, op: &'static str, key: &str) -> impl Fn(std::io::Error) -> StoreError + '_ {
        let key = key.to_owned();
        move |e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                StoreError::NotFound {
                    store: self.name.clone(),
                    key: key.clone(),
                }
            } else {
                self.err(op, &key, e.to_string())
            }
        }
    }

    async fn read_lock(&self, key: &str) -> Option<ObjectLock> {
        let bytes = tokio::fs::read(self.lock_path(key)).await.ok()?;
        let rec: LockRecord = serde_json::from_slice(&bytes).ok()?;
        Some(ObjectLock {
            mode: rec.mode,
            retain_until: rec.retain_until,
        })
    }

    async fn write_lock(&self, key: &str, lock: &LockSpec) -> Result<ObjectLock, StoreError> {
        let path = self.lock_path(key);
        if let Some(dir) = path.parent() {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(self.io_err("create lock directory", key))?;
        }
        let rec = LockRecord {
            mode: lock.mode_name().to_owned(),
            retain_until: lock.retain_until,
        };
        let body = serde_json::to_vec(&rec).unwrap_or_default();
        let mut f = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .await
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::AlreadyExists => StoreError::AlreadyExists {
                    store: self.name.clone(),
                    key: key.to_owned(),
                },
                _ => self.err("write lock record", key, e.to_string()),
            })?;
        f.write_all(&body)
            .await
            .map_err(self.io_err("write lock record", key))?;
        f.sync_all()
            .await
            .map_err(self.io_err("sync lock record", key))?;
        drop(f);
        set_read_only(&path).await;
        Ok(ObjectLock {
            mode: rec.mode,
            retain_until: rec.retain_until,
        })
    }

    /// Moves a finished partial file into place without ever replacing an existing object.
    async fn publish(
        &self,
        partial: &Path,
        key: &str,
        lock: &LockSpec,
    ) -> Result<PutReceipt, StoreError> {
        let dest = self.path_of(key)?;
        if tokio::fs::try_exists(&dest).await.unwrap_or(false) {
            return Err(StoreError::AlreadyExists {
                store: self.name.clone(),
                key: key.to_owned(),
            });
        }
        // The lock record exists before the object does, so the object is never visible unlocked.
        let applied = self.write_lock(key, lock).await?;
        set_read_only(partial).await;
        tokio::fs::hard_link(partial, &dest)
            .await
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::AlreadyExists => StoreError::AlreadyExists {
                    store: self.name.clone(),
                    key: key.to_owned(),
                },
                _ => self.err("publish", key, e.to_string()),
            })?;
        tokio::fs::remove_file(partial)
            .await
            .map_err(self.io_err("remove partial file", key))?;
        if let Some(dir) = dest.parent() {
            if let Ok(d) = tokio::fs::File::open(dir).await {
                let _synced = d.sync_all().await;
            }
        }
        let size = tokio::fs::metadata(&dest)
            .await
            .map_err(self.io_err("stat", key))?
            .len();
        Ok(PutReceipt {
            key: key.to_owned(),
            size,
            version_id: None,
            lock: applied,
        })
    }

    async fn create_partial(&self, key: &str) -> Result<(PathBuf, tokio::fs::File), StoreError> {
        let dest = self.path_of(key)?;
        let dir = dest
            .parent()
            .ok_or_else(|| self.err("resolve key", key, "key has no parent".to_owned()))?;
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(self.io_err("create directory", key))?;
        let suffix: u64 = rand::rng().random();
        let file_name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let partial = dir.join(format!(".{file_name}{PARTIAL_MARK}{suffix:016x}"));
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&partial)
            .await
            .map_err(self.io_err("create partial file", key))?;
        Ok((partial, file))
    }
}

async fn set_read_only(path: &Path) {
    // Best effort: read-only files guard against accidents, not against an attacker (see module docs).
    let _done = tokio::fs::set_permissions(path, std::fs::Permissions::from_mode(0o444)).await;
}

impl ReadStore for FsStore {
    fn name(&self) -> &str {
        &self.name
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        let root = self.root.clone();
        let prefix_owned = prefix.to_owned();
        let walked = tokio::task::spawn_blocking(move || walk(&root, &prefix_owned))
            .await
            .map_err(|e| self.err("list", prefix, e.to_string()))?
            .map_err(|e| self.err("list", prefix, e.to_string()))?;
        let mut out = Vec::with_capacity(walked.len());
        for (key, size) in walked {
            let lock = self.read_lock(&key).await;
            out.push(ObjectInfo {
                key,
                size,
                version_id: None,
                lock,
            });
        }
        Ok(out)
    }

    async fn version_count(&self, key: &str) -> Result<usize, StoreError> {
        // A directory keeps one version of a file, and the fs store never overwrites one.
        match self.head(key).await {
            Ok(_) => Ok(1),
            Err(e) if e.is_not_found() => Ok(0),
            Err(e) => Err(e),
        }
    }

    async fn head(&self, key: &str) -> Result<ObjectInfo, StoreError> {
        let path = self.path_of(key)?;
        let meta = tokio::fs::metadata(&path)
            .await
            .map_err(self.io_err("stat", key))?;
        Ok(ObjectInfo {
            key: key.to_owned(),
            size: meta.len(),
            version_id: None,
            lock: self.read_lock(key).await,
        })
    }

    async fn get(&self, key: &str) -> Result<ObjectReader, StoreError> {
        let path = self.path_of(key)?;
        let f = tokio::fs::File::open(&path)
            .await
            .map_err(self.io_err("open", key))?;
        Ok(Box::pin(f))
    }

    async fn get_small(&self, key: &str, max_bytes: u64) -> Result<Bytes, StoreError> {
        let info = self.head(key).await?;
        if info.size > max_bytes {
            return Err(self.err(
                "read",
                key,
                format!(
                    "object is {} bytes, more than the {max_bytes} expected",
                    info.size
                ),
            ));
        }
        let path = self.path_of(key)?;
        let bytes = tokio::fs::read(&path)
            .await
            .map_err(self.io_err("read", key))?;
        Ok(Bytes::from(bytes))
    }

    async fn lock_status(&self) -> Result<LockStatus, StoreError> {
        Ok(LockStatus {
            enabled: true,
            detail: "fs store: locks are emulated (read-only files, deletes refused before retain-until); not independent storage".to_owned(),
        })
    }
}

impl WriteStore for FsStore {
    async fn put_stream(
        &self,
        key: &str,
        mut parts: PartReceiver,
        lock: &LockSpec,
    ) -> Result<PutReceipt, StoreError> {
        let (partial, mut file) = self.create_partial(key).await?;
        let result = async {
            loop {
                match parts.recv().await {
                    Some(Chunk::Part(bytes)) => file
                        .write_all(&bytes)
                        .await
                        .map_err(self.io_err("write", key))?,
                    Some(Chunk::Commit) => break,
                    None => {
                        return Err(StoreError::Aborted {
                            store: self.name.clone(),
                            key: key.to_owned(),
                        })
                    }
                }
            }
            file.sync_all().await.map_err(self.io_err("sync", key))?;
            self.publish(&partial, key, lock).await
        }
        .await;
        if result.is_err() {
            let _removed = tokio::fs::remove_file(&partial).await;
        }
        result
    }

    async fn put_small(
        &self,
        key: &str,
        body: Bytes,
        lock: &LockSpec,
    ) -> Result<PutReceipt, StoreError> {
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        for chunk in [Chunk::Part(body), Chunk::Commit] {
            tx.try_send(chunk)
                .map_err(|e| self.err("write", key, e.to_string()))?;
        }
        self.put_stream(key, rx, lock).await
    }
}

impl AdminStore for FsStore {
    async fn list_versions(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, Option<String>)>, StoreError> {
        Ok(self
            .list(prefix)
            .await?
            .into_iter()
            .map(|o| (o.key, None))
            .collect())
    }

    async fn delete_version(&self, key: &str, _version_id: Option<&str>) -> Result<(), StoreError> {
        let path = self.path_of(key)?;
        if let Some(lock) = self.read_lock(key).await {
            if let Some(until) = lock.retain_until {
                if lock.mode != mode_name(lifeboat_config::LockMode::None) && until > Utc::now() {
                    return Err(StoreError::DeleteRefused {
                        store: self.name.clone(),
                        key: key.to_owned(),
                        reason: format!("object is locked ({}) until {until}", lock.mode),
                    });
                }
            }
        }
        tokio::fs::remove_file(&path)
            .await
            .map_err(self.io_err("delete", key))?;
        let _removed = tokio::fs::remove_file(self.lock_path(key)).await;
        Ok(())
    }
}

/// Walks `root` for regular files whose key starts with `prefix`, skipping lock records and partial files.
fn walk(root: &Path, prefix: &str) -> std::io::Result<Vec<(String, u64)>> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(".lifeboat") || name.contains(PARTIAL_MARK) {
                continue;
            }
            let path = entry.path();
            let ty = entry.file_type()?;
            let Ok(rel) = path.strip_prefix(root) else {
                continue;
            };
            let key = rel.to_string_lossy().into_owned();
            if ty.is_dir() {
                let dir_key = format!("{key}/");
                if dir_key.starts_with(prefix) || prefix.starts_with(&dir_key) {
                    stack.push(path);
                }
            } else if ty.is_file() && key.starts_with(prefix) {
                out.push((key, entry.metadata()?.len()));
            }
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::Chunk;
    use lifeboat_config::LockMode;
    use tokio::io::AsyncReadExt;
    use tokio::sync::mpsc;

    fn lock(days: i64) -> LockSpec {
        LockSpec {
            mode: LockMode::Compliance,
            retain_until: Some(Utc::now() + chrono::Duration::days(days)),
        }
    }

    #[tokio::test]
    async fn put_stream_commits_and_refuses_overwrite_and_locked_delete() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open("local", dir.path(), "p/").unwrap();
        let (tx, rx) = mpsc::channel(4);
        tx.send(Chunk::Part(Bytes::from_static(b"hello ")))
            .await
            .unwrap();
        tx.send(Chunk::Part(Bytes::from_static(b"world")))
            .await
            .unwrap();
        tx.send(Chunk::Commit).await.unwrap();
        let receipt = store.put_stream("a/b.bin", rx, &lock(1)).await.unwrap();
        assert_eq!(receipt.size, 11);
        assert_eq!(receipt.lock.mode, "COMPLIANCE");

        let mut body = String::new();
        store
            .get("a/b.bin")
            .await
            .unwrap()
            .read_to_string(&mut body)
            .await
            .unwrap();
        assert_eq!(body, "hello world");
        let listed = store.list("a/").await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].key, "a/b.bin");

        let again = store
            .put_small("a/b.bin", Bytes::from_static(b"x"), &lock(1))
            .await;
        assert!(matches!(again, Err(StoreError::AlreadyExists { .. })));
        let del = store.delete_version("a/b.bin", None).await;
        assert!(matches!(del, Err(StoreError::DeleteRefused { .. })));
        assert!(store.head("a/b.bin").await.is_ok());
    }

    #[tokio::test]
    async fn a_stream_closed_without_commit_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open("local", dir.path(), "").unwrap();
        let (tx, rx) = mpsc::channel(4);
        tx.send(Chunk::Part(Bytes::from_static(b"half")))
            .await
            .unwrap();
        drop(tx);
        let r = store.put_stream("x/y", rx, &lock(1)).await;
        assert!(matches!(r, Err(StoreError::Aborted { .. })));
        assert!(store.list("").await.unwrap().is_empty());
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("x")).unwrap().collect();
        assert!(leftovers.is_empty(), "partial file removed");
    }

    #[tokio::test]
    async fn expired_objects_can_be_deleted_by_admin() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open("local", dir.path(), "").unwrap();
        store
            .put_small("k", Bytes::from_static(b"1"), &lock(-1))
            .await
            .unwrap();
        store.delete_version("k", None).await.unwrap();
        assert!(store.head("k").await.unwrap_err().is_not_found());
    }

    #[tokio::test]
    async fn keys_cannot_escape_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open("local", dir.path(), "").unwrap();
        for bad in ["../x", "/etc/passwd", "a/../../b", ".lifeboat-locks/x"] {
            assert!(
                store
                    .put_small(bad, Bytes::from_static(b"1"), &lock(1))
                    .await
                    .is_err(),
                "{bad}"
            );
        }
    }
}
