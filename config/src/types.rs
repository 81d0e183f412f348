//! The typed, already-validated configuration that the daemon and the CLI consume.
//! Every value here has passed validation; secrets appear only as references ([`SecretRef`]), never as values.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use croner::parser::{CronParser, Seconds, Year};

use crate::error::ScheduleError;

/// A whole, validated configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The `[daemon]` table (all defaults when absent).
    pub daemon: DaemonConfig,
    /// `[stores.NAME]` tables, by name.
    pub stores: BTreeMap<String, StoreConfig>,
    /// The `[encryption]` table.
    pub encryption: EncryptionConfig,
    /// `[jobs.NAME]` tables, by name. Every job's `store` names an entry of [`Config::stores`].
    pub jobs: BTreeMap<String, JobConfig>,
    /// The `[drill]` table (all defaults when absent): where `lifeboat drill` restores.
    pub drill: DrillConfig,
    /// Where the configuration came from (the path given to [`crate::load`], or the `origin` given to
    /// [`crate::parse`]).
    pub origin: String,
}

/// The `[daemon]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonConfig {
    /// Address of the HTTP endpoint (`/metrics`, `/healthz`, `/readyz`). Key `listen`, default `127.0.0.1:9187`.
    pub listen: SocketAddr,
    /// How many jobs may run at once. Key `max_concurrent_jobs`, default 2, at least 1.
    pub max_concurrent_jobs: usize,
    /// Directories searched for `pg_dump` and friends before `PATH`. Key `pg_bin_dirs`, default empty;
    /// absolute (relative entries are resolved against the configuration file's directory).
    pub pg_bin_dirs: Vec<PathBuf>,
    /// How long running jobs may go on after SIGTERM before they are cancelled. Key `shutdown_grace`,
    /// default 60 s.
    pub shutdown_grace: Duration,
    /// How often the daemon checks that every store is reachable (for `/readyz`) and re-reads the newest
    /// snapshots and verification records (for the metrics). Key `probe_interval`, default 5 min, at least 1 s.
    pub probe_interval: Duration,
    /// How often the daemon runs the immutability preflight (`store audit`) against every store it writes to,
    /// besides once at start-up. Key `audit_interval`, default 24 h, at least 1 min.
    pub audit_interval: Duration,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], DEFAULT_LISTEN_PORT)),
            max_concurrent_jobs: DEFAULT_MAX_CONCURRENT_JOBS,
            pg_bin_dirs: Vec::new(),
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            probe_interval: DEFAULT_PROBE_INTERVAL,
            audit_interval: DEFAULT_AUDIT_INTERVAL,
        }
    }
}

pub(crate) const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(60);
pub(crate) const DEFAULT_PROBE_INTERVAL: Duration = Duration::from_secs(5 * 60);
pub(crate) const DEFAULT_AUDIT_INTERVAL: Duration = Duration::from_secs(24 * 60 * 60);

pub(crate) const DEFAULT_LISTEN_PORT: u16 = 9187;
pub(crate) const DEFAULT_MAX_CONCURRENT_JOBS: usize = 2;

/// One `[stores.NAME]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    /// The table name (`offsite` in `[stores.offsite]`).
    pub name: String,
    /// Kind-specific settings (key `kind`).
    pub kind: StoreKind,
    /// Object Lock settings (keys `lock_mode`, `retention`).
    pub lock: LockConfig,
    /// Refuse to back up into this store unless its immutability preflight passes. Key `require_immutable`,
    /// default `true` for an s3 store with a lock mode, `false` for an fs store or `lock_mode = "none"` (which
    /// can never pass, so `true` there is a config error).
    pub require_immutable: bool,
}

impl StoreConfig {
    /// The multipart part size uploads to this store start with (`part_size` of an s3 store; the default for an
    /// fs store, which writes one file).
    pub fn part_size(&self) -> u64 {
        match &self.kind {
            StoreKind::S3(s3) => s3.part_size,
            StoreKind::Fs(_) => DEFAULT_PART_SIZE,
        }
    }
}

/// What kind of store a `[stores.NAME]` table describes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreKind {
    /// `kind = "s3"`: any S3-compatible object store.
    S3(S3Config),
    /// `kind = "fs"`: a local directory (not independent storage).
    Fs(FsConfig),
}

