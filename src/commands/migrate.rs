//! `chimera state migrate`: copies stacks between state stores, row for row.

use chimera_workflow::migrate::{Moved, migrate};
use clap::Args;

use super::{Global, ctx};
use crate::ui::ExitStatus;

#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// The state to copy from (sqlite://PATH or postgres://…).
    #[arg(long, value_name = "URL")]
    pub from: String,
    /// The state to copy into; created and migrated if new.
    #[arg(long, value_name = "URL")]
    pub to: String,
    /// Copy only this stack (repeatable; default: every stack in the source).
    #[arg(long = "stack", value_name = "NAME")]
    pub stacks: Vec<String>,
}

pub fn run(global: &Global, args: &MigrateArgs) -> ExitStatus {
    let r = ctx::runtime().block_on(migrate(&args.from, &args.to, &args.stacks, &ctx::actor()));
    let migration = match r {
        Ok(m) => m,
        Err(e) => {
            ctx::report(global, None, &e);
            return ExitStatus::Failure;
        }
    };
    let mut status = ExitStatus::Success;
    for (name, moved) in &migration.stacks {
        match moved {
            Ok(Moved::Copied(d)) => {
                eprintln!(
                    "Copied stack `{name}` (lineage {}): {} generations, {} resource rows, {} intents, {} audit entries, verified row for row.",
                    d.lineage,
                    d.generations.len(),
                    d.resources.len(),
                    d.intents.len(),
                    d.audit.len()
                );
                let pending = d.intents.iter().filter(|i| i.status == "pending").count();
                if pending > 0 {
                    eprintln!(
                        "  {pending} intents of an interrupted apply came along: the next apply against the new state recovers them."
                    );
                }
            }
            Ok(Moved::AlreadyThere(serial)) => eprintln!(
                "Stack `{name}` is already in the destination with the same history (generation {serial}); left as it is."
            ),
            Err(e) => {
                ctx::report(global, None, e);
                status = ExitStatus::Failure;
            }
        }
    }
    if status == ExitStatus::Success {
        eprintln!(
            "The source is unchanged. Point --state (or CHIMERA_STATE) at {} from now on.",
            migration.to
        );
    }
    status
}
