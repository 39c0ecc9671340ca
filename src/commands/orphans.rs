use chimera_model::ProviderName;
use clap::Args;

use super::Global;
use super::ctx;
use super::state::{StackState, open_stack};
use crate::ui::{self, ExitStatus};

#[derive(Debug, Args)]
pub struct OrphansArgs {
    #[command(flatten)]
    pub at: StackState,
}

pub fn run(global: &Global, args: &OrphansArgs) -> ExitStatus {
    ctx::runtime().block_on(async {
        let Some((stack, store)) = open_stack(global, &args.at).await else {
            return ExitStatus::Failure;
        };
        let Some(providers) = ctx::providers(global, &args.at.stack.path).await else { return ExitStatus::Failure };
        match chimera_engine::orphans(store.as_ref(), &providers, &stack, &[ProviderName::Local]).await {
            Ok(found) => {
                let mut out = String::new();
                for o in &found {
                    let addr = o.tags.get(chimera_providers::TAG_ADDRESS).cloned().unwrap_or_default();
                    out.push_str(&format!("{}\t{}\t{}\n", o.cloud_id, o.kind, addr));
                }
                ui::print(&out);
                if !found.is_empty() {
                    eprintln!(
                        "{} resources are tagged for stack `{stack}` but not in its state: adopt one with `chimera import ADDRESS ID`, or delete it in the cloud",
                        found.len()
                    );
                }
                ExitStatus::Success
            }
            Err(e) => {
                ctx::fail(global, ctx::engine_diag(&e));
                ExitStatus::Failure
            }
        }
    })
}
