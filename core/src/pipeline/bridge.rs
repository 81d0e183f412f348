//! The single blocking→async boundary of the write path: `PartWriter` cuts the encoded stream into parts
//! and hands them to the async uploader over a bounded channel, so memory stays at part size × capacity.

use bytes::{Bytes, BytesMut};
use std::io::{self, Write};
use tokio::sync::mpsc;

/// S3's smallest allowed part (all but the last).
pub const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
/// S3's largest allowed part.
pub const MAX_PART_SIZE: u64 = 5 * 1024 * 1024 * 1024;
/// Parts per size step: the part size doubles every this many parts, so a stream of unknown
/// length can reach S3's 5 TiB object limit within 10,000 parts.
const PARTS_PER_STEP: u32 = 1000;

/// A message from the encoder to the uploader (cloned cheaply for each store of a fan-out).
#[derive(Debug, Clone)]
pub enum Chunk {
    /// The next part, in order.
    Part(Bytes),
    /// Every part has been sent and the source finished cleanly: the upload may be completed.
    /// If the channel closes without this, the upload must be aborted.
    Commit,
}

/// Sending half (encoder side).
pub type PartSender = mpsc::Sender<Chunk>;
/// Receiving half (store side).
pub type PartReceiver = mpsc::Receiver<Chunk>;

/// A blocking `Write` that buffers up to the current part size and sends full parts on the channel.
pub struct PartWriter {
    tx: PartSender,
    buf: BytesMut,
    base_part_size: u64,
    parts_sent: u32,
}

impl PartWriter {
    /// A writer sending parts of `part_size` bytes (growing after every 1,000 parts) on `tx`.
    pub fn new(tx: PartSender, part_size: u64) -> Self {
        let part_size = part_size.clamp(1, MAX_PART_SIZE);
        PartWriter {
            tx,
            buf: BytesMut::new(),
            base_part_size: part_size,
            parts_sent: 0,
        }
    }

    fn current_part_size(&self) -> usize {
        let steps = (self.parts_sent / PARTS_PER_STEP).min(20);
        let size = self
            .base_part_size
            .saturating_mul(1u64 << steps)
            .min(MAX_PART_SIZE);
        usize::try_from(size).unwrap_or(usize::MAX)
    }

    fn send_part(&mut self) -> io::Result<()> {
        let part = self.buf.split().freeze();
        self.tx.blocking_send(Chunk::Part(part)).map_err(|_| {
            io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the store stopped accepting parts",
            )
        })?;
        self.parts_sent += 1;
        Ok(())
    }

    /// Sends the last (possibly short) part and returns the sender, so the caller can
    /// [`Chunk::Commit`] once it knows the source finished cleanly.
    pub fn finish(mut self) -> io::Result<PartSender> {
        if !self.buf.is_empty() || self.parts_sent == 0 {
            self.send_part()?;
        }
        Ok(self.tx)
    }
}

impl Write for PartWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let part_size = self.current_part_size();
        if self.buf.capacity() == 0 {
            self.buf.reserve(part_size);
        }
        let room = part_size - self.buf.len();
        let n = room.min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() >= part_size {
            self.send_part()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_parts_of_the_configured_size_and_sends_the_tail() {
        let (tx, mut rx) = mpsc::channel(100);
        let mut w = PartWriter::new(tx, 10);
        w.write_all(&[7u8; 25]).unwrap();
        let _tx = w.finish().unwrap();
        let mut sizes = vec![];
        while let Ok(Chunk::Part(p)) = rx.try_recv() {
            sizes.push(p.len());
        }
        assert_eq!(sizes, vec![10, 10, 5]);
    }

    #[test]
    fn part_size_doubles_every_thousand_parts() {
        let (tx, _rx) = mpsc::channel(1);
        let mut w = PartWriter::new(tx, MIN_PART_SIZE);
        assert_eq!(w.current_part_size() as u64, MIN_PART_SIZE);
        w.parts_sent = 1000;
        assert_eq!(w.current_part_size() as u64, 2 * MIN_PART_SIZE);
        w.parts_sent = 9999;
        assert_eq!(w.current_part_size() as u64, 512 * MIN_PART_SIZE);
        // With the default 16 MiB first part, 10,000 parts reach beyond S3's 5 TiB object limit.
        let total: u64 = (0..10_000u64)
            .map(|i| ((16 << 20) << (i / 1000)).min(MAX_PART_SIZE))
            .sum();
        assert!(total >= 5 * 1024 * 1024 * 1024 * 1024);
    }

    #[test]
    fn a_closed_receiver_is_a_broken_pipe() {
        let (tx, rx) = mpsc::channel(1);
        drop(rx);
        let mut w = PartWriter::new(tx, 4);
        let err = w.write_all(&[0u8; 8]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
    }
}
