//! The foundation's acceptance run: a ~1 GB database backed up by `lifeboatd run` into Ceph under
//! COMPLIANCE lock and restored by `lifeboat restore`, equal table by table.

use crate::common::{assert_databases_equal, backup, workspace};
use lifeboat_tests::fixture::load_bulk;
use lifeboat_tests::lifeboat::{lifeboat, pg_job_toml, s3_store_toml, write_config};
use lifeboat_tests::postgres::PgCluster;
use lifeboat_tests::s3;

#[tokio::test(flavor = "multi_thread")]
async fn one_gigabyte_database_round_trips_through_ceph_under_compliance_lock() {
    let Some(tier) = s3::require_ceph() else {
        return;
    };
    let src = PgCluster::start().unwrap();
    let mb: u64 = std::env::var("LIFEBOAT_TEST_LARGE_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let size = load_bulk(&src, "big", mb).unwrap();
    assert!(
        size >= mb * 1024 * 1024 * 9 / 10,
        "database is {size} bytes"
    );
    let (dir, k) = workspace();
    let bucket = tier.create_locked_bucket("e2e-large").await;
    let config = write_config(
        dir.path(),
        &k.recipient,
        &[
            s3_store_toml("offsite", &tier, &bucket, "compliance"),
            pg_job_toml("big", "offsite", &src.url("big"), &["big"], ""),
        ],
    );
    let id = backup(&config, "big");
    let client = tier.client().await;
    let listed = client
        .list_objects_v2()
        .bucket(&bucket)
        .send()
        .await
        .unwrap();
    // globals, the dump, the catalog, the manifest's signature and the manifest.
    assert_eq!(listed.contents().len(), 5);
    for o in listed.contents() {
        let r = client
            .head_object()
            .bucket(&bucket)
            .key(o.key().unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.object_lock_mode().map(|m| m.as_str()),
            Some("COMPLIANCE"),
            "{:?}",
            o.key()
        );
        // The same check `aws s3api get-object-retention` makes.
        let retention = client
            .get_object_retention()
            .bucket(&bucket)
            .key(o.key().unwrap())
            .send()
            .await
            .unwrap();
        let retention = retention.retention().unwrap();
        assert_eq!(retention.mode().map(|m| m.as_str()), Some("COMPLIANCE"));
        assert!(
            retention.retain_until_date().unwrap().secs() > chrono::Utc::now().timestamp() + 86_000
        );
    }
    let target = PgCluster::start().unwrap();
    lifeboat(
        &config,
        &[
            "restore",
            &format!("big/{id}"),
            "--identity",
            k.identity_file.to_str().unwrap(),
            "--to-database",
            &target.url("big"),
        ],
    )
    .expect_code(0);
    assert_databases_equal((&src, "big"), (&target, "big")).await;
}
