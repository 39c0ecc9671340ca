//! Sensitive values at rest. State rows keep a digest in a sensitive value's place
//! (`{"$sensitive": DIGEST}`); with an encryption key configured, the value itself is also kept,
//! sealed (`chimera_seal`, purpose `state-value`), under that digest, so a rollback can restore
//! it. Without a key a rollback takes a value from the current configuration when its digest
//! matches, and fails (E0201) only when the secret itself changed since. `rotate_key` seals
//! everything again with the key (opening with the fallback key).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use chimera_model::graph::Graph;
use chimera_model::{Diagnostic, StateResource, codes};
use chimera_plans::PlanFile;
use chimera_plans::plan::{Plan, Target, sensitive_digest};
use chimera_seal::{Keyring, Keys, purpose};
use chimera_state::{LockRequest, SealedRow, StateStore};
use serde_json::Value;

use crate::error::{Error, ErrorKind};
use crate::stack::Stack;

/// The digest state keeps in a sensitive value's place.
fn digest_of(v: &Value) -> Option<String> {
    sensitive_digest(v)
        .get("$sensitive")
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// The digest a state row holds in place of a value, if it is one.
fn held_digest(v: &Value) -> Option<&str> {
    v.get("$sensitive").and_then(Value::as_str)
}

fn key_error(d: Box<Diagnostic>) -> Error {
    Error::new(ErrorKind::Input, *d)
}

/// Seals every sensitive value `plan` applies and keeps it in state (those kept already with
/// the key are skipped). Nothing happens without a key. Runs before the apply, under the
/// stack's lock.
pub(crate) async fn keep(
    store: &dyn StateStore,
    plan: &Plan,
    keys: &Keys,
    actor: &str,
) -> Result<usize, Error> {
    let Some(ring) = keys.get().map_err(key_error)? else {
        return Ok(0);
    };
    let mut values: BTreeMap<String, &Value> = BTreeMap::new();
    for c in &plan.changes {
        let Some(d) = &c.desired else { continue };
        for k in &d.sensitive {
            if let Some(v) = d
                .attrs
                .get(k)
                .filter(|v| !v.is_null() && held_digest(v).is_none())
                && let Some(digest) = digest_of(v)
            {
                values.insert(digest, v);
            }
        }
    }
    if values.is_empty() {
        return Ok(0);
    }
    let digests: Vec<String> = values.keys().cloned().collect();
    let kept: BTreeSet<String> = store
        .sealed(&plan.stack, Some(digests.as_slice()))
        .await?
        .into_iter()
        .filter(|r| r.key_id == ring.key_id())
        .map(|r| r.digest)
        .collect();
    let mut rows = Vec::new();
    for (digest, v) in values {
        if kept.contains(&digest) {
            continue;
        }
        let bytes = serde_json::to_vec(v).unwrap_or_default();
        let envelope = ring
            .seal(purpose::STATE_VALUE, &bytes)
            .map_err(|e| Error::new(ErrorKind::Io, e.diagnostic("a sensitive value")))?;
        rows.push(SealedRow::new(digest, ring.key_id().to_string(), envelope));
    }
    if rows.is_empty() {
        return Ok(0);
    }
    let lock = store
        .lock(
            &plan.stack,
            &LockRequest {
                owner: actor.to_string(),
                operation: "keep sealed values".into(),
            },
        )
        .await?;
    let put = store.put_sealed(&lock, &rows).await;
    store.unlock(&lock).await?;
    put?;
    Ok(rows.len())
}

/// The configuration's sensitive values by digest (what a rollback may take from it).
pub(crate) fn sensitive_values(g: &Graph) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for r in &g.resources {
        for k in &r.sensitive {
            if let Some(v) = r.attrs.get(k).filter(|v| !v.is_null())
                && let Some(d) = digest_of(v)
            {
                out.insert(d, v.clone());
            }
        }
    }
    out
}

/// Targets a rollback must really change: absent from current state, or with another hash.
fn changing<'a>(targets: &'a mut [Target], current: &[StateResource]) -> Vec<&'a mut Target> {
    let now: BTreeMap<_, _> = current.iter().map(|r| (&r.address, r.hash)).collect();
    targets
        .iter_mut()
        .filter(|t| now.get(&t.address) != Some(&t.desired.hash))
        .collect()
}

/// The `(digest → attribute slots)` still held only as digests.
fn missing(targets: &mut [&mut Target]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for t in targets.iter() {
        for k in &t.desired.sensitive {
            if let Some(d) = t.desired.attrs.get(k).and_then(held_digest) {
                out.insert(d.to_string());
            }
        }
    }
    out
}

fn fill(targets: &mut [&mut Target], digest: &str, value: &Value) {
    for t in targets.iter_mut() {
        let keys: Vec<String> = t.desired.sensitive.clone();
        for k in keys {
            if let Some(v) = t.desired.attrs.get_mut(&k)
                && held_digest(v) == Some(digest)
            {
                *v = value.clone();
            }
        }
    }
}

