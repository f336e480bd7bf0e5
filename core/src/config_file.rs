//! Configuration files' errors that point at the place in the file: the
//! station's `pithead.toml` and the county's `county.toml` report every
//! problem with its file, line, column and key the same way.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// A TOML syntax error: where in the file (bytes), and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    /// Byte span in the whole file.
    pub span: Option<Range<usize>>,
    /// What toml said.
    pub message: String,
}

/// `[[channel]]` blocks per piece when a large file is parsed in pieces
/// ([`parse_document`]).
pub const CHANNELS_PER_PIECE: usize = 250;

/// Parses a configuration file into its table, with every syntax error.
///
/// toml lexes a whole document into a list of tokens and then of events
/// before it builds the table: some 25 bytes of them per byte of text, 40
/// MB for a file of 10,000 channels, most of a station's peak memory at
/// start. A file with more than [`CHANNELS_PER_PIECE`] channels is therefore
/// parsed in pieces, each starting at a top-level `[[channel]]` header (a
/// piece holds those blocks and whatever sections follow them), and the
/// pieces' tables are joined with their spans counted from the start of the
/// file, so every message still points at its line. A smaller file is one
/// piece: parsed exactly as toml parses it.
pub fn parse_document(src: &str) -> (DeTable<'_>, Vec<SyntaxError>) {
    parse_in_pieces(src, "channel", CHANNELS_PER_PIECE)
}

/// [`parse_document`] cutting before every `per_piece`-th top-level `[[name]]`.
pub fn parse_in_pieces<'s>(
    src: &'s str,
    name: &str,
    per_piece: usize,
) -> (DeTable<'s>, Vec<SyntaxError>) {
    let mut starts = vec![0];
    starts.extend(
        array_headers(src, name)
            .into_iter()
            .enumerate()
            .filter(|(i, _)| *i > 0 && i % per_piece.max(1) == 0)
            .map(|(_, at)| at),
    );
    let mut doc = DeTable::new();
    let mut errors = Vec::new();
    for (i, &start) in starts.iter().enumerate() {
        let end = starts.get(i + 1).copied().unwrap_or(src.len());
        let (piece, errs) = DeTable::parse_recoverable(&src[start..end]);
        errors.extend(errs.iter().map(|e| SyntaxError {
            span: e.span().map(|s| s.start + start..s.end + start),
            message: e.message().to_owned(),
        }));
        let piece = piece.into_inner();
        if i == 0 {
            doc = piece;
        } else {
            join_piece(&mut doc, piece, start, &mut errors);
        }
    }
    (doc, errors)
}

/// Where the top-level `[[name]]` headers of `src` begin (byte offsets),
/// found with toml's lexer, so brackets in strings, in multi-line strings,
/// in comments and in values are not taken for headers.
fn array_headers(src: &str, name: &str) -> Vec<usize> {
    use toml_parser::lexer::TokenKind;
    let mut out = Vec::new();
    // At the start of a line (only whitespace so far), inside a header
    // line, and how deep in a value's brackets and braces.
    let (mut line_start, mut header, mut depth) = (true, false, 0usize);
    for tok in toml_parser::Source::new(src).lex() {
        match tok.kind() {
            TokenKind::Whitespace | TokenKind::Comment => {}
            TokenKind::Newline => {
                if depth == 0 {
                    line_start = true;
                    header = false;
                }
            }
            TokenKind::LeftSquareBracket if line_start && depth == 0 => {
                line_start = false;
                header = true;
                let at = tok.span().start();
                if is_array_header(&src[at..], name) {
                    out.push(at);
                }
            }
            TokenKind::LeftSquareBracket | TokenKind::LeftCurlyBracket if !header => {
                line_start = false;
                depth += 1;
            }
            TokenKind::RightSquareBracket | TokenKind::RightCurlyBracket if !header => {
                depth = depth.saturating_sub(1);
            }
            _ => line_start = false,
        }
    }
    out
}

/// Whether `text` begins with `[[name]]` (blanks allowed inside).
fn is_array_header(text: &str, name: &str) -> bool {
    let blank = [' ', '\t'];
    text.strip_prefix("[[")
        .map(|t| t.trim_start_matches(blank))
        .and_then(|t| t.strip_prefix(name))
        .map(|t| t.trim_start_matches(blank))
        .is_some_and(|t| t.starts_with("]]"))
}

