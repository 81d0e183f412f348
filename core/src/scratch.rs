//! A throw-away PostgreSQL cluster for restore drills: `initdb` in a fresh temp dir, a server that listens on a
//! unix socket in that dir only (no TCP), fast and unsafe settings, stopped and removed when done or dropped.

use crate::source::{capture_small, ConnParams};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;

/// Database superuser `initdb` creates (trust authentication, no password).
const SUPERUSER: &str = "postgres";

/// OS user that runs the cluster when this process runs as root, unless [`ScratchOptions::run_as`] says otherwise.
const DEFAULT_RUN_AS: &str = "postgres";

/// Server settings passed to `postgres` (`-c name=value` each) besides the socket and port: fast and unsafe,
/// fine for a cluster that is thrown away. `max_locks_per_transaction` is raised so that a single-transaction
/// restore of a database with thousands of tables or partitions does not run out of lock slots.
const SERVER_SETTINGS: &[&str] = &[
    "listen_addresses=''",
    "fsync=off",
    "full_page_writes=off",
    "synchronous_commit=off",
    "wal_level=minimal",
    "max_wal_senders=0",
    "jit=off",
    "shared_buffers=128MB",
    "logging_collector=off",
    "max_connections=50",
    "max_locks_per_transaction=512",
];

/// libpq and server environment variables that must not leak from the caller's environment into our children.
const PG_ENV: &[&str] = &[
    "PGDATA",
    "PGHOST",
    "PGHOSTADDR",
    "PGPORT",
    "PGUSER",
    "PGDATABASE",
    "PGPASSWORD",
    "PGPASSFILE",
    "PGSERVICE",
    "PGSERVICEFILE",
    "PGOPTIONS",
    "PGSSLMODE",
    "PGCTLTIMEOUT",
];

/// Longest unix-socket path the kernel accepts (`sun_path` is 108 bytes with the terminating NUL).
const MAX_SOCKET_PATH: usize = 107;

/// How long `initdb` may take.
const INITDB_TIMEOUT: Duration = Duration::from_secs(300);
/// `pg_ctl start -t` (seconds), and how long we wait for `pg_ctl` itself (a bit longer).
const START_WAIT_SECS: u64 = 60;
/// `pg_ctl stop -t` (seconds) for each of the fast and the immediate shutdown.
const STOP_WAIT_SECS: u64 = 30;
/// Most captured output kept per stream of a child (the tail is kept).
const OUTPUT_KEEP: usize = 32 * 1024;
/// Lines of the server log or a tool's output quoted in errors.
const TAIL_LINES: usize = 20;

/// How to set up a [`ScratchCluster`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScratchOptions {
    /// Directory holding `initdb`, `pg_ctl`, `postgres` (a server install, e.g. `/usr/lib/postgresql/17/bin`).
    /// `None`: pick the lowest installed server major ≥ `min_major` (see [`find_pg_server`]).
    pub bin_dir: Option<PathBuf>,
    /// Lowest acceptable server major version (the dump's `pg_dump` major; 0 = any).
    pub min_major: u32,
    /// OS user that owns and runs the cluster when this process runs as root (`initdb` refuses root). Default
    /// `postgres`. Ignored when not root (the cluster then runs as the current user).
    pub run_as: Option<String>,
    /// Parent directory for the cluster's temp dir (default: [`std::env::temp_dir`]). When running as root,
    /// every directory above it must be searchable by `run_as`.
    pub parent_dir: Option<PathBuf>,
}

/// A PostgreSQL server install (the programs a scratch cluster needs) of one major version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgServer {
    /// Directory holding `initdb`, `pg_ctl` and `postgres`.
    pub bin_dir: PathBuf,
    /// Major version, e.g. 15.
    pub major: u32,
    /// `postgres --version` output, e.g. `postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)`.
    pub version: String,
}

/// Why a scratch cluster could not be found, created, started or removed. Each message says what failed and
/// how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum ScratchError {
    /// No usable PostgreSQL server install (missing programs, too old, or not runnable).
    #[error("{0}")]
    Server(String),
    /// The OS user meant to run the cluster (as root) is missing or unusable.
    #[error("{0}")]
    RunAs(String),
    /// The cluster's directory could not be created or prepared.
    #[error("cannot prepare the scratch cluster directory {path}: {reason}")]
    Directory {
        /// The directory (or its intended parent).
        path: PathBuf,
        /// What went wrong, and the fix.
        reason: String,
    },
    /// A program could not be run at all.
    #[error("cannot run {program}: {reason}")]
    Spawn {
        /// Program path.
        program: String,
        /// OS error, and the fix.
        reason: String,
    },
    /// A program did not finish in time (it was killed).
    #[error("{program} did not finish within {seconds} s and was killed")]
    Timeout {
        /// Program path.
        program: String,
        /// The limit.
        seconds: u64,
    },
    /// `initdb` failed.
    #[error("initdb of the scratch cluster failed ({status}): {output}; check free space and permissions in {dir}, or set [drill] pg_bin_dir to a working PostgreSQL server install")]
    Initdb {
        /// Exit status.
        status: String,
        /// The tail of initdb's output.
        output: String,
        /// The cluster's directory.
        dir: PathBuf,
    },
    /// `pg_ctl start` failed or the server did not become ready.
    #[error("the scratch PostgreSQL server did not start (pg_ctl start: {status}: {output}); the server log's last lines (the cluster is removed):\n{log_tail}")]
    Start {
        /// Exit status of pg_ctl.
        status: String,
        /// pg_ctl's output.
        output: String,
        /// The tail of the server log.
        log_tail: String,
    },
    /// The server did not stop, even with an immediate shutdown.
    #[error("the scratch PostgreSQL server (data directory {data_dir}) did not stop: {output}; server log, last lines:\n{log_tail}")]
    Stop {
        /// The data directory.
        data_dir: PathBuf,
        /// pg_ctl's output.
        output: String,
        /// The tail of the server log.
        log_tail: String,
    },
    /// No port number could be picked (binding 127.0.0.1:0 failed).
    #[error("cannot pick a port number for the scratch cluster's socket (binding 127.0.0.1:0 failed: {0})")]
    Port(String),
    /// The stopped cluster's directory could not be removed.
    #[error("cannot remove the scratch cluster directory {path}: {reason}; remove it by hand")]
    Cleanup {
        /// The directory.
        path: PathBuf,
        /// OS error.
        reason: String,
    },
}

