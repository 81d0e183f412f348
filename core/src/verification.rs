//! Verification records: the proof, stored next to the snapshots, that a snapshot was verified or drilled.
//! `verifications/<job>/<snapshot-id>/<YYYYMMDDTHHMMSS.mmmZ>.json`, written once under Object Lock, read by the daemon.

use crate::snapshot::{SnapshotId, SnapshotRef};
use crate::store::{ReadStore, StoreError};
use chrono::{DateTime, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};

/// Top-level directory of verification records.
pub const VERIFICATIONS_DIR: &str = "verifications/";
/// Format version written by this build.
pub const RECORD_FORMAT_VERSION: u32 = 1;
const STAMP_FORMAT: &str = "%Y%m%dT%H%M%S%.3fZ";
/// Records are small; anything larger is not one of ours.
const MAX_RECORD_BYTES: u64 = 4 * 1024 * 1024;
/// How many of a job's newest records are read looking for a passed one.
const MAX_RECORDS_SCANNED: usize = 64;

/// What produced a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordKind {
    /// `lifeboat verify`: stored checksums and locks, optionally a full decode.
    Verify,
    /// `lifeboat drill`: a test restore into a throw-away PostgreSQL with data checks.
    Drill,
}

/// One check of a verification, as reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckResult {
    /// What was checked, e.g. `object app.dump sha256`.
    pub name: String,
    /// Whether it held.
    pub passed: bool,
    /// Details: the expected and found values, or why it failed.
    #[serde(default)]
    pub detail: String,
}

/// A verification record (`verifications/<job>/<snapshot-id>/<timestamp>.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerificationRecord {
    /// Format version ([`RECORD_FORMAT_VERSION`]).
    pub format_version: u32,
    /// Verify or drill.
    pub kind: RecordKind,
    /// The job of the verified snapshot.
    pub job: String,
    /// The verified snapshot.
    pub snapshot_id: SnapshotId,
    /// When the verification started.
    pub started_at: DateTime<Utc>,
    /// When it ended; also the record's key timestamp.
    pub finished_at: DateTime<Utc>,
    /// True only if every check passed.
    pub passed: bool,
    /// Every check made.
    pub checks: Vec<CheckResult>,
    /// Wall time of the test restore (drills): the job's measured RTO.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_seconds: Option<f64>,
    /// Age of the snapshot when it was verified: the RPO at that moment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_age_seconds: Option<f64>,
    /// Lifeboat version that made the record.
    pub lifeboat_version: String,
}

impl VerificationRecord {
    /// The record's key (relative to the store prefix).
    pub fn key(&self) -> String {
        record_key(&self.job, &self.snapshot_id, self.finished_at)
    }

    /// Parses a record, refusing versions newer than this build understands.
    pub fn from_json(bytes: &[u8]) -> Result<Self, String> {
        let record: VerificationRecord =
            serde_json::from_slice(bytes).map_err(|e| format!("not a verification record: {e}"))?;
        if record.format_version > RECORD_FORMAT_VERSION {
            return Err(format!(
                "verification record format {} is newer than this build understands ({RECORD_FORMAT_VERSION})",
                record.format_version
            ));
        }
        Ok(record)
    }
}

/// `verifications/<job>/`.
pub fn job_records_prefix(job: &str) -> String {
    format!("{VERIFICATIONS_DIR}{job}/")
}

/// `verifications/<job>/<snapshot-id>/<YYYYMMDDTHHMMSS.mmmZ>.json`.
pub fn record_key(job: &str, snapshot: &SnapshotId, at: DateTime<Utc>) -> String {
    format!(
        "{}{snapshot}/{}.json",
        job_records_prefix(job),
        at.format(STAMP_FORMAT)
    )
}

/// A record key taken apart: which snapshot, and when the record was made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordKey {
    /// The verified snapshot.
    pub snapshot: SnapshotRef,
    /// The record's time.
    pub at: DateTime<Utc>,
    /// The key itself.
    pub key: String,
}

impl RecordKey {
    /// Recognises a record key; anything else under `verifications/` is ignored.
    pub fn parse(key: &str) -> Option<RecordKey> {
        let rest = key.strip_prefix(VERIFICATIONS_DIR)?;
        let mut parts = rest.split('/');
        let (job, id, file) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || job.is_empty() {
            return None;
        }
        let stamp = file.strip_suffix(".json")?;
        let at = NaiveDateTime::parse_from_str(stamp, STAMP_FORMAT)
            .ok()?
            .and_utc();
        Some(RecordKey {
            snapshot: SnapshotRef {
                job: job.to_owned(),
                id: id.parse().ok()?,
            },
            at,
            key: key.to_owned(),
        })
    }
}

/// What a job's verification records say, as the metrics need it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VerificationSummary {
    /// The newest record that passed.
    pub last_passed: Option<VerificationRecord>,
    /// The newest drill record with a measured restore time, passed or not.
    pub last_drill: Option<VerificationRecord>,
    /// The newest drill record of all, passed or not, with or without a restore time (a drill whose scratch
    /// cluster did not start measured none): whether the job's newest drill failed.
    pub newest_drill: Option<VerificationRecord>,
    /// Records that could not be read or parsed (reported, never counted).
    pub unreadable: Vec<String>,
}

