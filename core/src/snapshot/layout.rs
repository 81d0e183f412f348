//! Object-key layout of a snapshot inside a store (keys are relative to the store's prefix).
//! `snapshots/<job>/<snapshot-id>/manifest.json` and one `<name>.zst.age` object per stream.

use super::SnapshotId;
use std::fmt;

/// Top-level directory of snapshot objects.
pub const SNAPSHOTS_DIR: &str = "snapshots/";
/// File name of a snapshot's manifest, written last.
pub const MANIFEST_NAME: &str = "manifest.json";
/// File name of a manifest's Ed25519 signature (64 raw bytes over the exact bytes of `manifest.json`), written
/// just before the manifest.
pub const SIGNATURE_NAME: &str = "manifest.json.sig";

/// A snapshot of a job: the pair that locates it in a store.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SnapshotRef {
    /// Job name (a config key, safe as a path segment).
    pub job: String,
    /// Snapshot id.
    pub id: SnapshotId,
}

impl fmt::Display for SnapshotRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.job, self.id)
    }
}

/// `snapshots/<job>/<id>/`.
pub fn snapshot_prefix(job: &str, id: &SnapshotId) -> String {
    format!("{SNAPSHOTS_DIR}{job}/{id}/")
}

/// `snapshots/<job>/<id>/manifest.json`.
pub fn manifest_key(job: &str, id: &SnapshotId) -> String {
    format!("{}{MANIFEST_NAME}", snapshot_prefix(job, id))
}

/// `snapshots/<job>/<id>/manifest.json.sig`.
pub fn signature_key(job: &str, id: &SnapshotId) -> String {
    format!("{}{SIGNATURE_NAME}", snapshot_prefix(job, id))
}

/// `snapshots/<job>/<id>/<name>.zst.age`: the key of one encoded stream.
pub fn object_key(job: &str, id: &SnapshotId, name: &str) -> String {
    format!("{}{name}.zst.age", snapshot_prefix(job, id))
}

impl SnapshotRef {
    /// Recognises a manifest key (`snapshots/<job>/<id>/manifest.json`) and returns its snapshot.
    pub fn from_manifest_key(key: &str) -> Option<SnapshotRef> {
        let rest = key.strip_prefix(SNAPSHOTS_DIR)?;
        let rest = rest.strip_suffix(MANIFEST_NAME)?.strip_suffix('/')?;
        let (job, id) = rest.split_once('/')?;
        if job.is_empty() || job.contains('/') {
            return None;
        }
        Some(SnapshotRef {
            job: job.to_owned(),
            id: id.parse().ok()?,
        })
    }

    /// This snapshot's manifest key.
    pub fn manifest_key(&self) -> String {
        manifest_key(&self.job, &self.id)
    }

    /// This snapshot's manifest signature key.
    pub fn signature_key(&self) -> String {
        signature_key(&self.job, &self.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_keys_round_trip() {
        let id: SnapshotId = "20261126T011530Z-abcdef".parse().unwrap();
        let key = manifest_key("main-db", &id);
        assert_eq!(
            key,
            "snapshots/main-db/20261126T011530Z-abcdef/manifest.json"
        );
        let r = SnapshotRef::from_manifest_key(&key).unwrap();
        assert_eq!(r.job, "main-db");
        assert_eq!(r.id, id);
        assert!(SnapshotRef::from_manifest_key("snapshots/a/b/c/manifest.json").is_none());
        assert!(SnapshotRef::from_manifest_key(&object_key("j", &id, "app.dump")).is_none());
        assert_eq!(
            r.signature_key(),
            "snapshots/main-db/20261126T011530Z-abcdef/manifest.json.sig"
        );
        assert!(SnapshotRef::from_manifest_key(&r.signature_key()).is_none());
    }
}
