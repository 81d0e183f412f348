//! The on-call runbook (`docs/runbook.md`) as code: its break-glass block, run verbatim with nothing but the stock
//! `aws`, `age`, `zstd`, `psql` and `pg_restore` CLIs, restores the newest complete snapshot from a Ceph RGW bucket
//! into a database equal to the source; and its drill bucket policy gives a second user exactly the drill's rights.

use crate::common::{assert_databases_equal, backup, rich_source, small_source, workspace};
use lifeboat_tests::lifeboat::{keys, lifeboat, pg_job_toml, s3_store_toml, write_config};
use lifeboat_tests::postgres::{run, PgCluster};
use lifeboat_tests::s3::{self, S3Tier};
use lifeboat_tests::skip::{binary_on_path, require_or};
use lifeboat_tests::yaml::output_text as combined;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BEGIN: &str = "<!-- break-glass:begin -->";
const END: &str = "<!-- break-glass:end -->";
/// The store prefix `s3_store_toml` configures.
const PREFIX: &str = "lifeboat/";

fn runbook() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/runbook.md"))
        .expect("read docs/runbook.md")
}

/// The one ```sh block between the break-glass markers of the runbook, as it stands there.
fn break_glass_block() -> String {
    let text = runbook();
    for marker in [BEGIN, END] {
        assert_eq!(
            text.matches(marker).count(),
            1,
            "docs/runbook.md must hold {marker} exactly once"
        );
    }
    let start = text.find(BEGIN).unwrap() + BEGIN.len();
    let end = text.find(END).unwrap();
    assert!(start < end, "{BEGIN} must come before {END}");
    let inner = text[start..end].trim();
    let body = inner
        .strip_prefix("```sh\n")
        .and_then(|b| b.strip_suffix("```"))
        .unwrap_or_else(|| panic!("between the markers: exactly one ```sh block, found:\n{inner}"));
    assert!(
        !body.contains("```"),
        "exactly one fenced block between the markers"
    );
    assert_eq!(
        body.lines().next(),
        Some("set -euo pipefail"),
        "the block starts with set -euo pipefail"
    );
    body.to_owned()
}

/// What the operator sets before running the block, plus an isolated `aws` configuration.
struct BreakGlass<'a> {
    tier: &'a S3Tier,
    bucket: &'a str,
    identity: &'a Path,
    target: &'a PgCluster,
    new_db: &'a str,
    /// Access key and secret for `aws`.
    keys: (&'a str, &'a str),
    /// Holds the `aws` config file.
    dir: &'a Path,
}

impl BreakGlass<'_> {
    /// Runs the runbook's block verbatim with `bash -c`.
    fn run(&self, block: &str) -> Output {
        // Only the variables the runbook names reach the block: no AWS_* or PG* of the caller's environment, and
        // an aws config of our own (path-style addressing, as the runbook advises for Ceph RGW and MinIO).
        let aws_config = self.dir.join("aws-config");
        std::fs::write(
            &aws_config,
            format!(
                "[default]\nregion = {}\ns3 =\n    addressing_style = path\n",
                self.tier.region
            ),
        )
        .unwrap();
        let mut cmd = Command::new("bash");
        cmd.arg("-c").arg(block);
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy();
            if name.starts_with("AWS_") || name.starts_with("PG") {
                cmd.env_remove(name.as_ref());
            }
        }
        // The target cluster's own client tools (pg_restore must be at least as new as the dump's pg_dump).
        let path =
            std::env::join_paths(std::iter::once(self.target.bin_dir().to_path_buf()).chain(
                std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
            ))
            .unwrap();
        cmd.env("PATH", path)
            .env("BUCKET", self.bucket)
            .env("PREFIX", PREFIX)
            .env("JOB", "app")
            .env("IDENTITY", self.identity)
            .env(
                "TARGET",
                format!("postgres://postgres@127.0.0.1:{}", self.target.port()),
            )
            .env("DB", "app")
            .env("NEW_DB", self.new_db)
            .env("S3_ENDPOINT", &self.tier.endpoint)
            .env("AWS_ACCESS_KEY_ID", self.keys.0)
            .env("AWS_SECRET_ACCESS_KEY", self.keys.1)
            .env("AWS_DEFAULT_REGION", &self.tier.region)
            .env("AWS_CONFIG_FILE", &aws_config)
            .env(
                "AWS_SHARED_CREDENTIALS_FILE",
                self.dir.join("no-credentials"),
            )
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_PAGER", "");
        run(&mut cmd).expect("run bash")
    }
}

