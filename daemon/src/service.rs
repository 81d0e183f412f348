//! `lifeboatd` without a subcommand: the long-running service. Binds the HTTP endpoint, recovers state from
//! the stores, then runs the scheduler loop until SIGTERM/SIGINT; SIGHUP reloads the configuration.

use crate::audit::Audits;
use crate::health::Health;
use crate::http::{self, Endpoint};
use crate::metrics::{Metrics, RunResult};
use crate::observe::{self, JobObservation};
use crate::planner::{expected_interval, missed_a_run, Decision, Planner};
use crate::worker::{self, Stops};
use crate::{notify, EXIT_FAILED, EXIT_OK};
use chrono::Utc;
use lifeboat_config::Config;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// The scheduler never sleeps longer than this, so wall-clock jumps (suspend, NTP steps) are noticed.
const MAX_SLEEP: Duration = Duration::from_secs(30);
/// After the grace period, how long cancelled runs get to abort their uploads and reap their children.
const CANCEL_CLEANUP: Duration = Duration::from_secs(20);

/// Runs the service until a stop signal; returns the exit code.
pub async fn run(config_path: PathBuf, config: Config) -> i32 {
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::default());
    metrics.config_loaded(true);
    health.set_config_loaded();

    let mut signals = match Signals::new() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("lifeboatd: cannot install signal handlers: {e}");
            return EXIT_FAILED;
        }
    };
    let listen = config.daemon.listen;
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "lifeboatd: cannot listen on {listen}: {e}; set [daemon] listen in {} to a free address",
                config.origin
            );
            return EXIT_FAILED;
        }
    };
    let http_stop = CancellationToken::new();
    let endpoint = Arc::new(Endpoint {
        metrics: metrics.clone(),
        health: health.clone(),
    });
    let http_task = tokio::spawn(http::serve(listener, endpoint, http_stop.clone()));
    tracing::info!(listen = %listen, jobs = config.jobs.len(), stores = config.stores.len(), "lifeboatd started: serving /metrics, /healthz, /readyz.");

    let metrics_for_audits = metrics.clone();
    let mut service = Service {
        config_path,
        config: Arc::new(config),
        planner: Planner::with_random_jitter(1),
        metrics,
        health,
        runs: JoinSet::new(),
        probes: JoinSet::new(),
        audits: Arc::new(Audits::new(Some(metrics_for_audits))),
        audit_tasks: JoinSet::new(),
        stops: Stops {
            no_new_attempts: CancellationToken::new(),
            cancel: CancellationToken::new(),
        },
    };
    service
        .planner
        .set_max_concurrent(service.config.daemon.max_concurrent_jobs);

    // Recover the truth from the stores before anything runs: last-success gauges, then catch-up decisions.
    let jobs: Vec<String> = service.config.jobs.keys().cloned().collect();
    // Prove every store immutable before the first run (each run also checks its store's verdict); /readyz
    // turns 200 only after the probe below, so the immutability gauges are in place by then.
    service.audits.audit_all(&service.config).await;
    let observed = observe::probe(&service.config, &jobs, &service.metrics, &service.health).await;
    let now = Utc::now();
    for name in &jobs {
        service.schedule_job(name, now);
    }
    let decisions = service.catch_up(&observed);
    service.apply(decisions);
    notify::ready();

    let mut next_probe = tokio::time::Instant::now() + service.config.daemon.probe_interval;
    let mut next_audit = tokio::time::Instant::now() + service.config.daemon.audit_interval;
    loop {
        let now = Utc::now();
        let sleep = service.planner.next_wakeup().map_or(MAX_SLEEP, |t| {
            (t - now).to_std().unwrap_or(Duration::ZERO).min(MAX_SLEEP)
        });
        tokio::select! {
            () = tokio::time::sleep(sleep) => {
                let decisions = service.planner.poll(Utc::now());
                service.apply(decisions);
            }
            Some(done) = service.runs.join_next() => {
                let job = match done {
                    Ok(job) => job,
                    Err(e) => {
                        tracing::error!(error = %e, "A backup task ended abnormally.");
                        continue;
                    }
                };
                let decisions = service.planner.finished(&job);
                if !service.config.jobs.contains_key(&job) {
                    service.metrics.job_removed(&job);
                }
                service.apply(decisions);
            }
            Some(done) = service.probes.join_next() => {
                if let Ok((observed, catch_up_for)) = done {
                    let decisions = service.catch_up_some(&observed, &catch_up_for);
                    service.apply(decisions);
                }
            }
            () = tokio::time::sleep_until(next_probe) => {
                next_probe = tokio::time::Instant::now() + service.config.daemon.probe_interval;
                // A slow store must not pile probes up: skip a tick while one is still running.
                if service.probes.is_empty() {
                    service.spawn_probe(Vec::new());
                }
            }
            () = tokio::time::sleep_until(next_audit) => {
                next_audit = tokio::time::Instant::now() + service.config.daemon.audit_interval;
                if service.audit_tasks.is_empty() {
                    let audits = service.audits.clone();
                    let config = service.config.clone();
                    service.audit_tasks.spawn(async move { audits.audit_all(&config).await });
                }
            }
            Some(_) = service.audit_tasks.join_next() => {}
            _ = signals.hup.recv() => service.reload(),
            _ = signals.term.recv() => {
                tracing::info!(signal = "SIGTERM", "Stopping: no new runs will start.");
                break;
            }
            _ = signals.int.recv() => {
                tracing::info!(signal = "SIGINT", "Stopping: no new runs will start.");
                break;
            }
        }
    }

    notify::stopping();
    let code = service.shutdown(&mut signals).await;
    http_stop.cancel();
    match http_task.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "The HTTP endpoint ended with an error."),
        Err(e) => tracing::warn!(error = %e, "The HTTP endpoint task failed."),
    }
    tracing::info!("lifeboatd stopped.");
    code
}

