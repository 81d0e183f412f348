//! What `verify` and `drill` share: printing a check report (text or JSON) and storing it as a verification
//! record under the store's Object Lock, so the daemon and auditors can see the proof.

use super::CliError;
use lifeboat_config::{LockMode, StoreConfig};
use lifeboat_core::store::{AnyStore, LockSpec, WriteStore};
use lifeboat_core::verification::{CheckResult, VerificationRecord};

/// Prints one check per line: `ok  ` or `FAIL`, its name and detail.
pub fn print_checks(checks: &[CheckResult]) {
    for c in checks {
        println!(
            "  {} {}: {}",
            if c.passed { "ok  " } else { "FAIL" },
            c.name,
            c.detail
        );
    }
}

/// Writes `record` to `verifications/…` with the store's lock (mode and retention from now). Returns its key.
pub async fn store_record(
    store: &AnyStore,
    store_cfg: &StoreConfig,
    record: &VerificationRecord,
) -> Result<String, CliError> {
    let retain_until = match (store_cfg.lock.mode, store_cfg.lock.retention) {
        (LockMode::None, _) | (_, None) => None,
        (_, Some(r)) => chrono::Duration::from_std(r)
            .ok()
            .map(|d| record.finished_at + d)
            .and_then(|t| chrono::DateTime::from_timestamp(t.timestamp(), 0)),
    };
    let lock = LockSpec {
        mode: store_cfg.lock.mode,
        retain_until,
    };
    let body = serde_json::to_vec_pretty(record)
        .map_err(|e| CliError::Failed(format!("encoding the verification record: {e}")))?;
    let key = record.key();
    store
        .put_small(&key, body.into(), &lock)
        .await
        .map_err(|e| {
            CliError::Failed(format!(
                "the checks ran, but their record could not be stored at {key} in store {}: {e}. The credentials need \
                 s3:PutObject and s3:PutObjectRetention on the verifications/ prefix (see docs/runbook.md), or pass \
                 --no-record",
                store_cfg.name
            ))
        })?;
    Ok(key)
}
