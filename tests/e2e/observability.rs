//! The alert rules (`deploy/prometheus/lifeboat-rules.yml`) and the Grafana dashboard (`deploy/grafana/lifeboat.json`):
//! `promtool check rules` and `promtool test rules` accept them; every alert the design asks for exists, carries a
//! severity, summary, description and a runbook link whose anchor exists in `docs/runbook.md`, and has a unit test
//! in which it fires and one in which it stays silent; the dashboard is importable JSON (schema version, uid, a
//! datasource variable used by every panel and query), every query is valid PromQL (as a recording rule in a
//! throw-away rules file for `promtool check rules`), and every metric a query or rule reads is one the daemon
//! exports (docs/metrics.md's tables, which must match the registrations in `daemon/src/metrics.rs`).

use lifeboat_tests::postgres::run;
use lifeboat_tests::skip::{binary_on_path, require_or};
use lifeboat_tests::yaml::{document, output_text};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The alerts the observability issue asks for.
const REQUIRED_ALERTS: &[&str] = &[
    "LifeboatBackupStale",
    "LifeboatBackupFailing",
    "LifeboatDrillStale",
    "LifeboatDrillFailing",
    "LifeboatStoreNotImmutable",
    "LifeboatDaemonDown",
];
/// What `runbook_url` values start with: the runbook's path in the repository (docs/metrics.md#alerts says how to
/// point it at a published copy).
const RUNBOOK_URL_PREFIX: &str = "docs/runbook.md#";
/// The only datasource reference a dashboard panel or query may hold: the `datasource` template variable.
const DATASOURCE_REF: &str = "${datasource}";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn rules_path() -> PathBuf {
    repo().join("deploy/prometheus/lifeboat-rules.yml")
}

fn rules_test_path() -> PathBuf {
    repo().join("deploy/prometheus/lifeboat-rules.test.yml")
}

fn dashboard_path() -> PathBuf {
    repo().join("deploy/grafana/lifeboat.json")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn have_promtool() -> bool {
    require_or(
        "promtool",
        "apt-get install -y prometheus (tests/infra/install-deps.sh does)",
        binary_on_path("promtool"),
    )
}

/// Runs `promtool ARGS` in `dir` and fails the test with its output unless it succeeds.
fn promtool(dir: &Path, args: &[&str]) {
    let out = run(Command::new("promtool").args(args).current_dir(dir)).unwrap();
    assert!(
        out.status.success(),
        "promtool {} failed:\n{}",
        args.join(" "),
        output_text(&out)
    );
}

fn str_at<'a>(value: &'a Value, key: &str, what: &str) -> &'a str {
    value[key]
        .as_str()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| panic!("{what}: no {key}"))
}

/// Every rule of every group of the rules file.
fn rules() -> Vec<Value> {
    let doc = document(&rules_path());
    let groups = doc["groups"].as_array().expect("groups");
    groups
        .iter()
        .flat_map(|g| g["rules"].as_array().expect("rules").iter().cloned())
        .collect()
}

/// The anchors GitHub gives the headings of a Markdown file: lower case, punctuation other than `-` and `_`
/// dropped, spaces turned into `-`.
fn heading_anchors(markdown: &str) -> BTreeSet<String> {
    let mut in_code = false;
    let mut anchors = BTreeSet::new();
    for line in markdown.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
        }
        if in_code || !line.starts_with('#') {
            continue;
        }
        let title = line.trim_start_matches('#').trim();
        let anchor: String = title
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
            .map(|c| if c == ' ' { '-' } else { c })
            .collect();
        anchors.insert(anchor);
    }
    anchors
}

#[test]
fn alert_rules_pass_promtool_check_and_their_unit_tests() {
    if !have_promtool() {
        return;
    }
    let dir = rules_path().parent().unwrap().to_path_buf();
    promtool(&dir, &["check", "rules", "lifeboat-rules.yml"]);
    promtool(&dir, &["test", "rules", "lifeboat-rules.test.yml"]);
}

#[test]
fn every_alert_has_a_severity_annotations_and_a_runbook_section() {
    let runbook = heading_anchors(&read(&repo().join("docs/runbook.md")));
    let mut alerts = BTreeSet::new();
    for rule in rules() {
        let Some(name) = rule["alert"].as_str() else {
            continue;
        };
        alerts.insert(name.to_owned());
        let severity = rule["labels"]["severity"].as_str();
        assert!(
            matches!(severity, Some("page" | "ticket")),
            "{name}: severity must be page or ticket, is {severity:?}"
        );
        let annotations = &rule["annotations"];
        str_at(annotations, "summary", name);
        str_at(annotations, "description", name);
        let url = str_at(annotations, "runbook_url", name);
        let anchor = url.strip_prefix(RUNBOOK_URL_PREFIX).unwrap_or_else(|| {
            panic!("{name}: runbook_url {url:?} does not start with {RUNBOOK_URL_PREFIX}")
        });
        assert!(
            runbook.contains(anchor),
            "{name}: docs/runbook.md has no heading with the anchor #{anchor}; its anchors: {runbook:?}"
        );
    }
    for required in REQUIRED_ALERTS {
        assert!(
            alerts.contains(*required),
            "no alert {required} in {}",
            rules_path().display()
        );
    }
}

