//! The executor: one step's provider call (references resolved against the outputs known so
//! far, bounded per provider, retried on retryable errors) and the state its outcome becomes.

use std::collections::HashMap;
use std::sync::Arc;

use chimera_model::hash::Hasher;
use chimera_model::{Address, Piece, ProviderName, Ref, StateResource};
use chimera_plans::plan::{Desired, Plan, ResourceChange, attrs_for_state};
use chimera_providers::{CloudRef, Observed, Proposal, Provider, ProviderError};
use chimera_state::{IntentAction, NewIntent, Outcome};
use serde_json::{Map, Value};
use tokio::sync::Semaphore;

use crate::dag::{Step, StepKind};
use crate::failure::CallFailure;

/// The deterministic client token of an action: the same stack, address, generation and step
/// always give the same token, so a retried call never creates twice.
pub fn client_token(lineage: &str, address: &Address, serial: u64, kind: StepKind) -> String {
    let mut h = Hasher::new();
    h.part(b"chimera-token-v1")
        .part(lineage.as_bytes())
        .part(address.to_string().as_bytes())
        .part(&serial.to_le_bytes())
        .part(kind.as_str().as_bytes());
    format!("chm-{}", &h.finish().to_hex()[..32])
}

/// Substitutes `${chimera:…}` placeholders with known outputs.
pub fn resolve(v: &Value, outputs: &HashMap<Address, Map<String, Value>>) -> Result<Value, String> {
    match v {
        Value::String(s) if Ref::contains_placeholder(s) => {
            let pieces = Ref::split(s)?;
            let lookup = |r: &Ref| -> Result<Value, String> {
                outputs
                    .get(&r.address())
                    .and_then(|o| o.get(&r.attr))
                    .cloned()
                    .ok_or_else(|| format!("{} is not known yet", r))
            };
            if let [Piece::Ref(r)] = pieces.as_slice() {
                return lookup(r);
            }
            let mut out = String::new();
            for p in pieces {
                match p {
                    Piece::Text(t) => out.push_str(t),
                    Piece::Ref(r) => match lookup(&r)? {
                        Value::String(s) => out.push_str(&s),
                        Value::Null => {}
                        other => out.push_str(&other.to_string()),
                    },
                }
            }
            Ok(Value::String(out))
        }
        Value::Array(items) => items
            .iter()
            .map(|i| resolve(i, outputs))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array),
        Value::Object(m) => m
            .iter()
            .map(|(k, i)| resolve(i, outputs).map(|r| (k.clone(), r)))
            .collect::<Result<Map<_, _>, _>>()
            .map(Value::Object),
        other => Ok(other.clone()),
    }
}

/// The provider a change goes to.
pub fn provider_of(change: &ResourceChange) -> Option<ProviderName> {
    change
        .desired
        .as_ref()
        .map(|d| d.provider)
        .or(change.prior.as_ref().map(|p| p.provider))
}

/// The state row a create or update writes (without what only the cloud knows yet).
pub fn row_for(address: &Address, d: &Desired) -> StateResource {
    StateResource {
        address: address.clone(),
        provider: d.provider,
        region: d.region.clone(),
        native_region: d.native_region.clone(),
        attrs: attrs_for_state(&d.attrs, &d.sensitive),
        sensitive: d.sensitive.clone(),
        hash: d.hash,
        cloud_id: String::new(),
        outputs: Map::new(),
        deps: d.deps.clone(),
        prevent_destroy: d.lifecycle.prevent_destroy,
    }
}

/// The intent of a step: its action, deterministic token and, for creates and updates, the state
/// row to adopt if the call succeeds but its result is never recorded.
pub fn new_intent(plan: &Plan, s: &Step, lineage: &str, serial: u64) -> NewIntent {
    let change = &plan.changes[s.change];
    let (action, payload) = match s.kind {
        StepKind::Create => (
            IntentAction::Create,
            change.desired.as_ref().map(|d| row_for(&s.address, d)),
        ),
        StepKind::Update => (
            IntentAction::Update,
            change.desired.as_ref().map(|d| row_for(&s.address, d)),
        ),
        StepKind::Delete => (IntentAction::Delete, None),
    };
    NewIntent {
        address: s.address.clone(),
        action,
        client_token: client_token(lineage, &s.address, serial, s.kind),
        payload,
    }
}

/// What a finished call returns: the step, its intent, and the observed resource (none for a
/// delete) or the failure.
pub type Finished = (usize, i64, Result<Option<Observed>, CallFailure>);

/// A provider and the bound on its concurrent calls.
#[derive(Clone)]
pub struct Lane {
    pub provider: Arc<dyn Provider>,
    pub limit: Arc<Semaphore>,
}

