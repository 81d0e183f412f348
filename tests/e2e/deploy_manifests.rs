//! The Kubernetes manifests in `deploy/kubernetes/`: every YAML file is clean YAML without duplicate keys
//! (`yamllint`), every resource validates strictly against the Kubernetes API schemas (`kubernetes-validate`,
//! PyPI), and the drill CronJob keeps the guarantees `deploy/kubernetes/README.md` states.

use lifeboat_tests::postgres::run;
use lifeboat_tests::skip::{binary_on_path, require_or};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

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

fn combined(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
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
    let files = manifests();
    // The validator's default is the newest Kubernetes it knows; the oldest we support is checked too.
    for version in [None, Some(OLDEST_KUBERNETES)] {
        let mut cmd = Command::new("kubernetes-validate");
        cmd.arg("--strict");
        if let Some(v) = version {
            cmd.args(["--kubernetes-version", v]);
        }
        let out = run(cmd.args(&files)).unwrap();
        let said = combined(&out);
        assert!(
            out.status.success(),
            "kubernetes-validate --strict ({}) rejects deploy/kubernetes/:\n{said}",
            version.unwrap_or("newest")
        );
        // It reports each resource it validated; a file it silently skipped would prove nothing.
        for file in &files {
            assert!(
                said.contains(&format!("{} passed", file.display())),
                "kubernetes-validate did not validate {}:\n{said}",
                file.display()
            );
        }
    }
}

/// Every document of a YAML file, as JSON (PyYAML, which kubernetes-validate depends on).
fn yaml_documents(path: &Path) -> Vec<Value> {
    let script = "import json, sys, yaml\n\
                  with open(sys.argv[1]) as f:\n    docs = [d for d in yaml.safe_load_all(f) if d is not None]\n\
                  json.dump(docs, sys.stdout)";
    let out = run(Command::new("python3").args(["-c", script]).arg(path)).unwrap();
    assert!(
        out.status.success(),
        "cannot read {} with PyYAML: {}",
        path.display(),
        combined(&out)
    );
    match serde_json::from_slice(&out.stdout).unwrap() {
        Value::Array(docs) => docs,
        other => panic!("not a list of documents: {other}"),
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
    let docs = yaml_documents(&kubernetes_dir().join("drill-cronjob.yaml"));
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
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let containers = pod["containers"].as_array().unwrap();
    let [c] = containers.as_slice() else {
        panic!("one container: {containers:?}");
    };
    assert_eq!(c["image"], "ghcr.io/lifeboat/lifeboat:0.1.0");
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

    // The command is a drill with the identity from the mounted Secret.
    let command: Vec<&str> = c["command"]
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
    let volumes = pod["volumes"].as_array().unwrap();
    let volume = |name: &str| -> &Value {
        volumes
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no volume {name}"))
    };
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
    let env = c["env"].as_array().unwrap();
    let shared = env
        .iter()
        .find(|e| e["name"] == "AWS_SHARED_CREDENTIALS_FILE")
        .and_then(|e| e["value"].as_str())
        .expect("AWS_SHARED_CREDENTIALS_FILE");
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