#[test]
fn every_alert_has_a_unit_test_where_it_fires_and_one_where_it_stays_silent() {
    let tests = document(&rules_test_path());
    assert_eq!(
        tests["rule_files"],
        serde_json::json!(["lifeboat-rules.yml"]),
        "the unit tests must load the rules file next to them"
    );
    // alert name -> (cases where it fires, cases where it stays silent)
    let mut cases: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for test in tests["tests"].as_array().expect("tests") {
        for case in test["alert_rule_test"].as_array().into_iter().flatten() {
            let name = str_at(case, "alertname", "alert_rule_test").to_owned();
            let fired = case["exp_alerts"].as_array().is_some_and(|a| !a.is_empty());
            let entry = cases.entry(name).or_default();
            if fired {
                entry.0 += 1;
            } else {
                entry.1 += 1;
            }
        }
    }
    for rule in rules() {
        let Some(name) = rule["alert"].as_str() else {
            continue;
        };
        let (fires, silent) = cases.get(name).copied().unwrap_or_default();
        assert!(
            fires > 0 && silent > 0,
            "{name}: {fires} test cases where it fires and {silent} where it stays silent in {}; both are needed",
            rules_test_path().display()
        );
    }
}

/// Every metric the daemon exports, as scraped (counters with `_total`), from docs/metrics.md's tables; checked
/// against the names `daemon/src/metrics.rs` registers, so the documentation cannot drift from the code.
fn exported_metrics() -> BTreeSet<String> {
    let docs = read(&repo().join("docs/metrics.md"));
    let mut documented = BTreeMap::new();
    for line in docs.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // | `name` | type | labels | meaning |
        if cells.len() < 4 || !cells[1].starts_with("`lifeboat_") {
            continue;
        }
        let name = cells[1].trim_matches('`').to_owned();
        documented.insert(name, cells[2].to_owned());
    }
    let source = read(&repo().join("daemon/src/metrics.rs"));
    let mut registered = BTreeSet::new();
    for part in source.split("register(").skip(1) {
        let literal = part.trim_start();
        if let Some(rest) = literal.strip_prefix('"') {
            registered.insert(rest.split('"').next().unwrap().to_owned());
        }
    }
    let as_registered: BTreeSet<String> = documented
        .iter()
        .map(|(name, kind)| match kind.as_str() {
            "counter" => name
                .strip_suffix("_total")
                .unwrap_or_else(|| panic!("docs/metrics.md: counter {name} must end in _total"))
                .to_owned(),
            _ => name.clone(),
        })
        .collect();
    assert_eq!(
        as_registered, registered,
        "docs/metrics.md's tables (left, counters without _total) and daemon/src/metrics.rs's registrations (right) differ"
    );
    documented.into_keys().collect()
}

/// The `lifeboat_…` metric names a PromQL expression reads (recording rules' `lifeboat:…` names are not metrics).
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = expr;
    while let Some(at) = rest.find("lifeboat_") {
        let before = rest[..at].chars().last();
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        let part_of_another =
            before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':');
        if !part_of_another {
            names.insert(name);
        }
    }
    names
}

#[test]
fn docs_tables_match_the_daemon_and_rules_read_only_exported_metrics() {
    let exported = exported_metrics();
    for rule in rules() {
        let expr = str_at(&rule, "expr", "rule");
        for name in metric_names(expr) {
            assert!(
                exported.contains(&name),
                "a rule reads {name}, which the daemon does not export (docs/metrics.md): {expr}"
            );
        }
    }
}

