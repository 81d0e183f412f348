//! `lifeboat store init` on Ceph RGW: creates a bucket with Object Lock, versioning and default retention, changes
//! nothing on a second run, generates a writer policy that lets the daemon's write path work but never delete, and
//! refuses an existing bucket without Object Lock, naming the fix (a new bucket).

use lifeboat_config::LockMode;
use lifeboat_core::store::{AnyStore, LockSpec, WriteStore};
use lifeboat_tests::lifeboat::{lifeboat, s3_store_toml, s3_writer_store_toml, write_config};
use lifeboat_tests::s3::{self, S3Tier};
use std::path::Path;

const RECIPIENT: &str = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p";

/// A bucket name nobody has created yet.
fn fresh_bucket(prefix: &str) -> String {
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros();
    format!(
        "{prefix}-{:x}-{}",
        micros & 0xf_ffff_ffff,
        std::process::id()
    )
}

fn steps(stdout: &str) -> Vec<(String, String)> {
    let v: serde_json::Value = serde_json::from_str(stdout).unwrap();
    v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["step"].as_str().unwrap().to_owned(),
                s["outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// The store as the second Ceph user (`lifeboat-other`), through lifeboat's own S3 store (the daemon's write path).
async fn store_as_other(dir: &Path, tier: &S3Tier, bucket: &str) -> AnyStore {
    let table = s3_writer_store_toml("offsite", tier, bucket, "compliance");
    let path = dir.join("other.toml");
    std::fs::write(
        &path,
        format!("[encryption]\nrecipients = [\"{RECIPIENT}\"]\n{table}"),
    )
    .unwrap();
    let config = lifeboat_config::load(&path).unwrap();
    AnyStore::build(&config.stores["offsite"]).await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn store_init_creates_a_locked_bucket_idempotently_and_its_writer_policy_cannot_delete() {
    let Some(tier) = s3::require_ceph() else {
        return;
    };
    let other = tier
        .other_client()
        .await
        .expect("the Ceph tier has a second user, lifeboat-other");
    let admin = tier.client().await;
    let dir = tempfile::tempdir().unwrap();
    let bucket = fresh_bucket("e2e-store-init");
    let config = write_config(
        dir.path(),
        RECIPIENT,
        &[s3_store_toml("offsite", &tier, &bucket, "compliance")],
    );
    let policies = dir.path().join("policies");

    // First run: creates and configures everything.
    let first = lifeboat(
        &config,
        &[
            "store",
            "init",
            "offsite",
            "--write-policies",
            policies.to_str().unwrap(),
            "--json",
        ],
    );
    first.expect_code(0);
    let first_steps = steps(&first.stdout);
    assert!(
        first_steps.contains(&("bucket".to_owned(), "changed".to_owned())),
        "{first_steps:?}"
    );
    assert!(
        first_steps
            .iter()
            .all(|(_, o)| matches!(o.as_str(), "ok" | "changed" | "already" | "not_supported")),
        "{}",
        first.stdout
    );
    for role in ["writer", "drill", "admin"] {
        for kind in ["iam", "bucket-policy"] {
            let text =
                std::fs::read_to_string(policies.join(format!("{role}-{kind}.json"))).unwrap();
            let _: serde_json::Value = serde_json::from_str(&text).unwrap();
        }
    }

    let lock = admin
        .get_object_lock_configuration()
        .bucket(&bucket)
        .send()
        .await
        .unwrap();
    let lock = lock.object_lock_configuration().unwrap();
    assert_eq!(
        lock.object_lock_enabled().map(|e| e.as_str()),
        Some("Enabled")
    );
    let default = lock.rule().and_then(|r| r.default_retention()).unwrap();
    assert_eq!(default.mode().map(|m| m.as_str()), Some("COMPLIANCE"));
    assert_eq!(default.days(), Some(1), "retention = \"1d\"");
    let versioning = admin
        .get_bucket_versioning()
        .bucket(&bucket)
        .send()
        .await
        .unwrap();
    assert_eq!(versioning.status().map(|s| s.as_str()), Some("Enabled"));

    // Second run: every item already as configured (or reported unsupported), nothing changed.
    let second = lifeboat(&config, &["store", "init", "offsite", "--json"]);
    second.expect_code(0);
    let second_steps = steps(&second.stdout);
    assert_eq!(second_steps.len(), first_steps.len());
    assert!(
        second_steps
            .iter()
            .all(|(_, o)| o == "already" || o == "not_supported"),
        "second run changed something: {}",
        second.stdout
    );
    let text = lifeboat(&config, &["store", "init", "offsite"]);
    text.expect_code(0);
    assert!(!text.stdout.contains("changed"), "{}", text.stdout);

    // The generated writer bucket policy for the second user: lifeboat's write path works, deletes do not.
    let policy = std::fs::read_to_string(policies.join("writer-bucket-policy.json"))
        .unwrap()
        .replace(
            "arn:aws:iam:::user/WRITER",
            "arn:aws:iam:::user/lifeboat-other",
        );
    admin
        .put_bucket_policy()
        .bucket(&bucket)
        .policy(policy)
        .send()
        .await
        .expect("put the generated writer bucket policy");
    let writer = store_as_other(dir.path(), &tier, &bucket).await;
    let receipt = writer
        .put_small(
            "snapshots/app/one/manifest.json",
            bytes::Bytes::from_static(b"{}"),
            &LockSpec {
                mode: LockMode::Compliance,
                retain_until: Some(chrono::Utc::now() + chrono::Duration::hours(1)),
            },
        )
        .await
        .expect("the writer policy allows lifeboat's write path (put, lock read-back)");
    let version = receipt.version_id.clone().expect("a versioned bucket");
    let key = format!("lifeboat/{}", receipt.key);
    #[allow(clippy::disallowed_methods)] // proving the writer role cannot delete
    let delete_version = other
        .delete_object()
        .bucket(&bucket)
        .key(&key)
        .version_id(&version)
        .send()
        .await;
    let err = delete_version.expect_err("the writer deleted a version");
    assert_eq!(
        err.as_service_error().and_then(|e| e.meta().code()),
        Some("AccessDenied"),
        "{err:?}"
    );
    // A plain delete (a delete marker, which the lock alone would allow) is refused by the policy's Deny.
    #[allow(clippy::disallowed_methods)]
    let delete_marker = other.delete_object().bucket(&bucket).key(&key).send().await;
    let err = delete_marker.expect_err("the writer created a delete marker");
    assert_eq!(
        err.as_service_error().and_then(|e| e.meta().code()),
        Some("AccessDenied"),
        "{err:?}"
    );
    let head = admin
        .head_object()
        .bucket(&bucket)
        .key(&key)
        .send()
        .await
        .expect("the object is still current");
    assert_eq!(head.version_id(), Some(version.as_str()));
}

#[tokio::test(flavor = "multi_thread")]
async fn store_init_refuses_an_existing_bucket_without_object_lock_and_names_the_fix() {
    let Some(tier) = s3::require_ceph() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let bucket = tier.create_plain_bucket("e2e-store-init-plain").await;
    let config = write_config(
        dir.path(),
        RECIPIENT,
        &[s3_store_toml("offsite", &tier, &bucket, "compliance")],
    );
    let out = lifeboat(&config, &["store", "init", "offsite"]);
    out.expect_code(1);
    assert!(
        out.stdout.contains("FAILED") && out.stdout.contains("without Object Lock"),
        "{}",
        out.stdout
    );
    assert!(out.stderr.contains("create a new bucket"), "{}", out.stderr);
    // Nothing was configured on the wrong bucket.
    let versioning = tier
        .client()
        .await
        .get_bucket_versioning()
        .bucket(&bucket)
        .send()
        .await
        .unwrap();
    assert_ne!(versioning.status().map(|s| s.as_str()), Some("Enabled"));
}
