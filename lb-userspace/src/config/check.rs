//! The line-aware checker every table of the config is validated with
//! (`[director]`, `[[service]]`, `health_check`, `[[vrrp]]`, `[sync]`): one
//! error type naming file, line and dotted key, and the checks of values
//! that several tables share, each with one wording.

use std::{
    fmt,
    ops::{Range, RangeInclusive},
    str::FromStr,
};

use toml::Spanned;

/// One thing wrong with the config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub line: Option<usize>,
    /// Dotted path of the key, e.g. `service[1].real[0].weight`.
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Everything wrong with a config, in file order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// The text being checked: its file name and where its lines start, to turn
/// a value's byte span into `file:line`.
pub struct Source {
    file: String,
    line_starts: Vec<usize>,
}

impl Source {
    pub fn new(file: impl Into<String>, text: &str) -> Self {
        let line_starts = std::iter::once(0).chain(text.match_indices('\n').map(|(i, _)| i + 1)).collect();
        Self { file: file.into(), line_starts }
    }

    pub fn file(&self) -> &str {
        &self.file
    }

    /// The line (from 1) of the byte at `offset`.
    pub fn line(&self, offset: usize) -> usize {
        self.line_starts.partition_point(|&s| s <= offset)
    }
}

/// Collects every mistake while the tables are checked, so that all of them
/// are reported at once.
pub struct Checker<'s> {
    source: &'s Source,
    errors: Vec<ConfigError>,
}

impl<'s> Checker<'s> {
    pub fn new(source: &'s Source) -> Self {
        Self { source, errors: Vec::new() }
    }

    pub fn source(&self) -> &'s Source {
        self.source
    }

    /// A mistake in the value at `span`.
    pub fn error(&mut self, span: Range<usize>, key: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ConfigError {
            file: self.source.file.clone(),
            line: Some(self.source.line(span.start)),
            key: key.into(),
            message: message.into(),
        });
    }

    /// The line a table or value starts on.
    pub fn line(&self, span: &Range<usize>) -> usize {
        self.source.line(span.start)
    }

    pub fn is_clean(&self) -> bool {
        self.errors.is_empty()
    }

    pub fn into_errors(self) -> Vec<ConfigError> {
        self.errors
    }

    /// Mistakes another checker of the same source found.
    pub fn extend(&mut self, errors: impl IntoIterator<Item = ConfigError>) {
        self.errors.extend(errors);
    }

    /// A string value parsed with `FromStr`, or an error at its line.
    pub fn parse<T: FromStr<Err = String>>(&mut self, value: &Spanned<String>, key: &str) -> Option<T> {
        match value.get_ref().parse() {
            Ok(v) => Some(v),
            Err(message) => {
                self.error(value.span(), key, message);
                None
            }
        }
    }

    /// An integer within `range`: `default` if not given, `None` if wrong.
    pub fn integer(
        &mut self,
        value: &Option<Spanned<i64>>,
        key: &str,
        range: RangeInclusive<i64>,
        default: i64,
    ) -> Option<i64> {
        let Some(value) = value else { return Some(default) };
        match in_range(*value.get_ref(), &range) {
            Ok(v) => Some(v),
            Err(message) => {
                self.error(value.span(), key, message);
                None
            }
        }
    }
}

/// `value` if within `range`, else the one wording of an integer out of range.
pub fn in_range(value: i64, range: &RangeInclusive<i64>) -> Result<i64, String> {
    if range.contains(&value) {
        Ok(value)
    } else {
        Err(format!("{value} is out of range {}..={}", range.start(), range.end()))
    }
}
