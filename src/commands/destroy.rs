use clap::Args;

use super::apply::{execute, recover_first};
use super::ctx::{self, StateArgs};
use super::plan::make_plan;
use super::{Global, StackArg};
use crate::ui::ExitStatus;

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
    ctx::runtime().block_on(async {
        if !recover_first(global, &args.stack.path, &args.state).await {
            return ExitStatus::Failure;
        }
        let Some(planned) = make_plan(global, &args.stack.path, &args.state, true).await else {
            return ExitStatus::Failure;
        };
        execute(
            global,
            planned,
            !args.yes,
            args.parallelism.max(1),
            "destroy",
        )
        .await
    })
}
