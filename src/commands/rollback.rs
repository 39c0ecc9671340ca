use std::sync::Arc;

use chimera_workflow::ApplyRequest;
use clap::Args;

use super::Global;
use super::apply::{conclude, review};
use super::ctx;
use super::state::StackState;
use crate::ui::{self, ExitStatus};

#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// The generation to go back to (`chimera history` lists them).
    pub generation: u64,
    #[command(flatten)]
    pub at: StackState,
    /// Apply without asking.
    #[arg(short = 'y', long = "yes")]
    pub yes: bool,
}

pub fn run(global: &Global, args: &RollbackArgs) -> ExitStatus {
    let progress = Arc::new(ui::ApplyProgress::new());
    let req = ApplyRequest {
        parallelism: 10,
        message: format!("rollback to generation {}", args.generation),
        progress: progress.clone(),
        refresh: false,
    };
    let mut stack = args.at.open(global);
    let r =
        ctx::runtime().block_on(stack.rollback(args.generation, &req, review(global, !args.yes)));
    progress.finish();
    conclude(global, Some(&mut stack), r)
}
