//! The systemd units in `deploy/systemd/`: the daemon (`lifeboatd.service`) and the restore drill
//! (`lifeboat-drill.service`, started daily by `lifeboat-drill.timer`). For each: `systemd-analyze verify` has
//! nothing to say about it, `systemd-analyze security` rates its exposure at most 2.5, it keeps the service
//! settings and hardening it promises, and its `ExecStart=` arguments are accepted by the built binary.

use lifeboat_tests::lifeboat::bin;
use lifeboat_tests::postgres::run;
use lifeboat_tests::skip::{binary_on_path, require_or};
use lifeboat_tests::yaml::output_text as combined;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The daemon's unit.
const DAEMON: &str = "lifeboatd.service";
/// The drill's unit and its timer.
const DRILL: &str = "lifeboat-drill.service";
const DRILL_TIMER: &str = "lifeboat-drill.timer";
/// The exposure `systemd-analyze security` may report at most, in tenths: 2.5 (0 = fully sandboxed, 10 = not at all).
const MAX_EXPOSURE_TENTHS: u32 = 25;
/// Where the units expect the binaries; the verify test substitutes the built ones.
const DAEMON_BINARY: &str = "/usr/local/bin/lifeboatd";
const DRILL_BINARY: &str = "/usr/local/bin/lifeboat";
/// node_exporter's textfile directory (Debian's default), where the drill writes its metrics.
const TEXTFILE_DIR: &str = "/var/lib/prometheus/node-exporter";

/// `deploy/systemd/NAME`.
fn unit_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/systemd")
        .join(name)
}

fn unit_name(unit: &Path) -> &str {
    unit.file_name()
        .and_then(|n| n.to_str())
        .expect("a unit file name")
}

fn unit_text(unit: &Path) -> String {
    std::fs::read_to_string(unit).unwrap_or_else(|e| panic!("read {}: {e}", unit.display()))
}

/// Every `Key=value` assignment of `[section]`, in order, comments and blank lines skipped.
/// (The units use no line continuations; a `\` at the end of a line is refused so that stays true.)
fn assignments(text: &str, section: &str) -> Vec<(String, String)> {
    let header = format!("[{section}]");
    let mut current = String::new();
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        assert!(
            !line.ends_with('\\'),
            "line continuations are not parsed by this test: {line}"
        );
        if line.starts_with('[') {
            current = line.to_owned();
            continue;
        }
        if current == header {
            let (key, value) = line
                .split_once('=')
                .unwrap_or_else(|| panic!("not a Key=value line in {header}: {line}"));
            out.push((key.trim().to_owned(), value.trim().to_owned()));
        }
    }
    out
}

fn values<'a>(assignments: &'a [(String, String)], key: &str) -> Vec<&'a str> {
    assignments
        .iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .collect()
}

/// The value of a setting that must be assigned exactly once.
#[track_caller]
fn single<'a>(assignments: &'a [(String, String)], key: &str) -> &'a str {
    match values(assignments, key).as_slice() {
        [v] => v,
        other => panic!("{key}= must be set exactly once, found {other:?}"),
    }
}

fn systemd_analyze(args: &[&str]) -> Output {
    run(Command::new("systemd-analyze")
        .args(args)
        .env("SYSTEMD_COLORS", "0")
        .env("SYSTEMD_PAGER", "cat"))
    .expect("run systemd-analyze")
}

fn require_systemd_analyze() -> bool {
    require_or(
        "systemd-analyze (systemd 252 or newer)",
        "apt-get install -y systemd (tests/infra/install-deps.sh does)",
        binary_on_path("systemd-analyze"),
    )
}

