//! `lifeboat restore`: decrypts and decompresses a snapshot object into a new file or a new database.
//! Never overwrites a non-empty target unless `--confirm` names it exactly; shows progress on a terminal.

use super::{load_config, open_store, select_store, trusted_keys, CliError};
use lifeboat_core::restore::{
    check_signature, load_identities, resolve_snapshot, restore_to_database, restore_to_dir,
    restore_to_file, select_object, DatabaseTarget, Progress, RestoreError,
};
use lifeboat_core::secret::Secret;
use lifeboat_core::source::ConnParams;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Arguments of `lifeboat restore`.
#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["to_file", "to_dir", "to_database"])))]
pub struct RestoreArgs {
    /// Snapshot: JOB/ID, ID, JOB/latest (or `latest` with --job).
    snapshot: String,
    /// age identity file (AGE-SECRET-KEY-1… lines) able to decrypt the snapshot.
    #[arg(long, short = 'i')]
    identity: PathBuf,
    /// Write the decrypted payload (e.g. a pg_dump archive) to this new file.
    #[arg(long)]
    to_file: Option<PathBuf>,
    /// Extract a volume snapshot into this new or empty directory (ownership and modes kept where allowed;
    /// entries that would land outside it are refused).
    #[arg(long)]
    to_dir: Option<PathBuf>,
    /// Restore into this database (postgres://user@host:port/dbname); created if absent. Password via PGPASSWORD or --password-file.
    #[arg(long)]
    to_database: Option<String>,
    /// Which database's dump to restore, when the snapshot holds several.
    #[arg(long)]
    database: Option<String>,
    /// Which object to write with --to-file (e.g. globals.sql); default: the database dump.
    #[arg(long)]
    object: Option<String>,
    /// Restore roles and tablespaces (globals) first and keep object ownership.
    #[arg(long)]
    with_globals: bool,
    /// Allow writing into a non-empty target: must equal the target database name or file path.
    /// The restore runs in one transaction: a conflict with existing objects changes nothing.
    #[arg(long)]
    confirm: Option<String>,
    /// File holding the target database's password.
    #[arg(long)]
    password_file: Option<PathBuf>,
    /// Job, for `latest` and for picking the store.
    #[arg(long)]
    job: Option<String>,
    /// Store to read from (default: the job's store, or the only store).
    #[arg(long)]
    store: Option<String>,
    /// Restore even if the manifest's signature does not verify with a key in [encryption]
    /// signing_public_keys (unsigned, tampered or planted snapshots); logs a warning.
    #[arg(long)]
    allow_unsigned: bool,
}

fn failed(e: RestoreError) -> CliError {
    match e {
        RestoreError::Usage(m) | RestoreError::TargetNotEmpty(m) => CliError::Usage(m),
        RestoreError::Identity { .. } => CliError::Usage(e.to_string()),
        other => CliError::Failed(other.to_string()),
    }
}

fn progress_bar(total: u64) -> (Option<Progress>, Option<indicatif::ProgressBar>) {
    if !std::io::stderr().is_terminal() {
        return (None, None);
    }
    let bar = indicatif::ProgressBar::new(total);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{spinner} {bytes}/{total_bytes} stored bytes read, {bytes_per_sec}, eta {eta} {wide_bar}",
    ) {
        bar.set_style(style);
    }
    let b = bar.clone();
    let cb: Progress = Arc::new(move |n| b.set_position(n));
    (Some(cb), Some(bar))
}

