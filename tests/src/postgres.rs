//! Throwaway PostgreSQL clusters for tests: `initdb` in a short temp dir, a free loopback port,
//! the unix socket in that dir; run as the `postgres` OS user when the tests run as root.

use std::collections::HashSet;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

/// Environment variable that overrides the PostgreSQL bin directory.
pub const PG_BIN_ENV: &str = "LIFEBOAT_TEST_PG_BIN";

/// OS user that owns and runs the clusters when the tests run as root.
const PG_OS_USER: &str = "postgres";

/// Database superuser created by `initdb`.
pub const SUPERUSER: &str = "postgres";

/// How often `start` picks a new port when the server cannot bind the one it was given.
const START_ATTEMPTS: usize = 5;

/// Server settings passed on the command line: the fastest configuration for tests, with room
/// for bulk loads. `wal_level=minimal` halves `pgbench -i` time (WAL skipped for tables loaded
/// in their creating transaction) but rules out replication, archiving and `pg_basebackup`.
const SERVER_SETTINGS: &[&str] = &[
    "fsync=off",
    "full_page_writes=off",
    "synchronous_commit=off",
    "max_wal_size=4GB",
    "checkpoint_timeout=30min",
    "shared_buffers=64MB",
    "max_connections=50",
    "log_min_messages=warning",
    "wal_level=minimal",
    "max_wal_senders=0",
];

/// Libpq environment variables that must not leak from the developer's shell into the tools.
const LIBPQ_ENV: &[&str] = &[
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
    "PGCONNECT_TIMEOUT",
    "PGTARGETSESSIONATTRS",
    "PGTZ",
    "PGDATESTYLE",
    "PGCLIENTENCODING",
];

/// A running PostgreSQL cluster owned by one test (settings: see `SERVER_SETTINGS` in the
/// source: fsync off, `wal_level=minimal`, 64 MB shared buffers, 50 connections).
///
/// Dropping it stops the server (`pg_ctl stop -m immediate`) and removes its directory, also
/// while a panicking test unwinds. A watchdog shell does the same if the test process dies
/// without unwinding (killed by a timeout, `abort`).
pub struct PgCluster {
    dir: tempfile::TempDir,
    bin_dir: PathBuf,
    port: u16,
    as_postgres_user: bool,
    running: bool,
    watchdog: Option<(Child, ChildStdin)>,
    /// `wal_level=replica` with WAL senders (for `pg_basebackup`).
    replicable: bool,
}

impl std::fmt::Debug for PgCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgCluster")
            .field("dir", &self.dir.path())
            .field("port", &self.port)
            .field("running", &self.running)
            .finish()
    }
}

impl PgCluster {
    /// Creates a fresh cluster (UTF8, `C.UTF-8` locale or `C`, trust auth, superuser
    /// `postgres`) and starts it on a free port of 127.0.0.1 with its socket in its own dir.
    pub fn start() -> Result<PgCluster> {
        Self::start_with(false)
    }

    /// Like [`PgCluster::start`], with `wal_level=replica` and WAL senders, so `pg_basebackup` works.
    pub fn start_replicable() -> Result<PgCluster> {
        Self::start_with(true)
    }

    fn start_with(replicable: bool) -> Result<PgCluster> {
        let bin_dir = bin_dir()?;
        let as_postgres_user = running_as_root();
        let dir = tempfile::Builder::new()
            .prefix("lbpg-")
            .tempdir_in("/tmp")
            .context("creating the cluster directory")?;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
        if as_postgres_user {
            chown_to_postgres(dir.path())?;
        }
        let mut cluster = PgCluster {
            dir,
            bin_dir,
            port: 0,
            as_postgres_user,
            running: false,
            watchdog: None,
            replicable,
        };
        cluster.init_data_dir()?;
        cluster.watchdog = cluster.spawn_watchdog().ok();

        let mut last_err = None;
        for _ in 0..START_ATTEMPTS {
            cluster.port = free_port()?;
            match cluster.pg_ctl_start() {
                Ok(()) => {
                    cluster.running = true;
                    return Ok(cluster);
                }
                Err(e) => {
                    let log = cluster.server_log();
                    let port_taken = log.contains("could not bind")
                        || log.contains("Address already in use")
                        || log.contains("could not create any TCP/IP sockets");
                    last_err = Some(e);
                    if !port_taken {
                        break;
                    }
                    // Start again with a clean log so the next failure is readable.
                    std::fs::remove_file(cluster.log_path()).ok();
                }
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow!("cluster did not start")))
    }