impl StoreKind {
    /// The key prefix under which all of this store's objects live: `""` or ending in `/`, never starting with `/`.
    pub fn prefix(&self) -> &str {
        match self {
            StoreKind::S3(s3) => &s3.prefix,
            StoreKind::Fs(fs) => &fs.prefix,
        }
    }

    /// The `kind` value as written in the file (`"s3"` or `"fs"`).
    pub fn as_str(&self) -> &'static str {
        match self {
            StoreKind::S3(_) => "s3",
            StoreKind::Fs(_) => "fs",
        }
    }
}

/// Settings of an `s3` store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Config {
    /// Custom endpoint (`http://` or `https://` URL); `None` means AWS.
    pub endpoint: Option<String>,
    /// Bucket name (checked against S3's bucket-name rules).
    pub bucket: String,
    /// Key prefix: `""` or ending in `/`, never starting with `/`.
    pub prefix: String,
    /// Region; `None` lets the AWS credential chain decide.
    pub region: Option<String>,
    /// Path-style addressing (`https://host/bucket/key`), needed by many self-hosted stores. Default false.
    pub path_style: bool,
    /// Initial multipart part size in bytes, 5 MiB..=5 GiB. Default 16 MiB.
    pub part_size: u64,
    /// Parts uploaded concurrently per stream, 1..=64. Default 4.
    pub parts_in_flight: usize,
    /// Static access key id (`access_key_id_env` / `access_key_id_file`); `None` uses the AWS credential chain.
    pub access_key_id: Option<SecretRef>,
    /// Static secret key (`secret_access_key_env` / `secret_access_key_file`); set exactly when
    /// [`S3Config::access_key_id`] is.
    pub secret_access_key: Option<SecretRef>,
    /// Session token for temporary static credentials (`session_token_env` / `session_token_file`).
    pub session_token: Option<SecretRef>,
    /// Named AWS profile; never set together with static keys.
    pub profile: Option<String>,
}

/// Default multipart part size: 16 MiB.
pub const DEFAULT_PART_SIZE: u64 = 16 * MIB;
/// Smallest part size S3 accepts: 5 MiB.
pub const MIN_PART_SIZE: u64 = 5 * MIB;
/// Largest part size S3 accepts: 5 GiB.
pub const MAX_PART_SIZE: u64 = 5 * GIB;
pub(crate) const DEFAULT_PARTS_IN_FLIGHT: usize = 2;
pub(crate) const MAX_PARTS_IN_FLIGHT: usize = 64;
pub(crate) const MIB: u64 = 1024 * 1024;
pub(crate) const GIB: u64 = 1024 * MIB;

/// Settings of an `fs` store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsConfig {
    /// The directory, absolute (resolved against the configuration file's directory).
    pub path: PathBuf,
    /// Key prefix inside the directory: `""` or ending in `/`, never starting with `/`, no `.`/`..` segments.
    pub prefix: String,
}

/// Object Lock mode (key `lock_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LockMode {
    /// `"compliance"`: nobody, not even the account root, can shorten or remove the lock.
    Compliance,
    /// `"governance"`: users with `s3:BypassGovernanceRetention` can remove the lock.
    Governance,
    /// `"none"`: no lock at all; the daemon writes to buckets without Object Lock.
    None,
}

impl LockMode {
    /// The value as written in the file: `"compliance"`, `"governance"` or `"none"`.
    pub fn as_str(self) -> &'static str {
        match self {
            LockMode::Compliance => "compliance",
            LockMode::Governance => "governance",
            LockMode::None => "none",
        }
    }
}

/// A store's lock settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockConfig {
    /// The lock mode.
    pub mode: LockMode,
    /// How long each object stays locked after it is written: at least one day. `Some` exactly when
    /// `mode` is not [`LockMode::None`] (a `retention` key next to `lock_mode = "none"` is rejected).
    pub retention: Option<Duration>,
}

/// Where a secret comes from. Holds the reference only, never the secret; resolving it is the caller's job.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SecretRef {
    /// Name of an environment variable (from a `*_env` key).
    Env(String),
    /// Absolute path of a file whose contents (trailing newline trimmed by the reader) are the secret
    /// (from a `*_file` key, resolved against the configuration file's directory).
    File(PathBuf),
}

