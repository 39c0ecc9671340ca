//! A fake of the GCP Compute Engine REST API (v1) on 127.0.0.1: what the `gcp` provider is
//! tested against, and what `chimera-fake-cloud gcp --port N` serves so the multicloud example
//! runs with no Google account.
//!
//! It is written from the public API reference (cloud.google.com/compute/docs/reference/rest/v1)
//! and from recorded response shapes (the GCE fixtures Apache libcloud keeps); no code is copied.
//! It answers, for any project:
//!
//! - `global/networks`, `regions/{r}/subnetworks`, `global/firewalls`, `zones/{z}/instances`
//!   and `zones/{z}/disks`: insert (POST), get, list (`filter`, `maxResults`, `pageToken`),
//!   delete, and the methods Chimera uses: subnetwork and firewall PATCH, instance `setLabels`,
//!   `setTags`, `setMachineType`, `stop`, `start`, `attachDisk`, `detachDisk`, disk
//!   `setLabels` and `resize`; the aggregated lists of instances, disks and subnetworks;
//! - `global/operations`, `regions/{r}/operations` and `zones/{z}/operations`: every mutation
//!   returns an operation that goes PENDING → RUNNING → DONE over [`Knobs::op_delay`], and
//!   takes effect when it is DONE. A failed operation is DONE with `error.errors[]` and
//!   `httpErrorStatusCode`, as Google's are. An insert's resource is there at once, as on GCP:
//!   an instance PROVISIONING (STAGING once its operation is RUNNING), a disk CREATING, the
//!   others as they will be; its operation makes it RUNNING or READY, or removes it if the
//!   insert fails. Until then it takes no other method (400 `resourceNotReady`).
//!
//! What it holds to, as Google does: names are RFC 1035 (`[a-z]([-a-z0-9]{0,61}[a-z0-9])?`);
//! int64/uint64 fields (`id`, `sizeGb`, `targetId`) are decimal strings; fingerprints are URL-safe
//! base64 and change with every change, and `setLabels`, `setTags` and a subnetwork PATCH with a
//! stale one are refused with 412 `conditionNotMet`; `setMachineType` only on a TERMINATED
//! instance; a network's description and a subnetwork's are fixed at creation (only what the
//! reference says PATCH changes may change); an insert repeated with the same `requestId`
//! returns the first operation and does nothing again, and an insert of a name that exists
//! (even one still being made) is 409 `alreadyExists`; errors have Google's shape
//! (`{"error": {"code", "message", "status", "errors": [{"domain", "reason", "message"}]}}`).
//! Zones and machine types per region are a small table ([`ZONES`], [`machine_type_offered`]).
//!
//! Knobs ([`Knobs`]) add latency, 429 `rateLimitExceeded` and 503 `backendError` injection,
//! eventual consistency (a new resource reads as 404 for a while after its operation is DONE),
//! and zones out of capacity (`ZONE_RESOURCE_POOL_EXHAUSTED` operation errors).
//!
//! What it does not do: authentication (any bearer token or none), IAM, quotas, routes, paging
//! of aggregated lists, and filters beyond `field = literal`, `field != literal`, `field eq
//! regex`, `field ne regex` joined by `AND` or parenthesised terms.

mod compute;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use serde_json::Value;

pub use compute::{ZONES, machine_type_offered};

/// How the fake behaves beyond the API's contract.
#[derive(Debug, Clone)]
pub struct Knobs {
    /// How long an operation takes from insert to DONE (PENDING for the first half, RUNNING
    /// for the second). Zero: operations are DONE when returned.
    pub op_delay: Duration,
    /// Added to every request.
    pub latency: Duration,
    /// Every `throttle_every`-th request is answered 429 `rateLimitExceeded` (0: never).
    pub throttle_every: u32,
    /// Every `unavailable_every`-th request is answered 503 `backendError` (0: never).
    pub unavailable_every: u32,
    /// How long a new resource reads as absent (404, left out of lists) after its insert is
    /// DONE: eventual consistency.
    pub invisible_for: Duration,
    /// How long a `requestId` is remembered: a call repeating one within this time gets the
    /// first call's operation, later it is a new call (GCP, too, forgets them after a while).
    pub request_ids_kept: Duration,
    /// Zones whose instance inserts fail with `ZONE_RESOURCE_POOL_EXHAUSTED`.
    pub exhausted_zones: Vec<String>,
    /// Machine types accepted in every zone besides GCP's (e.g. the AWS-shaped names a
    /// provider-neutral suite uses).
    pub extra_machine_types: Vec<String>,
    /// Disk types accepted besides GCP's.
    pub extra_disk_types: Vec<String>,
}

impl Default for Knobs {
    fn default() -> Self {
        Knobs {
            op_delay: Duration::from_millis(20),
            latency: Duration::ZERO,
            throttle_every: 0,
            unavailable_every: 0,
            invisible_for: Duration::ZERO,
            request_ids_kept: Duration::from_secs(3600),
            exhausted_zones: Vec::new(),
            extra_machine_types: Vec::new(),
            extra_disk_types: Vec::new(),
        }
    }
}

pub(crate) struct Shared {
    cloud: Mutex<compute::Cloud>,
    knobs: Knobs,
}

impl Shared {
    fn cloud(&self) -> std::sync::MutexGuard<'_, compute::Cloud> {
        self.cloud.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The fake, serving on an ephemeral port of 127.0.0.1 until dropped.
pub struct FakeGcp {
    /// `http://127.0.0.1:PORT`: the endpoint to give the Compute client.
    pub url: String,
    shared: Arc<Shared>,
    _server: crate::loopback::Served,
}

impl FakeGcp {
    /// Serves a fake with `knobs` from a thread of its own.
    pub fn start(knobs: Knobs) -> FakeGcp {
        let bound = crate::loopback::bind();
        let url = bound.url.clone();
        let shared = Arc::new(Shared {
            cloud: Mutex::new(compute::Cloud::default()),
            knobs,
        });
        let server = bound.serve("fake-gcp", app(shared.clone()));
        FakeGcp {
            url,
            shared,
            _server: server,
        }
    }

