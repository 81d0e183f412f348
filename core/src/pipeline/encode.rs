//! The encode chain, in one fixed order: payload → [count+SHA-256] → zstd → age(recipients) → [count+SHA-256] → sink.
//! Blocking; the caller runs it on a blocking thread and passes a `PartWriter` (or a `Vec`) as the sink.

use super::hash::HashingWriter;
use super::PipelineError;
use std::io::{Read, Write};
use tokio_util::sync::CancellationToken;

const READ_BUF: usize = 256 * 1024;
/// Bytes of input per zstd worker job when compressing with worker threads.
const ZSTD_JOB_SIZE: u32 = 2 * 1024 * 1024;

/// Compression settings of the chain.
#[derive(Debug, Clone, Copy)]
pub struct EncodeSettings {
    /// zstd level (1..=19).
    pub level: i32,
    /// zstd worker threads; 0 compresses on the calling thread.
    pub threads: u32,
}

impl Default for EncodeSettings {
    fn default() -> Self {
        EncodeSettings {
            level: 3,
            threads: 1,
        }
    }
}

/// Sizes and checksums of one encoded stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodeReport {
    /// Bytes read from the source.
    pub payload_bytes: u64,
    /// SHA-256 of the payload, hex.
    pub payload_sha256: String,
    /// Bytes written to the sink.
    pub stored_bytes: u64,
    /// SHA-256 of the stored bytes, hex.
    pub stored_sha256: String,
}

/// Encodes `src` into `sink` as `age(zstd(payload))`, returning the report and the sink.
///
/// Stops with [`PipelineError::Cancelled`] when `cancel` fires (checked between reads).
pub fn encode<R: Read, W: Write>(
    mut src: R,
    recipients: &[age::x25519::Recipient],
    settings: EncodeSettings,
    sink: W,
    cancel: &CancellationToken,
) -> Result<(EncodeReport, W), PipelineError> {
    let stored = HashingWriter::new(sink);
    let encryptor =
        age::Encryptor::with_recipients(recipients.iter().map(|r| r as &dyn age::Recipient))
            .map_err(PipelineError::Encrypt)?;
    let age_writer = encryptor
        .wrap_output(stored)
        .map_err(PipelineError::io("starting the age stream"))?;
    let mut zstd_writer = zstd::stream::write::Encoder::new(age_writer, settings.level)
        .map_err(PipelineError::io("starting zstd"))?;
    zstd_writer
        .include_checksum(true)
        .map_err(PipelineError::io("configuring zstd"))?;
    if settings.threads > 0 {
        zstd_writer
            .multithread(settings.threads)
            .map_err(PipelineError::io("configuring zstd worker threads"))?;
        // Smaller jobs than zstd's default (8 MiB at level 3) keep the workers' buffers, and so RSS, small.
        zstd_writer
            .set_parameter(zstd::stream::raw::CParameter::JobSize(ZSTD_JOB_SIZE))
            .map_err(PipelineError::io("configuring the zstd job size"))?;
    }
    let mut payload = HashingWriter::new(zstd_writer);

    let mut buf = vec![0u8; READ_BUF];
    loop {
        if cancel.is_cancelled() {
            return Err(PipelineError::Cancelled);
        }
        let n = match src.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(PipelineError::io("reading the source")(e)),
        };
        payload
            .write_all(&buf[..n])
            .map_err(PipelineError::io("writing to the store"))?;
    }

    let (zstd_writer, payload_bytes, payload_sha256) = payload.finish();
    let age_writer = zstd_writer
        .finish()
        .map_err(PipelineError::io("finishing the zstd frame"))?;
    let stored = age_writer
        .finish()
        .map_err(PipelineError::io("finishing the age stream"))?;
    let (sink, stored_bytes, stored_sha256) = stored.finish();
    Ok((
        EncodeReport {
            payload_bytes,
            payload_sha256,
            stored_bytes,
            stored_sha256,
        },
        sink,
    ))
}

/// Encodes a small in-memory payload (e.g. the catalog) into a `Vec`.
pub fn encode_to_vec(
    payload: &[u8],
    recipients: &[age::x25519::Recipient],
    settings: EncodeSettings,
) -> Result<(EncodeReport, Vec<u8>), PipelineError> {
    encode(
        payload,
        recipients,
        settings,
        Vec::new(),
        &CancellationToken::new(),
    )
}
