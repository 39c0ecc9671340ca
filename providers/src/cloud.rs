//! Plumbing every real cloud needs, written once: a client per region made on first use, the
//! eventual-consistency window after a create, the retry loop for a read that may not see a
//! fresh resource yet, and the checks of network block sizes. AWS uses it; GCP and Azure are
//! written against it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chimera_model::kinds::Spec;

use crate::{ProviderError, Result, Violation};

/// One client per region, made on first use and shared afterwards (clients hold connection
/// pools: making one per call would reconnect every time).
pub struct RegionClients<C> {
    clients: Mutex<HashMap<String, C>>,
}

impl<C> Default for RegionClients<C> {
    fn default() -> Self {
        RegionClients {
            clients: Mutex::default(),
        }
    }
}

impl<C: Clone> RegionClients<C> {
    /// The client of `region`, made by `make` the first time.
    pub async fn get<F, Fut>(&self, region: &str, make: F) -> Result<C>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<C>>,
    {
        if region.is_empty() {
            return Err(ProviderError::Failed {
                code: "NoRegion".into(),
                message: "the resource has no region".into(),
            });
        }
        if let Some(c) = self.lock().get(region) {
            return Ok(c.clone());
        }
        let client = make().await?;
        Ok(self
            .lock()
            .entry(region.to_string())
            .or_insert(client)
            .clone())
    }

    /// The regions a client was made for.
    pub fn regions(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, C>> {
        self.clients.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Ids this process created lately: for them, "not found" is eventual consistency, not
/// absence, for [`ConsistencyWindow::WINDOW`].
#[derive(Default)]
pub struct ConsistencyWindow {
    recent: Mutex<HashMap<String, Instant>>,
}

impl ConsistencyWindow {
    /// How long after a create "not found" is taken for eventual consistency.
    pub const WINDOW: Duration = Duration::from_secs(60);

    /// `id` was just created.
    pub fn created(&self, id: &str) {
        let mut r = self.lock();
        r.retain(|_, t| t.elapsed() < Self::WINDOW);
        r.insert(id.to_string(), Instant::now());
    }

    /// `id` is being deleted: from now on absence is absence.
    pub fn forget(&self, id: &str) {
        self.lock().remove(id);
    }

    pub fn is_recent(&self, id: &str) -> bool {
        self.lock()
            .get(id)
            .is_some_and(|t| t.elapsed() < Self::WINDOW)
    }

    /// What a read that did not find `id` means: absence, or (created moments ago) a
    /// retryable error.
    pub fn absent<T>(&self, id: &str) -> Result<Option<T>> {
        if self.is_recent(id) {
            Err(ProviderError::Retryable(format!(
                "{id} was created moments ago and is not visible yet"
            )))
        } else {
            Ok(None)
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        self.recent.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Retries a read that may not see a fresh resource yet (a few short tries, ~6 s in all).
pub async fn with_consistency<T, F, Fut>(mut read: F) -> Result<Option<T>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let mut delay = Duration::from_millis(50);
    for _ in 0..8 {
        if let Some(v) = read().await? {
            return Ok(Some(v));
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
    read().await
}

/// Network and subnet blocks outside the prefix lengths a cloud allocates (`prefixes`).
pub fn block_sizes(spec: &Spec, prefixes: std::ops::RangeInclusive<u8>) -> Vec<Violation> {
    let (cidr, what) = match spec {
        Spec::Network(n) => (&n.cidr, "network"),
        Spec::Subnet(s) => (&s.cidr, "subnet"),
        _ => return Vec::new(),
    };
    match cidr.rsplit_once('/').and_then(|(_, p)| p.parse::<u8>().ok()) {
        Some(p) if !prefixes.contains(&p) => vec![Violation::new(
            "cidr",
            format!(
                "a {what} block must be between /{} and /{} here, got {cidr}; choose a block of that size",
                prefixes.start(),
                prefixes.end()
            ),
        )],
        _ => Vec::new(),
    }
}
