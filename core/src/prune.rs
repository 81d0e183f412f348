//! `lifeboat prune`: applies a job's retention policy to the snapshots in a store, with admin credentials. Only
//! snapshots the policy drops AND whose locks have expired go; each loses its manifest first, then every version.
//! Only snapshots whose manifest signature verifies are counted (a planted snapshot must not push real ones out);
//! the others are reported and never deleted, unless the operator passes `--allow-unsigned`.

use crate::restore::list_snapshots;
use crate::retention::{apply, with_safety, Decision, RetentionPolicy};
use crate::snapshot::{snapshot_prefix, SignatureStatus, SnapshotRef, TrustedKeys, MANIFEST_NAME};
use crate::store::{AdminStore, StoreError};
use chrono::{DateTime, Utc};

/// One snapshot as prune sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PruneItem {
    /// Which snapshot.
    pub snapshot: SnapshotRef,
    /// The latest retain-until of its objects (`None`: not locked).
    pub locked_until: Option<DateTime<Utc>>,
    /// What its manifest signature says (not verified only with `allow_unsigned`).
    pub signature: Option<SignatureStatus>,
}

/// What prune decided for a job: one decision per snapshot, newest first, plus snapshots it could not judge.
#[derive(Debug, Clone)]
pub struct PrunePlan {
    /// Keep or remove, with reasons.
    pub decisions: Vec<Decision<PruneItem>>,
    /// Snapshots whose manifest cannot be read: never removed by prune, reported.
    pub unreadable: Vec<String>,
    /// Snapshots whose manifest signature does not verify (without `allow_unsigned`): not counted by the
    /// policy, never removed, reported. Oldest first.
    pub unverified: Vec<(SnapshotRef, SignatureStatus)>,
}

/// Decides which snapshots of `job` to keep. Only snapshots `trusted` verifies are judged, unless
/// `allow_unsigned`; the others are listed in [`PrunePlan::unverified`].
#[allow(clippy::too_many_arguments)]
pub async fn plan<S: AdminStore>(
    store: &S,
    job: &str,
    policy: &RetentionPolicy,
    tz: chrono_tz::Tz,
    min_keep: usize,
    now: DateTime<Utc>,
    trusted: &TrustedKeys,
    allow_unsigned: bool,
) -> Result<PrunePlan, StoreError> {
    let mut items = Vec::new();
    let mut unreadable = Vec::new();
    let mut unverified = Vec::new();
    for listing in list_snapshots(store, Some(job), trusted).await? {
        match listing.manifest {
            Ok(_)
                if !allow_unsigned
                    && !listing.signature.as_ref().is_some_and(|s| s.is_verified()) =>
            {
                let status = listing.signature.unwrap_or(SignatureStatus::Unsigned);
                unverified.push((listing.snapshot, status));
            }
            Ok(manifest) => {
                let locked_until = manifest
                    .objects
                    .iter()
                    .filter_map(|o| o.lock.retain_until)
                    .max();
                items.push((
                    PruneItem {
                        snapshot: listing.snapshot,
                        locked_until,
                        signature: listing.signature,
                    },
                    manifest.started_at,
                ));
            }
            Err(e) => unreadable.push(format!("{}: {e}", listing.snapshot)),
        }
    }
    let decisions = apply(policy, tz, &items);
    let decisions = with_safety(
        decisions,
        min_keep,
        |item: &PruneItem| item.locked_until,
        now,
    );
    Ok(PrunePlan {
        decisions,
        unreadable,
        unverified,
    })
}

/// Removes one snapshot: every version of its manifest first (from then on it is no longer listed as complete,
/// so an interrupted prune never leaves a listed snapshot that cannot be restored), then every version of every
/// other object under it. The store refuses versions that are still locked. Returns the versions deleted.
pub async fn remove_snapshot<S: AdminStore>(
    store: &S,
    snapshot: &SnapshotRef,
) -> Result<usize, StoreError> {
    let prefix = snapshot_prefix(&snapshot.job, &snapshot.id);
    let manifest_key = format!("{prefix}{MANIFEST_NAME}");
    let versions = store.list_versions(&prefix).await?;
    let (manifest, rest): (Vec<_>, Vec<_>) =
        versions.into_iter().partition(|(k, _)| *k == manifest_key);
    let mut deleted = 0;
    // If the manifest cannot go, nothing else may: the snapshot stays whole and listed.
    for (key, version) in &manifest {
        store.delete_version(key, version.as_deref()).await?;
        deleted += 1;
    }
    // The snapshot is no longer listed; remove as much of the rest as the store allows, then report.
    let mut first_error = None;
    for (key, version) in &rest {
        match store.delete_version(key, version.as_deref()).await {
            Ok(()) => deleted += 1,
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        None => Ok(deleted),
        Some(e) => Err(e),
    }
}