/// The sandbox both services share: a transient user, a read-only system, no capabilities, the
/// `@system-service` system-call allow-list, and TCP/UDP/unix sockets only.
#[track_caller]
fn assert_common_hardening(unit: &str, service: &[(String, String)]) {
    let expected = [
        ("DynamicUser", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("NoNewPrivileges", "yes"),
        ("RestrictNamespaces", "yes"),
        ("RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6"),
        ("SystemCallArchitectures", "native"),
    ];
    for (key, value) in expected {
        assert_eq!(single(service, key), value, "{unit}: {key}=");
    }
    // An empty assignment resets these lists, so every assignment must be empty.
    for key in ["CapabilityBoundingSet", "AmbientCapabilities"] {
        let v = values(service, key);
        assert!(
            !v.is_empty() && v.iter().all(|v| v.is_empty()),
            "{unit}: {key}= must be set, and only to the empty list: {v:?}"
        );
    }
    let filters = values(service, "SystemCallFilter");
    assert_eq!(
        filters.first(),
        Some(&"@system-service"),
        "{unit}: the first SystemCallFilter= is the @system-service allow-list: {filters:?}"
    );
    assert!(
        filters[1..].iter().all(|f| f.starts_with('~')),
        "{unit}: later SystemCallFilter= lines may only remove calls: {filters:?}"
    );
    // No outbound-address allow-list: it would cut off the S3 store and the databases.
    assert!(values(service, "IPAddressDeny").is_empty(), "{unit}");
    for key in ["User", "PrivateNetwork"] {
        assert!(
            values(service, key).is_empty(),
            "{unit}: {key}= would undo DynamicUser= or cut off the store"
        );
    }
}

/// The unit's `LoadCredential=ID:SOURCE` pairs; every source lives in `/etc/lifeboat/credentials/` (0700, root).
/// Every `/run/credentials/UNIT/NAME` the unit mentions (its commented config examples) names a credential it
/// declares, or one a commented `LoadCredential=NAME:...` line offers. Returns the declared pairs.
#[track_caller]
fn credentials(unit: &Path) -> Vec<(String, String)> {
    let text = unit_text(unit);
    let name = unit_name(unit);
    let service = assignments(&text, "Service");
    let mut declared = Vec::new();
    for c in values(&service, "LoadCredential") {
        let (id, source) = c
            .split_once(':')
            .unwrap_or_else(|| panic!("{name}: LoadCredential={c}: expected ID:PATH"));
        assert!(
            source.starts_with("/etc/lifeboat/credentials/"),
            "{name}: LoadCredential={c}: sources live in /etc/lifeboat/credentials/ (0700, root)"
        );
        declared.push((id.to_owned(), source.to_owned()));
    }
    assert!(!declared.is_empty(), "{name}: no LoadCredential= line");
    let offered: Vec<String> = text
        .match_indices("LoadCredential=")
        .map(|(i, m)| credential_name(&text[i + m.len()..]))
        .collect();
    let prefix = format!("/run/credentials/{name}/");
    for (i, _) in text.match_indices(&prefix) {
        let id = credential_name(&text[i + prefix.len()..]);
        if id == "NAME" {
            continue;
        }
        assert!(
            offered.contains(&id),
            "{name}: {prefix}{id} is referenced but no LoadCredential={id}:... declares or offers it"
        );
    }
    declared
}

/// The credential id at the start of `rest` (letters, digits, `-`, `_`, `.`).
fn credential_name(rest: &str) -> String {
    rest.chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .collect()
}

#[test]
fn daemon_unit_has_the_service_settings_and_hardening_the_issue_asks_for() {
    let unit = unit_path(DAEMON);
    let text = unit_text(&unit);
    let service = assignments(&text, "Service");
    let expected = [
        ("Type", "notify"),
        ("NotifyAccess", "main"),
        (
            "ExecStart",
            "/usr/local/bin/lifeboatd --config /etc/lifeboat/lifeboat.toml --log-format json",
        ),
        ("ExecReload", "/bin/kill -HUP $MAINPID"),
        // SIGTERM to lifeboatd only, so running pg_dumps are not killed before shutdown_grace ends.
        ("KillMode", "mixed"),
        ("Restart", "on-failure"),
        ("UMask", "0077"),
    ];
    for (key, value) in expected {
        assert_eq!(single(&service, key), value, "{key}=");
    }
    assert_common_hardening(DAEMON, &service);
    // Longer than shutdown_grace's default of 60 s, so running backups can finish before SIGKILL.
    let stop: u64 = single(&service, "TimeoutStopSec")
        .parse()
        .expect("TimeoutStopSec= in plain seconds");
    assert!(
        stop > 60,
        "TimeoutStopSec={stop} must exceed shutdown_grace (60 s)"
    );

    let declared = credentials(&unit);
    // The daemon never holds an age identity: it only encrypts, to public keys.
    for (id, source) in &declared {
        assert!(
            !id.contains("identity") && !source.contains("identity"),
            "{DAEMON} must not load an age identity: LoadCredential={id}:{source}"
        );
    }
    assert!(!single(&service, "ExecStart").contains("--identity"));
    let prefix = format!("/run/credentials/{DAEMON}/");
    assert!(
        text.contains(&format!("{prefix}s3-access-key-id")),
        "the unit shows no config referencing a credential"
    );
}

#[test]
fn drill_unit_holds_the_identity_and_its_own_credentials_in_the_same_sandbox() {
    let unit = unit_path(DRILL);
    let text = unit_text(&unit);
    let service = assignments(&text, "Service");
    let exec_start = single(&service, "ExecStart");
    assert_eq!(
        exec_start,
        format!(
            "{DRILL_BINARY} --config /etc/lifeboat/lifeboat.toml drill \
             --identity ${{CREDENTIALS_DIRECTORY}}/age-identity \
             --textfile {TEXTFILE_DIR}/lifeboat-drill.prom"
        )
    );
    // A oneshot: the timer starts it, systemd waits for it, its exit status is the drill's verdict.
    assert_eq!(single(&service, "Type"), "oneshot");
    for key in ["Restart", "RemainAfterExit"] {
        assert!(
            values(&service, key).is_empty(),
            "{key}= hides a failed drill"
        );
    }
    assert_ne!(
        single(&service, "TimeoutStartSec"),
        "infinity",
        "a hung drill must fail"
    );
    assert_common_hardening(DRILL, &service);
    // PostgreSQL runs inside the sandbox: its own IPC namespace (SysV and POSIX shared memory stay usable),
    // the cluster in the private /tmp, and node_exporter must be able to read the textfile.
    for (key, value) in [
        ("PrivateIPC", "yes"),
        ("MemoryDenyWriteExecute", "yes"),
        ("UMask", "0022"),
    ] {
        assert_eq!(single(&service, key), value, "{DRILL}: {key}=");
    }
    // The textfile's directory is writable (a temp file is renamed over the textfile).
    let writable: Vec<&str> = values(&service, "ReadWritePaths")
        .iter()
        .flat_map(|v| v.split_whitespace())
        .map(|p| p.trim_start_matches('-'))
        .collect();
    assert!(
        writable.contains(&TEXTFILE_DIR),
        "{DRILL}: ReadWritePaths= must include {TEXTFILE_DIR}: {writable:?}"
    );

    // The identity is the drill's; its S3 credentials are not the daemon's writer keys.
    let declared = credentials(&unit);
    assert!(
        declared.iter().any(|(id, _)| id == "age-identity"),
        "{DRILL}: no LoadCredential=age-identity:...: {declared:?}"
    );
    let daemon_sources: Vec<String> = credentials(&unit_path(DAEMON))
        .into_iter()
        .map(|(_, source)| source)
        .collect();
    for (id, source) in &declared {
        assert!(
            !daemon_sources.contains(source),
            "{DRILL}: LoadCredential={id}:{source} is the daemon's credential; the drill has its own"
        );
    }
    // The SDK's credential chain reads the drill's keys from its own credential.
    assert!(
        values(&service, "Environment").contains(&"AWS_SHARED_CREDENTIALS_FILE=%d/aws-credentials"),
        "{DRILL}: Environment=AWS_SHARED_CREDENTIALS_FILE=%d/aws-credentials"
    );
    assert!(declared.iter().any(|(id, _)| id == "aws-credentials"));
}

#[test]
fn drill_timer_fires_daily_with_a_random_delay_and_catches_up() {
    let text = unit_text(&unit_path(DRILL_TIMER));
    let timer = assignments(&text, "Timer");
    assert_eq!(single(&timer, "Persistent"), "true");
    let delay = single(&timer, "RandomizedDelaySec");
    assert!(
        !delay.is_empty() && !delay.starts_with('0'),
        "RandomizedDelaySec={delay}"
    );
    if let Some(unit) = values(&timer, "Unit").first() {
        assert_eq!(*unit, DRILL);
    }
    assert_eq!(
        single(&assignments(&text, "Install"), "WantedBy"),
        "timers.target"
    );

    let calendar = single(&timer, "OnCalendar");
    if !require_systemd_analyze() {
        return;
    }
    // Daily means: every day, at one fixed time (normalised `*-*-* HH:MM:SS`).
    let out = systemd_analyze(&["calendar", calendar]);
    let said = combined(&out);
    assert!(out.status.success(), "OnCalendar={calendar}: {said}");
    let normalized = said
        .lines()
        .find_map(|l| l.trim().strip_prefix("Normalized form:"))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no normalized form in:\n{said}"));
    let time = normalized
        .strip_prefix("*-*-* ")
        .unwrap_or_else(|| panic!("OnCalendar={calendar} ({normalized}) is not every day"));
    assert!(
        time.len() == 8 && time.chars().all(|c| c.is_ascii_digit() || c == ':'),
        "OnCalendar={calendar} ({normalized}) fires more than once a day"
    );
}

/// Keys of the TOML lines in the unit's comments (`#   key = value`; unit directives use `=` without spaces).
fn commented_config_keys(text: &str) -> Vec<String> {
    let mut keys = Vec::new();
    for line in text.lines() {
        let Some(comment) = line.trim().strip_prefix('#') else {
            continue;
        };
        if let Some((key, _)) = comment.trim().split_once(" = ") {
            if key
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            {
                keys.push(key.to_owned());
            }
        }
    }
    keys
}

#[test]
fn config_keys_in_the_unit_comments_exist_in_the_configuration_reference() {
    let reference = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/configuration.md"),
    )
    .expect("read docs/configuration.md");
    let daemon_keys = commented_config_keys(&unit_text(&unit_path(DAEMON)));
    assert!(
        daemon_keys.iter().any(|k| k.ends_with("_file")),
        "no *_file key in the daemon unit's commented config example: {daemon_keys:?}"
    );
    for unit in [DAEMON, DRILL] {
        for key in commented_config_keys(&unit_text(&unit_path(unit))) {
            assert!(
                reference.contains(&format!("| `{key}` |")),
                "{unit}'s comments use config key {key:?}, which docs/configuration.md does not define"
            );
        }
    }
}

