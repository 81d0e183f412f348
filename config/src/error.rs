//! Configuration errors: one [`ConfigError`] per problem, all of them collected in [`ConfigErrors`].
//! Each names the file, line and dotted key and suggests a fix; none ever contains a secret value.

use std::fmt;
use std::ops::Range;

/// One problem found in a configuration file.
///
/// Displayed as `{origin}:{line}: `{key}`: {message} (hint: {hint})`; missing parts are left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Where the configuration came from (usually the file path).
    pub origin: String,
    /// 1-based line of the offending key or value, when known.
    pub line: Option<usize>,
    /// Dotted key, e.g. `jobs.main-db.schedule` (empty for syntax errors that belong to no key).
    pub key: String,
    /// What is wrong (lowercase, no trailing period).
    pub message: String,
    /// How to fix it, when there is something useful to say.
    pub hint: Option<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.origin)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        f.write_str(": ")?;
        if !self.key.is_empty() {
            write!(f, "`{}`: ", self.key)?;
        }
        f.write_str(&self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, " (hint: {hint})")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Every problem found in a configuration file, in file order.
///
/// Never empty when returned by [`crate::load`] or [`crate::parse`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    /// The individual problems.
    pub fn errors(&self) -> &[ConfigError] {
        &self.0
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl IntoIterator for ConfigErrors {
    type Item = ConfigError;
    type IntoIter = std::vec::IntoIter<ConfigError>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

/// Why a cron schedule was rejected (see [`crate::Schedule::new`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ScheduleError {
    /// What is wrong with the expression.
    pub message: String,
    /// A suggested fix, when there is one.
    pub hint: Option<String>,
}

/// Byte offset → 1-based line number.
#[derive(Debug)]
pub(crate) struct LineIndex {
    /// Byte offsets of every `\n`.
    newlines: Vec<usize>,
}

impl LineIndex {
    pub(crate) fn new(text: &str) -> Self {
        let newlines = text
            .bytes()
            .enumerate()
            .filter(|(_, b)| *b == b'\n')
            .map(|(i, _)| i)
            .collect();
        Self { newlines }
    }

    /// The 1-based line holding byte `offset`.
    pub(crate) fn line(&self, offset: usize) -> usize {
        self.newlines.partition_point(|&nl| nl < offset) + 1
    }
}

/// Collects errors while the document is checked, so that every problem is reported at once.
#[derive(Debug)]
pub(crate) struct Diagnostics {
    origin: String,
    lines: LineIndex,
    errors: Vec<ConfigError>,
}

impl Diagnostics {
    pub(crate) fn new(origin: &str, text: &str) -> Self {
        Self {
            origin: origin.to_owned(),
            lines: LineIndex::new(text),
            errors: Vec::new(),
        }
    }

    /// Records one problem; `span` is a byte range in the document.
    pub(crate) fn push(
        &mut self,
        key: impl Into<String>,
        span: Option<Range<usize>>,
        message: impl Into<String>,
        hint: Option<String>,
    ) {
        self.errors.push(ConfigError {
            origin: self.origin.clone(),
            line: span.map(|s| self.lines.line(s.start)),
            key: key.into(),
            message: message.into(),
            hint,
        });
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    /// The collected errors in file order (errors without a line last), duplicates removed.
    pub(crate) fn into_errors(self) -> ConfigErrors {
        let mut errors = self.errors;
        // Stable sort: errors on the same line keep the order they were found in.
        errors.sort_by_key(|e| e.line.unwrap_or(usize::MAX));
        errors.dedup();
        ConfigErrors(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(line: Option<usize>, key: &str, hint: Option<&str>) -> ConfigError {
        ConfigError {
            origin: "lifeboat.toml".into(),
            line,
            key: key.into(),
            message: "something is wrong".into(),
            hint: hint.map(Into::into),
        }
    }

    #[test]
    fn display_has_every_part() {
        let e = error(Some(7), "jobs.db.schedule", Some("fix it"));
        assert_eq!(
            e.to_string(),
            "lifeboat.toml:7: `jobs.db.schedule`: something is wrong (hint: fix it)"
        );
    }

    #[test]
    fn display_omits_missing_parts() {
        assert_eq!(
            error(None, "", None).to_string(),
            "lifeboat.toml: something is wrong"
        );
        assert_eq!(
            error(None, "encryption", None).to_string(),
            "lifeboat.toml: `encryption`: something is wrong"
        );
    }

    #[test]
    fn errors_display_one_per_line() {
        let errors = ConfigErrors(vec![error(Some(1), "a", None), error(Some(2), "b", None)]);
        assert_eq!(errors.to_string().lines().count(), 2);
        assert_eq!(errors.errors().len(), 2);
    }

    #[test]
    fn line_index_counts_from_one() {
        let index = LineIndex::new("a\nbc\n\nd");
        assert_eq!(index.line(0), 1);
        assert_eq!(index.line(1), 1); // the newline itself belongs to line 1
        assert_eq!(index.line(2), 2);
        assert_eq!(index.line(5), 3);
        assert_eq!(index.line(6), 4);
    }
}
