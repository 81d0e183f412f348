//! libpq's password file: with neither `password_file` nor `password_env`, Lifeboat's own connection
//! takes the password from `PGPASSFILE` or `~/.pgpass` as pg_dump does, per database, after
//! `PGPASSWORD`, and ignores (with a warning) a file that group or others may read.

use crate::common::workspace;
use lifeboat_tests::lifeboat::{bin, fs_store_toml, pg_job_toml, write_config, Run};
use lifeboat_tests::postgres::run;
use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

/// `lifeboatd --config CONFIG run JOB` with no libpq password variables but `env`, and `HOME` = `home`.
fn run_job(config: &Path, job: &str, home: &Path, env: &[(&str, &OsStr)]) -> Run {
    let mut cmd = Command::new(bin("lifeboatd"));
    cmd.arg("--config")
        .arg(config)
        .args(["run", job])
        .env("RUST_LOG", "info")
        .env("HOME", home);
    for var in ["PGPASSWORD", "PGPASSFILE", "PGSERVICE", "PGSERVICEFILE"] {
        cmd.env_remove(var);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = run(&mut cmd).unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn write_mode(path: &Path, text: &str, mode: u32) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn password_file_serves_lifeboat_and_pg_dump_alike() {
    const PASSWORD: &str = r"s3:cr\et";
    let pg = crate::common::small_source("app", 100);
    pg.psql(
        "postgres",
        &format!("alter role postgres password '{PASSWORD}';"),
    )
    .unwrap();
    // TCP connections to `app` need the password; `postgres` stays trusted (for the per-database case).
    let hba = pg.data_dir().join("pg_hba.conf");
    let old = std::fs::read_to_string(&hba).unwrap();
    std::fs::write(
        &hba,
        format!(
            "host postgres all 127.0.0.1/32 trust\nhost all all 127.0.0.1/32 scram-sha-256\n{old}"
        ),
    )
    .unwrap();
    pg.psql("postgres", "select pg_reload_conf();").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));

    let (dir, k) = workspace();
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let port = pg.port();
    // A wrong password for the (trusted) `postgres` database: if it were looked up once for the job's
    // URL and handed to pg_dump of `app`, the `perdb` job would fail.
    let pgpass = format!(
        "# host:port:database:user:password\n\
         127.0.0.1:{port}:*:nobody:x\n\
         127.0.0.1:{port}:postgres:postgres:wrong\n\
         127.0.0.1:{port}:app:postgres:s3\\:cr\\\\et\n"
    );
    let good = dir.path().join("pgpass");
    write_mode(&good, &pgpass, 0o600);
    let loose = dir.path().join("pgpass-loose");
    write_mode(&loose, &pgpass, 0o644);

    let store = dir.path().join("store");
    let config = write_config(
        dir.path(),
        &k.recipient,
        &[
            fs_store_toml("local", &store),
            pg_job_toml("app", "local", &pg.url("app"), &["app"], ""),
            pg_job_toml("perdb", "local", &pg.url("postgres"), &["app"], ""),
        ],
    );

    // Without any password the server refuses: the password is really needed.
    let out = run_job(&config, "app", &home, &[]);
    out.expect_code(1);

    // PGPASSFILE.
    run_job(&config, "app", &home, &[("PGPASSFILE", good.as_os_str())]).expect_code(0);
    run_job(&config, "perdb", &home, &[("PGPASSFILE", good.as_os_str())]).expect_code(0);

    // ~/.pgpass.
    write_mode(&home.join(".pgpass"), &pgpass, 0o600);
    run_job(&config, "app", &home, &[]).expect_code(0);
    std::fs::remove_file(home.join(".pgpass")).unwrap();

    // PGPASSWORD comes first, as in libpq.
    let out = run_job(
        &config,
        "app",
        &home,
        &[
            ("PGPASSFILE", good.as_os_str()),
            ("PGPASSWORD", OsStr::new("wrong-password")),
        ],
    );
    out.expect_code(1);

    // A file others may read is ignored, with the fix named and the contents never shown.
    let out = run_job(&config, "app", &home, &[("PGPASSFILE", loose.as_os_str())]);
    out.expect_code(1);
    let fix = format!("chmod 0600 {}", loose.display());
    assert!(out.stderr.contains(&fix), "{}", out.stderr);
    for text in [&out.stdout, &out.stderr] {
        assert!(!text.contains("s3:cr"), "{text}");
        assert!(!text.contains("s3\\:cr"), "{text}");
    }
}
