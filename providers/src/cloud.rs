//! Plumbing every real cloud needs, written once: a client per region made on first use, the
//! search of every region for a resource whose region is unknown, the batching of a refresh into
//! one listing per kind and region, the eventual-consistency window after a create, the retry
//! loop for a read that may not see a fresh resource yet, what "not found" means to a read and
//! to a delete, and the checks of network block sizes. AWS uses it; GCP and Azure are written
//! against it.
//!
//! Paging stays with each cloud's SDK (its paginators collect every page). Error classification
//! ([`FailureClass::of_code`], [`ProviderError::class`]) and the retry policy ([`with_retries`])
//! are the crate's, re-exported here so a cloud finds its plumbing in one place.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chimera_model::Kind;
use chimera_model::kinds::Spec;

use crate::{CloudRef, Observed, ProviderError, Result, Violation};
pub use crate::{FailureClass, with_retries};

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

    /// Where to look for a resource whose region is unknown, each region once: the default
    /// region first (where most resources are), then the regions this process has talked to,
    /// then the configured ones (`configured`: the regions a stack names in its settings).
    pub fn search_order(&self, default: Option<&str>, configured: &[String]) -> Vec<String> {
        let mut in_use = self.regions();
        in_use.sort();
        let mut seen = BTreeSet::new();
        default
            .map(str::to_string)
            .into_iter()
            .chain(in_use)
            .chain(configured.iter().cloned())
            .filter(|r| !r.is_empty() && seen.insert(r.clone()))
            .collect()
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

/// The first answer that is `Some`, asking `regions` in order (see
/// [`RegionClients::search_order`]): finds a resource by id or by tag when its region is
/// unknown. An error stops the search: the answer is unknown, not "absent".
pub async fn first_hit<T, F, Fut>(regions: Vec<String>, mut ask: F) -> Result<Option<T>>
where
    F: FnMut(String) -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    for region in regions {
        if let Some(hit) = ask(region).await? {
            return Ok(Some(hit));
        }
    }
    Ok(None)
}

/// Ids of one kind in one region, looked up together in one filtered listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub kind: Kind,
    pub region: String,
    pub ids: Vec<String>,
}