/// Everything one call needs, owned, so it can run on its own task.
pub struct Call {
    pub step: Step,
    pub intent: i64,
    pub index: usize,
    pub stack: String,
    pub token: String,
    pub native_region: String,
    /// The desired resource with references resolved, or why it could not be.
    pub proposal: Result<Option<Proposal>, String>,
    /// The resource as state knew it (updates and deletes act on it; in a
    /// create-before-destroy replace, the delete must hit the old resource, not the new one).
    pub cloud_id: Option<String>,
    pub lane: Lane,
}

impl Call {
    /// Prepares the call of step `index`: everything it depends on has finished, so its
    /// references resolve now.
    pub fn prepare(
        plan: &Plan,
        step: &Step,
        index: usize,
        intent: i64,
        token: String,
        outputs: &HashMap<Address, Map<String, Value>>,
        lane: Lane,
    ) -> Call {
        let step = step.clone();
        let change = &plan.changes[step.change];
        let proposal = match (&step.kind, &change.desired) {
            (StepKind::Delete, _) | (_, None) => Ok(None),
            (_, Some(d)) => resolve(&Value::Object(d.attrs.clone()), outputs)
                .map_err(|e| format!("unresolved reference: {e}"))
                .and_then(|v| {
                    Proposal::from_attrs(
                        d.provider,
                        step.address.kind,
                        v.as_object().unwrap_or(&Map::new()),
                    )
                })
                .map(Some),
        };
        Call {
            // A delete acts where the old resource lives (a replace may move it).
            native_region: match step.kind {
                StepKind::Delete => change.prior.as_ref().map(|p| p.native_region.clone()),
                _ => None,
            }
            .or(change.desired.as_ref().map(|d| d.native_region.clone()))
            .or(change.prior.as_ref().map(|p| p.native_region.clone()))
            .unwrap_or_default(),
            cloud_id: change.prior.as_ref().map(|p| p.cloud_id.clone()),
            stack: plan.stack.clone(),
            step,
            intent,
            index,
            token,
            proposal,
            lane,
        }
    }

    /// Makes the call.
    pub async fn run(self) -> Finished {
        let s = &self.step;
        let op = s.kind.as_str();
        let proposal = match &self.proposal {
            Ok(p) => p.as_ref(),
            Err(e) => {
                let f = CallFailure::permanent(&s.address, op, e.clone());
                return (self.index, self.intent, Err(f));
            }
        };
        let _permit = self.lane.limit.acquire().await;
        let req =
            proposal.map(|p| p.request(&self.stack, &s.address, &self.native_region, &self.token));
        let provider = &self.lane.provider;
        let r: Result<Option<Observed>, ProviderError> = match (s.kind, &self.cloud_id, &req) {
            (StepKind::Create | StepKind::Update, _, None) => Err(ProviderError::Failed {
                code: "NoDesiredState".into(),
                message: "the plan has no desired state for this step".into(),
            }),
            (StepKind::Create, _, Some(req)) => {
                chimera_providers::with_retries(|| provider.create(req))
                    .await
                    .map(Some)
            }
            (StepKind::Update, Some(c), Some(req)) => {
                chimera_providers::with_retries(|| provider.update(req, c))
                    .await
                    .map(Some)
            }
            (StepKind::Update, None, _) => Err(ProviderError::Failed {
                code: "NoCloudId".into(),
                message: "state has no id for this resource".into(),
            }),
            (StepKind::Delete, Some(c), _) => {
                let at = CloudRef::new(s.address.kind, c.clone(), self.native_region.clone());
                chimera_providers::with_retries(|| provider.delete(&at))
                    .await
                    .map(|_| None)
            }
            (StepKind::Delete, None, _) => Ok(None),
        };
        let r = r.map_err(|e| CallFailure::of(&s.address, op, &e));
        (self.index, self.intent, r)
    }
}

/// The state a finished call becomes.
pub fn outcome(
    step: &Step,
    change: &ResourceChange,
    result: &Result<Option<Observed>, CallFailure>,
) -> Outcome {
    match (result, step.kind) {
        (Ok(Some(obs)), StepKind::Create | StepKind::Update) => match &change.desired {
            Some(d) => {
                let mut row = row_for(&step.address, d);
                row.cloud_id = obs.cloud_id.clone();
                row.outputs = obs.outputs.clone();
                Outcome::Put(Box::new(row))
            }
            // dag::steps makes creates and updates only from changes with a desired side.
            None => Outcome::Failed("the plan has no desired state for this step".into()),
        },
        (Ok(_), _) => Outcome::Remove {
            address: step.address.clone(),
            cloud_id: change
                .prior
                .as_ref()
                .map(|p| p.cloud_id.clone())
                .unwrap_or_default(),
        },
        (Err(e), _) => Outcome::Failed(e.to_string()),
    }
}
