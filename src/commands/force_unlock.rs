use clap::Args;

use super::Global;
use super::ctx;
use super::state::{StackState, stack_name};
use crate::ui::ExitStatus;

#[derive(Debug, Args)]
pub struct ForceUnlockArgs {
    #[command(flatten)]
    pub at: StackState,
}

pub fn run(global: &Global, args: &ForceUnlockArgs) -> ExitStatus {
    let Some(stack) = stack_name(global, &args.at) else {
        return ExitStatus::Failure;
    };
    ctx::runtime().block_on(async {
        let Some(store) =
            ctx::open_state(global, &ctx::state_url(&args.at.state, &args.at.stack.path)).await
        else {
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
