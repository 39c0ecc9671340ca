//! `chimera test`: snapshot-tested previews for a config repository.
//!
//! A case is `tests/NAME.ncl` (a stack, or a variant such as `(import "../main.ncl") & { … }`)
//! with an optional state fixture `tests/NAME.state.json` (what `chimera state pull` prints).
//! Each case is compiled and planned offline — no state store, no provider calls; outputs not
//! yet known show as `(known after apply)` — and the rendered preview is compared with
//! `tests/snapshots/NAME.snap`.

use std::path::{Path, PathBuf};

use chimera_model::diagnostic::InvalidUtf8;
use chimera_model::{Diagnostic, SourceMap, Span, StateResource, codes};
use chimera_plans::plan::{self, Prior};
use chimera_plans::render;
use serde_json::Value;

use crate::error::{Error, ErrorKind};
use crate::settings::Settings;

/// One test case: its name and files.
#[derive(Debug, Clone)]
pub struct Case {
    pub name: String,
    pub source: PathBuf,
    pub fixture: Option<PathBuf>,
    pub snapshot: PathBuf,
}

/// How to run the cases.
#[derive(Debug, Clone, Default)]
pub struct TestOptions {
    /// Rewrite snapshots that differ or are missing, and remove those without a case.
    pub update: bool,
    /// Only the cases whose names contain this.
    pub filter: Option<String>,
    /// In CI a missing snapshot is a failure (written as `.snap.new` for review).
    pub ci: bool,
}

/// What happened to one case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Passed,
    /// The snapshot differed and was rewritten (`update`).
    Updated,
    /// The preview differs from the snapshot.
    Differs {
        snapshot: String,
        preview: String,
    },
    /// No snapshot, in CI: the preview was written beside it for review.
    NewInCi {
        written: PathBuf,
    },
    /// No snapshot: written.
    New,
    /// The snapshot could not be written.
    WriteFailed(String),
}

impl Outcome {
    pub fn failed(&self) -> bool {
        matches!(
            self,
            Outcome::Differs { .. } | Outcome::NewInCi { .. } | Outcome::WriteFailed(_)
        )
    }
}

/// A snapshot whose case is gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Orphan {
    pub name: String,
    /// Removed (`update`), or only reported.
    pub removed: bool,
}

/// The result of a test run.
#[derive(Debug, Clone)]
pub struct TestRun {
    pub cases: Vec<(Case, Outcome)>,
    pub orphans: Vec<Orphan>,
}

impl TestRun {
    pub fn failed(&self) -> usize {
        self.cases.iter().filter(|(_, o)| o.failed()).count()
    }
    pub fn passed(&self) -> usize {
        self.cases
            .iter()
            .filter(|(_, o)| *o == Outcome::Passed)
            .count()
    }
    pub fn written(&self) -> usize {
        self.cases
            .iter()
            .filter(|(_, o)| matches!(o, Outcome::Updated | Outcome::New))
            .count()
    }
}

fn no_cases(detail: String) -> Error {
    Error::new(
        ErrorKind::Input,
        Diagnostic::error(codes::NO_TEST_CASES, "no test cases").detail(detail),
    )
}