/// The `[encryption]` table: who can decrypt the backups. At least one of the two lists is non-empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncryptionConfig {
    /// Recipients written inline (key `recipients`).
    pub recipients: Vec<AgeRecipient>,
    /// Files of recipients, one `age1…` per line, `#` comments allowed, as `age -R` reads them
    /// (key `recipients_file`, string or list; absolute). Not read by this crate.
    pub recipients_files: Vec<PathBuf>,
    /// The daemon's Ed25519 manifest-signing key, a PKCS#8 PEM as `openssl genpkey -algorithm ed25519` writes
    /// it (keys `signing_key_file` / `signing_key_env`). `None`: manifests are written unsigned.
    pub signing_key: Option<SecretRef>,
    /// Public keys whose manifest signatures readers trust (key `signing_public_keys`, `ed25519:<base64>`).
    pub signing_public_keys: Vec<SigningPublicKey>,
}

/// One Ed25519 public key that may sign manifests: `ed25519:` followed by the standard base64 of the 32 raw
/// key bytes (`openssl pkey -in signing.pem -pubout -outform DER | tail -c 32 | base64`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SigningPublicKey {
    /// The key as written (`ed25519:…`).
    pub text: String,
    /// The 32 raw key bytes (length checked; whether they are a valid curve point is checked by the reader).
    pub bytes: [u8; 32],
}

/// One age X25519 public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgeRecipient {
    /// The key as written (`age1…`).
    pub text: String,
    /// The parsed key.
    pub key: age::x25519::Recipient,
}

/// One `[jobs.NAME]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobConfig {
    /// The table name (`main-db` in `[jobs.main-db]`).
    pub name: String,
    /// The stores every snapshot is written to (key `store = "NAME"`, or `stores = ["A", "B"]`): at least one,
    /// each a key of [`Config::stores`], none twice. A snapshot succeeds only when every one holds it.
    pub stores: Vec<String>,
    /// When the job runs (keys `schedule`, `timezone`).
    pub schedule: Schedule,
    /// zstd settings (keys `compression_level`, `compression_threads`).
    pub compression: CompressionConfig,
    /// How the scheduler runs the job (keys `jitter`, `catch_up`, `timeout`, `retry_attempts`,
    /// `retry_backoff`).
    pub run: RunPolicy,
    /// What `lifeboat drill` checks besides row counts (table `[jobs.NAME.drill]`).
    pub drill: JobDrill,
    /// Commands run around each attempt (keys `before`, `after`, `hook_timeout`).
    pub hooks: Hooks,
    /// Which snapshots `lifeboat prune` keeps (keys `keep_*`).
    pub retention: Retention,
    /// What the job backs up (key `kind` plus the kind's keys).
    pub source: SourceConfig,
}

impl JobConfig {
    /// The first of the job's stores: the one the restore CLI reads by default.
    pub fn primary_store(&self) -> &str {
        self.stores.first().map_or("", String::as_str)
    }
}

/// The `[drill]` table: the throw-away PostgreSQL that `lifeboat drill` restores into.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DrillConfig {
    /// An existing scratch server (libpq URL without password, naming a maintenance database): each drill
    /// restores into fresh databases with unique names there and drops them after. `None`: a local throw-away
    /// cluster (`initdb` in a temp dir) per drill.
    pub scratch_url: Option<String>,
    /// Password of `scratch_url` (`password_file` / `password_env`).
    pub password: Option<SecretRef>,
    /// Directory with the PostgreSQL programs for drills (`initdb`, `pg_ctl`, `postgres`, `pg_restore`, `psql`).
    pub pg_bin_dir: Option<PathBuf>,
    /// OS user that runs the local cluster when `lifeboat drill` runs as root (default `postgres`).
    pub run_as: Option<String>,
}

/// Consistency hooks of a job: commands run before and after each backup attempt, without a shell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hooks {
    /// Run before the source is read (e.g. `["/sbin/fsfreeze", "--freeze", "/data"]`); if it fails, the
    /// attempt fails without reading the source (key `before`).
    pub before: Option<Vec<String>>,
    /// Run after the attempt, whatever happened, also when `before` or the backup failed (key `after`).
    pub after: Option<Vec<String>>,
    /// Each hook is killed after this long and counts as failed (key `hook_timeout`, default 5 min).
    pub timeout: Duration,
}

impl Default for Hooks {
    fn default() -> Self {
        Self {
            before: None,
            after: None,
            timeout: DEFAULT_HOOK_TIMEOUT,
        }
    }
}

