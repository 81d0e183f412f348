//! Splits the parsed TOML document into its tables and deserializes each table into its raw struct on its own.
//! One table's mistakes (unknown keys, wrong value types) never hide another's; every one is recorded with its line.

use std::collections::BTreeSet;
use std::ops::Range;

use serde::de::DeserializeOwned;
use toml::de::{DeTable, DeValue, ValueDeserializer};
use toml::Spanned;

use crate::error::Diagnostics;
use crate::raw::{
    self, RawDaemon, RawDrill, RawEncryption, RawJob, RawStore, DAEMON_KEYS, DRILL_KEYS,
    ENCRYPTION_KEYS, TOP_LEVEL_KEYS, UNIMPLEMENTED_JOB_KINDS,
};

/// One table, deserialized.
#[derive(Debug)]
pub(crate) struct Section<T> {
    /// Dotted key of the table, e.g. `stores.offsite`.
    pub path: String,
    /// Byte range of the table in the document.
    pub span: Range<usize>,
    /// The keys present in the table (unknown ones excluded), with their spans.
    pub keys: Vec<(String, Range<usize>)>,
    /// Keys that were present but could not be deserialized (already reported): not "missing".
    pub poisoned: BTreeSet<String>,
    /// The deserialized table.
    pub raw: T,
}

impl<T> Section<T> {
    /// Dotted key of `key` inside this table.
    pub(crate) fn key(&self, key: &str) -> String {
        format!("{}.{}", self.path, key)
    }
}

/// One `[stores.NAME]` or `[jobs.NAME]` entry.
#[derive(Debug)]
pub(crate) struct Named<T> {
    pub name: String,
    pub name_span: Range<usize>,
    /// `None` when the entry is not a table at all (already reported).
    pub section: Option<Section<T>>,
}

/// The document split into its tables.
#[derive(Debug, Default)]
pub(crate) struct Document {
    pub daemon: Option<Section<RawDaemon>>,
    /// Span of the `stores` key, when present.
    pub stores_span: Option<Range<usize>>,
    /// `stores` is present but not a table of tables (already reported).
    pub stores_broken: bool,
    pub stores: Vec<Named<RawStore>>,
    /// Span of the `encryption` key, when present (even if the table itself was unusable).
    pub encryption_span: Option<Range<usize>>,
    pub encryption: Option<Section<RawEncryption>>,
    pub jobs: Vec<Named<RawJob>>,
    pub drill: Option<Section<RawDrill>>,
}

/// Parses `text`; returns `None` (with every syntax error recorded) if it is not valid TOML.
pub(crate) fn split(text: &str, diag: &mut Diagnostics) -> Option<Document> {
    let (root, errors) = DeTable::parse_recoverable(text);
    if !errors.is_empty() {
        for error in errors {
            diag.push(
                "",
                error.span(),
                format!(
                    "TOML syntax error: {}",
                    error.message().trim_end_matches('.')
                ),
                None,
            );
        }
        return None;
    }
    let mut doc = Document::default();
    for (key, value) in root.into_inner() {
        let key_span = key.span();
        match key.get_ref().as_ref() {
            "daemon" => doc.daemon = table::<RawDaemon>(diag, "daemon", value, DAEMON_KEYS),
            "drill" => doc.drill = table::<RawDrill>(diag, "drill", value, DRILL_KEYS),
            "encryption" => {
                doc.encryption_span = Some(key_span);
                doc.encryption = table::<RawEncryption>(diag, "encryption", value, ENCRYPTION_KEYS);
            }
            "stores" => {
                doc.stores_span = Some(key_span);
                let keys: Vec<_> = raw::store_keys().collect();
                doc.stores_broken = !value.get_ref().is_table();
                doc.stores = named(diag, "stores", value, |diag, path, value| {
                    table::<RawStore>(diag, path, value, &keys)
                });
            }
            "jobs" => {
                let keys: Vec<_> = raw::job_keys().collect();
                doc.jobs = named(diag, "jobs", value, |diag, path, value| {
                    unimplemented_job(path, &value)
                        .or_else(|| table::<RawJob>(diag, path, value, &keys))
                });
            }
            other => unknown_key(diag, "", other, key_span, TOP_LEVEL_KEYS),
        }
    }
    Some(doc)
}

