//! Diagnostics as data: a stable code, a severity, a short summary, a detail that says what is
//! wrong, why and how to fix it, the resource address and source locations.
//!
//! Rendering to text goes through codespan-reporting, so Chimera's diagnostics look like
//! Nickel's; `--error-format json` serialises [`Diagnostic`] as is.

use std::sync::Arc;

use codespan_reporting::diagnostic as cs;
use codespan_reporting::files::SimpleFiles;
use codespan_reporting::term;
use serde::{Deserialize, Serialize};

/// A stable diagnostic code, e.g. `E0104`. Every code is defined once, in [`crate::codes`];
/// docs/diagnostics.md documents them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Code(pub &'static str);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// A byte range in one file of a [`SourceMap`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Span {
    pub file: u32,
    pub start: u32,
    pub end: u32,
}

/// A resolved, human-facing location (1-based line and column).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Location {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub end_line: usize,
    pub end_column: usize,
    #[serde(skip)]
    pub span: Option<Span>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Label {
    pub location: Location,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub code: Code,
    pub severity: Severity,
    /// Short, no user-supplied names, no trailing period.
    pub summary: String,
    /// What is wrong, why, and how to fix it.
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// The primary location, if the source is known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
    /// Secondary locations (e.g. the first definition of a duplicate).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<Label>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl Diagnostic {
    /// Adds `offset` to the file index of every span (after [`SourceMap::append`]).
    pub fn shift_files(mut self, offset: u32) -> Self {
        let shift = |l: &mut Location| {
            if let Some(s) = &mut l.span {
                s.file += offset;
            }
        };
        if let Some(l) = &mut self.location {
            shift(l);
        }
        for label in &mut self.labels {
            shift(&mut label.location);
        }
        self
    }

    pub fn error(code: Code, summary: impl Into<String>) -> Self {
        Diagnostic {
            code,
            severity: Severity::Error,
            summary: summary.into(),
            detail: String::new(),
            address: None,
            location: None,
            labels: Vec::new(),
            notes: Vec::new(),
        }
    }

    pub fn warning(code: Code, summary: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(code, summary)
        }
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = detail.into();
        self
    }

    pub fn address(mut self, address: impl ToString) -> Self {
        self.address = Some(address.to_string());
        self
    }

    pub fn at(mut self, location: Option<Location>) -> Self {
        self.location = location;
        self
    }

    pub fn label(mut self, location: Option<Location>, message: impl Into<String>) -> Self {
        if let Some(location) = location {
            self.labels.push(Label {
                location,
                message: message.into(),
            });
        }
        self
    }

    pub fn note(mut self, note: impl Into<String>) -> Self {
        self.notes.push(note.into());
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

/// How many diagnostics of one kind [`fold`] keeps in full.
pub const FOLD_KEEP: usize = 3;

/// Folds identical diagnostics as they arrive: the first [`FOLD_KEEP`] of each kind (same
/// code, severity, summary and detail; locations may differ) are kept in full, the rest only
/// counted, and [`Folder::finish`] notes "and N more like this" on the last one kept. Memory
/// stays bounded by the number of distinct kinds however many arrive (two million copies of
/// one mistake are three diagnostics).
#[derive(Debug, Default)]
pub struct Folder {
    kept: Vec<Diagnostic>,
    /// Per kind: the index of the last one kept, and how many more were folded.
    kinds: std::collections::HashMap<(Code, Severity, String, String), (usize, usize, usize)>,
}

impl Folder {
    pub fn push(&mut self, d: Diagnostic) {
        let key = (d.code, d.severity, d.summary.clone(), d.detail.clone());
        match self.kinds.get_mut(&key) {
            Some((_, shown, more)) if *shown >= FOLD_KEEP => *more += 1,
            Some((last, shown, _)) => {
                *last = self.kept.len();
                *shown += 1;
                self.kept.push(d);
            }
            None => {
                self.kinds.insert(key, (self.kept.len(), 1, 0));
                self.kept.push(d);
            }
        }
    }

    pub fn extend(&mut self, ds: impl IntoIterator<Item = Diagnostic>) {
        for d in ds {
            self.push(d);
        }
    }

    /// Whether an error has arrived (kept or folded).
    pub fn has_errors(&self) -> bool {
        self.kept.iter().any(Diagnostic::is_error)
    }

    pub fn finish(mut self) -> Vec<Diagnostic> {
        for (last, _, more) in self.kinds.into_values() {
            if more > 0 {
                self.kept[last]
                    .notes
                    .push(format!("and {more} more like this (not shown)"));
            }
        }
        self.kept
    }
}

/// Folds identical diagnostics (see [`Folder`]).
pub fn fold(diagnostics: impl IntoIterator<Item = Diagnostic>) -> Vec<Diagnostic> {
    let mut f = Folder::default();
    f.extend(diagnostics);
    f.finish()
}

/// Where a byte string stops being UTF-8: the byte offset of the first invalid byte, and its
/// 1-based line and column (the column counts characters before it on its line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidUtf8 {
    pub offset: usize,
    pub line: usize,
    pub column: usize,
}