/// Every object under a `datasource` key of the dashboard, with where it is.
fn datasource_refs(value: &Value, at: &str, out: &mut Vec<(String, Value)>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                let here = format!("{at}.{key}");
                if key == "datasource" {
                    out.push((here.clone(), v.clone()));
                }
                datasource_refs(v, &here, out);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                datasource_refs(v, &format!("{at}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// Every panel, the ones inside collapsed rows included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        out.push(panel);
        out.extend(panel["panels"].as_array().into_iter().flatten());
    }
    out
}

fn dashboard() -> Value {
    serde_json::from_str(&read(&dashboard_path()))
        .unwrap_or_else(|e| panic!("{} is not JSON: {e}", dashboard_path().display()))
}

#[test]
fn dashboard_is_importable_and_every_panel_uses_the_datasource_variable() {
    let d = dashboard();
    let schema = d["schemaVersion"].as_u64().expect("schemaVersion");
    assert!(
        schema >= 36,
        "schemaVersion {schema} is older than Grafana 9"
    );
    str_at(&d, "uid", "dashboard");
    str_at(&d, "title", "dashboard");
    assert!(d["id"].is_null(), "an exported dashboard carries no id");

    let variables = d["templating"]["list"].as_array().expect("templating");
    let variable = |name: &str| {
        variables
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no template variable {name}"))
    };
    let ds = variable("datasource");
    assert_eq!(ds["type"], "datasource");
    assert_eq!(ds["query"], "prometheus");
    let job = variable("job");
    assert_eq!(job["type"], "query");
    assert_eq!(
        job["query"]["query"],
        "label_values(lifeboat_backup_expected_interval_seconds, job)"
    );
    assert_eq!(job["multi"], true);
    assert_eq!(job["includeAll"], true);

    let mut refs = Vec::new();
    datasource_refs(&d, "", &mut refs);
    for (at, r) in &refs {
        // The built-in annotation query is Grafana's own, not a datasource.
        if at.starts_with(".annotations") && r["uid"] == "-- Grafana --" {
            continue;
        }
        assert_eq!(
            r["uid"], DATASOURCE_REF,
            "{at}: a datasource other than the variable: {r}"
        );
    }

    let mut ids = BTreeSet::new();
    let mut queries = 0;
    for panel in panels(&d) {
        let id = panel["id"].as_u64().expect("panel id");
        assert!(ids.insert(id), "panel id {id} used twice");
        let title = str_at(panel, "title", "panel");
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(
            panel["datasource"]["uid"], DATASOURCE_REF,
            "panel {title:?}"
        );
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {title:?} has no query");
        for t in targets {
            assert_eq!(
                t["datasource"]["uid"], DATASOURCE_REF,
                "panel {title:?}: {t}"
            );
            str_at(t, "expr", title);
            queries += 1;
        }
    }
    assert!(queries >= 10, "only {queries} queries");
}

/// A dashboard query with Grafana's variables replaced by values PromQL accepts.
fn as_promql(expr: &str) -> String {
    let mut out = expr.to_owned();
    for (variable, value) in [
        ("$__rate_interval", "5m"),
        ("$__interval", "1m"),
        ("$__range", "1h"),
        ("${job}", ".*"),
        ("$job", ".*"),
        ("${store}", ".*"),
        ("$store", ".*"),
    ] {
        out = out.replace(variable, value);
    }
    assert!(
        !out.contains('$'),
        "a dashboard query uses a variable this test does not know: {expr}"
    );
    out
}

#[test]
fn dashboard_queries_are_valid_promql_over_exported_metrics() {
    let exported = exported_metrics();
    let d = dashboard();
    let mut rules = Vec::new();
    for panel in panels(&d) {
        for t in panel["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().unwrap();
            for name in metric_names(expr) {
                assert!(
                    exported.contains(&name),
                    "panel {:?} reads {name}, which the daemon does not export (docs/metrics.md): {expr}",
                    panel["title"]
                );
            }
            rules.push(serde_json::json!({
                "record": format!("dashboard:panel_{}_{}", panel["id"], t["refId"].as_str().unwrap()),
                "expr": as_promql(expr),
            }));
        }
    }
    // The threshold the dashboard draws is the one LifeboatBackupStale uses.
    let threshold = self::rules()
        .into_iter()
        .find(|r| r["record"] == "lifeboat:backup_stale_threshold_seconds")
        .expect("the stale threshold's recording rule");
    let formula = threshold["expr"].as_str().unwrap().trim();
    let drawn = rules.iter().any(|r| {
        r["expr"]
            .as_str()
            .unwrap()
            .replace("{job=~\".*\"}", "")
            .contains(formula)
    });
    assert!(
        drawn,
        "no dashboard query draws the stale threshold {formula}"
    );

    if !have_promtool() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // JSON is YAML: promtool reads the rules file as it is.
    let file = dir.path().join("dashboard-queries.yml");
    let doc = serde_json::json!({"groups": [{"name": "dashboard", "rules": rules}]});
    std::fs::write(&file, serde_json::to_string_pretty(&doc).unwrap()).unwrap();
    promtool(dir.path(), &["check", "rules", "dashboard-queries.yml"]);
}

#[test]
fn metric_names_are_found_in_expressions() {
    assert_eq!(
        metric_names(
            "time() - lifeboat_backup_last_success_timestamp_seconds{job=~\".*\"} > lifeboat:backup_stale_threshold_seconds \
             unless lifeboat_backup_running"
        ),
        BTreeSet::from([
            "lifeboat_backup_last_success_timestamp_seconds".to_owned(),
            "lifeboat_backup_running".to_owned()
        ])
    );
    assert_eq!(
        heading_anchors(
            "## LifeboatDrillStale: no recent passed drill\n```\n# not a heading\n```\n"
        ),
        BTreeSet::from(["lifeboatdrillstale-no-recent-passed-drill".to_owned()])
    );
}
