//! `lifeboat prune`: GFS retention over a synthetic history, never deleting locked snapshots or the newest, and
//! an interrupted prune never leaving a listed snapshot that cannot be restored.

use crate::common::{backup, listed_ids, small_source, workspace};
use chrono::{DateTime, Duration as ChronoDuration, TimeZone, Utc};
use lifeboat_core::snapshot::{Manifest, SnapshotId};
use lifeboat_tests::lifeboat::{fs_store_toml, lifeboat, pg_job_toml, sign_manifest, write_config};
use std::collections::BTreeSet;
use std::path::Path;

/// Copies a real snapshot's directory under `count` new ids, one every 6 hours back from `newest`, with locks that
/// have already expired (the fs store keeps its emulated locks in `.lifeboat-locks/`, which are not copied). Each
/// manifest is signed with the test directory's key (the store's parent directory), as the daemon would.
fn synthetic_history(
    store: &Path,
    job: &str,
    template: &str,
    newest: DateTime<Utc>,
    count: usize,
) -> Vec<String> {
    let src = store.join("snapshots").join(job).join(template);
    let manifest = Manifest::from_json(&std::fs::read(src.join("manifest.json")).unwrap()).unwrap();
    let mut ids = Vec::new();
    for i in 0..count {
        let at = newest - ChronoDuration::hours(6 * i as i64);
        let id = SnapshotId::new(at);
        let dst = store.join("snapshots").join(job).join(id.as_str());
        std::fs::create_dir_all(&dst).unwrap();
        let mut m = manifest.clone();
        m.snapshot_id = id.clone();
        m.started_at = at;
        m.finished_at = at + ChronoDuration::seconds(5);
        for o in &mut m.objects {
            o.key = o.key.replace(template, id.as_str());
            o.lock.retain_until = Some(at + ChronoDuration::seconds(1));
            std::fs::copy(
                src.join(format!("{}.zst.age", o.name)),
                dst.join(format!("{}.zst.age", o.name)),
            )
            .unwrap();
        }
        let json = m.to_json();
        let test_dir = store.parent().unwrap();
        std::fs::write(
            dst.join("manifest.json.sig"),
            sign_manifest(test_dir, &json),
        )
        .unwrap();
        std::fs::write(dst.join("manifest.json"), json).unwrap();
        ids.push(id.to_string());
    }
    ids
}

fn listed(config: &Path) -> BTreeSet<String> {
    listed_ids(config, None).into_iter().collect()
}

#[test]
fn prune_keeps_what_the_gfs_policy_keeps_and_never_a_locked_or_the_newest_snapshot() {
    let pg = small_source("app", 100);
    let (dir, k) = workspace();
    let store = dir.path().join("store");
    let config = write_config(
        dir.path(),
        &k.recipient,
        &[
            fs_store_toml("local", &store),
            pg_job_toml("app", "local", &pg.url("app"), &["app"], "keep_last = 3\nkeep_daily = 7\nkeep_weekly = 4\nkeep_monthly = 6\nkeep_yearly = 2\n"),
        ],
    );
    // One real (locked, 1 day) snapshot, then 400 synthetic ones with expired locks, older than it.
    let real = backup(&config, "app");
    let newest = Utc.with_ymd_and_hms(2026, 11, 1, 12, 0, 0).unwrap();
    let synthetic = synthetic_history(&store, "app", &real, newest, 400);
    assert_eq!(listed(&config).len(), 401);

    let dry = lifeboat(&config, &["prune", "--dry-run", "--json"]);
    dry.expect_code(0);
    let rows: serde_json::Value = serde_json::from_str(&dry.stdout).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 401);
    let kept: BTreeSet<String> = rows
        .iter()
        .filter(|r| r["keep"] == true)
        .map(|r| r["snapshot"].as_str().unwrap().to_owned())
        .collect();
    // The real snapshot is the newest and still locked.
    let real_row = rows
        .iter()
        .find(|r| r["snapshot"] == real.as_str())
        .unwrap();
    assert_eq!(real_row["keep"], true);
    // 3 last + 7 daily + 4 weekly + 6 monthly + 2 yearly over one history, counted once: far fewer than 401, and
    // every rule represented.
    assert!(
        kept.len() >= 10 && kept.len() <= 22,
        "{} kept: {kept:?}",
        kept.len()
    );
    for reason in ["last", "daily", "weekly", "monthly", "yearly"] {
        assert!(
            rows.iter()
                .any(|r| r["reasons"].as_array().unwrap().iter().any(|x| x == reason)),
            "no snapshot kept as {reason}"
        );
    }
    // Dry run deleted nothing.
    assert_eq!(listed(&config).len(), 401);

    let out = lifeboat(&config, &["prune", "--json"]);
    out.expect_code(0);
    assert_eq!(listed(&config), kept, "exactly the kept snapshots remain");
    for id in synthetic.iter().filter(|id| !kept.contains(*id)) {
        assert!(
            !store
                .join("snapshots/app")
                .join(id)
                .join("app.dump.zst.age")
                .exists(),
            "{id} objects left"
        );
    }
    // What remains restores: verify the real one and the oldest kept synthetic one.
    lifeboat(
        &config,
        &[
            "verify",
            &format!("app/{real}"),
            "--identity",
            k.identity_file.to_str().unwrap(),
            "--no-record",
        ],
    )
    .expect_code(0);
    let oldest = kept.iter().next().unwrap();
    lifeboat(
        &config,
        &[
            "restore",
            &format!("app/{oldest}"),
            "--identity",
            k.identity_file.to_str().unwrap(),
            "--to-file",
            dir.path().join("old.dump").to_str().unwrap(),
        ],
    )
    .expect_code(0);

    // A second prune changes nothing.
    lifeboat(&config, &["prune"]).expect_code(0);
    assert_eq!(listed(&config), kept);
}

