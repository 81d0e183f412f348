//! What a store holds for a job, as the daemon's metrics and catch-up decisions need it: the newest complete
//! snapshot (its manifest) and a summary of its verification records. Read-only; the store is the truth.
//!
//! Only snapshots whose manifest signature verifies are counted when any signing key is trusted (so appending a
//! fake recent snapshot cannot make a stale job look fresh); with no trusted key at all (unsigned mode) every
//! readable manifest counts. Unverified snapshots are reported, never counted.

use crate::restore::read_verified_manifest;
use crate::snapshot::{Manifest, SnapshotRef, TrustedKeys, SNAPSHOTS_DIR};
use crate::store::{ReadStore, StoreError};
use crate::verification::{self, VerificationSummary};

/// How many of the newest manifests are tried before giving up on unreadable ones.
const MAX_MANIFESTS_TRIED: usize = 16;

/// The newest snapshot of a job whose manifest exists and parses.
#[derive(Debug, Clone)]
pub struct NewestSnapshot {
    /// Where it is.
    pub snapshot: SnapshotRef,
    /// Its manifest.
    pub manifest: Manifest,
}

/// A job's state in a store.
#[derive(Debug, Clone, Default)]
pub struct JobInventory {
    /// The newest complete snapshot, if any.
    pub newest: Option<NewestSnapshot>,
    /// Newer snapshots whose manifest could not be read (listed with the reason; never counted).
    pub unreadable: Vec<String>,
    /// Newer snapshots whose manifest signature does not verify while signing keys are trusted (listed with
    /// the reason; never counted).
    pub unverified: Vec<String>,
    /// The job's verification records.
    pub verifications: VerificationSummary,
}

/// Finds the newest complete snapshot of `job`: the newest manifest key whose manifest reads, parses and, when
/// `trusted` holds any key, whose signature verifies.
pub async fn newest_snapshot<S: ReadStore>(
    store: &S,
    job: &str,
    trusted: &TrustedKeys,
    unreadable: &mut Vec<String>,
    unverified: &mut Vec<String>,
) -> Result<Option<NewestSnapshot>, StoreError> {
    let mut refs: Vec<SnapshotRef> = store
        .list(&format!("{SNAPSHOTS_DIR}{job}/"))
        .await?
        .iter()
        .filter_map(|o| SnapshotRef::from_manifest_key(&o.key))
        .filter(|r| r.job == job)
        .collect();
    refs.sort_by(|a, b| b.id.cmp(&a.id));
    for snapshot in refs.into_iter().take(MAX_MANIFESTS_TRIED) {
        match read_verified_manifest(store, &snapshot, trusted).await {
            Ok((manifest, status)) if trusted.is_empty() || status.is_verified() => {
                return Ok(Some(NewestSnapshot { snapshot, manifest }))
            }
            Ok((_, status)) => unverified.push(format!("{snapshot}: {status}")),
            Err(crate::restore::RestoreError::Store(e)) if !e.is_not_found() => return Err(e),
            Err(e) => unreadable.push(format!("{snapshot}: {e}")),
        }
    }
    Ok(None)
}

/// Reads a job's newest snapshot and verification summary, counting only snapshots `trusted` verifies (all
/// readable ones when it is empty). Unverified ones are logged as warnings and listed.
pub async fn job_inventory<S: ReadStore>(
    store: &S,
    job: &str,
    trusted: &TrustedKeys,
) -> Result<JobInventory, StoreError> {
    let mut unreadable = Vec::new();
    let mut unverified = Vec::new();
    let newest = newest_snapshot(store, job, trusted, &mut unreadable, &mut unverified).await?;
    for problem in &unverified {
        tracing::warn!(job = %job, problem = %problem, "Snapshot not counted: its manifest signature does not verify (planted, tampered with, or written without the signing key).");
    }
    let verifications = verification::summarize(store, job).await?;
    Ok(JobInventory {
        newest,
        unreadable,
        unverified,
        verifications,
    })
}
