//! `lifeboatd check`: validates the config, reaches every store and source, and runs each store's immutability
//! preflight. Each probe is reported on its own line; the command fails if any required probe fails.

use crate::runner::{prepare, signing};
use lifeboat_config::Config;
use lifeboat_core::independence;
use lifeboat_core::source::Source;
use lifeboat_core::store::audit::audit;
use lifeboat_core::store::{AnyStore, ReadStore};

impl Probe {
    fn new(what: String, ok: bool, detail: String) -> Self {
        Self {
            what,
            ok,
            warning: false,
            detail,
        }
    }
}

/// The outcome of one probe.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Probe {
    /// What was checked, e.g. `store offsite: object lock`.
    pub what: String,
    /// Passed? (A warning passes.)
    pub ok: bool,
    /// Passed only because it is not required (e.g. a store with `require_immutable = false`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub warning: bool,
    /// Details or the error.
    pub detail: String,
}

/// Runs every probe and returns them all (never stops at the first failure).
pub async fn run_checks(config: &Config) -> Vec<Probe> {
    let mut probes = Vec::new();
    probes.push(match signing(config) {
        Ok(Some(signer)) => Probe::new(
            "manifest signing".to_owned(),
            true,
            format!(
                "manifests are signed; public key {} (put it in [encryption] signing_public_keys of the restore and drill configs)",
                signer.public_key()
            ),
        ),
        // Not a failure: unsigned mode is allowed, but said loudly.
        Ok(None) => Probe {
            warning: true,
            ..Probe::new(
                "manifest signing".to_owned(),
                true,
                "no [encryption] signing_key_file: manifests are written unsigned, and restores will need \
                 --allow-unsigned; make a key with `lifeboat keygen --signing -o signing.pem`"
                    .to_owned(),
            )
        },
        Err(e) => Probe::new(
            "manifest signing".to_owned(),
            false,
            e.to_string(),
        ),
    });
    for (name, store_cfg) in &config.stores {
        match AnyStore::build(store_cfg).await {
            Err(e) => probes.push(Probe::new(
                format!("store {name}: credentials"),
                false,
                e.to_string(),
            )),
            Ok(store) => {
                match store.list("snapshots/").await {
                    Ok(objects) => probes.push(Probe::new(
                        format!("store {name}: reachable"),
                        true,
                        format!("{} snapshot objects listed", objects.len()),
                    )),
                    Err(e) => probes.push(Probe::new(
                        format!("store {name}: reachable"),
                        false,
                        e.to_string(),
                    )),
                }
                let report = audit(&store, store_cfg).await;
                for p in &report.probes {
                    let detail = match &p.fix {
                        Some(fix) => format!("{}; fix: {fix}", p.detail),
                        None => p.detail.clone(),
                    };
                    let what = format!("store {name}: immutability: {}", p.probe);
                    if p.ok || store_cfg.require_immutable {
                        probes.push(Probe::new(what, p.ok, detail));
                    } else {
                        probes.push(Probe {
                            warning: true,
                            ..Probe::new(
                                what,
                                true,
                                format!("not required (require_immutable = false): {detail}"),
                            )
                        });
                    }
                }
            }
        }
    }
    for (name, job) in &config.jobs {
        for store_cfg in job.stores.iter().filter_map(|s| config.stores.get(s)) {
            let findings = independence::check(job, store_cfg);
            let what = format!("job {name}: independent of store {}", store_cfg.name);
            if !findings.errors.is_empty() {
                probes.push(Probe::new(what, false, findings.errors.join("; ")));
            } else if !findings.warnings.is_empty() {
                probes.push(Probe {
                    warning: true,
                    ..Probe::new(what, true, findings.warnings.join("; "))
                });
            } else {
                probes.push(Probe::new(
                    what,
                    true,
                    "the store is neither on the source's filesystem nor on its host".to_owned(),
                ));
            }
        }
    }
    for name in config.jobs.keys() {
        match prepare(config, name).await {
            Err(e) => probes.push(Probe::new(
                format!("job {name}: configuration"),
                false,
                e.to_string(),
            )),
            Ok(mut job) => match job.source.prepare().await {
                Ok(plan) => probes.push(Probe::new(
                    format!("job {name}: source"),
                    true,
                    match &plan.identity.path {
                        Some(path) => format!(
                            "directory {path} on {}, {}",
                            plan.identity.host,
                            plan.identity.tools.join(", ")
                        ),
                        None => format!(
                            "PostgreSQL {} at {}:{}, {} database(s), {}",
                            plan.identity.server_version,
                            plan.identity.host,
                            plan.identity.port,
                            plan.identity.databases.len(),
                            plan.identity.tools.join(", ")
                        ),
                    },
                )),
                Err(e) => probes.push(Probe::new(
                    format!("job {name}: source"),
                    false,
                    e.to_string(),
                )),
            },
        }
    }
    probes
}
