use clap::Args;

use super::state::StackState;
use super::{Global, ctx, finish};
use crate::ui::ExitStatus;

#[derive(Debug, Args)]
pub struct ForceUnlockArgs {
    #[command(flatten)]
    pub at: StackState,
}

pub fn run(global: &Global, args: &ForceUnlockArgs) -> ExitStatus {
    let mut stack = args.at.open(global);
    let r = ctx::runtime().block_on(stack.force_unlock());
    let Some(removed) = finish(global, &mut stack, r) else {
        return ExitStatus::Failure;
    };
    let name = stack.name().unwrap_or_default();
    if removed {
        eprintln!("Removed the lock on stack `{name}`.");
    } else {
        eprintln!("Stack `{name}` was not locked.");
    }
    ExitStatus::Success
}
