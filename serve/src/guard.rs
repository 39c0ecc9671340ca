//! Provider call governance for the daemon: per provider, a token bucket every call waits on,
//! a circuit that opens after consecutive transient failures (throttled, retryable), refuses
//! calls at once for a while, then lets one trial call decide, and call metrics (latency and
//! errors by provider, verb and class). Each call is a `debug` span, `provider_call` (provider,
//! verb), for a subscriber that times the phases of a tick.
//!
//! All state lives in one shared [`Guard`], keyed by provider name: [`Guard::layer`] only puts
//! a thin wrapper around each provider a run builds, so buckets and circuits outlive a run.
//! Time is tokio's ([`tokio::time::Instant`]), so a paused test clock drives both.
//!
//! **Architecture Invariant:** a refused call never reaches the provider and fails with
//! [`CIRCUIT_OPEN`], a `Failed` error (never `Retryable`): the engine's retry loop gives up on
//! it at once, and its class is [`FailureClass::Retryable`] (come back later).

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use chimera_model::{Kind, ProviderName};
use chimera_providers::{
    CloudRef, FailureClass, Observed, Provider, ProviderError, Request, Result, Violation,
};
use chimera_workflow::ProviderLayer;
use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use serde::Serialize;
use tokio::time::Instant;
use tracing::Instrument;

/// The error code of a call refused by an open circuit. It names no cloud error; it contains
/// `Unavailable`, so [`FailureClass::of_code`] classes it [`FailureClass::Retryable`].
pub const CIRCUIT_OPEN: &str = "ProviderUnavailable.CircuitOpen";

/// How the daemon governs provider calls.
#[derive(Debug, Clone, PartialEq)]
pub struct GuardConfig {
    /// Calls per second per provider, sustained; not positive or not finite: no limit.
    pub calls_per_second: f64,
    /// Calls a provider may take at once after a quiet spell (0 acts as 1).
    pub burst: u32,
    /// Consecutive transient failures (throttled, retryable) that open a provider's circuit
    /// (0 acts as 1).
    pub failures_to_open: u32,
    /// How long an open circuit refuses calls before it lets one trial call through.
    pub open_for: Duration,
}

impl Default for GuardConfig {
    fn default() -> Self {
        GuardConfig {
            calls_per_second: 20.0,
            burst: 40,
            failures_to_open: 5,
            open_for: Duration::from_secs(30),
        }
    }
}

/// One provider's circuit, as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CircuitStatus {
    pub provider: String,
    /// `closed` (calls go through), `open` (calls are refused) or `half-open` (the open time
    /// is over: one trial call decides).
    pub state: &'static str,
    /// Transient failures since the last success.
    pub consecutive_failures: u32,
    /// Unix seconds when an open circuit lets a trial call through; `None` unless open.
    pub open_until_unix: Option<u64>,
}

/// Token buckets, circuits and call metrics of every provider, shared by every run.
pub struct Guard {
    cfg: GuardConfig,
    providers: Mutex<BTreeMap<String, Arc<ProviderGuard>>>,
    metrics: GuardMetrics,
}

impl Guard {
    /// A guard whose metrics are registered into `registry` (names without a prefix: the
    /// daemon's registry adds `chimera_`).
    pub fn new(cfg: GuardConfig, registry: &mut Registry) -> Arc<Guard> {
        Arc::new(Guard {
            cfg,
            providers: Mutex::new(BTreeMap::new()),
            metrics: GuardMetrics::register(registry),
        })
    }

    /// The layer to put in `Settings::provider_layer`: every provider a run builds is wrapped
    /// by [`Guard::wrap`].
    pub fn layer(self: &Arc<Self>) -> ProviderLayer {
        let guard = Arc::clone(self);
        ProviderLayer(Arc::new(move |inner| guard.wrap(inner)))
    }

    /// `inner`, with every call governed by the bucket and circuit of its provider's name.
    pub fn wrap(self: &Arc<Self>, inner: Arc<dyn Provider>) -> Arc<dyn Provider> {
        let state = self.provider(inner.name().as_str());
        Arc::new(Guarded {
            inner,
            guard: Arc::clone(self),
            state,
        })
    }

