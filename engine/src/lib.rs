//! The engine: applies a saved plan over the resource DAG, in parallel, through providers,
//! with the intent protocol that makes a crash at any moment recoverable.
//!
//! For each action: (1) its intent is committed, carrying a deterministic client token; intents
//! are written one level ahead (when the first step an action waits for starts), so a finished
//! call releases its dependents without waiting for a commit; (2) the provider is called with
//! that token; (3) the resource row and the intent's result are committed in one transaction,
//! grouped with whatever else finished meanwhile. A failure stops only its dependents.
//!
//! **Architecture Invariant:** `apply` executes exactly the plan it is given; it never
//! evaluates configuration.

mod dag;
mod observe;
mod recover;

use std::collections::HashMap;
use std::sync::Arc;

use chimera_compiler::plan::{Desired, Plan, attrs_for_state};
use chimera_model::hash::Hasher;
use chimera_model::{Address, Piece, ProviderName, Ref, StateResource};
use chimera_providers::{Provider, ProviderError, Request};
use chimera_state::{
    GenerationMeta, GenerationStatus, IntentAction, Lock, LockRequest, NewIntent, Outcome,
    StateError, StateStore,
};
use serde_json::{Map, Value};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

pub use dag::{Step, StepKind};
pub use observe::{Drift, DriftKind, detect_drift, import, orphans, refresh};
pub use recover::{Recovery, recover};

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("no provider `{0}` is configured")]
    NoProvider(ProviderName),
    #[error("{0}")]
    Unresolved(String),
}

/// The configured providers.
#[derive(Default, Clone)]
pub struct Providers {
    map: HashMap<ProviderName, Arc<dyn Provider>>,
}

impl Providers {
    pub fn with(mut self, p: Arc<dyn Provider>) -> Self {
        self.map.insert(p.name(), p);
        self
    }
    pub fn get(&self, name: ProviderName) -> Result<&Arc<dyn Provider>, EngineError> {
        self.map.get(&name).ok_or(EngineError::NoProvider(name))
    }
}

/// Progress events, for the CLI's progress bar or log lines.
pub trait Progress: Send + Sync {
    fn total(&self, _steps: usize) {}
    fn started(&self, _step: &Step) {}
    fn finished(&self, _step: &Step, _error: Option<&str>) {}
}

pub struct NoProgress;
impl Progress for NoProgress {}