/// Adds a later piece's top-level entries to `doc`: arrays of tables are
/// appended to, anything else is new or a duplicate.
fn join_piece<'s>(
    doc: &mut DeTable<'s>,
    piece: DeTable<'s>,
    offset: usize,
    errors: &mut Vec<SyntaxError>,
) {
    for (key, mut value) in piece {
        shift(&mut value, offset);
        let span = key.span().start + offset..key.span().end + offset;
        let key = Spanned::new(span.clone(), key.into_inner());
        match doc.get_mut(key.get_ref().as_ref()) {
            None => {
                doc.insert(key, value);
            }
            Some(existing) => match (existing.get_mut(), value.into_inner()) {
                (DeValue::Array(to), DeValue::Array(more)) => {
                    for item in more {
                        to.push(item);
                    }
                }
                _ => errors.push(SyntaxError {
                    span: Some(span),
                    message: format!("duplicate key `{}`", key.get_ref()),
                }),
            },
        }
    }
}

/// Moves every span in `v` by `offset` bytes.
fn shift(v: &mut Spanned<DeValue<'_>>, offset: usize) {
    let span = v.span();
    let mut inner = std::mem::replace(v.get_mut(), DeValue::Boolean(false));
    match &mut inner {
        DeValue::Array(items) => {
            for item in items.iter_mut() {
                shift(item, offset);
            }
        }
        DeValue::Table(table) => {
            for (k, mut x) in std::mem::take(table) {
                shift(&mut x, offset);
                let ks = k.span();
                table.insert(
                    Spanned::new(ks.start + offset..ks.end + offset, k.into_inner()),
                    x,
                );
            }
        }
        _ => {}
    }
    *v = Spanned::new(span.start + offset..span.end + offset, inner);
}

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

    /// A file with what could fool a search for headers: brackets in
    /// strings, multi-line strings and arrays, comments, inline tables,
    /// sections between and after the channels.
    const TRICKY: &str = r#"[station]
county = "c" # [[channel]] in a comment
id = "s"
name = """
[[channel]]
not a header"""
[[device]]
id = "d1"
[[channel]]
id = "a"
tags = [
  [1, 2],
  ["[[channel]]"],
]
[[channel]]
  id = "b"
  point = { x = 1, y = [2, 3] }
[[ channel ]]
id = "c"
[[device]]
id = "d2"
[[channel]]
id = "d"
note = '[[channel]]'
[mqtt]
url = "mqtt://x"
[[channel]]
id = "e"
"#;

    #[test]
    fn a_file_parsed_in_pieces_is_the_file_parsed_whole_spans_and_all() {
        let (whole, errors) = DeTable::parse_recoverable(TRICKY);
        assert!(errors.is_empty(), "{errors:?}");
        let whole = format!("{:?}", whole.into_inner());
        assert_eq!(array_headers(TRICKY, "channel").len(), 5);
        for per_piece in 1..=6 {
            let (doc, errors) = parse_in_pieces(TRICKY, "channel", per_piece);
            assert!(errors.is_empty(), "{per_piece}: {errors:?}");
            assert_eq!(format!("{doc:?}"), whole, "{per_piece} per piece");
        }
    }

    #[test]
    fn a_duplicate_section_or_a_syntax_error_in_a_later_piece_is_located_in_the_file() {
        let src = "[station]\nid = \"s\"\n[[channel]]\nid = \"a\"\n[[channel]]\nid = \"b\"\n[station]\nid = \"t\"\n[[channel]]\nid = = 3\n";
        let (_, errors) = parse_in_pieces(src, "channel", 1);
        let lines: Vec<(usize, &str)> = errors
            .iter()
            .map(|e| {
                (
                    line_col(src, e.span.clone().map_or(0, |s| s.start)).0,
                    e.message.as_str(),
                )
            })
            .collect();
        assert!(
            lines
                .iter()
                .any(|(l, m)| *l == 7 && m.contains("duplicate")),
            "{lines:?}"
        );
        assert!(lines.iter().any(|(l, _)| *l == 10), "{lines:?}");
        // The same file whole says so too (in its words).
        assert!(!DeTable::parse_recoverable(src).1.is_empty());
    }

    #[test]
    fn line_and_column_count_characters_not_bytes() {
        let src = "a = 1\nname = \"井口\" x\n";
        let off = src.find('x').unwrap_or_default();
        assert_eq!(line_col(src, off), (2, 13));
        assert_eq!(line_col(src, 0), (1, 1));
    }
}
