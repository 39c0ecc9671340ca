//! Looking at the cloud: drift between state and what providers report, `refresh` (record the
//! observed drift as a generation), `import` (adopt an existing resource) and `orphans`
//! (tagged for the stack but unknown to state).

use std::collections::{BTreeMap, HashMap};

use chimera_model::kinds::firewall;
use chimera_model::{Address, ContentHash, ProviderName, Ref, StateResource};
pub use chimera_plans::drift::{Drift, DriftKind, observed_row};
use chimera_providers::{CloudRef, Observed, TAG_ADDRESS};
use chimera_state::{
    GenerationMeta, GenerationStatus, IntentAction, LockRequest, NewIntent, Outcome, StateStore,
};
use serde_json::{Map, Value};

use crate::{CallFailure, EngineError, Providers};

fn comparable(v: &Value) -> bool {
    match v {
        Value::String(s) => !Ref::contains_placeholder(s),
        Value::Object(m) => !m.contains_key("$sensitive") && m.values().all(comparable),
        Value::Array(items) => items.iter().all(comparable),
        _ => true,
    }
}

fn user_tags(obs: &Observed) -> Value {
    Value::Object(
        obs.tags
            .iter()
            .filter(|(k, _)| !k.starts_with("chimera-"))
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect(),
    )
}

/// Compares one state row with what its provider reports. An attribute the provider does not
/// observe (a size class, an image family: names that exist only in Chimera) cannot drift;
/// firewall rules compare in canonical form, since clouds regroup and reorder them.
/// `recorded` as the exact `${chimera:KIND.NAME.id}` placeholder it may be, replaced by that
/// resource's cloud id when state knows it: what the provider was given, so a detached volume
/// or a moved instance shows as drift. Lists of references (an instance's firewalls) stay
/// placeholders, not compared: the EC2 emulator the tests run against does not report an
/// instance's security groups, so comparing them would invent drift there.
fn resolved(recorded: &Value, ids: &HashMap<Address, &str>) -> Value {
    match recorded {
        Value::String(s) => match Ref::parse_exact(s) {
            Some(Ok(r)) if r.attr == "id" => match ids.get(&r.address()) {
                Some(id) => Value::String(id.to_string()),
                None => recorded.clone(),
            },
            _ => recorded.clone(),
        },
        other => other.clone(),
    }
}

fn compare(
    row: &StateResource,
    obs: &Observed,
    ids: &HashMap<Address, &str>,
) -> Vec<(String, Value, Value)> {
    let mut out = Vec::new();
    for (k, recorded) in &row.attrs {
        if row.sensitive.iter().any(|s| s == k) {
            continue;
        }
        let recorded = &resolved(recorded, ids);
        if !comparable(recorded) {
            continue;
        }
        let observed = if k == "tags" {
            user_tags(obs)
        } else {
            match obs.attrs.get(k) {
                Some(v) => v.clone(),
                None => continue,
            }
        };
        let differs = if firewall::is_rules(row.address.kind, k) {
            firewall::canonical_rules(&observed) != firewall::canonical_rules(recorded)
        } else {
            &observed != recorded
        };
        if differs {
            out.push((k.clone(), recorded.clone(), observed));
        }
    }
    out
}

/// Where a state row's resource lives.
pub fn cloud_ref(row: &StateResource) -> CloudRef {
    CloudRef::new(
        row.address.kind,
        row.cloud_id.clone(),
        row.native_region.clone(),
    )
}

/// Reads every resource of the stack from its provider and reports drift. Read-only.
pub async fn detect_drift(
    store: &dyn StateStore,
    providers: &Providers,
    stack: &str,
) -> Result<Vec<Drift>, EngineError> {
    drift_of(providers, &store.current(stack).await?).await
}

/// How many resources one observe call asks for: bounds what a refresh holds at once.
pub const OBSERVE_BATCH: usize = 1000;

