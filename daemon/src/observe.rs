//! Reads the truth from the stores: is each store reachable and locked, what is each job's newest complete
//! snapshot and newest passed verification. Feeds `/readyz`, the metrics and the catch-up decisions.

use crate::health::{Health, StoreHealth};
use crate::metrics::Metrics;
use chrono::{DateTime, Utc};
use lifeboat_config::Config;
use lifeboat_core::inventory::job_inventory;
use lifeboat_core::store::{AnyStore, ReadStore};
use std::collections::BTreeMap;
use std::time::Duration;

/// How long one store may take to answer a probe (the SDK retries inside this).
const STORE_PROBE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long reading one job's snapshots and records may take.
const INVENTORY_TIMEOUT: Duration = Duration::from_secs(120);

/// What a probe learnt about one job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobObservation {
    /// The store was read: the newest complete snapshot started at this time (`None`: there is none).
    Known(Option<DateTime<Utc>>),
    /// The store could not be read.
    Unknown,
}

/// Probes every store of `config` and reads the inventory of `jobs`, updating `metrics` and `health`.
pub async fn probe(
    config: &Config,
    jobs: &[String],
    metrics: &Metrics,
    health: &Health,
) -> BTreeMap<String, JobObservation> {
    let mut stores = BTreeMap::new();
    let mut built = BTreeMap::new();
    for (name, cfg) in &config.stores {
        let store_health = match AnyStore::build(cfg).await {
            Err(e) => StoreHealth {
                reachable: false,
                detail: e.to_string(),
            },
            Ok(store) => {
                let outcome = tokio::time::timeout(STORE_PROBE_TIMEOUT, store.lock_status()).await;
                built.insert(name.clone(), store);
                match outcome {
                    Err(_) => StoreHealth {
                        reachable: false,
                        detail: format!("no answer within {}s", STORE_PROBE_TIMEOUT.as_secs()),
                    },
                    Ok(Err(e)) => StoreHealth {
                        reachable: false,
                        detail: e.to_string(),
                    },
                    Ok(Ok(status)) => StoreHealth {
                        reachable: true,
                        detail: status.detail,
                    },
                }
            }
        };
        if !store_health.reachable {
            tracing::warn!(store = %name, detail = %store_health.detail, "Store probe failed.");
        }
        metrics.store_probed(name, store_health.reachable);
        stores.insert(name.clone(), store_health);
    }
    let reachable: Vec<String> = stores
        .iter()
        .filter(|(_, h)| h.reachable)
        .map(|(n, _)| n.clone())
        .collect();

    // Only snapshots these keys verify count (every readable one when none is configured: unsigned mode).
    let trusted = match crate::runner::trusted_keys(config) {
        Ok(keys) => keys,
        Err(e) => {
            tracing::error!(error = %e, "Cannot load the signing keys; only signing_public_keys are trusted.");
            lifeboat_core::snapshot::TrustedKeys::from_config(&config.encryption)
                .unwrap_or_default()
        }
    };
    let mut observed = BTreeMap::new();
    for name in jobs {
        let Some(job) = config.jobs.get(name) else {
            continue;
        };
        // The job is as fresh as its least fresh store: each store's newest snapshot is exported on its own, and
        // the job's gauges and catch-up decision follow the oldest of them.
        let mut oldest: Option<Option<lifeboat_core::snapshot::Manifest>> = None;
        let mut unknown = false;
        for (i, store_name) in job.stores.iter().enumerate() {
            let Some(store) = built
                .get(store_name)
                .filter(|_| reachable.contains(store_name))
            else {
                unknown = true;
                continue;
            };
            match tokio::time::timeout(INVENTORY_TIMEOUT, job_inventory(store, name, &trusted))
                .await
            {
                Ok(Ok(inventory)) => {
                    for problem in &inventory.unreadable {
                        tracing::warn!(job = %name, store = %store_name, problem = %problem, "Snapshot ignored: its manifest cannot be read.");
                    }
                    let newest = inventory.newest.map(|n| n.manifest);
                    if let Some(m) = &newest {
                        metrics.store_snapshot(name, store_name, m.finished_at);
                    }
                    // Drills and verifications record their results in the job's first store.
                    if i == 0 {
                        for problem in &inventory.verifications.unreadable {
                            tracing::warn!(job = %name, problem = %problem, "Verification record ignored.");
                        }
                        let v = &inventory.verifications;
                        metrics.verification(
                            name,
                            v.last_passed.as_ref().map(|r| r.finished_at),
                            v.last_drill.as_ref().and_then(|r| r.restore_seconds),
                        );
                        if let Some(drill) = &v.newest_drill {
                            metrics.drill_recorded(name, drill.finished_at, drill.passed);
                        }
                    }
                    let older = match (&oldest, &newest) {
                        (None, _) | (Some(Some(_)), None) => true,
                        (Some(Some(have)), Some(new)) => new.started_at < have.started_at,
                        (Some(None), _) => false,
                    };
                    if older {
                        oldest = Some(newest);
                    }
                }
                Ok(Err(e)) => {
                    tracing::warn!(job = %name, store = %store_name, error = %e, "Cannot read the job's snapshots.");
                    unknown = true;
                }
                Err(_) => {
                    tracing::warn!(job = %name, store = %store_name, "Reading the job's snapshots timed out.");
                    unknown = true;
                }
            }
        }
        if let Some(Some(manifest)) = &oldest {
            metrics.snapshot_complete(manifest);
        }
        let observation = match (unknown, oldest) {
            (false, Some(newest)) => JobObservation::Known(newest.map(|m| m.started_at)),
            _ => JobObservation::Unknown,
        };
        observed.insert(name.clone(), observation);
    }
    // Ready only once the metrics hold what the store says (a restart must not look fresh for a moment).
    health.set_stores(stores);
    observed
}