struct Service {
    config_path: PathBuf,
    config: Arc<Config>,
    planner: Planner,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    /// Running scheduled runs; each returns its job name.
    runs: JoinSet<String>,
    /// Running probes; each returns what it observed and which jobs wait for a catch-up decision.
    probes: JoinSet<(BTreeMap<String, JobObservation>, Vec<String>)>,
    /// Each store's last immutability audit (the runs' gate).
    audits: Arc<Audits>,
    /// The running periodic audit, if any.
    audit_tasks: JoinSet<()>,
    stops: Stops,
}

impl Service {
    fn schedule_job(&mut self, name: &str, now: chrono::DateTime<Utc>) {
        let Some(job) = self.config.jobs.get(name) else {
            return;
        };
        self.planner
            .upsert(name, job.schedule.clone(), job.run.jitter, now);
        self.metrics.job_scheduled(
            name,
            self.planner.next_run(name),
            expected_interval(&job.schedule, now),
        );
    }

    fn catch_up(&mut self, observed: &BTreeMap<String, JobObservation>) -> Vec<Decision> {
        let names: Vec<String> = observed.keys().cloned().collect();
        self.catch_up_some(observed, &names)
    }

    /// Starts a catch-up run for each of `names` whose store shows a missed run (or cannot be read).
    fn catch_up_some(
        &mut self,
        observed: &BTreeMap<String, JobObservation>,
        names: &[String],
    ) -> Vec<Decision> {
        let now = Utc::now();
        let mut decisions = Vec::new();
        for name in names {
            let Some(job) = self.config.jobs.get(name) else {
                continue;
            };
            if !job.run.catch_up {
                continue;
            }
            let why = match observed.get(name) {
                Some(JobObservation::Known(newest)) => {
                    if !missed_a_run(&job.schedule, *newest, now) {
                        continue;
                    }
                    match newest {
                        None => "the store holds no snapshot of the job".to_owned(),
                        Some(t) => format!(
                            "the newest snapshot (started {}) predates the last scheduled time",
                            t.format("%Y-%m-%dT%H:%M:%SZ")
                        ),
                    }
                }
                Some(JobObservation::Unknown) | None => {
                    "the store could not be read, so a missed run cannot be ruled out".to_owned()
                }
            };
            tracing::info!(job = %name, reason = %why, "Catching up: running the job now.");
            decisions.extend(self.planner.run_now(name, now));
        }
        decisions
    }

    fn apply(&mut self, decisions: Vec<Decision>) {
        for decision in decisions {
            match decision {
                Decision::Start { job, due } => {
                    tracing::debug!(job = %job, due = %due, "Starting a scheduled run.");
                    self.metrics.set_running(&job, true);
                    let config = self.config.clone();
                    let metrics = self.metrics.clone();
                    let stops = self.stops.clone();
                    let audits = self.audits.clone();
                    self.runs.spawn(async move {
                        worker::run_scheduled(config, job.clone(), metrics, stops, audits).await;
                        job
                    });
                }
                Decision::Queued { job, due } => {
                    tracing::info!(job = %job, due = %due, max_concurrent_jobs = self.config.daemon.max_concurrent_jobs, "Run queued: every slot is busy.");
                }
                Decision::Skipped { job, due, reason } => {
                    tracing::warn!(job = %job, due = %due, reason = reason.as_str(), "Scheduled run skipped.");
                    self.metrics.run_finished(&job, RunResult::skipped);
                }
            }
        }
        for name in self.config.jobs.keys() {
            self.metrics.set_next_run(name, self.planner.next_run(name));
        }
    }