/// `[stores.NAME]` / `[jobs.NAME]`: a table of tables.
fn named<T>(
    diag: &mut Diagnostics,
    path: &str,
    value: Spanned<DeValue<'_>>,
    mut each: impl FnMut(&mut Diagnostics, &str, Spanned<DeValue<'_>>) -> Option<Section<T>>,
) -> Vec<Named<T>> {
    let span = value.span();
    let DeValue::Table(entries) = value.into_inner() else {
        diag.push(
            path,
            Some(span),
            format!("`{path}` must be a table of named tables"),
            Some(format!("write one [{path}.NAME] table per entry")),
        );
        return Vec::new();
    };
    entries
        .into_iter()
        .map(|(name, value)| {
            let name_span = name.span();
            let name = name.into_inner().into_owned();
            let entry_path = format!("{path}.{}", key_segment(&name));
            let section = if value.get_ref().is_table() {
                each(diag, &entry_path, value)
            } else {
                diag.push(
                    &entry_path,
                    Some(name_span.clone()),
                    format!("`{entry_path}` must be a table"),
                    Some(format!(
                        "give each entry a name and its own table: [{path}.main] followed by its keys"
                    )),
                );
                None
            };
            Named {
                name,
                name_span,
                section,
            }
        })
        .collect()
}

/// A job whose kind is designed but not built yet: skip its other keys, so that the user sees one clear error
/// ("not implemented yet", reported by validation) instead of a list of unknown keys.
fn unimplemented_job(path: &str, value: &Spanned<DeValue<'_>>) -> Option<Section<RawJob>> {
    let DeValue::Table(entries) = value.get_ref() else {
        return None;
    };
    let kind = entries.get("kind")?;
    let kind_str = kind.get_ref().as_str()?;
    if !UNIMPLEMENTED_JOB_KINDS.contains(&kind_str) {
        return None;
    }
    Some(Section {
        path: path.to_owned(),
        span: value.span(),
        keys: Vec::new(),
        poisoned: BTreeSet::new(),
        raw: RawJob {
            kind: Some(Spanned::new(kind.span(), kind_str.to_owned())),
            ..RawJob::default()
        },
    })
}

/// Deserializes one table into `T`, recording every unknown key and every badly typed value.
///
/// Unknown keys are reported and dropped first. Then, for as long as serde rejects a value, the error is recorded,
/// the offending key is dropped (and marked poisoned) and deserialization is retried, so that all of a table's
/// problems are reported at once and validation still sees the keys that were fine.
fn table<T: DeserializeOwned>(
    diag: &mut Diagnostics,
    path: &str,
    value: Spanned<DeValue<'_>>,
    allowed: &[&str],
) -> Option<Section<T>> {
    let span = value.span();
    let DeValue::Table(mut entries) = value.into_inner() else {
        diag.push(
            path,
            Some(span),
            format!("`{path}` must be a table"),
            Some(format!(
                "write [{path}] on a line of its own, followed by its keys"
            )),
        );
        return None;
    };
    let unknown: Vec<(String, Range<usize>)> = entries
        .keys()
        .filter(|k| !allowed.contains(&k.get_ref().as_ref()))
        .map(|k| (k.get_ref().to_string(), k.span()))
        .collect();
    for (key, key_span) in &unknown {
        unknown_key(diag, path, key, key_span.clone(), allowed);
        entries.remove(key.as_str());
    }
    let keys = entries
        .keys()
        .map(|k| (k.get_ref().to_string(), k.span()))
        .collect();
    let mut poisoned = BTreeSet::new();
    loop {
        let attempt =
            ValueDeserializer::from(Spanned::new(span.clone(), DeValue::Table(entries.clone())));
        match T::deserialize(attempt) {
            Ok(raw) => {
                return Some(Section {
                    path: path.to_owned(),
                    span,
                    keys,
                    poisoned,
                    raw,
                })
            }
            Err(error) => {
                let located = error.span().and_then(|s| locate(&entries, &s));
                let message = redact(error.message());
                match located {
                    Some((key, dotted)) => {
                        diag.push(
                            format!("{path}.{dotted}"),
                            error.span(),
                            message,
                            value_example(&key).map(|e| format!("write it like {e}")),
                        );
                        entries.remove(key.as_str());
                        poisoned.insert(key);
                    }
                    None => {
                        diag.push(path, error.span().or(Some(span)), message, None);
                        return None;
                    }
                }
            }
        }
    }
}

/// The key (and dotted key with array index) of the entry that `span` points into.
fn locate(entries: &DeTable<'_>, span: &Range<usize>) -> Option<(String, String)> {
    let inside = |outer: &Range<usize>| {
        outer.start <= span.start && span.start < outer.end.max(outer.start + 1)
    };
    entries.iter().find_map(|(key, value)| {
        let name = key.get_ref().to_string();
        if inside(&key.span()) {
            return Some((name.clone(), name));
        }
        if !inside(&value.span()) {
            return None;
        }
        let dotted = match value.get_ref() {
            DeValue::Array(items) => items
                .iter()
                .position(|item| inside(&item.span()))
                .map_or_else(|| name.clone(), |i| format!("{name}[{i}]")),
            _ => name.clone(),
        };
        Some((name, dotted))
    })
}

/// Records an unknown key, with a "did you mean" or a pointer to where secrets go. Never echoes the value.
fn unknown_key(
    diag: &mut Diagnostics,
    path: &str,
    key: &str,
    span: Range<usize>,
    allowed: &[&str],
) {
    let dotted = if path.is_empty() {
        key_segment(key)
    } else {
        format!("{path}.{}", key_segment(key))
    };
    let secret_hint = match key {
        "password" | "pgpassword" => Some(
            "secrets never go in the config file: use `password_file` or `password_env`, or a PGPASSFILE"
                .to_owned(),
        ),
        "access_key_id" | "secret_access_key" | "session_token" => Some(format!(
            "secrets never go in the config file: use `{key}_env` or `{key}_file`"
        )),
        _ => None,
    };
    let hint = secret_hint
        .or_else(|| {
            (path.is_empty() && DAEMON_KEYS.contains(&key))
                .then(|| format!("`{key}` belongs in the [daemon] table"))
        })
        .or_else(|| closest(key, allowed).map(|k| format!("did you mean `{k}`?")))
        .or_else(|| {
            let list = allowed
                .iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ");
            Some(format!("allowed keys here: {list}"))
        });
    let what = if path.is_empty() {
        "unknown top-level key".to_owned()
    } else {
        format!("unknown key in [{path}]")
    };
    diag.push(dotted, Some(span), what, hint);
}

/// The allowed key closest to `key`, if it is close enough to be a typo.
fn closest<'a>(key: &str, allowed: &[&'a str]) -> Option<&'a str> {
    let key = key.to_ascii_lowercase();
    allowed
        .iter()
        .map(|k| (edit_distance(&key, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

/// A key as it appears in a dotted path: bare if TOML allows it bare, quoted otherwise.
pub(crate) fn key_segment(name: &str) -> String {
    let bare = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if bare {
        name.to_owned()
    } else {
        format!("{name:?}")
    }
}

/// serde renders an unexpected string value as `string "…"`; the value could be a secret pasted into the wrong
/// key, so cut it out.
fn redact(message: &str) -> String {
    const MARK: &str = "string \"";
    let mut out = String::new();
    let mut rest = message;
    while let Some(i) = rest.find(MARK) {
        out.push_str(&rest[..i + "string".len()]);
        let after = &rest[i + MARK.len()..];
        let mut escaped = false;
        let mut end = after.len();
        for (j, c) in after.char_indices() {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                end = j + 1;
                break;
            }
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out.replace("expected i64", "expected an integer")
}

/// How a value of `key` looks, for type-error hints.
fn value_example(key: &str) -> Option<&'static str> {
    Some(match key {
        "listen" => "\"127.0.0.1:9187\"",
        "max_concurrent_jobs" => "2",
        "pg_bin_dirs" => "[\"/usr/lib/postgresql/16/bin\"]",
        "retention" => "\"35d\"",
        "part_size" => "\"16MiB\" or 16777216",
        "path_style" => "true (no quotes)",
        "parts_in_flight" => "4",
        "recipients" => "[\"age1…\"]",
        "recipients_file" => "\"recipients.txt\" or [\"a.txt\", \"b.txt\"]",
        "databases" => "\"all\" or [\"app\", \"billing\"]",
        "compression_level" => "3",
        "compression_threads" => "0",
        "kind" | "lock_mode" | "prefix" | "endpoint" | "bucket" | "region" | "profile" | "path"
        | "store" | "schedule" | "timezone" | "url" | "pg_bin_dir" => "a quoted string",
        k if k.ends_with("_env") || k.ends_with("_file") => "a quoted string",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_removes_string_values() {
        assert_eq!(
            redact(r#"invalid type: string "hunter\"2", expected a boolean"#),
            "invalid type: string, expected a boolean"
        );
        assert_eq!(
            redact("invalid type: integer `5`, expected a string"),
            "invalid type: integer `5`, expected a string"
        );
    }

    #[test]
    fn closest_finds_typos_only() {
        let keys = ["bucket", "region", "retention"];
        assert_eq!(closest("buckt", &keys), Some("bucket"));
        assert_eq!(closest("retension", &keys), Some("retention"));
        assert_eq!(closest("colour", &keys), None);
    }

    #[test]
    fn key_segments_are_quoted_when_needed() {
        assert_eq!(key_segment("main-db"), "main-db");
        assert_eq!(key_segment("db.v2"), "\"db.v2\"");
    }
}
