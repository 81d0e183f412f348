//! `lifeboat store init`: brings an S3 bucket to the state Lifeboat expects (Object Lock, versioning, default
//! retention, public access block, lifecycle rules), idempotently, and generates the three roles' policies.
//!
//! Every step reads the current setting first and changes only what differs, so a second run reports every item
//! as already configured. Policy generation is a pure function ([`role_policies`]).

use super::{mode_name, ReadStore, S3Store};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::types::{
    AbortIncompleteMultipartUpload, BucketLifecycleConfiguration, BucketLocationConstraint,
    BucketVersioningStatus, CreateBucketConfiguration, DefaultRetention, ExpirationStatus,
    LifecycleExpiration, LifecycleRule, LifecycleRuleFilter, NoncurrentVersionExpiration,
    ObjectLockConfiguration, ObjectLockEnabled, ObjectLockRetentionMode, ObjectLockRule,
    PublicAccessBlockConfiguration, VersioningConfiguration,
};
use lifeboat_config::{LockConfig, LockMode, S3Config};
use serde::Serialize;
use serde_json::{json, Value};

/// What one set-up step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Checked and fine; nothing to change.
    Ok,
    /// The setting was missing or different and has been changed.
    Changed,
    /// Already as configured; nothing changed.
    Already,
    /// The store does not implement this feature (reported, not a failure).
    NotSupported,
    /// Not attempted (a step it depends on failed, or it does not apply to this store's config).
    Skipped,
    /// The step failed; [`Step::fix`] says what to do.
    Failed,
}

impl Outcome {
    /// The label printed in the text report.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Changed => "changed",
            Outcome::Already => "already",
            Outcome::NotSupported => "not supported",
            Outcome::Skipped => "skipped",
            Outcome::Failed => "FAILED",
        }
    }
}

/// One reported item of `store init`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    /// What was checked, e.g. `versioning`.
    pub step: &'static str,
    /// What happened.
    pub outcome: Outcome,
    /// Human detail: what was found or set.
    pub detail: String,
    /// Whether a failure of this step makes the whole run fail (lifecycle rules only save cost: optional).
    pub required: bool,
    /// How to fix a failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Step {
    fn new(step: &'static str, outcome: Outcome, detail: impl Into<String>) -> Step {
        Step {
            step,
            outcome,
            detail: detail.into(),
            required: true,
            fix: None,
        }
    }

    fn failed(step: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Step {
        Step {
            fix: Some(fix.into()),
            ..Step::new(step, Outcome::Failed, detail)
        }
    }

    fn optional(mut self) -> Step {
        self.required = false;
        self
    }
}

/// The result of [`init_s3`]: every step in order.
#[derive(Debug, Clone, Serialize)]
pub struct InitReport {
    /// Store name.
    pub store: String,
    /// Bucket name.
    pub bucket: String,
    /// Region used for the bucket.
    pub region: String,
    /// The steps, in the order they ran.
    pub steps: Vec<Step>,
}

impl InitReport {
    /// The required steps that failed (the run fails if there is any).
    pub fn required_failures(&self) -> Vec<&Step> {
        self.steps
            .iter()
            .filter(|s| s.required && s.outcome == Outcome::Failed)
            .collect()
    }
}

/// The store's `retention` in whole days, rounded up; `None` with `lock_mode = "none"`.
pub fn retention_days(lock: &LockConfig) -> Option<i32> {
    match (lock.mode, lock.retention) {
        (LockMode::None, _) | (_, None) => None,
        (_, Some(r)) => {
            let days = r.as_secs().div_ceil(86_400).max(1);
            Some(i32::try_from(days).unwrap_or(i32::MAX))
        }
    }
}

/// Lifecycle rule ids owned by Lifeboat; other rules in the bucket are kept untouched.
const RULE_NONCURRENT: &str = "lifeboat-noncurrent-versions";
const RULE_MULTIPART: &str = "lifeboat-abort-incomplete-uploads";
const RULE_CANARY: &str = "lifeboat-canary";

pub(super) type S3Error<E> = SdkError<E, aws_sdk_s3::config::http::HttpResponse>;

pub(super) fn render<E>(e: &S3Error<E>) -> String
where
    E: std::error::Error + ProvideErrorMetadata + 'static,
{
    match e.as_service_error() {
        Some(service) => match (service.code(), service.message()) {
            (Some(code), Some(msg)) => format!("{code}: {msg}"),
            (Some(code), None) => code.to_owned(),
            _ => match e.raw_response() {
                Some(raw) => format!("HTTP {} without an error code", raw.status().as_u16()),
                None => DisplayErrorContext(e).to_string(),
            },
        },
        None => DisplayErrorContext(e).to_string(),
    }
}

