use chimera_model::ProviderName;
use clap::Args;

use super::Global;
use super::ctx;
use super::state::{StackState, open_stack};
use crate::ui::{self, ExitStatus};

#[derive(Debug, Args)]
pub struct OrphansArgs {
    /// Providers to scan (repeatable); default: those the stack's state uses, or local.
    #[arg(long = "provider")]
    pub providers: Vec<ProviderName>,
    #[command(flatten)]
    pub at: StackState,
}

pub fn run(global: &Global, args: &OrphansArgs) -> ExitStatus {
    ctx::runtime().block_on(async {
        let Some((stack, store)) = open_stack(global, &args.at).await else {
            return ExitStatus::Failure;
        };
        let Some(providers) = ctx::providers(global, &args.at.stack.path).await else { return ExitStatus::Failure };
        let mut scan = args.providers.clone();
        if scan.is_empty() {
            match store.current(&stack).await {
                Ok(rows) => scan.extend(rows.iter().map(|r| r.provider)),
                Err(e) => {
                    ctx::fail(global, ctx::state_diag(&e));
                    return ExitStatus::Failure;
                }
            }
            if scan.is_empty() {
                scan.push(ProviderName::Local);
            }
        }
        scan.sort_by_key(|p| p.as_str());
        scan.dedup();
        match chimera_engine::orphans(store.as_ref(), &providers, &stack, &scan).await {
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
