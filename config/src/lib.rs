//! Lifeboat's TOML configuration: parsing and pure validation into typed, already-checked values.
//! Reads one file and nothing else: secrets stay references ([`SecretRef`]) and are resolved by the binaries.
//!
//! [`load`] (or [`parse`]) returns either a complete [`Config`] or [`ConfigErrors`] listing *every* problem
//! found, each with the file, line, dotted key and a hint. Error messages never repeat secret values (a password
//! in a URL, an age secret key pasted as a recipient, a value typed into the wrong key).
//!
//! Every key is documented in `docs/configuration.md`; a test keeps that page and the schema in step.
//!
//! ```
//! let text = r#"
//! [stores.local]
//! kind = "fs"
//! path = "/var/backups/lifeboat"
//! lock_mode = "none"
//!
//! [encryption]
//! recipients = ["age1t7rxyev2z3rw82stdlrrepyc39nvn86l5078zqkf5uasdy86jp6svpy7pa"]
//!
//! [jobs.app]
//! kind = "postgres"
//! url = "postgres://backup@localhost/app"
//! schedule = "0 3 * * *"
//! store = "local"
//! "#;
//! let config = lifeboat_config::parse(text, "example.toml", std::path::Path::new("/etc/lifeboat")).unwrap();
//! assert_eq!(config.jobs["app"].stores, ["local"]);
//! ```

mod document;
mod error;
mod raw;
mod types;
mod validate;
mod values;

use std::path::Path;

pub use error::{ConfigError, ConfigErrors, ScheduleError};
pub use types::{
    AgeRecipient, CompressionConfig, Config, DaemonConfig, Databases, DrillConfig,
    EncryptionConfig, FsConfig, Hooks, JobConfig, JobDrill, LockConfig, LockMode, PostgresJob,
    Retention, RunPolicy, S3Config, Schedule, SecretRef, SigningPublicKey, SourceConfig,
    StoreConfig, StoreKind, VolumeJob, DEFAULT_PART_SIZE, MAX_PART_SIZE, MAX_RETRY_BACKOFF,
    MIN_PART_SIZE,
};

use error::Diagnostics;

/// Reads and validates the configuration file at `path`.
///
/// Relative paths inside the file are resolved against the file's directory. This is the crate's only I/O.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        let hint = (e.kind() == std::io::ErrorKind::NotFound)
            .then(|| "pass --config PATH or set LIFEBOAT_CONFIG".to_owned());
        ConfigErrors(vec![ConfigError {
            origin: origin.clone(),
            line: None,
            key: String::new(),
            message: format!("cannot read the configuration file: {e}"),
            hint,
        }])
    })?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    parse(&text, &origin, &dir)
}

/// Parses and validates configuration text.
///
/// `origin` names the text in errors (usually the file path) and becomes [`Config::origin`]; relative paths in the
/// text are resolved against `base_dir`.
pub fn parse(text: &str, origin: &str, base_dir: &Path) -> Result<Config, ConfigErrors> {
    let mut diag = Diagnostics::new(origin, text);
    let config = document::split(text, &mut diag)
        .and_then(|doc| validate::validate(doc, origin, base_dir, &mut diag));
    match config {
        Some(config) if diag.is_empty() => Ok(config),
        _ => {
            if diag.is_empty() {
                // Unreachable in practice: validation returns no config only after reporting why.
                diag.push("", None, "the configuration is incomplete", None);
            }
            Err(diag.into_errors())
        }
    }
}

#[cfg(test)]
mod tests;
