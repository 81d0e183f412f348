//! `lifeboat drill`: test-restores the newest snapshot of each PostgreSQL job into a throw-away PostgreSQL, checks
//! tables, exact row counts and the job's SQL checks, measures RTO/RPO, and records the result in the store.

use super::report::{print_checks, store_record};
use super::{load_config, open_store, trusted_keys, CliError};
use chrono::Utc;
use lifeboat_config::{Config, JobConfig, SourceConfig};
use lifeboat_core::drill::{drill, DrillPlan, DrillTarget};
use lifeboat_core::restore::{check_signature, load_identities, resolve_snapshot, Identities};
use lifeboat_core::scratch::ScratchOptions;
use lifeboat_core::secret::{resolve, Secret};
use lifeboat_core::snapshot::TrustedKeys;
use lifeboat_core::source::ConnParams;
use lifeboat_core::verification::{RecordKind, VerificationRecord, RECORD_FORMAT_VERSION};
use lifeboat_core::verify::all_passed;
use std::path::{Path, PathBuf};

/// Arguments of `lifeboat drill`.
#[derive(clap::Args, Debug)]
pub struct DrillArgs {
    /// Drill only this job (default: every PostgreSQL job).
    #[arg(long)]
    job: Option<String>,
    /// Drill this snapshot (JOB/ID or ID) instead of the newest.
    #[arg(long)]
    snapshot: Option<String>,
    /// age identity file able to decrypt the snapshots.
    #[arg(long, short = 'i')]
    identity: PathBuf,
    /// Print the records as a JSON array.
    #[arg(long)]
    json: bool,
    /// Also write node_exporter textfile metrics to this file (replaced atomically).
    #[arg(long)]
    textfile: Option<PathBuf>,
    /// Do not store the results under verifications/.
    #[arg(long)]
    no_record: bool,
    /// Drill even if a manifest's signature does not verify with a key in [encryption]
    /// signing_public_keys (unsigned, tampered or planted snapshots); logs a warning.
    #[arg(long)]
    allow_unsigned: bool,
}

/// Runs the command; fails (exit 1) unless every drilled job passed every check.
pub async fn run(config_path: &Path, args: DrillArgs) -> Result<(), CliError> {
    let config = load_config(config_path)?;
    let identities = load_identities(&args.identity).map_err(|e| CliError::Usage(e.to_string()))?;
    let job_from_snapshot = args
        .snapshot
        .as_deref()
        .and_then(|s| s.split_once('/').map(|(j, _)| j.to_owned()));
    let wanted = args.job.clone().or(job_from_snapshot);
    let jobs: Vec<&JobConfig> = match &wanted {
        Some(name) => vec![config.jobs.get(name).ok_or_else(|| {
            CliError::Usage(format!(
                "no job named {name:?} in {}; jobs: {}",
                config.origin,
                config.jobs.keys().cloned().collect::<Vec<_>>().join(", ")
            ))
        })?],
        None => config
            .jobs
            .values()
            .filter(|j| {
                matches!(
                    j.source,
                    SourceConfig::Postgres(_) | SourceConfig::PostgresPhysical(_)
                )
            })
            .collect(),
    };
    if jobs.is_empty() {
        return Err(CliError::Usage(format!(
            "{} defines no PostgreSQL job to drill",
            config.origin
        )));
    }
    let target_conn = scratch_server(&config)?;
    let trusted = trusted_keys(&config)?;

    let mut records = Vec::new();
    let mut errors = Vec::new();
    for job in jobs {
        match drill_job(
            &config,
            job,
            &args,
            identities.clone(),
            target_conn.as_ref(),
            &trusted,
        )
        .await
        {
            Ok(record) => records.push(record),
            Err(e) => {
                eprintln!("lifeboat: job {}: {e}", job.name);
                errors.push(format!("{}: {e}", job.name));
            }
        }
    }
    if let Some(path) = &args.textfile {
        write_textfile(path, &records)?;
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&records).unwrap_or_default()
        );
    }
    let failed: Vec<String> = records
        .iter()
        .filter(|r| !r.passed)
        .map(|r| format!("{}/{}", r.job, r.snapshot_id))
        .collect();
    if !errors.is_empty() {
        return Err(CliError::Failed(format!(
            "drill could not run: {}",
            errors.join("; ")
        )));
    }
    if !failed.is_empty() {
        return Err(CliError::Failed(format!(
            "drill FAILED for {}",
            failed.join(", ")
        )));
    }
    Ok(())
}

