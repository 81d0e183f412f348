//! `lifeboatd check`: validates the config, reaches every store and source, and reports Object Lock status.
//! Each probe is reported on its own line; the command fails if any probe fails.

use crate::runner::{prepare, signing};
use lifeboat_config::{Config, LockMode};
use lifeboat_core::source::Source;
use lifeboat_core::store::{AnyStore, ReadStore};

/// The outcome of one probe.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Probe {
    /// What was checked, e.g. `store offsite: object lock`.
    pub what: String,
    /// Passed?
    pub ok: bool,
    /// Details or the error.
    pub detail: String,
}

/// Runs every probe and returns them all (never stops at the first failure).
pub async fn run_checks(config: &Config) -> Vec<Probe> {
    let mut probes = Vec::new();
    probes.push(match signing(config) {
        Ok(Some(signer)) => Probe {
            what: "manifest signing".to_owned(),
            ok: true,
            detail: format!(
                "manifests are signed; public key {} (put it in [encryption] signing_public_keys of the restore and drill configs)",
                signer.public_key()
            ),
        },
        // Not a failure: unsigned mode is allowed, but said loudly.
        Ok(None) => Probe {
            what: "manifest signing".to_owned(),
            ok: true,
            detail: "WARNING: no [encryption] signing_key_file: manifests are written unsigned, and restores will \
                     need --allow-unsigned; make a key with `lifeboat keygen --signing -o signing.pem`"
                .to_owned(),
        },
        Err(e) => Probe {
            what: "manifest signing".to_owned(),
            ok: false,
            detail: e.to_string(),
        },
    });
    for (name, store_cfg) in &config.stores {
        match AnyStore::build(store_cfg).await {
            Err(e) => probes.push(Probe {
                what: format!("store {name}: credentials"),
                ok: false,
                detail: e.to_string(),
            }),
            Ok(store) => {
                match store.list("snapshots/").await {
                    Ok(objects) => probes.push(Probe {
                        what: format!("store {name}: reachable"),
                        ok: true,
                        detail: format!("{} snapshot objects listed", objects.len()),
                    }),
                    Err(e) => probes.push(Probe {
                        what: format!("store {name}: reachable"),
                        ok: false,
                        detail: e.to_string(),
                    }),
                }
                match store.lock_status().await {
                    Ok(status) => probes.push(Probe {
                        what: format!("store {name}: object lock"),
                        ok: status.enabled || store_cfg.lock.mode == LockMode::None,
                        detail: if !status.enabled && store_cfg.lock.mode != LockMode::None {
                            format!("{}; backups into this store will be refused until Object Lock is enabled (or lock_mode = \"none\")", status.detail)
                        } else {
                            status.detail
                        },
                    }),
                    Err(e) => probes.push(Probe {
                        what: format!("store {name}: object lock"),
                        ok: false,
                        detail: e.to_string(),
                    }),
                }
            }
        }
    }
    for name in config.jobs.keys() {
        match prepare(config, name).await {
            Err(e) => probes.push(Probe {
                what: format!("job {name}: configuration"),
                ok: false,
                detail: e.to_string(),
            }),
            Ok(mut job) => match job.source.prepare().await {
                Ok(plan) => probes.push(Probe {
                    what: format!("job {name}: source"),
                    ok: true,
                    detail: format!(
                        "PostgreSQL {} at {}:{}, {} database(s), {}",
                        plan.identity.server_version,
                        plan.identity.host,
                        plan.identity.port,
                        plan.identity.databases.len(),
                        plan.identity.tools.join(", ")
                    ),
                }),
                Err(e) => probes.push(Probe {
                    what: format!("job {name}: source"),
                    ok: false,
                    detail: e.to_string(),
                }),
            },
        }
    }
    probes
}