/// Runs the binary the unit's `ExecStart=` names (the built one instead of `installed`) with the unit's
/// arguments plus `--help`: clap still rejects an unknown flag or a bad value (exit 2).
fn assert_binary_accepts_exec_start(unit: &Path, installed: &str) {
    let service = assignments(&unit_text(unit), "Service");
    let exec_start = single(&service, "ExecStart");
    let mut words = exec_start.split_whitespace();
    assert_eq!(words.next(), Some(installed));
    let name = Path::new(installed).file_name().unwrap().to_str().unwrap();
    let out = run(Command::new(bin(name)).args(words).arg("--help")).unwrap();
    assert!(
        out.status.success(),
        "{name} rejects the arguments of {} ({exec_start}):\n{}",
        unit_name(unit),
        combined(&out)
    );
}

#[test]
fn lifeboatd_accepts_the_exec_start_arguments() {
    assert_binary_accepts_exec_start(&unit_path(DAEMON), DAEMON_BINARY);
}

#[test]
fn lifeboat_accepts_the_drill_exec_start_arguments() {
    assert_binary_accepts_exec_start(&unit_path(DRILL), DRILL_BINARY);
}

/// A copy of `unit`, under its own name, in `dir`, with `ExecStart=`'s `installed` binary replaced by `binary`.
///
/// `systemd-analyze verify` fails when ExecStart's binary does not exist, and /usr/local/bin is empty where
/// tests run. Rewriting only that path (to the freshly built binary) keeps every other line as shipped; the
/// installed path itself is asserted above. `verify --root=DIR` (systemd 252) was the alternative, but it
/// resolves *everything* inside DIR: it then also wants /bin/kill and the units the service depends on
/// (sysinit.target, ...) there, i.e. a small OS tree.
fn unit_copy_with_binary(
    dir: &Path,
    unit: &Path,
    installed: &str,
    binary: &Path,
    extra_service_line: Option<&str>,
) -> PathBuf {
    let binary = binary.to_str().expect("UTF-8 path of the built binary");
    assert!(
        !binary.contains(['"', '\\', '$']),
        "cannot quote {binary} for ExecStart="
    );
    // Quoted, with % doubled, so any path survives systemd's word splitting and specifiers.
    let quoted = format!("\"{}\"", binary.replace('%', "%%"));
    let mut replaced = 0;
    let mut text = String::new();
    for line in unit_text(unit).lines() {
        if let Some(rest) = line.strip_prefix(&format!("ExecStart={installed} ")) {
            text.push_str(&format!("ExecStart={quoted} {rest}\n"));
            replaced += 1;
        } else {
            text.push_str(line);
            text.push('\n');
        }
        if line == "[Service]" {
            if let Some(extra) = extra_service_line {
                text.push_str(extra);
                text.push('\n');
            }
        }
    }
    assert_eq!(replaced, 1, "one ExecStart={installed} ... line");
    let path = dir.join(unit_name(unit));
    std::fs::write(&path, text).unwrap();
    path
}