/// A running throw-away PostgreSQL cluster: data directory, unix socket and server log in one temp dir.
///
/// Connect with [`ScratchCluster::conn`]. [`ScratchCluster::stop`] shuts it down and removes the directory,
/// reporting problems; dropping it does the same on a best-effort basis (immediate shutdown), also when the
/// future that was starting it is cancelled.
#[derive(Debug)]
pub struct ScratchCluster {
    /// The temp dir; `None` once removed by [`ScratchCluster::stop`].
    dir: Option<tempfile::TempDir>,
    /// Path of `dir` (kept after it is gone, for messages).
    path: PathBuf,
    server: PgServer,
    port: u16,
    /// The OS user programs run as through `runuser` (only when this process runs as root).
    owner: Option<String>,
    /// A shell that stops the server and removes the directory if this process dies without dropping the
    /// cluster (killed, Ctrl-C without a handler): it waits for EOF on its stdin, whose other end we hold.
    watchdog: Option<(std::process::Child, std::process::ChildStdin)>,
}

impl ScratchCluster {
    /// Finds the server binaries, creates the cluster (`initdb`) in a new temp dir and starts it.
    pub async fn start(opts: &ScratchOptions) -> Result<ScratchCluster, ScratchError> {
        let cluster = Self::prepare(opts).await?;
        cluster.initdb().await?;
        cluster.pg_ctl_start(&[]).await?;
        cluster.log_started();
        Ok(cluster)
    }

    /// Finds the server binaries and makes the temp dir (owned by the user that will run the server), without
    /// a cluster in it yet: fill [`ScratchCluster::data_dir`] (e.g. with a restored base backup), then call
    /// [`ScratchCluster::start_restored`]. Dropping it cleans up as for a started cluster.
    pub async fn prepare(opts: &ScratchOptions) -> Result<ScratchCluster, ScratchError> {
        let server = match &opts.bin_dir {
            Some(dir) => configured_server(dir, opts.min_major).await?,
            None => find_pg_server(opts.min_major).await?,
        };
        let owner = if effective_uid().await == Some(0) {
            let user = opts.run_as.as_deref().unwrap_or(DEFAULT_RUN_AS);
            Some(lookup_user(user).await?)
        } else {
            None
        };
        let parent = opts.parent_dir.clone().unwrap_or_else(std::env::temp_dir);
        let dir = tempfile::Builder::new()
            .prefix("lifeboat-drill-")
            .tempdir_in(&parent)
            .map_err(|e| ScratchError::Directory {
                path: parent.clone(),
                reason: format!("{e}; choose a writable parent directory (TMPDIR), e.g. /tmp"),
            })?;
        let path = dir.path().to_path_buf();
        check_path_usable(&path)?;
        // From here on, dropping the cluster stops whatever was started and removes the directory.
        let mut cluster = ScratchCluster {
            dir: Some(dir),
            path,
            server,
            port: free_port()?,
            owner: owner.as_ref().map(|o| o.name.clone()),
            watchdog: None,
        };
        if let Some(owner) = &owner {
            cluster.hand_over(owner).await?;
        }
        cluster.watchdog = cluster
            .spawn_watchdog()
            .map_err(|e| {
                tracing::warn!(error = %e, "Cannot start the scratch cluster's watchdog; if lifeboat is killed, the scratch server may be left running.");
            })
            .ok();
        Ok(cluster)
    }