pub(super) fn code<E: ProvideErrorMetadata>(e: &S3Error<E>) -> &str {
    e.as_service_error().and_then(|s| s.code()).unwrap_or("")
}

pub(super) fn status<E>(e: &S3Error<E>) -> Option<u16> {
    e.raw_response().map(|r| r.status().as_u16())
}

/// The store answered that it does not implement the operation, or answered a different one: Ceph RGW 16 ignores
/// sub-resources it does not know (`?publicAccessBlock`) and answers a bucket listing with 200, which the SDK
/// cannot read as the expected answer.
fn unsupported<E: ProvideErrorMetadata>(e: &S3Error<E>) -> bool {
    matches!(
        code(e),
        "NotImplemented" | "NotSupported" | "MethodNotAllowed" | "UnsupportedOperation"
    ) || matches!(status(e), Some(501 | 405 | 200..=299))
}

pub(super) fn access_denied<E: ProvideErrorMetadata>(e: &S3Error<E>) -> bool {
    code(e) == "AccessDenied" || status(e) == Some(403)
}

fn fix_for<E: ProvideErrorMetadata>(e: &S3Error<E>, action: &str) -> String {
    if access_denied(e) {
        format!(
            "run store init with the store's admin credentials (they need {action} on the bucket)"
        )
    } else {
        format!("check the store endpoint and region, then run store init again ({action} failed)")
    }
}

/// Brings the store's bucket to the configured state. Never fails as a whole: every problem is a [`Step`].
pub async fn init_s3(store: &S3Store, cfg: &S3Config, lock: &LockConfig) -> InitReport {
    let client = store.client();
    let bucket = store.bucket().to_owned();
    let region = cfg
        .region
        .clone()
        .or_else(|| client.config().region().map(|r| r.to_string()))
        .unwrap_or_else(|| "us-east-1".to_owned());
    let mut report = InitReport {
        store: store.name().to_owned(),
        bucket: bucket.clone(),
        region: region.clone(),
        steps: Vec::new(),
    };
    let days = retention_days(lock);
    let locked = lock.mode != LockMode::None;

    // 1. The bucket.
    let created = match ensure_bucket(client, &bucket, &region, locked).await {
        Ok((step, created)) => {
            report.steps.push(step);
            created
        }
        Err(step) => {
            report.steps.push(step);
            skip_rest(&mut report, "the bucket is not usable");
            return report;
        }
    };

    // 2. Object Lock on the bucket.
    let mut current_lock: Option<ObjectLockConfiguration> = None;
    if locked {
        match client
            .get_object_lock_configuration()
            .bucket(&bucket)
            .send()
            .await
        {
            Ok(out) => {
                let cfg = out.object_lock_configuration().cloned();
                let enabled = cfg.as_ref().and_then(|c| c.object_lock_enabled())
                    == Some(&ObjectLockEnabled::Enabled);
                if enabled {
                    report.steps.push(Step::new(
                        "object lock",
                        if created {
                            Outcome::Ok
                        } else {
                            Outcome::Already
                        },
                        format!("Object Lock is enabled on bucket {bucket}"),
                    ));
                    current_lock = cfg;
                } else {
                    report.steps.push(no_object_lock(&bucket, &report.store));
                }
            }
            Err(e)
                if matches!(
                    code(&e),
                    "ObjectLockConfigurationNotFoundError" | "ObjectLockConfigurationNotFound"
                ) =>
            {
                report.steps.push(no_object_lock(&bucket, &report.store));
            }
            Err(e) => report.steps.push(Step::failed(
                "object lock",
                format!("GetObjectLockConfiguration failed: {}", render(&e)),
                fix_for(&e, "s3:GetBucketObjectLockConfiguration"),
            )),
        }
        if report.steps.last().map(|s| s.outcome) == Some(Outcome::Failed) {
            skip_rest(&mut report, "fix the Object Lock first");
            return report;
        }
    } else {
        report.steps.push(Step::new(
            "object lock",
            Outcome::Skipped,
            "lock_mode = \"none\": objects in this store can be deleted by anyone with delete rights",
        ));
    }

    // 3. Versioning.
    report.steps.push(ensure_versioning(client, &bucket).await);

    // 4. Default retention.
    if let Some(days) = days {
        report.steps.push(
            ensure_default_retention(client, &bucket, lock.mode, days, current_lock.as_ref()).await,
        );
    } else {
        report.steps.push(Step::new(
            "default retention",
            Outcome::Skipped,
            "lock_mode = \"none\"",
        ));
    }

    // 5. Public access block.
    report
        .steps
        .push(ensure_public_access_block(client, &bucket).await);

    // 6. Lifecycle rules.
    let wanted = wanted_rules(&cfg.prefix, days.unwrap_or(0).saturating_add(1));
    report
        .steps
        .extend(ensure_lifecycle(client, &bucket, wanted).await);
    report
}

