//! The on-store snapshot format: ids, object keys, `manifest.json` and the encrypted catalog.
//! This format is stable: every version ever written must stay readable, so fields are only ever added.

mod catalog;
mod id;
mod layout;
mod manifest;

pub use catalog::{Catalog, CatalogDatabase, CatalogFile, CatalogTable};
pub use id::{SnapshotId, SnapshotIdError};
pub use layout::{
    manifest_key, object_key, snapshot_prefix, SnapshotRef, MANIFEST_NAME, SNAPSHOTS_DIR,
};
pub use manifest::{
    FormatError, LockInfo, Manifest, ObjectEntry, ObjectKind, SourceIdentity, VolumeSummary,
    FORMAT_VERSION,
};