    /// Starts a data directory restored into [`ScratchCluster::data_dir`] from a base backup: hands it to the
    /// server's user (mode 0700), lets in the local superuser with a throw-away `pg_hba.conf` (the backup's own
    /// may demand passwords), switches archiving off, and waits until recovery has finished.
    pub async fn start_restored(&self) -> Result<(), ScratchError> {
        let data = self.data_dir();
        if let Some(owner) = &self.owner {
            let user = lookup_user(owner).await?;
            let mut cmd = Command::new("chown");
            cmd.arg("-R")
                .arg(format!("{}:{}", user.uid, user.gid))
                .arg(&data);
            let ran = run_captured(cmd, "chown", Duration::from_secs(600)).await?;
            if !ran.status.success() {
                return Err(ScratchError::Directory {
                    path: data,
                    reason: format!(
                        "cannot give the restored files to {owner}: {}",
                        ran.describe()
                    ),
                });
            }
        }
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).map_err(
                |e| ScratchError::Directory {
                    path: data.clone(),
                    reason: format!("cannot set mode 0700: {e}"),
                },
            )?;
        }
        let hba = self.path.join("drill_hba.conf");
        std::fs::write(&hba, "local all all trust\n").map_err(|e| ScratchError::Directory {
            path: hba.clone(),
            reason: e.to_string(),
        })?;
        if let Some(owner) = &self.owner {
            let user = lookup_user(owner).await?;
            std::os::unix::fs::chown(&hba, Some(user.uid), Some(user.gid)).map_err(|e| {
                ScratchError::Directory {
                    path: hba.clone(),
                    reason: e.to_string(),
                }
            })?;
        }
        let hba_setting = format!("hba_file='{}'", hba.display());
        self.pg_ctl_start(&[&hba_setting, "archive_mode=off", "hot_standby=on"])
            .await?;
        self.log_started();
        Ok(())
    }

    fn log_started(&self) {
        tracing::info!(
            dir = %self.path.display(),
            version = %self.server.version,
            run_as = self.owner.as_deref().unwrap_or("(current user)"),
            "Started a scratch PostgreSQL cluster."
        );
    }

    /// Connection parameters for `dbname` as the cluster's superuser over its unix socket (sslmode disable, no
    /// password).
    pub fn conn(&self, dbname: &str) -> ConnParams {
        ConnParams {
            host: self.socket_dir().to_string_lossy().into_owned(),
            is_socket: true,
            port: self.port,
            user: SUPERUSER.to_owned(),
            dbname: dbname.to_owned(),
            sslmode: "disable".to_owned(),
            sslrootcert: None,
            password: None,
        }
    }

    /// The directory of the server's programs (also holds `pg_restore` and `psql` of the same major on
    /// standard installs).
    pub fn bin_dir(&self) -> &Path {
        &self.server.bin_dir
    }

    /// The server's major version.
    pub fn major(&self) -> u32 {
        self.server.major
    }

    /// The server's `postgres --version` output.
    pub fn version(&self) -> &str {
        &self.server.version
    }

    /// The directory holding the server's unix socket (`.s.PGSQL.<port>`): the cluster's temp dir.
    pub fn socket_dir(&self) -> &Path {
        &self.path
    }

    /// The port; with no TCP listener it only names the socket file.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The database superuser (trust authentication over the socket).
    pub fn superuser(&self) -> &str {
        SUPERUSER
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.path.join("data")
    }

    /// The server log file (removed with the cluster).
    pub fn log_path(&self) -> PathBuf {
        self.path.join("server.log")
    }

    /// The last `lines` lines of the server log (empty if unreadable), for error messages.
    pub fn server_log_tail(&self, lines: usize) -> String {
        let log = std::fs::read(self.log_path()).unwrap_or_default();
        tail_lines(&String::from_utf8_lossy(&log), lines)
    }

    /// Stops the server (`pg_ctl stop -m fast`, then `-m immediate` if it does not stop in 30 s) and removes the
    /// directory. On an error, dropping the cluster (which happens here) still tries an immediate shutdown and the
    /// removal.
    pub async fn stop(mut self) -> Result<(), ScratchError> {
        self.stop_watchdog();
        if self.server_may_run() {
            let fast = self.pg_ctl_stop("fast").await;
            if !matches!(fast, Ok(ref r) if r.status.success()) && self.server_may_run() {
                tracing::warn!(
                    dir = %self.path.display(),
                    "The scratch PostgreSQL server did not stop with a fast shutdown; trying an immediate one."
                );
                let immediate = self.pg_ctl_stop("immediate").await?;
                if !immediate.status.success() && self.server_may_run() {
                    return Err(ScratchError::Stop {
                        data_dir: self.data_dir(),
                        output: immediate.describe(),
                        log_tail: self.server_log_tail(TAIL_LINES),
                    });
                }
            }
        }
        if let Some(dir) = self.dir.take() {
            dir.close().map_err(|e| ScratchError::Cleanup {
                path: self.path.clone(),
                reason: e.to_string(),
            })?;
        }
        tracing::info!(dir = %self.path.display(), "Stopped and removed the scratch PostgreSQL cluster.");
        Ok(())
    }

    /// Whether a server may be running on the data dir (its `postmaster.pid` exists).
    fn server_may_run(&self) -> bool {
        self.dir.is_some() && self.data_dir().join("postmaster.pid").exists()
    }

    /// Gives the temp dir to the OS user that runs the cluster, and checks that this user can reach it.
    async fn hand_over(&self, owner: &OsUser) -> Result<(), ScratchError> {
        std::os::unix::fs::chown(&self.path, Some(owner.uid), Some(owner.gid)).map_err(|e| {
            ScratchError::Directory {
                path: self.path.clone(),
                reason: format!("cannot give it to OS user {} ({e})", owner.name),
            }
        })?;
        let mut cmd = self.command(Path::new("test"));
        cmd.arg("-w").arg(&self.path);
        let reachable = run_captured(cmd, "test", Duration::from_secs(30)).await?;
        if !reachable.status.success() {
            return Err(ScratchError::Directory {
                path: self.path.clone(),
                reason: format!(
                    "OS user {} cannot write to it (test -w: {}); every directory above it must be searchable by that user: choose a parent directory (TMPDIR) that is, e.g. /tmp",
                    owner.name,
                    reachable.describe()
                ),
            });
        }
        Ok(())
    }

    async fn initdb(&self) -> Result<(), ScratchError> {
        let data = self.data_dir();
        let mut result = None;
        for locale in ["--locale=C.UTF-8", "--no-locale"] {
            let mut cmd = self.command(&self.server.bin_dir.join("initdb"));
            cmd.arg("-D")
                .arg(&data)
                .args(["--auth=trust", "--encoding=UTF8", "-N"])
                .arg(format!("--username={SUPERUSER}"))
                .arg(locale)
                // English messages (to recognise a missing locale); the cluster's locale comes from the flag.
                .env("LC_ALL", "C");
            let ran = run_captured(cmd, "initdb", INITDB_TIMEOUT).await?;
            if ran.status.success() {
                if locale == "--no-locale" {
                    tracing::info!(
                        "Locale C.UTF-8 is not available; the scratch cluster uses the C locale."
                    );
                }
                return Ok(());
            }
            let locale_problem = ran.stderr.to_ascii_lowercase().contains("locale");
            result = Some(ran);
            if !locale_problem {
                break;
            }
            // initdb removes what it created on failure; make sure before trying again.
            if data.exists() {
                std::fs::remove_dir_all(&data).ok();
            }
        }
        let ran = result.map(|r| (describe_status(r.status), r.describe()));
        let (status, output) = ran.unwrap_or_else(|| ("not run".to_owned(), String::new()));
        Err(ScratchError::Initdb {
            status,
            output,
            dir: self.path.clone(),
        })
    }

    async fn pg_ctl_start(&self, extra: &[&str]) -> Result<(), ScratchError> {
        let socket_dir = self.socket_dir().to_string_lossy().into_owned();
        // pg_ctl hands `-o` to a shell: values are single-quoted (the path was checked to hold no quote).
        let mut opts = format!(
            "-c port={} -c unix_socket_directories='{socket_dir}'",
            self.port
        );
        for setting in SERVER_SETTINGS.iter().chain(extra) {
            opts.push_str(" -c ");
            opts.push_str(setting);
        }
        let mut cmd = self.command(&self.server.bin_dir.join("pg_ctl"));
        cmd.args(["start", "-w", "-t", &START_WAIT_SECS.to_string(), "-D"])
            .arg(self.data_dir())
            .arg("-l")
            .arg(self.log_path())
            .arg("-o")
            .arg(opts);
        let ran = run_captured(cmd, "pg_ctl", Duration::from_secs(START_WAIT_SECS + 30)).await;
        match ran {
            Ok(r) if r.status.success() => Ok(()),
            Ok(r) => Err(ScratchError::Start {
                status: describe_status(r.status),
                output: r.describe(),
                log_tail: self.server_log_tail(TAIL_LINES),
            }),
            Err(e) => Err(ScratchError::Start {
                status: "not finished".to_owned(),
                output: e.to_string(),
                log_tail: self.server_log_tail(TAIL_LINES),
            }),
        }
    }

    async fn pg_ctl_stop(&self, mode: &str) -> Result<Captured, ScratchError> {
        let mut cmd = self.command(&self.server.bin_dir.join("pg_ctl"));
        cmd.args([
            "stop",
            "-w",
            "-t",
            &STOP_WAIT_SECS.to_string(),
            "-m",
            mode,
            "-D",
        ])
        .arg(self.data_dir());
        run_captured(cmd, "pg_ctl", Duration::from_secs(STOP_WAIT_SECS + 15)).await
    }

    /// A command for `program`, run as the cluster's owner (through `runuser` when root), in the cluster dir,
    /// without the caller's PG* variables.
    fn command(&self, program: &Path) -> Command {
        Command::from(self.std_command(program))
    }

    /// The blocking counterpart of [`Self::command`], for `Drop`.
    fn std_command(&self, program: &Path) -> std::process::Command {
        let mut cmd = match &self.owner {
            Some(user) => {
                let mut c = std::process::Command::new(runuser_path());
                c.args(["-u", user, "--"]).arg(program);
                c
            }
            None => std::process::Command::new(program),
        };
        for var in PG_ENV {
            cmd.env_remove(var);
        }
        cmd.current_dir(&self.path);
        cmd
    }

    /// Starts the watchdog shell (see the `watchdog` field). It ignores SIGINT, SIGTERM and SIGHUP so that a
    /// Ctrl-C that kills this process still finds it alive to clean up.
    fn spawn_watchdog(&self) -> std::io::Result<(std::process::Child, std::process::ChildStdin)> {
        const SCRIPT: &str = "trap '' INT TERM HUP; read _eof; \
            if [ -n \"$4\" ]; then \"$5\" -u \"$4\" -- \"$1\" stop -w -t 30 -m immediate -D \"$2\"; \
            else \"$1\" stop -w -t 30 -m immediate -D \"$2\"; fi >/dev/null 2>&1; rm -rf \"$3\"";
        let mut cmd = std::process::Command::new("/bin/sh");
        cmd.args(["-c", SCRIPT, "lifeboat-scratch-watchdog"])
            .arg(self.server.bin_dir.join("pg_ctl"))
            .arg(self.data_dir())
            .arg(&self.path)
            .arg(self.owner.as_deref().unwrap_or(""))
            .arg(runuser_path())
            .current_dir("/")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for var in PG_ENV {
            cmd.env_remove(var);
        }
        let mut child = cmd.spawn()?;
        match child.stdin.take() {
            Some(stdin) => Ok((child, stdin)),
            None => {
                child.kill().ok();
                child.wait().ok();
                Err(std::io::Error::other("the watchdog has no stdin"))
            }
        }
    }

    /// Ends the watchdog without letting it act: we clean up ourselves.
    fn stop_watchdog(&mut self) {
        if let Some((mut child, stdin)) = self.watchdog.take() {
            child.kill().ok();
            drop(stdin);
            child.wait().ok();
        }
    }

    /// Best-effort immediate shutdown without async: `pg_ctl stop -m immediate`, else SIGQUIT to the postmaster.
    fn stop_blocking(&self) {
        let mut cmd = self.std_command(&self.server.bin_dir.join("pg_ctl"));
        cmd.args([
            "stop",
            "-w",
            "-t",
            &STOP_WAIT_SECS.to_string(),
            "-m",
            "immediate",
            "-D",
        ])
        .arg(self.data_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        let stopped = cmd.status().map(|s| s.success()).unwrap_or(false);
        if stopped || !self.server_may_run() {
            return;
        }
        // pg_ctl is gone or failed: signal the postmaster named in postmaster.pid directly (SIGQUIT is
        // PostgreSQL's immediate shutdown), if that process is still ours (its command line names the data dir).
        let data = self.data_dir().to_string_lossy().into_owned();
        let pid = std::fs::read_to_string(self.data_dir().join("postmaster.pid"))
            .ok()
            .and_then(|s| s.lines().next().and_then(|l| l.trim().parse::<u32>().ok()))
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&data))
            });
        if let Some(pid) = pid {
            tracing::warn!(pid, dir = %self.path.display(), "pg_ctl could not stop the scratch PostgreSQL server; sending SIGQUIT.");
            std::process::Command::new("kill")
                .args(["-QUIT", &pid.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .ok();
        }
    }
}

