//! PostgreSQL connection parameters: the job's URL plus libpq's environment defaults, minus any password.
//! Produces a tokio-postgres config for our own queries and a libpq conninfo string for child processes.
//! Our own connection finds its password as libpq does: the job's password, else `PGPASSWORD`, else the
//! password file (`PGPASSFILE`, else `~/.pgpass`).

use crate::secret::Secret;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use tokio_postgres::config::Host;

/// Where and as whom to connect (the password travels separately, never in a conninfo string).
#[derive(Debug, Clone)]
pub struct ConnParams {
    /// Host name, IP or unix-socket directory.
    pub host: String,
    /// Whether `host` is a socket directory.
    pub is_socket: bool,
    /// Port.
    pub port: u16,
    /// User name.
    pub user: String,
    /// Database named in the URL (or the user name).
    pub dbname: String,
    /// libpq sslmode (disable, allow, prefer, require, verify-ca, verify-full).
    pub sslmode: String,
    /// libpq sslrootcert: a PEM file of trusted roots, or `system`.
    pub sslrootcert: Option<String>,
    /// Password, from password_file/password_env or PGPASSWORD. Without one, [`ConnParams::connect`]
    /// looks in libpq's password file for the database it connects to.
    pub password: Option<Secret>,
}

/// libpq's compiled-in socket directory as Debian/Ubuntu and Red Hat package it (upstream builds use
/// `/tmp`): Lifeboat's default host, and the socket path that libpq's password file calls `localhost`.
const DEFAULT_SOCKET_DIR: &str = "/var/run/postgresql";

fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

impl ConnParams {
    /// Parses a `postgres://` URL or a `key=value` conninfo string; missing parts come from
    /// `PGHOST`, `PGPORT`, `PGUSER`, `PGDATABASE`, `PGSSLMODE` as libpq would take them.
    pub fn parse(url: &str, password: Option<Secret>) -> Result<ConnParams, String> {
        // tokio-postgres rejects verify-ca/verify-full and sslrootcert: they are handled here instead.
        let sslmode = libpq_param(url, "sslmode");
        let sslrootcert = libpq_param(url, "sslrootcert");
        let stripped = strip_params(url, &["sslmode", "sslrootcert"]);
        let cfg = tokio_postgres::Config::from_str(&stripped).map_err(|e| {
            format!("the job's url is not a valid PostgreSQL URL or conninfo string ({e}); example: postgres://backup@db.internal:5432/app")
        })?;
        if cfg.get_password().is_some() {
            return Err("the PostgreSQL URL contains a password; remove it and pass the password through a password file (password_file, PGPASSFILE) or the PGPASSWORD environment variable".to_owned());
        }
        let (host, is_socket) = match cfg.get_hosts().first() {
            Some(Host::Tcp(h)) => (h.clone(), false),
            Some(Host::Unix(p)) => (p.display().to_string(), true),
            None => match env_nonempty("PGHOST") {
                Some(h) => {
                    let sock = h.starts_with('/');
                    (h, sock)
                }
                None => (DEFAULT_SOCKET_DIR.to_owned(), true),
            },
        };
        let port = match cfg.get_ports().first() {
            Some(p) => *p,
            None => env_nonempty("PGPORT")
                .and_then(|p| p.parse().ok())
                .unwrap_or(5432),
        };
        let user = cfg
            .get_user()
            .map(str::to_owned)
            .or_else(|| env_nonempty("PGUSER"))
            .or_else(|| env_nonempty("USER"))
            .unwrap_or_else(|| "postgres".to_owned());
        let dbname = cfg
            .get_dbname()
            .map(str::to_owned)
            .or_else(|| env_nonempty("PGDATABASE"))
            .unwrap_or_else(|| user.clone());
        let sslmode = sslmode
            .or_else(|| env_nonempty("PGSSLMODE"))
            .unwrap_or_else(|| "prefer".to_owned());
        let sslrootcert = sslrootcert.or_else(|| env_nonempty("PGSSLROOTCERT"));
        let password = password.or_else(|| env_nonempty("PGPASSWORD").map(Secret::new));
        Ok(ConnParams {
            host,
            is_socket,
            port,
            user,
            dbname,
            sslmode,
            sslrootcert,
            password,
        })
    }

    /// The same server, another database.
    pub fn with_dbname(&self, dbname: &str) -> ConnParams {
        ConnParams {
            dbname: dbname.to_owned(),
            ..self.clone()
        }
    }

