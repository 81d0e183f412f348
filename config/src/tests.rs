//! Unit tests of the whole crate: valid files, every validation error, shipped examples and key documentation.
//! Error tests check the dotted key and the line, since those are what a user needs to find the problem.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::raw;
use crate::*;

/// age's own test key pair (age 0.12 `native::x25519` tests).
const PK: &str = "age1t7rxyev2z3rw82stdlrrepyc39nvn86l5078zqkf5uasdy86jp6svpy7pa";
const SK: &str = "AGE-SECRET-KEY-1GQ9778VQXMMJVE8SK7J6VT8UJ4HDQAJUVSFCWCM02D8GEWQ72PVQ2Y5J33";

fn base_config() -> String {
    format!(
        r#"[daemon]
listen = "127.0.0.1:9187"

[stores.offsite]
kind = "s3"
bucket = "acme-backups"
prefix = "prod"
lock_mode = "compliance"
retention = "35d"

[encryption]
recipients = ["{PK}"]

[jobs.main-db]
kind = "postgres"
url = "postgres://backup@db.internal:5432/app"
schedule = "0 */6 * * *"
store = "offsite"
"#
    )
}

fn parse_ok(text: &str) -> Config {
    parse(text, "test.toml", Path::new("/etc/lifeboat"))
        .unwrap_or_else(|e| panic!("unexpected errors:\n{e}"))
}

fn parse_err(text: &str) -> ConfigErrors {
    match parse(text, "test.toml", Path::new("/etc/lifeboat")) {
        Ok(config) => panic!("expected errors, got {config:#?}"),
        Err(errors) => {
            assert!(!errors.errors().is_empty());
            errors
        }
    }
}

/// The error for `key`; panics listing all errors if there is none.
fn error_for<'a>(errors: &'a ConfigErrors, key: &str) -> &'a ConfigError {
    errors
        .errors()
        .iter()
        .find(|e| e.key == key)
        .unwrap_or_else(|| panic!("no error for `{key}` in:\n{errors}"))
}

/// 1-based line of the first line of `text` containing `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("{needle:?} not in text"))
        + 1
}

