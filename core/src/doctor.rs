//! `lifeboat doctor` and `lifeboatd check`: examines a host or pod the way an operator would — keys well-formed,
//! every store reachable, immutable and on the same clock, every job independent of its stores and its source
//! reachable with a fitting `pg_dump` — and says how to fix each problem. Never stops at the first one.

use crate::independence;
use crate::recipients::load_recipients;
use crate::snapshot::ManifestSigner;
use crate::source::{AnySource, Source};
use crate::store::audit::audit;
use crate::store::{AnyStore, ReadStore};
use chrono::{DateTime, Utc};
use lifeboat_config::{Config, LockMode, StoreConfig};

/// The largest clock difference with a store that is accepted: lock dates are the store's, computed from ours.
pub const MAX_CLOCK_SKEW_SECONDS: i64 = 60;

/// The outcome of one probe.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Probe {
    /// What was checked, e.g. `store offsite: reachable`.
    pub what: String,
    /// Passed? (A warning passes.)
    pub ok: bool,
    /// Passed only because it is not required, or worth knowing (e.g. a single recipient).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub warning: bool,
    /// Details or the error, with the fix where there is one.
    pub detail: String,
}

impl Probe {
    fn ok(what: String, detail: String) -> Self {
        Self {
            what,
            ok: true,
            warning: false,
            detail,
        }
    }

    fn warn(what: String, detail: String) -> Self {
        Self {
            what,
            ok: true,
            warning: true,
            detail,
        }
    }

    fn fail(what: String, detail: String) -> Self {
        Self {
            what,
            ok: false,
            warning: false,
            detail,
        }
    }

    /// `ok  `, `warn` or `FAIL`.
    pub fn label(&self) -> &'static str {
        match (self.ok, self.warning) {
            (true, false) => "ok  ",
            (true, true) => "warn",
            (false, _) => "FAIL",
        }
    }
}

/// What to examine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Run the full immutability preflight, which writes a small locked canary (writer credentials). Without it
    /// only the bucket's Object Lock configuration is read (reader credentials).
    pub canary: bool,
}

/// Runs every probe and returns them all.
pub async fn examine(config: &Config, options: Options) -> Vec<Probe> {
    let mut probes = keys(config);
    for store_cfg in config.stores.values() {
        store(store_cfg, options, &mut probes).await;
    }
    for (name, job) in &config.jobs {
        for store_cfg in job.stores.iter().filter_map(|s| config.stores.get(s)) {
            let findings = independence::check(job, store_cfg);
            let what = format!("job {name}: independent of store {}", store_cfg.name);
            probes.push(if !findings.errors.is_empty() {
                Probe::fail(what, findings.errors.join("; "))
            } else if !findings.warnings.is_empty() {
                Probe::warn(what, findings.warnings.join("; "))
            } else {
                Probe::ok(
                    what,
                    "the store is neither on the source's filesystem nor on its host".to_owned(),
                )
            });
        }
        let what = format!("job {name}: source");
        let mut source = match AnySource::from_config(name, &job.source, &config.daemon.pg_bin_dirs)
        {
            Ok(s) => s,
            Err(e) => {
                probes.push(Probe::fail(format!("job {name}: configuration"), e));
                continue;
            }
        };
        probes.push(match source.prepare().await {
            Ok(plan) => Probe::ok(
                what,
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
            ),
            Err(e) => Probe::fail(what, e.to_string()),
        });
    }
    probes
}

/// The encryption recipients and the signing key.
fn keys(config: &Config) -> Vec<Probe> {
    let mut probes = Vec::new();
    let what = "encryption: recipients".to_owned();
    probes.push(match load_recipients(&config.encryption) {
        Ok(r) if r.len() == 1 => Probe::warn(
            what,
            "one age recipient: if its identity is lost, every backup is lost with it; add a second one, kept \
             offline (break-glass), to [encryption] recipients"
                .to_owned(),
        ),
        Ok(r) => Probe::ok(
            what,
            format!("{} age recipients; any one identity can restore", r.len()),
        ),
        Err(e) => Probe::fail(what, e.to_string()),
    });
    let what = "manifest signing".to_owned();
    probes.push(match ManifestSigner::from_config(&config.encryption) {
        Ok(Some(signer)) => Probe::ok(
            what,
            format!(
                "manifests are signed; public key {} (put it in [encryption] signing_public_keys of the restore \
                 and drill configs)",
                signer.public_key()
            ),
        ),
        // Not a failure: unsigned mode is allowed, but said loudly.
        Ok(None) => Probe::warn(
            what,
            "no [encryption] signing_key_file here: this config writes no signatures (right for a restore or \
             drill host; on the daemon's host, restores would need --allow-unsigned); make a key with \
             `lifeboat keygen --signing -o signing.pem`"
                .to_owned(),
        ),
        Err(e) => Probe::fail(what, e.to_string()),
    });
    probes
}