    /// The PostgreSQL bin directory this cluster's server and tools come from.
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// The TCP port the server listens on (127.0.0.1 only).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory holding the server's unix socket (`.s.PGSQL.<port>`).
    pub fn socket_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The server's log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// The server log so far (empty if unreadable), for failure messages.
    pub fn server_log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// A TCP connection URL for `db`, the form Lifeboat is configured with:
    /// `postgres://postgres@127.0.0.1:PORT/db`.
    pub fn url(&self, db: &str) -> String {
        format!(
            "postgres://{SUPERUSER}@127.0.0.1:{}/{}",
            self.port,
            percent_encode(db)
        )
    }

    /// A unix-socket connection URL for `db` (host given as a percent-encoded path, understood
    /// by libpq and tokio-postgres): `postgres://postgres@%2Ftmp%2Flbpg-x:PORT/db`.
    pub fn socket_url(&self, db: &str) -> String {
        format!(
            "postgres://{SUPERUSER}@{}:{}/{}",
            percent_encode(&self.socket_dir().to_string_lossy()),
            self.port,
            percent_encode(db)
        )
    }

    /// A tokio-postgres configuration for `db` over the unix socket, as superuser.
    pub fn config(&self, db: &str) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        config
            .host_path(self.socket_dir())
            .port(self.port)
            .user(SUPERUSER)
            .dbname(db)
            .application_name("lifeboat-tests");
        config
    }

    /// Connects to `db` as superuser over the unix socket; the connection task is spawned on
    /// the current tokio runtime.
    pub async fn connect(&self, db: &str) -> Result<tokio_postgres::Client> {
        let (client, connection) = self
            .config(db)
            .connect(tokio_postgres::NoTls)
            .await
            .with_context(|| format!("connecting to database {db:?} on port {}", self.port))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                eprintln!("lifeboat-tests: postgres connection error: {e}");
            }
        });
        Ok(client)
    }

    /// A `Command` for a tool of the bin dir (`pg_dump`, `psql`, `pgbench`, ...), run as the
    /// current user, with `PGHOST`/`PGPORT`/`PGUSER` pointing at this cluster's socket and
    /// other libpq variables of the caller's environment removed.
    pub fn tool(&self, name: &str) -> Command {
        let mut cmd = Command::new(self.bin_dir.join(name));
        for var in LIBPQ_ENV {
            cmd.env_remove(var);
        }
        cmd.env("PGHOST", self.socket_dir())
            .env("PGPORT", self.port.to_string())
            .env("PGUSER", SUPERUSER)
            .env("PGAPPNAME", "lifeboat-tests")
            .current_dir(self.dir.path());
        cmd
    }

    /// Runs `sql` (any number of statements) in `db` with `psql -X -v ON_ERROR_STOP=1 -At` and
    /// returns its stdout without the trailing newline; a failure includes psql's stderr.
    pub fn psql(&self, db: &str, sql: &str) -> Result<String> {
        let mut cmd = self.tool("psql");
        cmd.args([
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-At",
            "-d",
            db,
            "-f",
            "-",
        ]);
        let out = run_with_input(cmd, sql.as_bytes()).context("running psql")?;
        if !out.status.success() {
            bail!(
                "psql in database {db:?} failed ({}): {}\nSQL (start): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim_end(),
                sql.chars().take(400).collect::<String>()
            );
        }
        let mut stdout = String::from_utf8(out.stdout).context("psql output is not UTF-8")?;
        while stdout.ends_with('\n') {
            stdout.pop();
        }
        Ok(stdout)
    }

    /// Creates database `name` (UTF8, cluster locale) from `template0`.
    pub fn create_database(&self, name: &str) -> Result<()> {
        self.psql(
            "postgres",
            &format!("CREATE DATABASE {} TEMPLATE template0", quote_ident(name)),
        )
        .map(drop)
    }

    /// Whether database `name` exists.
    pub fn database_exists(&self, name: &str) -> Result<bool> {
        let out = self.psql(
            "postgres",
            &format!(
                "SELECT count(*) FROM pg_database WHERE datname = {}",
                quote_literal(name)
            ),
        )?;
        Ok(out == "1")
    }

    /// Creates database `name` unless it exists.
    pub fn ensure_database(&self, name: &str) -> Result<()> {
        if !self.database_exists(name)? {
            self.create_database(name)?;
        }
        Ok(())
    }

    /// Stops the server (`pg_ctl stop -m fast`), keeping the data; see [`Self::start_again`].
    pub fn stop(&mut self) -> Result<()> {
        if self.running {
            let data = self.data_dir();
            let out = self.pg_ctl(&["stop", "-w", "-t", "60", "-m", "fast", "-D"], &data)?;
            check(&out, "pg_ctl stop")?;
            self.running = false;
        }
        Ok(())
    }

    /// Starts a stopped server again on the same port and socket.
    pub fn start_again(&mut self) -> Result<()> {
        if !self.running {
            self.pg_ctl_start()?;
            self.running = true;
        }
        Ok(())
    }

    /// Whether the server is running (as far as this handle knows).
    pub fn is_running(&self) -> bool {
        self.running
    }

    fn init_data_dir(&self) -> Result<()> {
        let data = self.data_dir();
        if let Ok(template) = template_data_dir(&self.bin_dir, self.as_postgres_user) {
            let out = self.as_owner("cp", &["-a"], &[&template, &data])?;
            if out.status.success() {
                return Ok(());
            }
            std::fs::remove_dir_all(&data).ok();
        }
        initdb(&self.bin_dir, &data, self.as_postgres_user, self.dir.path())
    }

    fn pg_ctl_start(&self) -> Result<()> {
        let mut opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            self.port,
            self.socket_dir().display()
        );
        for setting in SERVER_SETTINGS {
            opts.push_str(" -c ");
            opts.push_str(setting);
        }
        if self.replicable {
            opts.push_str(" -c wal_level=replica -c max_wal_senders=4");
        }
        let data = self.data_dir();
        let log = self.log_path();
        let pg_ctl = self.bin_dir.join("pg_ctl");
        let mut cmd = self.owner_command(&pg_ctl);
        cmd.args(["start", "-w", "-t", "60", "-D"])
            .arg(&data)
            .arg("-l")
            .arg(&log)
            .arg("-o")
            .arg(&opts);
        let out = run(&mut cmd)?;
        if !out.status.success() {
            let log = self.server_log();
            bail!(
                "pg_ctl start failed ({}) on port {}: {}{}\nserver log:\n{}",
                out.status,
                self.port,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                tail(&log, 30)
            );
        }
        Ok(())
    }

    fn pg_ctl(&self, args: &[&str], data: &Path) -> Result<Output> {
        let mut cmd = self.owner_command(&self.bin_dir.join("pg_ctl"));
        cmd.args(args).arg(data);
        run(&mut cmd)
    }

    /// A command run as the OS user owning the cluster, with the cluster dir as cwd.
    fn owner_command(&self, program: &Path) -> Command {
        owner_command(program, self.as_postgres_user, self.dir.path())
    }

    fn as_owner(&self, program: &str, args: &[&str], paths: &[&Path]) -> Result<Output> {
        let mut cmd = self.owner_command(Path::new(program));
        cmd.args(args).args(paths);
        run(&mut cmd)
    }

    /// A shell that waits for EOF on its stdin (our end closes when this process dies or the
    /// cluster is dropped) and then stops the server and removes the directory.
    fn spawn_watchdog(&self) -> Result<(Child, ChildStdin)> {
        let runuser = if self.as_postgres_user {
            format!("runuser -u {PG_OS_USER} -- ")
        } else {
            String::new()
        };
        let script = format!(
            "trap '' INT TERM HUP; read _unused; \
             {runuser}\"$LB_PG_CTL\" stop -D \"$LB_DATA\" -m immediate >/dev/null 2>&1; \
             rm -rf \"$LB_DIR\""
        );
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .env("LB_PG_CTL", self.bin_dir.join("pg_ctl"))
            .env("LB_DATA", self.data_dir())
            .env("LB_DIR", self.dir.path())
            .current_dir("/")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("spawning the cluster watchdog")?;
        let stdin = child
            .stdin
            .take()
            .ok_or_else(|| anyhow!("watchdog has no stdin"))?;
        Ok((child, stdin))
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let data = self.data_dir();
        if self.running || data.join("postmaster.pid").exists() {
            if let Err(e) = self.pg_ctl(&["stop", "-w", "-t", "30", "-m", "immediate", "-D"], &data)
            {
                eprintln!(
                    "lifeboat-tests: stopping cluster on port {}: {e}",
                    self.port
                );
            }
        }
        self.running = false;
        if let Some((mut child, stdin)) = self.watchdog.take() {
            // The server is already stopped; kill the watchdog rather than let it race the
            // TempDir removal.
            child.kill().ok();
            drop(stdin);
            child.wait().ok();
        }
        // The TempDir field removes the directory after this.
    }
}

