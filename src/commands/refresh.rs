use clap::Args;

use super::state::StackState;
use super::{Global, ctx, finish};
use crate::ui::{self, ExitStatus};

#[derive(Debug, Args)]
pub struct RefreshArgs {
    #[command(flatten)]
    pub at: StackState,
    /// Only show drift; record nothing.
    #[arg(long)]
    pub dry_run: bool,
}

pub fn run(global: &Global, args: &RefreshArgs) -> ExitStatus {
    let mut stack = args.at.open(global);
    let r = ctx::runtime().block_on(stack.refresh(args.dry_run));
    let Some(refreshed) = finish(global, &mut stack, r) else {
        return ExitStatus::Failure;
    };
    let mut out = String::new();
    if refreshed.drift.is_empty() {
        out.push_str(&format!(
            "No drift: every resource of stack `{}` matches state.\n",
            refreshed.stack
        ));
    }
    out.push_str(&chimera_plans::render::drift_text(&refreshed.drift));
    if let Some(s) = refreshed.serial {
        out.push_str(&format!(
            "Recorded as generation {s}; `chimera plan` shows how to heal it.\n"
        ));
    }
    ui::print(&out);
    ExitStatus::Success
}