pub(crate) const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// A job's retention policy for `lifeboat prune`: restic's `forget` rules, plus a floor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// The N newest snapshots (key `keep_last`).
    pub last: u32,
    /// The newest snapshot of each of the last N hours that have one (key `keep_hourly`).
    pub hourly: u32,
    /// Likewise per day (key `keep_daily`).
    pub daily: u32,
    /// Likewise per ISO week (key `keep_weekly`).
    pub weekly: u32,
    /// Likewise per month (key `keep_monthly`).
    pub monthly: u32,
    /// Likewise per year (key `keep_yearly`).
    pub yearly: u32,
    /// Whatever the rules say, the newest `min` snapshots are kept (key `keep_min`, default 3, at least 1).
    pub min: u32,
}

impl Retention {
    /// No `keep_*` rule is set: prune keeps everything of the job.
    pub fn is_empty(&self) -> bool {
        self.last == 0
            && self.hourly == 0
            && self.daily == 0
            && self.weekly == 0
            && self.monthly == 0
            && self.yearly == 0
    }
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            last: 0,
            hourly: 0,
            daily: 0,
            weekly: 0,
            monthly: 0,
            yearly: 0,
            min: DEFAULT_KEEP_MIN,
        }
    }
}

pub(crate) const DEFAULT_KEEP_MIN: u32 = 3;

/// A job's `[jobs.NAME.drill]` table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobDrill {
    /// SQL assertions, each returning one boolean that must be true, run in the restored `database`.
    pub checks: Vec<String>,
    /// Which restored database `checks` run in; always set when `checks` is not empty.
    pub database: Option<String>,
}

/// How the daemon's scheduler runs a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunPolicy {
    /// Each scheduled run starts after a random delay in `[0, jitter)` (key `jitter`, default 0).
    pub jitter: Duration,
    /// Run once at start-up when the store's newest snapshot predates the schedule's last due time
    /// (key `catch_up`, default true).
    pub catch_up: bool,
    /// An attempt still running after this long is cancelled and fails (key `timeout`, default none).
    pub timeout: Option<Duration>,
    /// Attempts per run, the first included, before the run counts as failed (key `retry_attempts`,
    /// 1 to 100, default 3).
    pub retry_attempts: u32,
    /// Wait before the first retry; doubled for each further retry, at most one hour
    /// (key `retry_backoff`, default 1 min).
    pub retry_backoff: Duration,
}

impl Default for RunPolicy {
    fn default() -> Self {
        Self {
            jitter: Duration::ZERO,
            catch_up: true,
            timeout: None,
            retry_attempts: DEFAULT_RETRY_ATTEMPTS,
            retry_backoff: DEFAULT_RETRY_BACKOFF,
        }
    }
}

impl RunPolicy {
    /// The wait before attempt `attempt` (2 = first retry): `retry_backoff` × 2^(attempt − 2), at most 1 h.
    pub fn backoff_before(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(2).min(20);
        self.retry_backoff
            .saturating_mul(1 << doublings)
            .min(MAX_RETRY_BACKOFF)
    }
}

pub(crate) const DEFAULT_RETRY_ATTEMPTS: u32 = 3;
pub(crate) const DEFAULT_RETRY_BACKOFF: Duration = Duration::from_secs(60);
/// The longest wait between two attempts.
pub const MAX_RETRY_BACKOFF: Duration = Duration::from_secs(60 * 60);

/// zstd settings of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompressionConfig {
    /// zstd level, 1..=19 (key `compression_level`, default 3).
    pub level: i32,
    /// zstd worker threads, 0..=64; 0 compresses on the calling thread (key `compression_threads`, default 1).
    pub threads: u32,
}

impl Default for CompressionConfig {
    fn default() -> Self {
        Self {
            level: DEFAULT_COMPRESSION_LEVEL,
            threads: 1,
        }
    }
}

pub(crate) const DEFAULT_COMPRESSION_LEVEL: i32 = 3;

/// What a job backs up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceConfig {
    /// `kind = "postgres"`: logical dump, `pg_dump -Fc` per database plus `pg_dumpall --globals-only`.
    Postgres(PostgresJob),
    /// `kind = "volume"`: a directory tree as one POSIX tar stream.
    Volume(VolumeJob),
    /// `kind = "postgres_physical"`: `pg_basebackup` of the whole cluster as one tar stream (WAL included).
    PostgresPhysical(PostgresJob),
}

