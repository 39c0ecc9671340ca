//! The daemon's Prometheus metrics (prometheus-client): reconcile durations, drift found and
//! healed by kind, apply outcomes, policy denials, failures and the last successful reconcile
//! per stack, pauses, parked resources, lock waits and the queue.

use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StackLabel {
    stack: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    stack: String,
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    stack: String,
    outcome: String,
}

type Histograms = Family<StackLabel, Histogram, fn() -> Histogram>;

fn duration_histogram() -> Histogram {
    // 10 ms … ~5.5 min.
    Histogram::new(exponential_buckets(0.01, 2.0, 16))
}

/// Every metric the daemon exports, registered once.
pub struct Metrics {
    registry: Mutex<Registry>,
    duration: Histograms,
    drift_found: Family<KindLabels, Counter>,
    drift_healed: Family<KindLabels, Counter>,
    applies: Family<OutcomeLabels, Counter>,
    denials: Family<StackLabel, Counter>,
    failures: Family<StackLabel, Counter>,
    last_success: Family<StackLabel, Gauge<i64, std::sync::atomic::AtomicI64>>,
    ticks: Counter<u64, AtomicU64>,
    paused: Family<StackLabel, Gauge>,
    dead_letters: Family<StackLabel, Gauge>,
    lock_waits: Family<StackLabel, Counter>,
    queue_depth: Gauge,
    resource_failures: Family<KindLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("chimera");
        let duration: Histograms = Family::new_with_constructor(duration_histogram);
        let m = Metrics {
            registry: Mutex::new(Registry::default()),
            duration,
            drift_found: Family::default(),
            drift_healed: Family::default(),
            applies: Family::default(),
            denials: Family::default(),
            failures: Family::default(),
            last_success: Family::default(),
            ticks: Counter::default(),
            paused: Family::default(),
            dead_letters: Family::default(),
            lock_waits: Family::default(),
            queue_depth: Gauge::default(),
            resource_failures: Family::default(),
        };
        registry.register(
            "reconcile_duration_seconds",
            "Time one reconcile of a stack took (read the clouds, plan and heal)",
            m.duration.clone(),
        );
        registry.register(
            "drift_found",
            "Resources found changed or deleted outside Chimera, by kind",
            m.drift_found.clone(),
        );
        registry.register(
            "drift_healed",
            "Drifted resources put back by a heal, by kind",
            m.drift_healed.clone(),
        );
        registry.register(
            "heal_applies",
            "Heals applied, by outcome (succeeded, failed)",
            m.applies.clone(),
        );
        registry.register(
            "policy_denials",
            "Policy denials that kept a heal from being applied",
            m.denials.clone(),
        );
        registry.register(
            "reconcile_failures",
            "Reconciles that failed before healing (a stack that does not compile, state or cloud unreachable)",
            m.failures.clone(),
        );
        registry.register(
            "last_successful_reconcile_timestamp_seconds",
            "Unix time of the stack's last reconcile that finished without an error",
            m.last_success.clone(),
        );
        registry.register("reconciles", "Stack reconciles run", m.ticks.clone());
        registry.register(
            "stack_paused",
            "1 while the stack's reconciles are paused",
            m.paused.clone(),
        );
        registry.register(
            "dead_letters",
            "Resources parked after their heals kept failing, per stack",
            m.dead_letters.clone(),
        );
        registry.register(
            "lock_waits",
            "Reconciles skipped because another reconciler or an apply held the stack",
            m.lock_waits.clone(),
        );
        registry.register(
            "queue_depth",
            "Stacks still to reconcile in the current tick",
            m.queue_depth.clone(),
        );
        registry.register(
            "heal_failures",
            "Failed heals of one resource, by kind (each backs off; repeated ones are parked)",
            m.resource_failures.clone(),
        );
        *m.registry.lock().unwrap_or_else(|p| p.into_inner()) = registry;
        m
    }
}

impl Metrics {
    fn stack(stack: &str) -> StackLabel {
        StackLabel {
            stack: stack.to_string(),
        }
    }

    fn kind(stack: &str, kind: &str) -> KindLabels {
        KindLabels {
            stack: stack.to_string(),
            kind: kind.to_string(),
        }
    }

    pub fn reconciled(&self, stack: &str, seconds: f64) {
        self.duration
            .get_or_create(&Self::stack(stack))
            .observe(seconds);
        self.ticks.inc();
    }

    pub fn drift_found(&self, stack: &str, kind: &str) {
        self.drift_found
            .get_or_create(&Self::kind(stack, kind))
            .inc();
    }

    pub fn drift_healed(&self, stack: &str, kind: &str) {
        self.drift_healed
            .get_or_create(&Self::kind(stack, kind))
            .inc();
    }

    pub fn applied(&self, stack: &str, ok: bool) {
        self.applies
            .get_or_create(&OutcomeLabels {
                stack: stack.to_string(),
                outcome: if ok { "succeeded" } else { "failed" }.to_string(),
            })
            .inc();
    }

    pub fn denied(&self, stack: &str, n: usize) {
        self.denials
            .get_or_create(&Self::stack(stack))
            .inc_by(n as u64);
    }

    pub fn failed(&self, stack: &str) {
        self.failures.get_or_create(&Self::stack(stack)).inc();
    }

    pub fn succeeded(&self, stack: &str, unix: u64) {
        self.last_success
            .get_or_create(&Self::stack(stack))
            .set(unix as i64);
    }

    /// Registers more metrics (the provider guard's) in the same registry.
    pub fn register<T>(&self, f: impl FnOnce(&mut Registry) -> T) -> T {
        f(&mut self.registry.lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn paused(&self, stack: &str, paused: bool) {
        self.paused
            .get_or_create(&Self::stack(stack))
            .set(i64::from(paused));
    }

    pub fn dead_letters(&self, stack: &str, n: usize) {
        self.dead_letters
            .get_or_create(&Self::stack(stack))
            .set(n as i64);
    }

    pub fn lock_wait(&self, stack: &str) {
        self.lock_waits.get_or_create(&Self::stack(stack)).inc();
    }

    pub fn queue_depth(&self, n: usize) {
        self.queue_depth.set(n as i64);
    }

    pub fn resource_failed(&self, stack: &str, kind: &str) {
        self.resource_failures
            .get_or_create(&Self::kind(stack, kind))
            .inc();
    }

    /// The Prometheus (OpenMetrics) text exposition.
    pub fn encode(&self) -> Result<String, String> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(
            &mut out,
            &self.registry.lock().unwrap_or_else(|p| p.into_inner()),
        )
        .map_err(|e| e.to_string())?;
        Ok(out)
    }
}
