use chimera_compiler::plan::{self, Prior};
use chimera_model::{ContentHash, Diagnostic, SourceMap};
use clap::Args;

use super::Global;
use super::apply::{execute, recover_first};
use super::ctx;
use super::plan::Planned;
use super::state::{StackState, stack_name};
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
    let Some(stack) = stack_name(global, &args.at) else {
        return ExitStatus::Failure;
    };
    ctx::runtime().block_on(async {
        if !recover_first(global, &args.at.stack.path, &args.at.state).await {
            return ExitStatus::Failure;
        }
        let url = ctx::state_url(&args.at.state, &args.at.stack.path);
        let Some(store) = ctx::open_state(global, &url).await else {
            return ExitStatus::Failure;
        };
        let loaded = async {
            let info = store.stack(&stack).await?;
            let current = store.current(&stack).await?;
            let target = store.resources_at(&stack, args.generation).await?;
            Ok::<_, chimera_state::StateError>((info, current, target))
        }
        .await;
        let (info, current, target) = match loaded {
            Ok(x) => x,
            Err(e) => {
                ctx::fail(global, ctx::state_diag(&e));
                return ExitStatus::Failure;
            }
        };
        let Some(info) = info.filter(|i| args.generation >= 1 && args.generation <= i.serial)
        else {
            ctx::fail(
                global,
                Diagnostic::error("E0308", "no such generation").detail(format!(
                    "stack `{stack}` has no generation {}; `chimera history` lists them",
                    args.generation
                )),
            );
            return ExitStatus::Failure;
        };
        let prior = Prior {
            lineage: Some(info.lineage.clone()),
            serial: info.serial,
            resources: &current,
        };
        let plan = match plan::plan_targets(
            plan::rollback_targets(&target),
            &stack,
            &prior,
            ContentHash([0; 32]),
            false,
        ) {
            Ok(p) => p,
            Err(diags) => {
                ui::emit_diagnostics(
                    &diags,
                    &SourceMap::default(),
                    global.error_format,
                    global.color,
                );
                return ExitStatus::Failure;
            }
        };
        let lost = plan::unrestorable(&plan);
        if !lost.is_empty() {
            ui::emit_diagnostics(
                &lost,
                &SourceMap::default(),
                global.error_format,
                global.color,
            );
            return ExitStatus::Failure;
        }
        let planned = Planned {
            plan,
            state_url: url,
            local_cloud: ctx::local_cloud_path(&args.at.stack.path)
                .display()
                .to_string(),
        };
        execute(
            global,
            planned,
            !args.yes,
            10,
            &format!("rollback to generation {}", args.generation),
        )
        .await
    })
}
