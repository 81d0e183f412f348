//! The independence check: a job's store must not live where the job reads from (an fs store on the filesystem of
//! the volume it backs up, or nested in it), and a store on the source's own host earns a warning.
//!
//! Runs before every backup (errors refuse it) and in `lifeboatd check`. Reads only file metadata and the config.

use crate::source::ConnParams;
use lifeboat_config::{JobConfig, SourceConfig, StoreConfig, StoreKind};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// What the check found for one job and one of its stores.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Findings {
    /// The store is not independent of the source: the backup is refused.
    pub errors: Vec<String>,
    /// Worth knowing, not refused (e.g. the store's endpoint is the database's host).
    pub warnings: Vec<String>,
}

/// Where a job reads from.
enum Origin {
    /// A directory on this host.
    Directory(PathBuf),
    /// A PostgreSQL server: its host name, or `None` for a server on this host (unix socket, loopback).
    Database(Option<String>),
}

/// Where a store writes to.
enum Destination<'a> {
    /// A directory on this host.
    Directory(&'a Path),
    /// An S3 endpoint: its host, or `None` for one on this host (loopback).
    Endpoint(Option<String>, &'a str),
    /// The provider's default endpoint (AWS): never this host nor the database's.
    Default,
}

/// Checks `job` against one of its stores.
pub fn check(job: &JobConfig, store: &StoreConfig) -> Findings {
    let mut findings = Findings::default();
    let origin = match &job.source {
        SourceConfig::Volume(v) => Origin::Directory(v.path.clone()),
        SourceConfig::Postgres(pg) | SourceConfig::PostgresPhysical(pg) => {
            match ConnParams::parse(&pg.url, None) {
                Ok(p) if p.is_socket || is_loopback(&p.host) => Origin::Database(None),
                Ok(p) => Origin::Database(Some(p.host.to_ascii_lowercase())),
                // The source reports a bad URL itself.
                Err(_) => return findings,
            }
        }
    };
    let destination = match &store.kind {
        StoreKind::Fs(fs) => Destination::Directory(&fs.path),
        StoreKind::S3(s3) => match s3.endpoint.as_deref().and_then(endpoint_host) {
            Some(h) if is_loopback(&h) => {
                Destination::Endpoint(None, s3.endpoint.as_deref().unwrap_or(""))
            }
            Some(h) => Destination::Endpoint(Some(h), s3.endpoint.as_deref().unwrap_or("")),
            None => Destination::Default,
        },
    };
    let store_name = &store.name;
    match (&origin, &destination) {
        (Origin::Directory(source), Destination::Directory(target)) => {
            if let Some(problem) = same_place(source, target) {
                findings.errors.push(format!(
                    "store {store_name} ({}) {problem} the volume {} that job {} backs up: one lost disk (or one \
                     `rm -rf`) takes the data and its backups together; put the store on another disk or host, \
                     or better, in an s3 store with Object Lock",
                    target.display(),
                    source.display(),
                    job.name
                ));
            }
        }
        (Origin::Database(None), Destination::Directory(target)) => findings.warnings.push(format!(
            "store {store_name} is a directory ({}) on the database's own host: losing that host loses both; \
             use an s3 store elsewhere for backups that must survive it",
            target.display()
        )),
        (Origin::Directory(_), Destination::Endpoint(None, endpoint))
        | (Origin::Database(None), Destination::Endpoint(None, endpoint)) => {
            findings.warnings.push(format!(
                "store {store_name}'s endpoint {endpoint} is on this host, like the data job {} reads: losing the \
                 host loses both",
                job.name
            ))
        }
        (Origin::Database(Some(db)), Destination::Endpoint(Some(host), endpoint)) if db == host => {
            findings.warnings.push(format!(
                "store {store_name}'s endpoint {endpoint} is the database's host ({db}): losing that host or its \
                 provider loses the data and its backups together"
            ))
        }
        _ => {}
    }
    findings
}

/// How `target` (a store directory) relates to `source` (a volume), when that makes it dependent.
fn same_place(source: &Path, target: &Path) -> Option<&'static str> {
    let source = std::fs::canonicalize(source).unwrap_or_else(|_| source.to_path_buf());
    let target = resolve_existing(target);
    if target.starts_with(&source) {
        return Some("is inside");
    }
    if source.starts_with(&target) {
        return Some("contains");
    }
    let source_dev = std::fs::metadata(&source).ok()?.dev();
    let target_dev = std::fs::metadata(nearest_existing(&target)?).ok()?.dev();
    (source_dev == target_dev).then_some("is on the same filesystem as")
}

/// `path` with its longest existing ancestor canonicalized (the store directory may not exist yet).
fn resolve_existing(path: &Path) -> PathBuf {
    let mut rest = Vec::new();
    let mut cur = path.to_path_buf();
    loop {
        if let Ok(real) = std::fs::canonicalize(&cur) {
            return rest
                .iter()
                .rev()
                .fold(real, |p, c: &std::ffi::OsString| p.join(c));
        }
        match (cur.file_name().map(|n| n.to_os_string()), cur.parent()) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                cur = parent.to_path_buf();
            }
            _ => return path.to_path_buf(),
        }
    }
}