/// Replaces the one line containing `needle` by `with` (which may hold several lines, or none).
fn replace_line(text: &str, needle: &str, with: &str) -> String {
    assert_eq!(
        text.matches(needle).count(),
        1,
        "{needle:?} must occur once"
    );
    text.lines()
        .map(|l| {
            if l.contains(needle) {
                with.to_owned()
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// Inserts `lines` right after the line containing `after`.
fn insert_after(text: &str, after: &str, lines: &str) -> String {
    let line = text.lines().find(|l| l.contains(after)).unwrap();
    replace_line(text, after, &format!("{line}\n{lines}"))
}

#[test]
fn drill_settings_are_checked() {
    let text = format!(
        "{}\n[jobs.main-db.drill]\nchecks = [\"\"]\ndatabase = \"other\"\n\n[drill]\nscratch_url = \"postgres://u:hunter2@h/db\"\nrun_as = \"root; rm\"\n",
        base_config()
    );
    let errors = parse_err(&text);
    assert!(error_for(&errors, "jobs.main-db.drill.checks[0]")
        .message
        .contains("empty SQL check"));
    let e = error_for(&errors, "jobs.main-db.drill.database");
    assert!(e.message.contains("not one the job dumps"), "{e}");
    let e = error_for(&errors, "drill.scratch_url");
    assert!(!e.to_string().contains("hunter2"), "{e}");
    assert!(error_for(&errors, "drill.run_as")
        .message
        .contains("not a user name"));
    // Checks on a job dumping every database need to say where they run.
    let all = base_config().replace(
        "url = \"postgres://backup@db.internal:5432/app\"",
        "url = \"postgres://backup@db.internal:5432/app\"\ndatabases = \"all\"",
    );
    let errors = parse_err(&format!(
        "{all}\n[jobs.main-db.drill]\nchecks = [\"select true\"]\n"
    ));
    assert!(error_for(&errors, "jobs.main-db.drill.database")
        .message
        .contains("need a `database`"));
    let errors = parse_err(&format!("{all}\n[jobs.main-db.drill]\nchekcs = []\n"));
    assert!(errors.to_string().contains("chekcs"), "{errors}");
}

#[test]
fn bad_run_policy_values_name_the_key_and_line() {
    let text = insert_after(
        &base_config(),
        "store = \"offsite\"",
        "jitter = \"soon\"\ntimeout = \"0s\"\nretry_attempts = 0\nretry_backoff = \"2h\"",
    );
    let text = insert_after(&text, "listen =", "shutdown_grace = \"forever\"");
    let errors = parse_err(&text);
    let e = error_for(&errors, "jobs.main-db.jitter");
    assert!(e.message.contains("invalid duration \"soon\""), "{e}");
    assert_eq!(e.line, Some(line_of(&text, "jitter =")));
    let e = error_for(&errors, "jobs.main-db.timeout");
    assert!(e.message.contains("out of range"), "{e}");
    let e = error_for(&errors, "jobs.main-db.retry_attempts");
    assert!(e.message.contains("between 1 and 100"), "{e}");
    let e = error_for(&errors, "jobs.main-db.retry_backoff");
    assert!(e.message.contains("between 0s and 1h"), "{e}");
    let e = error_for(&errors, "daemon.shutdown_grace");
    assert_eq!(e.line, Some(line_of(&text, "shutdown_grace")));
}

// ----- valid configurations --------------------------------------------------------------------------------------

#[test]
fn minimal_config_parses_with_defaults() {
    let config = parse_ok(&base_config());
    assert_eq!(config.origin, "test.toml");
    assert_eq!(config.daemon.listen, "127.0.0.1:9187".parse().unwrap());
    assert_eq!(config.daemon.max_concurrent_jobs, 2);
    assert!(config.daemon.pg_bin_dirs.is_empty());
    assert_eq!(config.daemon.shutdown_grace, Duration::from_secs(60));
    assert_eq!(config.daemon.probe_interval, Duration::from_secs(300));

    let store = &config.stores["offsite"];
    assert_eq!(store.name, "offsite");
    assert_eq!(store.lock.mode, LockMode::Compliance);
    assert_eq!(store.lock.retention, Some(Duration::from_secs(35 * 86400)));
    let StoreKind::S3(s3) = &store.kind else {
        panic!("not s3")
    };
    assert_eq!(s3.bucket, "acme-backups");
    assert_eq!(s3.prefix, "prod/");
    assert_eq!(store.kind.prefix(), "prod/");
    assert_eq!(s3.endpoint, None);
    assert!(!s3.path_style);
    assert_eq!(s3.part_size, 16 * 1024 * 1024);
    assert_eq!(s3.parts_in_flight, 2);
    assert_eq!(s3.access_key_id, None);
    assert_eq!(s3.secret_access_key, None);

    assert_eq!(config.encryption.recipients.len(), 1);
    assert_eq!(config.encryption.recipients[0].text, PK);
    assert_eq!(config.encryption.recipients[0].key.to_string(), PK);
    assert!(config.encryption.recipients_files.is_empty());

    let job = &config.jobs["main-db"];
    assert_eq!(job.name, "main-db");
    assert_eq!(job.stores, ["offsite"]);
    assert_eq!(job.schedule.expr, "0 */6 * * *");
    assert_eq!(job.schedule.timezone, chrono_tz::UTC);
    assert_eq!(
        job.compression,
        CompressionConfig {
            level: 3,
            threads: 1
        }
    );
    let SourceConfig::Postgres(pg) = &job.source else {
        panic!("not a postgres job")
    };
    assert_eq!(pg.url, "postgres://backup@db.internal:5432/app");
    assert_eq!(pg.databases, Databases::List(vec!["app".into()]));
    assert_eq!(pg.password, None);
    assert_eq!(pg.pg_bin_dir, None);
    assert_eq!(
        job.run,
        RunPolicy {
            jitter: Duration::ZERO,
            catch_up: true,
            timeout: None,
            retry_attempts: 3,
            retry_backoff: Duration::from_secs(60),
        }
    );
}

#[test]
fn every_key_set_parses() {
    let text = format!(
        r#"
[daemon]
listen = "[::]:9000"
max_concurrent_jobs = 3
pg_bin_dirs = ["/usr/lib/postgresql/16/bin", "bin"]
shutdown_grace = "2m"
probe_interval = "30s"

[stores.offsite]
kind = "s3"
endpoint = "https://s3.eu-central-1.amazonaws.com"
bucket = "acme.backups-1"
prefix = "/prod/db/"
region = "eu-central-1"
path_style = true
part_size = "64MiB"
parts_in_flight = 8
access_key_id_env = "LIFEBOAT_S3_KEY_ID"
secret_access_key_file = "secrets/s3-secret"
session_token_env = "AWS_SESSION_TOKEN"
lock_mode = "governance"
retention = "6weeks"

[stores.second-disk]
kind = "fs"
path = "../backups"
prefix = ""
lock_mode = "none"

[stores.profiled]
kind = "s3"
bucket = "other-bucket"
profile = "backup-writer"
part_size = 5242880
lock_mode = "compliance"
retention = "1day"

[encryption]
recipients = ["{PK}"]
recipients_file = ["recipients.txt", "/etc/lifeboat/more.txt"]

[jobs.main-db]
kind = "postgres"
url = "host=db.internal user=backup dbname='my app'"
databases = "all"
password_file = "/run/secrets/pg"
pg_bin_dir = "/usr/lib/postgresql/15/bin"
schedule = "30 2 * * 1-5"
timezone = "Europe/Berlin"
store = "offsite"
compression_level = 19
compression_threads = 2
jitter = "5m"
catch_up = false
timeout = "4h"
retry_attempts = 5
retry_backoff = "10s"

[jobs.main-db.drill]
checks = ["select count(*) > 0 from orders", "  select true  "]
database = "app"

[drill]
scratch_url = "postgres://drill@scratch:5432/postgres"
password_env = "SCRATCH_PASSWORD"
pg_bin_dir = "/usr/lib/postgresql/17/bin"
run_as = "pgdrill"

[jobs.billing]
kind = "postgres"
url = "postgresql://backup@db/billing?sslmode=require"
databases = ["billing", "ledger"]
password_env = "BILLING_PGPASSWORD"
schedule = "@daily"
store = "second-disk"
"#
    );
    let config = parse_ok(&text);
    assert_eq!(config.daemon.listen, "[::]:9000".parse().unwrap());
    assert_eq!(config.daemon.max_concurrent_jobs, 3);
    assert_eq!(
        config.daemon.pg_bin_dirs,
        [
            PathBuf::from("/usr/lib/postgresql/16/bin"),
            PathBuf::from("/etc/lifeboat/bin")
        ]
    );

    let StoreKind::S3(s3) = &config.stores["offsite"].kind else {
        panic!()
    };
    assert_eq!(
        s3.endpoint.as_deref(),
        Some("https://s3.eu-central-1.amazonaws.com")
    );
    assert_eq!(s3.prefix, "prod/db/");
    assert_eq!(s3.region.as_deref(), Some("eu-central-1"));
    assert!(s3.path_style);
    assert_eq!(s3.part_size, 64 << 20);
    assert_eq!(s3.parts_in_flight, 8);
    assert_eq!(
        s3.access_key_id,
        Some(SecretRef::Env("LIFEBOAT_S3_KEY_ID".into()))
    );
    assert_eq!(
        s3.secret_access_key,
        Some(SecretRef::File("/etc/lifeboat/secrets/s3-secret".into()))
    );
    assert_eq!(
        s3.session_token,
        Some(SecretRef::Env("AWS_SESSION_TOKEN".into()))
    );
    assert_eq!(config.stores["offsite"].lock.mode, LockMode::Governance);
    assert_eq!(
        config.stores["offsite"].lock.retention,
        Some(Duration::from_secs(42 * 86400))
    );

    let fs = &config.stores["second-disk"];
    assert_eq!(
        fs.lock,
        LockConfig {
            mode: LockMode::None,
            retention: None
        }
    );
    let StoreKind::Fs(fs) = &fs.kind else {
        panic!()
    };
    // Resolved against the config directory (`..` is kept: no file-system access).
    assert_eq!(fs.path, PathBuf::from("/etc/backups"));
    assert_eq!(fs.prefix, "");

    let StoreKind::S3(profiled) = &config.stores["profiled"].kind else {
        panic!()
    };
    assert_eq!(profiled.profile.as_deref(), Some("backup-writer"));
    assert_eq!(profiled.part_size, 5 << 20);

    assert_eq!(
        config.encryption.recipients_files,
        [
            PathBuf::from("/etc/lifeboat/recipients.txt"),
            PathBuf::from("/etc/lifeboat/more.txt")
        ]
    );

    assert_eq!(config.daemon.shutdown_grace, Duration::from_secs(120));
    assert_eq!(config.daemon.probe_interval, Duration::from_secs(30));

    let job = &config.jobs["main-db"];
    assert_eq!(job.schedule.timezone, chrono_tz::Europe::Berlin);
    assert_eq!(
        job.run,
        RunPolicy {
            jitter: Duration::from_secs(300),
            catch_up: false,
            timeout: Some(Duration::from_secs(4 * 3600)),
            retry_attempts: 5,
            retry_backoff: Duration::from_secs(10),
        }
    );
    assert_eq!(job.run.backoff_before(2), Duration::from_secs(10));
    assert_eq!(job.run.backoff_before(3), Duration::from_secs(20));
    assert_eq!(job.run.backoff_before(5), Duration::from_secs(80));
    assert_eq!(job.run.backoff_before(99), MAX_RETRY_BACKOFF);
    assert_eq!(
        job.drill,
        JobDrill {
            checks: vec![
                "select count(*) > 0 from orders".into(),
                "select true".into()
            ],
            database: Some("app".into()),
        }
    );
    assert_eq!(
        config.drill,
        DrillConfig {
            scratch_url: Some("postgres://drill@scratch:5432/postgres".into()),
            password: Some(SecretRef::Env("SCRATCH_PASSWORD".into())),
            pg_bin_dir: Some("/usr/lib/postgresql/17/bin".into()),
            run_as: Some("pgdrill".into()),
        }
    );
    // Without a drill table: no checks; the one dumped database is where checks would run.
    assert_eq!(config.jobs["billing"].drill, JobDrill::default());
    assert_eq!(
        job.compression,
        CompressionConfig {
            level: 19,
            threads: 2
        }
    );
    let SourceConfig::Postgres(pg) = &job.source else {
        panic!("not a postgres job")
    };
    assert_eq!(pg.databases, Databases::All);
    assert_eq!(pg.password, Some(SecretRef::File("/run/secrets/pg".into())));
    assert_eq!(
        pg.pg_bin_dir,
        Some(PathBuf::from("/usr/lib/postgresql/15/bin"))
    );

    let SourceConfig::Postgres(billing) = &config.jobs["billing"].source else {
        panic!("not a postgres job")
    };
    assert_eq!(
        billing.databases,
        Databases::List(vec!["billing".into(), "ledger".into()])
    );
    assert_eq!(
        billing.password,
        Some(SecretRef::Env("BILLING_PGPASSWORD".into()))
    );
}

#[test]
fn database_defaults_to_the_one_in_the_url() {
    for (url, db) in [
        ("postgres://backup@db/app", "app"),
        (
            "postgresql://backup@db:5432/my%20app?sslmode=require",
            "my app",
        ),
        ("postgres://backup@db?dbname=other", "other"),
        ("host=db user=backup dbname=app2", "app2"),
    ] {
        let text = replace_line(&base_config(), "url =", &format!("url = \"{url}\""));
        let SourceConfig::Postgres(pg) = &parse_ok(&text).jobs["main-db"].source else {
            panic!("not a postgres job")
        };
        assert_eq!(pg.databases, Databases::List(vec![db.into()]), "{url}");
    }
}

#[test]
fn recipients_file_alone_is_enough() {
    let text = replace_line(
        &base_config(),
        "recipients =",
        "recipients_file = \"recipients.txt\"",
    );
    let config = parse_ok(&text);
    assert!(config.encryption.recipients.is_empty());
    assert_eq!(
        config.encryption.recipients_files,
        [PathBuf::from("/etc/lifeboat/recipients.txt")]
    );
}

#[test]
fn load_resolves_paths_against_the_file_directory() {
    let dir = tempfile::tempdir().unwrap();
    let text = base_config()
        + "\n[stores.local]\nkind = \"fs\"\npath = \"data\"\nlock_mode = \"governance\"\nretention = \"2d\"\n";
    let file = dir.path().join("lifeboat.toml");
    std::fs::write(&file, text).unwrap();
    let config = load(&file).unwrap();
    let StoreKind::Fs(fs) = &config.stores["local"].kind else {
        panic!()
    };
    assert_eq!(fs.path, dir.path().join("data"));
    assert_eq!(config.origin, file.display().to_string());
}

#[test]
fn load_reports_a_missing_file() {
    let errors = load(Path::new("/nonexistent/lifeboat.toml")).unwrap_err();
    let e = &errors.errors()[0];
    assert_eq!(e.origin, "/nonexistent/lifeboat.toml");
    assert!(
        e.message.starts_with("cannot read the configuration file"),
        "{e}"
    );
    assert!(e.hint.as_deref().unwrap().contains("LIFEBOAT_CONFIG"));
}

// ----- unknown keys ----------------------------------------------------------------------------------------------

#[test]
fn unknown_top_level_key_is_reported() {
    let text = format!("job = 1\n{}", base_config());
    let errors = parse_err(&text);
    let e = error_for(&errors, "job");
    assert_eq!(e.line, Some(1));
    assert_eq!(e.message, "unknown top-level key");
    assert_eq!(e.hint.as_deref(), Some("did you mean `jobs`?"));
}

#[test]
fn daemon_key_at_top_level_points_to_daemon_table() {
    let text = format!("max_concurrent_jobs = 4\n{}", base_config());
    let e = error_for(&parse_err(&text), "max_concurrent_jobs").clone();
    assert_eq!(e.line, Some(1));
    assert!(e.hint.unwrap().contains("[daemon]"));
}

#[test]
fn unknown_key_in_daemon_is_reported() {
    let text = insert_after(&base_config(), "listen =", "listen_port = 9000");
    let errors = parse_err(&text);
    let e = error_for(&errors, "daemon.listen_port");
    assert_eq!(e.line, Some(line_of(&text, "listen_port")));
    assert_eq!(e.message, "unknown key in [daemon]");
}

#[test]
fn unknown_key_in_store_is_reported_with_suggestion() {
    let text = insert_after(&base_config(), "bucket =", "regoin = \"eu-central-1\"");
    let errors = parse_err(&text);
    let e = error_for(&errors, "stores.offsite.regoin");
    assert_eq!(e.line, Some(line_of(&text, "regoin")));
    assert_eq!(e.hint.as_deref(), Some("did you mean `region`?"));
    assert_eq!(errors.errors().len(), 1, "{errors}");
}

#[test]
fn unknown_key_in_job_is_reported() {
    let text = insert_after(&base_config(), "store = \"offsite\"", "retries = 3");
    let errors = parse_err(&text);
    let e = error_for(&errors, "jobs.main-db.retries");
    assert_eq!(e.line, Some(line_of(&text, "retries")));
    assert!(
        e.hint.as_deref().unwrap().starts_with("allowed keys here:"),
        "{e}"
    );
}

#[test]
fn unknown_key_in_encryption_is_reported() {
    let text = insert_after(&base_config(), "recipients =", "identity = \"key.txt\"");
    let errors = parse_err(&text);
    let e = error_for(&errors, "encryption.identity");
    assert_eq!(e.line, Some(line_of(&text, "identity")));
}

#[test]
fn secret_typed_into_an_unknown_key_is_not_echoed_and_points_to_secret_refs() {
    let text = insert_after(&base_config(), "url =", "password = \"hunter2-secret\"");
    let errors = parse_err(&text);
    let e = error_for(&errors, "jobs.main-db.password");
    assert!(e.hint.as_deref().unwrap().contains("password_file"));
    assert!(!errors.to_string().contains("hunter2"));

    let text = insert_after(
        &base_config(),
        "bucket =",
        "secret_access_key = \"wJalrXUtnFEMI\"",
    );
    let errors = parse_err(&text);
    let e = error_for(&errors, "stores.offsite.secret_access_key");
    assert!(e.hint.as_deref().unwrap().contains("secret_access_key_env"));
    assert!(!errors.to_string().contains("wJalrXUtnFEMI"));
}

#[test]
fn keys_of_another_kind_are_rejected() {
    let text = insert_after(&base_config(), "bucket =", "path = \"/srv/backups\"");
    let errors = parse_err(&text);
    let e = error_for(&errors, "stores.offsite.path");
    assert_eq!(e.line, Some(line_of(&text, "path = ")));
    assert_eq!(
        e.message,
        "key `path` does not apply to stores of kind \"s3\""
    );

    let text = base_config()
        + "\n[stores.local]\nkind = \"fs\"\npath = \"/srv\"\nbucket = \"x-bucket\"\nlock_mode = \"none\"\n";
    let errors = parse_err(&text);
    let e = error_for(&errors, "stores.local.bucket");
    assert_eq!(e.line, Some(line_of(&text, "x-bucket")));
}

// ----- values ----------------------------------------------------------------------------------------------------

#[test]
fn bad_retention_duration_is_reported() {
    let text = replace_line(
        &base_config(),
        "retention =",
        "retention = \"35 fortnights\"",
    );
    let errors = parse_err(&text);
    let e = error_for(&errors, "stores.offsite.retention");
    assert_eq!(e.line, Some(line_of(&text, "fortnights")));
    assert!(
        e.message.starts_with("invalid duration \"35 fortnights\""),
        "{e}"
    );
    assert!(e.hint.as_deref().unwrap().contains("35d"));
}

#[test]
fn retention_rules_follow_the_lock_mode() {
    // Shorter than a day.
    let text = replace_line(&base_config(), "retention =", "retention = \"12h\"");
    let e = error_for(&parse_err(&text), "stores.offsite.retention").clone();
    assert!(e.message.contains("shorter than one day"), "{e}");
    // Missing with a lock.
    let text = replace_line(&base_config(), "retention =", "");
    let errors = parse_err(&text);
    let e = error_for(&errors, "stores.offsite.retention");
    assert_eq!(e.message, "missing required key `retention`");
    assert_eq!(e.line, Some(line_of(&text, "[stores.offsite]")));
    // Present without a lock: rejected rather than silently ignored.
    let text = replace_line(&base_config(), "lock_mode =", "lock_mode = \"none\"");
    let errors = parse_err(&text);
    let e = error_for(&errors, "stores.offsite.retention");
    assert!(e.message.contains("no effect"), "{e}");
    assert_eq!(e.line, Some(line_of(&text, "retention")));
    // Unknown mode.
    let text = replace_line(&base_config(), "lock_mode =", "lock_mode = \"strict\"");
    let e = error_for(&parse_err(&text), "stores.offsite.lock_mode").clone();
    assert_eq!(e.message, "unknown lock mode \"strict\"");
}

#[test]
fn cron_with_four_fields_is_reported() {
    let text = replace_line(&base_config(), "schedule =", "schedule = \"0 */6 * *\"");
    let errors = parse_err(&text);
    let e = error_for(&errors, "jobs.main-db.schedule");
    assert_eq!(e.line, Some(line_of(&text, "schedule")));
    assert!(e.message.contains("expected 5 fields"), "{e}");
    assert!(e.message.contains("found 4"), "{e}");
    assert!(e.hint.as_deref().unwrap().contains("0 */6 * * *"));
}

#[test]
fn cron_with_out_of_range_minute_is_reported() {
    let text = replace_line(&base_config(), "schedule =", "schedule = \"61 * * * *\"");
    let errors = parse_err(&text);
    let e = error_for(&errors, "jobs.main-db.schedule");
    assert_eq!(e.line, Some(line_of(&text, "schedule")));
    assert!(
        e.message
            .starts_with("invalid cron expression \"61 * * * *\""),
        "{e}"
    );
}

#[test]
fn cron_with_seconds_gets_a_five_field_hint() {
    let text = replace_line(&base_config(), "schedule =", "schedule = \"0 0 */6 * * *\"");
    let errors = parse_err(&text);
    let e = error_for(&errors, "jobs.main-db.schedule");
    assert!(e.message.contains("6 fields"), "{e}");
    assert_eq!(
        e.hint.as_deref(),
        Some("drop the leading seconds field: \"0 */6 * * *\"")
    );
}

#[test]
fn bad_timezone_is_reported() {
    let text = insert_after(&base_config(), "schedule =", "timezone = \"Mars/Olympus\"");
    let errors = parse_err(&text);
    let e = error_for(&errors, "jobs.main-db.timezone");
    assert_eq!(e.line, Some(line_of(&text, "Mars")));
    assert_eq!(e.message, "unknown time zone \"Mars/Olympus\"");

    let text = insert_after(&base_config(), "schedule =", "timezone = \"europe/berlin\"");
    let e = error_for(&parse_err(&text), "jobs.main-db.timezone").clone();
    assert_eq!(e.hint.as_deref(), Some("did you mean \"Europe/Berlin\"?"));
}

#[test]
fn job_naming_a_missing_store_lists_the_stores() {
    let text = replace_line(&base_config(), "store = \"offsite\"", "store = \"ofsite\"");
    let text =
        text + "\n[stores.local]\nkind = \"fs\"\npath = \"/srv/backups\"\nlock_mode = \"none\"\n";
    let errors = parse_err(&text);
    let e = error_for(&errors, "jobs.main-db.store");
    assert_eq!(e.line, Some(line_of(&text, "ofsite")));
    assert_eq!(e.message, "store \"ofsite\" is not configured");
    assert_eq!(
        e.hint.as_deref(),
        Some("configured stores: \"local\", \"offsite\"")
    );
}

#[test]
fn recipient_that_is_not_an_age_key_is_reported() {
    let text = replace_line(
        &base_config(),
        "recipients =",
        &format!("recipients = [\"{PK}\", \"not-a-key\", \"age1qqqqqqqqqqqqqqqq\"]"),
    );
    let errors = parse_err(&text);
    let e = error_for(&errors, "encryption.recipients[1]");
    assert_eq!(e.line, Some(line_of(&text, "recipients")));
    assert!(e.message.starts_with("not an age public key"), "{e}");
    let e = error_for(&errors, "encryption.recipients[2]");
    assert!(e.message.starts_with("not a valid age public key"), "{e}");
}

#[test]
fn age_identity_as_recipient_is_reported_without_the_secret() {
    for value in [format!("[\"{SK}\"]"), format!("\"{SK}\"")] {
        let text = replace_line(
            &base_config(),
            "recipients =",
            &format!("recipients = {value}"),
        );
        let errors = parse_err(&text);
        let key = if value.starts_with('[') {
            "encryption.recipients[0]"
        } else {
            "encryption.recipients"
        };
        let e = error_for(&errors, key);
        assert_eq!(e.line, Some(line_of(&text, "recipients")));
        assert!(e.message.contains("secret key"), "{e}");
        assert!(e.hint.as_deref().unwrap().contains("age-keygen -y"), "{e}");
        let shown = format!("{errors}\n{errors:?}");
        assert!(!shown.contains(SK), "{shown}");
        assert!(!shown.contains(&SK[15..30]), "{shown}");
    }
}

#[test]
fn postgres_url_with_password_is_reported_without_the_password() {
    for url in [
        "postgres://u:S3cretPw@h/db",
        "postgresql://backup:S3cretPw@db.internal:5432/app?sslmode=require",
        "postgres://backup@db/app?password=S3cretPw",
        "host=db user=backup password=S3cretPw dbname=app",
        "host=db password = 'S3cretPw' dbname=app",
    ] {
        let text = replace_line(&base_config(), "url =", &format!("url = \"{url}\""));
        let errors = parse_err(&text);
        let e = error_for(&errors, "jobs.main-db.url");
        assert_eq!(e.line, Some(line_of(&text, "url")), "{url}");
        assert!(e.message.contains("contains a password"), "{url}: {e}");
        let hint = e.hint.as_deref().unwrap();
        assert!(
            hint.contains("password_file")
                && hint.contains("password_env")
                && hint.contains("PGPASSFILE")
        );
        let shown = format!("{errors}\n{errors:?}");
        assert!(!shown.contains("S3cretPw"), "{shown}");
    }
}

#[test]
fn postgres_url_naming_no_database_needs_databases() {
    let text = replace_line(
        &base_config(),
        "url =",
        "url = \"postgres://backup@db.internal:5432\"",
    );
    let errors = parse_err(&text);
    let e = error_for(&errors, "jobs.main-db.url");
    assert!(e.message.contains("names no database"), "{e}");

    let text = insert_after(&text, "url =", "databases = \"all\"");
    parse_ok(&text);
}

#[test]
fn databases_must_be_all_or_a_list_of_names() {
    for (value, message) in [
        ("[]", "the list of databases is empty"),
        (
            "\"app\"",
            "`databases` must be \"all\" or a list of database names",
        ),
        ("[\"app\", \"\"]", "database name is empty"),
        ("[\"app\", \"app\"]", "database \"app\" is listed twice"),
    ] {
        let text = insert_after(&base_config(), "url =", &format!("databases = {value}"));
        let errors = parse_err(&text);
        assert!(
            errors
                .errors()
                .iter()
                .any(|e| e.key.starts_with("jobs.main-db.databases") && e.message == message),
            "{value}: {errors}"
        );
    }
}

#[test]
fn access_key_without_secret_key_is_reported() {
    let text = insert_after(
        &base_config(),
        "bucket =",
        "access_key_id_env = \"S3_KEY_ID\"",
    );
    let errors = parse_err(&text);
    let e = error_for(&errors, "stores.offsite.access_key_id_env");
    assert_eq!(e.line, Some(line_of(&text, "access_key_id_env")));
    assert!(e.message.contains("without a secret access key"), "{e}");

    let text = insert_after(
        &base_config(),
        "bucket =",
        "secret_access_key_file = \"/run/s3\"",
    );
    let e = error_for(&parse_err(&text), "stores.offsite.secret_access_key_file").clone();
    assert!(e.message.contains("without an access key id"), "{e}");

    let text = insert_after(&base_config(), "bucket =", "session_token_env = \"TOKEN\"");
    let e = error_for(&parse_err(&text), "stores.offsite.session_token_env").clone();
    assert!(e.message.contains("without static credentials"), "{e}");
}

#[test]
fn profile_and_static_keys_conflict() {
    let text = insert_after(
        &base_config(),
        "bucket =",
        "access_key_id_env = \"K\"\nsecret_access_key_env = \"S\"\nprofile = \"writer\"",
    );
    let errors = parse_err(&text);
    let e = error_for(&errors, "stores.offsite.profile");
    assert_eq!(e.line, Some(line_of(&text, "profile")));
}

#[test]
fn both_env_and_file_of_a_secret_are_reported() {
    let text = insert_after(
        &base_config(),
        "url =",
        "password_env = \"PGPASSWORD\"\npassword_file = \"/run/pg\"",
    );
    let errors = parse_err(&text);
    let e = error_for(&errors, "jobs.main-db.password_file");
    assert_eq!(e.line, Some(line_of(&text, "password_file")));
    assert!(
        e.message
            .contains("both `password_env` and `password_file`"),
        "{e}"
    );

    let text = insert_after(
        &base_config(),
        "bucket =",
        "access_key_id_env = \"K\"\naccess_key_id_file = \"/run/k\"\nsecret_access_key_env = \"S\"",
    );
    let errors = parse_err(&text);
    let e = error_for(&errors, "stores.offsite.access_key_id_file");
    assert_eq!(e.line, Some(line_of(&text, "access_key_id_file")));
    // No follow-up "without an access key id" noise.
    assert_eq!(errors.errors().len(), 1, "{errors}");
}

#[test]
fn secret_typed_into_an_env_key_is_not_echoed() {
    let text = insert_after(
        &base_config(),
        "url =",
        "password_env = \"hunter2 secret!\"",
    );
    let errors = parse_err(&text);
    let e = error_for(&errors, "jobs.main-db.password_env");
    assert!(
        e.message.contains("not a valid environment variable name"),
        "{e}"
    );
    assert!(!errors.to_string().contains("hunter2"));
}

#[test]
fn part_size_out_of_range_is_reported() {
    for (value, message) in [
        ("\"4MiB\"", "part size 4 MiB is out of range"),
        ("\"6GiB\"", "part size 6 GiB is out of range"),
        ("1024", "part size 1024 bytes is out of range"),
        ("\"16 furlongs\"", "invalid size: unknown unit \"furlongs\""),
        ("-5", "invalid size: -5 is negative"),
    ] {
        let text = insert_after(&base_config(), "bucket =", &format!("part_size = {value}"));
        let errors = parse_err(&text);
        let e = error_for(&errors, "stores.offsite.part_size");
        assert_eq!(e.line, Some(line_of(&text, "part_size")));
        assert!(e.message.starts_with(message), "{value}: {e}");
    }
    for (value, bytes) in [
        ("\"5MiB\"", 5 << 20),
        ("\"5 GiB\"", 5 << 30),
        ("\"100MB\"", 100_000_000),
    ] {
        let text = insert_after(&base_config(), "bucket =", &format!("part_size = {value}"));
        let StoreKind::S3(s3) = &parse_ok(&text).stores["offsite"].kind else {
            panic!()
        };
        assert_eq!(s3.part_size, bytes, "{value}");
    }
}

#[test]
fn integer_ranges_are_checked() {
    for (after, line, key) in [
        (
            "listen =",
            "max_concurrent_jobs = 0",
            "daemon.max_concurrent_jobs",
        ),
        (
            "bucket =",
            "parts_in_flight = 65",
            "stores.offsite.parts_in_flight",
        ),
        (
            "url =",
            "compression_level = 20",
            "jobs.main-db.compression_level",
        ),
        (
            "url =",
            "compression_threads = -1",
            "jobs.main-db.compression_threads",
        ),
    ] {
        let text = insert_after(&base_config(), after, line);
        let errors = parse_err(&text);
        let e = error_for(&errors, key);
        assert_eq!(e.line, Some(line_of(&text, line)));
        assert!(e.message.contains("out of range"), "{e}");
    }
}

#[test]
fn bucket_name_rules_are_checked() {
    for bad in [
        "ab",
        "Acme-Backups",
        "acme_backups",
        "-acme",
        "acme..b",
        "192.168.1.1",
    ] {
        let text = replace_line(&base_config(), "bucket =", &format!("bucket = \"{bad}\""));
        let e = error_for(&parse_err(&text), "stores.offsite.bucket").clone();
        assert!(e.message.starts_with("invalid bucket name"), "{bad}: {e}");
    }
}

#[test]
fn prefix_is_normalised_or_rejected() {
    for (given, expected) in [("", ""), ("/", ""), ("prod", "prod/"), ("/a/b/", "a/b/")] {
        let text = replace_line(&base_config(), "prefix =", &format!("prefix = \"{given}\""));
        assert_eq!(
            parse_ok(&text).stores["offsite"].kind.prefix(),
            expected,
            "{given}"
        );
    }
    for bad in ["a//b", "a/../b", "./a"] {
        let text = replace_line(&base_config(), "prefix =", &format!("prefix = \"{bad}\""));
        error_for(&parse_err(&text), "stores.offsite.prefix");
    }
}

#[test]
fn endpoint_must_be_an_http_url_without_credentials() {
    for bad in [
        "s3.amazonaws.com",
        "ftp://x",
        "https://",
        "https://key:secret@minio:9000",
    ] {
        let text = insert_after(&base_config(), "bucket =", &format!("endpoint = \"{bad}\""));
        let errors = parse_err(&text);
        error_for(&errors, "stores.offsite.endpoint");
        assert!(!errors.to_string().contains("secret@"), "{errors}");
    }
}

#[test]
fn listen_must_be_an_address() {
    let text = replace_line(&base_config(), "listen =", "listen = \"localhost:9187\"");
    let errors = parse_err(&text);
    let e = error_for(&errors, "daemon.listen");
    assert_eq!(e.line, Some(1 + line_of(&text, "[daemon]")));
}

#[test]
fn invalid_names_are_reported() {
    let text = base_config().replace("[jobs.main-db]", "[jobs.\"main db\"]");
    let errors = parse_err(&text);
    let e = error_for(&errors, "jobs.\"main db\"");
    assert!(e.message.starts_with("invalid job name"), "{e}");
    assert_eq!(e.line, Some(line_of(&text, "[jobs.")));

    let text = base_config().replace("offsite", "_offsite");
    let e = error_for(&parse_err(&text), "stores._offsite").clone();
    assert!(e.message.starts_with("invalid store name"), "{e}");
}

#[test]
fn physical_jobs_parse_and_unknown_kinds_are_reported() {
    let text = base_config()
        + "\n[jobs.cluster]\nkind = \"postgres_physical\"\nurl = \"postgres://replicator@db.internal/postgres\"\n\
           password_env = \"PGPASSWORD_REPL\"\nfast_checkpoint = true\nschedule = \"0 1 * * *\"\nstore = \"offsite\"\n";
    let config = parse_ok(&text);
    let SourceConfig::PostgresPhysical(pg) = &config.jobs["cluster"].source else {
        panic!("not a physical job")
    };
    // Without `databases`, every database's tables are listed at backup start.
    assert_eq!(pg.databases, Databases::All);
    assert_eq!(pg.password, Some(SecretRef::Env("PGPASSWORD_REPL".into())));
    assert!(pg.fast_checkpoint);
    // Logical jobs have no checkpoint to choose.
    let logical = insert_after(
        &base_config(),
        "store = \"offsite\"",
        "fast_checkpoint = true",
    );
    assert!(
        error_for(&parse_err(&logical), "jobs.main-db.fast_checkpoint")
            .message
            .contains("does not apply")
    );
    let bad = base_config()
        + "\n[jobs.cluster]\nkind = \"postgres_physical\"\nurl = \"postgres://r@db/postgres\"\npath = \"/x\"\n\
           schedule = \"0 1 * * *\"\nstore = \"offsite\"\n";
    let e = error_for(&parse_err(&bad), "jobs.cluster.path").clone();
    assert!(
        e.message
            .contains("does not apply to jobs of kind \"postgres_physical\""),
        "{e}"
    );
    let text = replace_line(&base_config(), "kind = \"postgres\"", "kind = \"mysql\"");
    let e = error_for(&parse_err(&text), "jobs.main-db.kind").clone();
    assert_eq!(e.message, "unknown job kind \"mysql\"");
}

#[test]
fn volume_jobs_and_hooks_parse_and_are_checked() {
    let text = base_config()
        + "\n[jobs.uploads]\nkind = \"volume\"\npath = \"uploads\"\nexclude = [\"*.tmp\", \"cache/**\"]\n\
           one_file_system = true\nschedule = \"30 2 * * *\"\nstore = \"offsite\"\n\
           before = [\"/sbin/fsfreeze\", \"--freeze\", \"/var/lib/app\"]\n\
           after = [\"/sbin/fsfreeze\", \"--unfreeze\", \"/var/lib/app\"]\nhook_timeout = \"30s\"\n";
    let config = parse_ok(&text);
    let job = &config.jobs["uploads"];
    let SourceConfig::Volume(v) = &job.source else {
        panic!("not a volume job")
    };
    assert_eq!(v.path, PathBuf::from("/etc/lifeboat/uploads"));
    assert_eq!(v.exclude, ["*.tmp", "cache/**"]);
    assert!(v.one_file_system);
    assert!(!v.ignore_unreadable);
    assert_eq!(
        job.hooks.before.as_deref(),
        Some(
            &[
                "/sbin/fsfreeze".to_owned(),
                "--freeze".into(),
                "/var/lib/app".into()
            ][..]
        )
    );
    assert_eq!(job.hooks.timeout, Duration::from_secs(30));
    assert_eq!(config.jobs["main-db"].hooks, Hooks::default());

    let bad = base_config()
        + "\n[jobs.uploads]\nkind = \"volume\"\nexclude = [\"a[\"]\nurl = \"postgres://x@y/z\"\n\
           schedule = \"30 2 * * *\"\nstore = \"offsite\"\nbefore = []\n\n[jobs.uploads.drill]\nchecks = []\n";
    let errors = parse_err(&bad);
    assert!(
        error_for(&errors, "jobs.uploads.path")
            .message
            .contains("missing"),
        "{errors}"
    );
    assert!(error_for(&errors, "jobs.uploads.exclude[0]")
        .message
        .contains("invalid glob"));
    assert!(error_for(&errors, "jobs.uploads.url")
        .message
        .contains("does not apply"));
    assert!(error_for(&errors, "jobs.uploads.before")
        .message
        .contains("empty command"));
}

#[test]
fn unknown_store_kind_is_reported() {
    let text = replace_line(&base_config(), "kind = \"s3\"", "kind = \"gcs\"");
    let e = error_for(&parse_err(&text), "stores.offsite.kind").clone();
    assert_eq!(e.message, "unknown store kind \"gcs\"");
}

#[test]
fn wrong_value_types_are_reported_without_echoing_strings() {
    let text = insert_after(&base_config(), "bucket =", "path_style = \"hunter2\"");
    let errors = parse_err(&text);
    let e = error_for(&errors, "stores.offsite.path_style");
    assert_eq!(e.line, Some(line_of(&text, "path_style")));
    assert!(e.message.contains("invalid type"), "{e}");
    assert!(!errors.to_string().contains("hunter2"), "{errors}");

    let text = replace_line(
        &base_config(),
        "recipients =",
        &format!("recipients = [\"{PK}\", 5]"),
    );
    let errors = parse_err(&text);
    let e = error_for(&errors, "encryption.recipients[1]");
    assert_eq!(e.line, Some(line_of(&text, "recipients")));
}

#[test]
fn a_badly_typed_key_does_not_hide_other_problems_in_its_table() {
    let text = replace_line(
        &base_config(),
        "bucket =",
        "bucket = 5\npart_size = true\nlock_mod = \"none\"",
    );
    let errors = parse_err(&text);
    assert_eq!(
        error_for(&errors, "stores.offsite.bucket").line,
        Some(line_of(&text, "bucket"))
    );
    assert_eq!(
        error_for(&errors, "stores.offsite.part_size").line,
        Some(line_of(&text, "part_size"))
    );
    assert_eq!(
        error_for(&errors, "stores.offsite.lock_mod")
            .hint
            .as_deref(),
        Some("did you mean `lock_mode`?")
    );
    // A present-but-mistyped `bucket` is not also reported as missing.
    assert_eq!(
        errors
            .errors()
            .iter()
            .filter(|e| e.key == "stores.offsite.bucket")
            .count(),
        1
    );
}

// ----- missing things --------------------------------------------------------------------------------------------

#[test]
fn missing_required_keys_are_reported_at_their_table() {
    for (needle, key, table) in [
        ("bucket =", "stores.offsite.bucket", "[stores.offsite]"),
        (
            "lock_mode =",
            "stores.offsite.lock_mode",
            "[stores.offsite]",
        ),
        ("schedule =", "jobs.main-db.schedule", "[jobs.main-db]"),
        (
            "store = \"offsite\"",
            "jobs.main-db.store",
            "[jobs.main-db]",
        ),
        ("url =", "jobs.main-db.url", "[jobs.main-db]"),
        ("kind = \"postgres\"", "jobs.main-db.kind", "[jobs.main-db]"),
        ("kind = \"s3\"", "stores.offsite.kind", "[stores.offsite]"),
    ] {
        let text = replace_line(&base_config(), needle, "");
        let errors = parse_err(&text);
        let e = error_for(&errors, key);
        let name = key.rsplit('.').next().unwrap();
        assert_eq!(e.message, format!("missing required key `{name}`"));
        assert_eq!(e.line, Some(line_of(&text, table)), "{key}");
        assert!(e.hint.is_some());
    }
}

#[test]
fn fs_store_needs_a_path() {
    let text = base_config() + "\n[stores.local]\nkind = \"fs\"\nlock_mode = \"none\"\n";
    let e = error_for(&parse_err(&text), "stores.local.path").clone();
    assert_eq!(e.line, Some(line_of(&text, "[stores.local]")));
}

#[test]
fn missing_encryption_and_stores_are_reported() {
    let text = "[daemon]\nlisten = \"127.0.0.1:9187\"\n";
    let errors = parse_err(text);
    let e = error_for(&errors, "encryption");
    assert_eq!(e.line, None);
    error_for(&errors, "stores");

    let text = replace_line(&base_config(), "recipients =", "recipients = []");
    let e = error_for(&parse_err(&text), "encryption.recipients").clone();
    assert!(e.message.starts_with("no recipients"), "{e}");
}

// ----- syntax and aggregation ------------------------------------------------------------------------------------

#[test]
fn toml_syntax_error_reports_the_line() {
    let text = replace_line(&base_config(), "bucket =", "bucket = \"acme-backups");
    let errors = parse_err(&text);
    let e = &errors.errors()[0];
    assert_eq!(e.line, Some(line_of(&text, "bucket")), "{errors}");
    assert!(e.message.starts_with("TOML syntax error"), "{e}");
    assert_eq!(e.key, "");
    assert!(e
        .to_string()
        .starts_with(&format!("test.toml:{}: TOML syntax error", e.line.unwrap())));
}

#[test]
fn syntax_error_does_not_echo_the_line() {
    let text = replace_line(&base_config(), "url =", "url = postgres://u:S3cretPw@h/db");
    let errors = parse_err(&text);
    assert_eq!(errors.errors()[0].line, Some(line_of(&text, "url")));
    assert!(
        !format!("{errors}\n{errors:?}").contains("S3cretPw"),
        "{errors}"
    );
}

#[test]
fn duplicate_keys_are_syntax_errors() {
    let text = insert_after(&base_config(), "bucket =", "bucket = \"other\"");
    let errors = parse_err(&text);
    assert_eq!(
        errors.errors()[0].line,
        Some(line_of(&text, "\"other\"")),
        "{errors}"
    );
}

#[test]
fn independent_errors_are_all_reported_at_once() {
    let text = base_config();
    let text = insert_after(&text, "listen =", "colour = \"blue\"");
    let text = replace_line(&text, "bucket =", "");
    let text = replace_line(&text, "retention =", "retention = \"35 fortnights\"");
    let text = replace_line(&text, "recipients =", &format!("recipients = [\"{SK}\"]"));
    let text = replace_line(&text, "schedule =", "schedule = \"0 */6 * *\"");
    let text = replace_line(&text, "url =", "url = \"postgres://u:pw@h/db\"");
    let text = text + "\n[jobs.other]\nkind = \"postgres\"\nurl = \"postgres://h/db\"\nschedule = \"@daily\"\nstore = \"nowhere\"\n";
    let errors = parse_err(&text);
    let keys: Vec<&str> = errors.errors().iter().map(|e| e.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "daemon.colour",
            "stores.offsite.bucket",
            "stores.offsite.retention",
            "encryption.recipients[0]",
            "jobs.main-db.url",
            "jobs.main-db.schedule",
            "jobs.other.store",
        ],
        "{errors}"
    );
    // Sorted by line, every one with a line, one per line of output.
    let lines: Vec<usize> = errors.errors().iter().map(|e| e.line.unwrap()).collect();
    assert!(lines.windows(2).all(|w| w[0] <= w[1]), "{lines:?}");
    assert_eq!(errors.to_string().lines().count(), keys.len());
    assert!(!errors.to_string().contains(SK));
}

// ----- shipped files ---------------------------------------------------------------------------------------------

/// Every `*.toml` under `dir` (recursively), except Cargo manifests and build output.
fn toml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            if !name.starts_with('.') && name != "target" && name != "src" {
                toml_files(&path, out);
            }
        } else if name.ends_with(".toml") && name != "Cargo.toml" {
            out.push(path);
        }
    }
}