#[test]
fn prune_without_a_policy_keeps_everything_and_locked_snapshots_are_never_deleted() {
    let pg = small_source("app", 100);
    let (dir, k) = workspace();
    let store = dir.path().join("store");
    let config = write_config(
        dir.path(),
        &k.recipient,
        &[
            fs_store_toml("local", &store),
            pg_job_toml("app", "local", &pg.url("app"), &["app"], ""),
        ],
    );
    let ids: Vec<String> = (0..4)
        .map(|_| {
            std::thread::sleep(std::time::Duration::from_millis(1100));
            backup(&config, "app")
        })
        .collect();
    let out = lifeboat(&config, &["prune"]);
    out.expect_code(0);
    assert_eq!(listed(&config).len(), 4, "no keep_* rule: everything stays");
    // With a keep_last 1 policy the three older ones are dropped by the rules, but they are locked for a day.
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "store = \"local\"\n",
        "store = \"local\"\nkeep_last = 1\nkeep_min = 1\n",
    );
    std::fs::write(&config, text).unwrap();
    let out = lifeboat(&config, &["prune", "--json"]);
    out.expect_code(0);
    assert!(out.stdout.contains("still locked"), "{}", out.stdout);
    assert_eq!(
        listed(&config),
        ids.iter().cloned().collect::<BTreeSet<_>>()
    );
}

