//! `lifeboat prune`: deletes the snapshots a job's `keep_*` policy no longer keeps, once their locks have expired.
//! Needs admin credentials for the store; `--dry-run` only reports. The daemon never prunes.

use super::{load_config, open_store, trusted_keys, CliError};
use chrono::Utc;
use lifeboat_config::JobConfig;
use lifeboat_core::prune::{plan, remove_snapshot};
use lifeboat_core::retention::{KeepReason, RetentionPolicy};
use lifeboat_core::snapshot::SignatureStatus;
use serde::Serialize;
use std::path::Path;

/// Arguments of `lifeboat prune`.
#[derive(clap::Args, Debug)]
pub struct PruneArgs {
    /// Only this job (default: every job).
    #[arg(long)]
    job: Option<String>,
    /// Only this store (default: every store of each job).
    #[arg(long)]
    store: Option<String>,
    /// Report what would be deleted; delete nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print the decisions as JSON.
    #[arg(long)]
    json: bool,
    /// Count and prune snapshots whose manifest signature does not verify like the others (by default they
    /// are reported, never counted toward retention, never deleted).
    #[arg(long)]
    allow_unsigned: bool,
}

#[derive(Serialize)]
struct Row {
    job: String,
    store: String,
    snapshot: String,
    keep: bool,
    reasons: Vec<String>,
    /// `verified`, `unsigned` or `invalid`.
    signature: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    deleted_versions: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

fn policy_of(job: &JobConfig) -> RetentionPolicy {
    let r = &job.retention;
    RetentionPolicy {
        keep_last: r.last,
        keep_hourly: r.hourly,
        keep_daily: r.daily,
        keep_weekly: r.weekly,
        keep_monthly: r.monthly,
        keep_yearly: r.yearly,
    }
}

fn reason_name(r: &KeepReason) -> &'static str {
    match r {
        KeepReason::Last => "last",
        KeepReason::Hourly => "hourly",
        KeepReason::Daily => "daily",
        KeepReason::Weekly => "weekly",
        KeepReason::Monthly => "monthly",
        KeepReason::Yearly => "yearly",
        KeepReason::NewestComplete => "newest",
        KeepReason::NoPolicy => "no keep_* policy",
        KeepReason::StillLocked => "still locked",
        KeepReason::MinimumKept => "keep_min",
    }
}

fn signature_label(status: Option<&SignatureStatus>) -> &'static str {
    match status {
        Some(SignatureStatus::Verified { .. }) => "verified",
        Some(SignatureStatus::Invalid { .. }) => "invalid",
        Some(SignatureStatus::Unsigned) | None => "unsigned",
    }
}

/// Runs the command.
pub async fn run(config_path: &Path, args: PruneArgs) -> Result<(), CliError> {
    let config = load_config(config_path)?;
    let jobs: Vec<&JobConfig> = match &args.job {
        Some(name) => vec![config.jobs.get(name).ok_or_else(|| {
            CliError::Usage(format!(
                "no job named {name:?} in {}; jobs: {}",
                config.origin,
                config.jobs.keys().cloned().collect::<Vec<_>>().join(", ")
            ))
        })?],
        None => config.jobs.values().collect(),
    };
    let now = Utc::now();
    let trusted = trusted_keys(&config)?;
    let mut rows = Vec::new();
    let mut failures = Vec::new();
    let mut pairs = Vec::new();
    for job in jobs {
        for name in &job.stores {
            if args.store.as_ref().is_some_and(|s| s != name) {
                continue;
            }
            let store_cfg = config.stores.get(name).ok_or_else(|| {
                CliError::Usage(format!("job {} names an unknown store {name}", job.name))
            })?;
            pairs.push((job, store_cfg));
        }
    }
    if let (Some(store), true) = (&args.store, pairs.is_empty()) {
        return Err(CliError::Usage(format!(
            "no job writes to store {store:?}; check --store (and --job)"
        )));
    }
    for (job, store_cfg) in pairs {
        let store = open_store(store_cfg).await?;
        let policy = policy_of(job);
        let min_keep = usize::try_from(job.retention.min).unwrap_or(usize::MAX);
        let decided = plan(
            &store,
            &job.name,
            &policy,
            job.schedule.timezone,
            min_keep,
            now,
            &trusted,
            args.allow_unsigned,
        )
        .await
        .map_err(|e| CliError::Failed(format!("job {}: {e}", job.name)))?;
        for problem in &decided.unreadable {
            eprintln!(
                "lifeboat: job {}: kept, manifest unreadable: {problem}",
                job.name
            );
        }
        for (snapshot, status) in &decided.unverified {
            rows.push(Row {
                job: job.name.clone(),
                store: store_cfg.name.clone(),
                snapshot: snapshot.id.to_string(),
                keep: true,
                reasons: vec![format!(
                    "not counted: {status}; pass --allow-unsigned to judge it like the others"
                )],
                signature: signature_label(Some(status)),
                deleted_versions: None,
                error: None,
            });
        }
        for d in decided.decisions {
            let mut row = Row {
                job: job.name.clone(),
                store: store_cfg.name.clone(),
                snapshot: d.item.snapshot.id.to_string(),
                keep: d.keep,
                reasons: d
                    .reasons
                    .iter()
                    .map(|r| reason_name(r).to_owned())
                    .collect(),
                signature: signature_label(d.item.signature.as_ref()),
                deleted_versions: None,
                error: None,
            };
            if !d.keep && !args.dry_run {
                match remove_snapshot(&store, &d.item.snapshot).await {
                    Ok(n) => row.deleted_versions = Some(n),
                    Err(e) => {
                        failures.push(format!("{}: {e}", d.item.snapshot));
                        row.error = Some(e.to_string());
                    }
                }
            }
            rows.push(row);
        }
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&rows).unwrap_or_default()
        );
    } else {
        for r in &rows {
            let action = match (r.keep, args.dry_run, &r.error) {
                (true, _, _) => "keep  ",
                (false, true, _) => "would delete",
                (false, false, None) => "deleted",
                (false, false, Some(_)) => "FAILED",
            };
            println!(
                "{action} {}/{} in {} {}{}",
                r.job,
                r.snapshot,
                r.store,
                if r.reasons.is_empty() {
                    String::new()
                } else {
                    format!("({})", r.reasons.join(", "))
                },
                r.error
                    .as_ref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            );
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(CliError::Failed(format!(
            "{} snapshots could not be deleted (their manifests may already be gone, so they are no longer listed; run prune again): {}",
            failures.len(),
            failures.join("; ")
        )))
    }
}
