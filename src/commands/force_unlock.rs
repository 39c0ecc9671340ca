use clap::Args;

use super::Global;
use super::ctx;
use super::state::{StackState, open_stack};
use crate::ui::ExitStatus;

#[derive(Debug, Args)]
pub struct ForceUnlockArgs {
    #[command(flatten)]
    pub at: StackState,
}

pub fn run(global: &Global, args: &ForceUnlockArgs) -> ExitStatus {
    ctx::runtime().block_on(async {
        let Some((stack, store)) = open_stack(global, &args.at).await else {
            return ExitStatus::Failure;
        };
        match store.force_unlock(&stack).await {
            Ok(true) => {
                let _ = store
                    .audit(&super::apply::actor(), "force-unlock", &stack, "ok", "")
                    .await;
                eprintln!("Removed the lock on stack `{stack}`.");
                ExitStatus::Success
            }
            Ok(false) => {
                eprintln!("Stack `{stack}` was not locked.");
                ExitStatus::Success
            }
            Err(e) => {
                ctx::fail(global, ctx::state_diag(&e));
                ExitStatus::Failure
            }
        }
    })
}