/// `--confirm` names the directory: as written, or the same directory by another spelling.
fn same_path(confirm: &str, dir: &Path) -> bool {
    if Path::new(confirm) == dir {
        return true;
    }
    match (std::fs::canonicalize(confirm), std::fs::canonicalize(dir)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Runs the command.
pub async fn run(config_path: &Path, args: RestoreArgs) -> Result<(), CliError> {
    let config = load_config(config_path)?;
    let job_hint = args
        .job
        .clone()
        .or_else(|| args.snapshot.split_once('/').map(|(j, _)| j.to_owned()));
    let store_cfg = select_store(&config, args.store.as_deref(), job_hint.as_deref())?;
    let store = open_store(store_cfg).await?;
    let trusted = trusted_keys(&config)?;
    let identities = load_identities(&args.identity).map_err(failed)?;
    let (snapshot, manifest, signature) =
        resolve_snapshot(&store, &args.snapshot, args.job.as_deref(), &trusted)
            .await
            .map_err(failed)?;
    check_signature(&snapshot, &signature, &trusted, args.allow_unsigned).map_err(failed)?;

    if let Some(path) = &args.to_file {
        let entry = select_object(&manifest, args.object.as_deref(), args.database.as_deref())
            .map_err(failed)?;
        let overwrite = args.confirm.as_deref() == Some(path.to_string_lossy().as_ref());
        let (cb, bar) = progress_bar(entry.stored_bytes);
        let report = restore_to_file(&store, entry, identities, path, overwrite, cb).await;
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        let report = report.map_err(failed)?;
        eprintln!(
            "restored {} of {snapshot} to {} ({} bytes, sha256 {} verified)",
            entry.name,
            path.display(),
            report.payload_bytes,
            report.payload_sha256
        );
        return Ok(());
    }

    if let Some(dir) = &args.to_dir {
        let entry = select_object(&manifest, args.object.as_deref(), None).map_err(failed)?;
        let allow = args.confirm.as_deref().is_some_and(|c| same_path(c, dir));
        let (cb, bar) = progress_bar(entry.stored_bytes);
        let report = restore_to_dir(&store, &manifest, entry, identities, dir, allow, cb).await;
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        let report = report.map_err(failed)?;
        for skipped in &report.extract.skipped {
            eprintln!("lifeboat: not restored: {skipped}");
        }
        if !report.mismatches.is_empty() {
            return Err(CliError::Failed(format!(
                "restored {} of {snapshot} into {}, but {} files do not match the catalog: {}",
                entry.name,
                dir.display(),
                report.mismatches.len(),
                report
                    .mismatches
                    .iter()
                    .take(10)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("; ")
            )));
        }
        eprintln!(
            "restored {} of {snapshot} into {} ({} entries, {} files, {} bytes; every file's SHA-256 matches the catalog)",
            entry.name,
            dir.display(),
            report.extract.entries,
            report.extract.files,
            report.extract.bytes
        );
        return Ok(());
    }

    let Some(url) = &args.to_database else {
        return Err(CliError::Usage(
            "give --to-file PATH, --to-dir DIR or --to-database URL".to_owned(),
        ));
    };
    let password = match &args.password_file {
        Some(p) => Some(Secret::new(
            std::fs::read_to_string(p)
                .map_err(|e| {
                    CliError::Usage(format!("--password-file {}: {}", p.display(), e.kind()))
                })?
                .trim_end_matches(['\n', '\r'])
                .to_owned(),
        )),
        None => None,
    };
    let conn = ConnParams::parse(url, password)
        .map_err(|e| CliError::Usage(format!("--to-database: {e}")))?;
    let entry = select_object(&manifest, None, args.database.as_deref()).map_err(failed)?;
    let target = DatabaseTarget {
        conn,
        confirm: args.confirm.clone(),
        with_globals: args.with_globals,
        search_dirs: config.daemon.pg_bin_dirs.clone(),
        pg_bin_dir: None,
    };
    let (cb, bar) = progress_bar(entry.stored_bytes);
    let report = restore_to_database(&store, &manifest, entry, identities, &target, cb).await;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let report = report.map_err(failed)?;
    eprintln!(
        "restored {} of {snapshot} into database {:?} ({}; {} payload bytes, sha256 verified){}",
        entry.name,
        report.database,
        if report.created {
            "created"
        } else if report.into_non_empty {
            "existing and non-empty, as confirmed"
        } else {
            "existing, empty"
        },
        report.dump.payload_bytes,
        if report.globals_errors.is_empty() {
            String::new()
        } else {
            format!(
                "; {} globals statements failed (see log)",
                report.globals_errors.len()
            )
        }
    );
    Ok(())
}