/// Quotes an SQL identifier (always quoted, so keywords and mixed case are safe).
pub fn quote_ident(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// Quotes an SQL string literal (standard_conforming_strings on, the default).
pub fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// `schema.name`, both parts quoted.
pub fn qualified(schema: &str, name: &str) -> String {
    format!("{}.{}", quote_ident(schema), quote_ident(name))
}

/// The PostgreSQL bin directory: `$LIFEBOAT_TEST_PG_BIN`, else `/usr/lib/postgresql/15/bin`,
/// else the highest `/usr/lib/postgresql/<major>/bin`, else `pg_config --bindir`.
pub fn bin_dir() -> Result<PathBuf> {
    static BIN_DIR: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    BIN_DIR
        .get_or_init(|| find_bin_dir().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow!(e))
}

fn find_bin_dir() -> Result<PathBuf> {
    let has_server = |p: &Path| p.join("postgres").is_file() && p.join("initdb").is_file();
    if let Some(dir) = std::env::var_os(PG_BIN_ENV) {
        let dir = PathBuf::from(dir);
        if !has_server(&dir) {
            bail!("{PG_BIN_ENV}={} has no postgres/initdb", dir.display());
        }
        return Ok(dir);
    }
    let preferred = Path::new("/usr/lib/postgresql/15/bin");
    if has_server(preferred) {
        return Ok(preferred.to_path_buf());
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let major = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            has_server(&bin).then_some((major, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Ok(bin);
    }
    if let Ok(out) = run(Command::new("pg_config").arg("--bindir")) {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && has_server(&dir) {
            return Ok(dir);
        }
    }
    bail!("no PostgreSQL server binaries found; set {PG_BIN_ENV}")
}

/// Whether this process runs as root (then the server runs as the `postgres` OS user).
pub fn running_as_root() -> bool {
    match std::fs::metadata("/proc/self") {
        Ok(m) => m.uid() == 0,
        Err(_) => run(Command::new("id").arg("-u"))
            .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
            .unwrap_or(false),
    }
}

fn owner_command(program: &Path, as_postgres_user: bool, cwd: &Path) -> Command {
    let mut cmd = if as_postgres_user {
        let mut c = Command::new("runuser");
        c.args(["-u", PG_OS_USER, "--"]).arg(program);
        c
    } else {
        Command::new(program)
    };
    for var in LIBPQ_ENV {
        cmd.env_remove(var);
    }
    // The postgres user must be able to enter the cwd (a root-only cwd makes the tools warn).
    cmd.current_dir(cwd);
    cmd
}

fn chown_to_postgres(path: &Path) -> Result<()> {
    let out = run(Command::new("chown")
        .arg(format!("{PG_OS_USER}:"))
        .arg(path))?;
    check(&out, "chown to the postgres user")
}

fn initdb(bin_dir: &Path, data: &Path, as_postgres_user: bool, cwd: &Path) -> Result<()> {
    let mut last = None;
    for locale in ["C.UTF-8", "C"] {
        let mut cmd = owner_command(&bin_dir.join("initdb"), as_postgres_user, cwd);
        cmd.arg("-D")
            .arg(data)
            .args(["--encoding=UTF8", "--auth=trust", "--no-sync", "--username"])
            .arg(SUPERUSER)
            .arg(format!("--locale={locale}"));
        let out = run(&mut cmd)?;
        if out.status.success() {
            return Ok(());
        }
        last = Some(format!(
            "initdb --locale={locale} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
        // initdb cleans up after itself, but make sure.
        run(owner_command(Path::new("rm"), as_postgres_user, cwd)
            .arg("-rf")
            .arg(data))
        .ok();
    }
    bail!("{}", last.unwrap_or_default())
}

/// An `initdb`-ed data directory shared by all clusters of this machine with the same binaries
/// and user (copying it takes ~0.1 s, `initdb` ~0.9 s). Built once, atomically renamed into
/// place; never started.
fn template_data_dir(bin_dir: &Path, as_postgres_user: bool) -> Result<PathBuf> {
    static TEMPLATE: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    TEMPLATE
        .get_or_init(|| build_template(bin_dir, as_postgres_user).map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow!(e))
}

fn build_template(bin_dir: &Path, as_postgres_user: bool) -> Result<PathBuf> {
    use sha2::Digest;
    let version = run(Command::new(bin_dir.join("postgres")).arg("--version"))?;
    let mut hasher = sha2::Sha256::new();
    hasher.update(bin_dir.as_os_str().as_encoded_bytes());
    hasher.update(&version.stdout);
    hasher.update([u8::from(as_postgres_user)]);
    let key = hex::encode(hasher.finalize());
    let uid = std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(0);
    let final_dir = PathBuf::from(format!("/tmp/lbpg-template-{uid}-{}", &key[..12]));
    let ready = |d: &Path| d.join("data").join("PG_VERSION").is_file() && d.join("ok").is_file();
    if ready(&final_dir) {
        return Ok(final_dir.join("data"));
    }
    let staging = tempfile::Builder::new()
        .prefix("lbpg-tplbuild-")
        .tempdir_in("/tmp")?;
    std::fs::set_permissions(staging.path(), std::fs::Permissions::from_mode(0o755))?;
    if as_postgres_user {
        chown_to_postgres(staging.path())?;
    }
    initdb(
        bin_dir,
        &staging.path().join("data"),
        as_postgres_user,
        staging.path(),
    )?;
    std::fs::write(staging.path().join("ok"), b"")?;
    let staging = staging.keep();
    if std::fs::rename(&staging, &final_dir).is_err() {
        // Another process won the race (or a broken leftover is in the way).
        std::fs::remove_dir_all(&staging).ok();
        if !ready(&final_dir) {
            bail!("template dir {} is unusable", final_dir.display());
        }
    }
    Ok(final_dir.join("data"))
}

/// A port on 127.0.0.1 that was free a moment ago and was not handed out before by this
/// process (the caller retries if someone else takes it meanwhile).
fn free_port() -> Result<u16> {
    static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    for _ in 0..100 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let mut guard = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
        if guard.get_or_insert_with(HashSet::new).insert(port) {
            return Ok(port);
        }
    }
    bail!("no free port found")
}

/// Runs `cmd` to completion with stdin closed, capturing stdout and stderr in memory: for the
/// harness's small outputs (messages, query results); use [`pipe`] for dumps.
#[allow(
    clippy::disallowed_methods,
    reason = "test harness: small outputs, buffering them is fine"
)]
pub fn run(cmd: &mut Command) -> Result<Output> {
    cmd.stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {:?}", cmd.get_program()))
}

/// Runs `from | to` (e.g. `pg_dump -Fc | pg_restore`), streaming; fails with both commands'
/// stderr unless both succeed. Returns `to`'s stdout.
pub fn pipe(mut from: Command, mut to: Command) -> Result<Vec<u8>> {
    let mut producer = from
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("spawning {:?}", from.get_program()))?;
    let stdout = producer
        .stdout
        .take()
        .ok_or_else(|| anyhow!("producer has no stdout"))?;
    let consumer = to
        .stdin(Stdio::from(stdout))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("spawning {:?}", to.get_program()));
    // Collect the producer's stderr on a thread so neither side can block the other.
    let producer = std::thread::spawn(move || producer.wait_with_output());
    let consumer = consumer?.wait_with_output()?;
    let producer = producer
        .join()
        .map_err(|_| anyhow!("producer wait thread panicked"))??;
    if !producer.status.success() || !consumer.status.success() {
        bail!(
            "{:?} ({}) | {:?} ({}) failed:\n{}\n{}",
            from.get_program(),
            producer.status,
            to.get_program(),
            consumer.status,
            String::from_utf8_lossy(&producer.stderr).trim_end(),
            String::from_utf8_lossy(&consumer.stderr).trim_end()
        );
    }
    Ok(consumer.stdout)
}