pub struct ApplyOptions {
    /// Concurrent calls per provider.
    pub parallelism: usize,
    pub actor: String,
    pub message: String,
    pub progress: Arc<dyn Progress>,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions {
            parallelism: 10,
            actor: "chimera".into(),
            message: String::new(),
            progress: Arc::new(NoProgress),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct ApplyReport {
    pub serial: u64,
    pub succeeded: Vec<Step>,
    pub failed: Vec<(Step, String)>,
    /// Not attempted because something they depend on failed.
    pub skipped: Vec<Step>,
}

impl ApplyReport {
    pub fn ok(&self) -> bool {
        self.failed.is_empty() && self.skipped.is_empty()
    }
}

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

const SKIPPED: &str = "skipped: a step it depends on failed";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IntentState {
    Unwritten,
    Queued,
    Durable(i64),
}

/// The one state transaction in flight: it yields the intent ids of the steps it wrote.
type Commit<'a> = std::pin::Pin<
    Box<dyn std::future::Future<Output = (Result<Vec<i64>, StateError>, Vec<usize>)> + Send + 'a>,
>;

enum Event {
    Finished(
        Result<
            (
                usize,
                i64,
                Result<Option<chimera_providers::Observed>, ProviderError>,
            ),
            tokio::task::JoinError,
        >,
    ),
    Committed(Result<Vec<i64>, StateError>, Vec<usize>),
}

/// The intent of a step: its action, deterministic token and, for creates and updates, the state
/// row to adopt if the call succeeds but its result is never recorded.
fn new_intent(plan: &Plan, s: &Step, lineage: &str, serial: u64) -> NewIntent {
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

fn row_for(address: &Address, d: &Desired) -> StateResource {
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

/// Applies `plan` to the stack, holding its lock for the whole run.
pub async fn apply(
    plan: &Plan,
    store: &dyn StateStore,
    providers: &Providers,
    opts: &ApplyOptions,
) -> Result<ApplyReport, EngineError> {
    let lock = store
        .lock(
            &plan.stack,
            &LockRequest {
                owner: opts.actor.clone(),
                operation: "apply".into(),
            },
        )
        .await?;
    let result = apply_locked(plan, store, providers, opts, &lock).await;
    // Unlock even after a failure; a lost lock is already gone.
    let _ = store.unlock(&lock).await;
    result
}

async fn apply_locked(
    plan: &Plan,
    store: &dyn StateStore,
    providers: &Providers,
    opts: &ApplyOptions,
    lock: &Lock,
) -> Result<ApplyReport, EngineError> {
    let steps = dag::steps(plan);
    let lineage = match (&plan.lineage, store.stack(&plan.stack).await?) {
        (Some(l), _) => l.clone(),
        (None, Some(existing)) => {
            return Err(StateError::Stale {
                stack: plan.stack.clone(),
                expected: plan.prior_serial,
                found: existing.serial,
            }
            .into());
        }
        (None, None) => chimera_state::new_id(),
    };
    let meta = GenerationMeta {
        actor: opts.actor.clone(),
        message: if opts.message.is_empty() {
            format!("apply: {}", chimera_compiler::render::summary_line(plan))
        } else {
            opts.message.clone()
        },
        plan_hash: Some(plan.digest().to_hex()),
        desired_hash: Some(plan.desired_hash.to_hex()),
    };
    // Every provider the plan needs must be there before anything is recorded.
    for s in &steps {
        let c = &plan.changes[s.change];
        if let Some(p) = c
            .desired
            .as_ref()
            .map(|d| d.provider)
            .or(c.prior.as_ref().map(|p| p.provider))
        {
            providers.get(p)?;
        }
    }
    let serial = store
        .begin_generation(lock, plan.prior_serial, &lineage, &meta)
        .await?;
    let mut report = ApplyReport {
        serial,
        ..Default::default()
    };
    opts.progress.total(steps.len());

    // Outputs known so far: from prior state, then from each create.
    let mut outputs: HashMap<Address, Map<String, Value>> = HashMap::new();
    for c in &plan.changes {
        if let Some(p) = &c.prior {
            outputs.insert(c.address.clone(), p.outputs.clone());
        }
    }
    let mut waiting: Vec<usize> = steps.iter().map(|s| s.after.len()).collect();
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); steps.len()];
    for (i, s) in steps.iter().enumerate() {
        for &b in &s.after {
            dependents[b].push(i);
        }
    }
    let semaphores: HashMap<ProviderName, Arc<Semaphore>> = ProviderName::ALL
        .iter()
        .map(|p| (*p, Arc::new(Semaphore::new(opts.parallelism.max(1)))))
        .collect();
    let mut running: JoinSet<(
        usize,
        i64,
        Result<Option<chimera_providers::Observed>, ProviderError>,
    )> = JoinSet::new();

    // Every step's intent is committed before its call, and one level ahead: a step's intent
    // is queued when the first step it waits for starts. A finished call therefore releases its
    // dependents at once; its result is committed by the next group commit, off the critical
    // path. Only one transaction is in flight at a time; everything that queues meanwhile goes
    // into the next one.
    let mut intent = vec![IntentState::Unwritten; steps.len()];
    let mut blocked = vec![false; steps.len()];
    let mut ready: Vec<usize> = (0..steps.len()).filter(|&i| waiting[i] == 0).collect();
    let mut queued_intents: Vec<usize> = Vec::new();
    let mut queued_results: Vec<(i64, Outcome)> = Vec::new();
    let mut inflight: Option<Commit<'_>> = None;
    loop {
        // Start every ready step whose intent is durable.
        let mut unwritten_yet = Vec::new();
        for i in std::mem::take(&mut ready) {
            let id = match intent[i] {
                IntentState::Durable(id) => id,
                IntentState::Unwritten => {
                    intent[i] = IntentState::Queued;
                    queued_intents.push(i);
                    unwritten_yet.push(i);
                    continue;
                }
                IntentState::Queued => {
                    unwritten_yet.push(i);
                    continue;
                }
            };
            for &d in &dependents[i] {
                if intent[d] == IntentState::Unwritten && !blocked[d] {
                    intent[d] = IntentState::Queued;
                    queued_intents.push(d);
                }
            }
            let s = steps[i].clone();
            let change = &plan.changes[s.change];
            let token = client_token(&lineage, &s.address, serial, s.kind);
            // Resolve references now: everything this step depends on has finished.
            let resolved = match (&s.kind, &change.desired) {
                (StepKind::Delete, _) | (_, None) => Ok(Map::new()),
                (_, Some(d)) => resolve(&Value::Object(d.attrs.clone()), &outputs)
                    .map(|v| v.as_object().cloned().unwrap_or_default()),
            };
            opts.progress.started(&s);
            let provider_name = change
                .desired
                .as_ref()
                .map(|d| d.provider)
                .or(change.prior.as_ref().map(|p| p.provider))
                .unwrap_or(ProviderName::Local);
            let provider = providers.get(provider_name)?.clone();
            let sem = semaphores[&provider_name].clone();
            let stack = plan.stack.clone();
            let native_region = change
                .desired
                .as_ref()
                .map(|d| d.native_region.clone())
                .or(change.prior.as_ref().map(|p| p.native_region.clone()))
                .unwrap_or_default();
            // Updates and deletes act on the resource state knew; in a create-before-destroy
            // replace, the delete must hit the old resource, not the new one.
            let cloud_id = change.prior.as_ref().map(|p| p.cloud_id.clone());
            running.spawn(async move {
                let attrs = match resolved {
                    Ok(a) => a,
                    Err(e) => {
                        return (
                            i,
                            id,
                            Err(ProviderError::Failed {
                                code: "UnresolvedReference".into(),
                                message: e,
                            }),
                        );
                    }
                };
                let _permit = sem.acquire_owned().await;
                let req = Request {
                    stack: &stack,
                    address: &s.address,
                    native_region: &native_region,
                    attrs: &attrs,
                    token: &token,
                };
                let r = match s.kind {
                    StepKind::Create => chimera_providers::with_retries(|| provider.create(&req))
                        .await
                        .map(Some),
                    StepKind::Update => match &cloud_id {
                        Some(c) => chimera_providers::with_retries(|| provider.update(&req, c))
                            .await
                            .map(Some),
                        None => Err(ProviderError::Failed {
                            code: "NoCloudId".into(),
                            message: "state has no id for this resource".into(),
                        }),
                    },
                    StepKind::Delete => match &cloud_id {
                        Some(c) => {
                            chimera_providers::with_retries(|| provider.delete(s.address.kind, c))
                                .await
                                .map(|_| None)
                        }
                        None => Ok(None),
                    },
                };
                (i, id, r)
            });
        }
        ready = unwritten_yet;

        if inflight.is_none() && (!queued_intents.is_empty() || !queued_results.is_empty()) {
            let idx = std::mem::take(&mut queued_intents);
            let results = std::mem::take(&mut queued_results);
            let intents: Vec<NewIntent> = idx
                .iter()
                .map(|&i| new_intent(plan, &steps[i], &lineage, serial))
                .collect();
            inflight = Some(Box::pin(async move {
                let r = store.record(lock, serial, &results, &intents).await;
                (r, idx)
            }));
        }
        let event = tokio::select! {
            Some(joined) = running.join_next(), if !running.is_empty() => Event::Finished(joined),
            (r, idx) = async { inflight.as_mut().expect("guarded").await }, if inflight.is_some() => {
                Event::Committed(r, idx)
            }
            else => break,
        };
        let joined = match event {
            Event::Committed(r, idx) => {
                inflight = None;
                for (i, id) in idx.into_iter().zip(r?) {
                    intent[i] = IntentState::Durable(id);
                    // Written ahead for a step that a failure has since ruled out.
                    if blocked[i] {
                        queued_results.push((id, Outcome::Failed(SKIPPED.into())));
                    }
                }
                continue;
            }
            Event::Finished(first) => {
                // Take every other finished call too: they share the next commit.
                let mut done = vec![first];
                while let Some(more) = running.try_join_next() {
                    done.push(more);
                }
                done
            }
        };
        for joined in joined {
            let (i, id, r) = joined
                .map_err(|e| EngineError::Unresolved(format!("an apply task panicked: {e}")))?;
            let s = steps[i].clone();
            let change = &plan.changes[s.change];
            let outcome = match (&r, s.kind) {
                (Ok(Some(obs)), StepKind::Create | StepKind::Update) => match &change.desired {
                    Some(d) => {
                        let mut row = row_for(&s.address, d);
                        row.cloud_id = obs.cloud_id.clone();
                        row.outputs = obs.outputs.clone();
                        Outcome::Put(Box::new(row))
                    }
                    // dag::steps makes creates and updates only from changes with a desired side.
                    None => Outcome::Failed("the plan has no desired state for this step".into()),
                },
                (Ok(_), _) => Outcome::Remove {
                    address: s.address.clone(),
                    cloud_id: change
                        .prior
                        .as_ref()
                        .map(|p| p.cloud_id.clone())
                        .unwrap_or_default(),
                },
                (Err(e), _) => Outcome::Failed(e.to_string()),
            };
            queued_results.push((id, outcome));
            match r {
                Ok(obs) => {
                    if let Some(obs) = obs {
                        outputs.insert(s.address.clone(), obs.outputs);
                    }
                    opts.progress.finished(&s, None);
                    for &d in &dependents[i] {
                        waiting[d] -= 1;
                        if waiting[d] == 0 && !blocked[d] {
                            ready.push(d);
                        }
                    }
                    report.succeeded.push(s);
                }
                Err(e) => {
                    let msg = e.to_string();
                    opts.progress.finished(&s, Some(&msg));
                    // Everything downstream is skipped; intents already written say so.
                    let mut stack = dependents[i].clone();
                    while let Some(d) = stack.pop() {
                        if !blocked[d] {
                            blocked[d] = true;
                            if let IntentState::Durable(id) = intent[d] {
                                queued_results.push((id, Outcome::Failed(SKIPPED.into())));
                            }
                            report.skipped.push(steps[d].clone());
                            stack.extend(dependents[d].iter().copied());
                        }
                    }
                    report.failed.push((s, msg));
                }
            }
        }
    }
    let status = if report.ok() {
        GenerationStatus::Complete
    } else {
        GenerationStatus::Partial
    };
    store.finish_generation(lock, serial, status).await?;
    let outcome = if report.ok() { "ok" } else { "partial" };
    let details = format!(
        "{} succeeded, {} failed, {} skipped",
        report.succeeded.len(),
        report.failed.len(),
        report.skipped.len()
    );
    let _ = store
        .audit(
            &opts.actor,
            "apply",
            &format!("{}#{serial}", plan.stack),
            outcome,
            &details,
        )
        .await;
    Ok(report)
}
