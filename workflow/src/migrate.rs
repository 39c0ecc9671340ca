//! `state migrate`: copies stacks between state stores, row for row, verified.

use chimera_model::{Diagnostic, codes};
use chimera_state::{LockRequest, StackDump, StateStore, redact_url};

use crate::error::{Error, ErrorKind};

/// What happened to one stack.
#[derive(Debug)]
pub enum Moved {
    /// Copied and read back identical.
    Copied(Box<StackDump>),
    /// Already in the destination with the same history (its generation count).
    AlreadyThere(u64),
}

/// The result of a migration, per stack, in the order asked.
#[derive(Debug)]
pub struct Migration {
    pub stacks: Vec<(String, Result<Moved, Error>)>,
    /// The URLs with passwords redacted, for messages.
    pub from: String,
    pub to: String,
}

fn nothing(detail: String) -> Error {
    Error::new(
        ErrorKind::Input,
        Diagnostic::error(codes::NOTHING_TO_MIGRATE, "nothing to migrate").detail(detail),
    )
}

/// Copies `stacks` (default: every stack in the source) from the store at `from` to the one
/// at `to`, holding each source stack's lock while it is copied. The source is never changed
/// (but for an audit entry).
pub async fn migrate(
    from: &str,
    to: &str,
    stacks: &[String],
    actor: &str,
) -> Result<Migration, Error> {
    if let Some(path) = from.strip_prefix("sqlite://")
        && !std::path::Path::new(path).exists()
    {
        return Err(nothing(format!(
            "there is no state database at `{path}`; check --from"
        )));
    }
    let source = chimera_state::open(from).await?;
    let dest = chimera_state::open(to).await?;
    let names: Vec<String> = if stacks.is_empty() {
        source.stacks().await?.into_iter().map(|s| s.name).collect()
    } else {
        stacks.to_vec()
    };
    if names.is_empty() {
        return Err(nothing(format!(
            "`{}` holds no stacks; check --from",
            redact_url(from)
        )));
    }
    let (src, dst) = (redact_url(from), redact_url(to));
    let mut out = Vec::new();
    for name in names {
        let moved = migrate_stack(source.as_ref(), dest.as_ref(), &name, actor).await;
        if let Ok(Moved::Copied(_)) = &moved {
            let _ = source
                .audit(
                    actor,
                    "state-migrate",
                    &name,
                    "ok",
                    &format!("copied to {dst}"),
                )
                .await;
            let _ = dest
                .audit(
                    actor,
                    "state-migrate",
                    &name,
                    "ok",
                    &format!("copied from {src}"),
                )
                .await;
        }
        out.push((name, moved));
    }
    Ok(Migration {
        stacks: out,
        from: src,
        to: dst,
    })
}

/// Copies one stack while holding its lock in the source, so no apply changes it meanwhile.
async fn migrate_stack(
    from: &dyn StateStore,
    to: &dyn StateStore,
    name: &str,
    actor: &str,
) -> Result<Moved, Error> {
    let lock = from
        .lock(
            name,
            &LockRequest {
                owner: actor.into(),
                operation: "state migrate".into(),
            },
        )
        .await?;
    let result = copy(from, to, name).await;
    let _ = from.unlock(&lock).await;
    result
}

async fn copy(from: &dyn StateStore, to: &dyn StateStore, name: &str) -> Result<Moved, Error> {
    let Some(dump) = from.dump(name).await? else {
        return Err(Error::new(
            ErrorKind::Input,
            Diagnostic::error(codes::NOTHING_TO_MIGRATE, "no such stack in the source").detail(
                format!(
                    "the source has no stack `{name}`; `chimera state migrate` without --stack copies every stack there is"
                ),
            ),
        ));
    };
    if let Some(there) = to.dump(name).await?
        && same_history(&there, &dump)
    {
        return Ok(Moved::AlreadyThere(there.generations.len() as u64));
    }
    to.restore(&dump).await?;
    match to.dump(name).await? {
        Some(c) if same_history(&c, &dump) => Ok(Moved::Copied(Box::new(dump))),
        _ => Err(Error::new(
            ErrorKind::State,
            Diagnostic::error(codes::MIGRATE_MISMATCH, "the copy differs from the source").detail(
                format!(
                    "stack `{name}` was written to the destination but reads back differently; the source is unchanged. Please report this"
                ),
            ),
        )),
    }
}

/// Same lineage, generations, resource rows, intents and sealed values (audit entries may
/// differ: each store records the migration itself).
fn same_history(a: &StackDump, b: &StackDump) -> bool {
    a.lineage == b.lineage
        && a.created_at == b.created_at
        && a.generations == b.generations
        && a.resources == b.resources
        && a.intents == b.intents
        && a.sealed == b.sealed
}
