//! Real S3-protocol test tiers (Ceph RGW, moto) started by `tests/infra/*-up.sh`, read from the environment.
//! Each tier gives an SDK client and a fresh Object Lock bucket per test; see `tests/infra/README.md` for quirks.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region, RequestChecksumCalculation};
use aws_sdk_s3::types::{BucketLocationConstraint, CreateBucketConfiguration};

/// One S3 endpoint the tests can use, with the credentials `tests/infra/*-up.sh` created.
///
/// Environment (one prefix per tier, both can be exported at once; `REGION` defaults to `us-east-1`):
/// - Ceph RGW: `LIFEBOAT_TEST_CEPH_ENDPOINT`, `_REGION`, `_ACCESS_KEY`, `_SECRET_KEY`,
///   `_OTHER_ACCESS_KEY`, `_OTHER_SECRET_KEY` (written to `WORKDIR/env` by `ceph-rgw-up.sh`).
/// - moto: `LIFEBOAT_TEST_MOTO_ENDPOINT`, `_REGION`, `_ACCESS_KEY`, `_SECRET_KEY` (by `moto-up.sh`).
#[derive(Clone, Debug)]
pub struct S3Tier {
    /// `"ceph"` or `"moto"`.
    pub name: &'static str,
    /// e.g. `http://127.0.0.1:18962` (always path-style).
    pub endpoint: String,
    /// SigV4 signing region (`us-east-1` on both tiers).
    pub region: String,
    /// Access key of the bucket owner / admin (`lifeboat-admin` on Ceph).
    pub access_key: String,
    /// Secret key of the bucket owner / admin.
    pub secret_key: String,
    /// Access key of a second principal for policy tests (`lifeboat-other` on Ceph; none on moto).
    pub other_access_key: Option<String>,
    /// Secret key of the second principal.
    pub other_secret_key: Option<String>,
}

/// The Ceph RGW tier, if `LIFEBOAT_TEST_CEPH_ENDPOINT` is set (panics if it is set but incomplete).
pub fn ceph() -> Option<S3Tier> {
    from_env("ceph", "LIFEBOAT_TEST_CEPH")
}

/// The moto tier, if `LIFEBOAT_TEST_MOTO_ENDPOINT` is set (panics if it is set but incomplete).
pub fn moto() -> Option<S3Tier> {
    from_env("moto", "LIFEBOAT_TEST_MOTO")
}

/// Every configured tier, Ceph first. Empty when none is configured (the test decides whether to skip).
pub fn all() -> Vec<S3Tier> {
    ceph().into_iter().chain(moto()).collect()
}

/// [`ceph()`], or `None` after [`crate::skip::require`] said skip (panics under `LIFEBOAT_TEST_DISALLOW_SKIP=1`).
#[track_caller]
pub fn require_ceph() -> Option<S3Tier> {
    let tier = ceph();
    crate::skip::require_or(
        "Ceph RGW S3 tier (LIFEBOAT_TEST_CEPH_ENDPOINT not set)",
        "run tests/run, or tests/infra/ceph-rgw-up.sh DIR then `set -a; . DIR/env; set +a`",
        tier.is_some(),
    )
    .then_some(tier)
    .flatten()
}

/// [`moto()`], or `None` after [`crate::skip::require`] said skip (panics under `LIFEBOAT_TEST_DISALLOW_SKIP=1`).
#[track_caller]
pub fn require_moto() -> Option<S3Tier> {
    let tier = moto();
    crate::skip::require_or(
        "moto S3 tier (LIFEBOAT_TEST_MOTO_ENDPOINT not set)",
        "run tests/run, or tests/infra/moto-up.sh DIR then `set -a; . DIR/env; set +a`",
        tier.is_some(),
    )
    .then_some(tier)
    .flatten()
}

/// Every tier, each checked with [`crate::skip::require`]: a missing tier prints `SKIP:` (or
/// panics under `LIFEBOAT_TEST_DISALLOW_SKIP=1`) and the available ones are returned.
#[track_caller]
pub fn require_all() -> Vec<S3Tier> {
    require_ceph().into_iter().chain(require_moto()).collect()
}

fn from_env(name: &'static str, prefix: &str) -> Option<S3Tier> {
    let var = |suffix: &str| {
        std::env::var(format!("{prefix}_{suffix}"))
            .ok()
            .filter(|v| !v.trim().is_empty())
    };
    let need = |suffix: &str| {
        var(suffix).unwrap_or_else(|| {
            panic!("{prefix}_ENDPOINT is set but {prefix}_{suffix} is not: source the whole WORKDIR/env")
        })
    };
    let endpoint = var("ENDPOINT")?;
    Some(S3Tier {
        name,
        endpoint,
        region: var("REGION").unwrap_or_else(|| "us-east-1".to_owned()),
        access_key: need("ACCESS_KEY"),
        secret_key: need("SECRET_KEY"),
        other_access_key: var("OTHER_ACCESS_KEY"),
        other_secret_key: var("OTHER_SECRET_KEY"),
    })
}

