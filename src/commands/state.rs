use chimera_model::Address;
use chimera_workflow::Stack;
use clap::{Args, Subcommand};

use super::ctx::{self, StateArgs};
use super::{Global, StackArg, finish};
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
    /// Seal everything again with the key, opening with the fallback key: the sensitive
    /// values state keeps, the given plan files, the evaluation cache (docs/security.md).
    RotateKey {
        /// Saved plan files to seal again too.
        #[arg(long = "plan", value_name = "FILE")]
        plans: Vec<std::path::PathBuf>,
        #[command(flatten)]
        at: StackState,
    },
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

impl StackState {
    /// The stack, named when `--stack` says so (then it is not compiled to learn its name).
    pub fn open(&self, global: &Global) -> Stack {
        super::open(global, &self.stack.path, Some(&self.state)).named(self.name.clone())
    }
}

fn json(v: &impl serde::Serialize) -> String {
    format!("{}\n", serde_json::to_string_pretty(v).unwrap_or_default())
}

pub fn run(global: &Global, cmd: &StateCmd) -> ExitStatus {
    let rt = ctx::runtime();
    let (mut stack, text) = match &cmd.command {
        StateSub::Migrate(args) => return super::migrate::run(global, args),
        StateSub::Pull(at) => {
            let mut stack = at.open(global);
            let r = rt.block_on(stack.pull()).map(|p| json(&p));
            (stack, r)
        }
        StateSub::List(at) => {
            let mut stack = at.open(global);
            let r = rt.block_on(stack.state_rows()).map(|rows| {
                rows.iter()
                    .map(|r| format!("{}\t{}\t{}\n", r.address, r.provider, r.cloud_id))
                    .collect::<String>()
            });
            (stack, r)
        }
        StateSub::RotateKey { plans, at } => {
            let mut stack = at.open(global);
            let r = rt.block_on(stack.rotate_key(plans)).map(|r| {
                format!(
                    "Sealed with key {}: {} sensitive value(s) in state resealed ({} already), {} plan file(s) resealed, {} cache entr{} dropped.\n",
                    r.key_id,
                    r.state,
                    r.current,
                    r.plan_files,
                    r.cache,
                    if r.cache == 1 { "y" } else { "ies" }
                )
            });
            (stack, r)
        }
        StateSub::Show { address, at } => {
            let mut stack = at.open(global);
            let r = rt.block_on(stack.state_row(address)).map(|r| json(&r));
            (stack, r)
        }
    };
    match finish(global, &mut stack, text) {
        Some(t) => {
            ui::print(&t);
            ExitStatus::Success
        }
        None => ExitStatus::Failure,
    }
}