fn skip_rest(report: &mut InitReport, why: &str) {
    let done: Vec<&str> = report.steps.iter().map(|s| s.step).collect();
    for step in [
        "object lock",
        "versioning",
        "default retention",
        "public access block",
        "lifecycle: noncurrent versions",
        "lifecycle: incomplete multipart uploads",
        "lifecycle: canary/",
    ] {
        if !done.contains(&step) {
            report
                .steps
                .push(Step::new(step, Outcome::Skipped, format!("skipped: {why}")));
        }
    }
}

fn no_object_lock(bucket: &str, store: &str) -> Step {
    Step::failed(
        "object lock",
        format!("bucket {bucket} exists without Object Lock, and most stores (Ceph RGW, MinIO, older AWS buckets) cannot enable it on an existing bucket"),
        format!("create a new bucket: set bucket = \"NEW-NAME\" in [stores.{store}] and run store init again (it creates the bucket with Object Lock); or set lock_mode = \"none\" if you accept deletable backups"),
    )
}

/// HeadBucket, CreateBucket when absent. `Ok((step, created))`, or the failed step.
async fn ensure_bucket(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    region: &str,
    locked: bool,
) -> Result<(Step, bool), Step> {
    match client.head_bucket().bucket(bucket).send().await {
        Ok(_) => {
            return Ok((
                Step::new("bucket", Outcome::Already, format!("bucket {bucket} exists")),
                false,
            ))
        }
        Err(e) if status(&e) == Some(404) || code(&e) == "NoSuchBucket" || code(&e) == "NotFound" => {}
        Err(e) if access_denied(&e) => {
            return Err(Step::failed(
                "bucket",
                format!("bucket {bucket} exists but these credentials cannot use it (HeadBucket: {})", render(&e)),
                "use the store's admin credentials, or choose another bucket name (AWS bucket names are global: another account may own it)",
            ))
        }
        Err(e) => {
            return Err(Step::failed(
                "bucket",
                format!("HeadBucket {bucket} failed: {}", render(&e)),
                fix_for(&e, "s3:ListBucket"),
            ))
        }
    }
    let mut create = client
        .create_bucket()
        .bucket(bucket)
        .set_object_lock_enabled_for_bucket(locked.then_some(true));
    if region != "us-east-1" {
        create = create.create_bucket_configuration(
            CreateBucketConfiguration::builder()
                .location_constraint(BucketLocationConstraint::from(region))
                .build(),
        );
    }
    match create.send().await {
        Ok(_) => Ok((
            Step::new(
                "bucket",
                Outcome::Changed,
                if locked {
                    format!("created bucket {bucket} in {region} with Object Lock enabled")
                } else {
                    format!("created bucket {bucket} in {region} (without Object Lock: lock_mode = \"none\")")
                },
            ),
            true,
        )),
        Err(e) if code(&e) == "BucketAlreadyOwnedByYou" => Ok((
            Step::new(
                "bucket",
                Outcome::Already,
                format!("bucket {bucket} exists"),
            ),
            false,
        )),
        Err(e) if code(&e) == "BucketAlreadyExists" => Err(Step::failed(
            "bucket",
            format!("bucket name {bucket} is taken by another account"),
            "choose another bucket name in the store config",
        )),
        Err(e) => Err(Step::failed(
            "bucket",
            format!("CreateBucket {bucket} failed: {}", render(&e)),
            fix_for(
                &e,
                "s3:CreateBucket and s3:PutBucketObjectLockConfiguration",
            ),
        )),
    }
}