/// `systemd-analyze verify` of `service` (its binary replaced by the built one) together with `companions`
/// (e.g. its timer, copied unchanged) reports nothing about any of them.
fn assert_verify_has_nothing_to_say(service: &Path, installed: &str, companions: &[&Path]) {
    let name = unit_name(service);
    let binary = bin(Path::new(installed).file_name().unwrap().to_str().unwrap());

    // First prove that verify reports a misspelt directive here (it still exits 0 for those), so a
    // silent run below means something.
    let canary = tempfile::tempdir().unwrap();
    let bad = unit_copy_with_binary(
        canary.path(),
        service,
        installed,
        &binary,
        Some("ProtectHme=yes"),
    );
    let out = systemd_analyze(&["verify", bad.to_str().unwrap()]);
    let said = combined(&out);
    assert!(
        said.contains("ProtectHme") && said.contains(name),
        "systemd-analyze verify did not report a misspelt directive, so it cannot check {name}:\n{said}"
    );

    let dir = tempfile::tempdir().unwrap();
    let mut units = vec![unit_copy_with_binary(
        dir.path(),
        service,
        installed,
        &binary,
        None,
    )];
    for companion in companions {
        let copy = dir.path().join(unit_name(companion));
        std::fs::copy(companion, &copy).unwrap();
        units.push(copy);
    }
    let mut args = vec!["verify"];
    args.extend(units.iter().map(|u| u.to_str().unwrap()));
    let out = systemd_analyze(&args);
    let said = combined(&out);
    assert!(
        out.status.success(),
        "systemd-analyze verify failed ({}):\n{said}",
        out.status
    );
    // Unknown keys, unparsable values and bad paths are only warnings (exit 0); every such line names
    // the unit or its file. Lines about other units of this machine are not ours to fix.
    let ours: Vec<&str> = units.iter().map(|u| unit_name(u)).collect();
    let stem = name.trim_end_matches(".service");
    let about_us: Vec<&str> = said
        .lines()
        .filter(|l| l.contains(stem) || ours.iter().any(|u| l.contains(u)))
        .collect();
    assert!(
        about_us.is_empty(),
        "systemd-analyze verify warns about {ours:?}:\n{}",
        about_us.join("\n")
    );
}

