//! `lifeboat verify`: checks a snapshot's stored objects (sizes, SHA-256, versions, locks) and, with an identity,
//! decrypts and decompresses each one and checks its format. Stores the result as a verification record.

use super::report::{print_checks, store_record};
use super::{load_config, open_store, select_store, trusted_keys, CliError};
use chrono::Utc;
use lifeboat_core::restore::{check_signature, dump_major, load_identities, resolve_snapshot};
use lifeboat_core::source::find_pg_tools;
use lifeboat_core::verification::{RecordKind, VerificationRecord, RECORD_FORMAT_VERSION};
use lifeboat_core::verify::{all_passed, verify_snapshot, DecodeChecks};
use std::path::{Path, PathBuf};

/// Arguments of `lifeboat verify`.
#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["snapshot", "latest"])))]
pub struct VerifyArgs {
    /// Snapshot: JOB/ID, ID or JOB/latest.
    snapshot: Option<String>,
    /// Verify the newest snapshot of --job.
    #[arg(long, requires = "job")]
    latest: bool,
    /// Job, with --latest (and for picking the store).
    #[arg(long)]
    job: Option<String>,
    /// age identity file: also decrypt, decompress and check every object's payload and format.
    #[arg(long, short = 'i')]
    identity: Option<PathBuf>,
    /// Store to read (default: the job's store, or the only store).
    #[arg(long)]
    store: Option<String>,
    /// Print the record as JSON.
    #[arg(long)]
    json: bool,
    /// Do not store the result under verifications/ (for credentials that may only read).
    #[arg(long)]
    no_record: bool,
    /// Verify even if the manifest's signature does not verify with a key in [encryption]
    /// signing_public_keys (unsigned, tampered or planted snapshots); logs a warning.
    #[arg(long)]
    allow_unsigned: bool,
}

/// Runs the command; fails (exit 1) unless every check passed.
pub async fn run(config_path: &Path, args: VerifyArgs) -> Result<(), CliError> {
    let config = load_config(config_path)?;
    let spec = match (&args.snapshot, args.latest) {
        (Some(s), _) => s.clone(),
        (None, _) => "latest".to_owned(),
    };
    let job_hint = args
        .job
        .clone()
        .or_else(|| spec.split_once('/').map(|(j, _)| j.to_owned()));
    let store_cfg = select_store(&config, args.store.as_deref(), job_hint.as_deref())?;
    let store = open_store(store_cfg).await?;
    let identities = match &args.identity {
        Some(path) => Some(load_identities(path).map_err(|e| CliError::Usage(e.to_string()))?),
        None => None,
    };
    let trusted = trusted_keys(&config)?;
    let (snapshot, manifest, signature) =
        resolve_snapshot(&store, &spec, args.job.as_deref(), &trusted)
            .await
            .map_err(|e| CliError::Usage(e.to_string()))?;
    check_signature(&snapshot, &signature, &trusted, args.allow_unsigned)
        .map_err(|e| CliError::Failed(e.to_string()))?;
    let decode = match identities {
        None => None,
        Some(identities) => {
            let tools = find_pg_tools(dump_major(&manifest), None, &config.daemon.pg_bin_dirs)
                .await
                .map_err(|e| CliError::Failed(e.to_string()))?;
            Some(DecodeChecks { identities, tools })
        }
    };
    let started_at = Utc::now();
    let checks = verify_snapshot(&store, &snapshot, &manifest, decode.as_ref(), started_at).await;
    let finished_at = Utc::now();
    let passed = all_passed(&checks);
    let record = VerificationRecord {
        format_version: RECORD_FORMAT_VERSION,
        kind: RecordKind::Verify,
        job: snapshot.job.clone(),
        snapshot_id: snapshot.id.clone(),
        started_at,
        finished_at,
        passed,
        checks,
        restore_seconds: None,
        snapshot_age_seconds: (started_at - manifest.finished_at)
            .to_std()
            .ok()
            .map(|d| d.as_secs_f64()),
        lifeboat_version: lifeboat_core::VERSION.to_owned(),
    };
    let stored = if args.no_record {
        None
    } else {
        Some(store_record(&store, store_cfg, &record).await?)
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&record).unwrap_or_default()
        );
    } else {
        println!(
            "snapshot {snapshot} ({}): {}",
            if decode.is_some() {
                "stored objects, locks and decrypted payloads"
            } else {
                "stored objects and locks; add --identity to also decrypt"
            },
            if passed { "PASSED" } else { "FAILED" }
        );
        print_checks(&record.checks);
        if let Some(key) = &stored {
            println!("record: {key}");
        }
    }
    if passed {
        Ok(())
    } else {
        let failed: Vec<&str> = record
            .checks
            .iter()
            .filter(|c| !c.passed)
            .map(|c| c.name.as_str())
            .collect();
        Err(CliError::Failed(format!(
            "snapshot {snapshot} failed verification: {}",
            failed.join("; ")
        )))
    }
}
