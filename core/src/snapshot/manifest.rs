//! `manifest.json`: the public, unencrypted description of a complete snapshot.
//! It holds sizes, checksums, locks and tool versions, and never table names, data or secrets.

use super::SnapshotId;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The manifest format version this build writes. Readers accept every version up to this one.
pub const FORMAT_VERSION: u32 = 1;

/// Why a manifest could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// Not valid JSON or missing fields.
    #[error("manifest is not valid: {0}")]
    Invalid(#[source] serde_json::Error),
    /// Written by a newer Lifeboat.
    #[error("manifest format version {found} is newer than this build supports ({supported}); upgrade lifeboat")]
    TooNew {
        /// Version found in the manifest.
        found: u32,
        /// Highest version this build reads.
        supported: u32,
    },
}

/// What an object of a snapshot holds (its payload, before compression and encryption).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ObjectKind {
    /// `pg_dump --format=custom` archive of one database.
    PgDumpCustom,
    /// `pg_dumpall --globals-only` SQL script (roles without passwords, tablespaces).
    GlobalsSql,
    /// The snapshot's catalog (JSON): per-table row counts taken at dump time, per-file SHA-256 of volumes.
    Catalog,
    /// A POSIX tar stream of a directory tree (PAX headers, GNU sparse entries).
    Tar,
}

/// Lock applied to a stored object, as read back from the store after upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockInfo {
    /// `COMPLIANCE`, `GOVERNANCE` or `NONE`.
    pub mode: String,
    /// The object may not be deleted or overwritten before this time.
    pub retain_until: Option<DateTime<Utc>>,
}

/// One stored object of the snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectEntry {
    /// Stream name, e.g. `app.dump`, `globals.sql`, `catalog.json`.
    pub name: String,
    /// Key relative to the store prefix.
    pub key: String,
    /// What the payload is.
    pub kind: ObjectKind,
    /// The database this object belongs to, for per-database dumps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// Bytes of the payload (before compression).
    pub payload_bytes: u64,
    /// SHA-256 of the payload, hex.
    pub payload_sha256: String,
    /// Bytes stored (`age(zstd(payload))`).
    pub stored_bytes: u64,
    /// SHA-256 of the stored bytes, hex.
    pub stored_sha256: String,
    /// The store's version id of the object, if the store versions objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_id: Option<String>,
    /// Lock as read back from the store.
    pub lock: LockInfo,
}

/// Identity of the backed-up source, without credentials.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceIdentity {
    /// Source kind: `postgres`.
    pub kind: String,
    /// Host name or socket directory of the server.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Connecting user (not a secret).
    pub user: String,
    /// Databases dumped.
    pub databases: Vec<String>,
    /// Server version, e.g. `15.18`.
    pub server_version: String,
    /// Tool versions, e.g. `pg_dump (PostgreSQL) 15.18`.
    pub tools: Vec<String>,
    /// The directory backed up (volume sources).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The cluster's bootstrap superuser (physical backups), which a restored copy is entered as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub superuser: Option<String>,
}

/// What a volume snapshot holds, and what happened while it was read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeSummary {
    /// Tar entries (directories, files, links…).
    pub entries: u64,
    /// Regular files.
    pub files: u64,
    /// Logical bytes of the regular files (holes included).
    pub bytes: u64,
    /// Files that changed while they were read: archived, but possibly torn.
    #[serde(default)]
    pub changed: Vec<String>,
    /// Entries that disappeared between listing and reading: not archived.
    #[serde(default)]
    pub vanished: Vec<String>,
    /// Entries skipped because they could not be read (`ignore_unreadable`), with the reason.
    #[serde(default)]
    pub unreadable: Vec<String>,
}

/// The manifest of a complete snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Format version ([`FORMAT_VERSION`] when written by this build).
    pub format_version: u32,
    /// Snapshot id.
    pub snapshot_id: SnapshotId,
    /// Job name.
    pub job: String,
    /// What was backed up.
    pub source: SourceIdentity,
    /// Lifeboat version that wrote the snapshot.
    pub lifeboat_version: String,
    /// When the backup started.
    pub started_at: DateTime<Utc>,
    /// When the last object was stored (the manifest is written after this).
    pub finished_at: DateTime<Utc>,
    /// Compression: always `zstd`.
    pub compression: String,
    /// Compression level used.
    pub compression_level: i32,
    /// Encryption: always `age`.
    pub encryption: String,
    /// Public keys (age recipients) every object is encrypted to.
    pub recipients: Vec<String>,
    /// Every stored object, including the catalog.
    pub objects: Vec<ObjectEntry>,
    /// Counts and warnings of a volume source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<VolumeSummary>,
}

impl Manifest {
    /// Parses a manifest, refusing versions newer than this build understands.
    pub fn from_json(bytes: &[u8]) -> Result<Manifest, FormatError> {
        #[derive(Deserialize)]
        struct VersionOnly {
            format_version: u32,
        }
        let v: VersionOnly = serde_json::from_slice(bytes).map_err(FormatError::Invalid)?;
        if v.format_version > FORMAT_VERSION {
            return Err(FormatError::TooNew {
                found: v.format_version,
                supported: FORMAT_VERSION,
            });
        }
        serde_json::from_slice(bytes).map_err(FormatError::Invalid)
    }

    /// Serialises the manifest (pretty JSON, stable field order).
    pub fn to_json(&self) -> Vec<u8> {
        // Serialising plain structs of strings and numbers cannot fail.
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }

    /// Total stored bytes over all objects.
    pub fn stored_bytes(&self) -> u64 {
        self.objects.iter().map(|o| o.stored_bytes).sum()
    }

    /// Total payload bytes over all objects.
    pub fn payload_bytes(&self) -> u64 {
        self.objects.iter().map(|o| o.payload_bytes).sum()
    }

    /// The object with this stream name.
    pub fn object(&self, name: &str) -> Option<&ObjectEntry> {
        self.objects.iter().find(|o| o.name == name)
    }
}
