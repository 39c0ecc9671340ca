use clap::Args;

use super::state::StackState;
use super::{Global, ctx, finish};
use crate::ui::{self, ExitStatus};

#[derive(Debug, Args)]
pub struct HistoryArgs {
    #[command(flatten)]
    pub at: StackState,
}

pub fn run(global: &Global, args: &HistoryArgs) -> ExitStatus {
    let mut stack = args.at.open(global);
    let r = ctx::runtime().block_on(stack.history());
    let Some(gens) = finish(global, &mut stack, r) else {
        return ExitStatus::Failure;
    };
    let mut out = String::from("serial\tstatus\tcreated\tactor\tmessage\n");
    for g in gens {
        out.push_str(&format!(
            "{}\t{}\t{}\t{}\t{}\n",
            g.serial, g.status, g.created_at, g.actor, g.message
        ));
    }
    ui::print(&out);
    ExitStatus::Success
}
