//! `chimera test`: snapshot-tested previews for a config repository.
//!
//! A case is `tests/NAME.ncl` (a stack, or a variant such as `(import "../main.ncl") & { … }`)
//! with an optional state fixture `tests/NAME.state.json` (what `chimera state pull` prints).
//! Each case is compiled and planned offline — no state store, no provider calls; outputs not
//! yet known show as `(known after apply)` — and the rendered preview is compared with
//! `tests/snapshots/NAME.snap`.

use std::path::{Path, PathBuf};

use chimera_model::{Diagnostic, StateResource, codes};
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

/// State resources from a fixture: `{"resources": [...]}` (as `state pull` prints) or a bare
/// array.
fn read_fixture(path: &Path) -> Result<(Option<String>, u64, Vec<StateResource>), String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
    let doc: Value = serde_json::from_str(&text).map_err(|e| {
        format!(
            "`{}` is not JSON ({e}); write it with `chimera state pull > {}`",
            path.display(),
            path.display()
        )
    })?;
    let (lineage, serial, resources) = match doc {
        Value::Array(_) => (None, 1, doc),
        Value::Object(mut m) => (
            m.get("lineage").and_then(Value::as_str).map(str::to_string),
            m.get("serial").and_then(Value::as_u64).unwrap_or(1),
            m.remove("resources").unwrap_or(Value::Array(vec![])),
        ),
        _ => return Err(format!("`{}` holds no resources", path.display())),
    };
    let rows: Vec<StateResource> = serde_json::from_value(resources).map_err(|e| {
        format!(
            "`{}` has a resource that is not a state row ({e}); write it with `chimera state pull`",
            path.display()
        )
    })?;
    Ok((lineage, serial, rows))
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
    let compiled = chimera_compiler::compile_from(&disk, &case.source, &settings.eval);
    let body = match (&compiled.graph, compiled.has_errors()) {
        (Some(g), false) => {
            let fixture = match &case.fixture {
                Some(f) => read_fixture(f),
                None => Ok((None, 0, vec![])),
            };
            match fixture {
                Err(m) => format!("error: {m}\n"),
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
