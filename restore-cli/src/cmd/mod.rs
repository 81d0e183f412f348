//! One module per `lifeboat` subcommand, plus the shared error type and store selection.
//! Each maps arguments to `lifeboat-core` calls and results to human or `--json` output.

pub mod copy;
pub mod doctor;
pub mod drill;
pub mod keygen;
pub mod prune;
pub mod report;
pub mod restore;
pub mod snapshots;
pub mod store;
pub mod verify;

use lifeboat_config::{Config, StoreConfig};
use lifeboat_core::snapshot::TrustedKeys;
use lifeboat_core::store::AnyStore;
use std::fmt;
use std::path::Path;

/// A failed command: its message and exit code.
#[derive(Debug)]
pub enum CliError {
    /// Usage or configuration error (exit 2).
    Usage(String),
    /// The operation failed (exit 1).
    Failed(String),
}

impl CliError {
    /// The documented exit code.
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Usage(_) => crate::EXIT_USAGE,
            CliError::Failed(_) => crate::EXIT_FAILED,
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Usage(m) | CliError::Failed(m) => f.write_str(m),
        }
    }
}

/// Loads and validates the config (errors are usage errors).
pub fn load_config(path: &Path) -> Result<Config, CliError> {
    lifeboat_config::load(path).map_err(|e| CliError::Usage(format!("invalid configuration:\n{e}")))
}

/// Picks the store: `--store`, else the job's (first) store, else the only configured store.
pub fn select_store<'c>(
    config: &'c Config,
    store: Option<&str>,
    job: Option<&str>,
) -> Result<&'c StoreConfig, CliError> {
    let names = || config.stores.keys().cloned().collect::<Vec<_>>().join(", ");
    if let Some(name) = store {
        return config.stores.get(name).ok_or_else(|| {
            CliError::Usage(format!(
                "no store named {name:?} in the config; stores: {}",
                names()
            ))
        });
    }
    if let Some(job) = job.and_then(|j| config.jobs.get(j)) {
        if let Some(s) = config.stores.get(job.primary_store()) {
            return Ok(s);
        }
    }
    let mut all = config.stores.values();
    match (all.next(), all.next()) {
        (Some(only), None) => Ok(only),
        (None, _) => Err(CliError::Usage(
            "the config defines no [stores.NAME]".to_owned(),
        )),
        _ => Err(CliError::Usage(format!(
            "several stores are configured ({}); choose one with --store",
            names()
        ))),
    }
}

/// Builds the selected store.
pub async fn open_store(cfg: &StoreConfig) -> Result<AnyStore, CliError> {
    AnyStore::build(cfg)
        .await
        .map_err(|e| CliError::Usage(format!("stores.{}: {e}", cfg.name)))
}

/// The manifest-signing keys this config trusts: `[encryption] signing_public_keys`, plus the public half of
/// `signing_key_*` when it is readable here.
pub fn trusted_keys(config: &Config) -> Result<TrustedKeys, CliError> {
    TrustedKeys::from_config(&config.encryption).map_err(|e| CliError::Usage(e.to_string()))
}