impl Drop for ScratchCluster {
    fn drop(&mut self) {
        if self.dir.is_none() {
            return;
        }
        self.stop_watchdog();
        if self.server_may_run() {
            self.stop_blocking();
        }
        if let Some(dir) = self.dir.take() {
            if let Err(e) = dir.close() {
                tracing::warn!(dir = %self.path.display(), error = %e, "Cannot remove the scratch PostgreSQL cluster directory; remove it by hand.");
            }
        }
    }
}

/// An OS user that runs the cluster.
#[derive(Debug, Clone)]
struct OsUser {
    name: String,
    uid: u32,
    gid: u32,
}

/// The effective uid of this process (the owner of `/proc/self`), else `id -u`; `None` if neither works.
async fn effective_uid() -> Option<u32> {
    if let Ok(meta) = std::fs::metadata("/proc/self") {
        return Some(meta.uid());
    }
    let mut cmd = Command::new("id");
    cmd.arg("-u");
    let (ok, out) = capture_small(cmd, 64).await.ok()?;
    ok.then(|| out.trim().parse().ok()).flatten()
}

/// The uid and gid of OS user `name` (`id -u`, `id -g`, so NSS users work too).
async fn lookup_user(name: &str) -> Result<OsUser, ScratchError> {
    if name.is_empty() || name.starts_with('-') || name.contains(char::is_whitespace) {
        return Err(ScratchError::RunAs(format!(
            "{name:?} is not a valid OS user name for the scratch cluster; set [drill] run_as to an existing non-root user such as postgres"
        )));
    }
    let id = |flag: &'static str| async move {
        let mut cmd = Command::new("id");
        cmd.args([flag, "--", name]);
        match capture_small(cmd, 64).await {
            Ok((true, out)) => out.trim().parse::<u32>().ok(),
            _ => None,
        }
    };
    let (Some(uid), Some(gid)) = (id("-u").await, id("-g").await) else {
        return Err(ScratchError::RunAs(format!(
            "OS user {name:?} does not exist; the scratch cluster must run as a non-root user when lifeboat runs as root (initdb refuses root): create it (Debian: installing a postgresql server package creates postgres), set [drill] run_as to an existing user, or run lifeboat drill as a non-root user"
        )));
    };
    if uid == 0 {
        return Err(ScratchError::RunAs(format!(
            "OS user {name:?} is root (uid 0), and initdb and postgres refuse to run as root; set [drill] run_as to a non-root user such as postgres"
        )));
    }
    Ok(OsUser {
        name: name.to_owned(),
        uid,
        gid,
    })
}