/// Settings of a `volume` job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeJob {
    /// The directory to back up (absolute).
    pub path: PathBuf,
    /// Glob patterns of paths (relative to `path`) left out; an excluded directory is not descended.
    pub exclude: Vec<String>,
    /// Stay on the file system of `path` (mount points inside are archived empty).
    pub one_file_system: bool,
    /// Skip (and report) files that cannot be read instead of failing the run.
    pub ignore_unreadable: bool,
}

/// Settings of a `postgres` job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresJob {
    /// libpq connection string (`postgres://…` URL or `key=value` form); guaranteed to hold no password.
    pub url: String,
    /// Which databases to dump.
    pub databases: Databases,
    /// Where the password comes from (`password_file` / `password_env`); `None` leaves it to libpq
    /// (`PGPASSFILE`, `~/.pgpass`, `PGPASSWORD`, peer or certificate authentication).
    pub password: Option<SecretRef>,
    /// Directory holding `pg_dump`/`pg_dumpall` for this job (absolute); overrides `daemon.pg_bin_dirs`.
    pub pg_bin_dir: Option<PathBuf>,
    /// `postgres_physical` only: start the base backup with an immediate checkpoint instead of a spread one
    /// (key `fast_checkpoint`, default false).
    pub fast_checkpoint: bool,
}

/// Which databases a `postgres` job dumps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Databases {
    /// `databases = "all"`: every database that allows connections, except templates.
    All,
    /// An explicit list of non-empty, distinct names (by default the one database named in `url`).
    List(Vec<String>),
}

/// A 5-field cron schedule evaluated in a time zone.
///
/// Fields are minute, hour, day of month, month, day of week (0–7, 0 and 7 are Sunday; names like `MON` work);
/// `@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly` are accepted. When both day fields are restricted, a
/// day matching either one fires (Vixie cron). Daylight-saving transitions follow croner: a wall-clock time that
/// does not exist (spring forward) fires at the first instant after the gap, and one that exists twice
/// (fall back) fires once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    /// The expression as written in the file.
    pub expr: String,
    /// The zone the expression is evaluated in (key `timezone`, default UTC).
    pub timezone: chrono_tz::Tz,
    cron: croner::Cron,
}

impl Schedule {
    /// Parses a 5-field cron expression. Six- and seven-field forms (seconds, years) are rejected, as are
    /// expressions that never fire (e.g. `0 0 30 2 *`).
    pub fn new(expr: &str, timezone: chrono_tz::Tz) -> Result<Self, ScheduleError> {
        let trimmed = expr.trim();
        if trimmed.is_empty() {
            return Err(ScheduleError {
                message: "the schedule is empty".into(),
                hint: Some(CRON_EXAMPLE.into()),
            });
        }
        if !trimmed.starts_with('@') {
            let fields: Vec<&str> = trimmed.split_whitespace().collect();
            match fields.len() {
                5 => {}
                n @ (6 | 7) => {
                    let five = fields[1..6].join(" ");
                    return Err(ScheduleError {
                        message: format!(
                            "invalid cron expression \"{trimmed}\": it has {n} fields, but schedules use the \
                             5-field form (minute hour day-of-month month day-of-week) without seconds{}",
                            if n == 7 { " or years" } else { "" }
                        ),
                        hint: Some(format!("drop the leading seconds field: \"{five}\"")),
                    });
                }
                n => {
                    return Err(ScheduleError {
                        message: format!(
                            "invalid cron expression \"{trimmed}\": expected 5 fields (minute hour \
                             day-of-month month day-of-week), found {n}"
                        ),
                        hint: Some(CRON_EXAMPLE.into()),
                    });
                }
            }
        }
        let parser = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build();
        let cron = parser.parse(trimmed).map_err(|e| ScheduleError {
            message: format!(
                "invalid cron expression \"{trimmed}\": {}",
                cron_message(&e)
            ),
            hint: Some(CRON_EXAMPLE.into()),
        })?;
        let schedule = Self {
            expr: expr.to_owned(),
            timezone,
            cron,
        };
        if schedule.next_after(Utc::now()).is_none() {
            return Err(ScheduleError {
                message: format!("cron expression \"{trimmed}\" never fires"),
                hint: Some(
                    "check the day-of-month and month fields (e.g. February has no 30th)".into(),
                ),
            });
        }
        Ok(schedule)
    }