    /// A libpq conninfo string without the password (pass that as `PGPASSWORD` in the child's environment).
    pub fn conninfo(&self) -> String {
        let mut parts = vec![
            format!("host={}", quote(&self.host)),
            format!("port={}", self.port),
            format!("user={}", quote(&self.user)),
            format!("dbname={}", quote(&self.dbname)),
            format!("sslmode={}", quote(&self.sslmode)),
            "application_name=lifeboat".to_owned(),
        ];
        if let Some(sslrootcert) = &self.sslrootcert {
            parts.push(format!("sslrootcert={}", quote(sslrootcert)));
        }
        parts.join(" ")
    }

    /// A description for logs and errors: `user@host:port/db`, never the password.
    pub fn describe(&self) -> String {
        format!("{}@{}:{}/{}", self.user, self.host, self.port, self.dbname)
    }

    /// Connects with tokio-postgres and spawns the connection task.
    pub async fn connect(&self) -> Result<tokio_postgres::Client, String> {
        let mut cfg = tokio_postgres::Config::new();
        if self.is_socket {
            cfg.host_path(PathBuf::from(&self.host));
        } else {
            cfg.host(&self.host);
        }
        cfg.port(self.port)
            .user(&self.user)
            .dbname(&self.dbname)
            .application_name("lifeboat")
            .connect_timeout(std::time::Duration::from_secs(30));
        // Looked up here, not in `parse`: the password file may hold one password per database, and
        // `with_dbname` reuses these parameters for other databases.
        if let Some(pw) = self.password.clone().or_else(|| self.password_from_file()) {
            cfg.password(pw.expose());
        }
        // libpq never uses TLS on unix sockets.
        let tls = if self.is_socket {
            None
        } else {
            super::tls::connector(&self.sslmode, self.sslrootcert.as_deref())?
        };
        let client = match tls {
            None => {
                cfg.ssl_mode(tokio_postgres::config::SslMode::Disable);
                let (client, conn) = cfg.connect(tokio_postgres::NoTls).await.map_err(|e| {
                    format!("cannot connect to {}: {}", self.describe(), db_error(&e))
                })?;
                spawn_connection(conn);
                client
            }
            Some(tls) => {
                cfg.ssl_mode(match self.sslmode.as_str() {
                    "allow" | "prefer" => tokio_postgres::config::SslMode::Prefer,
                    _ => tokio_postgres::config::SslMode::Require,
                });
                let (client, conn) = cfg.connect(tls).await.map_err(|e| {
                    format!(
                        "cannot connect to {} with sslmode={}: {}",
                        self.describe(),
                        self.sslmode,
                        db_error(&e)
                    )
                })?;
                spawn_connection(conn);
                client
            }
        };
        Ok(client)
    }

    /// The password libpq's password file holds for this connection, as libpq looks it up when no
    /// password is given otherwise. Problems with the file are logged (never its contents) and ignored.
    fn password_from_file(&self) -> Option<Secret> {
        let path = pgpass_path()?;
        let text = read_pgpass(&path)?;
        let host = pgpass_host(&self.host, self.is_socket);
        // As in libpq, the first matching line wins and an empty password counts as none.
        let password = pgpass_lookup(&text, host, self.port, &self.dbname, &self.user)
            .filter(|pw| !pw.is_empty())?;
        tracing::debug!(
            file = %path.display(),
            connection = %self.describe(),
            "Using the password from the PostgreSQL password file."
        );
        Some(Secret::new(password))
    }

    /// Environment for child processes (`PGPASSWORD` if a password is known).
    ///
    /// Only the job's password or our own `PGPASSWORD` is passed, never one found in the password
    /// file: the children inherit `PGPASSFILE`/`HOME` and read the file themselves, for the database
    /// they actually connect to (psql, for one, connects to `postgres` with this environment). A
    /// `PGPASSWORD` taken from the file for one database would override the file's lines for others.
    pub fn child_env(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![("PGAPPNAME", "lifeboat".to_owned())];
        if let Some(pw) = &self.password {
            env.push(("PGPASSWORD", pw.expose().to_owned()));
        }
        env
    }
}

/// Renders a tokio-postgres error with the server's message when there is one.
pub fn db_error(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => {
            let mut msg = e.to_string();
            let mut src = std::error::Error::source(e);
            while let Some(s) = src {
                msg.push_str(": ");
                msg.push_str(&s.to_string());
                src = s.source();
            }
            msg
        }
    }
}

/// Drives a connection in the background; tokio-postgres queries hang unless this runs.
fn spawn_connection<F>(connection: F)
where
    F: std::future::Future<Output = Result<(), tokio_postgres::Error>> + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "PostgreSQL connection closed with an error.");
        }
    });
}

