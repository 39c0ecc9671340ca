use chimera_engine::DriftKind;
use clap::Args;

use super::Global;
use super::ctx;
use super::state::{StackState, open_stack};
use crate::ui::{self, ExitStatus};

#[derive(Debug, Args)]
pub struct RefreshArgs {
    #[command(flatten)]
    pub at: StackState,
    /// Only show drift; record nothing.
    #[arg(long)]
    pub dry_run: bool,
}

pub fn run(global: &Global, args: &RefreshArgs) -> ExitStatus {
    ctx::runtime().block_on(async {
        let Some((stack, store)) = open_stack(global, &args.at).await else {
            return ExitStatus::Failure;
        };
        let Some(providers) = ctx::providers(global, &args.at.stack.path).await else {
            return ExitStatus::Failure;
        };
        let result = if args.dry_run {
            chimera_engine::detect_drift(store.as_ref(), &providers, &stack)
                .await
                .map(|d| (d, None))
        } else {
            chimera_engine::refresh(store.as_ref(), &providers, &stack, &super::apply::actor())
                .await
        };
        match result {
            Ok((drift, serial)) => {
                let mut out = String::new();
                if drift.is_empty() {
                    out.push_str(&format!(
                        "No drift: every resource of stack `{stack}` matches state.\n"
                    ));
                }
                for d in &drift {
                    match &d.kind {
                        DriftKind::Deleted => out.push_str(&format!(
                            "- {} ({}) was deleted outside Chimera\n",
                            d.address, d.cloud_id
                        )),
                        DriftKind::Changed { attrs } => {
                            out.push_str(&format!(
                                "~ {} ({}) changed outside Chimera\n",
                                d.address, d.cloud_id
                            ));
                            for (k, recorded, observed) in attrs {
                                out.push_str(&format!("    ~ {k} = {recorded} -> {observed}\n"));
                            }
                        }
                    }
                }
                if let Some(s) = serial {
                    out.push_str(&format!(
                        "Recorded as generation {s}; `chimera plan` shows how to heal it.\n"
                    ));
                }
                ui::print(&out);
                ExitStatus::Success
            }
            Err(e) => {
                ctx::fail(global, ctx::engine_diag(&e));
                ExitStatus::Failure
            }
        }
    })
}