fn nearest_existing(path: &Path) -> Option<&Path> {
    path.ancestors().find(|p| p.exists())
}

/// The host of an endpoint URL, lower-cased, without port or brackets.
fn endpoint_host(endpoint: &str) -> Option<String> {
    let rest = endpoint.split_once("://").map_or(endpoint, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next()?
    } else {
        authority.split(':').next()?
    };
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

fn is_loopback(host: &str) -> bool {
    let host = host.trim_matches(['[', ']']);
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path, store: &str, job: &str) -> lifeboat_config::Config {
        lifeboat_config::parse(
            &format!(
                "[encryption]\nrecipients = [\"age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p\"]\n\
                 [stores.s]\n{store}\n[jobs.j]\nschedule = \"0 3 * * *\"\nstore = \"s\"\n{job}\n"
            ),
            "test",
            dir,
        )
        .unwrap()
    }

    fn findings(dir: &Path, store: &str, job: &str) -> Findings {
        let c = config(dir, store, job);
        check(&c.jobs["j"], &c.stores["s"])
    }

    const FS: &str = "kind = \"fs\"\nlock_mode = \"compliance\"\nretention = \"1d\"\n";

    #[test]
    fn an_fs_store_on_the_volumes_filesystem_or_inside_it_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let vol = dir.path().join("vol");
        std::fs::create_dir_all(&vol).unwrap();
        let volume = format!("kind = \"volume\"\npath = {:?}", vol.display().to_string());
        let inside = findings(dir.path(), &format!("{FS}path = \"vol/store\""), &volume);
        assert!(inside.errors[0].contains("is inside"), "{inside:?}");
        let around = findings(dir.path(), &format!("{FS}path = \".\""), &volume);
        assert!(around.errors[0].contains("contains"), "{around:?}");
        let beside = findings(
            dir.path(),
            &format!("{FS}path = \"store-not-yet\""),
            &volume,
        );
        assert!(beside.errors[0].contains("same filesystem"), "{beside:?}");
        // tmpfs is another filesystem, where the machine has one.
        if let Ok(shm) = tempfile::tempdir_in("/dev/shm") {
            if std::fs::metadata(shm.path()).unwrap().dev()
                != std::fs::metadata(&vol).unwrap().dev()
            {
                let elsewhere = findings(
                    dir.path(),
                    &format!("{FS}path = {:?}", shm.path().display().to_string()),
                    &volume,
                );
                assert_eq!(elsewhere, Findings::default());
            }
        }
    }

    #[test]
    fn a_store_on_the_databases_host_is_a_warning() {
        let dir = tempfile::tempdir().unwrap();
        let s3 = |endpoint: &str| {
            format!("kind = \"s3\"\nbucket = \"b-1\"\nendpoint = \"{endpoint}\"\nlock_mode = \"compliance\"\nretention = \"1d\"")
        };
        let db = |url: &str| format!("kind = \"postgres\"\nurl = \"{url}\"\ndatabases = [\"app\"]");
        let same = findings(
            dir.path(),
            &s3("https://DB.internal:9000"),
            &db("postgres://u@db.internal/app"),
        );
        assert!(same.errors.is_empty());
        assert!(
            same.warnings[0].contains("database's host (db.internal)"),
            "{same:?}"
        );
        let other = findings(
            dir.path(),
            &s3("https://s3.example.com"),
            &db("postgres://u@db.internal/app"),
        );
        assert_eq!(other, Findings::default());
        let local = findings(
            dir.path(),
            &s3("http://127.0.0.1:9000"),
            &db("postgres://u@localhost/app"),
        );
        assert!(local.warnings[0].contains("on this host"), "{local:?}");
        let fs_local = findings(
            dir.path(),
            &format!("{FS}path = \"st\""),
            &db("postgres://u@[::1]/app"),
        );
        assert!(
            fs_local.warnings[0].contains("database's own host"),
            "{fs_local:?}"
        );
        let aws = findings(
            dir.path(),
            "kind = \"s3\"\nbucket = \"b-1\"\nlock_mode = \"compliance\"\nretention = \"1d\"",
            &db("postgres://u@localhost/app"),
        );
        assert_eq!(aws, Findings::default());
    }

    #[test]
    fn endpoint_hosts_are_parsed_without_scheme_port_or_brackets() {
        assert_eq!(
            endpoint_host("https://s3.eu-central-1.amazonaws.com").as_deref(),
            Some("s3.eu-central-1.amazonaws.com")
        );
        assert_eq!(endpoint_host("http://[::1]:9000/x").as_deref(), Some("::1"));
        assert_eq!(endpoint_host("http://Minio:9000").as_deref(), Some("minio"));
        assert!(is_loopback("[::1]") && is_loopback("127.0.0.2") && !is_loopback("db"));
    }
}
