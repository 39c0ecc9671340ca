use std::sync::Arc;

use chimera_workflow::ApplyRequest;
use clap::Args;

use super::apply::{conclude, review};
use super::ctx::{self, StateArgs};
use super::{Global, StackArg};
use crate::ui::{self, ExitStatus};

#[derive(Debug, Args)]
pub struct DestroyArgs {
    #[command(flatten)]
    pub stack: StackArg,
    #[command(flatten)]
    pub state: StateArgs,
    /// Destroy without asking.
    #[arg(short = 'y', long = "yes")]
    pub yes: bool,
    #[arg(long, default_value_t = 10)]
    pub parallelism: usize,
}

pub fn run(global: &Global, args: &DestroyArgs) -> ExitStatus {
    let progress = Arc::new(ui::ApplyProgress::new());
    let req = ApplyRequest {
        parallelism: args.parallelism.max(1),
        message: "destroy".into(),
        progress: progress.clone(),
    };
    let mut stack = super::open(global, &args.stack.path, Some(&args.state));
    let r = ctx::runtime().block_on(stack.destroy(&req, review(global, !args.yes)));
    progress.finish();
    conclude(global, Some(&mut stack), r)
}