    /// Every provider's circuit seen so far, by name.
    pub fn circuits(&self) -> Vec<CircuitStatus> {
        let now = Instant::now();
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        lock(&self.providers)
            .values()
            .map(|p| {
                let c = lock(&p.circuit);
                let (state, open_until_unix) = match c.state {
                    State::Closed => ("closed", None),
                    State::Open { until } if until > now => {
                        let left = until - now;
                        ("open", Some((wall + left).as_secs_f64().ceil() as u64))
                    }
                    State::Open { .. } | State::Trial => ("half-open", None),
                };
                CircuitStatus {
                    provider: p.name.clone(),
                    state,
                    consecutive_failures: c.failures,
                    open_until_unix,
                }
            })
            .collect()
    }

    fn provider(&self, name: &str) -> Arc<ProviderGuard> {
        let mut providers = lock(&self.providers);
        if let Some(p) = providers.get(name) {
            return Arc::clone(p);
        }
        let p = Arc::new(ProviderGuard {
            name: name.to_string(),
            bucket: bucket(&self.cfg),
            circuit: Mutex::new(Circuit::default()),
        });
        self.metrics.circuit_open(name, false);
        providers.insert(name.to_string(), Arc::clone(&p));
        p
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// governor's clock on tokio's time (the instant is the time since the bucket was made).
#[derive(Debug, Clone)]
struct TokioClock {
    origin: Instant,
}

impl Clock for TokioClock {
    type Instant = Duration;

    fn now(&self) -> Duration {
        Instant::now().saturating_duration_since(self.origin)
    }
}

type Bucket = RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<Duration>>;

/// A provider's token bucket and its clock; `None`: no limit.
fn bucket(cfg: &GuardConfig) -> Option<(Bucket, TokioClock)> {
    if !(cfg.calls_per_second.is_finite() && cfg.calls_per_second > 0.0) {
        return None;
    }
    // One token per period; a rate below one a day is taken as one a day.
    let period = Duration::try_from_secs_f64(1.0 / cfg.calls_per_second)
        .unwrap_or(Duration::MAX)
        .min(Duration::from_secs(86_400));
    let burst = NonZeroU32::new(cfg.burst).unwrap_or(NonZeroU32::MIN);
    let quota = Quota::with_period(period)?.allow_burst(burst);
    let clock = TokioClock {
        origin: Instant::now(),
    };
    Some((RateLimiter::direct_with_clock(quota, clock.clone()), clock))
}

/// One provider's share of the guard.
struct ProviderGuard {
    name: String,
    /// The bucket, and its clock (to know how long to wait).
    bucket: Option<(Bucket, TokioClock)>,
    circuit: Mutex<Circuit>,
}

impl ProviderGuard {
    /// Waits for a token (as governor's `until_ready`, but on tokio's timer).
    async fn token(&self) {
        let Some((bucket, clock)) = &self.bucket else {
            return;
        };
        while let Err(not_until) = bucket.check() {
            tokio::time::sleep(not_until.wait_time_from(clock.now())).await;
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed,
    /// Calls are refused until `until`; the first call after it is the trial.
    Open {
        until: Instant,
    },
    /// The trial call is in flight; other calls are refused.
    Trial,
}

#[derive(Debug)]
struct Circuit {
    state: State,
    failures: u32,
}

impl Default for Circuit {
    fn default() -> Self {
        Circuit {
            state: State::Closed,
            failures: 0,
        }
    }
}

/// Why a call was refused.
enum Refusal {
    Open { left: Duration, failures: u32 },
    TrialInFlight,
}

impl Circuit {
    /// Whether a call made at `now` may go through (`Ok(true)`: as the trial). With `take`,
    /// an open circuit whose time is over becomes the trial's.
    fn admit(&mut self, now: Instant, take: bool) -> std::result::Result<bool, Refusal> {
        match self.state {
            State::Closed => Ok(false),
            State::Open { until } if now < until => Err(Refusal::Open {
                left: until - now,
                failures: self.failures,
            }),
            State::Open { .. } => {
                if take {
                    self.state = State::Trial;
                }
                Ok(true)
            }
            State::Trial => Err(Refusal::TrialInFlight),
        }
    }

    /// Records how a call went (`transient`: it failed throttled or retryable; `None`: it
    /// succeeded). A failure of another class is the request's fault: it neither counts nor
    /// resets, but as a trial's answer it shows the provider answers, and closes the circuit.
    fn record(&mut self, trial: bool, failed: Option<bool>, now: Instant, cfg: &GuardConfig) {
        match failed {
            None => {
                self.failures = 0;
                if trial {
                    self.state = State::Closed;
                }
            }
            Some(false) => {
                if trial {
                    self.failures = 0;
                    self.state = State::Closed;
                }
            }
            Some(true) => {
                self.failures = self.failures.saturating_add(1);
                let opens = if trial {
                    true
                } else {
                    self.state == State::Closed && self.failures >= cfg.failures_to_open.max(1)
                };
                if opens {
                    self.state = State::Open {
                        until: now + cfg.open_for,
                    };
                }
            }
        }
    }

    fn is_closed(&self) -> bool {
        self.state == State::Closed
    }
}

/// A provider with its calls governed.
struct Guarded {
    inner: Arc<dyn Provider>,
    guard: Arc<Guard>,
    state: Arc<ProviderGuard>,
}

/// A call let through; a trial dropped before its answer (the call was cancelled) leaves the
/// circuit open with its time over, so the next call is the trial.
struct Ticket<'a> {
    guarded: &'a Guarded,
    trial: bool,
    done: bool,
}

impl Ticket<'_> {
    fn record(mut self, failed: Option<bool>) {
        self.done = true;
        let g = self.guarded;
        let mut c = lock(&g.state.circuit);
        c.record(self.trial, failed, Instant::now(), &g.guard.cfg);
        g.guard.metrics.circuit_open(&g.state.name, !c.is_closed());
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if self.trial && !self.done {
            let mut c = lock(&self.guarded.state.circuit);
            if c.state == State::Trial {
                c.state = State::Open {
                    until: Instant::now(),
                };
            }
        }
    }
}

impl Guarded {
    async fn call<T, F, Fut>(&self, verb: &'static str, call: F) -> Result<T>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        // Refused at once, before waiting for a token, when the circuit is open.
        let peek = lock(&self.state.circuit).admit(Instant::now(), false);
        if let Err(r) = peek {
            return Err(self.refused(r));
        }
        self.state.token().await;
        let admitted = lock(&self.state.circuit).admit(Instant::now(), true);
        let trial = match admitted {
            Ok(trial) => trial,
            Err(r) => return Err(self.refused(r)),
        };
        let ticket = Ticket {
            guarded: self,
            trial,
            done: false,
        };
        let started = Instant::now();
        let r = call()
            .instrument(tracing::debug_span!("provider_call", provider = %self.state.name, verb))
            .await;
        let m = &self.guard.metrics;
        m.observe(&self.state.name, verb, started.elapsed());
        match &r {
            Ok(_) => ticket.record(None),
            Err(e) => {
                let class = e.class();
                m.error(&self.state.name, verb, class);
                ticket.record(Some(matches!(
                    class,
                    FailureClass::Throttled | FailureClass::Retryable
                )));
            }
        }
        r
    }

    fn refused(&self, why: Refusal) -> ProviderError {
        self.guard.metrics.refused(&self.state.name);
        let name = &self.state.name;
        let message = match why {
            Refusal::Open { left, failures } => format!(
                "calls to {name} are refused for {}s more (circuit open): its last {failures} calls failed transiently",
                left.as_secs_f64().ceil() as u64
            ),
            Refusal::TrialInFlight => format!(
                "calls to {name} are refused while a trial call finds out whether it answers again (circuit half-open)"
            ),
        };
        ProviderError::Failed {
            code: CIRCUIT_OPEN.into(),
            message,
        }
    }
}

#[async_trait]
impl Provider for Guarded {
    fn name(&self) -> ProviderName {
        self.inner.name()
    }
    fn validate(&self, req: &Request<'_>) -> Vec<Violation> {
        self.inner.validate(req)
    }
    async fn create(&self, req: &Request<'_>) -> Result<Observed> {
        self.call("create", || self.inner.create(req)).await
    }
    async fn read(&self, at: &CloudRef) -> Result<Option<Observed>> {
        self.call("read", || self.inner.read(at)).await
    }
    async fn update(&self, req: &Request<'_>, cloud_id: &str) -> Result<Observed> {
        self.call("update", || self.inner.update(req, cloud_id))
            .await
    }
    async fn delete(&self, at: &CloudRef) -> Result<()> {
        self.call("delete", || self.inner.delete(at)).await
    }
    async fn find_by_token(
        &self,
        kind: Kind,
        region: &str,
        token: &str,
    ) -> Result<Option<Observed>> {
        self.call("find_by_token", || {
            self.inner.find_by_token(kind, region, token)
        })
        .await
    }
    async fn list_managed(&self, stack: &str) -> Result<Vec<Observed>> {
        self.call("list_managed", || self.inner.list_managed(stack))
            .await
    }
    async fn observe(&self, items: &[CloudRef]) -> Result<Vec<Option<Observed>>> {
        self.call("observe", || self.inner.observe(items)).await
    }
    async fn utilisation(&self, at: &CloudRef) -> Result<Option<chimera_providers::Utilisation>> {
        self.call("utilisation", || self.inner.utilisation(at))
            .await
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderLabel {
    provider: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerbLabels {
    provider: String,
    verb: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    provider: String,
    verb: String,
    class: String,
}

fn call_histogram() -> Histogram {
    // 1 ms … ~33 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

struct GuardMetrics {
    duration: Family<VerbLabels, Histogram, fn() -> Histogram>,
    errors: Family<ErrorLabels, Counter>,
    open: Family<ProviderLabel, Gauge>,
    refused: Family<ProviderLabel, Counter>,
}

impl GuardMetrics {
    fn register(registry: &mut Registry) -> Self {
        let m = GuardMetrics {
            duration: Family::new_with_constructor(call_histogram),
            errors: Family::default(),
            open: Family::default(),
            refused: Family::default(),
        };
        registry.register(
            "provider_call_duration_seconds",
            "Time a provider call took (the call itself, not the wait for a token), by provider and verb",
            m.duration.clone(),
        );
        registry.register(
            "provider_call_errors",
            "Provider calls that failed, by provider, verb and failure class",
            m.errors.clone(),
        );
        registry.register(
            "provider_circuit_open",
            "Whether a provider's circuit is open (1: calls are refused or a trial decides) or closed (0)",
            m.open.clone(),
        );
        registry.register(
            "provider_calls_refused",
            "Provider calls refused by an open circuit, without reaching the provider",
            m.refused.clone(),
        );
        m
    }

    fn observe(&self, provider: &str, verb: &str, took: Duration) {
        self.duration
            .get_or_create(&VerbLabels {
                provider: provider.to_string(),
                verb: verb.to_string(),
            })
            .observe(took.as_secs_f64());
    }

    fn error(&self, provider: &str, verb: &str, class: FailureClass) {
        self.errors
            .get_or_create(&ErrorLabels {
                provider: provider.to_string(),
                verb: verb.to_string(),
                class: class.as_str().to_string(),
            })
            .inc();
    }

    fn circuit_open(&self, provider: &str, open: bool) {
        self.open
            .get_or_create(&ProviderLabel {
                provider: provider.to_string(),
            })
            .set(i64::from(open));
    }

    fn refused(&self, provider: &str) {
        self.refused
            .get_or_create(&ProviderLabel {
                provider: provider.to_string(),
            })
            .inc();
    }
}
