//! Resolution of secret references (`*_env`, `*_file`) into values, at the moment a store or source is built.
//! A `Secret` never prints its value: Debug and Display show `[redacted]`.

use lifeboat_config::SecretRef;
use std::fmt;

/// A secret value that refuses to be printed.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: String) -> Self {
        Secret(value)
    }

    /// The value, for handing to a client library. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Why a secret reference could not be resolved. Names the reference, never the value.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The environment variable is not set or empty.
    #[error("{what}: environment variable {var} is not set (or empty); export it, or use a *_file reference")]
    MissingEnv {
        /// Which secret.
        what: String,
        /// Variable name.
        var: String,
    },
    /// The file could not be read.
    #[error("{what}: cannot read secret file {path}: {reason}; check the path and that the service user may read it")]
    File {
        /// Which secret.
        what: String,
        /// File path.
        path: String,
        /// OS error.
        reason: String,
    },
}

/// Reads the secret a reference points to. Trailing newlines of files are removed.
pub fn resolve(what: &str, reference: &SecretRef) -> Result<Secret, SecretError> {
    match reference {
        SecretRef::Env(var) => match std::env::var(var) {
            Ok(v) if !v.is_empty() => Ok(Secret(v)),
            _ => Err(SecretError::MissingEnv {
                what: what.to_owned(),
                var: var.clone(),
            }),
        },
        SecretRef::File(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| SecretError::File {
                what: what.to_owned(),
                path: path.display().to_string(),
                reason: e.kind().to_string(),
            })?;
            Ok(Secret(text.trim_end_matches(['\n', '\r']).to_owned()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("hunter2".into());
        assert_eq!(format!("{s} {s:?}"), "[redacted] [redacted]");
    }

    #[test]
    fn file_secrets_lose_trailing_newline_and_errors_do_not_leak() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pw");
        std::fs::write(&p, "s3cr3t\n").unwrap();
        let s = resolve("password", &SecretRef::File(p)).unwrap();
        assert_eq!(s.expose(), "s3cr3t");
        let e = resolve(
            "password",
            &SecretRef::Env("LIFEBOAT_TEST_SURELY_UNSET".into()),
        )
        .unwrap_err();
        assert!(e.to_string().contains("LIFEBOAT_TEST_SURELY_UNSET"));
    }
}
