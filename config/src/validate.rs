//! Turns the raw tables into the typed [`Config`], checking every value and collecting every problem.
//! Pure: no I/O, secrets are never resolved, and no error message ever repeats a secret-looking value.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use crate::document::{Document, Named, Section};
use crate::error::Diagnostics;
use crate::raw::{
    OneOrMany, RawDaemon, RawDrill, RawEncryption, RawJob, RawSize, RawStore, JOB_COMMON_KEYS,
    JOB_PHYSICAL_KEYS, JOB_POSTGRES_KEYS, JOB_VOLUME_KEYS, STORE_COMMON_KEYS, STORE_FS_KEYS,
    STORE_S3_KEYS, UNIMPLEMENTED_JOB_KINDS,
};
use crate::types::{
    CompressionConfig, Config, DaemonConfig, Databases, DrillConfig, EncryptionConfig, FsConfig,
    Hooks, JobConfig, JobDrill, LockConfig, LockMode, PostgresJob, Retention, RunPolicy, S3Config,
    Schedule, SecretRef, SourceConfig, StoreConfig, StoreKind, VolumeJob,
    DEFAULT_COMPRESSION_LEVEL, DEFAULT_PARTS_IN_FLIGHT, DEFAULT_PART_SIZE, MAX_PARTS_IN_FLIGHT,
    MAX_PART_SIZE, MIN_PART_SIZE,
};
use crate::values::{
    check_bucket, check_endpoint, human_size, inspect_pg_url, normalise_prefix, parse_recipient,
    parse_signing_public_key, parse_size, valid_name,
};

const ONE_DAY: Duration = Duration::from_secs(24 * 60 * 60);

/// Validates the whole document. Returns `None` if anything was reported to `diag`.
pub(crate) fn validate(
    doc: Document,
    origin: &str,
    base_dir: &Path,
    diag: &mut Diagnostics,
) -> Option<Config> {
    let mut v = Validator { diag, base_dir };

    let daemon = v.daemon(doc.daemon);

    if doc.stores.is_empty() && !doc.stores_broken {
        v.diag.push(
            "stores",
            doc.stores_span.clone(),
            "no stores are configured",
            Some(
                "add a [stores.NAME] table with kind = \"s3\" (or \"fs\" for a local directory)"
                    .into(),
            ),
        );
    }
    let store_names: BTreeSet<String> = doc.stores.iter().map(|s| s.name.clone()).collect();
    let mut stores = BTreeMap::new();
    let mut stores_ok = true;
    for named in doc.stores {
        let name = named.name.clone();
        match v.store(named) {
            Some(store) => {
                stores.insert(name, store);
            }
            None => stores_ok = false,
        }
    }

    let encryption = v.encryption(doc.encryption_span, doc.encryption);

    let mut jobs = BTreeMap::new();
    let mut jobs_ok = true;
    for named in doc.jobs {
        let name = named.name.clone();
        match v.job(named, &store_names) {
            Some(job) => {
                jobs.insert(name, job);
            }
            None => jobs_ok = false,
        }
    }

    let drill = v.drill(doc.drill);

    if !v.diag.is_empty() || !stores_ok || !jobs_ok {
        return None;
    }
    Some(Config {
        daemon: daemon?,
        stores,
        encryption: encryption?,
        jobs,
        drill: drill?,
        origin: origin.to_owned(),
    })
}

/// Access key id, secret access key, session token.
type S3Credentials = (Option<SecretRef>, Option<SecretRef>, Option<SecretRef>);

/// A value that may be absent, present but invalid (already reported), or valid.
enum Got<T> {
    Absent,
    Bad,
    Value(T),
}

struct Validator<'a> {
    diag: &'a mut Diagnostics,
    base_dir: &'a Path,
}