async fn ensure_versioning(client: &aws_sdk_s3::Client, bucket: &str) -> Step {
    const STEP: &str = "versioning";
    match client.get_bucket_versioning().bucket(bucket).send().await {
        Ok(out) if out.status() == Some(&BucketVersioningStatus::Enabled) => {
            return Step::new(STEP, Outcome::Already, "versioning is enabled")
        }
        Ok(_) => {}
        Err(e) => {
            return Step::failed(
                STEP,
                format!("GetBucketVersioning failed: {}", render(&e)),
                fix_for(&e, "s3:GetBucketVersioning"),
            )
        }
    }
    match client
        .put_bucket_versioning()
        .bucket(bucket)
        .versioning_configuration(
            VersioningConfiguration::builder()
                .status(BucketVersioningStatus::Enabled)
                .build(),
        )
        .send()
        .await
    {
        Ok(_) => Step::new(STEP, Outcome::Changed, "versioning enabled"),
        Err(e) => Step::failed(
            STEP,
            format!("PutBucketVersioning failed: {}", render(&e)),
            fix_for(&e, "s3:PutBucketVersioning"),
        ),
    }
}

fn describe_retention(d: Option<&DefaultRetention>) -> String {
    match d {
        None => "none".to_owned(),
        Some(d) => match (d.days(), d.years()) {
            (Some(days), _) => format!(
                "{} {days} day{}",
                d.mode().map(|m| m.as_str()).unwrap_or("?"),
                if days == 1 { "" } else { "s" }
            ),
            (None, Some(years)) => format!(
                "{} {years} years",
                d.mode().map(|m| m.as_str()).unwrap_or("?")
            ),
            (None, None) => "none".to_owned(),
        },
    }
}

async fn ensure_default_retention(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    mode: LockMode,
    days: i32,
    current: Option<&ObjectLockConfiguration>,
) -> Step {
    const STEP: &str = "default retention";
    let wanted_mode = match mode {
        LockMode::Governance => ObjectLockRetentionMode::Governance,
        _ => ObjectLockRetentionMode::Compliance,
    };
    let have = current
        .and_then(|c| c.rule())
        .and_then(|r| r.default_retention());
    let wanted_text = format!(
        "{} {days} day{}",
        mode_name(mode),
        if days == 1 { "" } else { "s" }
    );
    if let Some(h) = have {
        if h.mode() == Some(&wanted_mode) && h.days() == Some(days) && h.years().is_none() {
            return Step::new(
                STEP,
                Outcome::Already,
                format!("bucket default retention is {wanted_text}"),
            );
        }
    }
    let config = ObjectLockConfiguration::builder()
        .object_lock_enabled(ObjectLockEnabled::Enabled)
        .rule(
            ObjectLockRule::builder()
                .default_retention(
                    DefaultRetention::builder()
                        .mode(wanted_mode)
                        .days(days)
                        .build(),
                )
                .build(),
        )
        .build();
    match client
        .put_object_lock_configuration()
        .bucket(bucket)
        .object_lock_configuration(config)
        .send()
        .await
    {
        Ok(_) => Step::new(
            STEP,
            Outcome::Changed,
            format!(
                "bucket default retention set to {wanted_text} (was {}; applies to new objects)",
                describe_retention(have)
            ),
        ),
        Err(e) => Step::failed(
            STEP,
            format!("PutObjectLockConfiguration failed: {}", render(&e)),
            fix_for(&e, "s3:PutBucketObjectLockConfiguration"),
        ),
    }
}

async fn ensure_public_access_block(client: &aws_sdk_s3::Client, bucket: &str) -> Step {
    const STEP: &str = "public access block";
    match client.get_public_access_block().bucket(bucket).send().await {
        Ok(out) => {
            if let Some(c) = out.public_access_block_configuration() {
                if c.block_public_acls() == Some(true)
                    && c.ignore_public_acls() == Some(true)
                    && c.block_public_policy() == Some(true)
                    && c.restrict_public_buckets() == Some(true)
                {
                    return Step::new(STEP, Outcome::Already, "all public access is blocked");
                }
            }
        }
        Err(e) if unsupported(&e) => {
            return Step::new(
                STEP,
                Outcome::NotSupported,
                format!("not supported by this store ({})", render(&e)),
            )
        }
        Err(e) if code(&e) == "NoSuchPublicAccessBlockConfiguration" || status(&e) == Some(404) => {
        }
        Err(e) => {
            return Step::failed(
                STEP,
                format!("GetPublicAccessBlock failed: {}", render(&e)),
                fix_for(&e, "s3:GetBucketPublicAccessBlock"),
            )
        }
    }
    match client
        .put_public_access_block()
        .bucket(bucket)
        .public_access_block_configuration(
            PublicAccessBlockConfiguration::builder()
                .block_public_acls(true)
                .ignore_public_acls(true)
                .block_public_policy(true)
                .restrict_public_buckets(true)
                .build(),
        )
        .send()
        .await
    {
        Ok(_) => Step::new(STEP, Outcome::Changed, "all public access blocked"),
        Err(e) if unsupported(&e) => Step::new(
            STEP,
            Outcome::NotSupported,
            format!("not supported by this store ({})", render(&e)),
        ),
        Err(e) => Step::failed(
            STEP,
            format!("PutPublicAccessBlock failed: {}", render(&e)),
            fix_for(&e, "s3:PutBucketPublicAccessBlock"),
        ),
    }
}

