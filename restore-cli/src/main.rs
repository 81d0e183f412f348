//! `lifeboat`: the restore CLI on-call engineers run — list, verify, restore and drill snapshots, generate keys.
//! Argument parsing and exit codes only; each subcommand lives in `cmd/`, the work in `lifeboat-core`.

mod cmd;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// Exit code for success.
const EXIT_OK: i32 = 0;
/// Exit code when an operation failed.
const EXIT_FAILED: i32 = 1;
/// Exit code for usage or configuration errors.
const EXIT_USAGE: i32 = 2;

/// Lifeboat's restore tool: list, verify, restore and drill snapshots written by lifeboatd.
#[derive(Parser, Debug)]
#[command(
    name = "lifeboat",
    version,
    after_help = "Examples:\n  lifeboat --config /etc/lifeboat/lifeboat.toml snapshots --job main-db\n  lifeboat restore main-db/latest --identity key.txt --to-database postgres://postgres@localhost/app_restored\n\nExit codes: 0 ok, 1 operation failed, 2 usage or config error."
)]
struct Args {
    /// Configuration file (the same format as the daemon's; only [stores] are needed).
    #[arg(
        long,
        short = 'c',
        env = "LIFEBOAT_CONFIG",
        default_value = "/etc/lifeboat/lifeboat.toml",
        global = true
    )]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// List complete snapshots (those with a manifest), oldest first.
    #[command(
        after_help = "Examples:\n  lifeboat snapshots\n  lifeboat snapshots --job main-db --json"
    )]
    Snapshots(cmd::snapshots::SnapshotsArgs),
    /// Restore a snapshot into a new database or a new file.
    #[command(
        after_help = "Examples:\n  lifeboat restore main-db/20261126T011530Z-k3v9qa --identity key.txt --to-database postgres://postgres@localhost:5432/app_restored\n  lifeboat restore main-db/latest --identity key.txt --to-file app.dump --database app\n  lifeboat restore main-db/latest --identity key.txt --to-database postgres://postgres@localhost/app --confirm app\n  lifeboat restore uploads/latest --identity key.txt --to-dir /srv/uploads-restored\n\nThe target database is created if absent. A database that already has tables, an existing file, or a\nnon-empty directory is only written with --confirm naming it exactly."
    )]
    Restore(cmd::restore::RestoreArgs),
    /// Check a snapshot: stored sizes, SHA-256, versions and locks; with --identity also decrypt and check formats.
    #[command(
        after_help = "Examples:\n  lifeboat verify main-db/latest                      # anyone with read access\n  lifeboat verify --latest --job main-db --identity key.txt\n  lifeboat verify main-db/20261126T011530Z-k3v9qa --json --no-record\n\nExit 0 only if every check passed. The result is stored under verifications/ (unless --no-record)."
    )]
    Verify(cmd::verify::VerifyArgs),
    /// Test-restore the newest snapshot of each PostgreSQL job into a throw-away PostgreSQL and check the data.
    #[command(
        after_help = "Examples:\n  lifeboat drill --identity key.txt\n  lifeboat drill --job main-db --identity key.txt --textfile /var/lib/prometheus/node-exporter/lifeboat-drill.prom\n\nChecks: the restore succeeds, every table of the catalog exists with the exact row count taken at dump\ntime, and the job's [jobs.NAME.drill] checks hold. Exit 0 only if every drilled job passed."
    )]
    Drill(cmd::drill::DrillArgs),
    /// Delete the snapshots a job's keep_* policy no longer keeps, once their locks have expired (admin credentials).
    #[command(
        after_help = "Examples:\n  lifeboat --config admin.toml prune --dry-run\n  lifeboat --config admin.toml prune --job main-db --json\n\nNever deletes a snapshot whose lock is in force, the newest one, or the newest keep_min (default 3).\nA snapshot's manifest is deleted first, so an interrupted prune never leaves a listed snapshot behind\nthat cannot be restored."
    )]
    Prune(cmd::prune::PruneArgs),
    /// Copy a snapshot to another store without decrypting it (seed a new store, repair a second copy).
    #[command(
        after_help = "Examples:\n  lifeboat copy main-db/latest --to other-cloud\n  lifeboat copy main-db/20261126T011530Z-k3v9qa --from offsite --to other-cloud --json\n\nEvery object is streamed in its stored (encrypted) form and checked against the manifest's SHA-256\nbefore its upload completes; the target's manifest is written last, so an interrupted copy leaves no\nlisted snapshot behind, and running it again keeps the objects already copied. Objects are locked with\nthe target store's lock_mode and retention, counted from the copy."
    )]
    Copy(cmd::copy::CopyArgs),
    /// Check this host or pod: config, keys, stores (reachable, immutable, clock), sources; prints each fix.
    #[command(
        after_help = "Examples:\n  lifeboat --config /etc/lifeboat/lifeboat.toml doctor                 # daemon host: full immutability preflight\n  lifeboat --config drill.toml doctor --read-only --identity key.txt   # drill host: reader credentials\n\nExit 0 when nothing failed (warnings pass), 1 when a probe failed, 2 on a usage or config error."
    )]
    Doctor(cmd::doctor::DoctorArgs),
    /// Generate an age identity (or, with --signing, the daemon's Ed25519 manifest-signing key) into a new file (mode 0600) and print its public key.
    #[command(
        after_help = "Examples:\n  lifeboat keygen --output /secure/lifeboat-key.txt   # put the printed age1… key in encryption.recipients\n  lifeboat keygen --signing --output /etc/lifeboat/signing.pem   # daemon's signing_key_file; put the printed ed25519:… key in signing_public_keys"
    )]
    Keygen(cmd::keygen::KeygenArgs),
    /// Set up a store's bucket (admin credentials): `store init STORE` creates or checks it and prints policies.
    #[command(
        after_help = "Examples:\n  lifeboat --config admin.toml store init offsite --write-policies ./policies\n  lifeboat --config admin.toml store init offsite --json"
    )]
    Store(cmd::store::StoreArgs),
}

fn main() -> ExitCode {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("lifeboat: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_FAILED as u8);
        }
    };
    let result = runtime.block_on(async {
        match args.command {
            Command::Snapshots(a) => cmd::snapshots::run(&args.config, a).await,
            Command::Restore(a) => cmd::restore::run(&args.config, a).await,
            Command::Verify(a) => cmd::verify::run(&args.config, a).await,
            Command::Drill(a) => cmd::drill::run(&args.config, a).await,
            Command::Prune(a) => cmd::prune::run(&args.config, a).await,
            Command::Copy(a) => cmd::copy::run(&args.config, a).await,
            Command::Doctor(a) => cmd::doctor::run(&args.config, a).await,
            Command::Keygen(a) => cmd::keygen::run(a),
            Command::Store(a) => cmd::store::run(&args.config, a).await,
        }
    });
    match result {
        Ok(()) => ExitCode::from(EXIT_OK as u8),
        Err(e) => {
            eprintln!("lifeboat: {e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}
