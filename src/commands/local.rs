use chimera_model::{Address, Diagnostic};
use clap::{Args, Subcommand};
use serde_json::Value;

use super::Global;
use super::ctx;
use super::state::{StackState, stack_name};
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
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
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

pub fn run(global: &Global, cmd: &LocalCmd) -> ExitStatus {
    ctx::runtime().block_on(async {
        match &cmd.command {
            LocalSub::List { at } => {
                let Some(cloud) = ctx::open_local(global, &at.stack.path).await else {
                    return ExitStatus::Failure;
                };
                match cloud.all().await {
                    Ok(all) => {
                        let mut out = String::new();
                        for o in all {
                            let addr = o
                                .tags
                                .get(chimera_providers::TAG_ADDRESS)
                                .cloned()
                                .unwrap_or_default();
                            out.push_str(&format!("{}\t{}\t{}\n", o.cloud_id, o.kind, addr));
                        }
                        ui::print(&out);
                        ExitStatus::Success
                    }
                    Err(m) => {
                        ctx::fail(
                            global,
                            Diagnostic::error("E0304", "cannot read the local cloud").detail(m),
                        );
                        ExitStatus::Failure
                    }
                }
            }
            LocalSub::Mutate {
                address,
                set,
                delete,
                at,
            } => {
                let Some(stack) = stack_name(global, at) else {
                    return ExitStatus::Failure;
                };
                let Some(store) =
                    ctx::open_state(global, &ctx::state_url(&at.state, &at.stack.path)).await
                else {
                    return ExitStatus::Failure;
                };
                let current = store.current(&stack).await.unwrap_or_default();
                let Some(r) = current.iter().find(|r| &r.address == address) else {
                    ctx::fail(
                        global,
                        Diagnostic::error("E0308", "no such resource in state")
                            .detail(format!("{address} is not in the state of `{stack}`")),
                    );
                    return ExitStatus::Failure;
                };
                let Some(cloud) = ctx::open_local(global, &at.stack.path).await else {
                    return ExitStatus::Failure;
                };
                let result = if *delete {
                    cloud.remove(&r.cloud_id).await.map(|_| ())
                } else {
                    let mut res = Ok(());
                    for kv in set {
                        let Some((k, v)) = kv.split_once('=') else {
                            res = Err(format!("`{kv}` is not KEY=VALUE"));
                            break;
                        };
                        let value = serde_json::from_str(v).unwrap_or(Value::String(v.to_string()));
                        if let Err(e) = cloud.mutate(&r.cloud_id, k, value).await {
                            res = Err(e);
                            break;
                        }
                    }
                    res
                };
                match result {
                    Ok(()) => {
                        eprintln!("Changed {address} ({}) in the local cloud.", r.cloud_id);
                        ExitStatus::Success
                    }
                    Err(m) => {
                        ctx::fail(
                            global,
                            Diagnostic::error("E0304", "cannot change the local cloud").detail(m),
                        );
                        ExitStatus::Failure
                    }
                }
            }
        }
    })
}