/// One lifecycle rule Lifeboat wants: its step name, id, and the rule.
struct WantedRule {
    step: &'static str,
    id: &'static str,
    rule: LifecycleRule,
    describe: String,
}

fn wanted_rules(prefix: &str, noncurrent_days: i32) -> Vec<WantedRule> {
    let filter = |p: String| LifecycleRuleFilter::builder().prefix(p).build();
    let base = |id: &str, p: String| {
        LifecycleRule::builder()
            .id(id)
            .status(ExpirationStatus::Enabled)
            .filter(filter(p))
    };
    let canary = format!("{prefix}canary/");
    let mut out = Vec::new();
    let rules = [
        (
            "lifecycle: noncurrent versions",
            RULE_NONCURRENT,
            base(RULE_NONCURRENT, prefix.to_owned()).noncurrent_version_expiration(
                NoncurrentVersionExpiration::builder()
                    .noncurrent_days(noncurrent_days)
                    .build(),
            ),
            format!("noncurrent versions under {prefix:?} expire after {noncurrent_days} days"),
        ),
        (
            "lifecycle: incomplete multipart uploads",
            RULE_MULTIPART,
            base(RULE_MULTIPART, prefix.to_owned()).abort_incomplete_multipart_upload(
                AbortIncompleteMultipartUpload::builder()
                    .days_after_initiation(1)
                    .build(),
            ),
            format!("incomplete multipart uploads under {prefix:?} are aborted after 1 day"),
        ),
        (
            "lifecycle: canary/",
            RULE_CANARY,
            base(RULE_CANARY, canary.clone())
                .expiration(LifecycleExpiration::builder().days(1).build()),
            format!("objects under {canary:?} expire after 1 day"),
        ),
    ];
    for (step, id, builder, describe) in rules {
        // `status` is set, the only required field: build cannot fail.
        if let Ok(rule) = builder.build() {
            out.push(WantedRule {
                step,
                id,
                rule,
                describe,
            });
        }
    }
    out
}

#[allow(deprecated)] // Older stores (and rules written by older tools) put the prefix outside `Filter`.
fn rule_prefix(r: &LifecycleRule) -> &str {
    r.filter()
        .and_then(|f| f.prefix())
        .or_else(|| r.prefix())
        .unwrap_or("")
}

/// Whether an existing rule does what `wanted` does (same id, enabled, same prefix and action).
fn rule_matches(have: &LifecycleRule, wanted: &LifecycleRule) -> bool {
    have.id() == wanted.id()
        && have.status() == &ExpirationStatus::Enabled
        && rule_prefix(have) == rule_prefix(wanted)
        && have
            .noncurrent_version_expiration()
            .and_then(|n| n.noncurrent_days())
            == wanted
                .noncurrent_version_expiration()
                .and_then(|n| n.noncurrent_days())
        && have
            .abort_incomplete_multipart_upload()
            .and_then(|a| a.days_after_initiation())
            == wanted
                .abort_incomplete_multipart_upload()
                .and_then(|a| a.days_after_initiation())
        && have.expiration().and_then(|x| x.days()) == wanted.expiration().and_then(|x| x.days())
}

async fn put_rules(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    rules: &[LifecycleRule],
) -> Result<(), (String, bool, String)> {
    let config = BucketLifecycleConfiguration::builder()
        .set_rules(Some(rules.to_vec()))
        .build()
        .map_err(|e| (e.to_string(), false, "report this as a bug".to_owned()))?;
    client
        .put_bucket_lifecycle_configuration()
        .bucket(bucket)
        .lifecycle_configuration(config)
        .send()
        .await
        .map(|_| ())
        .map_err(|e| {
            (
                render(&e),
                unsupported(&e),
                fix_for(&e, "s3:PutLifecycleConfiguration"),
            )
        })
}