impl S3Tier {
    /// An SDK client for the admin / bucket owner: path-style, static credentials, checksums
    /// only where an operation requires them. Built from scratch, so no `AWS_*` variable or
    /// `~/.aws` file of the machine leaks in.
    pub async fn client(&self) -> aws_sdk_s3::Client {
        self.client_with(&self.access_key, &self.secret_key)
    }

    /// A client for the second principal (`lifeboat-other`), or `None` when the tier has none (moto).
    pub async fn other_client(&self) -> Option<aws_sdk_s3::Client> {
        match (&self.other_access_key, &self.other_secret_key) {
            (Some(ak), Some(sk)) => Some(self.client_with(ak, sk)),
            _ => None,
        }
    }

    /// A client signing with arbitrary keys against this tier's endpoint and region.
    pub fn client_with(&self, access_key: &str, secret_key: &str) -> aws_sdk_s3::Client {
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .endpoint_url(&self.endpoint)
            .region(Region::new(self.region.clone()))
            .credentials_provider(Credentials::new(
                access_key,
                secret_key,
                None,
                None,
                "lifeboat-tests",
            ))
            .force_path_style(true)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .build();
        aws_sdk_s3::Client::from_conf(config)
    }

    /// Gives the second principal (`lifeboat-other`) the writer role on `bucket` (prefix `lifeboat/`), with the
    /// bucket policy `lifeboat store init` generates. Ceph only.
    pub async fn apply_writer_policy(&self, bucket: &str) {
        let writer = lifeboat_core::store::setup::role_policies(bucket, "lifeboat/")
            .into_iter()
            .find(|p| p.role == "writer")
            .expect("store init generates a writer policy");
        let policy = writer.bucket_policy.to_string().replace(
            "arn:aws:iam:::user/WRITER",
            "arn:aws:iam:::user/lifeboat-other",
        );
        if let Err(e) = self
            .client()
            .await
            .put_bucket_policy()
            .bucket(bucket)
            .policy(policy)
            .send()
            .await
        {
            panic!(
                "PutBucketPolicy {bucket}: {}",
                aws_sdk_s3::error::DisplayErrorContext(&e)
            );
        }
    }

    /// Creates a bucket without Object Lock or versioning (for `lock_mode = "none"`).
    pub async fn create_plain_bucket(&self, prefix: &str) -> String {
        let bucket = unique_bucket_name(prefix);
        let mut create = self.client().await.create_bucket().bucket(&bucket);
        if self.region != "us-east-1" {
            create = create.create_bucket_configuration(
                CreateBucketConfiguration::builder()
                    .location_constraint(BucketLocationConstraint::from(self.region.as_str()))
                    .build(),
            );
        }
        if let Err(e) = create.send().await {
            panic!(
                "{}: CreateBucket {bucket} at {} failed: {}",
                self.name,
                self.endpoint,
                aws_sdk_s3::error::DisplayErrorContext(&e)
            );
        }
        bucket
    }

    /// Creates a new bucket with Object Lock enabled (hence versioning) and no default
    /// retention, and returns its name: `<prefix>-<unique suffix>`, unique per call, across
    /// processes and runs. Panics with the store's error if creation or the check fails.
    pub async fn create_locked_bucket(&self, prefix: &str) -> String {
        let bucket = unique_bucket_name(prefix);
        let client = self.client().await;
        let mut create = client
            .create_bucket()
            .bucket(&bucket)
            .object_lock_enabled_for_bucket(true);
        if self.region != "us-east-1" {
            create = create.create_bucket_configuration(
                CreateBucketConfiguration::builder()
                    .location_constraint(BucketLocationConstraint::from(self.region.as_str()))
                    .build(),
            );
        }
        if let Err(e) = create.send().await {
            panic!(
                "{}: CreateBucket {bucket} (Object Lock) at {} failed: {}",
                self.name,
                self.endpoint,
                aws_sdk_s3::error::DisplayErrorContext(&e)
            );
        }
        let lock = client
            .get_object_lock_configuration()
            .bucket(&bucket)
            .send()
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "{}: GetObjectLockConfiguration {bucket} failed: {}",
                    self.name,
                    aws_sdk_s3::error::DisplayErrorContext(&e)
                )
            });
        let enabled = lock
            .object_lock_configuration()
            .and_then(|c| c.object_lock_enabled())
            .is_some_and(|e| e.as_str() == "Enabled");
        assert!(
            enabled,
            "{}: bucket {bucket} was created without Object Lock: {lock:?}",
            self.name
        );
        bucket
    }
}

/// `<prefix>-<time>-<pid>-<n>`, lower-cased and cut to S3's 63-character bucket-name limit.
/// A bucket name nobody has created yet: `<prefix>-<unique suffix>`.
pub fn unique_bucket_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut clean: String = prefix
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '-') => c,
            _ => '-',
        })
        .collect();
    clean = clean.trim_matches('-').chars().take(30).collect();
    if clean.is_empty() {
        clean.push_str("lifeboat");
    }
    let micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or_default();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    // 36 bits of microseconds ≈ 19 hours before wrapping: with pid and counter, unique enough.
    format!(
        "{}-{:09x}-{}-{n}",
        clean.trim_end_matches('-'),
        micros & 0xf_ffff_ffff,
        std::process::id()
    )
}
