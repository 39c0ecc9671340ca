use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;

use chimera_compiler::render;
use chimera_engine::ApplyOptions;
use chimera_model::Diagnostic;
use clap::Args;

use super::Global;
use super::ctx::{self, StateArgs};
use super::plan::{Planned, make_plan, read_plan_file};
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
    /// A message recorded with the new generation.
    #[arg(long, short = 'm', default_value = "")]
    pub message: String,
}

fn is_plan_file(p: &std::path::Path) -> bool {
    p.is_file() && p.extension().is_none_or(|e| e != "ncl")
}

pub fn run(global: &Global, args: &ApplyArgs) -> ExitStatus {
    ctx::runtime().block_on(async {
        let (planned, confirm) = if is_plan_file(&args.target) {
            match read_plan_file(&args.target) {
                Ok(mut p) => {
                    if let Some(url) = &args.state.state {
                        p.state_url = url.clone();
                    }
                    (p, false)
                }
                Err(d) => {
                    ctx::fail(global, d);
                    return ExitStatus::Failure;
                }
            }
        } else {
            // Resolve an interrupted apply before planning, so the plan sees the truth.
            if !recover_first(global, &args.target, &args.state).await {
                return ExitStatus::Failure;
            }
            match make_plan(global, &args.target, &args.state, false).await {
                Some(p) => (p, !args.yes),
                None => return ExitStatus::Failure,
            }
        };
        execute(
            global,
            planned,
            confirm,
            args.parallelism as usize,
            &args.message,
        )
        .await
    })
}

/// Opens state and providers for a stack path and resolves pending intents.
pub async fn recover_first(global: &Global, path: &std::path::Path, state: &StateArgs) -> bool {
    let Some(compiled) = super::compile_or_report(global, path) else {
        return false;
    };
    let Some(graph) = compiled.graph else {
        return false;
    };
    let Some(store) = ctx::open_state(global, &ctx::state_url(state, path)).await else {
        return false;
    };
    let Some(providers) = ctx::providers_with(
        global,
        &ctx::local_cloud_path(path),
        &graph.provider_settings,
    )
    .await
    else {
        return false;
    };
    match chimera_engine::recover(store.as_ref(), &providers, &graph.stack, "chimera").await {
        Ok(r) => {
            if !r.adopted.is_empty() || !r.abandoned.is_empty() {
                eprintln!(
                    "Recovered an interrupted apply: adopted {}, abandoned {} (they are planned again).",
                    r.adopted.len(),
                    r.abandoned.len()
                );
            }
            true
        }
        Err(e) => {
            ctx::fail(global, ctx::engine_diag(&e));
            false
        }
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

/// Shows a plan, asks if needed, applies it, and reports.
pub async fn execute(
    global: &Global,
    planned: Planned,
    confirm: bool,
    parallelism: usize,
    message: &str,
) -> ExitStatus {
    let color = ui::use_color(global.color, std::io::stdout().is_terminal());
    ui::print(&render::plan_text(&planned.plan, color));
    if !planned.plan.has_changes() {
        return ExitStatus::Success;
    }
    if confirm && !confirmed() {
        ctx::fail(
            global,
            Diagnostic::error("E0307", "apply not confirmed").detail(
                "nothing was changed; answer `yes` at the prompt, pass -y, or save the plan with `chimera plan --out FILE` and apply the file",
            ),
        );
        return ExitStatus::Failure;
    }
    let Some(store) = ctx::open_state(global, &planned.state_url).await else {
        return ExitStatus::Failure;
    };
    let Some(providers) = ctx::providers_with(
        global,
        std::path::Path::new(&planned.local_cloud),
        &planned.plan.provider_settings,
    )
    .await
    else {
        return ExitStatus::Failure;
    };
    let progress = Arc::new(ui::ApplyProgress::new());
    let opts = ApplyOptions {
        parallelism,
        actor: actor(),
        message: message.to_string(),
        progress: progress.clone(),
    };
    let result = chimera_engine::apply(&planned.plan, store.as_ref(), &providers, &opts).await;
    progress.finish();
    match result {
        Ok(report) => {
            let created = report.succeeded.len();
            eprintln!(
                "Apply {}: generation {} of stack `{}`, {created} steps succeeded, {} failed, {} skipped.",
                if report.ok() {
                    "complete"
                } else {
                    "incomplete"
                },
                report.serial,
                planned.plan.stack,
                report.failed.len(),
                report.skipped.len()
            );
            for (s, e) in &report.failed {
                eprintln!("  {} {}: {e}", s.kind.as_str(), s.address);
            }
            if report.ok() {
                ExitStatus::Success
            } else {
                ExitStatus::Failure
            }
        }
        Err(e) => {
            ctx::fail(global, ctx::engine_diag(&e));
            ExitStatus::Failure
        }
    }
}

pub fn actor() -> String {
    std::env::var("USER")
        .map(|u| format!("{u}@chimera"))
        .unwrap_or_else(|_| "chimera".into())
}