async fn ensure_lifecycle(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    wanted: Vec<WantedRule>,
) -> Vec<Step> {
    let existing: Vec<LifecycleRule> = match client
        .get_bucket_lifecycle_configuration()
        .bucket(bucket)
        .send()
        .await
    {
        Ok(out) => out.rules().to_vec(),
        Err(e) if code(&e) == "NoSuchLifecycleConfiguration" || status(&e) == Some(404) => {
            Vec::new()
        }
        Err(e) if unsupported(&e) => {
            return wanted
                .iter()
                .map(|w| {
                    Step::new(
                        w.step,
                        Outcome::NotSupported,
                        format!(
                            "lifecycle rules are not supported by this store ({})",
                            render(&e)
                        ),
                    )
                    .optional()
                })
                .collect()
        }
        Err(e) => {
            let fix = fix_for(&e, "s3:GetLifecycleConfiguration");
            return wanted
                .iter()
                .map(|w| {
                    Step::failed(
                        w.step,
                        format!("GetBucketLifecycleConfiguration failed: {}", render(&e)),
                        fix.clone(),
                    )
                    .optional()
                })
                .collect();
        }
    };
    let mut steps: Vec<Option<Step>> = wanted.iter().map(|_| None).collect();
    // Rules as they stand (foreign ones and ours, matching or not): what a failed item leaves in place.
    let mut current = existing.clone();
    let mut pending = Vec::new();
    for (i, w) in wanted.iter().enumerate() {
        if existing.iter().any(|h| rule_matches(h, &w.rule)) {
            steps[i] = Some(Step::new(w.step, Outcome::Already, w.describe.clone()).optional());
        } else {
            pending.push(i);
        }
    }
    let with = |rules: &[LifecycleRule], w: &WantedRule| -> Vec<LifecycleRule> {
        rules
            .iter()
            .filter(|r| r.id() != Some(w.id))
            .cloned()
            .chain(std::iter::once(w.rule.clone()))
            .collect()
    };
    if !pending.is_empty() {
        let all = pending
            .iter()
            .fold(current.clone(), |rules, &i| with(&rules, &wanted[i]));
        if put_rules(client, bucket, &all).await.is_ok() {
            for &i in &pending {
                steps[i] = Some(
                    Step::new(wanted[i].step, Outcome::Changed, wanted[i].describe.clone())
                        .optional(),
                );
            }
        } else {
            // One at a time, so each item is reported on its own (some stores reject some rule types).
            for &i in &pending {
                let w = &wanted[i];
                let next = with(&current, w);
                steps[i] = Some(match put_rules(client, bucket, &next).await {
                    Ok(()) => {
                        current = next;
                        Step::new(w.step, Outcome::Changed, w.describe.clone()).optional()
                    }
                    Err((msg, true, _)) => Step::new(
                        w.step,
                        Outcome::NotSupported,
                        format!("not supported by this store ({msg})"),
                    )
                    .optional(),
                    Err((msg, false, fix)) => Step::failed(
                        w.step,
                        format!("PutBucketLifecycleConfiguration rejected this rule: {msg}"),
                        format!("{fix}; or add the rule by hand (the store may not support this rule type)"),
                    )
                    .optional(),
                });
            }
        }
    }
    steps.into_iter().flatten().collect()
}

/// The policies of one credential role.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RolePolicies {
    /// `writer`, `drill` or `admin`.
    pub role: &'static str,
    /// The user name placeholder in [`RolePolicies::bucket_policy`]'s `Principal`, e.g. `WRITER`.
    pub principal_placeholder: &'static str,
    /// AWS IAM identity policy (attach to the role's user or role).
    pub iam: Value,
    /// The same statements as a bucket policy with a `Principal` (Ceph RGW, MinIO, cross-account).
    pub bucket_policy: Value,
}

/// The principal ARN of a user in a bucket policy on Ceph RGW / MinIO: `arn:aws:iam:::user/NAME`.
pub fn user_principal(user: &str) -> String {
    format!("arn:aws:iam:::user/{user}")
}

struct Statement {
    sid: &'static str,
    deny: bool,
    actions: &'static [&'static str],
    resources: Vec<String>,
}