/// `runuser` (util-linux), by absolute path where the usual sbin directories may be missing from `PATH`.
fn runuser_path() -> PathBuf {
    ["/usr/sbin/runuser", "/sbin/runuser", "/usr/bin/runuser"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("runuser"))
}

/// Refuses directories whose path the server cannot use: too long for a unix socket, or with characters that
/// `pg_ctl -o` (a shell) or `unix_socket_directories` (a comma-separated list) would misread.
fn check_path_usable(path: &Path) -> Result<(), ScratchError> {
    let text = path.to_string_lossy();
    let safe = |c: char| c.is_ascii_alphanumeric() || "/._-+@%=~".contains(c);
    if !text.chars().all(safe) {
        return Err(ScratchError::Directory {
            path: path.to_path_buf(),
            reason: "the path holds characters (spaces, quotes, commas, ...) the server's socket setting cannot take; choose a parent directory with a plain path, e.g. /tmp".to_owned(),
        });
    }
    // `<dir>/.s.PGSQL.<port>`, port up to 5 digits.
    let socket_len = text.len() + "/.s.PGSQL.".len() + 5;
    if socket_len > MAX_SOCKET_PATH {
        return Err(ScratchError::Directory {
            path: path.to_path_buf(),
            reason: format!(
                "the server's unix socket path would be {socket_len} bytes, more than the {MAX_SOCKET_PATH} the OS allows; choose a shorter parent directory, e.g. /tmp"
            ),
        });
    }
    Ok(())
}

/// A port number nobody was using a moment ago (bound on 127.0.0.1 and released). The server listens on no TCP
/// port; the number only names its socket file, but a distinct one keeps logs and `ps` readable.
fn free_port() -> Result<u16, ScratchError> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| ScratchError::Port(e.to_string()))
}