fn require_break_glass_tools() -> bool {
    require_or(
        "the aws, age and zstd CLIs",
        "apt-get install -y awscli age zstd (tests/infra/install-deps.sh does)",
        binary_on_path("aws") && binary_on_path("age") && binary_on_path("zstd"),
    )
}

fn user_tables(pg: &PgCluster, db: &str) -> String {
    pg.psql(
        db,
        "select count(*) from pg_tables where schemaname not in ('pg_catalog', 'information_schema')",
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_runbook_break_glass_block_restores_the_newest_complete_snapshot_with_stock_tools() {
    let Some(tier) = s3::require_ceph() else {
        return;
    };
    if !require_break_glass_tools() {
        return;
    }
    let block = break_glass_block();
    let src = rich_source();
    let (dir, k) = workspace();
    let bucket = tier.create_locked_bucket("e2e-break-glass").await;
    let config = write_config(
        dir.path(),
        &k.recipient,
        &[
            s3_store_toml("offsite", &tier, &bucket, "compliance"),
            pg_job_toml("app", "offsite", &src.url("app"), &["app"], ""),
        ],
    );
    let id = backup(&config, "app");
    // A newer snapshot without a manifest (a backup that failed, or is still running): never restored.
    let incomplete = "20991231T235959Z-zzzzzz";
    tier.client()
        .await
        .put_object()
        .bucket(&bucket)
        .key(format!(
            "{PREFIX}snapshots/app/{incomplete}/app.dump.zst.age"
        ))
        .body(aws_sdk_s3::primitives::ByteStream::from_static(
            b"not a snapshot",
        ))
        .send()
        .await
        .expect("put an incomplete snapshot's object");

    let target = PgCluster::start().unwrap();
    let run = |identity: &Path, new_db: &str| {
        BreakGlass {
            tier: &tier,
            bucket: &bucket,
            identity,
            target: &target,
            new_db,
            keys: (&tier.access_key, &tier.secret_key),
            dir: dir.path(),
        }
        .run(&block)
    };

    let out = run(&k.identity_file, "app_restored");
    let said = combined(&out);
    assert!(
        out.status.success(),
        "the break-glass block failed:\n{said}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("\"snapshot_id\": \"{id}\"")),
        "the block shows the manifest of {id}:\n{said}"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!("skipping {incomplete}")),
        "the incomplete newer snapshot is skipped, and says so:\n{said}"
    );
    assert!(
        !said.contains(&k.identity_text),
        "the identity reached the output"
    );
    assert_databases_equal((&src, "app"), (&target, "app_restored")).await;

    // An existing database is never written: the block stops at CREATE DATABASE.
    let again = run(&k.identity_file, "app_restored");
    assert!(!again.status.success(), "{}", combined(&again));
    assert!(
        combined(&again).contains("already exists"),
        "{}",
        combined(&again)
    );
    assert_databases_equal((&src, "app"), (&target, "app_restored")).await;

    // A wrong identity fails the pipe (pipefail), and the new database stays empty.
    let wrong_dir = tempfile::tempdir().unwrap();
    let wrong = keys(wrong_dir.path());
    let out = run(&wrong.identity_file, "app_wrong_key");
    assert!(
        !out.status.success(),
        "a wrong identity must fail:\n{}",
        combined(&out)
    );
    assert_eq!(user_tables(&target, "app_wrong_key"), "0");
}

/// The ```json blocks of the runbook's "Credentials for drills" section: (IAM identity policy, bucket policy).
fn drill_policies() -> (Value, Value) {
    let text = runbook();
    let section = text
        .split("\n## ")
        .find(|s| s.starts_with("Credentials for drills"))
        .expect("a section \"Credentials for drills\" in docs/runbook.md");
    let blocks: Vec<Value> = section
        .split("```json\n")
        .skip(1)
        .map(|rest| {
            let json = &rest[..rest.find("```").expect("a closed ```json block")];
            serde_json::from_str(json).unwrap_or_else(|e| panic!("not JSON ({e}):\n{json}"))
        })
        .collect();
    let [iam, bucket] = blocks.as_slice() else {
        panic!("two ```json blocks (IAM policy, bucket policy): {blocks:?}");
    };
    (iam.clone(), bucket.clone())
}

