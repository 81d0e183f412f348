//! The catalog: per-database, per-table exact row counts taken inside the dump's own transaction snapshot.
//! It names tables, which are data, so it is stored encrypted like the dumps (`catalog.json.zst.age`).

use serde::{Deserialize, Serialize};

/// Row count of one table at dump time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogTable {
    /// Schema name.
    pub schema: String,
    /// Table name.
    pub name: String,
    /// Exact `count(*)` in the dump's snapshot.
    pub rows: i64,
}

/// One dumped database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogDatabase {
    /// Database name.
    pub name: String,
    /// The exported snapshot pg_dump ran in (`pg_export_snapshot()`).
    pub snapshot: String,
    /// Every user table (regular tables, partitions, materialized views).
    pub tables: Vec<CatalogTable>,
}

/// The encrypted catalog of a snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Catalog {
    /// Format version of the catalog.
    pub format_version: u32,
    /// One entry per dumped database.
    pub databases: Vec<CatalogDatabase>,
    /// SHA-256 of every regular file of a volume snapshot, as archived.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<CatalogFile>,
}

/// One regular file of a volume snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogFile {
    /// Path relative to the volume's root.
    pub path: String,
    /// Logical size in bytes.
    pub size: u64,
    /// SHA-256 of the content (holes read as zeros), hex.
    pub sha256: String,
}