/// Reads `rows` from their providers — batched observes of up to [`OBSERVE_BATCH`] per
/// provider — and reports how the cloud differs from them, in the rows' order.
pub async fn drift_of(
    providers: &Providers,
    rows: &[StateResource],
) -> Result<Vec<Drift>, EngineError> {
    let mut by_provider: BTreeMap<&str, (ProviderName, Vec<usize>)> = BTreeMap::new();
    for (i, r) in rows.iter().enumerate() {
        by_provider
            .entry(r.provider.as_str())
            .or_insert((r.provider, Vec::new()))
            .1
            .push(i);
    }
    let ids: HashMap<Address, &str> = rows
        .iter()
        .map(|r| (r.address.clone(), r.cloud_id.as_str()))
        .collect();
    let mut found: Vec<Option<Drift>> = vec![None; rows.len()];
    let batches = by_provider.into_values().flat_map(|(name, idx)| {
        idx.chunks(OBSERVE_BATCH)
            .map(|c| (name, c.to_vec()))
            .collect::<Vec<_>>()
    });
    for (name, idx) in batches {
        let provider = providers.get(name)?;
        let items: Vec<_> = idx.iter().map(|&i| cloud_ref(&rows[i])).collect();
        let observed = chimera_providers::with_retries(|| provider.observe(&items))
            .await
            .map_err(|e| {
                // The first row stands for the batch: a batch fails as a whole.
                EngineError::Call(CallFailure::of(&rows[idx[0]].address, "read", &e))
            })?;
        for (&i, obs) in idx.iter().zip(observed) {
            let row = &rows[i];
            found[i] = match obs {
                None => Some(Drift {
                    address: row.address.clone(),
                    cloud_id: row.cloud_id.clone(),
                    kind: DriftKind::Deleted,
                }),
                Some(obs) => {
                    let attrs = compare(row, &obs, &ids);
                    (!attrs.is_empty()).then(|| Drift {
                        address: row.address.clone(),
                        cloud_id: row.cloud_id.clone(),
                        kind: DriftKind::Changed { attrs },
                    })
                }
            };
        }
    }
    Ok(found.into_iter().flatten().collect())
}

/// Records drift in state as a new generation, so the next plan shows what it takes to heal
/// it: a deleted resource leaves state (the plan creates it again); a changed one records the
/// observed values and loses its hash fast path (the plan diffs it). Returns the drift and the
/// new generation, if any was written.
pub async fn refresh(
    store: &dyn StateStore,
    providers: &Providers,
    stack: &str,
    actor: &str,
) -> Result<(Vec<Drift>, Option<u64>), EngineError> {
    let lock = store
        .lock(
            stack,
            &LockRequest {
                owner: actor.into(),
                operation: "refresh".into(),
            },
        )
        .await?;
    let result = async {
        let drift = detect_drift(store, providers, stack).await?;
        if drift.is_empty() {
            return Ok((drift, None));
        }
        let info = store
            .stack(stack)
            .await?
            .ok_or_else(|| EngineError::Unresolved(format!("stack `{stack}` has no state")))?;
        let meta = GenerationMeta {
            actor: actor.into(),
            message: format!("refresh: {} drifted", drift.len()),
            ..Default::default()
        };
        let serial = store
            .begin_generation(&lock, info.serial, &info.lineage, &meta)
            .await?;
        let current = store.current(stack).await?;
        let intents: Vec<NewIntent> = drift
            .iter()
            .map(|d| NewIntent {
                address: d.address.clone(),
                action: IntentAction::Update,
                client_token: format!("refresh-{serial}"),
                payload: None,
            })
            .collect();
        let ids = store.record_intents(&lock, serial, &intents).await?;
        let mut results = Vec::new();
        for (d, id) in drift.iter().zip(ids) {
            let outcome = match &d.kind {
                DriftKind::Deleted => Outcome::Remove {
                    address: d.address.clone(),
                    cloud_id: d.cloud_id.clone(),
                },
                DriftKind::Changed { attrs } => {
                    let Some(row) = current.iter().find(|r| r.address == d.address) else {
                        continue;
                    };
                    Outcome::Put(Box::new(observed_row(row, attrs)))
                }
            };
            results.push((id, outcome));
        }
        store.record_results(&lock, serial, &results).await?;
        store
            .finish_generation(&lock, serial, GenerationStatus::Complete)
            .await?;
        Ok((drift, Some(serial)))
    }
    .await;
    let _ = store.unlock(&lock).await;
    result
}