/// Gives rollback targets the sensitive values state holds only as digests: from the
/// configuration (any sensitive value with the same digest), then, with a key, from the sealed
/// values kept in state. What neither has stays a digest (`plans::plan::unrestorable` names it).
pub(crate) async fn restore(
    targets: &mut [Target],
    current: &[StateResource],
    config: BTreeMap<String, Value>,
    store: &dyn StateStore,
    stack: &str,
    keys: &Keys,
) -> Result<(), Error> {
    let mut changing = changing(targets, current);
    let mut wanted = missing(&mut changing);
    if wanted.is_empty() {
        return Ok(());
    }
    for (d, v) in &config {
        if wanted.remove(d) {
            fill(&mut changing, d, v);
        }
    }
    if wanted.is_empty() {
        return Ok(());
    }
    let digests: Vec<String> = wanted.into_iter().collect();
    let sealed = store.sealed(stack, Some(digests.as_slice())).await?;
    if sealed.is_empty() {
        return Ok(());
    }
    let Some(ring) = keys.get().map_err(key_error)? else {
        return Err(Error::new(
            ErrorKind::Input,
            Diagnostic::error(codes::KEY_MISSING, "no encryption key configured").detail(format!(
                "the rollback needs {} sensitive value{} that state keeps sealed; configure the key they were sealed with (CHIMERA_KEY_FILE or --key-file, CHIMERA_KEY, CHIMERA_PASSPHRASE; key id `{}`)",
                sealed.len(),
                if sealed.len() == 1 { "" } else { "s" },
                sealed[0].key_id
            )),
        ));
    };
    for row in sealed {
        let what = format!(
            "the sealed value `{}…` in state",
            &row.digest[..12.min(row.digest.len())]
        );
        let opened = ring
            .open(purpose::STATE_VALUE, row.envelope.as_bytes())
            .map_err(|e| Error::new(ErrorKind::State, e.diagnostic(&what)))?;
        let value: Value = serde_json::from_slice(&opened.plaintext)
            .ok()
            .filter(|v| digest_of(v).as_deref() == Some(row.digest.as_str()))
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::State,
                    Diagnostic::error(codes::SEALED_TAMPERED, "encrypted data was tampered with")
                        .detail(format!(
                            "{what}: it opens, but to a value whose digest is not the one it is kept under"
                        )),
                )
            })?;
        fill(&mut changing, &row.digest, &value);
    }
    Ok(())
}

/// What `rotate_key` sealed again.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Rotated {
    /// The key everything is sealed with now.
    pub key_id: String,
    /// Sealed values in state sealed again with the key.
    pub state: usize,
    /// Sealed values in state that were sealed with the key already.
    pub current: usize,
    /// Plan files sealed again.
    pub plan_files: usize,
    /// Evaluation-cache entries sealed with another key, removed (rebuilt on the next compile).
    pub cache: usize,
}

fn rotate_ring(keys: &Keys) -> Result<&Keyring, Error> {
    keys.get().map_err(key_error)?.ok_or_else(|| {
        Error::new(
            ErrorKind::Input,
            Diagnostic::error(codes::KEY_MISSING, "no encryption key configured").detail(
                "`rotate-key` seals everything again with the key: configure the new key (CHIMERA_KEY_FILE or --key-file, CHIMERA_KEY, CHIMERA_PASSPHRASE) and the old one as the fallback key (CHIMERA_FALLBACK_KEY_FILE or --fallback-key-file, CHIMERA_FALLBACK_KEY, CHIMERA_FALLBACK_PASSPHRASE)",
            ),
        )
    })
}

impl Stack {
    /// Seals again with the key, opening with the key or the fallback key: the stack's
    /// sealed values in state (under the stack's lock), the given plan files, and the
    /// evaluation cache (entries sealed with another key are removed, to be rebuilt).
    pub async fn rotate_key(&mut self, plan_files: &[PathBuf]) -> Result<Rotated, Error> {
        let keys = self.settings.keys.clone();
        let ring = rotate_ring(&keys)?;
        let actor = self.settings.actor.clone();
        let stack = self.name()?;
        let mut out = Rotated {
            key_id: ring.key_id().to_string(),
            ..Rotated::default()
        };
        // Plan files first: nothing in state changes if one cannot be opened.
        for p in plan_files {
            if PlanFile::reseal(p, ring).map_err(|d| Error::new(ErrorKind::Input, *d))? {
                out.plan_files += 1;
            }
        }
        if let Some(cache) = self.eval_cache() {
            out.cache = cache.drop_sealed_except(ring.key_id());
        }
        let store = self.store().await?;
        let lock = store
            .lock(
                &stack,
                &LockRequest {
                    owner: actor.clone(),
                    operation: "rotate-key".into(),
                },
            )
            .await?;
        let result = async {
            let mut rows = Vec::new();
            for row in store.sealed(&stack, None).await? {
                let what = format!(
                    "the sealed value `{}…` in state",
                    &row.digest[..12.min(row.digest.len())]
                );
                match ring.reseal(purpose::STATE_VALUE, row.envelope.as_bytes()) {
                    Ok(None) => out.current += 1,
                    Ok(Some(envelope)) => rows.push(SealedRow {
                        key_id: ring.key_id().to_string(),
                        envelope,
                        ..row
                    }),
                    Err(e) => return Err(Error::new(ErrorKind::State, e.diagnostic(&what))),
                }
            }
            out.state = rows.len();
            store.put_sealed(&lock, &rows).await?;
            Ok::<(), Error>(())
        }
        .await;
        store.unlock(&lock).await?;
        result?;
        store
            .audit(
                &actor,
                "rotate-key",
                &stack,
                "ok",
                &format!(
                    "sealed with `{}`: {} state value(s) resealed, {} plan file(s)",
                    out.key_id, out.state, out.plan_files
                ),
            )
            .await?;
        Ok(out)
    }
}
