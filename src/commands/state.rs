use chimera_model::Address;
use clap::{Args, Subcommand};

use super::ctx::{self, StateArgs};
use super::{Global, StackArg, compile_or_report};
use crate::ui::{self, ExitStatus};

#[derive(Debug, Args)]
pub struct StateCmd {
    #[command(subcommand)]
    pub command: StateSub,
}

#[derive(Debug, Subcommand)]
pub enum StateSub {
    /// List the resources in state.
    List(StackState),
    /// Print the stack's current state as JSON (a `chimera test` state fixture).
    Pull(StackState),
    /// Show one resource's state as JSON (sensitive values are stored as digests).
    Show {
        address: Address,
        #[command(flatten)]
        at: StackState,
    },
    /// Copy stacks, with their whole history and lineage, from one state store to another
    /// (e.g. the embedded SQLite file to a team PostgreSQL).
    Migrate(super::migrate::MigrateArgs),
}

#[derive(Debug, Args)]
pub struct StackState {
    #[command(flatten)]
    pub stack: StackArg,
    #[command(flatten)]
    pub state: StateArgs,
    /// The stack name (default: from compiling the stack).
    #[arg(long = "stack", value_name = "NAME")]
    pub name: Option<String>,
}

/// The stack's name: given, or found by compiling it.
pub fn stack_name(global: &Global, s: &StackState) -> Option<String> {
    if let Some(n) = &s.name {
        return Some(n.clone());
    }
    compile_or_report(global, &s.stack.path)
        .and_then(|c| c.graph)
        .map(|g| g.stack)
}

/// The stack's name and its state store, or `None` once the reason is reported.
pub async fn open_stack(
    global: &Global,
    at: &StackState,
) -> Option<(String, Box<dyn chimera_state::StateStore>)> {
    let stack = stack_name(global, at)?;
    let store = ctx::open_state(global, &ctx::state_url(&at.state, &at.stack.path)).await?;
    Some((stack, store))
}

pub fn run(global: &Global, cmd: &StateCmd) -> ExitStatus {
    let (at, address) = match &cmd.command {
        StateSub::List(at) | StateSub::Pull(at) => (at, None),
        StateSub::Show { address, at } => (at, Some(address)),
        StateSub::Migrate(args) => return super::migrate::run(global, args),
    };
    ctx::runtime().block_on(async {
        let Some((stack, store)) = open_stack(global, at).await else {
            return ExitStatus::Failure;
        };
        let current = match store.current(&stack).await {
            Ok(c) => c,
            Err(e) => {
                ctx::fail(global, ctx::state_diag(&e));
                return ExitStatus::Failure;
            }
        };
        if let StateSub::Pull(_) = &cmd.command {
            let info = store.stack(&stack).await.ok().flatten();
            let doc = serde_json::json!({
                "stack": stack,
                "lineage": info.as_ref().map(|i| i.lineage.clone()),
                "serial": info.as_ref().map(|i| i.serial).unwrap_or(0),
                "resources": current,
            });
            ui::print(&format!("{}\n", serde_json::to_string_pretty(&doc).unwrap_or_default()));
            return ExitStatus::Success;
        }
        match address {
            None => {
                let mut out = String::new();
                for r in &current {
                    out.push_str(&format!("{}\t{}\t{}\n", r.address, r.provider, r.cloud_id));
                }
                ui::print(&out);
                ExitStatus::Success
            }
            Some(a) => match current.iter().find(|r| &r.address == a) {
                Some(r) => {
                    ui::print(&format!("{}\n", serde_json::to_string_pretty(r).unwrap_or_default()));
                    ExitStatus::Success
                }
                None => {
                    ctx::fail(
                        global,
                        chimera_model::Diagnostic::error("E0308", "no such resource in state")
                            .detail(format!("{a} is not in the state of stack `{stack}`; `chimera state list` shows what is")),
                    );
                    ExitStatus::Failure
                }
            },
        }
    })
}
