//! `lifeboat store init` creates or checks an S3 bucket with admin credentials and prints the roles' policies;
//! `lifeboat store audit` runs the immutability preflight with whatever credentials the config gives.

use super::{load_config, open_store, CliError};
use lifeboat_config::StoreKind;
use lifeboat_core::store::audit::{audit, AuditReport};
use lifeboat_core::store::setup::{init_s3, role_policies, InitReport, Outcome, RolePolicies};
use lifeboat_core::store::AnyStore;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Arguments of `lifeboat store`.
#[derive(clap::Args, Debug)]
pub struct StoreArgs {
    #[command(subcommand)]
    command: StoreCommand,
}

#[derive(clap::Subcommand, Debug)]
enum StoreCommand {
    /// Create the bucket with Object Lock (or check it), set versioning, default retention, public access block
    /// and lifecycle rules, and print the writer / drill / admin policies. Safe to run again.
    #[command(
        after_help = "Examples:\n  lifeboat --config admin.toml store init offsite --write-policies ./policies\n  lifeboat --config admin.toml store init offsite --json\n\nRun with the store's admin credentials. Exit 0 when every required step is ok, changed or already\nas configured; 1 when one failed (each failure names its fix)."
    )]
    Init(InitArgs),
    /// Prove the store is immutable for the configured credentials: Object Lock with the expected default, then a
    /// locked canary under canary/ that these credentials must fail to delete, hide or unlock early, and bucket
    /// lock and lifecycle settings they must fail to change.
    #[command(
        after_help = "Examples:\n  lifeboat --config /etc/lifeboat/lifeboat.toml store audit offsite\n  lifeboat --config writer.toml store audit offsite --json\n\nRun it with the credentials you want to audit (the daemon's: the same config file). Exit 0 when every\nprobe passed, 1 when one failed (each failure names its fix), 2 on a usage or config error.\nThe canary is a few hundred bytes, locked for one day; the bucket's lifeboat-canary lifecycle rule expires it."
    )]
    Audit(AuditArgs),
}

/// Arguments of `lifeboat store audit`.
#[derive(clap::Args, Debug)]
struct AuditArgs {
    /// The store (`[stores.NAME]`) to audit.
    store: String,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Arguments of `lifeboat store init`.
#[derive(clap::Args, Debug)]
struct InitArgs {
    /// The store (`[stores.NAME]`) to set up; it must be `kind = "s3"`.
    store: String,
    /// Also write the policies to this directory (created if missing): ROLE-iam.json, ROLE-bucket-policy.json.
    #[arg(long, value_name = "DIR")]
    write_policies: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct JsonOut<'a> {
    ok: bool,
    #[serde(flatten)]
    report: &'a InitReport,
    policies: &'a [RolePolicies],
    #[serde(skip_serializing_if = "Vec::is_empty")]
    policy_files: Vec<String>,
}

/// Runs `lifeboat store …`.
pub async fn run(config_path: &Path, args: StoreArgs) -> Result<(), CliError> {
    match args.command {
        StoreCommand::Init(a) => init(config_path, a).await,
        StoreCommand::Audit(a) => run_audit(config_path, a).await,
    }
}

/// Prints an audit report as text: one line per probe, its fix under each failure.
pub fn print_audit(report: &AuditReport) {
    println!(
        "store {}: {}",
        report.store,
        if report.immutable {
            "IMMUTABLE for these credentials"
        } else {
            "NOT immutable for these credentials"
        }
    );
    for p in &report.probes {
        println!(
            "  {:<6} {}: {}",
            if p.ok { "ok" } else { "FAILED" },
            p.probe,
            p.detail
        );
        if let Some(fix) = &p.fix {
            println!("  {:<6}   fix: {fix}", "");
        }
    }
}

async fn run_audit(config_path: &Path, args: AuditArgs) -> Result<(), CliError> {
    let config = load_config(config_path)?;
    let store_cfg = config.stores.get(&args.store).ok_or_else(|| {
        CliError::Usage(format!(
            "no store named {:?} in the config; stores: {}",
            args.store,
            config.stores.keys().cloned().collect::<Vec<_>>().join(", ")
        ))
    })?;
    let store = open_store(store_cfg).await?;
    let report = audit(&store, store_cfg).await;
    if args.json {
        let text = serde_json::to_string_pretty(&report)
            .map_err(|e| CliError::Failed(format!("encoding the report: {e}")))?;
        println!("{text}");
    } else {
        print_audit(&report);
    }
    if report.immutable {
        Ok(())
    } else {
        Err(CliError::Failed(format!(
            "store {} is not immutable for these credentials: {}",
            report.store,
            report.summary()
        )))
    }
}

fn pretty(v: &serde_json::Value) -> Result<String, CliError> {
    serde_json::to_string_pretty(v)
        .map(|s| s + "\n")
        .map_err(|e| CliError::Failed(format!("encoding a policy: {e}")))
}

fn write_policies(dir: &Path, policies: &[RolePolicies]) -> Result<Vec<String>, CliError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| CliError::Failed(format!("cannot create {}: {e}", dir.display())))?;
    let mut files = Vec::new();
    for p in policies {
        for (suffix, doc) in [("iam", &p.iam), ("bucket-policy", &p.bucket_policy)] {
            let path = dir.join(format!("{}-{suffix}.json", p.role));
            std::fs::write(&path, pretty(doc)?)
                .map_err(|e| CliError::Failed(format!("cannot write {}: {e}", path.display())))?;
            files.push(path.display().to_string());
        }
    }
    Ok(files)
}

