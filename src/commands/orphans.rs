use chimera_model::ProviderName;
use clap::Args;

use super::state::StackState;
use super::{Global, ctx, finish};
use crate::ui::{self, ExitStatus};

#[derive(Debug, Args)]
pub struct OrphansArgs {
    /// Providers to scan (repeatable); default: those the stack's state uses, or local.
    #[arg(long = "provider")]
    pub providers: Vec<ProviderName>,
    #[command(flatten)]
    pub at: StackState,
}

pub fn run(global: &Global, args: &OrphansArgs) -> ExitStatus {
    let mut stack = args.at.open(global);
    let r = ctx::runtime().block_on(stack.orphans(&args.providers));
    let Some(found) = finish(global, &mut stack, r) else {
        return ExitStatus::Failure;
    };
    ui::print(&ui::inventory(&found));
    if !found.is_empty() {
        let name = stack.name().unwrap_or_default();
        eprintln!(
            "{} resources are tagged for stack `{name}` but not in its state: adopt one with `chimera import ADDRESS ID`, or delete it in the cloud",
            found.len()
        );
    }
    ExitStatus::Success
}