impl Validator<'_> {
    // ----- helpers ---------------------------------------------------------------------------------------------

    fn error(
        &mut self,
        key: impl Into<String>,
        span: Range<usize>,
        message: impl Into<String>,
        hint: Option<String>,
    ) {
        self.diag.push(key, Some(span), message, hint);
    }

    /// Reports a missing required key (unless it was present with a bad type, which is already reported).
    fn require<S, T>(
        &mut self,
        section: &Section<S>,
        key: &str,
        value: Option<T>,
        hint: &str,
    ) -> Option<T> {
        if value.is_none() && !section.poisoned.contains(key) {
            self.diag.push(
                section.key(key),
                Some(section.span.clone()),
                format!("missing required key `{key}`"),
                Some(hint.to_owned()),
            );
        }
        value
    }

    /// Reports every present key that `allowed` does not contain, for the given kind.
    fn reject_keys_of_other_kinds<S>(
        &mut self,
        section: &Section<S>,
        what: &str,
        kind: &str,
        allowed: &[&[&str]],
    ) {
        for (key, span) in &section.keys {
            if !allowed.iter().any(|list| list.contains(&key.as_str())) {
                self.error(
                    section.key(key),
                    span.clone(),
                    format!("key `{key}` does not apply to {what} of kind \"{kind}\""),
                    Some("remove it, or change `kind`".into()),
                );
            }
        }
    }

    /// Resolves a path from the file against the configuration file's directory.
    fn path(&mut self, key: String, value: &Spanned<String>) -> Option<PathBuf> {
        let text = value.get_ref();
        if text.trim().is_empty() {
            self.error(key, value.span(), "the path is empty", None);
            return None;
        }
        if text.starts_with('~') {
            self.error(
                key,
                value.span(),
                "`~` is not expanded in paths",
                Some("write the full path, e.g. \"/home/backup/...\"".into()),
            );
            return None;
        }
        let path = Path::new(text);
        let joined = if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.base_dir.join(path)
        };
        let absolute = std::path::absolute(&joined).unwrap_or(joined);
        Some(normalize_lexically(&absolute))
    }

    /// A secret given as `{base}_env` or `{base}_file` (never both).
    fn secret(
        &mut self,
        section_path: &str,
        base: &str,
        env: Option<&Spanned<String>>,
        file: Option<&Spanned<String>>,
    ) -> Got<SecretRef> {
        match (env, file) {
            (None, None) => Got::Absent,
            (Some(_), Some(file)) => {
                self.error(
                    format!("{section_path}.{base}_file"),
                    file.span(),
                    format!("both `{base}_env` and `{base}_file` are set"),
                    Some(format!(
                        "keep exactly one of `{base}_env` and `{base}_file`"
                    )),
                );
                Got::Bad
            }
            (Some(env), None) => {
                let name = env.get_ref();
                let valid = name
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                    && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                if valid {
                    Got::Value(SecretRef::Env(name.clone()))
                } else {
                    // Not echoed: a secret pasted here by mistake must not end up in logs.
                    self.error(
                        format!("{section_path}.{base}_env"),
                        env.span(),
                        "not a valid environment variable name (the value is not shown in case it is a secret)",
                        Some(format!(
                            "`{base}_env` names the variable holding the secret, e.g. \"{}\", never the secret \
                             itself",
                            base.to_ascii_uppercase()
                        )),
                    );
                    Got::Bad
                }
            }
            (None, Some(file)) => match self.path(format!("{section_path}.{base}_file"), file) {
                Some(path) => Got::Value(SecretRef::File(path)),
                None => Got::Bad,
            },
        }
    }

    /// The strings of a string-or-list value, each with its dotted key and span. Items that are not strings are
    /// reported; the flag is false if there were any.
    fn strings(
        &mut self,
        key: &str,
        value: &Spanned<OneOrMany>,
    ) -> (Vec<(String, String, Range<usize>)>, bool) {
        match value.get_ref() {
            OneOrMany::One(text) => (vec![(key.to_owned(), text.clone(), value.span())], true),
            OneOrMany::Many(list) => {
                let mut ok = true;
                let mut out = Vec::new();
                for (i, item) in list.iter().enumerate() {
                    let item_key = format!("{key}[{i}]");
                    match item.get_ref() {
                        toml::Value::String(text) => {
                            out.push((item_key, text.clone(), item.span()))
                        }
                        other => {
                            ok = false;
                            self.error(
                                item_key,
                                item.span(),
                                format!("invalid type: {}, expected a string", other.type_str()),
                                Some("write it as a quoted string".into()),
                            );
                        }
                    }
                }
                (out, ok)
            }
        }
    }

    fn non_empty(&mut self, key: String, value: &Spanned<String>) -> Option<String> {
        let text = value.get_ref().trim();
        if text.is_empty() {
            self.error(
                key,
                value.span(),
                "must not be empty",
                Some("remove the key or give it a value".into()),
            );
            None
        } else {
            Some(text.to_owned())
        }
    }

    /// A duration like `"90s"` or `"1h 30m"`, between `min` and `max`.
    fn duration(
        &mut self,
        key: String,
        value: &Spanned<String>,
        min: Duration,
        max: Duration,
    ) -> Option<Duration> {
        let text = value.get_ref().trim();
        match humantime::parse_duration(text) {
            Ok(d) if d >= min && d <= max => Some(d),
            Ok(_) => {
                self.error(
                    key,
                    value.span(),
                    format!(
                        "duration \"{}\" is out of range: must be between {} and {}",
                        text.escape_debug(),
                        humantime::format_duration(min),
                        humantime::format_duration(max)
                    ),
                    None,
                );
                None
            }
            Err(e) => {
                self.error(
                    key,
                    value.span(),
                    format!("invalid duration \"{}\": {e}", text.escape_debug()),
                    Some("write a duration like \"90s\", \"10m\" or \"2h 30m\"".into()),
                );
                None
            }
        }
    }

    fn int_in_range(
        &mut self,
        key: String,
        value: &Spanned<i64>,
        min: i64,
        max: i64,
    ) -> Option<i64> {
        let n = *value.get_ref();
        if (min..=max).contains(&n) {
            Some(n)
        } else {
            let range = if max == i64::MAX {
                format!("at least {min}")
            } else {
                format!("between {min} and {max}")
            };
            self.error(
                key,
                value.span(),
                format!("{n} is out of range: must be {range}"),
                None,
            );
            None
        }
    }

    fn name(&mut self, what: &str, path: &str, name: &str, span: Range<usize>) -> bool {
        if valid_name(name) {
            return true;
        }
        self.error(
            path,
            span,
            format!("invalid {what} name \"{}\"", name.escape_debug()),
            Some(
                "names become object-key path segments: 1 to 63 characters, letters, digits, `_`, `.` and `-`, \
                 starting with a letter or digit"
                    .into(),
            ),
        );
        false
    }

    // ----- [daemon] --------------------------------------------------------------------------------------------

    fn daemon(&mut self, section: Option<Section<RawDaemon>>) -> Option<DaemonConfig> {
        let mut config = DaemonConfig::default();
        let Some(section) = section else {
            return Some(config);
        };
        let mut ok = true;
        let raw = &section.raw;
        if let Some(listen) = &raw.listen {
            match listen.get_ref().trim().parse::<SocketAddr>() {
                Ok(addr) => config.listen = addr,
                Err(_) => {
                    ok = false;
                    self.error(
                        section.key("listen"),
                        listen.span(),
                        format!("invalid listen address \"{}\"", listen.get_ref().escape_debug()),
                        Some("write an IP address and port, e.g. \"127.0.0.1:9187\" or \"[::]:9187\"".into()),
                    );
                }
            }
        }
        if let Some(max) = &raw.max_concurrent_jobs {
            match self
                .int_in_range(section.key("max_concurrent_jobs"), max, 1, i64::MAX)
                .and_then(|n| usize::try_from(n).ok())
            {
                Some(n) => config.max_concurrent_jobs = n,
                None => ok = false,
            }
        }
        if let Some(grace) = &raw.shutdown_grace {
            match self.duration(
                section.key("shutdown_grace"),
                grace,
                Duration::ZERO,
                ONE_DAY,
            ) {
                Some(d) => config.shutdown_grace = d,
                None => ok = false,
            }
        }
        if let Some(interval) = &raw.probe_interval {
            match self.duration(
                section.key("probe_interval"),
                interval,
                Duration::from_secs(1),
                ONE_DAY,
            ) {
                Some(d) => config.probe_interval = d,
                None => ok = false,
            }
        }
        if let Some(interval) = &raw.audit_interval {
            match self.duration(
                section.key("audit_interval"),
                interval,
                Duration::from_secs(60),
                30 * ONE_DAY,
            ) {
                Some(d) => config.audit_interval = d,
                None => ok = false,
            }
        }
        if let Some(dirs) = &raw.pg_bin_dirs {
            for (i, dir) in dirs.get_ref().iter().enumerate() {
                match self.path(format!("{}[{i}]", section.key("pg_bin_dirs")), dir) {
                    Some(path) => config.pg_bin_dirs.push(path),
                    None => ok = false,
                }
            }
        }
        ok.then_some(config)
    }

    // ----- [stores.NAME] ---------------------------------------------------------------------------------------

    fn store(&mut self, named: Named<RawStore>) -> Option<StoreConfig> {
        let section = named.section?;
        let name_ok = self.name("store", &section.path, &named.name, named.name_span);
        let raw = &section.raw;

        let kind = self.require(
            &section,
            "kind",
            raw.kind.as_ref(),
            "add kind = \"s3\" or kind = \"fs\"",
        );
        let lock = self.lock(&section);
        let prefix = match &raw.prefix {
            None => Some(String::new()),
            Some(prefix) => match normalise_prefix(prefix.get_ref()) {
                Ok(p) => Some(p),
                Err(message) => {
                    self.error(
                        section.key("prefix"),
                        prefix.span(),
                        message,
                        Some("use segments separated by `/`, e.g. \"prod/db/\"".into()),
                    );
                    None
                }
            },
        };

        let kind = match kind.map(|k| (k.get_ref().as_str(), k.span())) {
            None => None,
            Some(("s3", _)) => {
                self.reject_keys_of_other_kinds(
                    &section,
                    "stores",
                    "s3",
                    &[STORE_COMMON_KEYS, STORE_S3_KEYS],
                );
                self.s3(&section, prefix).map(StoreKind::S3)
            }
            Some(("fs", _)) => {
                self.reject_keys_of_other_kinds(
                    &section,
                    "stores",
                    "fs",
                    &[STORE_COMMON_KEYS, STORE_FS_KEYS],
                );
                self.fs(&section, prefix).map(StoreKind::Fs)
            }
            Some((other, span)) => {
                self.error(
                    section.key("kind"),
                    span,
                    format!("unknown store kind \"{}\"", other.escape_debug()),
                    Some("use kind = \"s3\" (any S3-compatible store) or kind = \"fs\" (a local directory)".into()),
                );
                None
            }
        };
        if !name_ok {
            return None;
        }
        let kind = kind?;
        let lock = lock?;
        let can_be_immutable = matches!(kind, StoreKind::S3(_)) && lock.mode != LockMode::None;
        let require_immutable = match &raw.require_immutable {
            None => can_be_immutable,
            Some(r) if *r.get_ref() && !can_be_immutable => {
                self.error(
                    section.key("require_immutable"),
                    r.span(),
                    if lock.mode == LockMode::None {
                        "require_immutable = true cannot hold with lock_mode = \"none\": nothing in this store is locked"
                    } else {
                        "require_immutable = true cannot hold for an fs store: any process that can write the directory can delete it"
                    },
                    Some("remove require_immutable (or set it to false), or use an s3 store with lock_mode = \"compliance\"".into()),
                );
                return None;
            }
            Some(r) => *r.get_ref(),
        };
        Some(StoreConfig {
            name: named.name,
            kind,
            lock,
            require_immutable,
        })
    }

    /// A job's `store = "NAME"` or `stores = ["A", "B"]`: exactly one of the two, every name configured, no
    /// name twice.
    fn job_stores(
        &mut self,
        section: &Section<RawJob>,
        configured: &BTreeSet<String>,
    ) -> Option<Vec<String>> {
        let raw = &section.raw;
        let named: Vec<(String, Range<usize>)> = match (&raw.store, &raw.stores) {
            (Some(_), Some(list)) => {
                self.error(
                    section.key("stores"),
                    list.span(),
                    "a job has either `store` or `stores`, not both",
                    Some("keep stores = [\"A\", \"B\"] and remove `store`".into()),
                );
                return None;
            }
            (None, None) => {
                self.require::<_, ()>(
                    section,
                    "store",
                    None,
                    "add store = \"NAME\" naming a [stores.NAME] table (or stores = [\"A\", \"B\"] to write every snapshot to several stores)",
                );
                return None;
            }
            (Some(one), None) => vec![(one.get_ref().clone(), one.span())],
            (None, Some(list)) => {
                if list.get_ref().is_empty() {
                    self.error(
                        section.key("stores"),
                        list.span(),
                        "`stores` is empty",
                        Some(
                            "name at least one [stores.NAME] table, e.g. stores = [\"offsite\"]"
                                .into(),
                        ),
                    );
                    return None;
                }
                list.get_ref()
                    .iter()
                    .map(|s| (s.get_ref().clone(), s.span()))
                    .collect()
            }
        };
        let key = if raw.store.is_some() {
            "store"
        } else {
            "stores"
        };
        let mut ok = true;
        let mut seen = BTreeSet::new();
        for (name, span) in &named {
            if !seen.insert(name.clone()) {
                ok = false;
                self.error(
                    section.key(key),
                    span.clone(),
                    format!("store \"{}\" is named twice", name.escape_debug()),
                    Some("name each store once".into()),
                );
                continue;
            }
            if configured.contains(name) {
                continue;
            }
            ok = false;
            let hint = if configured.is_empty() {
                "no stores are configured; add a [stores.NAME] table".to_owned()
            } else {
                let list = configured
                    .iter()
                    .map(|s| format!("\"{s}\""))
                    .collect::<Vec<_>>()
                    .join(", ");
                format!("configured stores: {list}")
            };
            self.error(
                section.key(key),
                span.clone(),
                format!("store \"{}\" is not configured", name.escape_debug()),
                Some(hint),
            );
        }
        ok.then(|| named.into_iter().map(|(n, _)| n).collect())
    }

    fn lock(&mut self, section: &Section<RawStore>) -> Option<LockConfig> {
        let raw = &section.raw;
        let mode = self.require(
            section,
            "lock_mode",
            raw.lock_mode.as_ref(),
            "add lock_mode = \"compliance\" (or \"governance\", or \"none\" for no Object Lock at all)",
        );
        let mode = mode.and_then(|m| match m.get_ref().as_str() {
            "compliance" => Some(LockMode::Compliance),
            "governance" => Some(LockMode::Governance),
            "none" => Some(LockMode::None),
            other => {
                self.error(
                    section.key("lock_mode"),
                    m.span(),
                    format!("unknown lock mode \"{}\"", other.escape_debug()),
                    Some("use \"compliance\", \"governance\" or \"none\"".into()),
                );
                None
            }
        });
        let retention = match &raw.retention {
            None => Got::Absent,
            Some(r) => match humantime::parse_duration(r.get_ref().trim()) {
                Ok(d) if d >= ONE_DAY => Got::Value((d, r.span())),
                Ok(_) => {
                    self.error(
                        section.key("retention"),
                        r.span(),
                        format!(
                            "retention \"{}\" is shorter than one day",
                            r.get_ref().escape_debug()
                        ),
                        Some("Object Lock retention is counted in days: use e.g. \"35d\"".into()),
                    );
                    Got::Bad
                }
                Err(e) => {
                    self.error(
                        section.key("retention"),
                        r.span(),
                        format!("invalid duration \"{}\": {e}", r.get_ref().escape_debug()),
                        Some("write a duration like \"35d\", \"6weeks\" or \"1year\"".into()),
                    );
                    Got::Bad
                }
            },
        };
        match (mode?, retention) {
            (LockMode::None, Got::Absent) => Some(LockConfig {
                mode: LockMode::None,
                retention: None,
            }),
            (LockMode::None, Got::Value((_, span))) => {
                self.error(
                    section.key("retention"),
                    span,
                    "`retention` has no effect with lock_mode = \"none\"",
                    Some("remove `retention`, or choose lock_mode = \"compliance\" or \"governance\"".into()),
                );
                None
            }
            (_, Got::Bad) => None,
            (mode, Got::Absent) => {
                self.require::<_, ()>(
                    section,
                    "retention",
                    None,
                    &format!(
                        "lock_mode = \"{}\" needs a retention, e.g. retention = \"35d\"",
                        mode.as_str()
                    ),
                );
                None
            }
            (mode, Got::Value((d, _))) => Some(LockConfig {
                mode,
                retention: Some(d),
            }),
        }
    }

    fn s3(&mut self, section: &Section<RawStore>, prefix: Option<String>) -> Option<S3Config> {
        let raw = &section.raw;
        let mut ok = true;

        let bucket = self.require(
            section,
            "bucket",
            raw.bucket.as_ref(),
            "add bucket = \"my-backups\"",
        );
        let bucket = bucket.and_then(|b| match check_bucket(b.get_ref()) {
            Ok(()) => Some(b.get_ref().clone()),
            Err(problem) => {
                self.error(
                    section.key("bucket"),
                    b.span(),
                    format!("invalid bucket name \"{}\": {problem}", b.get_ref().escape_debug()),
                    Some("bucket names are 3-63 characters of lowercase letters, digits, `-` and `.`, starting \
                          and ending with a letter or digit"
                        .into()),
                );
                None
            }
        });

        let mut endpoint = None;
        if let Some(e) = &raw.endpoint {
            match check_endpoint(e.get_ref()) {
                Ok(()) => endpoint = Some(e.get_ref().trim().to_owned()),
                Err(problem) => {
                    ok = false;
                    self.error(
                        section.key("endpoint"),
                        e.span(),
                        problem,
                        Some("write the URL of the S3 API, e.g. \"https://s3.eu-central-1.amazonaws.com\"".into()),
                    );
                }
            }
        }
        let mut region = None;
        if let Some(r) = &raw.region {
            region = self.non_empty(section.key("region"), r);
            ok &= region.is_some();
        }
        let mut profile = None;
        if let Some(p) = &raw.profile {
            profile = self.non_empty(section.key("profile"), p);
            ok &= profile.is_some();
        }

        let part_size = match &raw.part_size {
            None => Some(DEFAULT_PART_SIZE),
            Some(size) => self.part_size(section, size),
        };
        let parts_in_flight = match &raw.parts_in_flight {
            None => Some(DEFAULT_PARTS_IN_FLIGHT),
            Some(n) => self
                .int_in_range(
                    section.key("parts_in_flight"),
                    n,
                    1,
                    MAX_PARTS_IN_FLIGHT as i64,
                )
                .and_then(|n| usize::try_from(n).ok()),
        };

        let credentials = self.s3_credentials(section);
        if let (Some((Some(_), _, _)), Some(p)) = (&credentials, &raw.profile) {
            ok = false;
            self.error(
                section.key("profile"),
                p.span(),
                "`profile` and static credentials (`access_key_id_*`) are both set",
                Some("keep one: either a named AWS profile or static keys".into()),
            );
        }
        let (access, secret, token) = credentials?;
        if !ok {
            return None;
        }
        Some(S3Config {
            endpoint,
            bucket: bucket?,
            prefix: prefix?,
            region,
            path_style: raw.path_style.as_ref().is_some_and(|p| *p.get_ref()),
            part_size: part_size?,
            parts_in_flight: parts_in_flight?,
            access_key_id: access,
            secret_access_key: secret,
            session_token: token,
            profile,
        })
    }

    /// Static S3 credentials: access key id and secret access key both or neither, a session token only with
    /// them. `None` if anything was wrong (reported).
    fn s3_credentials(&mut self, section: &Section<RawStore>) -> Option<S3Credentials> {
        let raw = &section.raw;
        let path = section.path.as_str();
        let access = self.secret(
            path,
            "access_key_id",
            raw.access_key_id_env.as_ref(),
            raw.access_key_id_file.as_ref(),
        );
        let secret = self.secret(
            path,
            "secret_access_key",
            raw.secret_access_key_env.as_ref(),
            raw.secret_access_key_file.as_ref(),
        );
        let token = self.secret(
            path,
            "session_token",
            raw.session_token_env.as_ref(),
            raw.session_token_file.as_ref(),
        );
        // The key that was actually written, for the error's key and line.
        let written = |base: &str,
                       env: &Option<Spanned<String>>,
                       file: &Option<Spanned<String>>| match (env, file) {
            (Some(env), _) => (section.key(&format!("{base}_env")), env.span()),
            (None, Some(file)) => (section.key(&format!("{base}_file")), file.span()),
            (None, None) => (section.key(&format!("{base}_env")), section.span.clone()),
        };
        let mismatch = match (&access, &secret, &token) {
            (Got::Value(_), Got::Value(_), Got::Absent | Got::Value(_)) => None,
            (Got::Absent, Got::Absent, Got::Absent) => None,
            (Got::Value(_), Got::Absent, _) => Some((
                written("access_key_id", &raw.access_key_id_env, &raw.access_key_id_file),
                "an access key id is set without a secret access key",
                "set `secret_access_key_env` or `secret_access_key_file` too, or remove the access key id to \
                 use the AWS credential chain",
            )),
            (Got::Absent, Got::Value(_), _) => Some((
                written("secret_access_key", &raw.secret_access_key_env, &raw.secret_access_key_file),
                "a secret access key is set without an access key id",
                "set `access_key_id_env` or `access_key_id_file` too, or remove the secret access key to use \
                 the AWS credential chain",
            )),
            (Got::Absent, Got::Absent, Got::Value(_)) => Some((
                written("session_token", &raw.session_token_env, &raw.session_token_file),
                "a session token is set without static credentials",
                "a session token only goes with `access_key_id_*` and `secret_access_key_*`",
            )),
            // Something was already reported as invalid.
            _ => return None,
        };
        if let Some(((key, span), message, hint)) = mismatch {
            self.error(key, span, message, Some(hint.into()));
            return None;
        }
        let value = |got: Got<SecretRef>| match got {
            Got::Value(v) => Some(v),
            Got::Absent | Got::Bad => None,
        };
        Some((value(access), value(secret), value(token)))
    }

    fn part_size(&mut self, section: &Section<RawStore>, size: &Spanned<RawSize>) -> Option<u64> {
        let bytes = match size.get_ref() {
            RawSize::Bytes(n) => u64::try_from(*n).map_err(|_| format!("{n} is negative")),
            RawSize::Text(text) => parse_size(text),
        };
        match bytes {
            Ok(n) if (MIN_PART_SIZE..=MAX_PART_SIZE).contains(&n) => Some(n),
            Ok(n) => {
                self.error(
                    section.key("part_size"),
                    size.span(),
                    format!(
                        "part size {} is out of range: S3 parts must be between 5 MiB and 5 GiB",
                        human_size(n)
                    ),
                    Some("the default, \"16MiB\", suits most databases".into()),
                );
                None
            }
            Err(problem) => {
                self.error(
                    section.key("part_size"),
                    size.span(),
                    format!("invalid size: {problem}"),
                    Some("write a size like \"16MiB\" or \"1GiB\", or a number of bytes".into()),
                );
                None
            }
        }
    }

    fn fs(&mut self, section: &Section<RawStore>, prefix: Option<String>) -> Option<FsConfig> {
        let path = self.require(
            section,
            "path",
            section.raw.path.as_ref(),
            "add path = \"/var/backups/lifeboat\" (the directory to write to)",
        );
        let path = path.and_then(|p| self.path(section.key("path"), p));
        Some(FsConfig {
            path: path?,
            prefix: prefix?,
        })
    }

    // ----- [encryption] ----------------------------------------------------------------------------------------

    fn encryption(
        &mut self,
        span: Option<Range<usize>>,
        section: Option<Section<RawEncryption>>,
    ) -> Option<EncryptionConfig> {
        let Some(section) = section else {
            if span.is_none() {
                self.diag.push(
                    "encryption",
                    None,
                    "missing [encryption] table: backups are always encrypted",
                    Some(
                        "add [encryption] with recipients = [\"age1…\"] (public keys; `age-keygen -y key.txt` prints \
                         one) or recipients_file = \"recipients.txt\""
                            .into(),
                    ),
                );
            }
            return None;
        };
        let raw = &section.raw;
        let mut ok = true;
        let mut recipients = Vec::new();
        if let Some(list) = &raw.recipients {
            let (items, items_ok) = self.strings(&section.key("recipients"), list);
            ok &= items_ok;
            for (key, text, text_span) in items {
                match parse_recipient(&text) {
                    Ok(r) => recipients.push(r),
                    Err((message, hint)) => {
                        ok = false;
                        self.error(key, text_span, message, Some(hint));
                    }
                }
            }
        }
        let mut recipients_files = Vec::new();
        if let Some(list) = &raw.recipients_file {
            let (items, items_ok) = self.strings(&section.key("recipients_file"), list);
            ok &= items_ok;
            for (key, text, text_span) in items {
                match self.path(key, &Spanned::new(text_span, text)) {
                    Some(p) => recipients_files.push(p),
                    None => ok = false,
                }
            }
        }
        let signing_key = match self.secret(
            &section.path,
            "signing_key",
            raw.signing_key_env.as_ref(),
            raw.signing_key_file.as_ref(),
        ) {
            Got::Absent => None,
            Got::Value(secret) => Some(secret),
            Got::Bad => {
                ok = false;
                None
            }
        };
        let mut signing_public_keys = Vec::new();
        if let Some(list) = &raw.signing_public_keys {
            let (items, items_ok) = self.strings(&section.key("signing_public_keys"), list);
            ok &= items_ok;
            for (key, text, text_span) in items {
                match parse_signing_public_key(&text) {
                    Ok(k) => signing_public_keys.push(k),
                    Err((message, hint)) => {
                        ok = false;
                        self.error(key, text_span, message, Some(hint));
                    }
                }
            }
        }
        let nothing_given =
            is_empty(raw.recipients.as_ref()) && is_empty(raw.recipients_file.as_ref());
        if nothing_given
            && !section.poisoned.contains("recipients")
            && !section.poisoned.contains("recipients_file")
        {
            ok = false;
            let span = raw
                .recipients
                .as_ref()
                .map_or(section.span.clone(), |r| r.span());
            self.error(
                "encryption.recipients",
                span,
                "no recipients: backups could not be encrypted to anyone",
                Some(
                    "add recipients = [\"age1…\"] (public keys; `age-keygen -y key.txt` prints one) or \
                     recipients_file = \"recipients.txt\""
                        .into(),
                ),
            );
        }
        ok.then_some(EncryptionConfig {
            recipients,
            recipients_files,
            signing_key,
            signing_public_keys,
        })
    }

    // ----- [jobs.NAME] -----------------------------------------------------------------------------------------

    fn job(&mut self, named: Named<RawJob>, stores: &BTreeSet<String>) -> Option<JobConfig> {
        let section = named.section?;
        let name_ok = self.name("job", &section.path, &named.name, named.name_span);
        let raw = &section.raw;

        let kind = self.require(
            &section,
            "kind",
            raw.kind.as_ref(),
            "add kind = \"postgres\"",
        );
        // With a missing or unknown kind the common keys are still checked; the kind's own keys cannot be.
        let kind_name = kind.map(|k| k.get_ref().clone());
        let kind_ok = match kind.map(|k| (k.get_ref().as_str(), k.span())) {
            None => false,
            Some(("postgres" | "volume" | "postgres_physical", _)) => true,
            Some((other, span)) if UNIMPLEMENTED_JOB_KINDS.contains(&other) => {
                // Designed but not built: one clear error, and nothing else about this job.
                self.error(
                    section.key("kind"),
                    span,
                    format!("job kind \"{other}\" is not implemented yet"),
                    Some("the implemented kinds are \"postgres\", \"postgres_physical\" and \"volume\"".into()),
                );
                return None;
            }
            Some((other, span)) => {
                self.error(
                    section.key("kind"),
                    span,
                    format!("unknown job kind \"{}\"", other.escape_debug()),
                    Some("use kind = \"postgres\" (logical dumps), \"postgres_physical\" (a base backup of the whole cluster) or \"volume\" (a directory)".into()),
                );
                false
            }
        };

        let stores_ok = self.job_stores(&section, stores);
        let schedule = self.schedule(&section);
        let compression = self.compression(&section);
        let run = self.run_policy(&section);
        let hooks = self.hooks(&section);
        let retention = self.retention(&section);
        let source = match (kind_ok, kind_name.as_deref()) {
            (true, Some("volume")) => {
                self.reject_keys_of_other_kinds(
                    &section,
                    "jobs",
                    "volume",
                    &[JOB_COMMON_KEYS, JOB_VOLUME_KEYS],
                );
                self.volume(&section).map(SourceConfig::Volume)
            }
            (true, Some("postgres_physical")) => {
                self.reject_keys_of_other_kinds(
                    &section,
                    "jobs",
                    "postgres_physical",
                    &[JOB_COMMON_KEYS, JOB_POSTGRES_KEYS, JOB_PHYSICAL_KEYS],
                );
                self.postgres(&section, true)
                    .map(SourceConfig::PostgresPhysical)
            }
            (true, _) => {
                self.reject_keys_of_other_kinds(
                    &section,
                    "jobs",
                    "postgres",
                    &[JOB_COMMON_KEYS, JOB_POSTGRES_KEYS],
                );
                self.postgres(&section, false).map(SourceConfig::Postgres)
            }
            (false, _) => None,
        };

        let drill = match &source {
            Some(SourceConfig::Postgres(pg) | SourceConfig::PostgresPhysical(pg)) => {
                self.job_drill(&section, &pg.databases)
            }
            Some(SourceConfig::Volume(_)) => match &section.raw.drill {
                None => Some(JobDrill::default()),
                Some(d) => {
                    self.error(
                        section.key("drill"),
                        d.span(),
                        "drills restore PostgreSQL dumps; a volume job has no [drill] table",
                        Some("remove it; `lifeboat verify --identity` checks every file of a volume snapshot".into()),
                    );
                    None
                }
            },
            None => None,
        };

        if !name_ok {
            return None;
        }
        Some(JobConfig {
            name: named.name,
            stores: stores_ok?,
            schedule: schedule?,
            compression: compression?,
            run: run?,
            drill: drill?,
            hooks: hooks?,
            retention: retention?,
            source: source?,
        })
    }

    /// `keep_*`: counts of 0 to 100,000 (`keep_min` at least 1).
    fn retention(&mut self, section: &Section<RawJob>) -> Option<Retention> {
        let raw = &section.raw;
        let mut r = Retention::default();
        let mut ok = true;
        for (key, value, slot, min) in [
            ("keep_last", &raw.keep_last, &mut r.last, 0),
            ("keep_hourly", &raw.keep_hourly, &mut r.hourly, 0),
            ("keep_daily", &raw.keep_daily, &mut r.daily, 0),
            ("keep_weekly", &raw.keep_weekly, &mut r.weekly, 0),
            ("keep_monthly", &raw.keep_monthly, &mut r.monthly, 0),
            ("keep_yearly", &raw.keep_yearly, &mut r.yearly, 0),
            ("keep_min", &raw.keep_min, &mut r.min, 1),
        ] {
            let Some(v) = value else { continue };
            match self
                .int_in_range(section.key(key), v, min, 100_000)
                .and_then(|n| u32::try_from(n).ok())
            {
                Some(n) => *slot = n,
                None => ok = false,
            }
        }
        ok.then_some(r)
    }

    /// `before`, `after`, `hook_timeout`: each hook one command as an argument list, run without a shell.
    fn hooks(&mut self, section: &Section<RawJob>) -> Option<Hooks> {
        let raw = &section.raw;
        let mut ok = true;
        let mut hooks = Hooks::default();
        for (key, value, slot) in [
            ("before", &raw.before, &mut hooks.before),
            ("after", &raw.after, &mut hooks.after),
        ] {
            let Some(argv) = value else { continue };
            let args: Vec<String> = argv.get_ref().iter().map(|a| a.get_ref().clone()).collect();
            match args.first() {
                None => {
                    ok = false;
                    self.error(
                        section.key(key),
                        argv.span(),
                        format!("`{key}` is an empty command"),
                        Some(format!("write the program and its arguments, e.g. {key} = [\"/sbin/fsfreeze\", \"--freeze\", \"/data\"], or remove `{key}`")),
                    );
                }
                Some(program) if program.trim().is_empty() => {
                    ok = false;
                    self.error(
                        section.key(key),
                        argv.span(),
                        format!("`{key}` has an empty program name"),
                        None,
                    );
                }
                Some(_) => *slot = Some(args),
            }
        }
        if let Some(timeout) = &raw.hook_timeout {
            match self.duration(
                section.key("hook_timeout"),
                timeout,
                Duration::from_secs(1),
                ONE_DAY,
            ) {
                Some(d) => hooks.timeout = d,
                None => ok = false,
            }
        }
        ok.then_some(hooks)
    }

    fn volume(&mut self, section: &Section<RawJob>) -> Option<VolumeJob> {
        let raw = &section.raw;
        let path = self.require(
            section,
            "path",
            raw.path.as_ref(),
            "add path = \"/var/lib/app/uploads\" (the directory to back up)",
        );
        let path = path.and_then(|p| self.path(section.key("path"), p));
        let mut ok = true;
        let mut exclude = Vec::new();
        if let Some(list) = &raw.exclude {
            let key = section.key("exclude");
            let (patterns, strings_ok) = self.strings(&key, list);
            ok &= strings_ok;
            for (item_key, pattern, span) in patterns {
                match globset::Glob::new(&pattern) {
                    Ok(_) => exclude.push(pattern),
                    Err(e) => {
                        ok = false;
                        self.error(
                            item_key,
                            span,
                            format!("invalid glob \"{}\": {}", pattern.escape_debug(), e.kind()),
                            Some("e.g. \"*.tmp\", \"cache/**\" or \"**/node_modules\"".into()),
                        );
                    }
                }
            }
        }
        let volume = VolumeJob {
            path: path?,
            exclude,
            one_file_system: raw.one_file_system.as_ref().is_some_and(|b| *b.get_ref()),
            ignore_unreadable: raw.ignore_unreadable.as_ref().is_some_and(|b| *b.get_ref()),
        };
        ok.then_some(volume)
    }

    /// `[jobs.NAME.drill]`: SQL checks and the restored database they run in.
    fn job_drill(&mut self, section: &Section<RawJob>, databases: &Databases) -> Option<JobDrill> {
        let Some(raw) = &section.raw.drill else {
            return Some(JobDrill::default());
        };
        let raw = raw.get_ref();
        let path = section.key("drill");
        let mut ok = true;
        let mut checks = Vec::new();
        if let Some(list) = &raw.checks {
            for (i, check) in list.get_ref().iter().enumerate() {
                let sql = check.get_ref().trim();
                if sql.is_empty() {
                    ok = false;
                    self.error(
                        format!("{path}.checks[{i}]"),
                        check.span(),
                        "empty SQL check",
                        Some("write a query returning one boolean, e.g. \"select count(*) > 0 from orders\"".into()),
                    );
                } else {
                    checks.push(sql.to_owned());
                }
            }
        }
        let database = match (&raw.database, databases) {
            (Some(db), Databases::List(list)) if !list.contains(db.get_ref()) => {
                ok = false;
                self.error(
                    format!("{path}.database"),
                    db.span(),
                    format!(
                        "database \"{}\" is not one the job dumps",
                        db.get_ref().escape_debug()
                    ),
                    Some(format!("the job dumps: {}", list.join(", "))),
                );
                None
            }
            (Some(db), _) => Some(db.get_ref().clone()),
            (None, Databases::List(list)) if list.len() == 1 => list.first().cloned(),
            (None, _) if checks.is_empty() => None,
            (None, _) => {
                ok = false;
                self.error(
                    format!("{path}.database"),
                    section
                        .raw
                        .drill
                        .as_ref()
                        .map_or(section.span.clone(), |d| d.span()),
                    "`checks` need a `database` to run in: the job dumps more than one",
                    Some("add database = \"app\" naming one of the job's databases".into()),
                );
                None
            }
        };
        ok.then_some(JobDrill { checks, database })
    }

    // ----- [drill] ---------------------------------------------------------------------------------------------

    fn drill(&mut self, section: Option<Section<RawDrill>>) -> Option<DrillConfig> {
        let Some(section) = section else {
            return Some(DrillConfig::default());
        };
        let raw = &section.raw;
        let mut ok = true;
        let mut config = DrillConfig::default();
        if let Some(url) = &raw.scratch_url {
            match inspect_pg_url(url.get_ref()) {
                Ok(_) => config.scratch_url = Some(url.get_ref().trim().to_owned()),
                Err(problem) => {
                    ok = false;
                    let (message, hint) = problem.describe();
                    self.error(section.key("scratch_url"), url.span(), message, Some(hint));
                }
            }
        }
        match self.secret(
            &section.path,
            "password",
            raw.password_env.as_ref(),
            raw.password_file.as_ref(),
        ) {
            Got::Absent => {}
            Got::Bad => ok = false,
            Got::Value(secret) => config.password = Some(secret),
        }
        if let Some(dir) = &raw.pg_bin_dir {
            match self.path(section.key("pg_bin_dir"), dir) {
                Some(p) => config.pg_bin_dir = Some(p),
                None => ok = false,
            }
        }
        if let Some(user) = &raw.run_as {
            let name = user.get_ref().trim();
            let valid = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
            if valid {
                config.run_as = Some(name.to_owned());
            } else {
                ok = false;
                self.error(
                    section.key("run_as"),
                    user.span(),
                    format!("\"{}\" is not a user name", name.escape_debug()),
                    Some("name an existing unprivileged OS user, e.g. \"postgres\"".into()),
                );
            }
        }
        ok.then_some(config)
    }

    fn run_policy(&mut self, section: &Section<RawJob>) -> Option<RunPolicy> {
        let raw = &section.raw;
        let mut policy = RunPolicy::default();
        let mut ok = true;
        if let Some(jitter) = &raw.jitter {
            match self.duration(section.key("jitter"), jitter, Duration::ZERO, ONE_DAY) {
                Some(d) => policy.jitter = d,
                None => ok = false,
            }
        }
        if let Some(catch_up) = &raw.catch_up {
            policy.catch_up = *catch_up.get_ref();
        }
        if let Some(timeout) = &raw.timeout {
            match self.duration(
                section.key("timeout"),
                timeout,
                Duration::from_secs(1),
                Duration::from_secs(30 * 24 * 60 * 60),
            ) {
                Some(d) => policy.timeout = Some(d),
                None => ok = false,
            }
        }
        if let Some(attempts) = &raw.retry_attempts {
            match self
                .int_in_range(section.key("retry_attempts"), attempts, 1, 100)
                .and_then(|n| u32::try_from(n).ok())
            {
                Some(n) => policy.retry_attempts = n,
                None => ok = false,
            }
        }
        if let Some(backoff) = &raw.retry_backoff {
            match self.duration(
                section.key("retry_backoff"),
                backoff,
                Duration::ZERO,
                crate::types::MAX_RETRY_BACKOFF,
            ) {
                Some(d) => policy.retry_backoff = d,
                None => ok = false,
            }
        }
        ok.then_some(policy)
    }

    fn schedule(&mut self, section: &Section<RawJob>) -> Option<Schedule> {
        let raw = &section.raw;
        let timezone = match &raw.timezone {
            None => Some(chrono_tz::UTC),
            Some(tz) => {
                let text = tz.get_ref().trim();
                match text.parse::<chrono_tz::Tz>() {
                    Ok(tz) => Some(tz),
                    Err(_) => {
                        let hint = chrono_tz::TZ_VARIANTS
                            .iter()
                            .find(|known| known.name().eq_ignore_ascii_case(text))
                            .map_or_else(
                                || {
                                    "use an IANA time zone name, e.g. \"UTC\", \"Europe/Berlin\" or \
                                     \"America/New_York\""
                                        .to_owned()
                                },
                                |known| format!("did you mean \"{}\"?", known.name()),
                            );
                        self.error(
                            section.key("timezone"),
                            tz.span(),
                            format!("unknown time zone \"{}\"", text.escape_debug()),
                            Some(hint),
                        );
                        None
                    }
                }
            }
        };
        let expr = self.require(
            section,
            "schedule",
            raw.schedule.as_ref(),
            "add a 5-field cron schedule, e.g. schedule = \"0 */6 * * *\" (every 6 hours)",
        )?;
        // Check the expression even when the time zone is bad, so both problems are reported.
        match Schedule::new(expr.get_ref(), timezone.unwrap_or(chrono_tz::UTC)) {
            Ok(schedule) => timezone.map(|_| schedule),
            Err(e) => {
                self.error(section.key("schedule"), expr.span(), e.message, e.hint);
                None
            }
        }
    }

    fn compression(&mut self, section: &Section<RawJob>) -> Option<CompressionConfig> {
        let raw = &section.raw;
        let level = match &raw.compression_level {
            None => Some(DEFAULT_COMPRESSION_LEVEL),
            Some(l) => self
                .int_in_range(section.key("compression_level"), l, 1, 19)
                .and_then(|n| i32::try_from(n).ok()),
        };
        let threads = match &raw.compression_threads {
            None => Some(CompressionConfig::default().threads),
            Some(t) => self
                .int_in_range(section.key("compression_threads"), t, 0, 64)
                .and_then(|n| u32::try_from(n).ok()),
        };
        Some(CompressionConfig {
            level: level?,
            threads: threads?,
        })
    }

    /// A `postgres` job (`physical = false`) or a `postgres_physical` one, whose `databases` (the databases whose
    /// tables are listed and counted at backup start, and where drill checks may run) default to all.
    fn postgres(&mut self, section: &Section<RawJob>, physical: bool) -> Option<PostgresJob> {
        let raw = &section.raw;
        let url = self.require(
            section,
            "url",
            raw.url.as_ref(),
            "add url = \"postgres://backup@db.internal:5432/app\" (no password in it)",
        );
        let url = url.and_then(|u| match inspect_pg_url(u.get_ref()) {
            Ok(info) => Some((u.get_ref().trim().to_owned(), info, u.span())),
            Err(problem) => {
                let (message, hint) = problem.describe();
                self.error(section.key("url"), u.span(), message, Some(hint));
                None
            }
        });

        let databases = match &raw.databases {
            Some(list) => self.databases(section, list),
            None if physical => Some(Databases::All),
            None => match &url {
                None => None,
                Some((_, info, _)) if info.dbname.is_some() => {
                    info.dbname.clone().map(|db| Databases::List(vec![db]))
                }
                Some((_, _, span)) => {
                    self.error(
                        section.key("url"),
                        span.clone(),
                        "the url names no database and `databases` is not set",
                        Some(
                            "put the database in the url (postgres://user@host/app), or set databases = [\"app\"] \
                             or databases = \"all\""
                                .into(),
                        ),
                    );
                    None
                }
            },
        };

        let password = match self.secret(
            &section.path,
            "password",
            raw.password_env.as_ref(),
            raw.password_file.as_ref(),
        ) {
            Got::Absent => Some(None),
            Got::Value(secret) => Some(Some(secret)),
            Got::Bad => None,
        };
        let pg_bin_dir = match &raw.pg_bin_dir {
            None => Some(None),
            Some(dir) => self.path(section.key("pg_bin_dir"), dir).map(Some),
        };
        Some(PostgresJob {
            url: url?.0,
            databases: databases?,
            password: password?,
            pg_bin_dir: pg_bin_dir?,
            fast_checkpoint: raw.fast_checkpoint.as_ref().is_some_and(|b| *b.get_ref()),
        })
    }

    fn databases(
        &mut self,
        section: &Section<RawJob>,
        list: &Spanned<OneOrMany>,
    ) -> Option<Databases> {
        let key = section.key("databases");
        match list.get_ref() {
            OneOrMany::One(text) if text == "all" => Some(Databases::All),
            OneOrMany::One(text) => {
                self.error(
                    key,
                    list.span(),
                    "`databases` must be \"all\" or a list of database names",
                    Some(format!(
                        "to dump one database, write databases = [\"{}\"]",
                        text.escape_debug()
                    )),
                );
                None
            }
            OneOrMany::Many(names) if names.is_empty() => {
                self.error(
                    key,
                    list.span(),
                    "the list of databases is empty",
                    Some("name at least one database, or write databases = \"all\"".into()),
                );
                None
            }
            OneOrMany::Many(_) => {
                let (names, mut ok) = self.strings(&key, list);
                let mut seen = BTreeSet::new();
                let mut out = Vec::new();
                for (item_key, name, span) in names {
                    if name.is_empty() {
                        ok = false;
                        self.error(item_key, span, "database name is empty", None);
                    } else if !seen.insert(name.clone()) {
                        ok = false;
                        self.error(
                            item_key,
                            span,
                            format!("database \"{}\" is listed twice", name.escape_debug()),
                            None,
                        );
                    } else {
                        out.push(name);
                    }
                }
                ok.then_some(Databases::List(out))
            }
        }
    }
}

/// Absent, or an empty list.
fn is_empty(value: Option<&Spanned<OneOrMany>>) -> bool {
    value.is_none_or(|v| matches!(v.get_ref(), OneOrMany::Many(list) if list.is_empty()))
}

/// Removes `.` and resolves `..` components without touching the file system (so the path need not exist),
/// e.g. `/etc/lifeboat/../data` → `/etc/data`.
fn normalize_lexically(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                // `/..` is `/`; a relative path keeps leading `..`s.
                if out.parent().is_some() && out.file_name().is_some() {
                    out.pop();
                } else if !out.has_root() {
                    out.push(c);
                }
            }
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod normalize_tests {
    use super::normalize_lexically;
    use std::path::Path;

    #[test]
    fn dot_dot_is_resolved_without_the_file_system() {
        assert_eq!(
            normalize_lexically(Path::new("/a/b/../c/./d")),
            Path::new("/a/c/d")
        );
        assert_eq!(normalize_lexically(Path::new("/../x")), Path::new("/x"));
    }
}
