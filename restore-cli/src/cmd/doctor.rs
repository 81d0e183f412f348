//! `lifeboat doctor`: checks a host or pod the way an operator would (config, keys, stores reachable, immutable and
//! on time, sources and their pg_dump) and prints the fix of each problem; optionally checks an age identity too.

use super::{load_config, CliError};
use lifeboat_core::doctor::{examine, render, Options, Probe};
use lifeboat_core::pipeline::{decode, encode_to_vec, EncodeSettings};
use lifeboat_core::recipients::load_recipients;
use lifeboat_core::restore::load_identities;
use std::path::{Path, PathBuf};
use tokio_util::sync::CancellationToken;

/// Arguments of `lifeboat doctor`.
#[derive(clap::Args, Debug)]
pub struct DoctorArgs {
    /// Do not write the immutability canary: only read each bucket's Object Lock configuration (for reader or
    /// drill credentials, which may not write).
    #[arg(long)]
    read_only: bool,
    /// Also check that this age identity file can decrypt what the configured recipients encrypt (drill hosts).
    #[arg(long, short = 'i', value_name = "FILE")]
    identity: Option<PathBuf>,
    /// Print the probes as JSON.
    #[arg(long)]
    json: bool,
}

/// Runs the command.
pub async fn run(config_path: &Path, args: DoctorArgs) -> Result<(), CliError> {
    let config = load_config(config_path)?;
    let mut probes = vec![Probe {
        what: "configuration".to_owned(),
        ok: true,
        warning: false,
        detail: format!("{} is valid", config.origin),
    }];
    if let Some(path) = &args.identity {
        probes.push(identity_probe(&config, path).await);
    }
    probes.extend(
        examine(
            &config,
            Options {
                canary: !args.read_only,
            },
        )
        .await,
    );
    if args.json {
        let text = serde_json::to_string_pretty(&probes)
            .map_err(|e| CliError::Failed(format!("encoding the report: {e}")))?;
        println!("{text}");
    } else {
        print!("{}", render(&probes));
    }
    let failed: Vec<&str> = probes
        .iter()
        .filter(|p| !p.ok)
        .map(|p| p.what.as_str())
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(CliError::Failed(format!(
            "{} problem(s): {}",
            failed.len(),
            failed.join(", ")
        )))
    }
}

/// Encrypts a few bytes to the configured recipients and decrypts them with the identity.
async fn identity_probe(config: &lifeboat_config::Config, path: &Path) -> Probe {
    let what = format!("identity {}", path.display());
    let fail = |detail: String| Probe {
        what: what.clone(),
        ok: false,
        warning: false,
        detail,
    };
    let identities = match load_identities(path) {
        Ok(i) => i,
        Err(e) => return fail(e.to_string()),
    };
    let recipients = match load_recipients(&config.encryption) {
        Ok(r) => r,
        Err(e) => return fail(e.to_string()),
    };
    let outcome = tokio::task::spawn_blocking(move || {
        let (_, sealed) = encode_to_vec(
            b"lifeboat doctor",
            &recipients,
            EncodeSettings {
                level: 1,
                threads: 0,
            },
        )?;
        let (_, plain) = decode(
            sealed.as_slice(),
            &identities,
            Vec::new(),
            &CancellationToken::new(),
        )?;
        Ok::<_, lifeboat_core::pipeline::PipelineError>(plain)
    })
    .await;
    match outcome {
        Ok(Ok(plain)) if plain == b"lifeboat doctor" => Probe {
            what,
            ok: true,
            warning: false,
            detail: "decrypts what the configured recipients encrypt".to_owned(),
        },
        Ok(Ok(_)) => fail("decrypted to other bytes; report this as a bug".to_owned()),
        Ok(Err(e)) => fail(format!(
            "{e}; fix: use the identity of one of [encryption] recipients, or add this identity's public key \
             (`age-keygen -y FILE`) to the daemon's recipients (new backups only)"
        )),
        Err(e) => fail(format!("internal error: {e}")),
    }
}