/// `[drill] scratch_url` with its password, when configured.
fn scratch_server(config: &Config) -> Result<Option<ConnParams>, CliError> {
    let Some(url) = &config.drill.scratch_url else {
        return Ok(None);
    };
    let password: Option<Secret> = match &config.drill.password {
        None => None,
        Some(r) => Some(resolve("drill.password", r).map_err(|e| CliError::Usage(e.to_string()))?),
    };
    ConnParams::parse(url, password)
        .map(Some)
        .map_err(|e| CliError::Usage(format!("drill.scratch_url: {e}")))
}

async fn drill_job(
    config: &Config,
    job: &JobConfig,
    args: &DrillArgs,
    identities: Identities,
    scratch: Option<&ConnParams>,
    trusted: &TrustedKeys,
) -> Result<VerificationRecord, CliError> {
    let store_cfg = config.stores.get(job.primary_store()).ok_or_else(|| {
        CliError::Usage(format!(
            "job {} names an unknown store {}",
            job.name,
            job.primary_store()
        ))
    })?;
    let store = open_store(store_cfg).await?;
    let spec = match &args.snapshot {
        Some(s) => s.clone(),
        None => "latest".to_owned(),
    };
    let (snapshot, manifest, signature) = resolve_snapshot(&store, &spec, Some(&job.name), trusted)
        .await
        .map_err(|e| CliError::Failed(e.to_string()))?;
    check_signature(&snapshot, &signature, trusted, args.allow_unsigned)
        .map_err(|e| CliError::Failed(e.to_string()))?;
    let target = match scratch {
        Some(conn) => DrillTarget::Server(conn.clone()),
        None => DrillTarget::Local(ScratchOptions {
            bin_dir: config.drill.pg_bin_dir.clone(),
            min_major: 0,
            run_as: config.drill.run_as.clone(),
            parent_dir: None,
        }),
    };
    let plan = DrillPlan {
        target,
        checks: job.drill.checks.clone(),
        checks_database: job.drill.database.clone(),
        search_dirs: config
            .drill
            .pg_bin_dir
            .iter()
            .cloned()
            .chain(config.daemon.pg_bin_dirs.iter().cloned())
            .collect(),
    };
    if !args.json {
        println!("drill {snapshot}: restoring…");
    }
    let started_at = Utc::now();
    let outcome = drill(&store, &manifest, identities, &plan).await;
    let finished_at = Utc::now();
    let passed = all_passed(&outcome.checks);
    let age = (started_at - manifest.finished_at)
        .to_std()
        .ok()
        .map(|d| d.as_secs_f64());
    let record = VerificationRecord {
        format_version: RECORD_FORMAT_VERSION,
        kind: RecordKind::Drill,
        job: job.name.clone(),
        snapshot_id: snapshot.id.clone(),
        started_at,
        finished_at,
        passed,
        checks: outcome.checks,
        restore_seconds: outcome.restore_seconds,
        snapshot_age_seconds: age,
        lifeboat_version: lifeboat_core::VERSION.to_owned(),
    };
    let stored = if args.no_record {
        None
    } else {
        Some(store_record(&store, store_cfg, &record).await?)
    };
    if !args.json {
        println!(
            "drill {snapshot}: {} (restore {}, snapshot age {})",
            if passed { "PASSED" } else { "FAILED" },
            record
                .restore_seconds
                .map_or_else(|| "not measured".to_owned(), |s| format!("{s:.1} s")),
            age.map_or_else(|| "unknown".to_owned(), human_age)
        );
        print_checks(&record.checks);
        if let Some(key) = &stored {
            println!("record: {key}");
        }
    }
    Ok(record)
}

