//! The intent log of one apply: every step's intent is durable before its call, results are
//! group-committed, and only one state transaction is in flight at a time. Whatever queues
//! while a transaction is in flight goes into the next one.

use chimera_state::{Lock, NewIntent, Outcome, StateError, StateStore};

/// Recorded for a step whose intent was written but which a failure upstream ruled out.
pub const SKIPPED: &str = "skipped: a step it depends on failed";

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

pub struct IntentLog<'a> {
    store: &'a dyn StateStore,
    lock: &'a Lock,
    serial: u64,
    state: Vec<IntentState>,
    queued_intents: Vec<usize>,
    queued_results: Vec<(i64, Outcome)>,
    inflight: Option<Commit<'a>>,
}

impl<'a> IntentLog<'a> {
    pub fn new(store: &'a dyn StateStore, lock: &'a Lock, serial: u64, steps: usize) -> Self {
        IntentLog {
            store,
            lock,
            serial,
            state: vec![IntentState::Unwritten; steps],
            queued_intents: Vec::new(),
            queued_results: Vec::new(),
            inflight: None,
        }
    }

    /// The step's intent id, once its intent is committed.
    pub fn durable(&self, step: usize) -> Option<i64> {
        match self.state[step] {
            IntentState::Durable(id) => Some(id),
            _ => None,
        }
    }

    /// Queues the step's intent for the next commit, unless it is already queued or written.
    pub fn write_ahead(&mut self, step: usize) {
        if self.state[step] == IntentState::Unwritten {
            self.state[step] = IntentState::Queued;
            self.queued_intents.push(step);
        }
    }

    /// Queues a result for the next commit.
    pub fn record(&mut self, intent: i64, outcome: Outcome) {
        self.queued_results.push((intent, outcome));
    }

    /// Closes the intent of a step a failure ruled out: now if it is written, or when its
    /// pending write commits (see [`Self::committed`]).
    pub fn skip(&mut self, step: usize) {
        if let Some(id) = self.durable(step) {
            self.record(id, Outcome::Failed(SKIPPED.into()));
        }
    }

    /// Starts a commit of everything queued, if none is in flight and anything is queued.
    pub fn flush(&mut self, intent_of: impl Fn(usize) -> NewIntent) {
        if self.inflight.is_some()
            || (self.queued_intents.is_empty() && self.queued_results.is_empty())
        {
            return;
        }
        let idx = std::mem::take(&mut self.queued_intents);
        let results = std::mem::take(&mut self.queued_results);
        let intents: Vec<NewIntent> = idx.iter().map(|&i| intent_of(i)).collect();
        let (store, lock, serial) = (self.store, self.lock, self.serial);
        self.inflight = Some(Box::pin(async move {
            let r = store.record(lock, serial, &results, &intents).await;
            (r, idx)
        }));
    }

    pub fn in_flight(&self) -> bool {
        self.inflight.is_some()
    }

    /// Waits for the commit in flight (call only when [`Self::in_flight`]).
    pub async fn commit_done(&mut self) -> (Result<Vec<i64>, StateError>, Vec<usize>) {
        match self.inflight.as_mut() {
            Some(c) => c.await,
            None => (Ok(Vec::new()), Vec::new()),
        }
    }

    /// Takes a finished commit's intent ids; intents written ahead for steps that a failure has
    /// since ruled out (`blocked`) are closed as skipped in the next commit.
    pub fn committed(
        &mut self,
        result: Result<Vec<i64>, StateError>,
        steps: Vec<usize>,
        blocked: impl Fn(usize) -> bool,
    ) -> Result<(), StateError> {
        self.inflight = None;
        for (i, id) in steps.into_iter().zip(result?) {
            self.state[i] = IntentState::Durable(id);
            if blocked(i) {
                self.record(id, Outcome::Failed(SKIPPED.into()));
            }
        }
        Ok(())
    }
}