/// Reads a job's newest verification records (newest first, at most 64) until a passed one is found.
pub async fn summarize<S: ReadStore>(
    store: &S,
    job: &str,
) -> Result<VerificationSummary, StoreError> {
    let mut keys: Vec<RecordKey> = store
        .list(&job_records_prefix(job))
        .await?
        .iter()
        .filter_map(|o| RecordKey::parse(&o.key))
        .filter(|k| k.snapshot.job == job)
        .collect();
    keys.sort_by(|a, b| b.at.cmp(&a.at).then_with(|| b.key.cmp(&a.key)));
    let mut summary = VerificationSummary::default();
    for key in keys.into_iter().take(MAX_RECORDS_SCANNED) {
        let record = match store.get_small(&key.key, MAX_RECORD_BYTES).await {
            Ok(bytes) => match VerificationRecord::from_json(&bytes) {
                Ok(r) if r.job == job && r.snapshot_id == key.snapshot.id => r,
                Ok(_) => {
                    summary
                        .unreadable
                        .push(format!("{}: names another snapshot", key.key));
                    continue;
                }
                Err(e) => {
                    summary.unreadable.push(format!("{}: {e}", key.key));
                    continue;
                }
            },
            Err(e) if e.is_not_found() => continue,
            Err(e) => return Err(e),
        };
        if summary.newest_drill.is_none() && record.kind == RecordKind::Drill {
            summary.newest_drill = Some(record.clone());
        }
        if summary.last_drill.is_none()
            && record.kind == RecordKind::Drill
            && record.restore_seconds.is_some()
        {
            summary.last_drill = Some(record.clone());
        }
        let passed = record.passed;
        if passed && summary.last_passed.is_none() {
            summary.last_passed = Some(record);
        }
        if summary.last_passed.is_some()
            && summary.last_drill.is_some()
            && summary.newest_drill.is_some()
        {
            break;
        }
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Timelike};

    #[test]
    fn record_keys_round_trip() {
        let id: SnapshotId = "20261126T011530Z-abcdef".parse().unwrap();
        let at = Utc.with_ymd_and_hms(2026, 11, 27, 4, 5, 6).unwrap()
            + chrono::Duration::milliseconds(789);
        let key = record_key("main-db", &id, at);
        assert_eq!(
            key,
            "verifications/main-db/20261126T011530Z-abcdef/20261127T040506.789Z.json"
        );
        let parsed = RecordKey::parse(&key).unwrap();
        assert_eq!(parsed.snapshot.job, "main-db");
        assert_eq!(parsed.snapshot.id, id);
        assert_eq!(parsed.at, at);
        assert!(RecordKey::parse("verifications/main-db/x/20261127T040506.789Z.json").is_none());
        assert!(
            RecordKey::parse("verifications/main-db/20261126T011530Z-abcdef/a/b.json").is_none()
        );
        assert!(
            RecordKey::parse("snapshots/main-db/20261126T011530Z-abcdef/manifest.json").is_none()
        );
    }

    #[tokio::test]
    async fn the_summary_names_the_newest_drill_even_without_a_restore_time() {
        use crate::store::{FsStore, LockSpec, WriteStore};
        use lifeboat_config::LockMode;
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open("local", dir.path(), "").unwrap();
        let record = |kind, minute, passed, restore_seconds| VerificationRecord {
            format_version: RECORD_FORMAT_VERSION,
            kind,
            job: "db".into(),
            snapshot_id: "20261126T011530Z-abcdef".parse().unwrap(),
            started_at: Utc.with_ymd_and_hms(2026, 11, 27, 4, 0, 0).unwrap(),
            finished_at: Utc.with_ymd_and_hms(2026, 11, 27, 4, minute, 0).unwrap(),
            passed,
            checks: Vec::new(),
            restore_seconds,
            snapshot_age_seconds: None,
            lifeboat_version: crate::VERSION.into(),
        };
        let none = LockSpec {
            mode: LockMode::None,
            retain_until: None,
        };
        // Oldest first: a passed drill, a passed verify, then a drill whose scratch cluster never started.
        for r in [
            record(RecordKind::Drill, 1, true, Some(12.5)),
            record(RecordKind::Verify, 2, true, None),
            record(RecordKind::Drill, 3, false, None),
        ] {
            let body = bytes::Bytes::from(serde_json::to_vec(&r).unwrap());
            store.put_small(&r.key(), body, &none).await.unwrap();
        }
        let summary = summarize(&store, "db").await.unwrap();
        assert_eq!(summary.last_passed.unwrap().kind, RecordKind::Verify);
        assert_eq!(summary.last_drill.unwrap().restore_seconds, Some(12.5));
        let newest = summary.newest_drill.unwrap();
        assert!(!newest.passed);
        assert_eq!(newest.finished_at.minute(), 3);
    }

    #[test]
    fn records_parse_and_refuse_newer_formats() {
        let record = VerificationRecord {
            format_version: RECORD_FORMAT_VERSION,
            kind: RecordKind::Drill,
            job: "main-db".into(),
            snapshot_id: "20261126T011530Z-abcdef".parse().unwrap(),
            started_at: Utc.with_ymd_and_hms(2026, 11, 27, 4, 0, 0).unwrap(),
            finished_at: Utc.with_ymd_and_hms(2026, 11, 27, 4, 5, 6).unwrap(),
            passed: true,
            checks: vec![CheckResult {
                name: "row counts".into(),
                passed: true,
                detail: "12 tables".into(),
            }],
            restore_seconds: Some(12.5),
            snapshot_age_seconds: Some(3600.0),
            lifeboat_version: crate::VERSION.into(),
        };
        let json = serde_json::to_vec(&record).unwrap();
        assert_eq!(VerificationRecord::from_json(&json).unwrap(), record);
        let mut newer = record.clone();
        newer.format_version = RECORD_FORMAT_VERSION + 1;
        let json = serde_json::to_vec(&newer).unwrap();
        assert!(VerificationRecord::from_json(&json)
            .unwrap_err()
            .contains("newer"));
    }
}