fn documents(statements: &[Statement], placeholder: &str) -> (Value, Value) {
    let one = |s: &Statement, principal: bool| {
        let mut v = json!({
            "Sid": s.sid,
            "Effect": if s.deny { "Deny" } else { "Allow" },
            "Action": s.actions,
            "Resource": s.resources,
        });
        if principal {
            v["Principal"] = json!({ "AWS": [user_principal(placeholder)] });
        }
        v
    };
    (
        json!({
            "Version": "2012-10-17",
            "Statement": statements.iter().map(|s| one(s, false)).collect::<Vec<_>>(),
        }),
        json!({
            "Version": "2012-10-17",
            "Statement": statements.iter().map(|s| one(s, true)).collect::<Vec<_>>(),
        }),
    )
}

/// Actions the daemon (writer) needs on the bucket itself.
pub const WRITER_BUCKET_ACTIONS: &[&str] = &[
    "s3:ListBucket",
    "s3:ListBucketVersions",
    "s3:GetBucketObjectLockConfiguration",
    "s3:ListBucketMultipartUploads",
    // Read-only; lets the immutability preflight prove that changing the lifecycle is refused.
    "s3:GetLifecycleConfiguration",
];
/// Actions the daemon (writer) needs on the store's objects. `s3:GetObjectVersion` is needed because every
/// upload's lock is read back by version id.
pub const WRITER_OBJECT_ACTIONS: &[&str] = &[
    "s3:PutObject",
    "s3:PutObjectRetention",
    "s3:GetObject",
    "s3:GetObjectVersion",
    "s3:GetObjectRetention",
    "s3:AbortMultipartUpload",
    "s3:ListMultipartUploadParts",
];
/// What the writer is explicitly denied, whatever else grants it.
pub const WRITER_DENIED_ACTIONS: &[&str] = &[
    "s3:DeleteObject",
    "s3:DeleteObjectVersion",
    "s3:PutBucketObjectLockConfiguration",
    "s3:PutLifecycleConfiguration",
    "s3:BypassGovernanceRetention",
    "s3:PutBucketPolicy",
];

