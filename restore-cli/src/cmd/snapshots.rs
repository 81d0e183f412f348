//! `lifeboat snapshots`: lists complete snapshots (a manifest exists) with sizes and lock status.
//! `--json` output is a stable array for scripts; unreadable manifests and unverified signatures are shown, never
//! hidden (listing refuses nothing: restore, verify and drill do).

use super::{load_config, open_store, select_store, trusted_keys, CliError};
use lifeboat_core::restore::list_snapshots;
use lifeboat_core::snapshot::SignatureStatus;
use serde::Serialize;
use std::path::Path;

/// Arguments of `lifeboat snapshots`.
#[derive(clap::Args, Debug)]
pub struct SnapshotsArgs {
    /// Only this job's snapshots.
    #[arg(long)]
    job: Option<String>,
    /// Store to read (default: the job's store, or the only store).
    #[arg(long)]
    store: Option<String>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Row {
    job: String,
    id: String,
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    /// `verified`, `unsigned` or `invalid` (absent when the manifest is unreadable).
    #[serde(skip_serializing_if = "Option::is_none")]
    signature: Option<&'static str>,
    /// The key that verified the signature, or why it does not verify.
    #[serde(skip_serializing_if = "Option::is_none")]
    signature_detail: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    started_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    finished_at: Option<String>,
    payload_bytes: u64,
    stored_bytes: u64,
    objects: Vec<String>,
    databases: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    lock_mode: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    retain_until: Option<String>,
}

fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Runs the command.
pub async fn run(config_path: &Path, args: SnapshotsArgs) -> Result<(), CliError> {
    let config = load_config(config_path)?;
    let store_cfg = select_store(&config, args.store.as_deref(), args.job.as_deref())?;
    let store = open_store(store_cfg).await?;
    let trusted = trusted_keys(&config)?;
    let listing = list_snapshots(&store, args.job.as_deref(), &trusted)
        .await
        .map_err(|e| CliError::Failed(e.to_string()))?;
    let rows: Vec<Row> = listing
        .into_iter()
        .map(|l| match l.manifest {
            Ok(m) => {
                let (signature, signature_detail) = match &l.signature {
                    Some(SignatureStatus::Verified { key }) => ("verified", Some(key.clone())),
                    Some(SignatureStatus::Invalid { reason }) => ("invalid", Some(reason.clone())),
                    Some(SignatureStatus::Unsigned) | None => ("unsigned", None),
                };
                let min_lock = m
                    .objects
                    .iter()
                    .filter_map(|o| o.lock.retain_until.map(|t| (t, o.lock.mode.clone())))
                    .min();
                Row {
                    job: l.snapshot.job.clone(),
                    id: l.snapshot.id.to_string(),
                    ok: true,
                    error: None,
                    signature: Some(signature),
                    signature_detail,
                    started_at: Some(m.started_at.to_rfc3339()),
                    finished_at: Some(m.finished_at.to_rfc3339()),
                    payload_bytes: m.payload_bytes(),
                    stored_bytes: m.stored_bytes(),
                    objects: m.objects.iter().map(|o| o.name.clone()).collect(),
                    databases: m.source.databases.clone(),
                    lock_mode: min_lock.as_ref().map(|(_, mode)| mode.clone()),
                    retain_until: min_lock.map(|(t, _)| t.to_rfc3339()),
                }
            }
            Err(e) => Row {
                job: l.snapshot.job.clone(),
                id: l.snapshot.id.to_string(),
                ok: false,
                error: Some(e.to_string()),
                signature: None,
                signature_detail: None,
                started_at: None,
                finished_at: None,
                payload_bytes: 0,
                stored_bytes: 0,
                objects: Vec::new(),
                databases: Vec::new(),
                lock_mode: None,
                retain_until: None,
            },
        })
        .collect();
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&rows).unwrap_or_default()
        );
        return Ok(());
    }
    if rows.is_empty() {
        println!("no snapshots in store {}", store_cfg.name);
        return Ok(());
    }
    println!(
        "{:<45} {:>10} {:>10}  {:<26} {:<9} DATABASES",
        "SNAPSHOT", "DATA", "STORED", "LOCKED UNTIL", "SIGNATURE"
    );
    for r in &rows {
        if let Some(e) = &r.error {
            println!("{:<45} UNREADABLE: {e}", format!("{}/{}", r.job, r.id));
            continue;
        }
        println!(
            "{:<45} {:>10} {:>10}  {:<26} {:<9} {}",
            format!("{}/{}", r.job, r.id),
            human(r.payload_bytes),
            human(r.stored_bytes),
            match (&r.lock_mode, &r.retain_until) {
                (Some(m), Some(t)) => format!("{m} {}", t.get(..19).unwrap_or(t)),
                _ => "not locked".to_owned(),
            },
            match r.signature {
                Some("invalid") => "INVALID",
                Some(s) => s,
                None => "-",
            },
            r.databases.join(",")
        );
    }
    let unverified = rows
        .iter()
        .filter(|r| r.signature.is_some_and(|s| s != "verified"))
        .count();
    if unverified > 0 {
        println!(
            "{unverified} snapshot(s) are not signed by a trusted key: restore, verify and drill refuse them without \
             --allow-unsigned, and prune neither counts nor deletes them (see docs/runbook.md)"
        );
    }
    Ok(())
}
