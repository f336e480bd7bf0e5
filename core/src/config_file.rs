//! Configuration files' errors that point at the place in the file: the
//! station's `pithead.toml` and the county's `county.toml` report every
//! problem with its file, line, column and key the same way.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// One problem in a configuration file, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Line, counting from 1; 0 when the problem has no place in the text
    /// (for example a section that is missing altogether).
    pub line: usize,
    /// Column in characters, counting from 1; 0 with `line` 0.
    pub column: usize,
    /// Dotted key path, e.g. `channel[2].level[0].threshold`.
    pub key: String,
    /// What is wrong.
    pub message: String,
    /// How to put it right, when we can say.
    pub hint: Option<String>,
}

impl Diagnostic {
    /// A diagnostic at a byte span of `src`.
    pub fn at(
        src: &str,
        span: Option<std::ops::Range<usize>>,
        key: String,
        message: String,
    ) -> Self {
        let (line, column) = match span {
            Some(span) => line_col(src, span.start),
            None => (0, 0),
        };
        Self {
            line,
            column,
            key,
            message,
            hint: None,
        }
    }

    /// The same diagnostic with a hint.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

/// 1-based line and character column of a byte offset.
fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(src.len());
    let before = src.get(..offset).unwrap_or(src);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
    (line, column)
}

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read at all.
    #[error("{file}: cannot read configuration: {source}")]
    Read {
        /// The file.
        file: PathBuf,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// The file was read and has problems.
    #[error("{}", render(file, diagnostics))]
    Invalid {
        /// The file.
        file: PathBuf,
        /// Every problem found, in file order.
        diagnostics: Vec<Diagnostic>,
    },
}

impl ConfigError {
    /// The problems, empty for a read error.
    pub fn diagnostics(&self) -> &[Diagnostic] {
        match self {
            ConfigError::Read { .. } => &[],
            ConfigError::Invalid { diagnostics, .. } => diagnostics,
        }
    }
}

fn render(file: &Path, diagnostics: &[Diagnostic]) -> String {
    let mut out = String::new();
    for (i, d) in diagnostics.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&format!("{}", Located { file, d }));
    }
    out
}

struct Located<'a> {
    file: &'a Path,
    d: &'a Diagnostic,
}

impl fmt::Display for Located<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Located { file, d } = self;
        if d.line > 0 {
            write!(f, "{}:{}:{}: ", file.display(), d.line, d.column)?;
        } else {
            write!(f, "{}: ", file.display())?;
        }
        write!(f, "key `{}`: {}", d.key, d.message)?;
        if let Some(hint) = &d.hint {
            write!(f, "\n    hint: {hint}")?;
        }
        Ok(())
    }
}

/// Finds the source span of a key path such as `channel[2].level[0].threshold`:
/// the key itself where the last step is a key, else the value.
pub fn locate(doc: &DeTable, path: &str) -> Option<Range<usize>> {
    let mut table = doc;
    let mut found: Option<Range<usize>> = None;
    let mut current: Option<&Spanned<DeValue>> = None;
    // A key that is not in the file (a default) is located at the nearest
    // enclosing table or item that is.
    for part in path.split('.') {
        let (name, index) = match part.split_once('[') {
            Some((n, rest)) => (n, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (part, None),
        };
        if let Some(v) = current {
            match v.get_ref().as_table() {
                Some(t) => table = t,
                None => return found,
            }
        }
        let Some((k, v)) = table.get_key_value(name) else {
            return found;
        };
        found = Some(k.span());
        current = Some(v);
        if let Some(i) = index {
            let Some(item) = v.get_ref().as_array().and_then(|a| a.get(i)) else {
                return found;
            };
            found = Some(item.span());
            current = Some(item);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_count_characters_not_bytes() {
        let src = "a = 1\nname = \"井口\" x\n";
        let off = src.find('x').unwrap_or_default();
        assert_eq!(line_col(src, off), (2, 13));
        assert_eq!(line_col(src, 0), (1, 1));
    }
}
