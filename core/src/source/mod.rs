//! Sources turn a job into named byte streams: pg_dump per database plus globals, pg_basebackup of a cluster, or a
//! directory as tar. They stream without temporary files and report exit status, errors and catalog data.

mod any;
pub mod archive;
pub mod conn;
mod pgtools;
mod physical;
mod postgres;
mod process;
mod tls;
mod volume;

pub use any::AnySource;
pub use conn::ConnParams;
pub use pgtools::{find_pg_tools, PgTools};
pub use physical::{PhysicalSource, CLUSTER_OBJECT};
pub use postgres::{quote_ident, PostgresSource};
pub use process::{capture_small, ChildStream};
pub use volume::{VolumeSource, VOLUME_OBJECT};

use crate::snapshot::{CatalogDatabase, ObjectKind, SourceIdentity};
use futures::future::BoxFuture;
use std::future::Future;
use std::pin::Pin;
use tokio::io::AsyncRead;

/// One stream a source will produce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSpec {
    /// Object name inside the snapshot (key-safe), e.g. `app.dump`.
    pub name: String,
    /// What the payload is.
    pub kind: ObjectKind,
    /// Database, for per-database streams.
    pub database: Option<String>,
}

/// What the source will produce and what it is.
#[derive(Debug, Clone)]
pub struct SourcePlan {
    /// Identity for the manifest (no credentials).
    pub identity: SourceIdentity,
    /// Streams in order.
    pub streams: Vec<StreamSpec>,
}

/// Facts a stream reports once it has finished cleanly.
#[derive(Debug, Clone, Default)]
pub struct StreamMeta {
    /// Row counts of the databases in the stream: a logical dump's, taken in the dump's own snapshot; a physical
    /// backup's, taken at its start.
    pub catalog: Vec<CatalogDatabase>,
    /// Counts, warnings and per-file digests of a volume stream.
    pub volume: Option<VolumeMeta>,
}

/// What a volume stream reports when it has finished.
#[derive(Debug, Clone, Default)]
pub struct VolumeMeta {
    /// Counts and warnings for the manifest.
    pub summary: crate::snapshot::VolumeSummary,
    /// Per-file SHA-256 for the encrypted catalog.
    pub files: Vec<crate::snapshot::CatalogFile>,
}

/// An open stream: read `reader` to the end, then await `finish` to learn whether the producer succeeded.
/// Dropping it without finishing kills the producer.
pub struct OpenStream {
    /// The payload bytes.
    pub reader: Pin<Box<dyn AsyncRead + Send>>,
    /// Reaps the producer; a non-zero exit or an error on stderr is a [`SourceError`].
    pub finish: BoxFuture<'static, Result<StreamMeta, SourceError>>,
}

/// Why a source failed.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// Connecting to or querying the database failed.
    #[error("{context}: {message}")]
    Database {
        /// What was being done.
        context: String,
        /// The server's or driver's message.
        message: String,
    },
    /// A configured database does not exist or does not accept connections.
    #[error("database {name:?} does not exist on {server} (or does not allow connections); existing databases: {existing}; fix `databases` in the job")]
    NoSuchDatabase {
        /// Requested name.
        name: String,
        /// Server description.
        server: String,
        /// Names that exist.
        existing: String,
    },
    /// No suitable client binary was found.
    #[error("{0}")]
    Tools(String),
    /// A child process could not be started.
    #[error("cannot start {program}: {reason}")]
    Spawn {
        /// Program path.
        program: String,
        /// OS error.
        reason: String,
    },
    /// A child process failed (non-zero exit, killed, or errors on stderr).
    #[error("{program} failed ({status}): {stderr}")]
    ChildFailed {
        /// Program name.
        program: String,
        /// Exit status description.
        status: String,
        /// The relevant stderr lines.
        stderr: String,
    },
    /// The connection settings are unusable.
    #[error("{0}")]
    Config(String),
    /// A secret reference did not resolve.
    #[error(transparent)]
    Secret(#[from] crate::secret::SecretError),
}

/// A producer of snapshot streams.
pub trait Source: Send + Sync {
    /// Connects, checks and plans the streams (no data read yet).
    fn prepare(&mut self) -> impl Future<Output = Result<SourcePlan, SourceError>> + Send;

    /// Starts producing one planned stream.
    fn open(
        &self,
        spec: &StreamSpec,
    ) -> impl Future<Output = Result<OpenStream, SourceError>> + Send;
}

/// A key-safe object name for a database dump: `[A-Za-z0-9._-]` kept, everything else percent-encoded.
pub fn dump_object_name(database: &str) -> String {
    let mut out = String::new();
    for b in database.bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || (b == b'.' && !out.is_empty()) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    format!("{out}.dump")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dump_names_are_key_safe() {
        assert_eq!(dump_object_name("app"), "app.dump");
        assert_eq!(dump_object_name("my db/x"), "my%20db%2Fx.dump");
        assert_eq!(dump_object_name(".."), "%2E..dump");
        assert_eq!(dump_object_name("données"), "donn%C3%A9es.dump");
    }
}
