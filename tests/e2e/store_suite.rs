//! The store conformance suite (restic's idea): the same checks against every store — fs, moto, Ceph RGW.
//! Commit-or-abort streaming writes, lock read-back, write-once keys, locked deletes refused, listing.

use bytes::Bytes;
use lifeboat_config::LockMode;
use lifeboat_core::pipeline::Chunk;
use lifeboat_core::store::{AdminStore, AnyStore, LockSpec, ReadStore, StoreError, WriteStore};
use lifeboat_tests::lifeboat::{fs_store_toml, s3_store_toml};
use lifeboat_tests::s3::{self, S3Tier};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

const RECIPIENT: &str = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p";

async fn build(dir: &std::path::Path, table: String) -> AnyStore {
    let path = dir.join("store.toml");
    std::fs::write(
        &path,
        format!("[encryption]\nrecipients = [\"{RECIPIENT}\"]\n{table}"),
    )
    .unwrap();
    let config = lifeboat_config::load(&path).unwrap();
    let cfg = config.stores.values().next().unwrap();
    AnyStore::build(cfg).await.unwrap()
}

fn lock() -> LockSpec {
    LockSpec {
        mode: LockMode::Compliance,
        retain_until: Some(chrono::Utc::now() + chrono::Duration::days(1)),
    }
}

async fn conformance(store: &AnyStore, tier: Option<&S3Tier>, bucket: Option<&str>) {
    let name = store.name().to_owned();
    assert!(
        store.lock_status().await.unwrap().enabled,
        "{name}: lock enabled"
    );

    // A committed stream of several parts becomes one locked object with exactly those bytes.
    let part = vec![7u8; 5 * 1024 * 1024];
    let (tx, rx) = mpsc::channel(1);
    let sender = tokio::spawn(async move {
        for i in 0..3u8 {
            let mut p = part.clone();
            p[0] = i;
            tx.send(Chunk::Part(Bytes::from(p))).await.unwrap();
        }
        tx.send(Chunk::Part(Bytes::from_static(b"tail")))
            .await
            .unwrap();
        tx.send(Chunk::Commit).await.unwrap();
    });
    let wanted = lock();
    let receipt = store.put_stream("suite/a.bin", rx, &wanted).await.unwrap();
    sender.await.unwrap();
    assert_eq!(receipt.size, 3 * 5 * 1024 * 1024 + 4, "{name}");
    assert!(
        receipt.lock.satisfies(&wanted),
        "{name}: {:?}",
        receipt.lock
    );
    let head = store.head("suite/a.bin").await.unwrap();
    assert_eq!(head.size, receipt.size);
    assert!(
        head.lock.unwrap().satisfies(&wanted),
        "{name}: head shows the lock"
    );
    let mut body = Vec::new();
    store
        .get("suite/a.bin")
        .await
        .unwrap()
        .read_to_end(&mut body)
        .await
        .unwrap();
    assert_eq!(body.len() as u64, receipt.size);
    assert_eq!(
        (body[0], body[5 * 1024 * 1024], body[10 * 1024 * 1024]),
        (0, 1, 2)
    );
    assert!(body.ends_with(b"tail"));

    // A stream closed without Commit leaves nothing visible (and no multipart upload).
    let (tx, rx) = mpsc::channel(1);
    let sender = tokio::spawn(async move {
        tx.send(Chunk::Part(Bytes::from(vec![1u8; 5 * 1024 * 1024])))
            .await
            .unwrap();
        drop(tx);
    });
    let aborted = store.put_stream("suite/b.bin", rx, &lock()).await;
    sender.await.unwrap();
    assert!(
        matches!(aborted, Err(StoreError::Aborted { .. })),
        "{name}: {aborted:?}"
    );
    assert!(
        store.head("suite/b.bin").await.unwrap_err().is_not_found(),
        "{name}"
    );
    if let (Some(tier), Some(bucket)) = (tier, bucket) {
        let uploads = tier
            .client()
            .await
            .list_multipart_uploads()
            .bucket(bucket)
            .send()
            .await
            .unwrap();
        assert!(
            uploads.uploads().is_empty(),
            "{name}: multipart upload aborted"
        );
    }

    // Keys are written once.
    let again = store
        .put_small("suite/a.bin", Bytes::from_static(b"x"), &lock())
        .await;
    assert!(
        matches!(again, Err(StoreError::AlreadyExists { .. })),
        "{name}: {again:?}"
    );

    // Small objects are locked too, and listing sees both objects under the prefix only.
    let small = store
        .put_small("suite/c.json", Bytes::from_static(b"{}"), &wanted)
        .await
        .unwrap();
    assert!(small.lock.satisfies(&wanted), "{name}");
    assert_eq!(
        store.get_small("suite/c.json", 10).await.unwrap(),
        Bytes::from_static(b"{}")
    );
    assert!(
        store.get_small("suite/a.bin", 10).await.is_err(),
        "{name}: size limit"
    );
    let keys: Vec<String> = store
        .list("suite/")
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert_eq!(keys, ["suite/a.bin", "suite/c.json"], "{name}");
    assert!(store.list("other/").await.unwrap().is_empty());

    // A locked object cannot be deleted, even with admin rights.
    let version = small.version_id.clone();
    let deleted = store
        .delete_version("suite/c.json", version.as_deref())
        .await;
    assert!(deleted.is_err(), "{name}: locked delete refused");
    assert!(
        store.head("suite/c.json").await.is_ok(),
        "{name}: still there"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn fs_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let store = build(dir.path(), fs_store_toml("local", &dir.path().join("s"))).await;
    conformance(&store, None, None).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_stores_conform() {
    for tier in s3::require_all() {
        let dir = tempfile::tempdir().unwrap();
        let bucket = tier.create_locked_bucket("suite").await;
        let store = build(
            dir.path(),
            s3_store_toml(tier.name, &tier, &bucket, "compliance"),
        )
        .await;
        conformance(&store, Some(&tier), Some(&bucket)).await;
    }
}
