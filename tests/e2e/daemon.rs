//! `lifeboatd` as a service: scheduled runs against real PostgreSQL and Ceph RGW, metrics that survive a
//! restart, SIGTERM during a run, a store outage, timeouts and SIGHUP reloads.

use crate::common::{
    assert_no_multipart_uploads, assert_no_snapshot, listed_ids, small_source, workspace,
};
use lifeboat_tests::daemon::{daemon_toml, free_port, metric, Daemon};
use lifeboat_tests::lifeboat::{fs_store_toml, pg_job_toml, s3_store_toml, write_config};
use lifeboat_tests::postgres::{run, wait_until};
use lifeboat_tests::rgw::PrivateGateway;
use lifeboat_tests::s3;
use std::process::Command;
use std::time::Duration;

fn runs(text: &str, job: &str, result: &str) -> f64 {
    metric(
        text,
        &format!("lifeboat_backup_runs_total{{job=\"{job}\",result=\"{result}\"}}"),
    )
    .unwrap_or(0.0)
}

fn gauge(text: &str, name: &str, job: &str) -> Option<f64> {
    metric(text, &format!("{name}{{job=\"{job}\"}}"))
}

fn now_s() -> f64 {
    chrono::Utc::now().timestamp_millis() as f64 / 1000.0
}