impl InvalidUtf8 {
    /// `None` when `bytes` is valid UTF-8.
    pub fn find(bytes: &[u8]) -> Option<InvalidUtf8> {
        let e = std::str::from_utf8(bytes).err()?;
        let offset = e.valid_up_to();
        // Everything before `offset` is valid UTF-8.
        let before = std::str::from_utf8(&bytes[..offset]).unwrap_or_default();
        let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
        Some(InvalidUtf8 {
            offset,
            line: before.matches('\n').count() + 1,
            column: before[line_start..].chars().count() + 1,
        })
    }

    /// "byte 12 (line 2, column 3)", for details.
    pub fn describe(&self) -> String {
        format!(
            "byte {} (line {}, column {})",
            self.offset, self.line, self.column
        )
    }
}

/// One source text a diagnostic may point into.
#[derive(Debug, Clone)]
pub struct SourceFile {
    pub name: String,
    pub text: Arc<str>,
    line_starts: Arc<[u32]>,
}

impl SourceFile {
    pub fn new(name: impl Into<String>, text: Arc<str>) -> Self {
        let mut starts = vec![0u32];
        starts.extend(
            text.bytes()
                .enumerate()
                .filter(|(_, b)| *b == b'\n')
                .map(|(i, _)| (i + 1) as u32),
        );
        SourceFile {
            name: name.into(),
            text,
            line_starts: starts.into(),
        }
    }

    /// 1-based (line, column) of a byte offset; the column counts characters.
    pub fn line_col(&self, offset: u32) -> (usize, usize) {
        let offset = offset.min(self.text.len() as u32);
        let line = match self.line_starts.binary_search(&offset) {
            Ok(i) => i,
            Err(i) => i - 1,
        };
        let start = self.line_starts[line] as usize;
        let end = (offset as usize).max(start);
        let column = self
            .text
            .get(start..end)
            .map(|s| s.chars().count())
            .unwrap_or(end - start);
        (line + 1, column + 1)
    }
}

/// The files diagnostics point into, indexed by [`Span::file`].
#[derive(Debug, Clone, Default)]
pub struct SourceMap {
    files: Vec<SourceFile>,
}

impl SourceMap {
    /// Moves `other`'s files to the end of this map; returns the offset to add to its spans'
    /// file indices.
    pub fn append(&mut self, other: SourceMap) -> u32 {
        let offset = self.files.len() as u32;
        self.files.extend(other.files);
        offset
    }

    /// No file loaded (e.g. a graph that came from the evaluation cache).
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    pub fn add(&mut self, name: impl Into<String>, text: Arc<str>) -> u32 {
        self.files.push(SourceFile::new(name, text));
        (self.files.len() - 1) as u32
    }

    pub fn get(&self, file: u32) -> Option<&SourceFile> {
        self.files.get(file as usize)
    }

    pub fn find(&self, name: &str) -> Option<u32> {
        self.files
            .iter()
            .position(|f| f.name == name)
            .map(|i| i as u32)
    }

    pub fn files(&self) -> &[SourceFile] {
        &self.files
    }

    pub fn locate(&self, span: Span) -> Option<Location> {
        let file = self.get(span.file)?;
        let (line, column) = file.line_col(span.start);
        let (end_line, end_column) = file.line_col(span.end);
        Some(Location {
            file: file.name.clone(),
            line,
            column,
            end_line,
            end_column,
            span: Some(span),
        })
    }