fn human_age(seconds: f64) -> String {
    let s = seconds.max(0.0) as u64;
    match s {
        0..=119 => format!("{s} s"),
        120..=7199 => format!("{} min", s / 60),
        7200..=172_799 => format!("{:.1} h", s as f64 / 3600.0),
        _ => format!("{:.1} days", s as f64 / 86400.0),
    }
}

/// node_exporter textfile collector format; written to a temp file next to `path`, then renamed.
fn write_textfile(path: &Path, records: &[VerificationRecord]) -> Result<(), CliError> {
    let text = textfile_metrics(records);
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| {
            std::fs::remove_file(&tmp).ok();
            CliError::Failed(format!(
                "writing the textfile metrics to {}: {e}; check that the directory exists and is writable",
                path.display()
            ))
        })
}

/// How a textfile metric's value is taken from a record.
type Value = fn(&VerificationRecord) -> Option<f64>;

fn textfile_metrics(records: &[VerificationRecord]) -> String {
    let mut out = String::new();
    let families: [(&str, &str, Value); 5] = [
        (
            "lifeboat_drill_success",
            "1 if the job's last drill passed every check",
            |r| Some(if r.passed { 1.0 } else { 0.0 }),
        ),
        (
            "lifeboat_drill_last_run_timestamp_seconds",
            "Unix time the job's last drill finished",
            |r| Some(r.finished_at.timestamp_millis() as f64 / 1000.0),
        ),
        (
            "lifeboat_verify_last_success_timestamp_seconds",
            "Unix time of the job's last passed drill",
            |r| {
                r.passed
                    .then(|| r.finished_at.timestamp_millis() as f64 / 1000.0)
            },
        ),
        (
            "lifeboat_restore_drill_duration_seconds",
            "Restore wall time of the job's last drill (RTO)",
            |r| r.restore_seconds,
        ),
        (
            "lifeboat_drill_snapshot_age_seconds",
            "Age of the drilled snapshot when the drill started (RPO)",
            |r| r.snapshot_age_seconds,
        ),
    ];
    for (name, help, value) in families {
        out.push_str(&format!("# HELP {name} {help}.\n# TYPE {name} gauge\n"));
        for r in records {
            if let Some(v) = value(r) {
                out.push_str(&format!("{name}{{job=\"{}\"}} {v}\n", r.job));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use lifeboat_core::verification::CheckResult;

    #[test]
    fn textfile_metrics_have_one_series_per_job_and_omit_unknown_values() {
        let record = |job: &str, passed: bool| VerificationRecord {
            format_version: RECORD_FORMAT_VERSION,
            kind: RecordKind::Drill,
            job: job.into(),
            snapshot_id: "20261126T011530Z-abcdef".parse().unwrap(),
            started_at: chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
            finished_at: chrono::DateTime::from_timestamp(1_800_000_060, 0).unwrap(),
            passed,
            checks: vec![CheckResult {
                name: "x".into(),
                passed,
                detail: String::new(),
            }],
            restore_seconds: passed.then_some(12.5),
            snapshot_age_seconds: Some(3600.0),
            lifeboat_version: "0".into(),
        };
        let text = textfile_metrics(&[record("a", true), record("b", false)]);
        assert!(
            text.contains("lifeboat_drill_success{job=\"a\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("lifeboat_drill_success{job=\"b\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("lifeboat_verify_last_success_timestamp_seconds{job=\"a\"} 1800000060\n")
        );
        assert!(!text.contains("lifeboat_verify_last_success_timestamp_seconds{job=\"b\"}"));
        assert!(text.contains("lifeboat_restore_drill_duration_seconds{job=\"a\"} 12.5\n"));
        assert!(text.contains("# TYPE lifeboat_drill_snapshot_age_seconds gauge\n"));
    }
}