fn is_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// A parameter of a URL's query string or of a `key=value` conninfo string.
fn libpq_param(url: &str, name: &str) -> Option<String> {
    let prefix = format!("{name}=");
    if is_url(url) {
        url.split_once('?').and_then(|(_, q)| {
            q.split('&')
                .find_map(|kv| kv.strip_prefix(&prefix).map(str::to_owned))
        })
    } else {
        url.split_whitespace().find_map(|kv| {
            kv.strip_prefix(&prefix)
                .map(|v| v.trim_matches('\'').to_owned())
        })
    }
}

/// The URL or conninfo without the named parameters.
fn strip_params(url: &str, names: &[&str]) -> String {
    let keep = |kv: &&str| !names.iter().any(|n| kv.starts_with(&format!("{n}=")));
    if is_url(url) {
        match url.split_once('?') {
            Some((base, q)) => {
                let rest: Vec<&str> = q.split('&').filter(keep).collect();
                if rest.is_empty() {
                    base.to_owned()
                } else {
                    format!("{base}?{}", rest.join("&"))
                }
            }
            None => url.to_owned(),
        }
    } else {
        url.split_whitespace()
            .filter(keep)
            .collect::<Vec<_>>()
            .join(" ")
    }
}

fn quote(v: &str) -> String {
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// libpq's password file: `PGPASSFILE` if set, else `$HOME/.pgpass`.
fn pgpass_path() -> Option<PathBuf> {
    let nonempty = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    match nonempty("PGPASSFILE") {
        Some(file) => Some(PathBuf::from(file)),
        None => nonempty("HOME").map(|home| PathBuf::from(home).join(".pgpass")),
    }
}

/// The password file's text, or `None` as libpq would ignore the file: missing (silently), not a plain
/// file, readable by group or others (on Unix), or unreadable (each with a warning naming the file).
fn read_pgpass(path: &Path) -> Option<String> {
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
            ) =>
        {
            return None
        }
        Err(e) => {
            tracing::warn!(
                file = %path.display(),
                error = %e,
                "Cannot read the PostgreSQL password file; ignoring it. Check that the service user may read it."
            );
            return None;
        }
    };
    if !meta.is_file() {
        tracing::warn!(
            file = %path.display(),
            "The PostgreSQL password file is not a plain file; ignoring it (as libpq does)."
        );
        return None;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!(
                file = %path.display(),
                mode = %format!("{:04o}", mode & 0o7777),
                "The PostgreSQL password file has group or world access, so it is ignored (as libpq does); fix: chmod 0600 {}",
                path.display()
            );
            return None;
        }
    }
    match std::fs::read(path) {
        // libpq compares bytes; a line that is not UTF-8 cannot match our (UTF-8) parameters anyway.
        Ok(bytes) => Some(String::from_utf8_lossy(&bytes).into_owned()),
        Err(e) => {
            tracing::warn!(
                file = %path.display(),
                error = %e,
                "Cannot read the PostgreSQL password file; ignoring it. Check that the service user may read it."
            );
            None
        }
    }
}

/// The host name the password file is searched for: libpq calls the default socket directory
/// `localhost` and matches any other host (socket directory, name or address) as given.
fn pgpass_host(host: &str, is_socket: bool) -> &str {
    if is_socket && host == DEFAULT_SOCKET_DIR {
        "localhost"
    } else {
        host
    }
}

/// The password of the first line of a libpq password file (`host:port:database:user:password`) that
/// matches, as libpq reads it: lines starting with `#` are comments, a field of just `*` matches
/// anything, `\` escapes the next character (`\:`, `\\`), and the password ends at an unescaped `:`.
fn pgpass_lookup(text: &str, host: &str, port: u16, db: &str, user: &str) -> Option<String> {
    let port = port.to_string();
    text.split('\n')
        .map(|line| line.trim_end_matches(['\r', '\n']))
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .find_map(|line| {
            let rest = pgpass_field(line, host)?;
            let rest = pgpass_field(rest, &port)?;
            let rest = pgpass_field(rest, db)?;
            let rest = pgpass_field(rest, user)?;
            Some(pgpass_unescape(rest))
        })
}

