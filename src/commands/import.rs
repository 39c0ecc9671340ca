use chimera_model::{Address, ProviderName};
use clap::Args;

use super::Global;
use super::ctx;
use super::state::{StackState, open_stack};
use crate::ui::ExitStatus;

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The address to import as, e.g. network.main.
    pub address: Address,
    /// The provider's id of the existing resource.
    pub cloud_id: String,
    /// The provider holding it.
    #[arg(long, default_value = "local")]
    pub provider: ProviderName,
    #[command(flatten)]
    pub at: StackState,
}

pub fn run(global: &Global, args: &ImportArgs) -> ExitStatus {
    ctx::runtime().block_on(async {
        let Some((stack, store)) = open_stack(global, &args.at).await else {
            return ExitStatus::Failure;
        };
        let Some(providers) = ctx::providers(global, &args.at.stack.path).await else { return ExitStatus::Failure };
        match chimera_engine::import(store.as_ref(), &providers, &stack, &args.address, args.provider, &args.cloud_id, &super::apply::actor()).await {
            Ok(serial) => {
                eprintln!("Imported {} as {} (generation {serial}); `chimera plan` shows how it differs from the configuration.", args.cloud_id, args.address);
                ExitStatus::Success
            }
            Err(e) => {
                ctx::fail(global, ctx::engine_diag(&e));
                ExitStatus::Failure
            }
        }
    })
}