/// The cases under `dir/tests`, by name.
pub fn cases(dir: &Path) -> Result<Vec<Case>, Error> {
    let tests = dir.join("tests");
    let entries = std::fs::read_dir(&tests).map_err(|e| {
        no_cases(format!(
            "cannot read `{}` ({e}); test cases are `tests/NAME.ncl` files (`chimera init` writes one)",
            tests.display()
        ))
    })?;
    let mut out = Vec::new();
    for e in entries.flatten() {
        let p = e.path();
        if p.extension().and_then(|x| x.to_str()) != Some("ncl") || !p.is_file() {
            continue;
        }
        let Some(name) = p.file_stem().and_then(|s| s.to_str()).map(str::to_string) else {
            continue;
        };
        let fixture = tests.join(format!("{name}.state.json"));
        out.push(Case {
            snapshot: tests.join("snapshots").join(format!("{name}.snap")),
            fixture: fixture.exists().then_some(fixture),
            source: p,
            name,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// A state fixture as `state pull` prints it (other fields are ignored).
#[derive(serde::Deserialize)]
struct FixtureDoc {
    #[serde(default)]
    lineage: Option<String>,
    #[serde(default)]
    serial: Option<u64>,
    #[serde(default)]
    resources: Vec<StateResource>,
}

/// State resources from a fixture: `{"resources": [...]}` (as `state pull` prints) or a bare
/// array. A fixture that cannot be read, is not UTF-8 or JSON, or holds something that is not a
/// state row is one diagnostic at the byte, line and column where it goes wrong (the fixture's
/// text is added to `sources`).
pub fn read_fixture(
    path: &Path,
    shown: &str,
    sources: &mut SourceMap,
) -> Result<(Option<String>, u64, Vec<StateResource>), Diagnostic> {
    let fix = "write it with `chimera state pull > tests/NAME.state.json`, or remove it to test a new stack";
    let bytes = std::fs::read(path).map_err(|e| {
        Diagnostic::error(codes::BAD_FIXTURE, "cannot read a state fixture")
            .detail(format!("`{shown}`: {e}"))
            .at(Some(first_line(shown)))
    })?;
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let file = sources.add(shown, std::sync::Arc::from(text.as_str()));
    let at = |sources: &SourceMap, offset: usize| {
        let end = text[offset.min(text.len())..]
            .chars()
            .next()
            .map(|c| offset + c.len_utf8())
            .unwrap_or(offset);
        sources.locate(Span {
            file,
            start: offset as u32,
            end: end as u32,
        })
    };
    if let Some(bad) = InvalidUtf8::find(&bytes) {
        return Err(
            Diagnostic::error(codes::BAD_FIXTURE, "a state fixture is not valid UTF-8")
                .detail(format!(
                    "`{shown}` is not UTF-8 at {}; {fix}",
                    bad.describe()
                ))
                .at(at(sources, bad.offset)),
        );
    }
    let json_error = |sources: &SourceMap, summary: &str, e: serde_json::Error| {
        Diagnostic::error(codes::BAD_FIXTURE, summary)
            .detail(format!("`{shown}`: {e}; {fix}"))
            .at(at(sources, offset_of(&text, e.line(), e.column())))
    };
    let doc: Value = serde_json::from_str(&text)
        .map_err(|e| json_error(sources, "a state fixture is not JSON", e))?;
    let not_rows = "a state fixture holds something that is not a state row";
    let read = match doc {
        Value::Array(_) => {
            drop(doc);
            let rows: Vec<StateResource> =
                serde_json::from_str(&text).map_err(|e| json_error(sources, not_rows, e))?;
            (None, 1, rows)
        }
        Value::Object(_) => {
            drop(doc);
            let doc: FixtureDoc =
                serde_json::from_str(&text).map_err(|e| json_error(sources, not_rows, e))?;
            (doc.lineage, doc.serial.unwrap_or(1), doc.resources)
        }
        _ => Err(
            Diagnostic::error(codes::BAD_FIXTURE, "a state fixture holds no resources")
                .detail(format!(
                    "`{shown}` is neither `{{\"resources\": [...]}}` nor an array of state rows; {fix}"
                ))
                .at(at(sources, text.len() - text.trim_start().len())),
        )?,
    };
    // State holds one row per address: a second one (an edited fixture) is refused at its row,
    // not planned as whichever row came last.
    let mut seen = std::collections::HashSet::new();
    if let Some(twice) = read.2.iter().find(|r| !seen.insert(&r.address)) {
        let quoted = serde_json::to_string(&twice.address.to_string()).unwrap_or_default();
        // The second row's `"address": "…"`, not a mention of the address in another row's
        // `deps` or attributes.
        let second = text
            .match_indices(&quoted)
            .filter(|(i, _)| {
                text[..*i]
                    .trim_end()
                    .strip_suffix(':')
                    .is_some_and(|before| before.trim_end().ends_with("\"address\""))
            })
            .nth(1)
            .map(|(i, _)| i)
            .unwrap_or(0);
        return Err(
            Diagnostic::error(codes::BAD_FIXTURE, "a state fixture holds one address twice")
                .detail(format!(
                    "`{shown}` has two rows for `{}`; state holds one row per address: keep the right one and delete the other, or {fix}",
                    twice.address
                ))
                .at(at(sources, second)),
        );
    }
    Ok(read)
}

/// The byte offset of serde_json's 1-based line and column (the column counts bytes; 0 means
/// the end of the previous line).
fn offset_of(text: &str, line: usize, column: usize) -> usize {
    let start: usize = text
        .split_inclusive('\n')
        .take(line.saturating_sub(1))
        .map(str::len)
        .sum();
    let mut offset = (start + column.saturating_sub(1)).min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    offset
}

fn first_line(file: &str) -> chimera_model::Location {
    chimera_model::Location {
        file: file.to_string(),
        line: 1,
        column: 1,
        end_line: 1,
        end_column: 1,
        span: None,
    }
}

/// The preview a case renders: its plan as text, or its diagnostics. Paths are relative to
/// `dir`, so snapshots are the same on every machine (diagnostics name files relative to
/// `settings.cwd`, which is taken off).
pub fn preview(dir: &Path, case: &Case, settings: &Settings) -> String {
    let rel = |p: &Path| p.strip_prefix(dir).unwrap_or(p).display().to_string();
    let mut out = format!(
        "# chimera test: {}\n# state: {}\n\n",
        rel(&case.source),
        case.fixture
            .as_deref()
            .map(rel)
            .unwrap_or_else(|| "none (a new stack)".into())
    );
    let disk: std::sync::Arc<dyn chimera_compiler::Source> =
        std::sync::Arc::new(chimera_compiler::Disk::at(settings.cwd.clone()));
    let mut compiled = chimera_compiler::compile_from(&disk, &case.source, &settings.eval);
    let body = match (&compiled.graph, compiled.has_errors()) {
        (Some(g), false) => {
            let fixture = match &case.fixture {
                Some(f) => read_fixture(f, &rel(f), &mut compiled.sources),
                None => Ok((None, 0, vec![])),
            };
            match fixture {
                Err(d) => compiled.sources.render(&[d], false),
                Ok((lineage, serial, rows)) => {
                    let prior = Prior {
                        lineage,
                        serial,
                        resources: &rows,
                    };
                    match plan::plan(Some(g), &g.stack, &prior) {
                        Ok(p) => render::plan_text(&p, false),
                        Err(diags) => compiled.sources.render(&diags, false),
                    }
                }
            }
        }
        _ => compiled.sources.render(&compiled.diagnostics, false),
    };
    out.push_str(&body);
    // Diagnostics name files relative to the working directory (or absolute outside it):
    // make them relative to `dir`, as the header is.
    let abs = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let mut prefixes = vec![abs.display().to_string()];
    if let Some(cwd) = settings.cwd.as_ref().and_then(|c| c.canonicalize().ok())
        && let Ok(rel) = abs.strip_prefix(&cwd)
        && !rel.as_os_str().is_empty()
    {
        prefixes.push(rel.display().to_string());
    }
    for p in prefixes {
        out = out.replace(&format!("┌─ {p}/"), "┌─ ");
    }
    out
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).map_err(|e| format!("cannot create `{}`: {e}", d.display()))?;
    }
    std::fs::write(path, text).map_err(|e| format!("cannot write `{}`: {e}", path.display()))
}

/// Runs the cases of the config repository at `dir` against their snapshots.
pub fn run(dir: &Path, opts: &TestOptions, settings: &Settings) -> Result<TestRun, Error> {
    let all = cases(dir)?;
    let selected: Vec<&Case> = all
        .iter()
        .filter(|c| {
            opts.filter
                .as_ref()
                .is_none_or(|f| c.name.contains(f.as_str()))
        })
        .collect();
    if selected.is_empty() {
        return Err(no_cases(format!(
            "`{}` has no test case{}; add `tests/NAME.ncl` (a stack, or `(import \"../main.ncl\") & {{ … }}`)",
            dir.join("tests").display(),
            opts.filter
                .as_ref()
                .map(|f| format!(" matching `{f}`"))
                .unwrap_or_default()
        )));
    }
    let mut run = TestRun {
        cases: Vec::new(),
        orphans: Vec::new(),
    };
    for case in selected {
        let got = preview(dir, case, settings);
        let want = std::fs::read_to_string(&case.snapshot).ok();
        let outcome = match want {
            Some(w) if w == got => Outcome::Passed,
            Some(_) if opts.update => match write(&case.snapshot, &got) {
                Ok(()) => Outcome::Updated,
                Err(m) => Outcome::WriteFailed(m),
            },
            Some(w) => Outcome::Differs {
                snapshot: w,
                preview: got,
            },
            None if opts.ci && !opts.update => {
                // Written for review, never accepted silently in CI.
                let new = case.snapshot.with_extension("snap.new");
                let _ = write(&new, &got);
                Outcome::NewInCi { written: new }
            }
            None => match write(&case.snapshot, &got) {
                Ok(()) => Outcome::New,
                Err(m) => Outcome::WriteFailed(m),
            },
        };
        run.cases.push((case.clone(), outcome));
    }
    // Snapshots whose case is gone.
    if opts.filter.is_none()
        && let Ok(entries) = std::fs::read_dir(dir.join("tests/snapshots"))
    {
        let mut found = Vec::new();
        for e in entries.flatten() {
            let p = e.path();
            let Some(stem) = p
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".snap"))
            else {
                continue;
            };
            if all.iter().any(|c| c.name == stem) {
                continue;
            }
            let removed = opts.update && std::fs::remove_file(&p).is_ok();
            found.push(Orphan {
                name: stem.to_string(),
                removed,
            });
        }
        found.sort_by(|a, b| a.name.cmp(&b.name));
        run.orphans = found;
    }
    Ok(run)
}