/// `promtool check metrics` accepts the scrape (syntax and naming lint).
fn assert_promtool_accepts(text: &str) {
    if !lifeboat_tests::skip::require_or(
        "promtool",
        "apt-get install prometheus",
        lifeboat_tests::skip::binary_on_path("promtool"),
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metrics.txt");
    std::fs::write(&path, text).unwrap();
    let out = run(Command::new("sh")
        .arg("-c")
        .arg(format!("promtool check metrics < {}", path.display())))
    .unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics rejected the scrape:\n{}{}\n--- scrape:\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn scheduled_runs_export_metrics_that_survive_a_restart() {
    let Some(tier) = s3::require_ceph() else {
        return;
    };
    let pg = small_source("app", 2000);
    let (dir, k) = workspace();
    let bucket = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(tier.create_locked_bucket("e2e-daemon"));
    let port = free_port();
    let tables = |schedule: &str| {
        vec![
            daemon_toml(port, "probe_interval = \"2s\""),
            s3_store_toml("offsite", &tier, &bucket, "compliance"),
            pg_job_toml(
                "app",
                "offsite",
                &pg.url("app"),
                &["app"],
                &format!("schedule = \"{schedule}\"\n"),
            ),
        ]
    };
    // Every minute; no snapshot yet, so catch-up runs one at start-up.
    let config = write_config(dir.path(), &k.recipient, &tables("* * * * *"));
    let started = now_s();
    let mut daemon = Daemon::start(&config, port);
    assert_eq!(daemon.get("/healthz").unwrap().status, 200);
    let text = daemon.wait_for("the catch-up run", Duration::from_secs(60), |t| {
        runs(t, "app", "success") >= 1.0
    });
    let last = gauge(
        &text,
        "lifeboat_backup_last_success_timestamp_seconds",
        "app",
    )
    .expect("last-success gauge after a run");
    assert!(
        last >= started && last <= now_s(),
        "{last} not within the run"
    );
    assert!(gauge(&text, "lifeboat_backup_expected_interval_seconds", "app") == Some(60.0));
    let next = gauge(&text, "lifeboat_next_run_timestamp_seconds", "app").unwrap();
    assert!(next > started && next <= now_s() + 61.0, "next run {next}");
    assert!(metric(&text, "lifeboat_backup_bytes{job=\"app\",stage=\"source\"}").unwrap() > 0.0);
    assert!(metric(&text, "lifeboat_backup_bytes{job=\"app\",stage=\"stored\"}").unwrap() > 0.0);
    assert_eq!(gauge(&text, "lifeboat_backup_running", "app"), Some(0.0));
    // The tier's owner credentials cannot delete a COMPLIANCE-locked version, but they can rewrite the bucket's
    // lock configuration: the audit at start-up says so (this store has require_immutable = false).
    assert_eq!(
        metric(&text, "lifeboat_store_immutable{store=\"offsite\"}"),
        Some(0.0)
    );
    assert_eq!(
        metric(
            &text,
            "lifeboat_store_audit_probe_ok{store=\"offsite\",probe=\"locked_version_delete\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &text,
            "lifeboat_store_audit_probe_ok{store=\"offsite\",probe=\"lock_config_change\"}"
        ),
        Some(0.0)
    );
    assert_eq!(
        metric(
            &text,
            "lifeboat_store_immutability_required{store=\"offsite\"}"
        ),
        Some(0.0)
    );
    // No drill has run: the verify gauge is absent, not zero.
    assert!(
        !text.contains("lifeboat_verify_last_success_timestamp_seconds{"),
        "{text}"
    );
    assert_promtool_accepts(&text);
    daemon.wait_ready(200, Duration::from_secs(30));

    // The next minute's scheduled run happens without help.
    let text = daemon.wait_for("the scheduled run", Duration::from_secs(80), |t| {
        runs(t, "app", "success") >= 2.0
    });
    let last = gauge(
        &text,
        "lifeboat_backup_last_success_timestamp_seconds",
        "app",
    )
    .unwrap();
    assert_eq!(listed_ids(&config, None).len(), 2);
    let log = daemon.log();
    assert!(
        log.lines().any(|l| l.contains("Backup run finished")
            && l.contains("\"snapshot\"")
            && l.contains("\"stored_bytes\"")),
        "{log}"
    );
    assert!(
        !log.contains(&tier.secret_key),
        "the S3 secret key leaked into the log"
    );
    assert!(
        !log.contains(&k.identity_text),
        "an age identity leaked into the log"
    );
    // Logs are JSON lines.
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
    }
    daemon.signal("TERM");
    assert!(daemon.wait_exit(Duration::from_secs(60)).success());

    // Restart with a schedule that is not due (yearly): the gauge comes back from the store, no run happens.
    write_config(dir.path(), &k.recipient, &tables("0 0 1 1 *"));
    let daemon = Daemon::start(&config, port);
    daemon.wait_ready(200, Duration::from_secs(30));
    let text = daemon.metrics();
    assert_eq!(
        gauge(
            &text,
            "lifeboat_backup_last_success_timestamp_seconds",
            "app"
        ),
        Some(last),
        "{text}"
    );
    assert_eq!(runs(&text, "app", "success"), 0.0);
    assert_eq!(gauge(&text, "lifeboat_backup_running", "app"), Some(0.0));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        listed_ids(&config, None).len(),
        2,
        "no catch-up run was due"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_during_a_run_cancels_it_after_the_grace_period() {
    let Some(tier) = s3::require_ceph() else {
        return;
    };
    let pg = small_source("app", 1000);
    // pg_dump waits forever behind this lock.
    let locker = crate::common::block_pg_dump(&pg, "app").await;
    let (dir, k) = workspace();
    let bucket = tier.create_locked_bucket("e2e-daemon-term").await;
    let port = free_port();
    let config = write_config(
        dir.path(),
        &k.recipient,
        &[
            daemon_toml(port, "shutdown_grace = \"2s\""),
            s3_store_toml("offsite", &tier, &bucket, "compliance"),
            pg_job_toml("app", "offsite", &pg.url("app"), &["app"], ""),
        ],
    );
    let mut daemon = Daemon::start(&config, port);
    assert!(
        wait_until(Duration::from_secs(30), || crate::common::pg_dump_running(
            pg.port()
        )),
        "the catch-up run never started pg_dump:\n{}",
        daemon.log()
    );
    assert_eq!(
        daemon.metric("lifeboat_backup_running{job=\"app\"}"),
        Some(1.0)
    );
    std::thread::sleep(Duration::from_millis(1000));
    let sent = std::time::Instant::now();
    daemon.signal("TERM");
    let status = daemon.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "{status}\n{}", daemon.log());
    assert!(
        sent.elapsed() >= Duration::from_secs(2),
        "the grace period was not given"
    );
    let log = daemon.log();
    assert!(log.contains("Cancelling running backups"), "{log}");
    crate::common::assert_pg_dump_gone(pg.port());
    assert_no_snapshot(&config);
    assert_no_multipart_uploads(&tier, &bucket).await;
    locker.batch_execute("ROLLBACK").await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_past_its_timeout_is_cancelled_and_counted_as_failed() {
    let pg = small_source("app", 1000);
    let locker = crate::common::block_pg_dump(&pg, "app").await;
    let (dir, k) = workspace();
    let port = free_port();
    let config = write_config(
        dir.path(),
        &k.recipient,
        &[
            daemon_toml(port, ""),
            fs_store_toml("local", &dir.path().join("store")),
            pg_job_toml(
                "app",
                "local",
                &pg.url("app"),
                &["app"],
                "timeout = \"3s\"\nretry_attempts = 2\nretry_backoff = \"1s\"\n",
            ),
        ],
    );
    let daemon = Daemon::start(&config, port);
    let text = daemon.wait_for("two timed-out attempts", Duration::from_secs(60), |t| {
        runs(t, "app", "failure") >= 1.0
    });
    assert_eq!(
        metric(&text, "lifeboat_backup_attempt_failures_total{job=\"app\"}"),
        Some(2.0)
    );
    assert_eq!(runs(&text, "app", "success"), 0.0);
    assert!(daemon.log().contains("timed out"), "{}", daemon.log());
    crate::common::assert_pg_dump_gone(pg.port());
    assert_no_snapshot(&config);
    locker.batch_execute("ROLLBACK").await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_store_outage_fails_runs_and_the_next_run_after_it_succeeds() {
    let Some(tier) = s3::require_ceph() else {
        return;
    };
    let mut gateway = PrivateGateway::start(&tier);
    let pg = small_source("app", 1000);
    let (dir, k) = workspace();
    let bucket = tier.create_locked_bucket("e2e-daemon-outage").await;
    let port = free_port();
    let config = write_config(
        dir.path(),
        &k.recipient,
        &[
            daemon_toml(port, "probe_interval = \"1s\""),
            s3_store_toml("offsite", &gateway.tier, &bucket, "compliance"),
            pg_job_toml(
                "app",
                "offsite",
                &pg.url("app"),
                &["app"],
                "schedule = \"* * * * *\"\nretry_attempts = 1\n",
            ),
        ],
    );
    let daemon = Daemon::start(&config, port);
    daemon.wait_for("the catch-up run", Duration::from_secs(60), |t| {
        runs(t, "app", "success") >= 1.0
    });
    daemon.wait_ready(200, Duration::from_secs(10));

    gateway.stop();
    let down = daemon.wait_ready(503, Duration::from_secs(60));
    assert!(
        down.body.contains("store offsite: UNREACHABLE"),
        "{}",
        down.body
    );
    let text = daemon.wait_for(
        "a failed run during the outage",
        Duration::from_secs(150),
        |t| runs(t, "app", "failure") >= 1.0,
    );
    assert_eq!(
        metric(&text, "lifeboat_store_up{store=\"offsite\"}"),
        Some(0.0)
    );
    assert_eq!(runs(&text, "app", "success"), 1.0);

    gateway.resume();
    daemon.wait_ready(200, Duration::from_secs(60));
    let text = daemon.wait_for(
        "a successful run after the outage",
        Duration::from_secs(150),
        |t| runs(t, "app", "success") >= 2.0,
    );
    assert!(runs(&text, "app", "failure") >= 1.0);
    assert_eq!(
        listed_ids(&config, None).len(),
        2,
        "failed runs leave no snapshot"
    );
    assert_no_multipart_uploads(&tier, &bucket).await;
}

#[test]
fn sighup_reloads_a_valid_config_and_keeps_the_old_one_on_errors() {
    let (dir, k) = workspace();
    let port = free_port();
    let store = fs_store_toml("local", &dir.path().join("store"));
    // Not due, no catch-up: nothing runs, so the test needs no PostgreSQL.
    let job = |name: &str| {
        pg_job_toml(
            name,
            "local",
            "postgres://backup@127.0.0.1:1/app",
            &["app"],
            "schedule = \"0 0 1 1 *\"\ncatch_up = false\n",
        )
    };
    let config = write_config(
        dir.path(),
        &k.recipient,
        &[daemon_toml(port, ""), store.clone(), job("one")],
    );
    let mut daemon = Daemon::start(&config, port);
    daemon.wait_ready(200, Duration::from_secs(30));
    let text = daemon.metrics();
    assert!(gauge(&text, "lifeboat_next_run_timestamp_seconds", "one").is_some());
    assert_eq!(
        metric(&text, "lifeboat_config_last_reload_successful"),
        Some(1.0)
    );

    // A valid new config: job two appears, job one goes.
    write_config(
        dir.path(),
        &k.recipient,
        &[daemon_toml(port, ""), store.clone(), job("two")],
    );
    daemon.signal("HUP");
    let text = daemon.wait_for("job two scheduled", Duration::from_secs(20), |t| {
        gauge(t, "lifeboat_next_run_timestamp_seconds", "two").is_some()
    });
    assert!(!text.contains("job=\"one\""), "{text}");

    // An invalid config is rejected; the daemon keeps running the previous one.
    std::fs::write(&config, "this is not toml = = =\n").unwrap();
    daemon.signal("HUP");
    let text = daemon.wait_for("the rejected reload", Duration::from_secs(20), |t| {
        metric(t, "lifeboat_config_last_reload_successful") == Some(0.0)
    });
    assert!(gauge(&text, "lifeboat_next_run_timestamp_seconds", "two").is_some());
    assert!(daemon.is_running());
    assert!(
        daemon.log().contains("Configuration reload rejected"),
        "{}",
        daemon.log()
    );
    assert_eq!(daemon.get("/readyz").unwrap().status, 200);
    daemon.signal("TERM");
    assert!(daemon.wait_exit(Duration::from_secs(30)).success());
}