/// Runs `cmd` with `input` on its stdin, capturing stdout and stderr.
pub fn run_with_input(mut cmd: Command, input: &[u8]) -> Result<Output> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut stdin = child
        .stdin
        .take()
        .ok_or_else(|| anyhow!("child has no stdin"))?;
    let input = input.to_vec();
    // Write from a thread so a child that fills its stdout pipe cannot deadlock us.
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output()?;
    // A child that exits early closes its stdin: a broken pipe is reported through the status.
    writer.join().ok();
    Ok(out)
}

fn check(out: &Output, what: &str) -> Result<()> {
    if out.status.success() {
        Ok(())
    } else {
        bail!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }
}

fn tail(s: &str, lines: usize) -> String {
    let all: Vec<&str> = s.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Waits until `f` returns true, polling every 50 ms, up to `timeout`.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(quote_ident(r#"Table "Q""#), r#""Table ""Q""""#);
        assert_eq!(quote_literal("l'été"), "'l''été'");
        assert_eq!(percent_encode("/tmp/lbpg-a"), "%2Ftmp%2Flbpg-a");
    }

    #[tokio::test]
    async fn cluster_starts_and_answers() -> Result<()> {
        let c = PgCluster::start()?;
        assert_eq!(c.psql("postgres", "SELECT 1; SELECT 'é'")?, "1\né");
        c.create_database("Données-Test")?;
        let client = c.connect("Données-Test").await?;
        let row = client.query_one("SELECT current_database()", &[]).await?;
        assert_eq!(row.get::<_, String>(0), "Données-Test");
        // Both URL forms work with tokio-postgres and with libpq.
        for url in [c.url("Données-Test"), c.socket_url("Données-Test")] {
            let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
            tokio::spawn(conn);
            client.simple_query("SELECT 1").await?;
            let mut psql = c.tool("psql");
            psql.env_remove("PGHOST").env_remove("PGPORT");
            let out = run(psql.args(["-XAt", "-d", &url, "-c", "SELECT 2"]))?;
            assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "2", "{url}");
        }
        match c.psql("postgres", "SELECT nope") {
            Err(err) => assert!(format!("{err:#}").contains("nope"), "{err:#}"),
            Ok(out) => panic!("psql should fail, printed {out:?}"),
        }
        drop(client);
        let mut c = c;
        c.stop()?;
        assert!(c.psql("postgres", "SELECT 1").is_err());
        c.start_again()?;
        assert_eq!(
            c.psql("Données-Test", "SELECT current_database()")?,
            "Données-Test"
        );
        let dir = c.socket_dir().to_path_buf();
        drop(c);
        assert!(!dir.exists());
        Ok(())
    }
}
