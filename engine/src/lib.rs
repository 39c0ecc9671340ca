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
mod executor;
mod failure;
mod intents;
mod moves;
mod observe;
mod recover;
mod scheduler;

use std::collections::HashMap;
use std::sync::Arc;

use chimera_model::{Address, Kind, ProviderName};
use chimera_plans::plan::Plan;
use chimera_providers::Provider;
use chimera_state::{GenerationMeta, GenerationStatus, Lock, LockRequest, StateError, StateStore};
use serde_json::{Map, Value};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

pub use dag::{Step, StepKind};
pub use executor::{client_token, resolve};
pub use failure::{CallFailure, FailureClass};
pub use observe::{Drift, DriftKind, detect_drift, drift_of, import, orphans, refresh};
pub use recover::{Recovery, recover};

use crate::executor::Call;
use crate::intents::IntentLog;
use crate::scheduler::Scheduler;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("no provider `{0}` is configured")]
    NoProvider(ProviderName),
    /// An interrupted apply that needs a person, or an internal failure of the run.
    #[error("{0}")]
    Unresolved(String),
    /// A read or list call failed (refresh, import, orphans), with its class.
    #[error("{0}")]
    Call(CallFailure),
    #[error("{0} is already in state")]
    AlreadyInState(Address),
    #[error("{provider} has no {kind} `{cloud_id}`")]
    NoSuchCloudResource {
        provider: ProviderName,
        kind: Kind,
        cloud_id: String,
    },
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
    fn finished(&self, _step: &Step, _error: Option<&CallFailure>) {}
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
    pub failed: Vec<(Step, CallFailure)>,
    /// Not attempted because something they depend on failed.
    pub skipped: Vec<Step>,
    /// Resources renamed in state (`moved` entries), `(from, to)`: no provider call.
    pub moved: Vec<(Address, Address)>,
}

impl ApplyReport {
    pub fn ok(&self) -> bool {
        self.failed.is_empty() && self.skipped.is_empty()
    }

