//! Serde structs mirroring the TOML tables one to one (`deny_unknown_fields`), with spans for error lines.
//! No logic lives here: every key is optional at this level, so that validation can report all missing keys.

use std::fmt;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;
use toml::Spanned;

/// Top-level keys (tables) of the document.
pub(crate) const TOP_LEVEL_KEYS: &[&str] = &["daemon", "stores", "encryption", "jobs", "drill"];

/// Keys of `[daemon]`; must list exactly the fields of [`RawDaemon`] (checked by a test).
pub(crate) const DAEMON_KEYS: &[&str] = &[
    "listen",
    "max_concurrent_jobs",
    "pg_bin_dirs",
    "shutdown_grace",
    "probe_interval",
    "audit_interval",
];

/// Keys every `[stores.NAME]` accepts, whatever its kind.
pub(crate) const STORE_COMMON_KEYS: &[&str] = &[
    "kind",
    "lock_mode",
    "retention",
    "prefix",
    "require_immutable",
];
/// Keys only `kind = "s3"` stores accept.
pub(crate) const STORE_S3_KEYS: &[&str] = &[
    "endpoint",
    "bucket",
    "region",
    "path_style",
    "part_size",
    "parts_in_flight",
    "access_key_id_env",
    "access_key_id_file",
    "secret_access_key_env",
    "secret_access_key_file",
    "session_token_env",
    "session_token_file",
    "profile",
];
/// Keys only `kind = "fs"` stores accept.
pub(crate) const STORE_FS_KEYS: &[&str] = &["path"];

/// Keys of `[drill]`.
pub(crate) const DRILL_KEYS: &[&str] = &[
    "scratch_url",
    "password_file",
    "password_env",
    "pg_bin_dir",
    "run_as",
];

/// Keys of `[jobs.NAME.drill]` (serde's `deny_unknown_fields` rejects others; listed for the tests).
#[cfg(test)]
pub(crate) const JOB_DRILL_KEYS: &[&str] = &["checks", "database"];

/// Keys of `[encryption]`.
pub(crate) const ENCRYPTION_KEYS: &[&str] = &[
    "recipients",
    "recipients_file",
    "signing_key_file",
    "signing_key_env",
    "signing_public_keys",
];

/// Keys every `[jobs.NAME]` accepts, whatever its kind.
pub(crate) const JOB_COMMON_KEYS: &[&str] = &[
    "kind",
    "store",
    "stores",
    "schedule",
    "timezone",
    "compression_level",
    "compression_threads",
    "jitter",
    "catch_up",
    "timeout",
    "retry_attempts",
    "retry_backoff",
    "drill",
    "before",
    "after",
    "hook_timeout",
    "keep_last",
    "keep_hourly",
    "keep_daily",
    "keep_weekly",
    "keep_monthly",
    "keep_yearly",
    "keep_min",
];
/// Keys only `kind = "postgres"` jobs accept.
pub(crate) const JOB_POSTGRES_KEYS: &[&str] = &[
    "url",
    "databases",
    "password_file",
    "password_env",
    "pg_bin_dir",
];

/// Keys only `kind = "postgres_physical"` jobs accept (besides the `postgres` ones).
pub(crate) const JOB_PHYSICAL_KEYS: &[&str] = &["fast_checkpoint"];

/// Keys only `kind = "volume"` jobs accept.
pub(crate) const JOB_VOLUME_KEYS: &[&str] =
    &["path", "exclude", "one_file_system", "ignore_unreadable"];

/// Job kinds that are designed but not built yet: named in a clear error instead of "unknown variant".
pub(crate) const UNIMPLEMENTED_JOB_KINDS: &[&str] = &[];

/// Every key of a store table, whatever its kind.
pub(crate) fn store_keys() -> impl Iterator<Item = &'static str> {
    STORE_COMMON_KEYS
        .iter()
        .chain(STORE_S3_KEYS)
        .chain(STORE_FS_KEYS)
        .copied()
}

/// Every key of a job table, whatever its kind.
pub(crate) fn job_keys() -> impl Iterator<Item = &'static str> {
    JOB_COMMON_KEYS
        .iter()
        .chain(JOB_POSTGRES_KEYS)
        .chain(JOB_PHYSICAL_KEYS)
        .chain(JOB_VOLUME_KEYS)
        .copied()
}