/// Matches the leading field of `entry` against `token` and returns what follows its `:`
/// (libpq's `pwdfMatchesString`: like it, an unescaped `:` matches a `:` still due in `token`).
fn pgpass_field<'a>(entry: &'a str, token: &str) -> Option<&'a str> {
    if let Some(rest) = entry.strip_prefix("*:") {
        return Some(rest);
    }
    let mut want = token.chars().peekable();
    let mut chars = entry.char_indices();
    while let Some((i, c)) = chars.next() {
        let (c, escaped) = match c {
            '\\' => (chars.next()?.1, true),
            c => (c, false),
        };
        if c == ':' && !escaped && want.peek().is_none() {
            return Some(&entry[i + 1..]);
        }
        if want.next() != Some(c) {
            return None;
        }
    }
    None
}

/// The password field with its escapes removed, up to the first unescaped `:`.
fn pgpass_unescape(field: &str) -> String {
    let mut out = String::new();
    let mut chars = field.chars();
    while let Some(c) = chars.next() {
        match c {
            ':' => break,
            '\\' => out.push(chars.next().unwrap_or('\\')),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls_and_never_puts_the_password_in_conninfo() {
        let p = ConnParams::parse(
            "postgres://backup@db.internal:6543/app?sslmode=disable",
            Some(Secret::new("pw".into())),
        )
        .unwrap();
        assert_eq!(p.host, "db.internal");
        assert_eq!(p.port, 6543);
        assert_eq!(p.user, "backup");
        assert_eq!(p.dbname, "app");
        assert_eq!(p.sslmode, "disable");
        let ci = p.with_dbname("o'dd").conninfo();
        assert!(ci.contains("dbname='o\\'dd'"), "{ci}");
        assert!(!ci.contains("pw"));
        assert!(!format!("{p:?}").contains("\"pw\""));
    }

    #[test]
    fn urls_with_passwords_are_refused_without_echoing_them() {
        let e = ConnParams::parse("postgres://u:topsecret@h/db", None).unwrap_err();
        assert!(e.contains("contains a password"));
        assert!(!e.contains("topsecret"));
    }

    #[test]
    fn ssl_parameters_are_taken_out_of_the_url_and_kept() {
        let p = ConnParams::parse(
            "postgres://u@db.example:5432/app?sslmode=verify-full&sslrootcert=/etc/ca.pem&application_name=x",
            None,
        )
        .unwrap();
        assert_eq!(p.sslmode, "verify-full");
        assert_eq!(p.sslrootcert.as_deref(), Some("/etc/ca.pem"));
        assert!(p.conninfo().contains("sslrootcert='/etc/ca.pem'"));
        let p = ConnParams::parse("host=h dbname=d user=u sslmode=verify-ca", None).unwrap();
        assert_eq!(p.sslmode, "verify-ca");
        assert_eq!(
            strip_params("postgres://h/d?sslmode=require", &["sslmode"]),
            "postgres://h/d"
        );
    }

    #[test]
    fn socket_hosts_are_recognised() {
        let p = ConnParams::parse("host=/tmp/sock port=5999 user=postgres dbname=x", None).unwrap();
        assert!(p.is_socket);
        assert_eq!(p.port, 5999);
        assert_eq!(p.describe(), "postgres@/tmp/sock:5999/x");
    }

    fn lookup(text: &str, host: &str, port: u16, db: &str, user: &str) -> Option<String> {
        pgpass_lookup(text, host, port, db, user)
    }

    #[test]
    fn pgpass_wildcards_match_any_value_but_only_as_a_whole_field() {
        let text = "*:*:*:backup:pw1\n";
        assert_eq!(
            lookup(text, "db.internal", 5432, "app", "backup").as_deref(),
            Some("pw1")
        );
        assert_eq!(
            lookup(text, "other", 6543, "x", "backup").as_deref(),
            Some("pw1")
        );
        assert_eq!(lookup(text, "db.internal", 5432, "app", "other"), None);
        // `*x` and an escaped `\*` are literals.
        let text = "*x:5432:app:u:a\n\\*:5432:app:u:b\n";
        assert_eq!(lookup(text, "db", 5432, "app", "u"), None);
        assert_eq!(lookup(text, "*x", 5432, "app", "u").as_deref(), Some("a"));
        assert_eq!(lookup(text, "*", 5432, "app", "u").as_deref(), Some("b"));
    }

    #[test]
    fn pgpass_escapes_colons_and_backslashes() {
        let text = "db:5432:my\\:db:u\\\\ser:p\\:w\\\\d:ignored\n";
        assert_eq!(
            lookup(text, "db", 5432, "my:db", "u\\ser").as_deref(),
            Some("p:w\\d")
        );
        assert_eq!(lookup(text, "db", 5432, "my", "u\\ser"), None);
        // An unescaped colon ends the password; a trailing lone backslash is kept.
        assert_eq!(
            lookup("h:1:d:u:a:b\n", "h", 1, "d", "u").as_deref(),
            Some("a")
        );
        assert_eq!(
            lookup("h:1:d:u:ab\\", "h", 1, "d", "u").as_deref(),
            Some("ab\\")
        );
        // As in libpq, an unescaped colon also matches one the value has (IPv6 addresses).
        assert_eq!(
            lookup("::1:5432:d:u:v6\n", "::1", 5432, "d", "u").as_deref(),
            Some("v6")
        );
        assert_eq!(
            lookup("\\:\\:1:5432:d:u:v6\n", "::1", 5432, "d", "u").as_deref(),
            Some("v6")
        );
    }

    #[test]
    fn pgpass_skips_comments_blank_and_short_lines_and_handles_crlf() {
        let text =
            "# h:5432:d:u:commented\n\n#h:5432:d:u:also\nh:5432:d\nh:5432:d:u\r\nh:5432:d:u:pw\r\n";
        assert_eq!(lookup(text, "h", 5432, "d", "u").as_deref(), Some("pw"));
        assert_eq!(
            lookup("h:5432:d:u:\n", "h", 5432, "d", "u").as_deref(),
            Some("")
        );
    }

    #[test]
    fn pgpass_first_matching_line_wins() {
        let text = "h:5432:app:u:specific\n*:*:*:u:general\nh:5432:app:u:later\n";
        assert_eq!(
            lookup(text, "h", 5432, "app", "u").as_deref(),
            Some("specific")
        );
        assert_eq!(
            lookup(text, "h", 5432, "other", "u").as_deref(),
            Some("general")
        );
        assert_eq!(
            lookup(text, "h", 5433, "app", "u").as_deref(),
            Some("general")
        );
    }

    #[test]
    fn pgpass_default_socket_directory_is_localhost() {
        let text = "localhost:5432:*:u:local\n/tmp/sock:5432:*:u:tmp\n";
        let p = ConnParams::parse("host=/var/run/postgresql user=u dbname=d", None).unwrap();
        let host = pgpass_host(&p.host, p.is_socket);
        assert_eq!(host, "localhost");
        assert_eq!(lookup(text, host, 5432, "d", "u").as_deref(), Some("local"));
        // Another socket directory is matched by its path, not as localhost.
        assert_eq!(pgpass_host("/tmp/sock", true), "/tmp/sock");
        assert_eq!(
            lookup(text, "/tmp/sock", 5432, "d", "u").as_deref(),
            Some("tmp")
        );
        assert_eq!(lookup(text, "/other", 5432, "d", "u"), None);
        // A TCP host is matched as given.
        assert_eq!(pgpass_host("localhost", false), "localhost");
        assert_eq!(pgpass_host("127.0.0.1", false), "127.0.0.1");
    }

    #[test]
    fn pgpass_no_match() {
        let text = "h:5432:d:u:pw\n";
        assert_eq!(lookup(text, "h2", 5432, "d", "u"), None);
        assert_eq!(lookup(text, "h", 5433, "d", "u"), None);
        assert_eq!(lookup(text, "h", 5432, "d2", "u"), None);
        assert_eq!(lookup(text, "h", 5432, "d", "u2"), None);
        assert_eq!(lookup(text, "", 5432, "d", "u"), None);
        assert_eq!(lookup("", "h", 5432, "d", "u"), None);
        // Prefixes and extensions of a value do not match.
        assert_eq!(lookup(text, "hh", 5432, "d", "u"), None);
        assert_eq!(lookup("hh:5432:d:u:pw\n", "h", 5432, "d", "u"), None);
        assert_eq!(lookup(text, "h", 54321, "d", "u"), None);
    }

    #[cfg(unix)]
    #[test]
    fn pgpass_files_readable_by_others_are_ignored() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pgpass");
        std::fs::write(&path, "*:*:*:*:pw\n").unwrap();
        for (mode, readable) in [
            (0o600, true),
            (0o400, true),
            (0o640, false),
            (0o604, false),
            (0o620, false),
        ] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            assert_eq!(read_pgpass(&path).is_some(), readable, "mode {mode:o}");
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_pgpass(&path).as_deref(), Some("*:*:*:*:pw\n"));
        // Missing files and directories are ignored.
        assert_eq!(read_pgpass(&dir.path().join("missing")), None);
        assert_eq!(read_pgpass(&path.join("below-a-file")), None);
        assert_eq!(read_pgpass(dir.path()), None);
    }
}
