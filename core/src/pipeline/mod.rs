//! The only code that transforms bytes: `payload → zstd → age → stored` on the way out and the reverse on the way in.
//! Every stage is a blocking `std::io` adapter run off the async threads; `bridge` is the one blocking↔async boundary.

mod bridge;
mod decode;
mod encode;
mod hash;

pub use bridge::{Chunk, PartReceiver, PartSender, PartWriter, MAX_PART_SIZE, MIN_PART_SIZE};
pub use decode::{decode, DecodeReport};
pub use encode::{encode, encode_to_vec, EncodeReport, EncodeSettings};
pub use hash::{HashingReader, HashingWriter};

/// Why encoding or decoding failed.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// Reading the source or writing the sink failed.
    #[error("{context}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The age encryptor could not be built (e.g. no recipients).
    #[error("cannot encrypt to the configured recipients")]
    Encrypt(#[source] age::EncryptError),
    /// The stored stream is not encrypted to any of the given identities.
    #[error("not encrypted to this identity: none of the identity file's keys is a recipient of the object (the manifest's `recipients` lists the public keys it was encrypted to)")]
    NotForIdentity,
    /// The stored stream is not a valid age file, or its decryption failed.
    #[error("cannot decrypt the stored object: {0}")]
    Decrypt(#[source] age::DecryptError),
    /// A checksum did not match the manifest.
    #[error("{what} SHA-256 mismatch: manifest says {expected}, data has {actual}")]
    ChecksumMismatch {
        /// `stored` or `payload`.
        what: &'static str,
        /// From the manifest.
        expected: String,
        /// Computed.
        actual: String,
    },
    /// A size did not match the manifest.
    #[error("{what} size mismatch: manifest says {expected} bytes, data has {actual}")]
    SizeMismatch {
        /// `stored` or `payload`.
        what: &'static str,
        /// From the manifest.
        expected: u64,
        /// Counted.
        actual: u64,
    },
    /// The operation was cancelled.
    #[error("cancelled")]
    Cancelled,
}

impl PipelineError {
    pub(crate) fn io(context: &'static str) -> impl FnOnce(std::io::Error) -> PipelineError {
        move |source| PipelineError::Io { context, source }
    }
}