#[test]
fn systemd_analyze_verify_has_nothing_to_say_about_the_daemon_unit() {
    if !require_systemd_analyze() {
        return;
    }
    assert_verify_has_nothing_to_say(&unit_path(DAEMON), DAEMON_BINARY, &[]);
}

#[test]
fn systemd_analyze_verify_has_nothing_to_say_about_the_drill_unit_and_timer() {
    if !require_systemd_analyze() {
        return;
    }
    assert_verify_has_nothing_to_say(&unit_path(DRILL), DRILL_BINARY, &[&unit_path(DRILL_TIMER)]);
}

/// `systemd-analyze security --offline=yes` rates `unit` at most 2.5 and warns about nothing in it.
fn assert_exposure_at_most_2_5(unit: &Path) {
    let name = unit_name(unit);
    // --threshold is in tenths too: the command itself fails above 2.5.
    let threshold = format!("--threshold={MAX_EXPOSURE_TENTHS}");
    let max = f64::from(MAX_EXPOSURE_TENTHS) / 10.0;
    let out = systemd_analyze(&[
        "security",
        "--offline=yes",
        &threshold,
        "--no-pager",
        unit.to_str().unwrap(),
    ]);
    let said = combined(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains(name),
        "systemd-analyze security warns about {name}:\n{stderr}"
    );
    let marker = format!("Overall exposure level for {name}:");
    let exposure: f64 = said
        .lines()
        .find_map(|l| l.split_once(&marker))
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no {marker:?} line in:\n{said}"));
    assert!(
        exposure <= max,
        "{name}: exposure {exposure} > {max}; the settings that cost most are marked ✗:\n{said}"
    );
    assert!(
        out.status.success(),
        "systemd-analyze security {threshold} {name} failed ({}):\n{said}",
        out.status
    );
}

#[test]
fn systemd_analyze_security_rates_the_daemon_unit_at_most_2_5() {
    if !require_systemd_analyze() {
        return;
    }
    assert_exposure_at_most_2_5(&unit_path(DAEMON));
}

#[test]
fn systemd_analyze_security_rates_the_drill_unit_at_most_2_5() {
    if !require_systemd_analyze() {
        return;
    }
    assert_exposure_at_most_2_5(&unit_path(DRILL));
}