    /// The last time at or before `at` at which the schedule fired, or `None` if it never did.
    pub fn last_at_or_before(&self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = at.with_timezone(&self.timezone);
        self.cron
            .find_previous_occurrence(&local, true)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    /// The longest gap between two consecutive fire times among the next `fires` after `from` (at least
    /// two are looked at): what "one interval" means for an irregular schedule like `0 3 * * 1-5`.
    pub fn longest_gap_after(&self, from: DateTime<Utc>, fires: usize) -> Option<chrono::Duration> {
        let mut previous = self.next_after(from)?;
        let mut longest: Option<chrono::Duration> = None;
        for _ in 0..fires.max(2) {
            let Some(next) = self.next_after(previous) else {
                break;
            };
            let gap = next - previous;
            longest = Some(longest.map_or(gap, |l| l.max(gap)));
            previous = next;
        }
        longest
    }

    /// The first time strictly after `after` at which the schedule fires, or `None` if it never fires again.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = after.with_timezone(&self.timezone);
        self.cron
            .find_next_occurrence(&local, false)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }
}

const CRON_EXAMPLE: &str =
    "e.g. \"0 */6 * * *\" runs every 6 hours, \"30 2 * * 1-5\" at 02:30 Monday to Friday";

/// croner's messages start with a capitalised category and end with a period; make them fit our style.
fn cron_message(e: &croner::errors::CronError) -> String {
    use croner::errors::CronError;
    let text = match e {
        CronError::InvalidPattern(m)
        | CronError::IllegalCharacters(m)
        | CronError::ComponentError(m) => m.clone(),
        other => other.to_string(),
    };
    let text = text.trim_end_matches('.');
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Datelike, TimeZone, Timelike, Weekday};

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
    }

    #[test]
    fn schedule_fires_every_six_hours() {
        let s = Schedule::new("0 */6 * * *", chrono_tz::UTC).unwrap();
        assert_eq!(
            s.next_after(utc(2026, 1, 1, 0, 0)),
            Some(utc(2026, 1, 1, 6, 0))
        );
        assert_eq!(
            s.next_after(utc(2026, 1, 1, 5, 59)),
            Some(utc(2026, 1, 1, 6, 0))
        );
    }

    #[test]
    fn schedule_weekdays_are_monday_to_friday() {
        let s = Schedule::new("0 3 * * 1-5", chrono_tz::UTC).unwrap();
        let mut t = utc(2026, 3, 1, 0, 0); // a Sunday
        let mut days = Vec::new();
        for _ in 0..7 {
            t = s.next_after(t).unwrap();
            days.push(t.weekday());
        }
        assert_eq!(
            days,
            [
                Weekday::Mon,
                Weekday::Tue,
                Weekday::Wed,
                Weekday::Thu,
                Weekday::Fri,
                Weekday::Mon,
                Weekday::Tue
            ]
        );
        let sunday = Schedule::new("0 3 * * 0", chrono_tz::UTC).unwrap();
        let seven = Schedule::new("0 3 * * 7", chrono_tz::UTC).unwrap();
        assert_eq!(sunday.next_after(t).unwrap().weekday(), Weekday::Sun);
        assert_eq!(sunday.next_after(t), seven.next_after(t));
    }

    #[test]
    fn schedule_uses_its_timezone() {
        let s = Schedule::new("30 2 * * *", chrono_tz::Europe::Berlin).unwrap();
        // Winter: Berlin is UTC+1.
        assert_eq!(
            s.next_after(utc(2026, 1, 10, 12, 0)),
            Some(utc(2026, 1, 11, 1, 30))
        );
        // Summer: UTC+2.
        assert_eq!(
            s.next_after(utc(2026, 7, 10, 12, 0)),
            Some(utc(2026, 7, 11, 0, 30))
        );
    }

    #[test]
    fn schedule_in_spring_forward_gap_runs_once_after_the_gap() {
        // 2026-03-29 02:00 CET jumps to 03:00 CEST: 02:30 does not exist that day.
        let s = Schedule::new("30 2 * * *", chrono_tz::Europe::Berlin).unwrap();
        let next = s.next_after(utc(2026, 3, 28, 12, 0)).unwrap();
        let local = next.with_timezone(&chrono_tz::Europe::Berlin);
        assert_eq!((local.day(), local.hour()), (29, 3), "got {local}");
        let after = s.next_after(next).unwrap();
        assert_eq!(after, utc(2026, 3, 30, 0, 30));
    }

    #[test]
    fn schedule_in_fall_back_overlap_runs_once() {
        // 2026-10-25 03:00 CEST goes back to 02:00 CET: 02:30 happens twice.
        let s = Schedule::new("30 2 * * *", chrono_tz::Europe::Berlin).unwrap();
        let first = s.next_after(utc(2026, 10, 24, 12, 0)).unwrap();
        assert_eq!(first, utc(2026, 10, 25, 0, 30)); // 02:30 CEST
        let second = s.next_after(first).unwrap();
        assert_eq!(second, utc(2026, 10, 26, 1, 30)); // next day, 02:30 CET
    }

    #[test]
    fn hourly_schedule_keeps_going_across_fall_back() {
        let s = Schedule::new("0 * * * *", chrono_tz::Europe::Berlin).unwrap();
        let mut t = utc(2026, 10, 24, 23, 30);
        let mut fired = Vec::new();
        for _ in 0..4 {
            t = s.next_after(t).unwrap();
            fired.push(t);
        }
        // Every real hour, including both 02:00s.
        assert_eq!(
            fired,
            [
                utc(2026, 10, 25, 0, 0),
                utc(2026, 10, 25, 1, 0),
                utc(2026, 10, 25, 2, 0),
                utc(2026, 10, 25, 3, 0)
            ]
        );
    }

    #[test]
    fn schedule_nicknames_work() {
        let s = Schedule::new("@daily", chrono_tz::UTC).unwrap();
        assert_eq!(
            s.next_after(utc(2026, 1, 1, 5, 0)),
            Some(utc(2026, 1, 2, 0, 0))
        );
    }

    #[test]
    fn schedule_accepts_the_documented_syntax() {
        // docs/configuration.md promises each of these.
        for expr in [
            "0 */6 * * *",
            "30 2 * * *",
            "0 3 * * 1-5",
            "15 1 1 * *",
            "0 3 L * *",
            "0 3 15W * *",
            "0 3 * * 5L",
            "0 3 * * 1#2",
            "0 3 * JAN-MAR SUN",
            "0-30/10 1,15 * * *",
            "@hourly",
            "@weekly",
            "@monthly",
            "@yearly",
        ] {
            assert!(Schedule::new(expr, chrono_tz::UTC).is_ok(), "{expr}");
        }
        // Second Monday of March 2026 is the 9th.
        let s = Schedule::new("0 3 * * 1#2", chrono_tz::UTC).unwrap();
        assert_eq!(
            s.next_after(utc(2026, 3, 1, 0, 0)),
            Some(utc(2026, 3, 9, 3, 0))
        );
        // Both day fields restricted: either matches (the 1st, or any Friday).
        let s = Schedule::new("0 3 1 * 5", chrono_tz::UTC).unwrap();
        assert_eq!(
            s.next_after(utc(2026, 3, 1, 12, 0)),
            Some(utc(2026, 3, 6, 3, 0))
        );
    }

    #[test]
    fn schedule_rejects_seconds_and_short_forms() {
        let e = Schedule::new("0 0 */6 * * *", chrono_tz::UTC).unwrap_err();
        assert!(e.message.contains("6 fields"), "{e:?}");
        assert_eq!(
            e.hint.unwrap(),
            "drop the leading seconds field: \"0 */6 * * *\""
        );
        let e = Schedule::new("0 */6 * *", chrono_tz::UTC).unwrap_err();
        assert!(e.message.contains("expected 5 fields"), "{e:?}");
        assert!(e.message.contains("found 4"), "{e:?}");
        let e = Schedule::new("61 * * * *", chrono_tz::UTC).unwrap_err();
        assert!(
            e.message
                .starts_with("invalid cron expression \"61 * * * *\""),
            "{e:?}"
        );
        assert!(Schedule::new("@reboot", chrono_tz::UTC).is_err());
        assert!(Schedule::new("  ", chrono_tz::UTC).is_err());
    }

    #[test]
    fn schedule_that_never_fires_is_rejected() {
        let e = Schedule::new("0 0 30 2 *", chrono_tz::UTC).unwrap_err();
        assert!(e.message.contains("never fires"), "{e:?}");
    }
}
