//! The daemon's Prometheus metrics (design.md, Metrics; docs/metrics.md): one registry, typed label sets with
//! `job`, `store`, `result`, `stage` and `version` only, so no host name, path or secret can become a label.

use chrono::{DateTime, Utc};
use lifeboat_core::snapshot::Manifest;
use lifeboat_core::store::audit::AuditReport;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

type FloatGauge = Gauge<f64, AtomicU64>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabels {
    job: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RunLabels {
    job: String,
    result: RunResult,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BytesLabels {
    job: String,
    stage: Stage,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StoreLabels {
    store: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
struct JobStoreLabels {
    job: String,
    store: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AuditLabels {
    store: String,
    probe: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabels {
    version: String,
}

/// How a scheduled run ended (`result` label of `lifeboat_backup_runs_total`).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum RunResult {
    /// A snapshot was written (its manifest included).
    success,
    /// Every attempt failed, timed out or was cancelled.
    failure,
    /// The run was due while the job's previous run was still running or queued.
    skipped,
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
enum Stage {
    source,
    stored,
}

/// Every metric the daemon exports.
pub struct Metrics {
    registry: Registry,
    last_success: Family<JobLabels, FloatGauge>,
    last_attempt: Family<JobLabels, FloatGauge>,
    runs: Family<RunLabels, Counter>,
    attempt_failures: Family<JobLabels, Counter>,
    duration: Family<JobLabels, FloatGauge>,
    bytes: Family<BytesLabels, Gauge>,
    running: Family<JobLabels, Gauge>,
    next_run: Family<JobLabels, FloatGauge>,
    expected_interval: Family<JobLabels, FloatGauge>,
    scheduled_since: Family<JobLabels, FloatGauge>,
    store_up: Family<StoreLabels, Gauge>,
    store_immutable: Family<StoreLabels, Gauge>,
    audit_probe_ok: Family<AuditLabels, Gauge>,
    store_last_success: Family<JobStoreLabels, FloatGauge>,
    store_failures: Family<JobStoreLabels, Counter>,
    /// The (job, store) series created, so a removed job's series can go too.
    job_stores: std::sync::Mutex<std::collections::BTreeSet<JobStoreLabels>>,
    audit_time: Family<StoreLabels, FloatGauge>,
    immutability_required: Family<StoreLabels, Gauge>,
    verify_last_success: Family<JobLabels, FloatGauge>,
    drill_duration: Family<JobLabels, FloatGauge>,
    drill_last_passed: Family<JobLabels, Gauge>,
    drill_last_time: Family<JobLabels, FloatGauge>,
    reload_ok: Gauge,
    reload_time: FloatGauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn job(name: &str) -> JobLabels {
    JobLabels {
        job: name.to_owned(),
    }
}

fn store(name: &str) -> StoreLabels {
    StoreLabels {
        store: name.to_owned(),
    }
}

fn seconds(t: DateTime<Utc>) -> f64 {
    t.timestamp_millis() as f64 / 1000.0
}

impl Metrics {
    /// Registers every metric; label sets appear as jobs and stores become known.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let m = Metrics {
            last_success: Family::default(),
            last_attempt: Family::default(),
            runs: Family::default(),
            attempt_failures: Family::default(),
            duration: Family::default(),
            bytes: Family::default(),
            running: Family::default(),
            next_run: Family::default(),
            expected_interval: Family::default(),
            scheduled_since: Family::default(),
            store_up: Family::default(),
            store_immutable: Family::default(),
            audit_probe_ok: Family::default(),
            store_last_success: Family::default(),
            store_failures: Family::default(),
            job_stores: std::sync::Mutex::default(),
            audit_time: Family::default(),
            immutability_required: Family::default(),
            verify_last_success: Family::default(),
            drill_duration: Family::default(),
            drill_last_passed: Family::default(),
            drill_last_time: Family::default(),
            reload_ok: Gauge::default(),
            reload_time: FloatGauge::default(),
            registry: Registry::default(),
        };
        registry.register(
            "lifeboat_backup_last_success_timestamp_seconds",
            "Unix time the newest complete snapshot of the job was finished (read from the store at start-up)",
            m.last_success.clone(),
        );
        registry.register(
            "lifeboat_backup_last_attempt_timestamp_seconds",
            "Unix time the job's most recent attempt started",
            m.last_attempt.clone(),
        );
        registry.register(
            "lifeboat_backup_runs",
            "Scheduled runs by result: success, failure (every attempt failed), skipped (previous run still going)",
            m.runs.clone(),
        );
        registry.register(
            "lifeboat_backup_attempt_failures",
            "Failed attempts, retried ones included",
            m.attempt_failures.clone(),
        );
        registry.register(
            "lifeboat_backup_duration_seconds",
            "Wall time of the job's newest complete snapshot",
            m.duration.clone(),
        );
        registry.register(
            "lifeboat_backup_bytes",
            "Bytes of the job's newest complete snapshot: stage=source before compression, stage=stored as stored",
            m.bytes.clone(),
        );
        registry.register(
            "lifeboat_backup_running",
            "1 while a run of the job is in progress",
            m.running.clone(),
        );
        registry.register(
            "lifeboat_next_run_timestamp_seconds",
            "Unix time of the job's next scheduled run (jitter included)",
            m.next_run.clone(),
        );
        registry.register(
            "lifeboat_backup_expected_interval_seconds",
            "Longest gap between two scheduled runs of the job: the base of its staleness threshold",
            m.expected_interval.clone(),
        );
        registry.register(
            "lifeboat_backup_scheduled_since_timestamp_seconds",
            "Unix time this daemon process first scheduled the job (its start, or the reload that added it)",
            m.scheduled_since.clone(),
        );
        registry.register(
            "lifeboat_store_up",
            "1 if the store answered the last probe",
            m.store_up.clone(),
        );
        registry.register(
            "lifeboat_store_immutable",
            "1 if the store passed its last immutability audit (every probe of `lifeboat store audit`), 0 if not",
            m.store_immutable.clone(),
        );
        registry.register(
            "lifeboat_store_audit_probe_ok",
            "1 if this probe of the store's last immutability audit passed, 0 if it failed",
            m.audit_probe_ok.clone(),
        );
        registry.register(
            "lifeboat_backup_store_last_success_timestamp_seconds",
            "When the newest complete snapshot of the job in this store finished (one series per store of the job)",
            m.store_last_success.clone(),
        );
        registry.register(
            "lifeboat_backup_store_failures",
            "Backup attempts of the job that failed because of this store",
            m.store_failures.clone(),
        );
        registry.register(
            "lifeboat_store_immutability_required",
            "1 if the store's require_immutable is set: backups into it are refused while its audit fails",
            m.immutability_required.clone(),
        );
        registry.register(
            "lifeboat_store_audit_timestamp_seconds",
            "When the store's last immutability audit ran",
            m.audit_time.clone(),
        );
        registry.register(
            "lifeboat_verify_last_success_timestamp_seconds",
            "Unix time of the newest passed verification or drill of the job (from verifications/ in the store)",
            m.verify_last_success.clone(),
        );
        registry.register(
            "lifeboat_restore_drill_duration_seconds",
            "Restore wall time measured by the job's newest drill: its real RTO",
            m.drill_duration.clone(),
        );
        registry.register(
            "lifeboat_drill_last_passed",
            "1 if the job's newest drill record passed every check, 0 if it failed (from verifications/ in the store)",
            m.drill_last_passed.clone(),
        );
        registry.register(
            "lifeboat_drill_last_finished_timestamp_seconds",
            "Unix time the job's newest drill finished, passed or failed (from verifications/ in the store)",
            m.drill_last_time.clone(),
        );
        registry.register(
            "lifeboat_config_last_reload_successful",
            "1 if the last configuration (re)load succeeded",
            m.reload_ok.clone(),
        );
        registry.register(
            "lifeboat_config_last_reload_success_timestamp_seconds",
            "Unix time of the last successful configuration (re)load",
            m.reload_time.clone(),
        );
        let build = Family::<VersionLabels, Gauge>::default();
        build
            .get_or_create(&VersionLabels {
                version: lifeboat_core::VERSION.to_owned(),
            })
            .set(1);
        registry.register("lifeboat_build_info", "Lifeboat's version", build);
        Metrics { registry, ..m }
    }

    /// OpenMetrics text exposition of every metric (`application/openmetrics-text; version=1.0.0`).
    pub fn render_openmetrics(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    /// The classic Prometheus text format (`text/plain; version=0.0.4`), for scrapers and tools (`promtool
    /// check metrics`) that do not ask for OpenMetrics.
    pub fn render(&self) -> String {
        openmetrics_to_prometheus(&self.render_openmetrics())
    }

    /// Makes a job's series exist (zero counters, not running) and sets its schedule gauges.
    pub fn job_scheduled(
        &self,
        name: &str,
        next: Option<DateTime<Utc>>,
        interval: Option<Duration>,
    ) {
        for result in [RunResult::success, RunResult::failure, RunResult::skipped] {
            self.runs
                .get_or_create(&RunLabels {
                    job: name.to_owned(),
                    result,
                })
                .inc_by(0);
        }
        self.attempt_failures.get_or_create(&job(name)).inc_by(0);
        self.running.get_or_create(&job(name)).inc_by(0);
        self.set_next_run(name, next);
        let since = self.scheduled_since.get_or_create(&job(name));
        if since.get() == 0.0 {
            since.set(seconds(Utc::now()));
        }
        drop(since);
        match interval {
            Some(i) => {
                self.expected_interval
                    .get_or_create(&job(name))
                    .set(i.as_secs_f64());
            }
            None => {
                self.expected_interval.remove(&job(name));
            }
        }
    }

    /// Removes every series of a job that left the configuration.
    pub fn job_removed(&self, name: &str) {
        let labels = job(name);
        for family in [
            &self.last_success,
            &self.last_attempt,
            &self.duration,
            &self.next_run,
            &self.expected_interval,
            &self.scheduled_since,
            &self.verify_last_success,
            &self.drill_duration,
            &self.drill_last_time,
        ] {
            family.remove(&labels);
        }
        self.drill_last_passed.remove(&labels);
        self.attempt_failures.remove(&labels);
        self.running.remove(&labels);
        for result in [RunResult::success, RunResult::failure, RunResult::skipped] {
            self.runs.remove(&RunLabels {
                job: name.to_owned(),
                result,
            });
        }
        for stage in [Stage::source, Stage::stored] {
            self.bytes.remove(&BytesLabels {
                job: name.to_owned(),
                stage,
            });
        }
        if let Ok(mut series) = self.job_stores.lock() {
            series.retain(|l| {
                if l.job != name {
                    return true;
                }
                self.store_last_success.remove(l);
                self.store_failures.remove(l);
                false
            });
        }
    }

    /// Removes the series of a store that left the configuration.
    pub fn store_removed(&self, name: &str) {
        self.store_up.remove(&store(name));
        self.store_immutable.remove(&store(name));
        self.audit_time.remove(&store(name));
        self.immutability_required.remove(&store(name));
        for probe in lifeboat_core::store::audit::probe::ALL {
            self.audit_probe_ok.remove(&AuditLabels {
                store: name.to_owned(),
                probe: (*probe).to_owned(),
            });
        }
    }

    /// The next scheduled run (absent when the schedule never fires again).
    pub fn set_next_run(&self, name: &str, next: Option<DateTime<Utc>>) {
        match next {
            Some(t) => {
                self.next_run.get_or_create(&job(name)).set(seconds(t));
            }
            None => {
                self.next_run.remove(&job(name));
            }
        }
    }

    /// An attempt starts.
    pub fn attempt_started(&self, name: &str, at: DateTime<Utc>) {
        self.last_attempt.get_or_create(&job(name)).set(seconds(at));
    }

    /// An attempt failed (it may be retried).
    pub fn attempt_failed(&self, name: &str) {
        self.attempt_failures.get_or_create(&job(name)).inc();
    }

    /// Whether a run of the job is in progress.
    pub fn set_running(&self, name: &str, running: bool) {
        self.running
            .get_or_create(&job(name))
            .set(i64::from(running));
    }

    /// A scheduled run ended (or was skipped).
    pub fn run_finished(&self, name: &str, result: RunResult) {
        self.runs
            .get_or_create(&RunLabels {
                job: name.to_owned(),
                result,
            })
            .inc();
    }

    /// A complete snapshot exists: from a run that just succeeded, or read from the store. Never moves the
    /// last-success time backwards.
    pub fn snapshot_complete(&self, manifest: &Manifest) {
        let labels = job(&manifest.job);
        let finished = seconds(manifest.finished_at);
        let gauge = self.last_success.get_or_create(&labels);
        if gauge.get() > finished {
            return;
        }
        gauge.set(finished);
        drop(gauge);
        let took = (manifest.finished_at - manifest.started_at)
            .to_std()
            .unwrap_or_default();
        self.duration.get_or_create(&labels).set(took.as_secs_f64());
        let clamp = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.bytes
            .get_or_create(&BytesLabels {
                job: manifest.job.clone(),
                stage: Stage::source,
            })
            .set(clamp(manifest.payload_bytes()));
        self.bytes
            .get_or_create(&BytesLabels {
                job: manifest.job.clone(),
                stage: Stage::stored,
            })
            .set(clamp(manifest.stored_bytes()));
    }

    /// The newest passed verification and the newest drill's restore time, from the store's records.
    pub fn verification(&self, name: &str, passed_at: Option<DateTime<Utc>>, drill: Option<f64>) {
        if let Some(t) = passed_at {
            self.verify_last_success
                .get_or_create(&job(name))
                .set(seconds(t));
        }
        if let Some(d) = drill {
            self.drill_duration.get_or_create(&job(name)).set(d);
        }
    }

    /// The job's newest drill record (passed or failed), from the store.
    pub fn drill_recorded(&self, name: &str, finished_at: DateTime<Utc>, passed: bool) {
        self.drill_last_passed
            .get_or_create(&job(name))
            .set(i64::from(passed));
        self.drill_last_time
            .get_or_create(&job(name))
            .set(seconds(finished_at));
    }

    /// A store probe's result.
    pub fn store_probed(&self, name: &str, up: bool) {
        self.store_up.get_or_create(&store(name)).set(i64::from(up));
    }

    /// A complete snapshot of `job` in `store`, finished at `finished` (the gauge never moves backwards).
    pub fn store_snapshot(&self, job: &str, store: &str, finished: DateTime<Utc>) {
        let labels = self.job_store(job, store);
        let gauge = self.store_last_success.get_or_create(&labels);
        if gauge.get() < seconds(finished) {
            gauge.set(seconds(finished));
        }
    }

    /// An attempt of `job` failed because of `store`.
    pub fn store_failed(&self, job: &str, store: &str) {
        let labels = self.job_store(job, store);
        self.store_failures.get_or_create(&labels).inc();
    }

    fn job_store(&self, job: &str, store: &str) -> JobStoreLabels {
        let labels = JobStoreLabels {
            job: job.to_owned(),
            store: store.to_owned(),
        };
        if let Ok(mut series) = self.job_stores.lock() {
            series.insert(labels.clone());
        }
        labels
    }

    /// The result of a store's immutability audit.
    pub fn store_audited(&self, report: &AuditReport, required: bool) {
        self.immutability_required
            .get_or_create(&store(&report.store))
            .set(i64::from(required));
        self.store_immutable
            .get_or_create(&store(&report.store))
            .set(i64::from(report.immutable));
        self.audit_time
            .get_or_create(&store(&report.store))
            .set(seconds(report.at));
        for p in &report.probes {
            self.audit_probe_ok
                .get_or_create(&AuditLabels {
                    store: report.store.clone(),
                    probe: p.probe.to_owned(),
                })
                .set(i64::from(p.ok));
        }
    }

    /// A configuration (re)load's result.
    pub fn config_loaded(&self, ok: bool) {
        self.reload_ok.set(i64::from(ok));
        if ok {
            self.reload_time.set(seconds(Utc::now()));
        }
    }
}

/// Rewrites prometheus-client's OpenMetrics text as classic Prometheus text: a counter family `x` is announced
/// as `x_total` (the name its samples carry), and `# UNIT` and `# EOF` lines are dropped.
fn openmetrics_to_prometheus(text: &str) -> String {
    let counters: std::collections::HashSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let rewritten = ["# HELP ", "# TYPE "].iter().find_map(|tag| {
            let rest = line.strip_prefix(tag)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{tag}{name}_total {tail}"))
        });
        match rewritten {
            Some(l) => out.push_str(&l),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metric_value(text: &str, series: &str) -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
    }

    #[test]
    fn counters_are_announced_by_their_sample_name_in_the_classic_format() {
        let om = "# HELP a_runs Runs.\n# TYPE a_runs counter\na_runs_total{job=\"x\"} 1\n# HELP b Gauge.\n\
                  # TYPE b gauge\n# UNIT b seconds\nb 2\n# EOF\n";
        assert_eq!(
            openmetrics_to_prometheus(om),
            "# HELP a_runs_total Runs.\n# TYPE a_runs_total counter\na_runs_total{job=\"x\"} 1\n\
             # HELP b Gauge.\n# TYPE b gauge\nb 2\n"
        );
    }

    #[test]
    fn series_appear_as_jobs_are_scheduled_and_go_when_removed() {
        let m = Metrics::new();
        let text = m.render();
        assert!(text.contains("lifeboat_build_info{version=\""), "{text}");
        assert!(!text.contains("job=\"db\""));
        m.job_scheduled(
            "db",
            Some(DateTime::from_timestamp(1_800_000_000, 0).unwrap()),
            Some(Duration::from_secs(3600)),
        );
        m.set_running("db", true);
        m.run_finished("db", RunResult::skipped);
        let text = m.render();
        assert!(
            text.contains("lifeboat_backup_runs_total{job=\"db\",result=\"success\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("lifeboat_backup_runs_total{job=\"db\",result=\"skipped\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("lifeboat_next_run_timestamp_seconds{job=\"db\"} 1800000000"),
            "{text}"
        );
        assert!(
            text.contains("lifeboat_backup_expected_interval_seconds{job=\"db\"} 3600"),
            "{text}"
        );
        assert!(
            text.contains("lifeboat_backup_running{job=\"db\"} 1"),
            "{text}"
        );
        let since = metric_value(
            &text,
            "lifeboat_backup_scheduled_since_timestamp_seconds{job=\"db\"}",
        );
        let now = seconds(Utc::now());
        assert!(since > now - 60.0 && since <= now, "{text}");
        // Rescheduling (a changed job, a reload) keeps the time the job was first scheduled.
        m.job_scheduled("db", None, Some(Duration::from_secs(7200)));
        assert_eq!(
            metric_value(
                &m.render(),
                "lifeboat_backup_scheduled_since_timestamp_seconds{job=\"db\"}"
            ),
            since
        );
        // Absent, not zero, until known.
        assert!(
            !text.contains("lifeboat_backup_last_success_timestamp_seconds{"),
            "{text}"
        );
        assert!(
            !text.contains("lifeboat_verify_last_success_timestamp_seconds{"),
            "{text}"
        );
        m.verification(
            "db",
            Some(DateTime::from_timestamp(1_700_000_000, 0).unwrap()),
            Some(12.5),
        );
        let text = m.render();
        assert!(
            text.contains("lifeboat_verify_last_success_timestamp_seconds{job=\"db\"} 1700000000"),
            "{text}"
        );
        assert!(
            text.contains("lifeboat_restore_drill_duration_seconds{job=\"db\"} 12.5"),
            "{text}"
        );
        m.job_removed("db");
        assert!(!m.render().contains("job=\"db\""));
    }

    #[test]
    fn the_newest_drill_exports_its_result_and_time_and_goes_with_the_job() {
        let m = Metrics::new();
        m.job_scheduled("db", None, Some(Duration::from_secs(86400)));
        let text = m.render();
        // Absent, not zero, until a drill record exists: "never drilled" is not "drill failed".
        assert!(!text.contains("lifeboat_drill_last_passed{"), "{text}");
        assert!(
            !text.contains("lifeboat_drill_last_finished_timestamp_seconds{"),
            "{text}"
        );
        // A failed drill, then a passed one a day later: each newest record replaces the last.
        for (at, passed) in [(1_800_000_000, false), (1_800_086_400, true)] {
            m.drill_recorded("db", DateTime::from_timestamp(at, 0).unwrap(), passed);
            let text = m.render();
            let series = |name: &str| metric_value(&text, &format!("{name}{{job=\"db\"}}"));
            assert_eq!(
                series("lifeboat_drill_last_passed"),
                f64::from(u8::from(passed))
            );
            assert_eq!(
                series("lifeboat_drill_last_finished_timestamp_seconds"),
                at as f64
            );
        }
        m.job_removed("db");
        let text = m.render();
        assert!(!text.contains("job=\"db\""), "{text}");
    }
}
