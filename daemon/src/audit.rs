//! The daemon's side of the immutability preflight: audits every store at start-up and every `audit_interval`,
//! keeps each store's last verdict for the runner's gate (`require_immutable`), and exports it as metrics and logs.

use crate::metrics::Metrics;
use lifeboat_config::{Config, StoreConfig};
use lifeboat_core::store::audit::{audit, AuditReport};
use lifeboat_core::store::AnyStore;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long one store's audit may take (the canary write and six small requests, with the SDK's retries).
const AUDIT_TIMEOUT: Duration = Duration::from_secs(120);

/// The last audit of each store.
pub struct Audits {
    reports: Mutex<BTreeMap<String, AuditReport>>,
    metrics: Option<Arc<Metrics>>,
}

impl Audits {
    /// An empty book; results also go to `metrics` when given.
    pub fn new(metrics: Option<Arc<Metrics>>) -> Self {
        Self {
            reports: Mutex::new(BTreeMap::new()),
            metrics,
        }
    }

    /// The last report of `store`, if any.
    pub fn last(&self, store: &str) -> Option<AuditReport> {
        self.reports.lock().ok().and_then(|r| r.get(store).cloned())
    }

    /// Audits one store now with the config's credentials; records, logs and exports the result.
    pub async fn audit_now(&self, cfg: &StoreConfig) -> AuditReport {
        let report = match AnyStore::build(cfg).await {
            Err(e) => AuditReport::not_audited(
                &cfg.name,
                format!("cannot open the store: {e}"),
                "fix the store's credentials or settings",
            ),
            Ok(store) => match tokio::time::timeout(AUDIT_TIMEOUT, audit(&store, cfg)).await {
                Ok(report) => report,
                Err(_) => AuditReport::not_audited(
                    &cfg.name,
                    format!(
                        "the audit got no answer within {}s",
                        AUDIT_TIMEOUT.as_secs()
                    ),
                    "check that the store is reachable",
                ),
            },
        };
        if report.immutable {
            tracing::info!(store = %cfg.name, probes = report.probes.len(), "Store audit passed: these credentials cannot delete, hide or unlock locked objects.");
        } else if cfg.require_immutable {
            tracing::error!(store = %cfg.name, failed = %report.summary(), "Store audit FAILED: backups into this store are refused until it passes (require_immutable = true).");
        } else {
            tracing::warn!(store = %cfg.name, failed = %report.summary(), "Store is not immutable (require_immutable = false: backups go on).");
        }
        if let Some(m) = &self.metrics {
            m.store_audited(&report, cfg.require_immutable);
        }
        if let Ok(mut reports) = self.reports.lock() {
            reports.insert(cfg.name.clone(), report.clone());
        }
        report
    }

    /// Audits every configured store, all at once (an unreachable store costs its timeout, not the sum).
    pub async fn audit_all(&self, config: &Config) {
        futures::future::join_all(config.stores.values().map(|cfg| self.audit_now(cfg))).await;
    }

    /// Whether a backup may write into `cfg`'s store: yes when the store does not require immutability or its
    /// last audit passed within `audit_interval`; otherwise audits again now (a fixed store is noticed at the
    /// next run) and refuses with the failed probes and their fixes.
    pub async fn gate(&self, config: &Config, cfg: &StoreConfig) -> Result<(), String> {
        if !cfg.require_immutable {
            return Ok(());
        }
        let fresh = self.last(&cfg.name).is_some_and(|r| {
            r.immutable
                && chrono::Utc::now()
                    .signed_duration_since(r.at)
                    .to_std()
                    .is_ok_and(|age| age <= config.daemon.audit_interval)
        });
        if fresh {
            return Ok(());
        }
        let report = self.audit_now(cfg).await;
        if report.immutable {
            Ok(())
        } else {
            Err(format!(
                "refusing to back up into store {}: its immutability audit failed ({}); \
                 set require_immutable = false on the store only if you accept backups that these credentials can destroy",
                cfg.name,
                report.summary()
            ))
        }
    }
}