#[test]
fn every_shipped_example_config_parses() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut files = Vec::new();
    for dir in ["config", "deploy"] {
        toml_files(&repo.join(dir), &mut files);
    }
    assert!(
        files
            .iter()
            .any(|f| f.ends_with("config/lifeboat.example.toml")),
        "the example config is missing: {files:?}"
    );
    let mut failures = Vec::new();
    for file in &files {
        if let Err(errors) = load(file) {
            failures.push(errors.to_string());
        }
    }
    assert!(
        failures.is_empty(),
        "example configs do not parse:\n{}",
        failures.join("\n")
    );
}

#[test]
fn example_config_is_a_production_setup() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("lifeboat.example.toml");
    let config = load(&file).unwrap_or_else(|e| panic!("{e}"));
    assert!(config
        .stores
        .values()
        .any(|s| matches!(s.kind, StoreKind::S3(_))
            && s.lock.mode == LockMode::Compliance
            && s.lock.retention == Some(Duration::from_secs(35 * 86400))));
    assert!(config.jobs.len() >= 2);
    assert!(!config.encryption.recipients.is_empty());
}

/// `docs/configuration.md` has one `## [table]` section per table, and a `| `key` |` table row per key.
#[test]
fn every_key_is_documented() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/configuration.md");
    let doc = std::fs::read_to_string(&path).unwrap();
    let section = |heading: &str| -> String {
        let start = doc
            .lines()
            .position(|l| l.starts_with("## ") && l.contains(heading))
            .unwrap_or_else(|| panic!("docs/configuration.md has no `## {heading}` section"));
        doc.lines()
            .skip(start + 1)
            .take_while(|l| !l.starts_with("## "))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let tables: [(&str, Vec<&str>); 6] = [
        ("[daemon]", raw::DAEMON_KEYS.to_vec()),
        ("[stores.NAME]", raw::store_keys().collect()),
        ("[encryption]", raw::ENCRYPTION_KEYS.to_vec()),
        ("[jobs.NAME]", raw::job_keys().collect()),
        ("[jobs.NAME.drill]", raw::JOB_DRILL_KEYS.to_vec()),
        ("[drill]", raw::DRILL_KEYS.to_vec()),
    ];
    let mut missing = Vec::new();
    for (heading, keys) in &tables {
        let text = section(heading);
        for key in keys {
            if !text.contains(&format!("| `{key}` |")) {
                missing.push(format!("{heading} {key}"));
            }
        }
    }
    for top in raw::TOP_LEVEL_KEYS {
        assert!(
            tables
                .iter()
                .any(|(h, _)| h.trim_start_matches('[').starts_with(top)),
            "top-level key {top} has no documented table"
        );
    }
    assert!(
        missing.is_empty(),
        "keys missing from docs/configuration.md: {missing:?}"
    );
}

