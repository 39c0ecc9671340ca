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
    /// Read every resource from its cloud before planning, as `terraform plan` does
    /// (`--refresh=false` plans against state as recorded).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub refresh: bool,
    #[arg(long, default_value_t = 10)]
    pub parallelism: usize,
}

pub fn run(global: &Global, args: &DestroyArgs) -> ExitStatus {
    let progress = Arc::new(ui::ApplyProgress::new());
    let req = ApplyRequest {
        parallelism: args.parallelism.max(1),
        message: "destroy".into(),
        progress: progress.clone(),
        refresh: args.refresh,
    };
    let mut stack = super::open(global, &args.stack.path, Some(&args.state));
    let r = ctx::runtime().block_on(stack.destroy(&req, review(global, !args.yes)));
    progress.finish();
    conclude(global, Some(&mut stack), r)
}
