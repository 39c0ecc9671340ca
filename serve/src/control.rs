//! What the daemon decides about stacks and resources between ticks: pauses, per-resource
//! backoff after failed heals, the dead-letter list, and per-stack backoff after failed
//! reconciles. Kept in memory by each daemon (a restarted daemon starts afresh: backoff is
//! about not hammering a cloud, and a dead letter comes back if the resource keeps failing).
//!
//! Backoff follows client-go's `ItemExponentialFailureRateLimiter`: 5 ms doubled per
//! consecutive failure up to 1,000 s, with up to 10% jitter added. After `max_failures`
//! consecutive failures a resource is parked in the dead-letter list: not healed again until a
//! person releases it or its configuration changes.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde::Serialize;

/// Backoff limits.
#[derive(Debug, Clone, Copy)]
pub struct BackoffConfig {
    pub base: Duration,
    pub max: Duration,
    /// Consecutive failures of one resource before it is parked.
    pub max_failures: u32,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        BackoffConfig {
            base: Duration::from_millis(5),
            max: Duration::from_secs(1000),
            max_failures: 8,
        }
    }
}

impl BackoffConfig {
    /// The wait after `failures` consecutive failures (1 → base), with jitter.
    pub fn delay(&self, failures: u32) -> Duration {
        let exp = failures.saturating_sub(1).min(40);
        let d = self
            .base
            .saturating_mul(1u32.checked_shl(exp.min(31)).unwrap_or(u32::MAX))
            .min(self.max);
        d.mul_f64(1.0 + 0.1 * fastrand::f64()).min(self.max)
    }
}

/// A resource whose heals keep failing.
#[derive(Debug, Clone)]
struct Retry {
    failures: u32,
    next: Instant,
    last_error: String,
}

/// A parked resource, as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    pub address: String,
    pub failures: u32,
    pub last_error: String,
    /// Unix seconds when it was parked.
    pub since: u64,
    /// The resource's desired hash when parked: a configuration change releases it.
    #[serde(skip)]
    pub desired: Option<String>,
}

/// A resource backing off, as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Backoff {
    pub address: String,
    pub failures: u32,
    pub retry_in_seconds: f64,
    pub last_error: String,
}

#[derive(Debug, Default)]
struct StackControl {
    paused: bool,
    retries: BTreeMap<String, Retry>,
    dead: BTreeMap<String, DeadLetter>,
    /// Consecutive failed reconciles of the whole stack, and when to try again.
    failures: u32,
    next: Option<Instant>,
}

/// Every stack's controls, keyed by the stack's path as the daemon was given it.
#[derive(Debug, Default)]
pub struct Control {
    paused_all: bool,
    stacks: BTreeMap<String, StackControl>,
}

impl Control {
    fn stack(&mut self, key: &str) -> &mut StackControl {
        self.stacks.entry(key.to_string()).or_default()
    }

    pub fn pause(&mut self, key: Option<&str>, paused: bool) {
        match key {
            Some(k) => self.stack(k).paused = paused,
            None => self.paused_all = paused,
        }
    }

    pub fn paused_all(&self) -> bool {
        self.paused_all
    }

    pub fn is_paused(&self, key: &str) -> bool {
        self.paused_all || self.stacks.get(key).is_some_and(|s| s.paused)
    }

    /// The stack should wait: it is paused, or backing off after failed reconciles.
    pub fn wait_reason(&self, key: &str, now: Instant) -> Option<String> {
        if self.paused_all {
            return Some("paused (all stacks)".into());
        }
        let s = self.stacks.get(key)?;
        if s.paused {
            return Some("paused".into());
        }
        s.next.filter(|n| *n > now).map(|n| {
            format!(
                "backing off after {} failed reconciles; next try in {:.1} s",
                s.failures,
                (n - now).as_secs_f64()
            )
        })
    }

    /// A reconcile of the whole stack failed (state or cloud unreachable, compile error).
    pub fn stack_failed(&mut self, key: &str, backoff: &BackoffConfig, now: Instant) {
        let s = self.stack(key);
        s.failures += 1;
        // Stack-level retries start at a second: a reconcile is a whole read of the clouds.
        let cfg = BackoffConfig {
            base: backoff.base.max(Duration::from_secs(1)),
            max: backoff.max.min(Duration::from_secs(300)),
            ..*backoff
        };
        s.next = Some(now + cfg.delay(s.failures));
    }

    pub fn stack_succeeded(&mut self, key: &str) {
        let s = self.stack(key);
        s.failures = 0;
        s.next = None;
    }

    /// The resources not to heal now: parked, or still backing off. A parked resource whose
    /// desired hash changed (`desired(address)`) is released first.
    pub fn held(
        &mut self,
        key: &str,
        now: Instant,
        desired: impl Fn(&str) -> Option<String>,
    ) -> (BTreeSet<String>, Vec<DeadLetter>) {
        let s = self.stack(key);
        let mut released = Vec::new();
        s.dead.retain(|address, d| {
            let now_desired = desired(address);
            let changed = d.desired.is_some() && now_desired.is_some() && now_desired != d.desired;
            if changed {
                released.push(d.clone());
            }
            !changed
        });
        for d in &released {
            s.retries.remove(&d.address);
        }
        let held = s
            .dead
            .keys()
            .cloned()
            .chain(
                s.retries
                    .iter()
                    .filter(|(_, r)| r.next > now)
                    .map(|(a, _)| a.clone()),
            )
            .collect();
        (held, released)
    }