/// Ready-to-use policies for the three roles (writer = the daemon, drill = reader plus verification records,
/// admin = everything on the bucket), for `bucket` and the store's `prefix` (`""` or ending in `/`).
pub fn role_policies(bucket: &str, prefix: &str) -> Vec<RolePolicies> {
    let bucket_arn = format!("arn:aws:s3:::{bucket}");
    let objects_arn = format!("arn:aws:s3:::{bucket}/{prefix}*");
    let all_objects_arn = format!("arn:aws:s3:::{bucket}/*");
    let records_arn = format!("arn:aws:s3:::{bucket}/{prefix}verifications/*");
    let writer = [
        Statement {
            sid: "LifeboatWriterBucket",
            deny: false,
            actions: WRITER_BUCKET_ACTIONS,
            resources: vec![bucket_arn.clone()],
        },
        Statement {
            sid: "LifeboatWriterObjects",
            deny: false,
            actions: WRITER_OBJECT_ACTIONS,
            resources: vec![objects_arn.clone()],
        },
        Statement {
            sid: "LifeboatWriterNeverDeletes",
            deny: true,
            actions: WRITER_DENIED_ACTIONS,
            resources: vec![bucket_arn.clone(), all_objects_arn],
        },
    ];
    // Matches docs/runbook.md, "Credentials for drills".
    let drill = [
        Statement {
            sid: "LifeboatDrillBucket",
            deny: false,
            actions: &[
                "s3:ListBucket",
                "s3:ListBucketVersions",
                "s3:GetBucketObjectLockConfiguration",
            ],
            resources: vec![bucket_arn.clone()],
        },
        Statement {
            sid: "LifeboatDrillRead",
            deny: false,
            actions: &[
                "s3:GetObject",
                "s3:GetObjectVersion",
                "s3:GetObjectRetention",
                "s3:GetObjectLegalHold",
            ],
            resources: vec![objects_arn.clone()],
        },
        Statement {
            sid: "LifeboatDrillRecords",
            deny: false,
            actions: &["s3:PutObject", "s3:PutObjectRetention"],
            resources: vec![records_arn],
        },
    ];
    let admin = [Statement {
        sid: "LifeboatAdmin",
        deny: false,
        actions: &["s3:*"],
        resources: vec![bucket_arn, objects_arn],
    }];
    [
        ("writer", "WRITER", &writer[..]),
        ("drill", "DRILL", &drill[..]),
        ("admin", "ADMIN", &admin[..]),
    ]
    .into_iter()
    .map(|(role, placeholder, statements)| {
        let (iam, bucket_policy) = documents(statements, placeholder);
        RolePolicies {
            role,
            principal_placeholder: placeholder,
            iam,
            bucket_policy,
        }
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn actions(doc: &Value, effect: &str) -> Vec<String> {
        doc["Statement"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["Effect"] == effect)
            .flat_map(|s| s["Action"].as_array().unwrap().clone())
            .map(|a| a.as_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn retention_is_rounded_up_to_whole_days() {
        let lock = |secs| LockConfig {
            mode: LockMode::Compliance,
            retention: Some(Duration::from_secs(secs)),
        };
        assert_eq!(retention_days(&lock(86_400)), Some(1));
        assert_eq!(retention_days(&lock(86_401)), Some(2));
        assert_eq!(retention_days(&lock(35 * 86_400)), Some(35));
        assert_eq!(
            retention_days(&LockConfig {
                mode: LockMode::None,
                retention: None
            }),
            None
        );
    }

    #[test]
    fn policies_are_valid_json_with_the_roles_actions_and_the_writer_deny() {
        let roles = role_policies("my-bucket", "prod/");
        let names: Vec<_> = roles.iter().map(|r| r.role).collect();
        assert_eq!(names, ["writer", "drill", "admin"]);
        for r in &roles {
            for doc in [&r.iam, &r.bucket_policy] {
                let text = serde_json::to_string_pretty(doc).unwrap();
                let back: Value = serde_json::from_str(&text).unwrap();
                assert_eq!(&back, doc);
                assert_eq!(doc["Version"], "2012-10-17");
                for s in doc["Statement"].as_array().unwrap() {
                    for res in s["Resource"].as_array().unwrap() {
                        assert!(res.as_str().unwrap().starts_with("arn:aws:s3:::my-bucket"));
                    }
                }
            }
            assert!(r.iam["Statement"][0].get("Principal").is_none());
            assert_eq!(
                r.bucket_policy["Statement"][0]["Principal"]["AWS"][0],
                format!("arn:aws:iam:::user/{}", r.principal_placeholder)
            );
        }
        let writer = &roles[0];
        let allowed = actions(&writer.iam, "Allow");
        for a in [
            "s3:PutObject",
            "s3:PutObjectRetention",
            "s3:GetObject",
            "s3:GetObjectRetention",
            "s3:ListBucket",
            "s3:GetBucketObjectLockConfiguration",
            "s3:ListBucketMultipartUploads",
            "s3:AbortMultipartUpload",
            "s3:ListMultipartUploadParts",
        ] {
            assert!(allowed.iter().any(|x| x == a), "writer lacks {a}");
        }
        let denied = actions(&writer.bucket_policy, "Deny");
        for a in [
            "s3:DeleteObject",
            "s3:DeleteObjectVersion",
            "s3:PutBucketObjectLockConfiguration",
            "s3:PutLifecycleConfiguration",
            "s3:BypassGovernanceRetention",
            "s3:PutBucketPolicy",
        ] {
            assert!(denied.iter().any(|x| x == a), "writer is not denied {a}");
        }
        assert!(!allowed.iter().any(|a| a.contains("Delete")));
        let text = serde_json::to_string(&writer.iam).unwrap();
        assert!(text.contains("\"arn:aws:s3:::my-bucket\""));
        assert!(text.contains("\"arn:aws:s3:::my-bucket/prod/*\""));

        let drill = &roles[1];
        assert_eq!(
            drill.iam["Statement"][2]["Resource"][0],
            "arn:aws:s3:::my-bucket/prod/verifications/*"
        );
        assert_eq!(
            actions(&drill.iam, "Allow")
                .iter()
                .filter(|a| a.starts_with("s3:Put"))
                .count(),
            2
        );
        assert!(actions(&drill.iam, "Allow")
            .iter()
            .all(|a| !a.contains("Delete")));
        assert_eq!(actions(&roles[2].iam, "Allow"), ["s3:*"]);
    }

    #[test]
    fn lifecycle_rules_match_themselves_and_notice_a_changed_period() {
        let a = wanted_rules("p/", 36);
        let b = wanted_rules("p/", 37);
        assert_eq!(a.len(), 3);
        assert!(rule_matches(&a[0].rule, &a[0].rule));
        assert!(!rule_matches(&a[0].rule, &b[0].rule));
        assert!(rule_matches(&a[1].rule, &b[1].rule));
        assert_eq!(rule_prefix(&a[2].rule), "p/canary/");
    }
}
