//! PostgreSQL connection parameters: the job's URL plus libpq's environment defaults, minus any password.
//! Produces a tokio-postgres config for our own queries and a libpq conninfo string for child processes.

use crate::secret::Secret;
use std::path::PathBuf;
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
    /// Password, from password_file/password_env or PGPASSWORD.
    pub password: Option<Secret>,
}

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
                None => ("/var/run/postgresql".to_owned(), true),
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
        if let Some(pw) = &self.password {
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

    /// Environment for child processes (`PGPASSWORD` if a password is known).
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
}