    /// Each failed step as a diagnostic with its class's code and address, and one warning per
    /// step a failure ruled out.
    pub fn diagnostics(&self) -> Vec<chimera_model::Diagnostic> {
        let mut out: Vec<_> = self.failed.iter().map(|(_, f)| f.diagnostic()).collect();
        out.extend(self.skipped.iter().map(|s| {
            chimera_model::Diagnostic::warning(chimera_model::codes::STEP_SKIPPED, "step not attempted")
                .detail(format!(
                    "{} of {} was not attempted because a step it depends on failed; it runs with the next apply",
                    s.kind.as_str(),
                    s.address
                ))
                .address(&s.address)
        }));
        out
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

/// The lineage an apply of `plan` writes under: the plan's, or a new one for a new stack.
async fn lineage_for(plan: &Plan, store: &dyn StateStore) -> Result<String, EngineError> {
    match (&plan.lineage, store.stack(&plan.stack).await?) {
        (Some(l), _) => Ok(l.clone()),
        (None, Some(existing)) => Err(StateError::Stale {
            stack: plan.stack.clone(),
            expected: plan.prior_serial,
            found: existing.serial,
        }
        .into()),
        (None, None) => Ok(chimera_state::new_id()),
    }
}

/// The apply loop: the [`Scheduler`] says what may start, the [`IntentLog`] makes each step's
/// intent durable before its [`Call`] and group-commits results, and each finished call's
/// outcome feeds both.
async fn apply_locked(
    plan: &Plan,
    store: &dyn StateStore,
    providers: &Providers,
    opts: &ApplyOptions,
    lock: &Lock,
) -> Result<ApplyReport, EngineError> {
    let steps = dag::steps(plan);
    let lineage = lineage_for(plan, store).await?;
    let meta = GenerationMeta {
        actor: opts.actor.clone(),
        message: if opts.message.is_empty() {
            format!("apply: {}", chimera_plans::render::summary_line(plan))
        } else {
            opts.message.clone()
        },
        plan_hash: Some(plan.digest().to_hex()),
        desired_hash: Some(plan.desired_hash.to_hex()),
    };
    // Every provider the plan needs must be there before anything is recorded.
    for s in &steps {
        if let Some(p) = executor::provider_of(&plan.changes[s.change]) {
            providers.get(p)?;
        }
    }
    let serial = store
        .begin_generation(lock, plan.prior_serial, &lineage, &meta)
        .await?;
    // Renames first, in a transaction of their own: every step after acts on the new rows.
    let moved = match moves::record(plan, store, lock, serial).await {
        Ok(m) => m,
        Err(e) => {
            let _ = store
                .finish_generation(lock, serial, GenerationStatus::Partial)
                .await;
            return Err(e);
        }
    };
    let mut report = ApplyReport {
        serial,
        moved,
        ..Default::default()
    };
    opts.progress.total(steps.len());

    // Outputs known so far: from prior state, then from each create.
    let mut outputs: HashMap<Address, Map<String, Value>> = plan
        .changes
        .iter()
        .filter_map(|c| Some((c.address.clone(), c.prior.as_ref()?.outputs.clone())))
        .collect();
    let limits: HashMap<ProviderName, Arc<Semaphore>> = ProviderName::ALL
        .iter()
        .map(|p| (*p, Arc::new(Semaphore::new(opts.parallelism.max(1)))))
        .collect();
    let mut schedule = Scheduler::new(&steps);
    let mut log = IntentLog::new(store, lock, serial, steps.len());
    let mut running: JoinSet<executor::Finished> = JoinSet::new();
    let intent_of = |i: usize| executor::new_intent(plan, &steps[i], &lineage, serial);

    // Intents are written one level ahead: a step's intent is queued when the first step it
    // waits for starts. A finished call therefore releases its dependents at once; its result
    // is committed by the next group commit, off the critical path.
    loop {
        let mut not_yet = Vec::new();
        for i in schedule.take_ready() {
            let Some(id) = log.durable(i) else {
                log.write_ahead(i);
                not_yet.push(i);
                continue;
            };
            for &d in schedule.dependents(i) {
                if !schedule.is_blocked(d) {
                    log.write_ahead(d);
                }
            }
            let s = &steps[i];
            let provider =
                executor::provider_of(&plan.changes[s.change]).unwrap_or(ProviderName::Local);
            opts.progress.started(s);
            let call = Call::prepare(
                plan,
                s,
                i,
                id,
                client_token(&lineage, &s.address, serial, s.kind),
                &outputs,
                executor::Lane {
                    provider: providers.get(provider)?.clone(),
                    limit: limits[&provider].clone(),
                },
            );
            running.spawn(call.run());
        }
        schedule.defer(not_yet);
        log.flush(intent_of);

        let finished = tokio::select! {
            Some(first) = running.join_next(), if !running.is_empty() => {
                // Take every other finished call too: they share the next commit.
                let mut done = vec![first];
                while let Some(more) = running.try_join_next() {
                    done.push(more);
                }
                done
            }
            (r, written) = log.commit_done(), if log.in_flight() => {
                log.committed(r, written, |i| schedule.is_blocked(i))?;
                continue;
            }
            else => break,
        };
        for joined in finished {
            let (i, id, r) = joined
                .map_err(|e| EngineError::Unresolved(format!("an apply task panicked: {e}")))?;
            let s = steps[i].clone();
            log.record(id, executor::outcome(&s, &plan.changes[s.change], &r));
            match r {
                Ok(obs) => {
                    if let Some(obs) = obs {
                        outputs.insert(s.address.clone(), obs.outputs);
                    }
                    opts.progress.finished(&s, None);
                    schedule.succeeded(i);
                    report.succeeded.push(s);
                }
                Err(failure) => {
                    opts.progress.finished(&s, Some(&failure));
                    // Everything downstream is skipped; intents already written say so.
                    for d in schedule.failed(i) {
                        log.skip(d);
                        report.skipped.push(steps[d].clone());
                    }
                    report.failed.push((s, failure));
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
    let mut details = format!(
        "{} succeeded, {} failed, {} skipped",
        report.succeeded.len(),
        report.failed.len(),
        report.skipped.len()
    );
    if !report.moved.is_empty() {
        details.push_str(&format!(", {} moved", report.moved.len()));
    }
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