/// One store: credentials, reachability, clock, immutability.
async fn store(cfg: &StoreConfig, options: Options, probes: &mut Vec<Probe>) {
    let name = &cfg.name;
    let store = match AnyStore::build(cfg).await {
        Ok(s) => s,
        Err(e) => {
            probes.push(Probe::fail(
                format!("store {name}: credentials"),
                e.to_string(),
            ));
            return;
        }
    };
    let what = format!("store {name}: reachable");
    probes.push(match store.list("snapshots/").await {
        Ok(objects) => Probe::ok(what, format!("{} snapshot objects listed", objects.len())),
        Err(e) => Probe::fail(what, e.to_string()),
    });
    if let AnyStore::S3(s3) = &store {
        let what = format!("store {name}: clock");
        probes.push(match s3.server_time().await {
            Ok((before, server, after)) => clock_probe(what, before, server, after),
            Err(e) => Probe::fail(what, e.to_string()),
        });
    }
    if options.canary {
        let report = audit(&store, cfg).await;
        for p in &report.probes {
            let detail = match &p.fix {
                Some(fix) => format!("{}; fix: {fix}", p.detail),
                None => p.detail.clone(),
            };
            let what = format!("store {name}: immutability: {}", p.probe);
            probes.push(if p.ok {
                Probe::ok(what, detail)
            } else if cfg.require_immutable {
                Probe::fail(what, detail)
            } else {
                Probe::warn(
                    what,
                    format!("not required (require_immutable = false): {detail}"),
                )
            });
        }
        return;
    }
    let what = format!("store {name}: object lock");
    probes.push(match store.lock_status().await {
        Ok(status) if status.enabled || cfg.lock.mode == LockMode::None => Probe::warn(
            what,
            format!(
                "{}; the canary probes were not run (read-only): run `lifeboat store audit {name}` with the \
                 daemon's credentials to prove they cannot delete or unlock",
                status.detail
            ),
        ),
        Ok(status) => Probe::fail(
            what,
            format!(
                "{}; backups into this store will be refused; fix: `lifeboat store init {name}` with admin \
                 credentials (a bucket without Object Lock needs a new bucket)",
                status.detail
            ),
        ),
        Err(e) => Probe::fail(what, e.to_string()),
    });
}

/// Judges the store's clock (`server`, whole seconds) against ours, read just `before` and `after` the request.
fn clock_probe(
    what: String,
    before: DateTime<Utc>,
    server: DateTime<Utc>,
    after: DateTime<Utc>,
) -> Probe {
    let local = before + (after - before) / 2;
    // The Date header has whole seconds: round ours the same way before comparing.
    let skew = server.timestamp() - local.timestamp();
    let detail = format!(
        "the store's clock is {} s {} this host's (request took {} ms)",
        skew.abs(),
        if skew >= 0 { "ahead of" } else { "behind" },
        (after - before).num_milliseconds()
    );
    if skew.abs() > MAX_CLOCK_SKEW_SECONDS {
        Probe::fail(
            what,
            format!(
                "{detail}: more than {MAX_CLOCK_SKEW_SECONDS} s, so lock dates and schedules drift; fix: \
                 synchronise this host's clock (chrony, systemd-timesyncd, or the node's NTP)"
            ),
        )
    } else {
        Probe::ok(what, detail)
    }
}

/// The probes as text, one line each: `ok  `/`warn`/`FAIL`, what, detail.
pub fn render(probes: &[Probe]) -> String {
    probes
        .iter()
        .map(|p| format!("{} {}: {}\n", p.label(), p.what, p.detail))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clock_more_than_a_minute_off_fails_with_the_fix() {
        let t = |s: i64| DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap();
        let ok = clock_probe("c".into(), t(0), t(59), t(0));
        assert!(ok.ok && ok.detail.contains("59 s ahead of"), "{ok:?}");
        let behind = clock_probe("c".into(), t(0), t(-61), t(0));
        assert!(
            !behind.ok && behind.detail.contains("61 s behind"),
            "{behind:?}"
        );
        assert!(behind.detail.contains("fix: synchronise"), "{behind:?}");
        // The request's own duration is taken into account: the midpoint is compared.
        let slow = clock_probe("c".into(), t(0), t(70), t(20));
        assert!(slow.ok, "{slow:?}");
    }

    #[test]
    fn text_output_has_one_labelled_line_per_probe() {
        let probes = vec![
            Probe::ok("a".into(), "fine".into()),
            Probe::warn("b".into(), "hmm".into()),
            Probe::fail("c".into(), "broken; fix: this".into()),
        ];
        assert_eq!(
            render(&probes),
            "ok   a: fine\nwarn b: hmm\nFAIL c: broken; fix: this\n"
        );
    }
}