/// Parses the major version out of `postgres (PostgreSQL) 15.18 ...`, `... 9.6.24` or `... 17devel`.
fn parse_major(version: &str) -> Option<u32> {
    let number = version
        .split_whitespace()
        .find(|w| w.chars().next().is_some_and(|c| c.is_ascii_digit()))?;
    let digits: String = number.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// What a directory holds, server-wise.
enum Probe {
    /// A complete, runnable server install.
    Server(PgServer),
    /// Not a (complete, runnable) server install: why.
    Unusable(String),
}

const SERVER_PROGRAMS: [&str; 3] = ["initdb", "pg_ctl", "postgres"];

async fn probe_server(dir: &Path) -> Probe {
    let missing: Vec<&str> = SERVER_PROGRAMS
        .iter()
        .copied()
        .filter(|p| !dir.join(p).is_file())
        .collect();
    if !missing.is_empty() {
        return Probe::Unusable(format!("no {}", missing.join(", ")));
    }
    let mut cmd = Command::new(dir.join("postgres"));
    cmd.arg("--version");
    match capture_small(cmd, 4096).await {
        Ok((true, out)) => {
            let version = out.trim().to_owned();
            match parse_major(&version) {
                Some(major) => Probe::Server(PgServer {
                    bin_dir: install_dir(dir),
                    major,
                    version,
                }),
                None => Probe::Unusable(format!(
                    "postgres --version printed {version:?}, no version number"
                )),
            }
        }
        Ok((false, _)) => Probe::Unusable("postgres --version failed".to_owned()),
        Err(e) => Probe::Unusable(format!("cannot run postgres --version: {e}")),
    }
}

/// The directory the server programs in `dir` really live in: where `postgres` points if `dir` holds symlinks
/// (e.g. `/usr/local/bin/postgres -> /usr/lib/postgresql/15/bin/postgres`), so that the install's other tools
/// (`pg_restore`, `psql`) are found beside them; `dir` itself otherwise.
fn install_dir(dir: &Path) -> PathBuf {
    std::fs::canonicalize(dir.join("postgres"))
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .filter(|real| SERVER_PROGRAMS.iter().all(|p| real.join(p).is_file()))
        .unwrap_or_else(|| dir.to_path_buf())
}

/// Where server installs are looked for: Debian/Ubuntu `/usr/lib/postgresql/<major>/bin`, PGDG RHEL
/// `/usr/pgsql-<major>/bin`, the source-build default `/usr/local/pgsql/bin`, then `PATH` (distribution
/// packages that put the server in `/usr/bin`).
fn server_candidate_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    let mut versioned = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") {
        versioned.extend(entries.flatten().map(|e| e.path().join("bin")));
    }
    if let Ok(entries) = std::fs::read_dir("/usr") {
        versioned.extend(
            entries
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("pgsql-"))
                .map(|e| e.path().join("bin")),
        );
    }
    versioned.sort();
    dirs.extend(versioned);
    dirs.push(PathBuf::from("/usr/local/pgsql/bin"));
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path).filter(|p| p.is_absolute()));
    }
    let mut seen = std::collections::HashSet::new();
    dirs.retain(|d| seen.insert(std::fs::canonicalize(d).unwrap_or_else(|_| d.clone())));
    dirs
}

/// Finds the PostgreSQL server install (`initdb`, `pg_ctl`, `postgres`) with the lowest major version ≥
/// `min_major` (0 = any) under `/usr/lib/postgresql/*/bin`, `/usr/pgsql-*/bin`, `/usr/local/pgsql/bin` and
/// `PATH`. The major comes from `postgres --version`.
pub async fn find_pg_server(min_major: u32) -> Result<PgServer, ScratchError> {
    let mut servers = Vec::new();
    let mut incomplete = Vec::new();
    for dir in server_candidate_dirs() {
        match probe_server(&dir).await {
            Probe::Server(s) if servers.iter().any(|f: &PgServer| f.bin_dir == s.bin_dir) => {}
            Probe::Server(s) => servers.push(s),
            // Only versioned install dirs are worth a mention: PATH dirs without a server are the norm.
            Probe::Unusable(why) if is_versioned_install(&dir) => {
                incomplete.push(format!("{} ({why})", dir.display()));
            }
            Probe::Unusable(_) => {}
        }
    }
    let best = servers
        .iter()
        .filter(|s| s.major >= min_major)
        .min_by_key(|s| s.major)
        .cloned();
    best.ok_or_else(|| {
        let mut found: Vec<String> = servers
            .iter()
            .map(|s| format!("PostgreSQL {} at {}", s.major, s.bin_dir.display()))
            .collect();
        found.extend(incomplete);
        let wanted = if min_major == 0 {
            "no PostgreSQL server install".to_owned()
        } else {
            format!("no PostgreSQL {min_major} or newer server install")
        };
        let package = if min_major == 0 {
            "apt-get install postgresql; RHEL: dnf install postgresql-server".to_owned()
        } else {
            format!("apt-get install postgresql-{min_major}; RHEL with the PGDG repository: dnf install postgresql{min_major}-server")
        };
        ScratchError::Server(format!(
            "{wanted} (initdb, pg_ctl, postgres) found for the scratch cluster (looked in /usr/lib/postgresql/*/bin, /usr/pgsql-*/bin, /usr/local/pgsql/bin and PATH; found: {}); install one (Debian/Ubuntu: {package}) or set [drill] pg_bin_dir to its bin directory",
            if found.is_empty() { "nothing".to_owned() } else { found.join(", ") }
        ))
    })
}

