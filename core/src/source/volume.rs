//! The `volume` source: one directory tree as one tar stream (`volume.tar`), produced on a blocking thread by
//! `archive::write_archive` straight into the pipeline through an in-memory pipe — no temporary file.

use super::archive::{write_archive, ArchiveError, ArchiveOptions};
use super::{OpenStream, Source, SourceError, SourcePlan, StreamMeta, StreamSpec, VolumeMeta};
use crate::snapshot::{CatalogFile, ObjectKind, SourceIdentity, VolumeSummary};
use lifeboat_config::VolumeJob;
use tokio_util::io::SyncIoBridge;
use tokio_util::sync::{CancellationToken, DropGuard};

/// Name of the one object a volume snapshot holds.
pub const VOLUME_OBJECT: &str = "volume.tar";
/// Bytes buffered between the archive thread and the encoder.
const PIPE_BYTES: usize = 1 << 20;

/// A directory to archive.
pub struct VolumeSource {
    job: String,
    cfg: VolumeJob,
}

impl VolumeSource {
    /// A source for `cfg`, the volume job `job`.
    pub fn new(job: &str, cfg: &VolumeJob) -> Self {
        Self {
            job: job.to_owned(),
            cfg: cfg.clone(),
        }
    }
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_owned())
        .unwrap_or_default()
}

impl Source for VolumeSource {
    async fn prepare(&mut self) -> Result<SourcePlan, SourceError> {
        let path = &self.cfg.path;
        match tokio::fs::metadata(path).await {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(SourceError::Config(format!(
                    "jobs.{}.path {} is not a directory; point it at the directory to back up",
                    self.job,
                    path.display()
                )))
            }
            Err(e) => {
                return Err(SourceError::Config(format!(
                    "jobs.{}.path {} cannot be read ({e}); check that the volume is mounted and readable by lifeboatd",
                    self.job,
                    path.display()
                )))
            }
        }
        Ok(SourcePlan {
            identity: SourceIdentity {
                kind: "volume".to_owned(),
                host: host_name(),
                port: 0,
                user: String::new(),
                databases: Vec::new(),
                server_version: String::new(),
                tools: vec![format!("lifeboat {} (tar)", crate::VERSION)],
                path: Some(path.display().to_string()),
                superuser: None,
            },
            streams: vec![StreamSpec {
                name: VOLUME_OBJECT.to_owned(),
                kind: ObjectKind::Tar,
                database: None,
            }],
        })
    }

    async fn open(&self, spec: &StreamSpec) -> Result<OpenStream, SourceError> {
        if spec.kind != ObjectKind::Tar {
            return Err(SourceError::Config(format!(
                "a volume source has no stream {:?}",
                spec.name
            )));
        }
        let options = ArchiveOptions {
            root: self.cfg.path.clone(),
            exclude: self.cfg.exclude.clone(),
            one_file_system: self.cfg.one_file_system,
            ignore_unreadable: self.cfg.ignore_unreadable,
        };
        let (reader, writer) = tokio::io::duplex(PIPE_BYTES);
        let cancel = CancellationToken::new();
        // Dropping the stream unfinished (a failed upload, a cancelled run) stops the archive thread.
        let guard: DropGuard = cancel.clone().drop_guard();
        let job = self.job.clone();
        let producer = tokio::task::spawn_blocking(move || {
            write_archive(&options, SyncIoBridge::new(writer), &cancel).map(|(report, mut out)| {
                // Flush and close the pipe so the reader sees the end of the stream.
                let _flushed = std::io::Write::flush(&mut out);
                drop(out);
                report
            })
        });
        let finish = Box::pin(async move {
            let result = producer.await;
            drop(guard);
            let report = match result {
                Ok(Ok(report)) => report,
                Ok(Err(e)) => return Err(archive_error(&job, e)),
                Err(e) => {
                    return Err(SourceError::Config(format!(
                        "the archive thread of job {job} failed: {e}"
                    )))
                }
            };
            Ok(StreamMeta {
                catalog: Vec::new(),
                volume: Some(VolumeMeta {
                    summary: VolumeSummary {
                        entries: report.entries,
                        files: report.files,
                        bytes: report.bytes,
                        changed: report.changed,
                        vanished: report.vanished,
                        unreadable: report.unreadable,
                    },
                    files: report
                        .digests
                        .into_iter()
                        .map(|d| CatalogFile {
                            path: d.path,
                            size: d.size,
                            sha256: d.sha256,
                        })
                        .collect(),
                }),
            })
        });
        Ok(OpenStream {
            reader: Box::pin(reader),
            finish,
        })
    }
}

fn archive_error(job: &str, e: ArchiveError) -> SourceError {
    SourceError::Config(format!("archiving the volume of job {job} failed: {e}"))
}
