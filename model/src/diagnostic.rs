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

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
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
