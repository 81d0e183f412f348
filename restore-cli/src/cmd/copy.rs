//! `lifeboat copy`: copies a complete snapshot to another store without decrypting it (seed a new store, repair a
//! second copy). Needs read access to the source and writer access to the target; checks every byte on the way.

use super::{load_config, open_store, select_store, trusted_keys, CliError};
use chrono::Utc;
use lifeboat_core::copy::copy_snapshot;
use lifeboat_core::restore::{check_signature, resolve_snapshot};
use lifeboat_core::snapshot::ManifestSigner;
use lifeboat_core::store::LockSpec;
use std::path::Path;

/// Arguments of `lifeboat copy`.
#[derive(clap::Args, Debug)]
pub struct CopyArgs {
    /// Snapshot: JOB/ID, ID, JOB/latest (or `latest` with --job).
    snapshot: String,
    /// The store to copy into (`[stores.NAME]`).
    #[arg(long, value_name = "STORE")]
    to: String,
    /// The store to copy from (default: the job's first store, or the only store).
    #[arg(long, value_name = "STORE")]
    from: Option<String>,
    /// Job, for `latest` and for picking the source store.
    #[arg(long)]
    job: Option<String>,
    /// Copy a snapshot whose manifest signature does not verify, and/or write the copy unsigned when the config
    /// has no signing key (restores of it will need --allow-unsigned too).
    #[arg(long)]
    allow_unsigned: bool,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

/// Runs the command.
pub async fn run(config_path: &Path, args: CopyArgs) -> Result<(), CliError> {
    let config = load_config(config_path)?;
    let job = args
        .job
        .as_deref()
        .or_else(|| args.snapshot.split_once('/').map(|(j, _)| j));
    let from_cfg = select_store(&config, args.from.as_deref(), job)?;
    let to_cfg = select_store(&config, Some(&args.to), None)?;
    if from_cfg.name == to_cfg.name {
        return Err(CliError::Usage(format!(
            "--to {} is the store the snapshot is read from; name another store (or --from)",
            to_cfg.name
        )));
    }
    let from = open_store(from_cfg).await?;
    let to = open_store(to_cfg).await?;
    let trusted = trusted_keys(&config)?;
    let (snapshot, manifest, signature) =
        resolve_snapshot(&from, &args.snapshot, args.job.as_deref(), &trusted)
            .await
            .map_err(|e| CliError::Failed(e.to_string()))?;
    check_signature(&snapshot, &signature, &trusted, args.allow_unsigned)
        .map_err(|e| CliError::Failed(e.to_string()))?;
    // The target's manifest records the target's version ids, so it must be signed again.
    let signer = ManifestSigner::from_config(&config.encryption)
        .map_err(|e| CliError::Usage(e.to_string()))?;
    if signer.is_none() && !args.allow_unsigned {
        return Err(CliError::Usage(
            "the copy's manifest records the target store's version ids and locks, so it is signed anew: run copy \
             with a config whose [encryption] signing_key_file is the daemon's key, or pass --allow-unsigned to \
             write it unsigned (restores of it then need --allow-unsigned too)"
                .to_owned(),
        ));
    }
    // The target's own lock settings, counted from now: the copy is a new write there.
    let lock = LockSpec::starting(to_cfg.lock.mode, to_cfg.lock.retention, Utc::now())
        .map_err(|e| CliError::Usage(format!("stores.{}.retention: {e}", to_cfg.name)))?;
    let report = copy_snapshot(
        &from,
        &to,
        &snapshot,
        &manifest,
        &lock,
        to_cfg.part_size(),
        signer.as_ref(),
    )
    .await
    .map_err(|e| CliError::Failed(format!("copy of {snapshot} to store {}: {e}", to_cfg.name)))?;
    if args.json {
        let text = serde_json::to_string_pretty(&report)
            .map_err(|e| CliError::Failed(format!("encoding the report: {e}")))?;
        println!("{text}");
    } else if report.already_complete {
        println!(
            "{snapshot}: store {} already holds it (its manifest exists); nothing copied",
            report.to
        );
    } else {
        for o in &report.objects {
            println!("{:<8} {} ({} bytes)", o.action, o.name, o.bytes);
        }
        println!(
            "{snapshot}: copied from store {} to store {}, manifest written last",
            report.from, report.to
        );
    }
    Ok(())
}