/// `[daemon]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDaemon {
    pub listen: Option<Spanned<String>>,
    pub max_concurrent_jobs: Option<Spanned<i64>>,
    pub pg_bin_dirs: Option<Spanned<Vec<Spanned<String>>>>,
    pub shutdown_grace: Option<Spanned<String>>,
    pub probe_interval: Option<Spanned<String>>,
    pub audit_interval: Option<Spanned<String>>,
}

/// `[stores.NAME]`, all kinds flattened into one table; validation rejects keys of the wrong kind.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawStore {
    pub kind: Option<Spanned<String>>,
    pub lock_mode: Option<Spanned<String>>,
    pub retention: Option<Spanned<String>>,
    pub prefix: Option<Spanned<String>>,
    pub require_immutable: Option<Spanned<bool>>,
    // s3
    pub endpoint: Option<Spanned<String>>,
    pub bucket: Option<Spanned<String>>,
    pub region: Option<Spanned<String>>,
    pub path_style: Option<Spanned<bool>>,
    pub part_size: Option<Spanned<RawSize>>,
    pub parts_in_flight: Option<Spanned<i64>>,
    pub access_key_id_env: Option<Spanned<String>>,
    pub access_key_id_file: Option<Spanned<String>>,
    pub secret_access_key_env: Option<Spanned<String>>,
    pub secret_access_key_file: Option<Spanned<String>>,
    pub session_token_env: Option<Spanned<String>>,
    pub session_token_file: Option<Spanned<String>>,
    pub profile: Option<Spanned<String>>,
    // fs
    pub path: Option<Spanned<String>>,
}

/// `[encryption]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawEncryption {
    pub recipients: Option<Spanned<OneOrMany>>,
    pub recipients_file: Option<Spanned<OneOrMany>>,
    pub signing_key_file: Option<Spanned<String>>,
    pub signing_key_env: Option<Spanned<String>>,
    pub signing_public_keys: Option<Spanned<OneOrMany>>,
}

/// `[jobs.NAME]`, all kinds flattened into one table; validation rejects keys of the wrong kind.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawJob {
    pub kind: Option<Spanned<String>>,
    pub store: Option<Spanned<String>>,
    pub stores: Option<Spanned<Vec<Spanned<String>>>>,
    pub schedule: Option<Spanned<String>>,
    pub timezone: Option<Spanned<String>>,
    pub compression_level: Option<Spanned<i64>>,
    pub compression_threads: Option<Spanned<i64>>,
    pub jitter: Option<Spanned<String>>,
    pub catch_up: Option<Spanned<bool>>,
    pub timeout: Option<Spanned<String>>,
    pub retry_attempts: Option<Spanned<i64>>,
    pub retry_backoff: Option<Spanned<String>>,
    pub drill: Option<Spanned<RawJobDrill>>,
    pub before: Option<Spanned<Vec<Spanned<String>>>>,
    pub after: Option<Spanned<Vec<Spanned<String>>>>,
    pub hook_timeout: Option<Spanned<String>>,
    pub keep_last: Option<Spanned<i64>>,
    pub keep_hourly: Option<Spanned<i64>>,
    pub keep_daily: Option<Spanned<i64>>,
    pub keep_weekly: Option<Spanned<i64>>,
    pub keep_monthly: Option<Spanned<i64>>,
    pub keep_yearly: Option<Spanned<i64>>,
    pub keep_min: Option<Spanned<i64>>,
    // postgres
    pub url: Option<Spanned<String>>,
    pub databases: Option<Spanned<OneOrMany>>,
    pub password_file: Option<Spanned<String>>,
    pub password_env: Option<Spanned<String>>,
    pub pg_bin_dir: Option<Spanned<String>>,
    // postgres_physical
    pub fast_checkpoint: Option<Spanned<bool>>,
    // volume
    pub path: Option<Spanned<String>>,
    pub exclude: Option<Spanned<OneOrMany>>,
    pub one_file_system: Option<Spanned<bool>>,
    pub ignore_unreadable: Option<Spanned<bool>>,
}

