//! `chimera state migrate`: copies stacks between state stores, row for row.

use chimera_model::Diagnostic;
use chimera_state::{LockRequest, StackDump, StateError, StateStore, redact_url};
use clap::Args;

use super::Global;
use super::ctx;
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
    if let Some(path) = args.from.strip_prefix("sqlite://")
        && !std::path::Path::new(path).exists()
    {
        ctx::fail(
            global,
            Diagnostic::error("E0309", "nothing to migrate").detail(format!(
                "there is no state database at `{path}`; check --from"
            )),
        );
        return ExitStatus::Failure;
    }
    ctx::runtime().block_on(async {
        let Some(from) = ctx::open_state(global, &args.from).await else {
            return ExitStatus::Failure;
        };
        let Some(to) = ctx::open_state(global, &args.to).await else {
            return ExitStatus::Failure;
        };
        let names = if args.stacks.is_empty() {
            match from.stacks().await {
                Ok(s) => s.into_iter().map(|s| s.name).collect(),
                Err(e) => {
                    ctx::fail(global, ctx::state_diag(&e));
                    return ExitStatus::Failure;
                }
            }
        } else {
            args.stacks.clone()
        };
        if names.is_empty() {
            ctx::fail(
                global,
                Diagnostic::error("E0309", "nothing to migrate").detail(format!(
                    "`{}` holds no stacks; check --from",
                    redact_url(&args.from)
                )),
            );
            return ExitStatus::Failure;
        }
        let (src, dst) = (redact_url(&args.from), redact_url(&args.to));
        let mut status = ExitStatus::Success;
        for name in &names {
            match migrate_stack(from.as_ref(), to.as_ref(), name).await {
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
                    let _ = from
                        .audit(&super::apply::actor(), "state-migrate", name, "ok", &format!("copied to {dst}"))
                        .await;
                    let _ = to
                        .audit(&super::apply::actor(), "state-migrate", name, "ok", &format!("copied from {src}"))
                        .await;
                }
                Ok(Moved::AlreadyThere(serial)) => {
                    eprintln!(
                        "Stack `{name}` is already in the destination with the same history (generation {serial}); left as it is."
                    );
                }
                Err(d) => {
                    ctx::fail(global, d);
                    status = ExitStatus::Failure;
                }
            }
        }
        if status == ExitStatus::Success {
            eprintln!(
                "The source is unchanged. Point --state (or CHIMERA_STATE) at {dst} from now on."
            );
        }
        status
    })
}

enum Moved {
    Copied(Box<StackDump>),
    AlreadyThere(u64),
}

/// Copies one stack while holding its lock in the source, so no apply changes it meanwhile.
async fn migrate_stack(
    from: &dyn StateStore,
    to: &dyn StateStore,
    name: &str,
) -> Result<Moved, Diagnostic> {
    let lock = from
        .lock(
            name,
            &LockRequest {
                owner: super::apply::actor(),
                operation: "state migrate".into(),
            },
        )
        .await
        .map_err(|e| ctx::state_diag(&e))?;
    let result = copy(from, to, name).await;
    let _ = from.unlock(&lock).await;
    result
}

async fn copy(from: &dyn StateStore, to: &dyn StateStore, name: &str) -> Result<Moved, Diagnostic> {
    let diag = |e: StateError| ctx::state_diag(&e);
    let Some(dump) = from.dump(name).await.map_err(diag)? else {
        return Err(Diagnostic::error("E0309", "no such stack in the source").detail(format!(
            "the source has no stack `{name}`; `chimera state migrate` without --stack copies every stack there is"
        )));
    };
    if let Some(there) = to.dump(name).await.map_err(diag)? {
        if same_history(&there, &dump) {
            return Ok(Moved::AlreadyThere(there.generations.len() as u64));
        }
    }
    to.restore(&dump).await.map_err(diag)?;
    let copied = to.dump(name).await.map_err(diag)?;
    match copied {
        Some(c) if same_history(&c, &dump) => Ok(Moved::Copied(Box::new(dump))),
        _ => Err(Diagnostic::error("E0300", "the copy differs from the source").detail(format!(
            "stack `{name}` was written to the destination but reads back differently; the source is unchanged. Please report this"
        ))),
    }
}

/// Same lineage, generations, resource rows and intents (audit entries may differ: each store
/// records the migration itself).
fn same_history(a: &StackDump, b: &StackDump) -> bool {
    a.lineage == b.lineage
        && a.created_at == b.created_at
        && a.generations == b.generations
        && a.resources == b.resources
        && a.intents == b.intents
}