/// RFC 8032 test 1's public key (raw 32 bytes, standard base64).
const SIGNING_PK: &str = "ed25519:11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=";

#[test]
fn signing_keys_parse() {
    let text = insert_after(
        &base_config(),
        "recipients =",
        &format!(
            "signing_key_file = \"keys/signing.pem\"\nsigning_public_keys = [\"{SIGNING_PK}\", \" {SIGNING_PK} \"]"
        ),
    );
    let config = parse_ok(&text);
    assert_eq!(
        config.encryption.signing_key,
        Some(SecretRef::File(PathBuf::from(
            "/etc/lifeboat/keys/signing.pem"
        )))
    );
    let keys = &config.encryption.signing_public_keys;
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0].text, SIGNING_PK);
    assert_eq!(keys[1].text, SIGNING_PK);
    assert_eq!(keys[0].bytes[..4], [0xd7, 0x5a, 0x98, 0x01]);

    let text = insert_after(
        &base_config(),
        "recipients =",
        &format!(
            "signing_key_env = \"LIFEBOAT_SIGNING_KEY\"\nsigning_public_keys = \"{SIGNING_PK}\""
        ),
    );
    let config = parse_ok(&text);
    assert_eq!(
        config.encryption.signing_key,
        Some(SecretRef::Env("LIFEBOAT_SIGNING_KEY".into()))
    );
    assert_eq!(config.encryption.signing_public_keys.len(), 1);

    // Neither is required: unsigned mode.
    let config = parse_ok(&base_config());
    assert_eq!(config.encryption.signing_key, None);
    assert!(config.encryption.signing_public_keys.is_empty());
}

