use clap::Args;

use super::Global;
use super::ctx;
use super::state::{StackState, open_stack};
use crate::ui::{self, ExitStatus};

#[derive(Debug, Args)]
pub struct HistoryArgs {
    #[command(flatten)]
    pub at: StackState,
}

pub fn run(global: &Global, args: &HistoryArgs) -> ExitStatus {
    ctx::runtime().block_on(async {
        let Some((stack, store)) = open_stack(global, &args.at).await else {
            return ExitStatus::Failure;
        };
        match store.history(&stack).await {
            Ok(gens) => {
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
            Err(e) => {
                ctx::fail(global, ctx::state_diag(&e));
                ExitStatus::Failure
            }
        }
    })
}
