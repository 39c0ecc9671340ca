//! Recovery after a crash: every intent left `pending` is resolved through its provider before
//! anything else runs (Crossplane's create-pending rule).

use chimera_model::StateResource;
use chimera_state::{IntentAction, Lock, LockRequest, Outcome, StateStore};

use crate::{EngineError, Providers};

#[derive(Debug, Clone, Default)]
pub struct Recovery {
    /// Creates whose resource was found by token and adopted into state.
    pub adopted: Vec<String>,
    /// Intents whose call provably did not happen (or whose effect the next plan will redo).
    pub abandoned: Vec<String>,
}

/// Resolves pending intents of `stack`. A create whose resource exists is adopted; a delete
/// whose resource is gone is recorded; anything the provider cannot answer stops with an
/// explanation of what to do.
pub async fn recover(
    store: &dyn StateStore,
    providers: &Providers,
    stack: &str,
    actor: &str,
) -> Result<Recovery, EngineError> {
    let pending = store.pending_intents(stack).await?;
    let mut rec = Recovery::default();
    if pending.is_empty() {
        return Ok(rec);
    }
    let lock = store
        .lock(
            stack,
            &LockRequest {
                owner: actor.into(),
                operation: "recover".into(),
            },
        )
        .await?;
    let result = recover_locked(store, providers, stack, &lock, pending, &mut rec).await;
    let _ = store.unlock(&lock).await;
    result.map(|_| rec)
}

async fn recover_locked(
    store: &dyn StateStore,
    providers: &Providers,
    stack: &str,
    lock: &Lock,
    pending: Vec<chimera_state::Intent>,
    rec: &mut Recovery,
) -> Result<(), EngineError> {
    let current = store.current(stack).await?;
    let mut serials = std::collections::BTreeSet::new();
    for intent in pending {
        serials.insert(intent.serial);
        let provider_name = intent
            .payload
            .as_ref()
            .map(|p| p.provider)
            .or_else(|| {
                current
                    .iter()
                    .find(|r| r.address == intent.address)
                    .map(|r| r.provider)
            })
            .unwrap_or(chimera_model::ProviderName::Local);
        let provider = providers.get(provider_name)?;
        let kind = intent.address.kind;
        let unknown = |e: &dyn std::fmt::Display| {
            EngineError::Unresolved(format!(
                "cannot tell whether the interrupted {} of {} happened: {provider_name} answered `{e}`. Check the cloud for a resource tagged chimera-token={}, then run `chimera apply` again (it retries this check) or `chimera import {} ID` if it exists",
                intent.action.as_str(),
                intent.address,
                intent.client_token,
                intent.address
            ))
        };
        let outcome = match intent.action {
            IntentAction::Create => {
                // Where the create was sent (its row, as the intent recorded it).
                let region = intent
                    .payload
                    .as_ref()
                    .map(|p| p.native_region.as_str())
                    .unwrap_or_default();
                match chimera_providers::with_retries(|| {
                    provider.find_by_token(kind, region, &intent.client_token)
                })
                .await
                {
                    Ok(Some(obs)) => {
                        let mut row: StateResource = match intent.payload.clone() {
                            Some(p) => p,
                            None => return Err(unknown(&"the intent has no payload")),
                        };
                        row.cloud_id = obs.cloud_id;
                        row.outputs = obs.outputs;
                        rec.adopted.push(intent.address.to_string());
                        Outcome::Put(Box::new(row))
                    }
                    Ok(None) => {
                        rec.abandoned.push(intent.address.to_string());
                        Outcome::Failed("interrupted before the resource was created".into())
                    }
                    Err(e) => return Err(unknown(&e)),
                }
            }
            IntentAction::Delete => {
                let row = current.iter().find(|r| r.address == intent.address);
                match row {
                    None => Outcome::Failed("interrupted; the resource is not in state".into()),
                    Some(r) => {
                        let at = crate::observe::cloud_ref(r);
                        match chimera_providers::with_retries(|| provider.read(&at)).await {
                            Ok(None) => {
                                rec.adopted.push(intent.address.to_string());
                                Outcome::Remove {
                                    address: intent.address.clone(),
                                    cloud_id: r.cloud_id.clone(),
                                }
                            }
                            Ok(Some(_)) => {
                                rec.abandoned.push(intent.address.to_string());
                                Outcome::Failed(
                                    "interrupted before the resource was deleted".into(),
                                )
                            }
                            Err(e) => return Err(unknown(&e)),
                        }
                    }
                }
            }
            IntentAction::Update => {
                // An update may or may not have landed; state keeps the old attributes, so the
                // next plan shows the update again and re-applying it is idempotent.
                rec.abandoned.push(intent.address.to_string());
                Outcome::Failed("interrupted; the next plan repeats the update".into())
            }
        };
        store
            .record_results(lock, intent.serial, &[(intent.id, outcome)])
            .await?;
    }
    for serial in serials {
        store
            .finish_generation(lock, serial, chimera_state::GenerationStatus::Partial)
            .await?;
    }
    store
        .audit(
            "chimera",
            "recover",
            stack,
            "ok",
            &format!(
                "adopted {}, abandoned {}",
                rec.adopted.len(),
                rec.abandoned.len()
            ),
        )
        .await?;
    Ok(())
}