/// The listings a refresh of `items` needs: per (kind, region), the distinct ids cut into
/// batches of at most `per_call` (what one filter of the cloud's list call accepts), kinds and
/// regions in order, ids in the order first asked. Items whose region is unknown are left out:
/// they need a region search.
pub fn batches(items: &[CloudRef], per_call: usize) -> Vec<Batch> {
    let mut grouped: std::collections::BTreeMap<(Kind, &str), Vec<String>> = Default::default();
    let mut seen = BTreeSet::new();
    for at in items.iter().filter(|at| !at.region.is_empty()) {
        if seen.insert((at.kind, at.region.as_str(), at.id.as_str())) {
            grouped
                .entry((at.kind, at.region.as_str()))
                .or_default()
                .push(at.id.clone());
        }
    }
    grouped
        .into_iter()
        .flat_map(|((kind, region), ids)| {
            ids.chunks(per_call.max(1))
                .map(|chunk| Batch {
                    kind,
                    region: region.to_string(),
                    ids: chunk.to_vec(),
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// What a refresh answers: for each of `items`, in order, what the listings `found` (by kind
/// and id), `None` when it is gone, and a retryable error when something this process created
/// moments ago is not visible yet.
pub fn in_order(
    items: &[CloudRef],
    found: &HashMap<(Kind, String), Observed>,
    window: &ConsistencyWindow,
) -> Result<Vec<Option<Observed>>> {
    items
        .iter()
        .map(|at| match found.get(&(at.kind, at.id.clone())) {
            Some(o) => Ok(Some(o.clone())),
            None => window.absent(&at.id),
        })
        .collect()
}

/// A read by id as the contract wants it: clouds answer a read of something that does not exist
/// with a "not found" error, and for a read that is the answer `None`.
pub fn absent_if_not_found<T>(r: Result<Option<T>>) -> Result<Option<T>> {
    match r {
        Err(e @ ProviderError::Failed { .. }) if e.class() == FailureClass::NotFound => Ok(None),
        other => other,
    }
}

/// A delete as the contract wants it: deleting what is already gone succeeds, and a refusal
/// because something still depends on the resource (`dependency`: the cloud's codes for it) is
/// retryable, since the dependents being deleted go away (an instance's interface in a subnet
/// while the instance terminates).
pub fn deleted(r: Result<()>, dependency: &[&str]) -> Result<()> {
    match r {
        Err(e @ ProviderError::Failed { .. }) if e.class() == FailureClass::NotFound => Ok(()),
        Err(ProviderError::Failed { code, message }) if dependency.contains(&code.as_str()) => {
            Err(ProviderError::Retryable(format!("{code}: {message}")))
        }
        other => other,
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
    match cidr
        .rsplit_once('/')
        .and_then(|(_, p)| p.parse::<u8>().ok())
    {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn at(kind: Kind, id: &str, region: &str) -> CloudRef {
        CloudRef::new(kind, id, region)
    }

    #[test]
    fn batches_group_by_kind_and_region_and_cut_at_the_filter_size() {
        let mut items: Vec<CloudRef> = (0..5)
            .map(|i| at(Kind::Instance, &format!("i-{i}"), "us-east-1"))
            .collect();
        items.push(at(Kind::Instance, "i-w", "eu-west-1"));
        items.push(at(Kind::Subnet, "subnet-1", "us-east-1"));
        // Asked twice, looked up once; an unknown region is left for the search.
        items.push(at(Kind::Instance, "i-0", "us-east-1"));
        items.push(at(Kind::Instance, "i-x", ""));
        let b = batches(&items, 2);
        let shape: Vec<(Kind, &str, usize)> = b
            .iter()
            .map(|b| (b.kind, b.region.as_str(), b.ids.len()))
            .collect();
        assert_eq!(
            shape,
            [
                (Kind::Subnet, "us-east-1", 1),
                (Kind::Instance, "eu-west-1", 1),
                (Kind::Instance, "us-east-1", 2),
                (Kind::Instance, "us-east-1", 2),
                (Kind::Instance, "us-east-1", 1),
            ]
        );
        assert_eq!(b[2].ids, ["i-0", "i-1"], "in the order first asked");
    }

    #[test]
    fn the_search_goes_default_first_then_in_use_then_configured_each_once() {
        let clients: RegionClients<()> = RegionClients::default();
        for r in ["eu-west-1", "us-east-1"] {
            clients.lock().insert(r.into(), ());
        }
        let configured = ["ap-south-1".to_string(), "eu-west-1".to_string()];
        assert_eq!(
            clients.search_order(Some("us-east-1"), &configured),
            ["us-east-1", "eu-west-1", "ap-south-1"]
        );
    }

    #[tokio::test]
    async fn first_hit_stops_at_the_first_answer_and_at_an_error() {
        let regions = || vec!["a".to_string(), "b".to_string(), "c".to_string()];
        let mut asked = Vec::new();
        let hit = first_hit(regions(), |r| {
            asked.push(r.clone());
            async move { Ok((r == "b").then_some(r)) }
        })
        .await;
        assert_eq!(hit, Ok(Some("b".to_string())));
        assert_eq!(asked, ["a", "b"]);
        let unknown = first_hit(regions(), |r| async move {
            if r == "a" {
                Err(ProviderError::Retryable("throttled".into()))
            } else {
                Ok(Some(r))
            }
        })
        .await;
        assert!(unknown.is_err(), "an error is not absence");
    }

    #[test]
    fn answers_are_in_order_and_a_fresh_id_is_not_absent() {
        let window = ConsistencyWindow::default();
        window.created("vpc-new");
        let seen = Observed {
            cloud_id: "vpc-1".into(),
            kind: Kind::Network,
            native_region: "r".into(),
            attrs: Default::default(),
            outputs: Default::default(),
            tags: Default::default(),
        };
        let found = HashMap::from([((Kind::Network, "vpc-1".to_string()), seen)]);
        let items = [
            at(Kind::Network, "vpc-gone", "r"),
            at(Kind::Network, "vpc-1", "r"),
        ];
        let out = in_order(&items, &found, &window).unwrap();
        assert!(out[0].is_none());
        assert_eq!(out[1].as_ref().unwrap().cloud_id, "vpc-1");
        let fresh = [at(Kind::Network, "vpc-new", "r")];
        assert!(matches!(
            in_order(&fresh, &found, &window),
            Err(ProviderError::Retryable(_))
        ));
    }

    #[test]
    fn not_found_is_absence_to_a_read_and_success_to_a_delete() {
        let failed = |code: &str| ProviderError::Failed {
            code: code.into(),
            message: "m".into(),
        };
        assert_eq!(
            absent_if_not_found::<()>(Err(failed("InvalidVpcID.NotFound"))),
            Ok(None)
        );
        assert!(absent_if_not_found::<()>(Err(failed("UnauthorizedOperation"))).is_err());
        let deps = ["DependencyViolation"];
        assert_eq!(
            deleted(Err(failed("InvalidSubnetID.NotFound")), &deps),
            Ok(())
        );
        assert!(matches!(
            deleted(Err(failed("DependencyViolation")), &deps),
            Err(ProviderError::Retryable(m)) if m.starts_with("DependencyViolation")
        ));
        assert_eq!(
            deleted(Err(failed("UnauthorizedOperation")), &deps),
            Err(failed("UnauthorizedOperation"))
        );
    }
}