    /// Probes the stores in the background; `catch_up_for` jobs get a catch-up decision from the result.
    fn spawn_probe(&mut self, catch_up_for: Vec<String>) {
        let config = self.config.clone();
        let metrics = self.metrics.clone();
        let health = self.health.clone();
        self.probes.spawn(async move {
            let jobs: Vec<String> = config.jobs.keys().cloned().collect();
            let observed = observe::probe(&config, &jobs, &metrics, &health).await;
            (observed, catch_up_for)
        });
    }

    /// SIGHUP: re-reads the configuration; an invalid one is logged and the running one kept.
    fn reload(&mut self) {
        notify::reloading();
        let new = match lifeboat_config::load(&self.config_path) {
            Ok(c) => c,
            Err(errors) => {
                tracing::error!(errors = %errors, "Configuration reload rejected; the previous configuration stays in force.");
                self.metrics.config_loaded(false);
                notify::ready();
                return;
            }
        };
        if new.daemon.listen != self.config.daemon.listen {
            tracing::warn!(old = %self.config.daemon.listen, new = %new.daemon.listen, "A new listen address takes effect only when lifeboatd restarts.");
        }
        let old = std::mem::replace(&mut self.config, Arc::new(new));
        self.planner
            .set_max_concurrent(self.config.daemon.max_concurrent_jobs);
        let now = Utc::now();
        let mut added = Vec::new();
        for name in old.jobs.keys() {
            if !self.config.jobs.contains_key(name) {
                self.planner.remove(name);
                if !self.planner.is_running(name) {
                    self.metrics.job_removed(name);
                }
            }
        }
        let config = self.config.clone();
        for (name, job) in &config.jobs {
            match old.jobs.get(name) {
                Some(previous) if previous == job => {}
                Some(_) => self.schedule_job(name, now),
                None => {
                    self.schedule_job(name, now);
                    added.push(name.clone());
                }
            }
        }
        for name in old.stores.keys() {
            if !self.config.stores.contains_key(name) {
                self.metrics.store_removed(name);
            }
        }
        self.metrics.config_loaded(true);
        tracing::info!(
            jobs = self.config.jobs.len(),
            added = added.len(),
            "Configuration reloaded."
        );
        self.spawn_probe(added);
        self.apply(Vec::new());
        notify::ready();
    }

    /// Stops scheduling, lets running runs finish within `shutdown_grace`, then cancels them cleanly.
    async fn shutdown(&mut self, signals: &mut Signals) -> i32 {
        for job in self.planner.drain_queue() {
            tracing::info!(job = %job, "Queued run dropped: shutting down.");
        }
        self.stops.no_new_attempts.cancel();
        self.probes.abort_all();
        self.audit_tasks.abort_all();
        let grace = self.config.daemon.shutdown_grace;
        if !self.runs.is_empty() {
            tracing::info!(
                running = self.runs.len(),
                grace_s = grace.as_secs_f64(),
                "Waiting for running backups to finish."
            );
        }
        let finished_in_grace = tokio::select! {
            () = wait_all(&mut self.runs) => true,
            () = tokio::time::sleep(grace) => false,
            which = signals.stop() => {
                tracing::warn!(signal = which, "Second stop signal: cancelling running backups now.");
                false
            }
        };
        if !finished_in_grace {
            tracing::warn!(running = self.runs.len(), "Cancelling running backups: no manifest will be written for them; their uploads are aborted.");
            self.stops.cancel.cancel();
            if tokio::time::timeout(CANCEL_CLEANUP, wait_all(&mut self.runs))
                .await
                .is_err()
            {
                tracing::error!(
                    "Cancelled backups did not finish cleaning up in time; exiting anyway."
                );
                self.runs.abort_all();
                return EXIT_FAILED;
            }
        }
        EXIT_OK
    }
}

async fn wait_all(runs: &mut JoinSet<String>) {
    while runs.join_next().await.is_some() {}
}

/// The signals the service reacts to.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> std::io::Result<Self> {
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// The next SIGTERM or SIGINT; returns its name.
    async fn stop(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}