/// Writes a copy of snapshot `template` of `job` in the bucket under a new id started at `at`, every object
/// locked COMPLIANCE until `until` (the locked-longer `exception` object, if named, until `exception_until`), its
/// manifest signed with the key of `test_dir`.
#[allow(clippy::too_many_arguments)]
async fn copy_snapshot_s3(
    test_dir: &Path,
    client: &aws_sdk_s3::Client,
    bucket: &str,
    job: &str,
    template: &Manifest,
    at: DateTime<Utc>,
    until: DateTime<Utc>,
    exception: Option<(&str, DateTime<Utc>)>,
) -> String {
    use aws_sdk_s3::primitives::{ByteStream, DateTime as AwsTime};
    use aws_sdk_s3::types::ObjectLockMode;
    let id = SnapshotId::new(at);
    let mut m = template.clone();
    m.snapshot_id = id.clone();
    m.started_at = at;
    m.finished_at = at + ChronoDuration::seconds(5);
    let lock_for = |name: &str| match exception {
        Some((n, u)) if n == name => u,
        _ => until,
    };
    for o in &mut m.objects {
        let body = client
            .get_object()
            .bucket(bucket)
            .key(format!("lifeboat/{}", o.key))
            .send()
            .await
            .unwrap()
            .body
            .collect()
            .await
            .unwrap()
            .into_bytes();
        o.key = o.key.replace(template.snapshot_id.as_str(), id.as_str());
        let retain = lock_for(&o.name);
        let put = client
            .put_object()
            .bucket(bucket)
            .key(format!("lifeboat/{}", o.key))
            .body(ByteStream::from(body))
            .object_lock_mode(ObjectLockMode::Compliance)
            .object_lock_retain_until_date(AwsTime::from_secs(retain.timestamp() + 1))
            .checksum_algorithm(aws_sdk_s3::types::ChecksumAlgorithm::Sha256)
            .send()
            .await
            .unwrap();
        o.version_id = put.version_id().map(str::to_owned);
        o.lock.retain_until = Some(until);
    }
    let json = m.to_json();
    client
        .put_object()
        .bucket(bucket)
        .key(format!("lifeboat/snapshots/{job}/{id}/manifest.json.sig"))
        .body(ByteStream::from(sign_manifest(test_dir, &json)))
        .object_lock_mode(ObjectLockMode::Compliance)
        .object_lock_retain_until_date(AwsTime::from_secs(until.timestamp() + 1))
        .checksum_algorithm(aws_sdk_s3::types::ChecksumAlgorithm::Sha256)
        .send()
        .await
        .unwrap();
    client
        .put_object()
        .bucket(bucket)
        .key(format!("lifeboat/snapshots/{job}/{id}/manifest.json"))
        .body(ByteStream::from(json))
        .object_lock_mode(ObjectLockMode::Compliance)
        .object_lock_retain_until_date(AwsTime::from_secs(until.timestamp() + 1))
        .checksum_algorithm(aws_sdk_s3::types::ChecksumAlgorithm::Sha256)
        .send()
        .await
        .unwrap();
    id.to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn prune_on_ceph_deletes_every_version_of_expired_snapshots_and_an_interrupted_prune_lists_nothing_broken(
) {
    let Some(tier) = lifeboat_tests::s3::require_ceph() else {
        return;
    };
    let pg = small_source("app", 100);
    let (dir, k) = workspace();
    let bucket = tier.create_locked_bucket("e2e-prune").await;
    let config = write_config(
        dir.path(),
        &k.recipient,
        &[
            lifeboat_tests::lifeboat::s3_store_toml("offsite", &tier, &bucket, "compliance"),
            pg_job_toml(
                "app",
                "offsite",
                &pg.url("app"),
                &["app"],
                "keep_last = 2\nkeep_daily = 3\nkeep_min = 1\n",
            ),
        ],
    );
    let real = backup(&config, "app");
    let client = tier.client().await;
    let template_bytes = client
        .get_object()
        .bucket(&bucket)
        .key(format!("lifeboat/snapshots/app/{real}/manifest.json"))
        .send()
        .await
        .unwrap()
        .body
        .collect()
        .await
        .unwrap()
        .into_bytes();
    let template = Manifest::from_json(&template_bytes).unwrap();
    // Twelve older snapshots, two a day, locked for a few seconds only; the oldest one has an object that the
    // manifest says expires but the store keeps locked for a day (a prune that stops half-way).
    let now = Utc::now();
    let expires = now + ChronoDuration::seconds(4);
    let mut synthetic = Vec::new();
    for i in 1..=12 {
        let at = now - ChronoDuration::hours(12 * i);
        let exception = (i == 12).then_some(("app.dump", now + ChronoDuration::days(1)));
        synthetic.push(
            copy_snapshot_s3(
                dir.path(),
                &client,
                &bucket,
                "app",
                &template,
                at,
                expires,
                exception,
            )
            .await,
        );
    }
    let oldest = synthetic.last().unwrap().clone();
    assert_eq!(listed(&config).len(), 13);
    tokio::time::sleep(std::time::Duration::from_secs(6)).await;

    let out = lifeboat(&config, &["prune", "--json"]);
    // The oldest snapshot's locked object cannot go: prune reports it and fails...
    out.expect_code(1);
    assert!(out.stderr.contains(&oldest), "{}", out.stderr);
    let rows: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let kept: BTreeSet<String> = rows
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["keep"] == true)
        .map(|r| r["snapshot"].as_str().unwrap().to_owned())
        .collect();
    assert!(kept.contains(&real));
    // ...but its manifest went first: it is no longer listed, and everything listed restores.
    let remaining = listed(&config);
    assert_eq!(remaining, kept, "{}", out.stdout);
    assert!(!remaining.contains(&oldest));
    for (n, id) in remaining.iter().enumerate() {
        let file = dir.path().join(format!("r{n}.dump"));
        lifeboat(
            &config,
            &[
                "restore",
                &format!("app/{id}"),
                "--identity",
                k.identity_file.to_str().unwrap(),
                "--to-file",
                file.to_str().unwrap(),
            ],
        )
        .expect_code(0);
    }
    // Dropped snapshots have no version of any object left (except the locked one of the interrupted snapshot).
    for id in synthetic.iter().filter(|id| !kept.contains(*id)) {
        let versions = client
            .list_object_versions()
            .bucket(&bucket)
            .prefix(format!("lifeboat/snapshots/app/{id}/"))
            .send()
            .await
            .unwrap();
        let left: Vec<&str> = versions.versions().iter().filter_map(|v| v.key()).collect();
        if *id == oldest {
            assert_eq!(left.len(), 1, "{left:?}");
            assert!(left[0].ends_with("app.dump.zst.age"));
        } else {
            assert!(
                left.is_empty() && versions.delete_markers().is_empty(),
                "{id}: {left:?}"
            );
        }
    }
}
