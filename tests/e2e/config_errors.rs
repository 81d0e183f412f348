//! Configuration errors through the binaries: exit code 2, the key and line named, secrets never echoed.
//! (Every individual validation rule has a unit test in the config crate; these check the wiring.)

use lifeboat_tests::lifeboat::{lifeboat, lifeboatd};

fn write(dir: &std::path::Path, text: &str) -> std::path::PathBuf {
    let p = dir.join("bad.toml");
    std::fs::write(&p, text).unwrap();
    p
}

const STORE: &str = "[stores.local]\nkind = \"fs\"\npath = \"/tmp/x\"\nlock_mode = \"compliance\"\nretention = \"1d\"\n";
const RECIPIENT: &str = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p";

#[test]
fn config_errors_exit_2_and_name_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&str, String, &[&str])] = &[
        (
            "unknown key",
            format!("[encryption]\nrecipients = [\"{RECIPIENT}\"]\n{STORE}colour = \"blue\"\n"),
            &["colour", ":8"],
        ),
        (
            "bad cron",
            format!("[encryption]\nrecipients = [\"{RECIPIENT}\"]\n{STORE}[jobs.db]\nkind = \"postgres\"\nurl = \"postgres://u@h/db\"\nschedule = \"0 */6 * *\"\nstore = \"local\"\n"),
            &["jobs.db.schedule", ":11"],
        ),
        (
            "missing store",
            format!("[encryption]\nrecipients = [\"{RECIPIENT}\"]\n{STORE}[jobs.db]\nkind = \"postgres\"\nurl = \"postgres://u@h/db\"\nschedule = \"0 3 * * *\"\nstore = \"offsite\"\n"),
            &["jobs.db.store", "offsite", "local"],
        ),
        (
            "bad duration",
            format!("[encryption]\nrecipients = [\"{RECIPIENT}\"]\n[stores.local]\nkind = \"fs\"\npath = \"/tmp/x\"\nlock_mode = \"compliance\"\nretention = \"35 fortnights\"\n"),
            &["stores.local.retention", ":7"],
        ),
        (
            "not a recipient",
            format!("[encryption]\nrecipients = [\"age1notakey\"]\n{STORE}"),
            &["encryption.recipients", ":2"],
        ),
    ];
    for (what, text, needles) in cases {
        let path = write(dir.path(), text);
        for out in [
            lifeboatd(&path, &["run", "db"]),
            lifeboat(&path, &["snapshots"]),
        ] {
            out.expect_code(2);
            for n in *needles {
                assert!(
                    out.stderr.contains(n),
                    "{what}: {n:?} missing from: {}",
                    out.stderr
                );
            }
        }
    }
}

#[test]
fn secrets_in_the_wrong_place_are_refused_without_being_printed() {
    let dir = tempfile::tempdir().unwrap();
    let identity = "AGE-SECRET-KEY-1GQ9778VQXMMJVE8SK7J6VT8UJ4HDQAJUVSFCWCM02D8GEWQ72PVQ2Y5J33";
    let path = write(
        dir.path(),
        &format!("[encryption]\nrecipients = [\"{identity}\"]\n{STORE}"),
    );
    let out = lifeboatd(&path, &["check"]);
    out.expect_code(2);
    assert!(out.stderr.contains("secret key"), "{}", out.stderr);
    assert!(
        !out.stderr
            .contains("GQ9778VQXMMJVE8SK7J6VT8UJ4HDQAJUVSFCWCM02D8GEWQ72PVQ2Y5J33"),
        "identity echoed: {}",
        out.stderr
    );

    let path = write(
        dir.path(),
        &format!("[encryption]\nrecipients = [\"{RECIPIENT}\"]\n{STORE}[jobs.db]\nkind = \"postgres\"\nurl = \"postgres://u:hunter2secret@h/db\"\nschedule = \"0 3 * * *\"\nstore = \"local\"\n"),
    );
    let out = lifeboatd(&path, &["run", "db"]);
    out.expect_code(2);
    assert!(out.stderr.contains("jobs.db.url"), "{}", out.stderr);
    assert!(
        !out.stderr.contains("hunter2secret"),
        "password echoed: {}",
        out.stderr
    );
}

#[test]
fn unknown_job_and_missing_config_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        &format!("[encryption]\nrecipients = [\"{RECIPIENT}\"]\n{STORE}"),
    );
    let out = lifeboatd(&path, &["run", "nope"]);
    out.expect_code(2);
    assert!(
        out.stderr.contains("no job named \"nope\""),
        "{}",
        out.stderr
    );
    let out = lifeboatd(&dir.path().join("missing.toml"), &["check"]);
    out.expect_code(2);
    for bin in ["lifeboatd", "lifeboat"] {
        let help = lifeboat_tests::lifeboat::run_bin(bin, &path, &["--help"]);
        help.expect_code(0);
        assert!(
            help.stdout.contains("Example"),
            "{bin} --help shows an example"
        );
    }
}