fn is_versioned_install(dir: &Path) -> bool {
    let text = dir.to_string_lossy();
    text.starts_with("/usr/lib/postgresql/") || text.starts_with("/usr/pgsql-")
}

/// The server install in a configured directory, which must be complete and at least `min_major`.
async fn configured_server(dir: &Path, min_major: u32) -> Result<PgServer, ScratchError> {
    match probe_server(dir).await {
        Probe::Server(s) if s.major >= min_major => Ok(s),
        Probe::Server(s) => Err(ScratchError::Server(format!(
            "the PostgreSQL server in {} is version {}, older than the dump's pg_dump (major {min_major}), so the restore could fail; point [drill] pg_bin_dir at a PostgreSQL {min_major} or newer server install (Debian/Ubuntu: apt-get install postgresql-{min_major}) or remove it to search the usual places",
            dir.display(),
            s.major
        ))),
        Probe::Unusable(why) => Err(ScratchError::Server(format!(
            "{} is not a usable PostgreSQL server install ({why}; the scratch cluster needs initdb, pg_ctl and postgres there); set [drill] pg_bin_dir to a server's bin directory such as /usr/lib/postgresql/{}/bin (Debian/Ubuntu: install postgresql-<major>, the client package is not enough) or remove it to search the usual places",
            dir.display(),
            if min_major == 0 { 17 } else { min_major }
        ))),
    }
}

/// A finished child's status and the tails of its output.
struct Captured {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Captured {
    /// The last lines of stderr (of stdout if stderr is empty), on one line, for error messages.
    fn describe(&self) -> String {
        let text = if self.stderr.trim().is_empty() {
            &self.stdout
        } else {
            &self.stderr
        };
        let lines: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        if lines.is_empty() {
            return format!("{} with no output", describe_status(self.status));
        }
        lines[lines.len().saturating_sub(TAIL_LINES)..].join(" | ")
    }
}

/// Runs `cmd` to the end (killing it after `limit`), keeping the tail of stdout and stderr.
async fn run_captured(
    mut cmd: Command,
    program: &str,
    limit: Duration,
) -> Result<Captured, ScratchError> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let shown = format!("{:?}", cmd.as_std().get_program());
    let mut child = cmd.spawn().map_err(|e| ScratchError::Spawn {
        program: shown.clone(),
        reason: if e.kind() == std::io::ErrorKind::NotFound {
            format!("{e}; is {program} installed?")
        } else {
            e.to_string()
        },
    })?;
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let finished = tokio::time::timeout(limit, async {
        tokio::join!(read_tail(stdout), read_tail(stderr), child.wait())
    })
    .await;
    match finished {
        Ok((stdout, stderr, Ok(status))) => Ok(Captured {
            status,
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
        }),
        Ok((_, _, Err(e))) => Err(ScratchError::Spawn {
            program: shown,
            reason: format!("cannot wait for it: {e}"),
        }),
        // `child` is dropped on return, which kills it.
        Err(_) => Err(ScratchError::Timeout {
            program: shown,
            seconds: limit.as_secs(),
        }),
    }
}

/// Reads `reader` to the end, keeping the last [`OUTPUT_KEEP`] bytes or so.
async fn read_tail<R: AsyncRead + Unpin>(reader: Option<R>) -> Vec<u8> {
    let Some(mut reader) = reader else {
        return Vec::new();
    };
    let mut kept = Vec::new();
    let mut chunk = vec![0u8; 8192];
    loop {
        match reader.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                kept.extend_from_slice(&chunk[..n]);
                if kept.len() > 2 * OUTPUT_KEEP {
                    kept.drain(..kept.len() - OUTPUT_KEEP);
                }
            }
        }
    }
    kept
}

fn describe_status(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => "unknown status".to_owned(),
    }
}

