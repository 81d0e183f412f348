//! One scheduled run of a job: attempts with timeout and backoff, cancellation on shutdown, and the metrics
//! and log lines of each. A run succeeds when one attempt wrote a snapshot (manifest included).

use crate::audit::Audits;
use crate::metrics::{Metrics, RunResult};
use crate::runner;
use chrono::Utc;
use lifeboat_config::{Config, RunPolicy};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How a run is stopped from outside.
#[derive(Clone)]
pub struct Stops {
    /// No new attempts after this (shutdown began): the running attempt may finish.
    pub no_new_attempts: CancellationToken,
    /// Cancel the running attempt now (shutdown grace is over): no manifest, uploads aborted, children killed.
    pub cancel: CancellationToken,
}

/// Runs `job` once per its policy; returns the run's result after updating `metrics`.
pub async fn run_scheduled(
    config: Arc<Config>,
    job: String,
    metrics: Arc<Metrics>,
    stops: Stops,
    audits: Arc<Audits>,
) -> RunResult {
    let policy = config.jobs.get(&job).map(|j| j.run).unwrap_or_default();
    metrics.set_running(&job, true);
    let result = attempts(&config, &job, &policy, &metrics, &stops, &audits).await;
    metrics.set_running(&job, false);
    metrics.run_finished(&job, result);
    result
}

async fn attempts(
    config: &Config,
    job: &str,
    policy: &RunPolicy,
    metrics: &Metrics,
    stops: &Stops,
    audits: &Audits,
) -> RunResult {
    for attempt in 1..=policy.retry_attempts.max(1) {
        if attempt > 1 {
            let wait = policy.backoff_before(attempt);
            tracing::info!(job = %job, attempt, of = policy.retry_attempts, wait_s = wait.as_secs_f64(), "Retrying the backup after a pause.");
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = stops.no_new_attempts.cancelled() => {
                    tracing::warn!(job = %job, "Shutting down: no further attempts; the run counts as failed.");
                    return RunResult::failure;
                }
            }
        }
        if stops.no_new_attempts.is_cancelled() {
            return RunResult::failure;
        }
        metrics.attempt_started(job, Utc::now());
        match one_attempt(config, job, policy.timeout, &stops.cancel, audits).await {
            Ok(report) => {
                metrics.snapshot_complete(&report.manifest);
                for store in &report.stores {
                    metrics.store_snapshot(job, store, report.manifest.finished_at);
                }
                return RunResult::success;
            }
            Err(e) => {
                metrics.attempt_failed(job);
                if let Some(store) = e.failed_store() {
                    metrics.store_failed(job, store);
                }
                if stops.cancel.is_cancelled() {
                    return RunResult::failure;
                }
            }
        }
    }
    tracing::error!(job = %job, attempts = policy.retry_attempts, "Backup run failed after every attempt.");
    RunResult::failure
}

/// One attempt, cancelled at `timeout`: the cancelled backup still cleans up (aborts its uploads, reaps its
/// children) before this returns. Errors are already logged by the runner.
pub async fn one_attempt(
    config: &Config,
    job: &str,
    timeout: Option<Duration>,
    shutdown: &CancellationToken,
    audits: &Audits,
) -> Result<lifeboat_core::backup::BackupReport, runner::JobError> {
    let token = shutdown.child_token();
    let run = runner::run_job(config, job, token.clone(), audits);
    tokio::pin!(run);
    let Some(limit) = timeout else {
        return run.await;
    };
    tokio::select! {
        result = &mut run => result,
        () = tokio::time::sleep(limit) => {
            tracing::error!(job = %job, timeout_s = limit.as_secs_f64(), "Backup attempt timed out; cancelling it (no manifest, uploads aborted, child processes killed).");
            token.cancel();
            // Let the cancelled attempt clean up: abort multipart uploads, reap pg_dump.
            match run.await {
                // It wrote its manifest just as the timeout fired: the snapshot is complete, so it counts.
                Ok(report) => {
                    tracing::warn!(job = %job, snapshot = %report.snapshot.id, "The attempt completed while being cancelled for its timeout; its snapshot is complete.");
                    Ok(report)
                }
                Err(_) => Err(runner::JobError::TimedOut(limit)),
            }
        }
    }
}
