use chimera_model::{Address, ProviderName};
use clap::Args;

use super::state::StackState;
use super::{Global, ctx, finish};
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
    /// The provider's region it lives in (e.g. us-east-1); without it, every region the
    /// provider knows is searched.
    #[arg(long, default_value = "")]
    pub region: String,
    #[command(flatten)]
    pub at: StackState,
}

pub fn run(global: &Global, args: &ImportArgs) -> ExitStatus {
    let mut stack = args.at.open(global);
    let r = ctx::runtime().block_on(stack.import(
        &args.address,
        args.provider,
        &args.cloud_id,
        &args.region,
    ));
    let Some(serial) = finish(global, &mut stack, r) else {
        return ExitStatus::Failure;
    };
    eprintln!(
        "Imported {} as {} (generation {serial}); `chimera plan` shows how it differs from the configuration.",
        args.cloud_id, args.address
    );
    ExitStatus::Success
}
