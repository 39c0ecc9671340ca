//! `chimera preview --base REF`: how the desired state changed between a git ref and the
//! working tree — the review view of a pull request (no state, no provider calls).

use chimera_plans::markdown::{self, MarkdownOptions};
use chimera_plans::render;
use clap::Args;

use super::plan::{PlanFormat, stdout_color};
use super::{Global, StackArg, ctx};
use crate::ui::{self, ExitStatus};

#[derive(Debug, Args)]
pub struct PreviewArgs {
    #[command(flatten)]
    pub stack: StackArg,
    /// The git ref to compare the working tree with (a branch, tag, commit, `HEAD~1`, …).
    #[arg(long, value_name = "REF")]
    pub base: String,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: PlanFormat,
    /// Exit 0 when the desired state is unchanged, 2 when it changed, 1 on error.
    #[arg(long)]
    pub detailed_exitcode: bool,
}

pub fn run(global: &Global, args: &PreviewArgs) -> ExitStatus {
    let settings = ctx::settings(global, None);
    let p = match chimera_workflow::preview::preview(&args.stack.path, &args.base, &settings) {
        Ok(p) => p,
        Err(e) => {
            ctx::report(global, None, &e);
            return ExitStatus::Failure;
        }
    };
    let (plan, base) = (&p.plan, &p.base);
    let short = &p.commit[..p.commit.len().min(10)];
    match args.format {
        PlanFormat::Text => ui::print(&render::plan_text_titled(
            plan,
            stdout_color(global),
            &format!(
                "Desired-state changes to stack `{}` from `{base}` ({short}) to the working tree:",
                plan.stack
            ),
            &format!(
                "No changes to the desired state of stack `{}` between `{base}` ({short}) and the working tree.",
                plan.stack
            ),
        )),
        PlanFormat::Json => {
            let mut doc = render::plan_json(plan);
            doc["base"] = serde_json::json!({ "ref": base, "commit": p.commit });
            ui::print(&format!(
                "{}\n",
                serde_json::to_string_pretty(&doc).unwrap_or_default()
            ));
        }
        PlanFormat::Markdown => {
            let opts = MarkdownOptions {
                title: format!("Chimera preview for stack `{}`", plan.stack),
                context: Some(format!(
                    "Desired-state changes from `{base}` (`{short}`) to this change; no state was read, so outputs of existing resources show as references."
                )),
                max_chars: markdown::DEFAULT_MAX_CHARS,
                findings: Vec::new(),
            };
            ui::print(&markdown::plan_markdown(plan, &opts));
        }
    }
    if args.detailed_exitcode && plan.has_changes() {
        ExitStatus::Changes
    } else {
        ExitStatus::Success
    }
}