    /// Renders diagnostics as text, optionally with ANSI colours, in the style of Nickel's.
    pub fn render(&self, diagnostics: &[Diagnostic], color: bool) -> String {
        let mut files = SimpleFiles::new();
        let ids: Vec<usize> = self
            .files
            .iter()
            .map(|f| files.add(f.name.clone(), f.text.clone()))
            .collect();
        let config = term::Config::default();
        let mut out = Vec::new();
        for d in diagnostics {
            let cs_diag = self.to_codespan(d, &ids);
            let result = if color {
                let mut w = term::termcolor::Ansi::new(&mut out);
                term::emit_to_write_style(&mut w, &config, &files, &cs_diag)
            } else {
                let mut w = term::termcolor::NoColor::new(&mut out);
                term::emit_to_write_style(&mut w, &config, &files, &cs_diag)
            };
            if result.is_err() {
                // A span outside its file (never expected): fall back to plain text.
                out.extend_from_slice(plain(d).as_bytes());
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    fn to_codespan(&self, d: &Diagnostic, ids: &[usize]) -> cs::Diagnostic<usize> {
        let severity = match d.severity {
            Severity::Error => cs::Severity::Error,
            Severity::Warning => cs::Severity::Warning,
        };
        let mut labels = Vec::new();
        let mut unplaced = Vec::new();
        let mut place = |loc: &Location, primary: bool, message: &str| match loc.span {
            Some(span) if (span.file as usize) < ids.len() => {
                let range = span.start as usize..span.end as usize;
                let label = if primary {
                    cs::Label::primary(ids[span.file as usize], range)
                } else {
                    cs::Label::secondary(ids[span.file as usize], range)
                };
                labels.push(label.with_message(message));
            }
            _ => unplaced.push(format!(
                "{} {}:{}:{}",
                if message.is_empty() { "at" } else { message },
                loc.file,
                loc.line,
                loc.column
            )),
        };
        if let Some(loc) = &d.location {
            place(loc, true, "");
        }
        for l in &d.labels {
            place(&l.location, false, &l.message);
        }
        let mut notes = Vec::new();
        if let Some(addr) = &d.address {
            notes.push(format!("resource: {addr}"));
        }
        notes.extend(unplaced);
        if !d.detail.is_empty() {
            notes.push(d.detail.clone());
        }
        notes.extend(d.notes.iter().cloned());
        cs::Diagnostic::new(severity)
            .with_code(d.code.0)
            .with_message(&d.summary)
            .with_labels(labels)
            .with_notes(notes)
    }
}

fn plain(d: &Diagnostic) -> String {
    let mut s = format!("error[{}]: {}\n", d.code.0, d.summary);
    if !d.detail.is_empty() {
        s.push_str(&format!("  = {}\n", d.detail));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codes;

    #[test]
    fn line_and_column_are_one_based_and_count_characters() {
        let f = SourceFile::new("a.ncl", Arc::from("ab\nçd\n"));
        assert_eq!(f.line_col(0), (1, 1));
        assert_eq!(f.line_col(3), (2, 1));
        assert_eq!(f.line_col(5), (2, 2)); // after the two-byte `ç`
    }

    #[test]
    fn identical_diagnostics_fold_after_the_first_few() {
        let mut ds: Vec<Diagnostic> = (0..1000)
            .map(|i| {
                Diagnostic::error(codes::NOT_A_STACK, "a resource is not a record")
                    .detail("every element must be a record")
                    .address(format!("instance.w-{i}"))
            })
            .collect();
        ds.insert(1, Diagnostic::error(codes::CYCLE, "dependency cycle"));
        let folded = fold(ds);
        assert_eq!(folded.len(), FOLD_KEEP + 1);
        assert_eq!(folded[1].code, codes::CYCLE);
        assert!(folded[1].notes.is_empty());
        let last = &folded[FOLD_KEEP];
        assert_eq!(last.address.as_deref(), Some("instance.w-2"));
        assert_eq!(
            last.notes,
            vec!["and 997 more like this (not shown)".to_string()]
        );
        // Different details are different kinds.
        let two = fold([
            Diagnostic::error(codes::INVALID_FIELD, "invalid field").detail("a"),
            Diagnostic::error(codes::INVALID_FIELD, "invalid field").detail("b"),
        ]);
        assert!(two.iter().all(|d| d.notes.is_empty()) && two.len() == 2);
    }

    #[test]
    fn invalid_utf8_is_found_with_offset_line_and_column() {
        assert_eq!(InvalidUtf8::find("ok\nç".as_bytes()), None);
        let bad = b"ab\n\xc3\xa7d\xff rest";
        let found = InvalidUtf8::find(bad).expect("invalid");
        assert_eq!(
            found,
            InvalidUtf8 {
                offset: 6,
                line: 2,
                column: 3
            }
        );
        assert_eq!(found.describe(), "byte 6 (line 2, column 3)");
    }

    #[test]
    fn renders_with_code_location_and_detail() {
        let mut map = SourceMap::default();
        let file = map.add("main.ncl", Arc::from("{ port = 70000 }\n"));
        let loc = map.locate(Span {
            file,
            start: 9,
            end: 14,
        });
        let d = Diagnostic::error(codes::CONTRACT_BROKEN, "contract broken")
            .at(loc)
            .detail("use a port between 0 and 65535");
        let text = map.render(&[d], false);
        assert!(text.contains("error[E0003]: contract broken"), "{text}");
        assert!(text.contains("main.ncl:1:10"), "{text}");
        assert!(text.contains("use a port between 0 and 65535"), "{text}");
    }
}
