//! `kind = "postgres_physical"`: a base backup of a cluster under a pgbench write load, stored on Ceph, restored
//! into a directory that starts and answers queries, verified against pg_basebackup's manifest, and drilled.

use crate::common::workspace;
use lifeboat_tests::lifeboat::{lifeboat, lifeboatd, pg_job_toml, s3_store_toml, write_config};
use lifeboat_tests::postgres::{run, running_as_root, PgCluster};
use lifeboat_tests::s3;
use std::process::{Command, Stdio};

/// A physical job for `pg` (pg_job_toml writes `kind = "postgres"`; only the kind differs).
fn physical_job(name: &str, store: &str, pg: &PgCluster, extra: &str) -> String {
    pg_job_toml(
        name,
        store,
        &pg.url("postgres"),
        &["postgres", "app"],
        extra,
    )
    .replace("kind = \"postgres\"", "kind = \"postgres_physical\"")
}

/// Runs `program` of the cluster's install as the postgres OS user when root (the data directory's owner).
fn as_owner(pg: &PgCluster, program: &str) -> Command {
    let path = pg.bin_dir().join(program);
    if running_as_root() {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--"]).arg(path);
        cmd
    } else {
        Command::new(path)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_base_backup_under_write_load_restores_starts_verifies_and_drills() {
    let Some(tier) = s3::require_ceph() else {
        return;
    };
    let pg = PgCluster::start_replicable().unwrap();
    pg.create_database("app").unwrap();
    let init = run(pg.tool("pgbench").args(["-i", "-q", "-s", "3", "app"])).unwrap();
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );

    let (dir, k) = workspace();
    let bucket = tier.create_locked_bucket("e2e-physical").await;
    let config = write_config(
        dir.path(),
        &k.recipient,
        &[
            s3_store_toml("offsite", &tier, &bucket, "compliance"),
            physical_job(
                "cluster",
                "offsite",
                &pg,
                "fast_checkpoint = true\n\n[jobs.cluster.drill]\nchecks = [\"select count(*) = 300000 from pgbench_accounts\", \"select count(*) > 0 from pgbench_history\"]\ndatabase = \"app\"\n",
            ),
        ],
    );

    // Writes go on during the whole backup.
    let mut load = pg
        .tool("pgbench")
        .args(["-c", "2", "-T", "60", "-n", "app"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_secs(2));
    let out = lifeboatd(&config, &["run", "cluster"]);
    load.kill().ok();
    load.wait().ok();
    out.expect_code(0);
    let id = out.stdout.trim().to_owned();

    // Every file checks out against pg_basebackup's own manifest.
    let verified = lifeboat(
        &config,
        &[
            "verify",
            &format!("cluster/{id}"),
            "--identity",
            k.identity_file.to_str().unwrap(),
            "--no-record",
        ],
    );
    verified.expect_code(0);
    assert!(
        verified
            .stdout
            .contains("cluster.tar: format: pg_basebackup's backup_manifest: all"),
        "{}",
        verified.stdout
    );

    // Restore into a new directory; it starts (recovering to the end of the backup) and answers queries.
    let target_parent = tempfile::Builder::new()
        .prefix("lbphys")
        .tempdir_in("/tmp")
        .unwrap();
    let data = target_parent.path().join("data");
    lifeboat(
        &config,
        &[
            "restore",
            &format!("cluster/{id}"),
            "--identity",
            k.identity_file.to_str().unwrap(),
            "--to-dir",
            data.to_str().unwrap(),
        ],
    )
    .expect_code(0);
    let socket_dir = target_parent.path().join("sock");
    std::fs::create_dir(&socket_dir).unwrap();
    if running_as_root() {
        run(Command::new("chown")
            .args(["postgres:postgres"])
            .arg(&socket_dir)
            .arg(target_parent.path()))
        .unwrap();
    }
    let port = lifeboat_tests::daemon::free_port();
    let started = run(as_owner(&pg, "pg_ctl")
        .args(["start", "-w", "-t", "60", "-D"])
        .arg(&data)
        .arg("-l")
        .arg(target_parent.path().join("server.log"))
        .arg("-o")
        .arg(format!(
            "-p {port} -k {} -c listen_addresses='' -c archive_mode=off",
            socket_dir.display()
        )))
    .unwrap();
    assert!(
        started.status.success(),
        "restored cluster did not start: {}\n{}",
        String::from_utf8_lossy(&started.stderr),
        std::fs::read_to_string(target_parent.path().join("server.log")).unwrap_or_default()
    );
    let query = run(as_owner(&pg, "psql")
        .args(["-X", "-At", "-h"])
        .arg(&socket_dir)
        .args([
            "-p",
            &port.to_string(),
            "-d",
            "app",
            "-c",
            "select count(*) from pgbench_accounts",
        ]))
    .unwrap();
    run(as_owner(&pg, "pg_ctl")
        .args(["stop", "-m", "fast", "-D"])
        .arg(&data))
    .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&query.stdout).trim(),
        "300000",
        "{}",
        String::from_utf8_lossy(&query.stderr)
    );

    // The drill does the same by itself and runs the job's checks.
    let drill = lifeboat(
        &config,
        &[
            "drill",
            "--job",
            "cluster",
            "--identity",
            k.identity_file.to_str().unwrap(),
            "--no-record",
        ],
    );
    drill.expect_code(0);
    assert!(
        drill.stdout.contains("ok   cluster starts"),
        "{}",
        drill.stdout
    );
    assert!(
        drill
            .stdout
            .contains("ok   tables in app: all 4 tables listed at backup start exist"),
        "{}",
        drill.stdout
    );
    assert!(
        drill
            .stdout
            .contains("check `select count(*) = 300000 from pgbench_accounts`: true"),
        "{}",
        drill.stdout
    );
}

#[test]
fn a_role_without_replication_is_refused_with_the_fix() {
    let pg = PgCluster::start_replicable().unwrap();
    pg.create_database("app").unwrap();
    pg.psql("postgres", "create role plain login;").unwrap();
    let (dir, k) = workspace();
    let config = write_config(
        dir.path(),
        &k.recipient,
        &[
            lifeboat_tests::lifeboat::fs_store_toml("local", &dir.path().join("store")),
            physical_job("cluster", "local", &pg, "")
                .replace("postgres://postgres@", "postgres://plain@"),
        ],
    );
    let out = lifeboatd(&config, &["run", "cluster"]);
    out.expect_code(1);
    assert!(
        out.stderr.contains("ALTER ROLE \"plain\" REPLICATION"),
        "{}",
        out.stderr
    );
    crate::common::assert_no_snapshot(&config);
}