/// Each statement's (effect, sorted actions, sorted resources), the principal left out.
fn grants(policy: &Value) -> Vec<(String, Vec<String>, Vec<String>)> {
    let strings = |v: &Value| -> Vec<String> {
        let mut out: Vec<String> = match v {
            Value::String(s) => vec![s.clone()],
            Value::Array(a) => a.iter().map(|s| s.as_str().unwrap().to_owned()).collect(),
            other => panic!("expected a string or a list: {other}"),
        };
        out.sort();
        out
    };
    policy["Statement"]
        .as_array()
        .expect("Statement list")
        .iter()
        .map(|s| {
            (
                s["Effect"].as_str().unwrap().to_owned(),
                strings(&s["Action"]),
                strings(&s["Resource"]),
            )
        })
        .collect()
}

/// A config whose store signs with the Ceph tier's second user (`lifeboat-other`).
fn config_as_other_user(dir: &Path, recipient: &str, tier: &S3Tier, bucket: &str) -> PathBuf {
    let store = s3_store_toml("offsite", tier, bucket, "compliance")
        .replace("_ACCESS_KEY\"", "_OTHER_ACCESS_KEY\"")
        .replace("_SECRET_KEY\"", "_OTHER_SECRET_KEY\"");
    assert!(store.contains("_OTHER_ACCESS_KEY\"") && store.contains("_OTHER_SECRET_KEY\""));
    std::fs::create_dir_all(dir).unwrap();
    // The same manifest-signing key as the writer's config in the parent directory: the reader trusts it.
    std::fs::copy(
        dir.parent().unwrap().join("signing.pem"),
        dir.join("signing.pem"),
    )
    .unwrap();
    write_config(
        dir,
        recipient,
        &[
            store,
            pg_job_toml(
                "app",
                "offsite",
                "postgres://unused@127.0.0.1:1/app",
                &["app"],
                "",
            ),
        ],
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn the_runbook_drill_bucket_policy_grants_reading_and_records_and_nothing_more() {
    let Some(tier) = s3::require_ceph() else {
        return;
    };
    let (iam, bucket_policy) = drill_policies();
    assert_eq!(
        grants(&iam),
        grants(&bucket_policy),
        "the IAM and the bucket policy of the runbook grant the same"
    );
    let other = tier
        .other_client()
        .await
        .expect("the Ceph tier has a second user, lifeboat-other");

    let src = small_source("app", 1000);
    let (dir, k) = workspace();
    let bucket = tier.create_locked_bucket("e2e-drill-policy").await;
    let config = write_config(
        dir.path(),
        &k.recipient,
        &[
            s3_store_toml("offsite", &tier, &bucket, "compliance"),
            pg_job_toml("app", "offsite", &src.url("app"), &["app"], ""),
        ],
    );
    let id = backup(&config, "app");
    let policy = serde_json::to_string(&bucket_policy)
        .unwrap()
        .replace("BUCKET", &bucket)
        .replace("PREFIX", PREFIX)
        .replace("DRILL_USER", "lifeboat-other");
    tier.client()
        .await
        .put_bucket_policy()
        .bucket(&bucket)
        .policy(policy)
        .send()
        .await
        .expect("put the runbook's drill bucket policy");

    // With the policy, the second user reads and checks everything and records the result under the lock.
    let other_config =
        config_as_other_user(&dir.path().join("other"), &k.recipient, &tier, &bucket);
    let out = lifeboat(
        &other_config,
        &[
            "verify",
            "app/latest",
            "--identity",
            k.identity_file.to_str().unwrap(),
        ],
    );
    out.expect_code(0);
    assert!(
        out.stdout
            .contains(&format!("record: verifications/app/{id}/")),
        "{}",
        out.stdout
    );

    // Nothing more: no object outside verifications/, no delete.
    let put = other
        .put_object()
        .bucket(&bucket)
        .key(format!("{PREFIX}snapshots/app/{id}/extra.zst.age"))
        .body(aws_sdk_s3::primitives::ByteStream::from_static(b"x"))
        .send()
        .await;
    assert!(put.is_err(), "the drill user wrote outside verifications/");
    #[allow(clippy::disallowed_methods)] // proving the drill role cannot delete
    let deleted = other
        .delete_object()
        .bucket(&bucket)
        .key(format!("{PREFIX}snapshots/app/{id}/manifest.json"))
        .send()
        .await;
    assert!(deleted.is_err(), "the drill user deleted (a delete marker)");
    lifeboat(&config, &["verify", &format!("app/{id}"), "--no-record"]).expect_code(0);
}
