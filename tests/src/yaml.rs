//! YAML files read as JSON values through PyYAML (which yamllint and kubernetes-validate bring along), for the
//! tests of deploy/: Kubernetes manifests, Prometheus rules and their unit tests.

use crate::postgres::run;
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};

/// Stdout and stderr of a finished command, for failure messages.
pub fn output_text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Every non-empty document of a YAML file, as JSON. Panics with PyYAML's message if it does not parse.
pub fn documents(path: &Path) -> Vec<Value> {
    let script = "import json, sys, yaml\n\
                  with open(sys.argv[1]) as f:\n    docs = [d for d in yaml.safe_load_all(f) if d is not None]\n\
                  json.dump(docs, sys.stdout)";
    let out = run(Command::new("python3").args(["-c", script]).arg(path))
        .unwrap_or_else(|e| panic!("python3 for {}: {e}", path.display()));
    assert!(
        out.status.success(),
        "PyYAML cannot read {}: {}",
        path.display(),
        output_text(&out)
    );
    match serde_json::from_slice(&out.stdout) {
        Ok(Value::Array(docs)) => docs,
        other => panic!("{}: not a list of documents: {other:?}", path.display()),
    }
}

/// The one document of a YAML file, as JSON.
pub fn document(path: &Path) -> Value {
    let docs = documents(path);
    match <[Value; 1]>::try_from(docs) {
        Ok([doc]) => doc,
        Err(docs) => panic!("{}: {} documents, expected one", path.display(), docs.len()),
    }
}