async fn init(config_path: &Path, args: InitArgs) -> Result<(), CliError> {
    let config = load_config(config_path)?;
    let names = || config.stores.keys().cloned().collect::<Vec<_>>().join(", ");
    let store_cfg = config.stores.get(&args.store).ok_or_else(|| {
        CliError::Usage(format!(
            "no store named {:?} in the config; stores: {}",
            args.store,
            names()
        ))
    })?;
    let StoreKind::S3(s3_cfg) = &store_cfg.kind else {
        return Err(CliError::Usage(format!(
            "store {} is kind = \"{}\": store init sets up S3 buckets only (an fs store needs no set-up)",
            store_cfg.name,
            store_cfg.kind.as_str()
        )));
    };
    let AnyStore::S3(store) = open_store(store_cfg).await? else {
        return Err(CliError::Usage(format!(
            "store {} did not open as an S3 store",
            store_cfg.name
        )));
    };
    let report = init_s3(&store, s3_cfg, &store_cfg.lock).await;
    let policies = role_policies(&s3_cfg.bucket, &s3_cfg.prefix);
    let files = match &args.write_policies {
        Some(dir) => write_policies(dir, &policies)?,
        None => Vec::new(),
    };
    let failures = report.required_failures();
    if args.json {
        let out = JsonOut {
            ok: failures.is_empty(),
            report: &report,
            policies: &policies,
            policy_files: files,
        };
        let text = serde_json::to_string_pretty(&out)
            .map_err(|e| CliError::Failed(format!("encoding the report: {e}")))?;
        println!("{text}");
    } else {
        println!(
            "store {}: bucket {} (region {}, prefix {:?})",
            report.store, report.bucket, report.region, s3_cfg.prefix
        );
        for s in &report.steps {
            let optional = if s.outcome == Outcome::Failed && !s.required {
                " (optional)"
            } else {
                ""
            };
            println!(
                "  {:<14} {}: {}{optional}",
                s.outcome.label(),
                s.step,
                s.detail
            );
            if let Some(fix) = &s.fix {
                println!("  {:<14}   fix: {fix}", "");
            }
        }
        println!();
        println!(
            "Policies for bucket {} (replace the Principal placeholders WRITER, DRILL, ADMIN with the users' names;\n\
             a bucket has one bucket policy: merge the Statement lists of the roles you apply there):",
            report.bucket
        );
        for p in &policies {
            println!(
                "\n== {} (IAM identity policy: {}-iam.json) ==",
                p.role, p.role
            );
            print!("{}", pretty(&p.iam)?);
            println!(
                "\n== {} (bucket policy, Ceph RGW / MinIO: {}-bucket-policy.json) ==",
                p.role, p.role
            );
            print!("{}", pretty(&p.bucket_policy)?);
        }
        if !files.is_empty() {
            println!("\nWrote:");
            for f in &files {
                println!("  {f}");
            }
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(CliError::Failed(format!(
            "store init: {} required step(s) failed: {}",
            failures.len(),
            failures
                .iter()
                .map(|s| format!(
                    "{} ({}){}",
                    s.step,
                    s.detail,
                    s.fix
                        .as_ref()
                        .map(|f| format!("; fix: {f}"))
                        .unwrap_or_default()
                ))
                .collect::<Vec<_>>()
                .join("; ")
        )))
    }
}