/// The error for snapshots that could not be written.
pub fn write_failures(run: &TestRun) -> Vec<Diagnostic> {
    run.cases
        .iter()
        .filter_map(|(_, o)| match o {
            Outcome::WriteFailed(m) => Some(
                Diagnostic::error(codes::SNAPSHOT_WRITE, "cannot write a snapshot")
                    .detail(m.clone()),
            ),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(bytes: &[u8]) -> Result<(Option<String>, u64, Vec<StateResource>), Diagnostic> {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("case.state.json");
        std::fs::write(&path, bytes).expect("write the fixture");
        let mut sources = SourceMap::default();
        read_fixture(&path, "tests/case.state.json", &mut sources)
    }

    fn at(d: &Diagnostic) -> (usize, usize) {
        let l = d.location.as_ref().expect("a location");
        assert_eq!(l.file, "tests/case.state.json");
        (l.line, l.column)
    }

    #[test]
    fn a_fixture_that_is_not_json_is_located() {
        let d = fixture(b"{\n  \"resources\": [\n    {,}\n  ]\n}\n").unwrap_err();
        assert_eq!(d.code, codes::BAD_FIXTURE);
        assert_eq!(d.summary, "a state fixture is not JSON");
        assert_eq!(at(&d), (3, 6));
    }

    #[test]
    fn a_fixture_that_is_not_utf8_names_the_byte() {
        let d = fixture(b"{\"lineage\": \"caf\xe9\"}").unwrap_err();
        assert_eq!(d.summary, "a state fixture is not valid UTF-8");
        assert!(
            d.detail.contains("byte 16 (line 1, column 17)"),
            "{}",
            d.detail
        );
        assert_eq!(at(&d), (1, 17));
    }

    #[test]
    fn a_row_that_is_not_a_state_row_is_located() {
        let d = fixture(b"[\n  {\"address\": \"network.main\"}\n]").unwrap_err();
        assert_eq!(
            d.summary,
            "a state fixture holds something that is not a state row"
        );
        assert!(d.detail.contains("missing field"), "{}", d.detail);
        assert_eq!(at(&d).0, 2);
        let d = fixture(b"{\"resources\": 7}").unwrap_err();
        assert!(d.detail.contains("invalid type"), "{}", d.detail);
        let d = fixture(b"  \"text\"").unwrap_err();
        assert_eq!(d.summary, "a state fixture holds no resources");
        assert_eq!(at(&d), (1, 3));
    }

    #[test]
    fn a_fixture_with_one_address_twice_is_refused_at_the_second_row() {
        let row = |id: &str| {
            format!(
                r#"{{"address": "network.main", "provider": "local", "region": "us-east", "native_region": "local-east-1", "attrs": {{}}, "sensitive": [], "hash": "{}", "cloud_id": "{id}", "outputs": {{}}, "deps": []}}"#,
                "0".repeat(64)
            )
        };
        let text = format!("[\n  {},\n  {}\n]\n", row("net-1"), row("net-2"));
        let d = fixture(text.as_bytes()).unwrap_err();
        assert_eq!(d.code, codes::BAD_FIXTURE);
        assert_eq!(d.summary, "a state fixture holds one address twice");
        assert!(d.detail.contains("`network.main`"), "{}", d.detail);
        assert_eq!(at(&d).0, 3);
        // A row between them naming the address in its deps: the second row is still found.
        let dependent = row("net-9")
            .replace("\"address\": \"network.main\"", "\"address\": \"subnet.a\"")
            .replace("\"deps\": []", "\"deps\": [\"network.main\"]");
        let text = format!(
            "[\n  {},\n  {},\n  {}\n]\n",
            row("net-1"),
            dependent,
            row("net-2")
        );
        assert_eq!(at(&fixture(text.as_bytes()).unwrap_err()).0, 4);
        let one = format!("[{}]", row("net-1"));
        assert_eq!(fixture(one.as_bytes()).expect("one row").2.len(), 1);
    }

    #[test]
    fn a_valid_fixture_reads() {
        let (lineage, serial, rows) =
            fixture(br#"{"lineage": "l-1", "serial": 4, "resources": []}"#).expect("valid");
        assert_eq!(
            (lineage.as_deref(), serial, rows.len()),
            (Some("l-1"), 4, 0)
        );
        let (lineage, serial, rows) = fixture(b"[]").expect("valid");
        assert_eq!((lineage, serial, rows.len()), (None, 1, 0));
    }
}
