use chimera_model::Address;
use chimera_workflow::LocalChange;
use clap::{Args, Subcommand};
use serde_json::Value;

use super::state::StackState;
use super::{Global, ctx, finish};
use crate::ui::{self, ExitStatus};

#[derive(Debug, Args)]
pub struct LocalCmd {
    #[command(subcommand)]
    pub command: LocalSub,
}

#[derive(Debug, Subcommand)]
pub enum LocalSub {
    /// Change a resource in the simulated cloud behind Chimera's back (drift).
    Mutate {
        address: Address,
        /// `key=value`; the value is JSON when it parses as JSON, else a string.
        /// `cpu_utilisation=N` and `memory_utilisation=N` set an instance's simulated
        /// utilisation (percent) instead, which is not drift.
        #[arg(long = "set", value_name = "KEY=VALUE", value_parser = key_value)]
        set: Vec<(String, Value)>,
        /// Delete the resource instead.
        #[arg(long, conflicts_with = "set")]
        delete: bool,
        #[command(flatten)]
        at: StackState,
    },
    /// List everything in the simulated cloud.
    List {
        #[command(flatten)]
        at: StackState,
    },
}

fn key_value(kv: &str) -> Result<(String, Value), String> {
    let (k, v) = kv
        .split_once('=')
        .ok_or_else(|| format!("`{kv}` is not KEY=VALUE"))?;
    let value = serde_json::from_str(v).unwrap_or(Value::String(v.to_string()));
    Ok((k.to_string(), value))
}

pub fn run(global: &Global, cmd: &LocalCmd) -> ExitStatus {
    let rt = ctx::runtime();
    match &cmd.command {
        LocalSub::List { at } => {
            let mut stack = at.open(global);
            let r = rt.block_on(stack.local_inventory());
            let Some(all) = finish(global, &mut stack, r) else {
                return ExitStatus::Failure;
            };
            ui::print(&ui::inventory(&all));
            ExitStatus::Success
        }
        LocalSub::Mutate {
            address,
            set,
            delete,
            at,
        } => {
            let change = if *delete {
                LocalChange::Delete
            } else {
                LocalChange::Set(set.clone())
            };
            let mut stack = at.open(global);
            let r = rt.block_on(stack.local_mutate(address, &change));
            let Some(id) = finish(global, &mut stack, r) else {
                return ExitStatus::Failure;
            };
            eprintln!("Changed {address} ({id}) in the local cloud.");
            ExitStatus::Success
        }
    }
}
