use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chimera_plans::plan::Plan;
use chimera_plans::render;
use chimera_workflow::{Applied, ApplyRequest, Error, Stack};
use clap::Args;

use super::Global;
use super::ctx::{self, StateArgs};
use super::plan::stdout_color;
use crate::ui::{self, ExitStatus};

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// A stack (directory or .ncl file) to plan and apply, or a plan file from `plan --out`.
    #[arg(default_value = ".")]
    pub target: PathBuf,
    #[command(flatten)]
    pub state: StateArgs,
    /// Apply without asking.
    #[arg(short = 'y', long = "yes")]
    pub yes: bool,
    /// Concurrent provider calls per provider.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..))]
    pub parallelism: u16,
    /// Read every resource from its cloud before planning, as `terraform plan` does
    /// (`--refresh=false` plans against state as recorded).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub refresh: bool,
    /// A message recorded with the new generation.
    #[arg(long, short = 'm', default_value = "")]
    pub message: String,
}

fn is_plan_file(p: &Path) -> bool {
    p.is_file() && p.extension().is_none_or(|e| e != "ncl")
}

pub fn run(global: &Global, args: &ApplyArgs) -> ExitStatus {
    let progress = Arc::new(ui::ApplyProgress::new());
    let req = ApplyRequest {
        parallelism: args.parallelism as usize,
        message: args.message.clone(),
        progress: progress.clone(),
        refresh: args.refresh,
    };
    if is_plan_file(&args.target) {
        let settings = ctx::settings(global, Some(&args.state));
        let file = match chimera_workflow::read_plan_file(&args.target, &settings) {
            Ok(f) => f,
            Err(e) => {
                ctx::report(global, None, &e);
                return ExitStatus::Failure;
            }
        };
        // A saved plan was reviewed when it was made: it is shown, not asked about again.
        let r = ctx::runtime().block_on(chimera_workflow::apply_file(
            file,
            &settings,
            &req,
            review(global, false),
        ));
        progress.finish();
        return conclude(global, None, r);
    }
    let mut stack = super::open(global, &args.target, Some(&args.state));
    let r = ctx::runtime().block_on(stack.apply(&req, review(global, !args.yes)));
    progress.finish();
    conclude(global, Some(&mut stack), r)
}

/// The review step: shows the plan, and asks when `ask` (only 'yes' goes on).
pub fn review(global: &Global, ask: bool) -> impl FnOnce(&Plan) -> bool {
    let color = stdout_color(global);
    move |plan: &Plan| {
        ui::print(&render::plan_text(plan, color));
        !ask || !plan.has_changes() || confirmed()
    }
}

fn confirmed() -> bool {
    if !std::io::stdin().is_terminal() {
        return false;
    }
    eprint!("Apply these changes? Only 'yes' is accepted: ");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
    line.trim() == "yes"
}

/// Reports an apply: recovery, the summary line, each failure as a diagnostic.
pub fn conclude(
    global: &Global,
    stack: Option<&mut Stack>,
    r: Result<Applied, Error>,
) -> ExitStatus {
    let applied = match r {
        Ok(a) => a,
        Err(e) => {
            ctx::report(global, stack, &e);
            return ExitStatus::Failure;
        }
    };
    if let Some(s) = stack {
        ctx::warnings(global, s);
    }
    let warned: Vec<chimera_model::Diagnostic> = applied
        .findings
        .iter()
        .map(chimera_workflow::policy::warning)
        .collect();
    if !warned.is_empty() {
        ui::emit_diagnostics(
            &warned,
            &chimera_model::SourceMap::default(),
            global.error_format,
            global.color,
        );
    }
    let rec = &applied.recovery;
    if !rec.adopted.is_empty() || !rec.abandoned.is_empty() {
        eprintln!(
            "Recovered an interrupted apply: adopted {}, abandoned {} (they are planned again).",
            rec.adopted.len(),
            rec.abandoned.len()
        );
    }
    let Some(report) = &applied.report else {
        return ExitStatus::Success;
    };
    let moved = match report.moved.len() {
        0 => String::new(),
        n => format!(", {n} moved"),
    };
    eprintln!(
        "Apply {}: generation {} of stack `{}`, {} steps succeeded, {} failed, {} skipped{moved}.",
        if report.ok() {
            "complete"
        } else {
            "incomplete"
        },
        report.serial,
        applied.plan.stack,
        report.succeeded.len(),
        report.failed.len(),
        report.skipped.len()
    );
    if report.ok() {
        return ExitStatus::Success;
    }
    ui::emit_diagnostics(
        &report.diagnostics(),
        &chimera_model::SourceMap::default(),
        global.error_format,
        global.color,
    );
    ExitStatus::Failure
}