    /// A heal of `address` failed; returns the dead letter if it is now parked.
    pub fn resource_failed(
        &mut self,
        key: &str,
        address: &str,
        error: &str,
        desired: Option<String>,
        backoff: &BackoffConfig,
        now: Instant,
    ) -> Option<DeadLetter> {
        let s = self.stack(key);
        let r = s.retries.entry(address.to_string()).or_insert(Retry {
            failures: 0,
            next: now,
            last_error: String::new(),
        });
        r.failures += 1;
        r.last_error = error.to_string();
        r.next = now + backoff.delay(r.failures);
        if r.failures < backoff.max_failures {
            return None;
        }
        let d = DeadLetter {
            address: address.to_string(),
            failures: r.failures,
            last_error: r.last_error.clone(),
            since: crate::now_unix(),
            desired,
        };
        s.retries.remove(address);
        s.dead.insert(address.to_string(), d.clone());
        Some(d)
    }

    pub fn resource_healed(&mut self, key: &str, address: &str) {
        self.stack(key).retries.remove(address);
    }

    /// A person releases a parked resource; returns whether it was parked.
    pub fn release(&mut self, key: &str, address: &str) -> bool {
        let s = self.stack(key);
        s.retries.remove(address);
        s.dead.remove(address).is_some()
    }

    pub fn dead_letters(&self, key: &str) -> Vec<DeadLetter> {
        self.stacks
            .get(key)
            .map(|s| s.dead.values().cloned().collect())
            .unwrap_or_default()
    }

    pub fn backoffs(&self, key: &str, now: Instant) -> Vec<Backoff> {
        self.stacks
            .get(key)
            .map(|s| {
                s.retries
                    .iter()
                    .map(|(a, r)| Backoff {
                        address: a.clone(),
                        failures: r.failures,
                        retry_in_seconds: r.next.saturating_duration_since(now).as_secs_f64(),
                        last_error: r.last_error.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_5ms_to_1000s_with_at_most_10_percent_jitter() {
        let cfg = BackoffConfig::default();
        for (failures, base) in [(1, 0.005), (2, 0.010), (3, 0.020), (11, 5.12)] {
            let d = cfg.delay(failures).as_secs_f64();
            assert!(d >= base && d <= base * 1.1 + 1e-9, "{failures}: {d}");
        }
        assert_eq!(cfg.delay(40), Duration::from_secs(1000));
        assert_eq!(cfg.delay(u32::MAX), Duration::from_secs(1000));
    }

    #[test]
    fn a_resource_is_parked_after_max_failures_and_released_by_a_person_or_a_change() {
        let cfg = BackoffConfig {
            max_failures: 3,
            ..BackoffConfig::default()
        };
        let mut c = Control::default();
        let t = Instant::now();
        let desired = |_: &str| Some("h1".to_string());
        for i in 1..3 {
            assert!(
                c.resource_failed("s", "instance.a", "boom", Some("h1".into()), &cfg, t)
                    .is_none(),
                "{i}"
            );
        }
        let (held, _) = c.held("s", t, desired);
        assert!(held.contains("instance.a"), "backing off");
        let (held, _) = c.held("s", t + Duration::from_secs(2000), desired);
        assert!(held.is_empty(), "backoff over");
        let parked = c.resource_failed("s", "instance.a", "boom", Some("h1".into()), &cfg, t);
        assert_eq!(parked.unwrap().failures, 3);
        let later = t + Duration::from_secs(1_000_000);
        assert!(
            c.held("s", later, desired).0.contains("instance.a"),
            "parked stays"
        );
        assert!(c.release("s", "instance.a"));
        assert!(c.held("s", later, desired).0.is_empty());
        // Parked again, then the configuration changes: released.
        for _ in 0..3 {
            c.resource_failed("s", "instance.a", "boom", Some("h1".into()), &cfg, t);
        }
        assert_eq!(c.dead_letters("s").len(), 1);
        let (held, released) = c.held("s", later, |_| Some("h2".to_string()));
        assert!(held.is_empty());
        assert_eq!(released.len(), 1);
        c.resource_healed("s", "instance.a");
        assert!(c.backoffs("s", later).is_empty());
    }

    #[test]
    fn pauses_and_stack_backoff() {
        let mut c = Control::default();
        let t = Instant::now();
        assert!(c.wait_reason("s", t).is_none());
        c.pause(Some("s"), true);
        assert_eq!(c.wait_reason("s", t).as_deref(), Some("paused"));
        c.pause(Some("s"), false);
        c.pause(None, true);
        assert!(c.is_paused("other"));
        c.pause(None, false);
        c.stack_failed("s", &BackoffConfig::default(), t);
        assert!(c.wait_reason("s", t).unwrap().contains("backing off"));
        assert!(c.wait_reason("s", t + Duration::from_secs(2)).is_none());
        c.stack_succeeded("s");
        assert!(c.wait_reason("s", t).is_none());
    }
}
