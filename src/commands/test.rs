//! `chimera test`: snapshot-tested previews for a config repository.
//!
//! A case is `tests/NAME.ncl` (a stack, or a variant such as `(import "../main.ncl") & { … }`)
//! with an optional state fixture `tests/NAME.state.json` (what `chimera state pull` prints).
//! Each case is compiled and planned offline — no state store, no provider calls; outputs not
//! yet known show as `(known after apply)` — and the rendered preview is compared with
//! `tests/snapshots/NAME.snap`.

use std::path::{Path, PathBuf};

use chimera_compiler::plan::{self, Prior};
use chimera_compiler::render;
use chimera_model::{Diagnostic, StateResource};
use clap::Args;
use serde_json::Value;

use super::Global;
use super::ctx;
use crate::ui::{self, ExitStatus};

#[derive(Debug, Args)]
pub struct TestArgs {
    /// The config repository (its cases are in `tests/`).
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// Rewrite snapshots that differ or are missing, and remove those without a case.
    #[arg(long)]
    pub update: bool,
    /// Run only the cases whose names contain this.
    #[arg(long, value_name = "TEXT")]
    pub filter: Option<String>,
}

/// One test case: its name and files.
pub struct Case {
    pub name: String,
    pub source: PathBuf,
    pub fixture: Option<PathBuf>,
    pub snapshot: PathBuf,
}

/// The cases under `dir/tests`, by name.
pub fn cases(dir: &Path) -> Result<Vec<Case>, String> {
    let tests = dir.join("tests");
    let entries = std::fs::read_dir(&tests).map_err(|e| {
        format!(
            "cannot read `{}` ({e}); test cases are `tests/NAME.ncl` files (`chimera init` writes one)",
            tests.display()
        )
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
/// `dir`, so snapshots are the same on every machine.
pub fn preview(global: &Global, dir: &Path, case: &Case) -> String {
    let rel = |p: &Path| p.strip_prefix(dir).unwrap_or(p).display().to_string();
    let mut out = format!(
        "# chimera test: {}\n# state: {}\n\n",
        rel(&case.source),
        case.fixture
            .as_deref()
            .map(rel)
            .unwrap_or_else(|| "none (a new stack)".into())
    );
    let compiled = chimera_compiler::compile(&case.source, &global.eval_options());
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
    if let Ok(cwd) = std::env::current_dir().and_then(|c| c.canonicalize())
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

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).map_err(|e| format!("cannot create `{}`: {e}", d.display()))?;
    }
    std::fs::write(path, text).map_err(|e| format!("cannot write `{}`: {e}", path.display()))
}

fn diff(old: &str, new: &str, color: bool) -> String {
    let d = similar::TextDiff::from_lines(old, new);
    let mut out = String::new();
    for hunk in d
        .unified_diff()
        .context_radius(3)
        .header("snapshot", "preview")
        .iter_hunks()
    {
        for (i, line) in hunk.to_string().lines().enumerate() {
            let code = match line.chars().next() {
                _ if i == 0 => "36",
                Some('-') => "31",
                Some('+') => "32",
                _ => "",
            };
            if color && !code.is_empty() {
                out.push_str(&format!("    \x1b[{code}m{line}\x1b[0m\n"));
            } else {
                out.push_str(&format!("    {line}\n"));
            }
        }
    }
    out
}

pub fn run(global: &Global, args: &TestArgs) -> ExitStatus {
    let all = match cases(&args.dir) {
        Ok(c) => c,
        Err(m) => {
            ctx::fail(
                global,
                Diagnostic::error("E0310", "no test cases").detail(m),
            );
            return ExitStatus::Failure;
        }
    };
    let selected: Vec<&Case> = all
        .iter()
        .filter(|c| {
            args.filter
                .as_ref()
                .is_none_or(|f| c.name.contains(f.as_str()))
        })
        .collect();
    if selected.is_empty() {
        ctx::fail(
            global,
            Diagnostic::error("E0310", "no test cases").detail(format!(
                "`{}` has no test case{}; add `tests/NAME.ncl` (a stack, or `(import \"../main.ncl\") & {{ … }}`)",
                args.dir.join("tests").display(),
                args.filter.as_ref().map(|f| format!(" matching `{f}`")).unwrap_or_default()
            )),
        );
        return ExitStatus::Failure;
    }
    let color = ui::use_color(
        global.color,
        std::io::IsTerminal::is_terminal(&std::io::stderr()),
    );
    let ci = in_ci();
    let (mut passed, mut failed, mut written) = (0, 0, 0);
    let mut problems = Vec::new();
    for case in &selected {
        let got = preview(global, &args.dir, case);
        let want = std::fs::read_to_string(&case.snapshot).ok();
        let rel = case
            .snapshot
            .strip_prefix(&args.dir)
            .unwrap_or(&case.snapshot)
            .display()
            .to_string();
        match want {
            Some(w) if w == got => {
                passed += 1;
                eprintln!("ok      {}", case.name);
            }
            Some(w) if args.update => {
                if let Err(m) = write(&case.snapshot, &got) {
                    problems.push(m);
                    failed += 1;
                    continue;
                }
                written += 1;
                eprintln!("updated {} ({rel})", case.name);
                let _ = w;
            }
            Some(w) => {
                failed += 1;
                eprintln!("FAIL    {}: the preview differs from {rel}", case.name);
                eprint!("{}", diff(&w, &got, color));
            }
            None if ci && !args.update => {
                // Written for review, never accepted silently in CI.
                let new = case.snapshot.with_extension("snap.new");
                let _ = write(&new, &got);
                failed += 1;
                eprintln!(
                    "FAIL    {}: no snapshot {rel}; in CI a new snapshot is not accepted. The preview is in {}: review it, run `chimera test --update` locally and commit the snapshot",
                    case.name,
                    new.strip_prefix(&args.dir).unwrap_or(&new).display()
                );
            }
            None => {
                if let Err(m) = write(&case.snapshot, &got) {
                    problems.push(m);
                    failed += 1;
                    continue;
                }
                written += 1;
                eprintln!(
                    "new     {} (wrote {rel}: review it and commit it)",
                    case.name
                );
            }
        }
    }
    // Snapshots whose case is gone.
    let snapshots = args.dir.join("tests/snapshots");
    if args.filter.is_none()
        && let Ok(entries) = std::fs::read_dir(&snapshots)
    {
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
            if args.update {
                let _ = std::fs::remove_file(&p);
                eprintln!("removed tests/snapshots/{stem}.snap (its case is gone)");
            } else {
                eprintln!(
                    "warning: tests/snapshots/{stem}.snap has no case `tests/{stem}.ncl`; `chimera test --update` removes it"
                );
            }
        }
    }
    for m in &problems {
        ctx::fail(
            global,
            Diagnostic::error("E0310", "cannot write a snapshot").detail(m.clone()),
        );
    }
    eprintln!(
        "\ntest result: {}. {passed} passed, {failed} failed{}",
        if failed == 0 { "ok" } else { "FAILED" },
        if written > 0 {
            format!(", {written} written")
        } else {
            String::new()
        }
    );
    if failed > 0 {
        if !args.update {
            eprintln!(
                "If the change is intended, run `chimera test --update` and commit the snapshots."
            );
        }
        ExitStatus::Failure
    } else {
        ExitStatus::Success
    }
}