/// Adopts an existing cloud resource as `address`. The next plan compares it with the
/// configuration and shows what it takes to match.
pub async fn import(
    store: &dyn StateStore,
    providers: &Providers,
    stack: &str,
    address: &Address,
    provider_name: ProviderName,
    at: &CloudRef,
    actor: &str,
) -> Result<u64, EngineError> {
    let cloud_id = at.id.as_str();
    let provider = providers.get(provider_name)?;
    let obs = chimera_providers::with_retries(|| provider.read(at))
        .await
        .map_err(|e| EngineError::Call(CallFailure::of(address, "read", &e)))?
        .ok_or_else(|| EngineError::NoSuchCloudResource {
            provider: provider_name,
            kind: address.kind,
            cloud_id: cloud_id.to_string(),
        })?;
    let lock = store
        .lock(
            stack,
            &LockRequest {
                owner: actor.into(),
                operation: "import".into(),
            },
        )
        .await?;
    let result = async {
        if store
            .current(stack)
            .await?
            .iter()
            .any(|r| &r.address == address)
        {
            return Err(EngineError::AlreadyInState(address.clone()));
        }
        let (expected, lineage) = match store.stack(stack).await? {
            Some(i) => (i.serial, i.lineage),
            None => (0, chimera_state::new_id()),
        };
        let meta = GenerationMeta {
            actor: actor.into(),
            message: format!("import {address} = {cloud_id}"),
            ..Default::default()
        };
        let serial = store
            .begin_generation(&lock, expected, &lineage, &meta)
            .await?;
        let mut attrs: Map<String, Value> = obs.attrs.clone();
        attrs.insert("tags".into(), user_tags(&obs));
        let row = StateResource {
            address: address.clone(),
            provider: provider_name,
            region: String::new(),
            native_region: obs.native_region.clone(),
            attrs,
            sensitive: Vec::new(),
            hash: ContentHash([0; 32]),
            cloud_id: obs.cloud_id.clone(),
            outputs: obs.outputs.clone(),
            deps: Vec::new(),
            prevent_destroy: false,
        };
        let ids = store
            .record_intents(
                &lock,
                serial,
                &[NewIntent {
                    address: address.clone(),
                    action: IntentAction::Create,
                    client_token: format!("import-{serial}"),
                    payload: None,
                }],
            )
            .await?;
        store
            .record_results(&lock, serial, &[(ids[0], Outcome::Put(Box::new(row)))])
            .await?;
        store
            .finish_generation(&lock, serial, GenerationStatus::Complete)
            .await?;
        Ok(serial)
    }
    .await;
    let _ = store.unlock(&lock).await;
    result
}

/// Resources tagged as managed by `stack` on each provider but absent from state.
pub async fn orphans(
    store: &dyn StateStore,
    providers: &Providers,
    stack: &str,
    names: &[ProviderName],
) -> Result<Vec<Observed>, EngineError> {
    let known: std::collections::HashSet<String> = store
        .current(stack)
        .await?
        .into_iter()
        .map(|r| r.cloud_id)
        .collect();
    let mut out = Vec::new();
    for name in names {
        let provider = providers.get(*name)?;
        let managed = chimera_providers::with_retries(|| provider.list_managed(stack))
            .await
            .map_err(|e| EngineError::Call(CallFailure::listing(*name, &e)))?;
        out.extend(managed.into_iter().filter(|o| !known.contains(&o.cloud_id)));
    }
    out.sort_by(|a, b| a.tags.get(TAG_ADDRESS).cmp(&b.tags.get(TAG_ADDRESS)));
    Ok(out)
}
