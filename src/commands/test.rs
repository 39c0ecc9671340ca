//! `chimera test`: snapshot-tested previews for a config repository (the harness is
//! `chimera_workflow::test`; this renders its results).

use std::path::PathBuf;

use chimera_workflow::test::{Outcome, TestOptions};
use clap::Args;

use super::{Global, ctx};
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

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
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
    let opts = TestOptions {
        update: args.update,
        filter: args.filter.clone(),
        ci: in_ci(),
    };
    let settings = ctx::settings(global, None);
    let run = match chimera_workflow::test::run(&args.dir, &opts, &settings) {
        Ok(r) => r,
        Err(e) => {
            ctx::report(global, None, &e);
            return ExitStatus::Failure;
        }
    };
    let color = ui::use_color(
        global.color,
        std::io::IsTerminal::is_terminal(&std::io::stderr()),
    );
    let rel = |p: &std::path::Path| p.strip_prefix(&args.dir).unwrap_or(p).display().to_string();
    for (case, outcome) in &run.cases {
        let snap = rel(&case.snapshot);
        match outcome {
            Outcome::Passed => eprintln!("ok      {}", case.name),
            Outcome::Updated => eprintln!("updated {} ({snap})", case.name),
            Outcome::New => eprintln!(
                "new     {} (wrote {snap}: review it and commit it)",
                case.name
            ),
            Outcome::Differs { snapshot, preview } => {
                eprintln!("FAIL    {}: the preview differs from {snap}", case.name);
                eprint!("{}", diff(snapshot, preview, color));
            }
            Outcome::NewInCi { written } => eprintln!(
                "FAIL    {}: no snapshot {snap}; in CI a new snapshot is not accepted. The preview is in {}: review it, run `chimera test --update` locally and commit the snapshot",
                case.name,
                rel(written)
            ),
            Outcome::WriteFailed(_) => {}
        }
    }
    for o in &run.orphans {
        if o.removed {
            eprintln!("removed tests/snapshots/{}.snap (its case is gone)", o.name);
        } else {
            eprintln!(
                "warning: tests/snapshots/{0}.snap has no case `tests/{0}.ncl`; `chimera test --update` removes it",
                o.name
            );
        }
    }
    let problems = chimera_workflow::test::write_failures(&run);
    if !problems.is_empty() {
        ui::emit_diagnostics(
            &problems,
            &chimera_model::SourceMap::default(),
            global.error_format,
            global.color,
        );
    }
    let (passed, failed, written) = (run.passed(), run.failed(), run.written());
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
