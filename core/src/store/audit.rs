//! The immutability preflight behind `lifeboat store audit`, `lifeboatd check` and the daemon's periodic audit:
//! proves, with the credentials actually in use, that a locked object can be neither deleted nor unlocked early.
//!
//! It writes a small canary under `canary/` (locked for one day; the bucket's `lifeboat-canary` lifecycle rule
//! expires it), then tries what an attacker holding these credentials would try. Every attempt must be refused;
//! an attempt the store could not answer counts as a failure too (unproven is not immutable).

use super::setup::{access_denied, code, render, retention_days, S3Error};
use super::{mode_name, AnyStore, LockSpec, S3Store, WriteStore};
use crate::snapshot::SnapshotId;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::types::{
    BucketLifecycleConfiguration, ObjectLockConfiguration, ObjectLockEnabled, ObjectLockRetention,
    ObjectLockRetentionMode,
};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use lifeboat_config::{LockMode, StoreConfig};
use serde::Serialize;

/// Where canaries live, relative to the store prefix.
pub const CANARY_DIR: &str = "canary/";

/// Stable probe names (also the `probe` label of `lifeboat_store_audit_probe_ok`).
pub mod probe {
    /// The bucket has Object Lock with the expected default mode and retention.
    pub const OBJECT_LOCK: &str = "object_lock";
    /// A locked canary can be written (and its lock reads back as asked).
    pub const CANARY_WRITE: &str = "canary_write";
    /// Shortening the canary's retention is refused.
    pub const RETENTION_SHORTEN: &str = "retention_shorten";
    /// Deleting the canary's locked version (with the governance bypass header) is refused.
    pub const LOCKED_VERSION_DELETE: &str = "locked_version_delete";
    /// Hiding the canary behind a delete marker is refused.
    pub const DELETE_MARKER: &str = "delete_marker";
    /// Rewriting the bucket's Object Lock configuration is refused.
    pub const LOCK_CONFIG_CHANGE: &str = "lock_config_change";
    /// Rewriting the bucket's lifecycle rules is refused.
    pub const LIFECYCLE_CHANGE: &str = "lifecycle_change";
    /// An fs store is a local directory: never immutable.
    pub const FS_STORE: &str = "fs_store";
    /// Every probe name.
    pub const ALL: &[&str] = &[
        OBJECT_LOCK,
        CANARY_WRITE,
        RETENTION_SHORTEN,
        LOCKED_VERSION_DELETE,
        DELETE_MARKER,
        LOCK_CONFIG_CHANGE,
        LIFECYCLE_CHANGE,
        FS_STORE,
    ];
}

/// The outcome of one probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditProbe {
    /// Probe name (see [`probe`]).
    pub probe: &'static str,
    /// Passed: the store behaved as immutable storage must.
    pub ok: bool,
    /// What was tried and what the store answered.
    pub detail: String,
    /// What to do about a failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl AuditProbe {
    fn pass(probe: &'static str, detail: impl Into<String>) -> Self {
        Self {
            probe,
            ok: true,
            detail: detail.into(),
            fix: None,
        }
    }

    fn fail(probe: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            probe,
            ok: false,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }
}

/// The result of one audit of one store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditReport {
    /// Store name.
    pub store: String,
    /// Every probe passed.
    pub immutable: bool,
    /// When the audit ran.
    pub at: DateTime<Utc>,
    /// The probes, in the order they ran.
    pub probes: Vec<AuditProbe>,
}

impl AuditReport {
    fn new(store: &str, probes: Vec<AuditProbe>) -> Self {
        Self {
            store: store.to_owned(),
            immutable: !probes.is_empty() && probes.iter().all(|p| p.ok),
            at: Utc::now(),
            probes,
        }
    }

    /// A report for a store that could not be audited at all (not built, no answer in time).
    pub fn not_audited(store: &str, why: impl Into<String>, fix: impl Into<String>) -> Self {
        Self::new(store, vec![AuditProbe::fail(probe::OBJECT_LOCK, why, fix)])
    }