fn tail_lines(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// PIDs of live processes whose command line mentions `needle` (zombies have an empty command line).
    fn processes_mentioning(needle: &str) -> Vec<u32> {
        let mut pids = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
                if String::from_utf8_lossy(&cmdline).contains(needle) {
                    pids.push(pid);
                }
            }
        }
        pids
    }

    fn postmaster_pid(cluster: &ScratchCluster) -> u32 {
        let pid_file = std::fs::read_to_string(cluster.data_dir().join("postmaster.pid")).unwrap();
        pid_file.lines().next().unwrap().trim().parse().unwrap()
    }

    fn uid_of(pid: u32) -> u32 {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
        line.split_whitespace().nth(2).unwrap().parse().unwrap()
    }

    #[test]
    fn parses_major_versions() {
        assert_eq!(
            parse_major("postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)"),
            Some(15)
        );
        assert_eq!(parse_major("postgres (PostgreSQL) 9.6.24"), Some(9));
        assert_eq!(parse_major("postgres (PostgreSQL) 17devel"), Some(17));
        assert_eq!(parse_major("postgres (PostgreSQL) 18beta1"), Some(18));
        assert_eq!(parse_major("garbage"), None);
    }

    #[test]
    fn unusable_paths_are_refused() {
        let long = PathBuf::from(format!("/tmp/{}", "x".repeat(100)));
        let err = check_path_usable(&long).unwrap_err().to_string();
        assert!(err.contains("shorter parent directory"), "{err}");
        let err = check_path_usable(Path::new("/tmp/a b"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("plain path"), "{err}");
        check_path_usable(Path::new("/tmp/lifeboat-drill-AbC123")).unwrap();
    }

    #[tokio::test]
    async fn starts_answers_on_the_socket_only_and_stops() {
        let cluster = ScratchCluster::start(&ScratchOptions::default())
            .await
            .unwrap();
        assert!(cluster.major() >= 15, "{}", cluster.version());
        assert!(cluster.bin_dir().join("initdb").is_file());
        let dir = cluster.socket_dir().to_path_buf();
        assert!(dir.join(format!(".s.PGSQL.{}", cluster.port())).exists());

        let client = cluster.conn("postgres").connect().await.unwrap();
        let one: i32 = client.query_one("select 1", &[]).await.unwrap().get(0);
        assert_eq!(one, 1);
        let show = |name: &'static str| {
            let client = &client;
            async move {
                let row = client
                    .query_one(&format!("show {name}"), &[])
                    .await
                    .unwrap();
                row.get::<_, String>(0)
            }
        };
        assert_eq!(show("listen_addresses").await, "");
        assert_eq!(show("fsync").await, "off");
        assert_eq!(show("wal_level").await, "minimal");
        assert_eq!(show("server_encoding").await, "UTF8");
        let user: String = client
            .query_one("select current_user::text", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(user, cluster.superuser());
        // Running as root (as the tests here do), the server runs as the postgres OS user.
        if effective_uid().await == Some(0) {
            let postgres = lookup_user("postgres").await.unwrap();
            assert_eq!(uid_of(postmaster_pid(&cluster)), postgres.uid);
        }
        drop(client);

        let data = cluster.data_dir().to_string_lossy().into_owned();
        cluster.stop().await.unwrap();
        assert!(!dir.exists(), "{} is still there", dir.display());
        assert!(processes_mentioning(&data).is_empty());
    }

    #[tokio::test]
    async fn dropping_stops_the_server_and_removes_the_dir() {
        let cluster = ScratchCluster::start(&ScratchOptions {
            min_major: 15,
            parent_dir: Some(PathBuf::from("/tmp")),
            ..ScratchOptions::default()
        })
        .await
        .unwrap();
        let client = cluster.conn("postgres").connect().await.unwrap();
        client
            .batch_execute("create table t as select generate_series(1, 1000) as n")
            .await
            .unwrap();
        let dir = cluster.socket_dir().to_path_buf();
        let data = cluster.data_dir().to_string_lossy().into_owned();
        let pid = postmaster_pid(&cluster);
        assert!(processes_mentioning(&data).contains(&pid));
        drop(cluster);
        assert!(!dir.exists(), "{} is still there", dir.display());
        assert!(
            processes_mentioning(&data).is_empty(),
            "server processes left: {:?}",
            processes_mentioning(&data)
        );
        assert!(client.simple_query("select 1").await.is_err());
    }

    #[tokio::test]
    async fn the_watchdog_cleans_up_when_the_process_dies() {
        let mut cluster = ScratchCluster::start(&ScratchOptions::default())
            .await
            .unwrap();
        let dir = cluster.socket_dir().to_path_buf();
        let data = cluster.data_dir().to_string_lossy().into_owned();
        assert!(!processes_mentioning(&data).is_empty());
        // What the kernel does when this process dies: our end of the watchdog's stdin closes.
        let (mut watchdog, stdin) = cluster.watchdog.take().unwrap();
        drop(stdin);
        assert!(watchdog.wait().unwrap().success());
        assert!(!dir.exists(), "{} is still there", dir.display());
        assert!(processes_mentioning(&data).is_empty());
        // Nothing left for the handle to do.
        if let Some(d) = cluster.dir.take() {
            let _kept = d.keep();
        }
        drop(cluster);
    }

    #[tokio::test]
    async fn a_bad_bin_dir_is_a_clear_error() {
        let err = ScratchCluster::start(&ScratchOptions {
            bin_dir: Some(PathBuf::from("/nonexistent/postgresql/bin")),
            ..ScratchOptions::default()
        })
        .await
        .unwrap_err()
        .to_string();
        assert!(err.contains("/nonexistent/postgresql/bin"), "{err}");
        assert!(err.contains("no initdb, pg_ctl, postgres"), "{err}");
        assert!(err.contains("[drill] pg_bin_dir"), "{err}");

        // A client-only directory (here: /usr/bin has psql but no initdb) is named as such.
        let err = ScratchCluster::start(&ScratchOptions {
            bin_dir: Some(PathBuf::from("/usr/bin")),
            ..ScratchOptions::default()
        })
        .await
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("not a usable PostgreSQL server install"),
            "{err}"
        );

        // Too old a server.
        let err = ScratchCluster::start(&ScratchOptions {
            bin_dir: Some(PathBuf::from("/usr/lib/postgresql/15/bin")),
            min_major: 99,
            ..ScratchOptions::default()
        })
        .await
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("older than the dump's pg_dump (major 99)"),
            "{err}"
        );
        assert!(err.contains("postgresql-99"), "{err}");
    }

    #[tokio::test]
    async fn no_new_enough_server_lists_what_was_found() {
        let err = find_pg_server(99).await.unwrap_err().to_string();
        assert!(err.contains("PostgreSQL 99 or newer"), "{err}");
        assert!(err.contains("/usr/lib/postgresql/15/bin"), "{err}");
        assert!(err.contains("apt-get install postgresql-99"), "{err}");
        let found = find_pg_server(0).await.unwrap();
        assert!(found.major >= 15);
    }

    #[tokio::test]
    async fn a_missing_run_as_user_is_a_clear_error() {
        let err = lookup_user("lifeboat-no-such-user")
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not exist"), "{err}");
        assert!(err.contains("[drill] run_as"), "{err}");
        let err = lookup_user("root").await.unwrap_err().to_string();
        assert!(err.contains("refuse to run as root"), "{err}");
    }
}
