//! Finds PostgreSQL client binaries (`pg_dump`, `pg_dumpall`, `pg_restore`, `psql`) of a suitable major version.
//! Picks the lowest major that is ≥ the server's, so archives stay readable by the same-version `pg_restore`.

use super::process::capture_small;
use super::SourceError;
use std::path::{Path, PathBuf};
use tokio::process::Command;

/// A directory of PostgreSQL client tools of one major version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgTools {
    /// Directory holding the binaries.
    pub bin_dir: PathBuf,
    /// Major version, e.g. 15.
    pub major: u32,
    /// `pg_dump --version` output, e.g. `pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)`.
    pub version: String,
}

impl PgTools {
    /// Path of one tool.
    pub fn tool(&self, name: &str) -> PathBuf {
        self.bin_dir.join(name)
    }
}

/// Parses the major version out of `pg_dump (PostgreSQL) 15.18 ...` or `... 9.6.24`.
fn parse_major(version: &str) -> Option<u32> {
    let number = version
        .split_whitespace()
        .find(|w| w.chars().next().is_some_and(|c| c.is_ascii_digit()))?;
    let mut parts = number.split('.');
    let first: u32 = parts
        .next()?
        .trim_end_matches(|c: char| !c.is_ascii_digit())
        .parse()
        .ok()?;
    Some(first)
}

async fn probe(dir: &Path) -> Option<PgTools> {
    let pg_dump = dir.join("pg_dump");
    if !pg_dump.is_file() {
        return None;
    }
    let mut cmd = Command::new(&pg_dump);
    cmd.arg("--version");
    let (ok, out) = capture_small(cmd, 4096).await.ok()?;
    let version = out.trim().to_owned();
    let major = parse_major(&version)?;
    ok.then(|| PgTools {
        bin_dir: dir.to_path_buf(),
        major,
        version,
    })
}

fn candidate_dirs(search_dirs: &[PathBuf]) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = search_dirs.to_vec();
    for pattern_root in ["/usr/lib/postgresql", "/usr/local/pgsql"] {
        if let Ok(entries) = std::fs::read_dir(pattern_root) {
            for e in entries.flatten() {
                dirs.push(e.path().join("bin"));
            }
        }
    }
    if let Ok(entries) = std::fs::read_dir("/usr") {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with("pgsql-") {
                dirs.push(e.path().join("bin"));
            }
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    dirs
}

/// Finds client tools whose major version is ≥ `server_major`.
///
/// With `configured` (a job's `pg_bin_dir`), only that directory is considered.
pub async fn find_pg_tools(
    server_major: u32,
    configured: Option<&Path>,
    search_dirs: &[PathBuf],
) -> Result<PgTools, SourceError> {
    if let Some(dir) = configured {
        return match probe(dir).await {
            Some(t) if t.major >= server_major => Ok(t),
            Some(t) => Err(SourceError::Tools(format!(
                "pg_bin_dir {} holds PostgreSQL {} client tools, older than the server (major {server_major}); point pg_bin_dir at PostgreSQL {server_major} or newer client tools (Debian: apt-get install postgresql-client-{server_major})",
                dir.display(),
                t.major
            ))),
            None => Err(SourceError::Tools(format!(
                "pg_bin_dir {} has no working pg_dump; fix the path or remove pg_bin_dir to search the usual places",
                dir.display()
            ))),
        };
    }
    let mut found = Vec::new();
    for dir in candidate_dirs(search_dirs) {
        if let Some(t) = probe(&dir).await {
            found.push(t);
        }
    }
    let best = found
        .iter()
        .filter(|t| t.major >= server_major)
        .min_by_key(|t| t.major)
        .cloned();
    best.ok_or_else(|| {
        let seen: Vec<String> = found
            .iter()
            .map(|t| format!("{} ({})", t.bin_dir.display(), t.major))
            .collect();
        SourceError::Tools(format!(
            "no pg_dump of PostgreSQL {server_major} or newer found (looked in /usr/lib/postgresql/*/bin, daemon.pg_bin_dirs and PATH; found: {}); install the client tools (Debian: apt-get install postgresql-client-{server_major}) or set pg_bin_dir on the job",
            if seen.is_empty() { "none".to_owned() } else { seen.join(", ") }
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_major_versions() {
        assert_eq!(
            parse_major("pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)"),
            Some(15)
        );
        assert_eq!(parse_major("pg_dump (PostgreSQL) 9.6.24"), Some(9));
        assert_eq!(parse_major("pg_dump (PostgreSQL) 17devel"), Some(17));
        assert_eq!(parse_major("garbage"), None);
    }

    #[tokio::test]
    async fn refuses_tools_older_than_the_server() {
        let err = find_pg_tools(99, None, &[]).await.unwrap_err().to_string();
        assert!(err.contains("PostgreSQL 99 or newer"), "{err}");
    }
}