/// `[jobs.NAME.drill]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawJobDrill {
    pub checks: Option<Spanned<Vec<Spanned<String>>>>,
    pub database: Option<Spanned<String>>,
}

/// `[drill]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDrill {
    pub scratch_url: Option<Spanned<String>>,
    pub password_file: Option<Spanned<String>>,
    pub password_env: Option<Spanned<String>>,
    pub pg_bin_dir: Option<Spanned<String>>,
    pub run_as: Option<Spanned<String>>,
}

/// A string or a list of strings (`recipients_file = "a"` or `["a", "b"]`; `databases = "all"` or `["app"]`).
///
/// List items are kept as any TOML value, so that validation can report a wrongly typed item by its index and
/// still check the others.
#[derive(Debug)]
pub(crate) enum OneOrMany {
    One(String),
    Many(Vec<Spanned<toml::Value>>),
}

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OneOrMany;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or a list of strings")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<OneOrMany, E> {
                Ok(OneOrMany::One(v.to_owned()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<OneOrMany, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<Spanned<toml::Value>>()? {
                    items.push(item);
                }
                Ok(OneOrMany::Many(items))
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// A size: integer bytes or a string like `"16MiB"` (parsed by validation).
#[derive(Debug)]
pub(crate) enum RawSize {
    Bytes(i64),
    Text(String),
}

impl<'de> Deserialize<'de> for RawSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = RawSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size like \"16MiB\" or a number of bytes")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawSize, E> {
                Ok(RawSize::Bytes(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawSize, E> {
                Ok(RawSize::Bytes(i64::try_from(v).unwrap_or(i64::MAX)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawSize, E> {
                Ok(RawSize::Text(v.to_owned()))
            }
        }
        deserializer.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    //! The key lists above drive the unknown-key check, the per-kind checks and the documentation test, so they
    //! must match the serde structs exactly: these tests read the structs' field names through serde.

    use super::*;
    use std::cell::RefCell;

    #[derive(Debug)]
    struct Stop;
    impl fmt::Display for Stop {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("stop")
        }
    }
    impl std::error::Error for Stop {}
    impl de::Error for Stop {
        fn custom<T: fmt::Display>(_: T) -> Self {
            Stop
        }
    }

    /// A deserializer that records the field list serde hands to `deserialize_struct`, then stops.
    struct FieldNames<'a>(&'a RefCell<Vec<&'static str>>);
    impl<'de> Deserializer<'de> for FieldNames<'_> {
        type Error = Stop;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
            Err(Stop)
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Stop> {
            self.0.borrow_mut().extend_from_slice(fields);
            Err(Stop)
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option unit
            unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
        }
    }

    fn fields_of<T: for<'de> Deserialize<'de>>() -> Vec<&'static str> {
        let cell = RefCell::new(Vec::new());
        assert!(T::deserialize(FieldNames(&cell)).is_err());
        let mut fields = cell.into_inner();
        fields.sort_unstable();
        fields
    }

    fn sorted(keys: impl IntoIterator<Item = &'static str>) -> Vec<&'static str> {
        let mut keys: Vec<_> = keys.into_iter().collect();
        keys.sort_unstable();
        keys
    }

    #[test]
    fn key_lists_match_the_serde_structs() {
        assert_eq!(
            fields_of::<RawDaemon>(),
            sorted(DAEMON_KEYS.iter().copied())
        );
        assert_eq!(fields_of::<RawStore>(), sorted(store_keys()));
        assert_eq!(
            fields_of::<RawEncryption>(),
            sorted(ENCRYPTION_KEYS.iter().copied())
        );
        assert_eq!(fields_of::<RawJob>(), sorted(job_keys()));
        assert_eq!(fields_of::<RawDrill>(), sorted(DRILL_KEYS.iter().copied()));
        assert_eq!(
            fields_of::<RawJobDrill>(),
            sorted(JOB_DRILL_KEYS.iter().copied())
        );
    }

    #[test]
    fn key_lists_have_no_duplicates() {
        for keys in [sorted(store_keys()), sorted(job_keys())] {
            let mut deduped = keys.clone();
            deduped.dedup();
            assert_eq!(keys, deduped);
        }
    }
}
