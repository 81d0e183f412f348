//! The decode chain, the exact reverse of encode: stored → [count+SHA-256] → age -d(identity) → zstd -d → [count+SHA-256] → sink.
//! Blocking; the caller runs it on a blocking thread with a `SyncIoBridge` over the store's async body.

use super::hash::{HashingReader, HashingWriter};
use super::PipelineError;
use std::io::{Read, Write};
use tokio_util::sync::CancellationToken;

const COPY_BUF: usize = 256 * 1024;

/// Sizes and checksums measured while decoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeReport {
    /// Stored bytes read.
    pub stored_bytes: u64,
    /// SHA-256 of the stored bytes, hex.
    pub stored_sha256: String,
    /// Payload bytes written to the sink.
    pub payload_bytes: u64,
    /// SHA-256 of the payload, hex.
    pub payload_sha256: String,
}

/// Decodes `age(zstd(payload))` from `src` into `sink` with any of `identities`.
pub fn decode<R: Read, W: Write>(
    src: R,
    identities: &[Box<dyn age::Identity + Send + Sync>],
    sink: W,
    cancel: &CancellationToken,
) -> Result<(DecodeReport, W), PipelineError> {
    let mut stored = HashingReader::new(src);
    let decryptor = age::Decryptor::new(&mut stored).map_err(PipelineError::Decrypt)?;
    let plain = decryptor
        .decrypt(identities.iter().map(|i| i.as_ref() as &dyn age::Identity))
        .map_err(|e| match e {
            age::DecryptError::NoMatchingKeys => PipelineError::NotForIdentity,
            other => PipelineError::Decrypt(other),
        })?;
    let mut zstd_reader = zstd::stream::read::Decoder::new(plain)
        .map_err(PipelineError::io("starting zstd decompression"))?;
    let mut payload = HashingWriter::new(sink);
    let mut buf = vec![0u8; COPY_BUF];
    loop {
        if cancel.is_cancelled() {
            return Err(PipelineError::Cancelled);
        }
        let n = match zstd_reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(PipelineError::io("decrypting and decompressing")(e)),
        };
        payload
            .write_all(&buf[..n])
            .map_err(PipelineError::io("writing the restored payload"))?;
    }
    // Drain anything after the zstd frame (there should be nothing) so the stored hash covers every byte.
    let mut plain = zstd_reader.finish();
    std::io::copy(&mut plain, &mut std::io::sink())
        .map_err(PipelineError::io("reading the end of the age stream"))?;
    drop(plain);
    std::io::copy(&mut stored, &mut std::io::sink())
        .map_err(PipelineError::io("reading the end of the stored object"))?;
    let (mut sink, payload_bytes, payload_sha256) = payload.finish();
    sink.flush()
        .map_err(PipelineError::io("flushing the restored payload"))?;
    let (stored_bytes, stored_sha256) = stored.finish();
    Ok((
        DecodeReport {
            stored_bytes,
            stored_sha256,
            payload_bytes,
            payload_sha256,
        },
        sink,
    ))
}

#[cfg(test)]
mod tests {
    use super::super::{encode, encode_to_vec, EncodeSettings};
    use super::*;
    use age::secrecy::ExposeSecret;

    fn key() -> (age::x25519::Identity, age::x25519::Recipient) {
        let id = age::x25519::Identity::generate();
        let r = id.to_public();
        (id, r)
    }

    #[test]
    fn round_trip_preserves_bytes_and_checksums_agree() {
        let (id, r) = key();
        let payload: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let (enc, stored) = encode(
            &payload[..],
            &[r],
            EncodeSettings::default(),
            Vec::new(),
            &CancellationToken::new(),
        )
        .unwrap();
        assert_eq!(enc.payload_bytes, payload.len() as u64);
        assert_eq!(enc.stored_bytes, stored.len() as u64);
        assert!(
            stored.len() < payload.len() / 10,
            "compressible data compresses"
        );
        let ids: Vec<Box<dyn age::Identity + Send + Sync>> = vec![Box::new(id)];
        let (dec, out) = decode(&stored[..], &ids, Vec::new(), &CancellationToken::new()).unwrap();
        assert_eq!(out, payload);
        assert_eq!(dec.payload_sha256, enc.payload_sha256);
        assert_eq!(dec.stored_sha256, enc.stored_sha256);
        assert_eq!(dec.stored_bytes, enc.stored_bytes);
    }

    #[test]
    fn every_recipient_can_decrypt_and_others_cannot() {
        let (id1, r1) = key();
        let (id2, r2) = key();
        let (id3, _) = key();
        let (_, stored) = encode_to_vec(
            b"hello",
            &[r1, r2],
            EncodeSettings {
                level: 1,
                threads: 2,
            },
        )
        .unwrap();
        for id in [id1, id2] {
            let ids: Vec<Box<dyn age::Identity + Send + Sync>> = vec![Box::new(id)];
            let (_, out) =
                decode(&stored[..], &ids, Vec::new(), &CancellationToken::new()).unwrap();
            assert_eq!(out, b"hello");
        }
        let ids: Vec<Box<dyn age::Identity + Send + Sync>> = vec![Box::new(id3)];
        assert!(matches!(
            decode(&stored[..], &ids, Vec::new(), &CancellationToken::new()),
            Err(PipelineError::NotForIdentity)
        ));
    }

    #[test]
    fn tampered_ciphertext_is_refused() {
        let (id, r) = key();
        let (_, mut stored) =
            encode_to_vec(&[1u8; 100_000], &[r], EncodeSettings::default()).unwrap();
        let last = stored.len() - 20;
        stored[last] ^= 0x55;
        let ids: Vec<Box<dyn age::Identity + Send + Sync>> = vec![Box::new(id)];
        assert!(decode(&stored[..], &ids, Vec::new(), &CancellationToken::new()).is_err());
    }

    #[test]
    fn identity_text_is_not_in_encoded_output() {
        let (id, r) = key();
        let secret = id.to_string();
        let (_, stored) = encode_to_vec(b"x", &[r], EncodeSettings::default()).unwrap();
        let text = String::from_utf8_lossy(&stored);
        assert!(!text.contains(secret.expose_secret()));
    }
}
