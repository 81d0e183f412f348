//! The on-store snapshot format: ids, object keys, `manifest.json` (and its signature) and the encrypted catalog.
//! This format is stable: every version ever written must stay readable, so fields are only ever added.

mod catalog;
mod id;
mod layout;
mod manifest;
mod signature;

pub use catalog::{Catalog, CatalogDatabase, CatalogFile, CatalogTable};
pub use id::{SnapshotId, SnapshotIdError};
pub use layout::{
    manifest_key, object_key, signature_key, snapshot_prefix, SnapshotRef, MANIFEST_NAME,
    SIGNATURE_NAME, SNAPSHOTS_DIR,
};
pub use manifest::{
    FormatError, LockInfo, Manifest, ObjectEntry, ObjectKind, SourceIdentity, VolumeSummary,
    FORMAT_VERSION,
};
pub use signature::{
    ManifestSigner, SignatureStatus, SigningKeyError, TrustedKeys, PUBLIC_KEY_PREFIX, SIGNATURE_LEN,
};