    /// The failed probes.
    pub fn failures(&self) -> impl Iterator<Item = &AuditProbe> {
        self.probes.iter().filter(|p| !p.ok)
    }

    /// One line naming each failed probe, what happened and its fix (empty when immutable).
    pub fn summary(&self) -> String {
        self.failures()
            .map(|p| match &p.fix {
                Some(fix) => format!("{} failed: {} (fix: {fix})", p.probe, p.detail),
                None => format!("{} failed: {}", p.probe, p.detail),
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Runs the preflight against `store` (built from `cfg`, with the credentials the caller will use).
/// Never fails as a whole: every problem is a failed probe.
pub async fn audit(store: &AnyStore, cfg: &StoreConfig) -> AuditReport {
    let probes = match store {
        AnyStore::Fs(_) => vec![AuditProbe::fail(
            probe::FS_STORE,
            "an fs store is a local directory: Lifeboat marks its files read-only and refuses early deletes, \
             but any process that can write the directory can delete them",
            "for backups that must survive the host, write to an s3 store with Object Lock \
             (lock_mode = \"compliance\"); keep the fs store as a second copy if you like",
        )],
        AnyStore::S3(s3) => audit_s3(s3, cfg).await,
    };
    AuditReport::new(&cfg.name, probes)
}

/// What the store answered to something it must refuse.
enum Attempt {
    /// It was done: the credentials can do it.
    Allowed,
    /// The store refused with this error.
    Refused(String),
    /// No usable answer (network, 5xx): not proven either way.
    Unknown(String),
}

fn attempt<T, E>(result: Result<T, S3Error<E>>) -> Attempt
where
    E: std::error::Error + ProvideErrorMetadata + 'static,
{
    match result {
        Ok(_) => Attempt::Allowed,
        Err(e) if refused(&e) => Attempt::Refused(render(&e)),
        // Any other answer (a malformed request, a 5xx, no answer) proves nothing either way.
        Err(e) => Attempt::Unknown(render(&e)),
    }
}

/// Whether the store answered "not allowed": 403 (AWS and Ceph RGW answer AccessDenied, for policies and locks
/// alike) or MinIO's `ObjectLocked`. Other 4xx answers (a malformed request, a missing digest) are not a refusal.
fn refused<E: ProvideErrorMetadata>(e: &S3Error<E>) -> bool {
    matches!(e, SdkError::ServiceError(s) if s.raw().status().as_u16() == 403)
        || matches!(code(e), "AccessDenied" | "ObjectLocked")
}

/// Turns an attempt into a probe: refused passes; allowed fails with `allowed_detail`/`fix`.
fn judge(
    name: &'static str,
    tried: &str,
    outcome: Attempt,
    allowed_detail: &str,
    fix: &str,
) -> AuditProbe {
    match outcome {
        Attempt::Refused(why) => AuditProbe::pass(name, format!("{tried}: refused ({why})")),
        Attempt::Allowed => {
            AuditProbe::fail(name, format!("{tried}: ALLOWED; {allowed_detail}"), fix)
        }
        Attempt::Unknown(why) => AuditProbe::fail(
            name,
            format!("{tried}: no usable answer ({why}), so it is not proven that this is refused"),
            "check that the store is reachable and answering, then run the audit again",
        ),
    }
}

fn not_run(name: &'static str, why: &str) -> AuditProbe {
    AuditProbe::fail(
        name,
        format!("not run: {why}"),
        "fix the failed probe before it",
    )
}

async fn audit_s3(store: &S3Store, cfg: &StoreConfig) -> Vec<AuditProbe> {
    let mut probes = Vec::new();
    let later = [
        probe::CANARY_WRITE,
        probe::RETENTION_SHORTEN,
        probe::LOCKED_VERSION_DELETE,
        probe::DELETE_MARKER,
        probe::LOCK_CONFIG_CHANGE,
        probe::LIFECYCLE_CHANGE,
    ];
    if cfg.lock.mode == LockMode::None {
        probes.push(AuditProbe::fail(
            probe::OBJECT_LOCK,
            "lock_mode = \"none\": objects in this store are not locked, so anyone with delete rights can delete them",
            "set lock_mode = \"compliance\" and a retention on a bucket with Object Lock (`lifeboat store init` creates one)",
        ));
        probes.extend(
            later
                .iter()
                .map(|p| not_run(p, "the store is configured without locks")),
        );
        return probes;
    }
    let (lock_probe, lock_config) = object_lock(store, cfg).await;
    let enabled = lock_config.is_some();
    probes.push(lock_probe);
    if !enabled {
        probes.extend(
            later
                .iter()
                .map(|p| not_run(p, "the bucket has no Object Lock")),
        );
        return probes;
    }

    // The canary: the same write path and lock as a snapshot's objects.
    let key = format!("{CANARY_DIR}{}", SnapshotId::new(Utc::now()));
    let retain_until = DateTime::from_timestamp(Utc::now().timestamp() + 86_400, 0);
    let lock = LockSpec {
        mode: cfg.lock.mode,
        retain_until,
    };
    let body = Bytes::from(format!(
        "Lifeboat immutability canary, written {} by the credentials under audit. Locked for one day; \
         the bucket's lifecycle rule `lifeboat-canary` expires it.\n",
        Utc::now().to_rfc3339()
    ));
    let version = match store.put_small(&key, body, &lock).await {
        Ok(receipt) => match receipt.version_id {
            Some(v) => {
                probes.push(AuditProbe::pass(
                    probe::CANARY_WRITE,
                    format!(
                        "wrote {key} (version {v}), locked {} until {}",
                        receipt.lock.mode,
                        receipt
                            .lock
                            .retain_until
                            .map(|t| t.to_rfc3339())
                            .unwrap_or_default()
                    ),
                ));
                v
            }
            None => {
                probes.push(AuditProbe::fail(
                    probe::CANARY_WRITE,
                    format!("wrote {key}, but the store reports no version id, so nothing can be locked"),
                    "Object Lock needs versioning: run `lifeboat store init STORE` with admin credentials",
                ));
                probes.extend(later[1..].iter().map(|p| not_run(p, "no canary version")));
                return probes;
            }
        },
        Err(e) => {
            probes.push(AuditProbe::fail(
                probe::CANARY_WRITE,
                format!("writing a locked canary failed: {e}"),
                "these credentials must be able to write locked objects under the store prefix \
                 (s3:PutObject, s3:PutObjectRetention, s3:GetObjectVersion, s3:GetObjectRetention: the writer policy)",
            ));
            probes.extend(later[1..].iter().map(|p| not_run(p, "no canary")));
            return probes;
        }
    };
    let client = store.client();
    let bucket = store.bucket();
    let full = format!("{}{key}", store.prefix());
    let mode_fix = match cfg.lock.mode {
        LockMode::Governance => "governance mode lets principals with s3:BypassGovernanceRetention remove locks: \
            use lock_mode = \"compliance\" (a new bucket default via `lifeboat store init`), and give the daemon \
            the writer credentials from `lifeboat store init --write-policies`, which deny the bypass",
        _ => "this store does not enforce COMPLIANCE retention, so it cannot protect backups from a leaked key: \
            use a store that does (AWS S3, Ceph RGW, MinIO)",
    };

    // 1. Shorten the lock.
    let shorter = ObjectLockRetention::builder()
        .mode(match cfg.lock.mode {
            LockMode::Governance => ObjectLockRetentionMode::Governance,
            _ => ObjectLockRetentionMode::Compliance,
        })
        .retain_until_date(aws_sdk_s3::primitives::DateTime::from_secs(
            Utc::now().timestamp() + 60,
        ))
        .build();
    let outcome = attempt(
        client
            .put_object_retention()
            .bucket(bucket)
            .key(&full)
            .version_id(&version)
            .bypass_governance_retention(true)
            .retention(shorter)
            .send()
            .await,
    );
    probes.push(judge(
        probe::RETENTION_SHORTEN,
        "PutObjectRetention shortening the canary's lock to 1 minute (with the governance bypass header)",
        outcome,
        "these credentials can shorten a lock, so they could unlock and then delete every snapshot",
        mode_fix,
    ));

    // 2. Delete the locked version.
    #[allow(clippy::disallowed_methods)] // The point of the probe: this delete must be refused.
    let request = client.delete_object();
    let outcome = attempt(
        request
            .bucket(bucket)
            .key(&full)
            .version_id(&version)
            .bypass_governance_retention(true)
            .send()
            .await,
    );
    probes.push(judge(
        probe::LOCKED_VERSION_DELETE,
        "DeleteObject of the canary's locked version (with the governance bypass header)",
        outcome,
        "these credentials can delete locked data: a leaked key could empty the store",
        mode_fix,
    ));

    // 3. Hide it behind a delete marker.
    #[allow(clippy::disallowed_methods)] // The point of the probe: this delete must be refused.
    let request = client.delete_object();
    let outcome = attempt(request.bucket(bucket).key(&full).send().await);
    probes.push(judge(
        probe::DELETE_MARKER,
        "DeleteObject of the canary without a version (a delete marker)",
        outcome,
        "these credentials can hide objects behind delete markers: the data survives, but snapshots vanish \
         from listings, restores and the staleness metrics until an admin removes the markers",
        "deny s3:DeleteObject and s3:DeleteObjectVersion to these credentials (the writer policy from \
         `lifeboat store init --write-policies` does)",
    ));

    // 4. Rewrite the lock configuration (with what it already is: harmless if it goes through).
    if let Some(config) = lock_config {
        let outcome = attempt(
            client
                .put_object_lock_configuration()
                .bucket(bucket)
                .object_lock_configuration(config)
                .send()
                .await,
        );
        probes.push(judge(
            probe::LOCK_CONFIG_CHANGE,
            "PutObjectLockConfiguration with the bucket's current configuration",
            outcome,
            "these credentials can change the bucket's default retention",
            "deny s3:PutBucketObjectLockConfiguration to these credentials: give the daemon the writer \
             credentials, not the admin ones (writer policy from `lifeboat store init --write-policies`)",
        ));
    }

    // 5. Rewrite the lifecycle (with what it already is).
    probes.push(lifecycle_change(store).await);
    probes
}

/// Reads the bucket's Object Lock configuration and checks its default retention against the store's config.
/// Returns the probe and, when Object Lock is enabled, the configuration as read.
async fn object_lock(
    store: &S3Store,
    cfg: &StoreConfig,
) -> (AuditProbe, Option<ObjectLockConfiguration>) {
    let bucket = store.bucket();
    let init_fix = format!(
        "run `lifeboat store init {}` with the admin credentials",
        cfg.name
    );
    let no_lock = || {
        AuditProbe::fail(
            probe::OBJECT_LOCK,
            format!("bucket {bucket} does not have Object Lock enabled"),
            format!(
                "Object Lock can only be enabled when a bucket is created: set bucket = \"NEW-NAME\" in [stores.{}] \
                 and run `lifeboat store init {}` with admin credentials (or accept deletable backups with \
                 lock_mode = \"none\")",
                cfg.name, cfg.name
            ),
        )
    };
    let out = match store
        .client()
        .get_object_lock_configuration()
        .bucket(bucket)
        .send()
        .await
    {
        Ok(out) => out,
        Err(e)
            if matches!(
                code(&e),
                "ObjectLockConfigurationNotFoundError" | "ObjectLockConfigurationNotFound"
            ) =>
        {
            return (no_lock(), None)
        }
        Err(e) => {
            let fix = if access_denied(&e) {
                "grant these credentials s3:GetBucketObjectLockConfiguration (the writer policy does)".to_owned()
            } else {
                "check the store's endpoint, region and credentials".to_owned()
            };
            return (
                AuditProbe::fail(
                    probe::OBJECT_LOCK,
                    format!("GetObjectLockConfiguration failed: {}", render(&e)),
                    fix,
                ),
                None,
            );
        }
    };
    let Some(config) = out.object_lock_configuration().cloned() else {
        return (no_lock(), None);
    };
    if config.object_lock_enabled() != Some(&ObjectLockEnabled::Enabled) {
        return (no_lock(), None);
    }
    let want_mode = mode_name(cfg.lock.mode);
    let want_days = retention_days(&cfg.lock).unwrap_or(1);
    let default = config.rule().and_then(|r| r.default_retention());
    let probe = match default {
        None => AuditProbe::fail(
            probe::OBJECT_LOCK,
            format!("Object Lock is enabled on bucket {bucket}, but it has no default retention (wanted {want_mode} {want_days} days); objects some stores assemble from multipart uploads start unlocked"),
            init_fix,
        ),
        Some(d) => {
            let mode = d.mode().map(|m| m.as_str()).unwrap_or("?");
            let days = d
                .days()
                .map(i64::from)
                .or_else(|| d.years().map(|y| i64::from(y) * 365))
                .unwrap_or(0);
            let mode_ok = mode == want_mode || mode == "COMPLIANCE";
            if mode_ok && days >= i64::from(want_days) {
                AuditProbe::pass(
                    probe::OBJECT_LOCK,
                    format!("Object Lock enabled on bucket {bucket}, default retention {mode} {days} days (store wants {want_mode} {want_days} days)"),
                )
            } else {
                AuditProbe::fail(
                    probe::OBJECT_LOCK,
                    format!("bucket {bucket} default retention is {mode} {days} days; the store's config wants {want_mode} {want_days} days"),
                    init_fix,
                )
            }
        }
    };
    (probe, Some(config))
}

async fn lifecycle_change(store: &S3Store) -> AuditProbe {
    let client = store.client();
    let bucket = store.bucket();
    let fix = "deny s3:PutLifecycleConfiguration to these credentials: give the daemon the writer credentials, \
               not the admin ones (writer policy from `lifeboat store init --write-policies`)";
    let allowed =
        "these credentials can change the bucket's lifecycle, e.g. expire every noncurrent version";
    match client
        .get_bucket_lifecycle_configuration()
        .bucket(bucket)
        .send()
        .await
    {
        Ok(out) => {
            let config = match BucketLifecycleConfiguration::builder()
                .set_rules(Some(out.rules().to_vec()))
                .build()
            {
                Ok(c) => c,
                Err(e) => {
                    return AuditProbe::fail(
                        probe::LIFECYCLE_CHANGE,
                        format!("cannot rebuild the bucket's lifecycle rules: {e}"),
                        "report this as a bug",
                    )
                }
            };
            let outcome = attempt(
                client
                    .put_bucket_lifecycle_configuration()
                    .bucket(bucket)
                    .lifecycle_configuration(config)
                    .send()
                    .await,
            );
            judge(
                probe::LIFECYCLE_CHANGE,
                "PutBucketLifecycleConfiguration with the bucket's current rules",
                outcome,
                allowed,
                fix,
            )
        }
        Err(e) if code(&e) == "NoSuchLifecycleConfiguration" => {
            // Deleting a lifecycle that does not exist changes nothing, and needs the same permission.
            let outcome = attempt(client.delete_bucket_lifecycle().bucket(bucket).send().await);
            judge(
                probe::LIFECYCLE_CHANGE,
                "DeleteBucketLifecycle on a bucket without lifecycle rules",
                outcome,
                allowed,
                fix,
            )
        }
        Err(e) if access_denied(&e) => AuditProbe::fail(
            probe::LIFECYCLE_CHANGE,
            format!("GetBucketLifecycleConfiguration was refused ({}), so the audit cannot prove that changing it is refused", render(&e)),
            "grant these credentials the read-only s3:GetLifecycleConfiguration (the writer policy from \
             `lifeboat store init --write-policies` does)",
        ),
        Err(e) => AuditProbe::fail(
            probe::LIFECYCLE_CHANGE,
            format!("GetBucketLifecycleConfiguration failed: {}", render(&e)),
            "check that the store is reachable and answering, then run the audit again",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_s3::config::http::HttpResponse;
    use aws_sdk_s3::error::ErrorMetadata;
    use aws_sdk_s3::operation::put_object_retention::PutObjectRetentionError;
    use aws_smithy_types::body::SdkBody;

    /// What the store answers to a probe: an error with `status` and `code`.
    fn answer(status: u16, code: &str) -> Attempt {
        let raw = HttpResponse::new(status.try_into().unwrap(), SdkBody::empty());
        let err = PutObjectRetentionError::generic(ErrorMetadata::builder().code(code).build());
        attempt(Err::<(), _>(SdkError::service_error(err, raw)))
    }

    #[test]
    fn only_a_refusal_counts_as_refused_and_anything_unclear_is_unproven() {
        assert!(matches!(
            attempt(Ok::<(), S3Error<PutObjectRetentionError>>(())),
            Attempt::Allowed
        ));
        assert!(matches!(answer(403, "AccessDenied"), Attempt::Refused(_)));
        assert!(matches!(answer(400, "ObjectLocked"), Attempt::Refused(_)));
        // A malformed request or a server error proves nothing: the probe must fail, not pass.
        assert!(matches!(answer(400, "InvalidRequest"), Attempt::Unknown(_)));
        assert!(matches!(answer(400, "InvalidDigest"), Attempt::Unknown(_)));
        assert!(matches!(answer(503, "SlowDown"), Attempt::Unknown(_)));
        let unknown = judge("p", "tried", Attempt::Unknown("x".into()), "", "");
        assert!(!unknown.ok && unknown.detail.contains("not proven"));
        let allowed = judge("p", "tried", Attempt::Allowed, "bad", "fix it");
        assert!(
            !allowed.ok
                && allowed.detail.contains("ALLOWED")
                && allowed.fix.as_deref() == Some("fix it")
        );
        assert!(
            judge(
                "p",
                "tried",
                Attempt::Refused("AccessDenied".into()),
                "",
                ""
            )
            .ok
        );
    }

    #[test]
    fn a_report_is_immutable_only_when_every_probe_passed() {
        let ok = AuditProbe::pass(probe::OBJECT_LOCK, "fine");
        let bad = AuditProbe::fail(probe::DELETE_MARKER, "ALLOWED", "deny it");
        assert!(AuditReport::new("s", vec![ok.clone()]).immutable);
        let mixed = AuditReport::new("s", vec![ok, bad]);
        assert!(!mixed.immutable);
        assert_eq!(
            mixed.summary(),
            "delete_marker failed: ALLOWED (fix: deny it)"
        );
        assert!(!AuditReport::new("s", Vec::new()).immutable);
    }

    #[tokio::test]
    async fn an_fs_store_is_never_immutable() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = lifeboat_config::parse(&format!(
            "[stores.local]\nkind = \"fs\"\npath = \"{}\"\nlock_mode = \"compliance\"\nretention = \"1d\"\n\
             [encryption]\nrecipients = [\"age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p\"]\n",
            dir.path().display()
        ), "test", dir.path())
        .unwrap();
        let store_cfg = &cfg.stores["local"];
        assert!(!store_cfg.require_immutable);
        let store = AnyStore::build(store_cfg).await.unwrap();
        let report = audit(&store, store_cfg).await;
        assert!(!report.immutable);
        assert_eq!(report.probes.len(), 1);
        assert_eq!(report.probes[0].probe, probe::FS_STORE);
        assert!(report.probes[0].fix.is_some());
    }
}