#[test]
fn bad_signing_public_keys_name_the_key_and_the_fix() {
    let pem = "-----BEGIN PRIVATE KEY-----MC4CAQAwBQYDK2VwBCIEIJ+DYvh6SEqVTm50DFtMDoQikTmiCqirVv9mWG9qfSnF-----END PRIVATE KEY-----";
    let text = insert_after(
        &base_config(),
        "recipients =",
        &format!(
            "signing_public_keys = [\"{SIGNING_PK}\", \"11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=\", \
             \"ed25519:not base64!\", \"ed25519:AAAA\", \"{pem}\", 7]"
        ),
    );
    let errors = parse_err(&text);
    let line = Some(line_of(&text, "signing_public_keys"));
    let e = error_for(&errors, "encryption.signing_public_keys[1]");
    assert_eq!(e.line, line);
    assert!(e.message.contains("must start with \"ed25519:\""), "{e}");
    assert!(e.hint.as_deref().unwrap().contains("openssl pkey"), "{e}");
    let e = error_for(&errors, "encryption.signing_public_keys[2]");
    assert!(e.message.contains("base64"), "{e}");
    let e = error_for(&errors, "encryption.signing_public_keys[3]");
    assert!(e.message.contains("32 bytes"), "{e}");
    assert!(e.message.contains("decodes to 3"), "{e}");
    let e = error_for(&errors, "encryption.signing_public_keys[4]");
    assert!(e.message.contains("private key"), "{e}");
    error_for(&errors, "encryption.signing_public_keys[5]");
    assert!(errors
        .errors()
        .iter()
        .all(|e| e.key != "encryption.signing_public_keys[0]"));
    let shown = format!("{errors}\n{errors:?}");
    assert!(!shown.contains("MC4CAQAw"), "{shown}");
}

#[test]
fn signing_key_is_a_secret_reference() {
    let text = insert_after(
        &base_config(),
        "recipients =",
        "signing_key_env = \"S\"\nsigning_key_file = \"/run/signing.pem\"",
    );
    let errors = parse_err(&text);
    let e = error_for(&errors, "encryption.signing_key_file");
    assert!(
        e.message
            .contains("both `signing_key_env` and `signing_key_file`"),
        "{e}"
    );

    let text = insert_after(
        &base_config(),
        "recipients =",
        "signing_key_env = \"-----BEGIN PRIVATE KEY----- MC4CAQAw\"",
    );
    let errors = parse_err(&text);
    let e = error_for(&errors, "encryption.signing_key_env");
    assert!(
        e.message.contains("not a valid environment variable name"),
        "{e}"
    );
    assert!(!format!("{errors}\n{errors:?}").contains("MC4CAQAw"));
}
