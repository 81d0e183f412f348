//! The Kubernetes manifests in `deploy/kubernetes/`: every YAML file is clean YAML without duplicate keys
//! (`yamllint`), every resource of a built-in kind validates strictly against the Kubernetes API schemas
//! (`kubernetes-validate`, PyPI), resources of custom kinds (the CSI `VolumeSnapshot`, whose schema the validator does
//! not ship) are checked by hand against their CRD's schema, and the drill CronJob and the volume-snapshot backup keep
//! the guarantees `deploy/kubernetes/README.md` states (the backup's script is run against a stub `kubectl`).

use lifeboat_tests::postgres::run;
use lifeboat_tests::skip::{binary_on_path, require_or};
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
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
        // It reports each resource it validated; a resource it silently skipped would prove nothing. It only
        // warns (and passes) when it has no schema for a kind: allowed for the custom kinds checked by hand below,
        // never for a built-in one (a mistyped apiVersion would otherwise go unnoticed).
        for file in &files {
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
const CUSTOM_KINDS: [(&str, &str); 1] = [("snapshot.storage.k8s.io/v1", "VolumeSnapshot")];

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
    let docs = by_component(&kubernetes_dir().join("volume-snapshot-backup.yaml"));
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
    assert_eq!(
        c["command"],
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
    let cron_file = kubernetes_dir().join("volume-snapshot-backup-cronjob.yaml");
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
        std::fs::read_to_string(kubernetes_dir().join("volume-snapshot-backup.sh")).unwrap();
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
    let script = kubernetes_dir().join("volume-snapshot-backup.sh");
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