    /// The live resources of a collection in a project, as the API shows them, by name:
    /// `collection` is `global/networks`, `regions/us-east1/subnetworks`, `zones/us-east1-b/
    /// instances`, … (a resource whose insert is not DONE is there in its transitional state;
    /// other operations not yet DONE have not taken effect).
    pub fn resources(&self, project: &str, collection: &str) -> BTreeMap<String, Value> {
        let mut c = self.shared.cloud();
        c.advance();
        c.collection(project, collection)
    }

    /// Every live resource whose path (`projects/p/zones/z/instances/n`) ends in one of the
    /// `kinds` (`instances`, `disks`, …), in every scope: for inventories across zones.
    pub fn all(&self, kind: &str) -> BTreeMap<String, Value> {
        let mut c = self.shared.cloud();
        c.advance();
        c.all(kind)
    }

    /// Changes the resource at `path` (`projects/p/global/networks/n`) behind the API's back, as
    /// someone in the console would; its fingerprints change. `false`: no such resource.
    pub fn mutate(&self, path: &str, change: impl FnOnce(&mut Value)) -> bool {
        let mut c = self.shared.cloud();
        c.advance();
        c.mutate(path, change)
    }

    /// How many requests were answered with an injected 429 or 503 so far.
    pub fn injected(&self) -> u64 {
        self.shared.cloud().injected
    }

    /// How many requests of each method (`POST instances`, `GET operations`, …) it has served.
    pub fn requests(&self) -> BTreeMap<String, u64> {
        self.shared.cloud().requests.clone()
    }

    /// How many inserts it has carried out (a repeated `requestId` is not counted again).
    pub fn inserts(&self) -> u64 {
        self.shared.cloud().inserts
    }
}

fn app(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/compute/v1/projects/{project}/{*rest}", any(handle))
        .fallback(|| async {
            compute::error(
                StatusCode::NOT_FOUND,
                "notFound",
                "the fake serves only /compute/v1/projects/{project}/…",
            )
        })
        .with_state(shared)
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    Path((project, rest)): Path<(String, String)>,
    Query(query): Query<BTreeMap<String, String>>,
    method: Method,
    body: Bytes,
) -> Response {
    if !shared.knobs.latency.is_zero() {
        tokio::time::sleep(shared.knobs.latency).await;
    }
    let body = if body.is_empty() {
        Value::Null
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => {
                return compute::error(
                    StatusCode::BAD_REQUEST,
                    "parseError",
                    &format!("Invalid JSON payload received. {e}"),
                );
            }
        }
    };
    let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let mut cloud = shared.cloud();
    cloud.count(&method, &segments);
    if let Some(r) = cloud.inject(&shared.knobs) {
        return r;
    }
    cloud.advance();
    match cloud.serve(&shared.knobs, &project, &method, &segments, &query, body) {
        Ok((status, v)) => (status, axum::Json(v)).into_response(),
        Err(r) => r,
    }
}

/// `chimera-fake-cloud gcp [--port N] [--op-delay-ms N] [--latency-ms N] [--throttle-every N]
/// [--unavailable-every N]`: serves the fake on 127.0.0.1 until interrupted. Returns the exit
/// code.
pub fn main(args: Vec<String>) -> i32 {
    let mut port: u16 = 8085;
    let mut knobs = Knobs::default();
    let mut it = args.into_iter();
    while let Some(flag) = it.next() {
        let value = it.next();
        let num = |v: Option<String>| -> Option<u64> { v.and_then(|v| v.parse().ok()) };
        let ok = match flag.as_str() {
            "--port" => num(value)
                .and_then(|p| u16::try_from(p).ok())
                .map(|p| port = p),
            "--op-delay-ms" => num(value).map(|n| knobs.op_delay = Duration::from_millis(n)),
            "--latency-ms" => num(value).map(|n| knobs.latency = Duration::from_millis(n)),
            "--throttle-every" => num(value)
                .and_then(|n| u32::try_from(n).ok())
                .map(|n| knobs.throttle_every = n),
            "--unavailable-every" => num(value)
                .and_then(|n| u32::try_from(n).ok())
                .map(|n| knobs.unavailable_every = n),
            _ => None,
        };
        if ok.is_none() {
            eprintln!(
                "usage: chimera-fake-cloud gcp [--port N] [--op-delay-ms N] [--latency-ms N] [--throttle-every N] [--unavailable-every N]\n`{flag}` is unknown or lacks a number"
            );
            return 2;
        }
    }
    let listener = match std::net::TcpListener::bind(("127.0.0.1", port)) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("chimera-fake-cloud gcp: cannot listen on 127.0.0.1:{port}: {e}");
            return 1;
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("chimera-fake-cloud gcp: {e}");
            return 1;
        }
    };
    let shared = Arc::new(Shared {
        cloud: Mutex::new(compute::Cloud::default()),
        knobs,
    });
    println!(
        "fake GCP Compute API on http://127.0.0.1:{port} (any project; set providers.gcp = {{ project = \"demo\", endpoint = \"http://127.0.0.1:{port}\" }})"
    );
    let served = rt.block_on(async move {
        let _ = listener.set_nonblocking(true);
        let listener = tokio::net::TcpListener::from_std(listener)?;
        axum::serve(listener, app(shared)).await
    });
    match served {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("chimera-fake-cloud gcp: {e}");
            1
        }
    }
}
