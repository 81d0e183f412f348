//! Interrupting `lifeboatd run` (SIGINT) while pg_dump is stuck: the run stops promptly, pg_dump is killed,
//! the multipart upload is aborted and no manifest is written.

use crate::common::workspace;
use lifeboat_tests::lifeboat::{bin, pg_job_toml, s3_store_toml, write_config};
use lifeboat_tests::postgres::{run, wait_until};
use lifeboat_tests::s3;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread")]
async fn sigint_while_pg_dump_waits_on_a_lock_aborts_cleanly() {
    let Some(tier) = s3::require_ceph() else {
        return;
    };
    let pg = crate::common::small_source("app", 1000);
    // Another session holds an exclusive lock, so pg_dump waits forever for its ACCESS SHARE lock.
    let locker = crate::common::block_pg_dump(&pg, "app").await;

    let (dir, k) = workspace();
    let bucket = tier.create_locked_bucket("e2e-cancel").await;
    let config = write_config(
        dir.path(),
        &k.recipient,
        &[
            s3_store_toml("offsite", &tier, &bucket, "compliance"),
            pg_job_toml("app", "offsite", &pg.url("app"), &["app"], ""),
        ],
    );
    let mut child = Command::new(bin("lifeboatd"))
        .arg("--config")
        .arg(&config)
        .args(["run", "app"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(30), || crate::common::pg_dump_running(
            pg.port()
        )),
        "pg_dump never started"
    );
    // Let pg_dump reach its lock wait (it is blocked, not just slow).
    std::thread::sleep(Duration::from_millis(1500));
    let sent = Instant::now();
    run(Command::new("kill").args(["-INT", &child.id().to_string()])).unwrap();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            sent.elapsed() < Duration::from_secs(20),
            "lifeboatd did not stop after SIGINT"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cancelled"), "{stderr}");
    crate::common::assert_pg_dump_gone(pg.port());

    crate::common::assert_no_snapshot(&config);
    crate::common::assert_no_multipart_uploads(&tier, &bucket).await;
    locker.batch_execute("ROLLBACK").await.unwrap();
}
