//! `lifeboatd`: Lifeboat's backup daemon binary — argument parsing, logging and exit codes only.
//! The work is in the `lifeboat_daemon` library and `lifeboat-core`.

use clap::{Parser, Subcommand, ValueEnum};
use lifeboat_daemon::{check, runner, service, worker, EXIT_FAILED, EXIT_OK, EXIT_USAGE};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

/// Lifeboat's backup daemon: streams PostgreSQL dumps, compressed and encrypted, into Object-Locked storage.
#[derive(Parser, Debug)]
#[command(
    name = "lifeboatd",
    version,
    after_help = "Without a command, lifeboatd runs every job on its schedule and serves /metrics, /healthz and /readyz\non [daemon] listen until SIGTERM or SIGINT (running backups get [daemon] shutdown_grace to finish);\nSIGHUP reloads the configuration (an invalid one is rejected and the running one kept).\n\nExamples:\n  lifeboatd --config /etc/lifeboat/lifeboat.toml\n  lifeboatd --config /etc/lifeboat/lifeboat.toml run main-db\n  lifeboatd --config /etc/lifeboat/lifeboat.toml check\n\nExit codes: 0 ok, 1 operation failed, 2 usage or config error."
)]
struct Args {
    /// Configuration file.
    #[arg(
        long,
        short = 'c',
        env = "LIFEBOAT_CONFIG",
        default_value = "/etc/lifeboat/lifeboat.toml",
        global = true
    )]
    config: PathBuf,
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Back up the named jobs now, one after the other; prints each snapshot id on stdout.
    #[command(after_help = "Example:\n  lifeboatd --config config/quickstart.toml run local-db")]
    Run {
        /// Job names from the config's [jobs.NAME] tables.
        #[arg(required = true)]
        jobs: Vec<String>,
    },
    /// Validate the config and reach every store and source; report Object Lock status.
    #[command(after_help = "Example:\n  lifeboatd --config /etc/lifeboat/lifeboat.toml check")]
    Check {
        /// Print the probes as JSON.
        #[arg(long)]
        json: bool,
    },
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,aws_config=warn,aws_smithy_runtime=warn")
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    init_logging(args.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("lifeboatd: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_FAILED as u8);
        }
    };
    let code = runtime.block_on(run(args));
    ExitCode::from(code as u8)
}

async fn run(args: Args) -> i32 {
    let config = match lifeboat_config::load(&args.config) {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("lifeboatd: invalid configuration:\n{errors}");
            return EXIT_USAGE;
        }
    };
    match args.command {
        None => {
            match runner::signing(&config) {
                Ok(Some(signer)) => {
                    tracing::info!(public_key = %signer.public_key(), "Manifests will be signed.")
                }
                Ok(None) => tracing::warn!(
                    "No [encryption] signing_key_file: manifests will be written unsigned, restores will need --allow-unsigned, and staleness counts every snapshot."
                ),
                Err(e) => tracing::error!(error = %e, "The manifest-signing key does not load: every backup run will fail until it is fixed."),
            }
            service::run(args.config, config).await
        }
        Some(Command::Run { jobs }) => {
            for name in &jobs {
                if let Err(e) = runner::job(&config, name) {
                    eprintln!("lifeboatd: {e}");
                    return EXIT_USAGE;
                }
            }
            let cancel = CancellationToken::new();
            let on_signal = cancel.clone();
            tokio::spawn(async move {
                if tokio::signal::ctrl_c().await.is_ok() {
                    tracing::warn!(
                        "Interrupted: cancelling the running backup (no manifest will be written)."
                    );
                    on_signal.cancel();
                }
            });
            let mut code = EXIT_OK;
            let audits = lifeboat_daemon::audit::Audits::new(None);
            for name in &jobs {
                let timeout = config.jobs.get(name).and_then(|j| j.run.timeout);
                match worker::one_attempt(&config, name, timeout, &cancel, &audits).await {
                    Ok(report) => println!("{}", report.snapshot.id),
                    Err(e) => {
                        eprintln!("lifeboatd: job {name}: {e}");
                        code = code.max(e.exit_code());
                    }
                }
            }
            code
        }
        Some(Command::Check { json }) => {
            let probes = check::run_checks(&config).await;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&probes).unwrap_or_default()
                );
            } else {
                print!("{}", lifeboat_core::doctor::render(&probes));
            }
            if probes.iter().all(|p| p.ok) {
                EXIT_OK
            } else {
                EXIT_FAILED
            }
        }
    }
}
