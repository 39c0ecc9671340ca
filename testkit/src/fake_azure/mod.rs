//! A fake of Azure Resource Manager (ARM) on 127.0.0.1, written from ARM's RPC documentation
//! (`azure-resource-manager-rpc`: the async-operation protocol, the error shape, throttling) and
//! the REST references of the resources Chimera's Azure provider uses. Azure is tested against
//! this fake, not against Microsoft.
//!
//! What it serves, under `/subscriptions/{subscription}` (any subscription id):
//! - resource groups (`resourcegroups/{rg}`): PUT, GET, PATCH, DELETE (202, deletes what is in
//!   it), a listing of what a group holds (`…/resources`);
//! - `Microsoft.Network`: virtual networks with their subnets (child resources, also listed inline
//!   in the network), network security groups with their rules, network interfaces (a private
//!   address per interface, assigned from the subnet);
//! - `Microsoft.Compute`: virtual machines (`instanceView`, `deallocate`, `powerOff`, `start`,
//!   `restart`; the size changes only while deallocated; data disks attached through
//!   `storageProfile.dataDisks`, with an `etag` and `If-Match`), managed disks (grow only; not
//!   deleted while attached);
//! - tags at any scope (`{id}/providers/Microsoft.Resources/tags/default`, Merge/Replace/Delete)
//!   and the subscription's generic listing (`resources?$filter=tagName eq … and tagValue eq …`).
//!
//! How it answers, as ARM does: `api-version` is required on every request; a PUT answers 201 (new)
//! or 200 with a transitional `provisioningState` and an `Azure-AsyncOperation` header; a disk's
//! PUT answers 202 with `Location` and the disk reads as 404 until the operation is done; deletes
//! and VM actions answer 202 with `Location` and `Azure-AsyncOperation` (the `Location` URL answers
//! 202 until done); errors are `{"error": {"code", "message"}}`; refusals of things in use are
//! 400/409 with ARM's codes. [`Knobs`] add latency, operation durations, `Retry-After` values,
//! 429 throttling and sizes a region lacks.
//!
//! What it leaves out: authentication (any bearer token or none), OS disk resources (a VM's OS
//! disk is part of the VM here and goes with it), public IP addresses, paging (every listing is one
//! page, `nextLink` absent).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use crate::loopback::{self, Served};

/// How the fake behaves beyond the happy path.
#[derive(Debug, Clone)]
pub struct Knobs {
    /// Added to every response (a region's round trip and ARM's own time).
    pub latency: Duration,
    /// How long an asynchronous operation (a create, a delete, a VM action) stays in progress.
    pub op_duration: Duration,
    /// The `Retry-After` (seconds) of 202 answers and of operations in progress.
    pub retry_after_secs: u64,
    /// Every Nth request is answered 429 with `Retry-After` (0: never).
    pub throttle_every: u64,
    /// The `Retry-After` (seconds) of a 429.
    pub throttle_retry_after_secs: u64,
    /// `(location, vmSize)` pairs the region does not offer: a VM PUT is refused with
    /// `SkuNotAvailable`.
    pub unavailable_sizes: Vec<(String, String)>,
}

impl Default for Knobs {
    fn default() -> Self {
        Knobs {
            latency: Duration::ZERO,
            op_duration: Duration::from_millis(30),
            retry_after_secs: 1,
            throttle_every: 0,
            throttle_retry_after_secs: 1,
            unavailable_sizes: Vec::new(),
        }
    }
}

/// The fake, serving until dropped.
pub struct FakeAzure {
    /// `http://127.0.0.1:PORT`: the ARM endpoint.
    pub endpoint: String,
    cloud: Arc<Mutex<Cloud>>,
    _served: Served,
}

impl FakeAzure {
    pub fn start(knobs: Knobs) -> FakeAzure {
        let bound = loopback::bind();
        let endpoint = bound.url.clone();
        let cloud = Arc::new(Mutex::new(Cloud::new(knobs, endpoint.clone())));
        let served = bound.serve("fake-azure", app(cloud.clone()));
        FakeAzure {
            endpoint,
            cloud,
            _served: served,
        }
    }

    /// Requests answered 429 so far.
    pub fn throttled(&self) -> u64 {
        self.lock().throttled
    }

    /// Requests received so far.
    pub fn requests(&self) -> u64 {
        self.lock().requests
    }

    /// The ids of every resource that exists (subnets included; resource groups not), sorted.
    pub fn resource_ids(&self) -> Vec<String> {
        let mut c = self.lock();
        c.settle();
        c.res.values().map(|r| r.id.clone()).collect()
    }

    /// The names of the resource groups that exist and are not being deleted.
    pub fn resource_groups(&self) -> Vec<String> {
        let mut c = self.lock();
        c.settle();
        c.groups
            .values()
            .filter(|g| g.deleting.is_none())
            .map(|g| g.name.clone())
            .collect()
    }

    /// How many live resources of ARM type `ty` (`Microsoft.Compute/virtualMachines`) carry the
    /// tag `key = value`.
    pub fn count_tagged(&self, ty: &str, key: &str, value: &str) -> usize {
        let mut c = self.lock();
        c.settle();
        c.res
            .values()
            .filter(|r| r.ty.eq_ignore_ascii_case(ty))
            .filter(|r| r.tags.get(key).and_then(Value::as_str) == Some(value))
            .count()
    }

    /// Sets tag `key = value` on resource `id` (a subnet's tags live on its network, see the
    /// provider), as someone in the portal would.
    pub fn set_tag(&self, id: &str, key: &str, value: &str) -> Result<(), String> {
        let mut c = self.lock();
        c.settle();
        let r = c
            .res
            .get_mut(&id.to_ascii_lowercase())
            .ok_or_else(|| format!("no resource {id}"))?;
        r.tags.insert(key.into(), Value::String(value.into()));
        Ok(())
    }

    /// Sets property `path` (dot-separated, under `properties`) of resource `id`, as a change
    /// in the portal would (a VM resized there: `hardwareProfile.vmSize`).
    pub fn set_property(&self, id: &str, path: &str, value: Value) -> Result<(), String> {
        let mut c = self.lock();
        c.settle();
        let r = c
            .res
            .get_mut(&id.to_ascii_lowercase())
            .ok_or_else(|| format!("no resource {id}"))?;
        let mut at = &mut r.props;
        let parts: Vec<&str> = path.split('.').collect();
        for p in &parts[..parts.len() - 1] {
            at = at
                .entry(p.to_string())
                .or_insert_with(|| json!({}))
                .as_object_mut()
                .ok_or_else(|| format!("`{p}` is not an object"))?;
        }
        at.insert(parts[parts.len() - 1].to_string(), value);
        Ok(())
    }

    /// Creates an untagged virtual network outside Chimera (to import), returning its id.
    pub fn create_network(&self, group: &str, name: &str, location: &str, cidr: &str) -> String {
        let mut c = self.lock();
        c.settle();
        let key = group.to_ascii_lowercase();
        c.groups.entry(key.clone()).or_insert_with(|| Group {
            name: group.into(),
            location: location.into(),
            tags: Map::new(),
            deleting: None,
        });
        let id = format!(
            "/subscriptions/{}/resourceGroups/{group}/providers/Microsoft.Network/virtualNetworks/{name}",
            c.subscription
        );
        let now = Instant::now();
        c.res.insert(
            id.to_ascii_lowercase(),
            Res {
                id: id.clone(),
                ty: VNET.into(),
                name: name.into(),
                group: key,
                location: location.into(),
                tags: Map::new(),
                zones: None,
                props: json!({ "addressSpace": { "addressPrefixes": [cidr] } })
                    .as_object()
                    .cloned()
                    .unwrap_or_default(),
                etag: 1,
                ready_at: now,
                hidden_until: None,
                deleting: None,
                transitional: "Succeeded",
            },
        );
        id
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cloud> {
        self.cloud.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// `chimera-fake-cloud azure [--port N] [--latency-ms N] [--op-ms N] [--throttle-every N]
/// [--unavailable LOCATION:SIZE]…`: serves the fake on 127.0.0.1 until killed.
pub fn main(args: Vec<String>) -> i32 {
    let mut port: u16 = 0;
    let mut knobs = Knobs::default();
    let mut it = args.into_iter();
    let usage = "usage: chimera-fake-cloud azure [--port N] [--latency-ms N] [--op-ms N] [--throttle-every N] [--unavailable LOCATION:SIZE]";
    while let Some(a) = it.next() {
        let Some(v) = it.next() else {
            eprintln!("{a} needs a value\n{usage}");
            return 2;
        };
        let num = || {
            v.parse::<u64>()
                .map_err(|_| format!("{a}: not a number: {v}"))
        };
        let r = match a.as_str() {
            "--port" => v
                .parse::<u16>()
                .map(|p| port = p)
                .map_err(|_| format!("--port: not a port: {v}")),
            "--latency-ms" => num().map(|n| knobs.latency = Duration::from_millis(n)),
            "--op-ms" => num().map(|n| knobs.op_duration = Duration::from_millis(n)),
            "--throttle-every" => num().map(|n| knobs.throttle_every = n),
            "--unavailable" => match v.split_once(':') {
                Some((l, s)) => {
                    knobs.unavailable_sizes.push((l.into(), s.into()));
                    Ok(())
                }
                None => Err(format!("--unavailable takes LOCATION:SIZE, got {v}")),
            },
            _ => Err(format!("unknown option {a}")),
        };
        if let Err(e) = r {
            eprintln!("{e}\n{usage}");
            return 2;
        }
    }
    let listener = match std::net::TcpListener::bind(("127.0.0.1", port)) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("cannot listen on 127.0.0.1:{port}: {e}");
            return 1;
        }
    };
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let endpoint = format!("http://{addr}");
    println!("fake Azure Resource Manager on {endpoint}");
    println!(
        "use it with: providers = {{ azure = {{ endpoint = \"{endpoint}\", subscription = \"00000000-0000-0000-0000-000000000000\", credential = \"none\" }} }}"
    );
    let cloud = Arc::new(Mutex::new(Cloud::new(knobs, endpoint)));
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start a runtime: {e}");
            return 1;
        }
    };
    rt.block_on(async move {
        if let Err(e) = listener.set_nonblocking(true) {
            eprintln!("{e}");
            return 1;
        }
        let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
            return 1;
        };
        match axum::serve(listener, app(cloud)).await {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("the fake stopped: {e}");
                1
            }
        }
    })
}

const VNET: &str = "Microsoft.Network/virtualNetworks";
const SUBNET: &str = "Microsoft.Network/virtualNetworks/subnets";
const NSG: &str = "Microsoft.Network/networkSecurityGroups";
const NIC: &str = "Microsoft.Network/networkInterfaces";
const VM: &str = "Microsoft.Compute/virtualMachines";
const DISK: &str = "Microsoft.Compute/disks";
/// The types the fake serves, as `(namespace, type)`.
const TYPES: &[&str] = &[VNET, NSG, NIC, VM, DISK];
/// ARM's limit of tags per resource.
const MAX_TAGS: usize = 50;

fn app(cloud: Arc<Mutex<Cloud>>) -> Router {
    Router::new().fallback(handle).with_state(cloud)
}

struct Group {
    name: String,
    location: String,
    tags: Map<String, Value>,
    deleting: Option<Instant>,
}

struct Res {
    id: String,
    ty: String,
    name: String,
    /// The resource group, lowercase.
    group: String,
    location: String,
    tags: Map<String, Value>,
    zones: Option<Value>,
    /// `properties`, without `provisioningState` (derived).
    props: Map<String, Value>,
    etag: u64,
    /// Until then `provisioningState` is `transitional`.
    ready_at: Instant,
    /// A 202 create: 404 until then.
    hidden_until: Option<Instant>,
    /// Being deleted: gone at that instant.
    deleting: Option<Instant>,
    transitional: &'static str,
}

struct Op {
    done_at: Instant,
    /// The resource a PUT's `Location` poll answers with once done.
    result: Option<String>,
    error: Option<(String, String)>,
}

struct Cloud {
    knobs: Knobs,
    endpoint: String,
    subscription: String,
    requests: u64,
    throttled: u64,
    groups: BTreeMap<String, Group>,
    res: BTreeMap<String, Res>,
    ops: HashMap<String, Op>,
    next_op: u64,
    /// VM power states by lowercase id, with when the last transition completes.
    power: HashMap<String, (&'static str, &'static str, Instant)>,
    next_ip: HashMap<String, u32>,
}

/// An ARM error answer.
struct ArmError(StatusCode, String, String);

type Answer = Result<Response, ArmError>;

fn err(status: StatusCode, code: &str, message: impl Into<String>) -> ArmError {
    ArmError(status, code.into(), message.into())
}

impl IntoResponse for ArmError {
    fn into_response(self) -> Response {
        let body = json!({ "error": { "code": self.1, "message": self.2 } });
        let mut r = (self.0, axum::Json(body)).into_response();
        r.headers_mut()
            .insert("x-ms-failure-cause", HeaderValue::from_static("gateway"));
        r
    }
}

fn not_found(id: &str) -> ArmError {
    err(
        StatusCode::NOT_FOUND,
        "ResourceNotFound",
        format!("The Resource '{id}' was not found."),
    )
}

fn bad(code: &str, message: impl Into<String>) -> ArmError {
    err(StatusCode::BAD_REQUEST, code, message)
}

fn conflict(code: &str, message: impl Into<String>) -> ArmError {
    err(StatusCode::CONFLICT, code, message)
}

fn with_json(status: StatusCode, body: Value) -> Response {
    (status, axum::Json(body)).into_response()
}

async fn handle(
    State(cloud): State<Arc<Mutex<Cloud>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let latency = {
        let c = cloud.lock().unwrap_or_else(|e| e.into_inner());
        c.knobs.latency
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let mut c = cloud.lock().unwrap_or_else(|e| e.into_inner());
    c.requests += 1;
    if c.knobs.throttle_every > 0 && c.requests.is_multiple_of(c.knobs.throttle_every) {
        c.throttled += 1;
        let mut r = err(
            StatusCode::TOO_MANY_REQUESTS,
            "TooManyRequests",
            "The request is being throttled as the limit has been reached for operation type.",
        )
        .into_response();
        r.headers_mut()
            .insert("Retry-After", c.knobs.throttle_retry_after_secs.into());
        return r;
    }
    c.settle();
    let query = parse_query(uri.query().unwrap_or_default());
    if !query.contains_key("api-version") {
        return bad(
            "MissingApiVersionParameter",
            "The api-version query parameter (?api-version=) is required for all requests.",
        )
        .into_response();
    }
    let body: Option<Value> = if body.is_empty() {
        None
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => Some(v),
            Err(e) => {
                return bad(
                    "InvalidRequestContent",
                    format!("The request content was invalid: {e}"),
                )
                .into_response();
            }
        }
    };
    let segs: Vec<&str> = uri.path().split('/').filter(|s| !s.is_empty()).collect();
    match c.route(&method, &segs, &query, &headers, body) {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

fn parse_query(q: &str) -> HashMap<String, String> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// Percent-decoding (and `+` as a space) of a query component.
fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn eq(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

impl Cloud {
    fn new(knobs: Knobs, endpoint: String) -> Cloud {
        Cloud {
            knobs,
            endpoint,
            subscription: "00000000-0000-0000-0000-000000000000".into(),
            requests: 0,
            throttled: 0,
            groups: BTreeMap::new(),
            res: BTreeMap::new(),
            ops: HashMap::new(),
            next_op: 0,
            power: HashMap::new(),
            next_ip: HashMap::new(),
        }
    }

    /// Applies what finished: deletes whose time came (and their effects on what referred to
    /// the deleted resource), and deleted resource groups.
    fn settle(&mut self) {
        let now = Instant::now();
        let gone_groups: Vec<String> = self
            .groups
            .iter()
            .filter(|(_, g)| g.deleting.is_some_and(|t| t <= now))
            .map(|(k, _)| k.clone())
            .collect();
        for g in gone_groups {
            self.groups.remove(&g);
            self.res.retain(|_, r| r.group != g);
        }
        let gone: Vec<String> = self
            .res
            .iter()
            .filter(|(_, r)| r.deleting.is_some_and(|t| t <= now))
            .map(|(k, _)| k.clone())
            .collect();
        for key in gone {
            let Some(r) = self.res.remove(&key) else {
                continue;
            };
            if eq(&r.ty, VNET) {
                let prefix = format!("{key}/subnets/");
                self.res.retain(|k, _| !k.starts_with(&prefix));
            }
            if eq(&r.ty, VM) {
                self.power.remove(&key);
                // Data disks are detached (their default deleteOption), the interface freed.
                for other in self.res.values_mut() {
                    let refers =
                        |v: Option<&Value>| v.and_then(Value::as_str).is_some_and(|s| eq(s, &r.id));
                    if eq(&other.ty, DISK) && refers(other.props.get("managedBy")) {
                        other.props.remove("managedBy");
                    }
                    if eq(&other.ty, NIC)
                        && refers(other.props.get("virtualMachine").and_then(|v| v.get("id")))
                    {
                        other.props.remove("virtualMachine");
                    }
                }
            }
        }
        self.ops
            .retain(|_, o| o.done_at + Duration::from_secs(600) > now);
    }

    fn route(
        &mut self,
        method: &Method,
        segs: &[&str],
        query: &HashMap<String, String>,
        headers: &HeaderMap,
        body: Option<Value>,
    ) -> Answer {
        let path = segs.join("/");
        let unknown = || {
            err(
                StatusCode::NOT_FOUND,
                "InvalidResourceType",
                format!("The resource type could not be found for '/{path}'."),
            )
        };
        if segs.len() < 2 || !eq(segs[0], "subscriptions") {
            return Err(unknown());
        }
        let sub = segs[1];
        let rest = &segs[2..];
        match rest {
            [r] if eq(r, "resources") && *method == Method::GET => {
                self.list(None, query.get("$filter").map(String::as_str))
            }
            [r] if eq(r, "resourcegroups") && *method == Method::GET => Ok(with_json(
                StatusCode::OK,
                json!({ "value": self.groups.values().filter(|g| g.deleting.is_none()).map(|g| self.group_json(g)).collect::<Vec<_>>() }),
            )),
            [r, g] if eq(r, "resourcegroups") => self.group(method, g, body),
            [r, g, x]
                if eq(r, "resourcegroups") && eq(x, "resources") && *method == Method::GET =>
            {
                self.require_group(g)?;
                self.list(Some(g), query.get("$filter").map(String::as_str))
            }
            [p, ns, ty] if eq(p, "providers") && *method == Method::GET => {
                let ty = format!("{ns}/{ty}");
                let items: Vec<Value> = self
                    .res
                    .values()
                    .filter(|x| eq(&x.ty, &ty) && self.visible(x))
                    .map(|x| self.res_json(x))
                    .collect();
                Ok(with_json(StatusCode::OK, json!({ "value": items })))
            }
            [p, ns, l, _loc, kind, op] if eq(p, "providers") && eq(l, "locations") => {
                let _ = ns;
                self.poll(kind, op)
            }
            [r, g, p, ns, ty]
                if eq(r, "resourcegroups") && eq(p, "providers") && *method == Method::GET =>
            {
                self.require_group(g)?;
                let ty = format!("{ns}/{ty}");
                let items: Vec<Value> = self
                    .res
                    .values()
                    .filter(|x| eq(&x.group, g) && eq(&x.ty, &ty) && self.visible(x))
                    .map(|x| self.res_json(x))
                    .collect();
                Ok(with_json(StatusCode::OK, json!({ "value": items })))
            }
            [r, g, p, ns, ty, name, rest @ ..] if eq(r, "resourcegroups") && eq(p, "providers") => {
                let ty = format!("{ns}/{ty}");
                let Some(ty) = TYPES.iter().find(|t| eq(t, &ty)) else {
                    return Err(unknown());
                };
                let id = format!("/subscriptions/{sub}/resourceGroups/{g}/providers/{ty}/{name}");
                match rest {
                    [] => self.resource(method, g, ty, name, &id, query, headers, body),
                    [p2, ns2, t2, d]
                        if eq(p2, "providers")
                            && eq(ns2, "Microsoft.Resources")
                            && eq(t2, "tags")
                            && eq(d, "default") =>
                    {
                        self.tags_at(method, &id, body)
                    }
                    [c, cname] if eq(ty, VNET) && eq(c, "subnets") => {
                        self.subnet(method, &id, cname, body)
                    }
                    [c] if eq(ty, VNET) && eq(c, "subnets") && *method == Method::GET => {
                        self.existing(&id)?;
                        Ok(with_json(
                            StatusCode::OK,
                            json!({ "value": self.subnets_of(&id) }),
                        ))
                    }
                    [v] if eq(ty, VM) && eq(v, "instanceView") && *method == Method::GET => {
                        let key = self.existing(&id)?;
                        Ok(with_json(StatusCode::OK, self.instance_view(&key)))
                    }
                    [action] if eq(ty, VM) && *method == Method::POST => {
                        self.vm_action(&id, action)
                    }
                    _ => Err(unknown()),
                }
            }
            _ => Err(unknown()),
        }
    }

    fn visible(&self, r: &Res) -> bool {
        r.hidden_until.is_none_or(|t| t <= Instant::now())
    }

    fn require_group(&self, g: &str) -> Result<(), ArmError> {
        match self.groups.get(&g.to_ascii_lowercase()) {
            Some(_) => Ok(()),
            None => Err(err(
                StatusCode::NOT_FOUND,
                "ResourceGroupNotFound",
                format!("Resource group '{g}' could not be found."),
            )),
        }
    }

    /// The lowercase key of a visible resource `id`, or ARM's 404.
    fn existing(&self, id: &str) -> Result<String, ArmError> {
        let key = id.to_ascii_lowercase();
        match self.res.get(&key) {
            Some(r) if self.visible(r) => Ok(key),
            _ => Err(not_found(id)),
        }
    }

    fn op(&mut self, location: &str, ns: &str, result: Option<String>) -> (String, String) {
        self.next_op += 1;
        let id = format!("op-{:08}", self.next_op);
        self.ops.insert(
            id.clone(),
            Op {
                done_at: Instant::now() + self.knobs.op_duration,
                result,
                error: None,
            },
        );
        let base = format!(
            "{}/subscriptions/{}/providers/{ns}/locations/{location}",
            self.endpoint, self.subscription
        );
        (
            format!("{base}/operations/{id}?api-version=2024-07-01"),
            format!("{base}/operationResults/{id}?api-version=2024-07-01"),
        )
    }

    /// A 202 with both polling headers.
    fn accepted(&mut self, location: &str, ns: &str, result: Option<String>) -> Response {
        let (async_op, loc) = self.op(location, ns, result);
        let mut r = StatusCode::ACCEPTED.into_response();
        let h = r.headers_mut();
        h.insert("Azure-AsyncOperation", header(&async_op));
        h.insert("Location", header(&loc));
        h.insert("Retry-After", self.knobs.retry_after_secs.into());
        r
    }

    fn poll(&mut self, kind: &str, id: &str) -> Answer {
        let Some(op) = self.ops.get(id) else {
            return Err(not_found(id));
        };
        let done = op.done_at <= Instant::now();
        if eq(kind, "operations") {
            let body = match (&op.error, done) {
                (_, false) => json!({ "id": id, "name": id, "status": "InProgress" }),
                (Some((code, message)), true) => {
                    json!({ "id": id, "name": id, "status": "Failed", "error": { "code": code, "message": message } })
                }
                (None, true) => json!({ "id": id, "name": id, "status": "Succeeded" }),
            };
            let mut r = with_json(StatusCode::OK, body);
            if !done {
                r.headers_mut()
                    .insert("Retry-After", self.knobs.retry_after_secs.into());
            }
            return Ok(r);
        }
        if eq(kind, "operationResults") {
            if !done {
                let mut r = StatusCode::ACCEPTED.into_response();
                let loc = format!(
                    "{}/subscriptions/{}/providers/Microsoft.Resources/locations/any/operationResults/{id}?api-version=2024-07-01",
                    self.endpoint, self.subscription
                );
                r.headers_mut().insert("Location", header(&loc));
                r.headers_mut()
                    .insert("Retry-After", self.knobs.retry_after_secs.into());
                return Ok(r);
            }
            if let Some((code, message)) = &op.error {
                return Err(bad(code, message.clone()));
            }
            return Ok(match op.result.clone() {
                Some(key) => match self.res.get(&key) {
                    Some(r) => with_json(StatusCode::OK, self.res_json(r)),
                    None => StatusCode::NO_CONTENT.into_response(),
                },
                None => StatusCode::NO_CONTENT.into_response(),
            });
        }
        Err(not_found(id))
    }

    fn group_json(&self, g: &Group) -> Value {
        json!({
            "id": format!("/subscriptions/{}/resourceGroups/{}", self.subscription, g.name),
            "name": g.name,
            "type": "Microsoft.Resources/resourceGroups",
            "location": g.location,
            "tags": g.tags,
            "properties": { "provisioningState": if g.deleting.is_some() { "Deleting" } else { "Succeeded" } },
        })
    }

    fn group(&mut self, method: &Method, name: &str, body: Option<Value>) -> Answer {
        let key = name.to_ascii_lowercase();
        match *method {
            Method::GET => match self.groups.get(&key) {
                Some(g) => Ok(with_json(StatusCode::OK, self.group_json(g))),
                None => Err(err(
                    StatusCode::NOT_FOUND,
                    "ResourceGroupNotFound",
                    format!("Resource group '{name}' could not be found."),
                )),
            },
            Method::PUT | Method::PATCH => {
                let body = body.unwrap_or_default();
                if let Some(g) = self.groups.get(&key)
                    && g.deleting.is_some()
                {
                    return Err(conflict(
                        "ResourceGroupBeingDeleted",
                        format!(
                            "The resource group '{name}' is in deprovisioning state and cannot perform this operation."
                        ),
                    ));
                }
                let tags = tags_of(&body)?;
                let existed = self.groups.contains_key(&key);
                if !existed && *method == Method::PATCH {
                    return Err(err(
                        StatusCode::NOT_FOUND,
                        "ResourceGroupNotFound",
                        format!("Resource group '{name}' could not be found."),
                    ));
                }
                let location = body
                    .get("location")
                    .and_then(Value::as_str)
                    .map(str::to_string);
                if !existed && location.is_none() {
                    return Err(bad(
                        "LocationRequired",
                        "The location property is required for this definition.",
                    ));
                }
                let g = self.groups.entry(key.clone()).or_insert_with(|| Group {
                    name: name.into(),
                    location: location.clone().unwrap_or_default(),
                    tags: Map::new(),
                    deleting: None,
                });
                if let Some(t) = tags {
                    g.tags = t;
                }
                let g = &self.groups[&key];
                let status = if existed {
                    StatusCode::OK
                } else {
                    StatusCode::CREATED
                };
                Ok(with_json(status, self.group_json(g)))
            }
            Method::DELETE => {
                let Some(g) = self.groups.get_mut(&key) else {
                    return Ok(StatusCode::NO_CONTENT.into_response());
                };
                let location = g.location.clone();
                let done = Instant::now() + self.knobs.op_duration;
                g.deleting.get_or_insert(done);
                Ok(self.accepted(&location, "Microsoft.Resources", None))
            }
            _ => Err(bad(
                "MethodNotAllowed",
                format!("{method} is not supported here"),
            )),
        }
    }

    /// The generic listing: top-level resources (subnets are not), in one group or the whole
    /// subscription, filtered by `tagName eq 'k' [and tagValue eq 'v']` or `resourceType eq 't'`.
    fn list(&self, group: Option<&str>, filter: Option<&str>) -> Answer {
        let mut tag_name = None;
        let mut tag_value = None;
        let mut rtype = None;
        if let Some(f) = filter {
            for clause in f.split(" and ") {
                let Some((k, v)) = clause.trim().split_once(" eq ") else {
                    return Err(bad(
                        "InvalidFilterInQueryString",
                        format!("Invalid $filter '{f}'"),
                    ));
                };
                let v = v.trim().trim_matches('\'').to_string();
                match k.trim() {
                    "tagName" => tag_name = Some(v),
                    "tagValue" => tag_value = Some(v),
                    "resourceType" => rtype = Some(v),
                    other => {
                        return Err(bad(
                            "InvalidFilterInQueryString",
                            format!("Unsupported $filter field '{other}'"),
                        ));
                    }
                }
            }
        }
        if rtype.is_some() && tag_name.is_some() {
            return Err(bad(
                "InvalidFilterInQueryString",
                "A tag filter cannot be combined with other filters.",
            ));
        }
        if tag_value.is_some() && tag_name.is_none() {
            return Err(bad("InvalidFilterInQueryString", "tagValue needs tagName."));
        }
        let items: Vec<Value> = self
            .res
            .values()
            .filter(|r| !eq(&r.ty, SUBNET) && self.visible(r))
            .filter(|r| group.is_none_or(|g| eq(&r.group, g)))
            .filter(|r| rtype.as_deref().is_none_or(|t| eq(&r.ty, t)))
            .filter(|r| match (&tag_name, &tag_value) {
                (Some(k), v) => r.tags.iter().any(|(rk, rv)| {
                    eq(rk, k) && v.as_deref().is_none_or(|v| rv.as_str() == Some(v))
                }),
                _ => true,
            })
            .map(|r| {
                json!({ "id": r.id, "name": r.name, "type": r.ty, "location": r.location, "tags": r.tags })
            })
            .collect();
        Ok(with_json(StatusCode::OK, json!({ "value": items })))
    }

    fn res_json(&self, r: &Res) -> Value {
        let now = Instant::now();
        let mut props = r.props.clone();
        let state = if r.deleting.is_some() {
            "Deleting"
        } else if r.ready_at > now {
            r.transitional
        } else {
            "Succeeded"
        };
        props.insert("provisioningState".into(), state.into());
        if eq(&r.ty, VNET) {
            props.insert("subnets".into(), Value::Array(self.subnets_of(&r.id)));
        }
        if eq(&r.ty, SUBNET) {
            let nics: Vec<Value> = self
                .res
                .values()
                .filter(|n| eq(&n.ty, NIC) && nic_subnet(n).is_some_and(|s| eq(s, &r.id)))
                .map(|n| json!({ "id": format!("{}/ipConfigurations/ipconfig1", n.id) }))
                .collect();
            if !nics.is_empty() {
                props.insert("ipConfigurations".into(), Value::Array(nics));
            }
        }
        if eq(&r.ty, DISK) {
            let attached = props.contains_key("managedBy");
            props.insert(
                "diskState".into(),
                (if attached { "Attached" } else { "Unattached" }).into(),
            );
        }
        let managed_by = props.remove("managedBy");
        let sku = props.remove("sku");
        let mut out = json!({ "id": r.id, "name": r.name, "type": r.ty, "properties": props });
        if !eq(&r.ty, SUBNET) {
            out["location"] = r.location.clone().into();
            out["tags"] = Value::Object(r.tags.clone());
        }
        if eq(&r.ty, VM) {
            out["etag"] = format!("\"{}\"", r.etag).into();
        }
        if let Some(z) = &r.zones {
            out["zones"] = z.clone();
        }
        if let Some(s) = sku {
            out["sku"] = s;
        }
        if let Some(m) = managed_by {
            out["managedBy"] = m;
        }
        out
    }

    fn subnets_of(&self, vnet: &str) -> Vec<Value> {
        let prefix = format!("{}/subnets/", vnet.to_ascii_lowercase());
        self.res
            .iter()
            .filter(|(k, r)| k.starts_with(&prefix) && self.visible(r))
            .map(|(_, r)| self.res_json(r))
            .collect()
    }

    fn instance_view(&self, key: &str) -> Value {
        let (state, transitional, until) =
            self.power
                .get(key)
                .copied()
                .unwrap_or(("running", "running", Instant::now()));
        let now_state = if until > Instant::now() {
            transitional
        } else {
            state
        };
        let prov = match self.res.get(key) {
            Some(r) if r.ready_at > Instant::now() => "ProvisioningState/creating",
            _ => "ProvisioningState/succeeded",
        };
        json!({ "statuses": [
            { "code": prov, "level": "Info" },
            { "code": format!("PowerState/{now_state}"), "level": "Info" },
        ] })
    }

    fn vm_action(&mut self, id: &str, action: &str) -> Answer {
        let key = self.existing(id)?;
        let (target, transitional) = match action.to_ascii_lowercase().as_str() {
            "deallocate" => ("deallocated", "deallocating"),
            "poweroff" => ("stopped", "stopping"),
            "start" => ("running", "starting"),
            "restart" => ("running", "starting"),
            _ => {
                return Err(bad(
                    "InvalidAction",
                    format!("The action '{action}' is not supported."),
                ));
            }
        };
        let done = Instant::now() + self.knobs.op_duration;
        self.power.insert(key.clone(), (target, transitional, done));
        let location = self.res[&key].location.clone();
        Ok(self.accepted(&location, "Microsoft.Compute", None))
    }

    fn power_of(&self, key: &str) -> &'static str {
        match self.power.get(key) {
            Some((state, transitional, until)) => {
                if *until > Instant::now() {
                    transitional
                } else {
                    state
                }
            }
            None => "running",
        }
    }

    fn tags_at(&mut self, method: &Method, id: &str, body: Option<Value>) -> Answer {
        let key = self.existing(id)?;
        if *method == Method::PATCH {
            let body = body.unwrap_or_default();
            let op = body
                .get("operation")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let tags = body
                .get("properties")
                .and_then(|p| p.get("tags"))
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            let r = self.res.get_mut(&key).ok_or_else(|| not_found(id))?;
            let mut next = r.tags.clone();
            match op.as_str() {
                "Merge" => next.extend(tags),
                "Replace" => next = tags,
                "Delete" => {
                    for (k, v) in &tags {
                        if next.get(k) == Some(v) || v.as_str() == Some("") {
                            next.remove(k);
                        }
                    }
                }
                other => {
                    return Err(bad(
                        "InvalidTagOperation",
                        format!(
                            "The tag operation '{other}' is not valid: use Merge, Replace or Delete."
                        ),
                    ));
                }
            }
            if next.len() > MAX_TAGS {
                return Err(bad(
                    "InvalidTagCount",
                    format!(
                        "A resource holds at most {MAX_TAGS} tags; this request leaves {}.",
                        next.len()
                    ),
                ));
            }
            r.tags = next;
        } else if *method != Method::GET {
            return Err(bad(
                "MethodNotAllowed",
                format!("{method} is not supported on tags"),
            ));
        }
        let r = &self.res[&key];
        Ok(with_json(
            StatusCode::OK,
            json!({ "id": format!("{}/providers/Microsoft.Resources/tags/default", r.id), "name": "default", "properties": { "tags": r.tags } }),
        ))
    }

    #[allow(clippy::too_many_arguments)]
    fn resource(
        &mut self,
        method: &Method,
        group: &str,
        ty: &str,
        name: &str,
        id: &str,
        query: &HashMap<String, String>,
        headers: &HeaderMap,
        body: Option<Value>,
    ) -> Answer {
        match *method {
            Method::GET => {
                let key = self.existing(id)?;
                let mut out = self.res_json(&self.res[&key]);
                if eq(ty, VM) && query.get("$expand").is_some_and(|e| eq(e, "instanceView")) {
                    out["properties"]["instanceView"] = self.instance_view(&key);
                }
                Ok(with_json(StatusCode::OK, out))
            }
            Method::PUT => self.put(group, ty, name, id, body.unwrap_or_default()),
            Method::PATCH => self.patch(ty, id, headers, body.unwrap_or_default()),
            Method::DELETE => self.delete(ty, id),
            _ => Err(bad(
                "MethodNotAllowed",
                format!("{method} is not supported here"),
            )),
        }
    }

    fn check_group(&self, group: &str) -> Result<String, ArmError> {
        let key = group.to_ascii_lowercase();
        match self.groups.get(&key) {
            None => Err(err(
                StatusCode::NOT_FOUND,
                "ResourceGroupNotFound",
                format!("Resource group '{group}' could not be found."),
            )),
            Some(g) if g.deleting.is_some() => Err(conflict(
                "ResourceGroupBeingDeleted",
                format!(
                    "The resource group '{group}' is in deprovisioning state and cannot perform this operation."
                ),
            )),
            Some(_) => Ok(key),
        }
    }

    fn put(&mut self, group: &str, ty: &str, name: &str, id: &str, body: Value) -> Answer {
        let gkey = self.check_group(group)?;
        let key = id.to_ascii_lowercase();
        let existing = self.res.get(&key);
        if existing.is_some_and(|r| r.deleting.is_some()) {
            return Err(conflict(
                "AnotherOperationInProgress",
                format!("Operation on '{id}' is not allowed while it is being deleted."),
            ));
        }
        if existing.is_some_and(|r| !self.visible(r)) {
            return Err(conflict(
                "OperationNotAllowed",
                format!("'{id}' is still being created."),
            ));
        }
        let existed = existing.is_some();
        let location = body
            .get("location")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| {
                bad(
                    "LocationRequired",
                    "The location property is required for this definition.",
                )
            })?;
        if let Some(r) = existing
            && !eq(&r.location, &location)
        {
            return Err(bad(
                "LocationNotAvailableForResourceType",
                format!("'{id}' is in {}, it cannot move to {location}.", r.location),
            ));
        }
        let tags = tags_of(&body)?.unwrap_or_default();
        let mut props = body
            .get("properties")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        props.remove("provisioningState");
        if let Some(sku) = body.get("sku") {
            props.insert("sku".into(), sku.clone());
        }
        let zones = body.get("zones").cloned();
        match ty {
            VNET => self.check_vnet(&key, &mut props)?,
            NSG => check_rules(&props)?,
            NIC => self.check_nic(&key, &mut props, &location)?,
            VM => self.check_vm(&key, &mut props, &location)?,
            DISK => check_disk(self.res.get(&key), &props)?,
            _ => {}
        }
        let now = Instant::now();
        let done = now + self.knobs.op_duration;
        let etag = self.res.get(&key).map_or(1, |r| r.etag + 1);
        let transitional = match (ty, existed) {
            (VM, false) => "Creating",
            (DISK, false) => "Creating",
            _ => "Updating",
        };
        let mut subnets = Vec::new();
        if ty == VNET {
            match props.remove("subnets") {
                Some(Value::Array(inline)) => subnets = inline,
                _ if existed => {
                    // Left out of the PUT: deleted (none is in use, checked above).
                    let prefix = format!("{key}/subnets/");
                    self.res.retain(|k, _| !k.starts_with(&prefix));
                }
                _ => {}
            }
        }
        let hidden = (ty == DISK && !existed).then_some(done);
        self.res.insert(
            key.clone(),
            Res {
                id: id.to_string(),
                ty: ty.into(),
                name: name.into(),
                group: gkey,
                location: location.clone(),
                tags,
                zones,
                props,
                etag,
                ready_at: done,
                hidden_until: hidden,
                deleting: None,
                transitional,
            },
        );
        for s in subnets {
            if let Some(n) = s.get("name").and_then(Value::as_str) {
                let sprops = s.get("properties").cloned().unwrap_or_default();
                self.subnet(&Method::PUT, id, n, Some(json!({ "properties": sprops })))?;
            }
        }
        if ty == VM {
            self.attach_disks(&key);
            if !existed {
                self.power
                    .insert(key.clone(), ("running", "starting", done));
            }
        }
        let ns = ty.split('/').next().unwrap_or_default().to_string();
        if ty == DISK && !existed {
            return Ok(self.accepted(&location, &ns, Some(key)));
        }
        let (async_op, _) = self.op(&location, &ns, Some(key.clone()));
        let status = if existed {
            StatusCode::OK
        } else {
            StatusCode::CREATED
        };
        let mut r = with_json(status, self.res_json(&self.res[&key]));
        r.headers_mut()
            .insert("Azure-AsyncOperation", header(&async_op));
        r.headers_mut()
            .insert("Retry-After", self.knobs.retry_after_secs.into());
        Ok(r)
    }

    fn check_vnet(&self, key: &str, props: &mut Map<String, Value>) -> Result<(), ArmError> {
        let prefixes: Vec<String> = props
            .get("addressSpace")
            .and_then(|a| a.get("addressPrefixes"))
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        if prefixes.is_empty() {
            return Err(bad(
                "InvalidAddressSpace",
                "The virtual network needs at least one address prefix in addressSpace.addressPrefixes.",
            ));
        }
        for p in &prefixes {
            cidr(p).ok_or_else(|| {
                bad(
                    "InvalidAddressPrefixFormat",
                    format!("Address prefix {p} has an invalid format."),
                )
            })?;
        }
        // A PUT without the subnets deletes those not in use, and refuses to delete one in use.
        if !props.contains_key("subnets") {
            let prefix = format!("{key}/subnets/");
            if let Some((_, s)) = self
                .res
                .iter()
                .find(|(k, s)| k.starts_with(&prefix) && self.subnet_in_use(&s.id))
            {
                return Err(bad(
                    "InUseSubnetCannotBeDeleted",
                    format!("Subnet {} is in use and cannot be deleted.", s.name),
                ));
            }
        }
        Ok(())
    }

    fn subnet_in_use(&self, subnet: &str) -> bool {
        self.res.values().any(|n| {
            eq(&n.ty, NIC) && n.deleting.is_none() && nic_subnet(n).is_some_and(|s| eq(s, subnet))
        })
    }

    fn check_nic(
        &mut self,
        key: &str,
        props: &mut Map<String, Value>,
        location: &str,
    ) -> Result<(), ArmError> {
        let subnet = props
            .get("ipConfigurations")
            .and_then(|c| c.get(0))
            .and_then(|c| c.get("properties"))
            .and_then(|p| p.get("subnet"))
            .and_then(|s| s.get("id"))
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| {
                bad(
                    "InvalidRequestFormat",
                    "ipConfigurations[0].properties.subnet.id is required.",
                )
            })?;
        let skey = subnet.to_ascii_lowercase();
        let vnet_key = skey
            .split("/subnets/")
            .next()
            .unwrap_or_default()
            .to_string();
        match (self.res.get(&skey), self.res.get(&vnet_key)) {
            (Some(s), Some(v)) if self.visible(s) => {
                if !eq(&v.location, location) {
                    return Err(bad(
                        "InvalidResourceReference",
                        format!(
                            "Subnet {subnet} is in {}, the interface in {location}.",
                            v.location
                        ),
                    ));
                }
            }
            _ => {
                return Err(bad(
                    "InvalidResourceReference",
                    format!("Resource {subnet} referenced by resource {key} was not found."),
                ));
            }
        }
        if let Some(nsg) = props
            .get("networkSecurityGroup")
            .and_then(|n| n.get("id"))
            .and_then(Value::as_str)
            && !self.res.contains_key(&nsg.to_ascii_lowercase())
        {
            return Err(bad(
                "InvalidResourceReference",
                format!("Resource {nsg} referenced by resource {key} was not found."),
            ));
        }
        let address = match self.res.get(key) {
            Some(old) if nic_subnet(old).is_some_and(|s| eq(s, &subnet)) => old
                .props
                .pointer("/ipConfigurations/0/properties/privateIPAddress")
                .cloned(),
            _ => None,
        };
        let address = match address {
            Some(a) => a,
            None => {
                let prefix = self.res[&skey]
                    .props
                    .get("addressPrefix")
                    .and_then(Value::as_str)
                    .and_then(cidr)
                    .unwrap_or((0, 32));
                let n = self.next_ip.entry(skey.clone()).or_insert(3);
                *n += 1;
                let ip = prefix.0 + *n;
                Value::String(format!(
                    "{}.{}.{}.{}",
                    ip >> 24,
                    (ip >> 16) & 255,
                    (ip >> 8) & 255,
                    ip & 255
                ))
            }
        };
        if let Some(c) = props.get_mut("ipConfigurations").and_then(|c| c.get_mut(0)) {
            c["properties"]["privateIPAddress"] = address;
            c["properties"]["privateIPAllocationMethod"] = "Dynamic".into();
            if c.get("name").is_none() {
                c["name"] = "ipconfig1".into();
            }
        }
        if let Some(vm) = self
            .res
            .get(key)
            .and_then(|o| o.props.get("virtualMachine"))
            .cloned()
        {
            props.insert("virtualMachine".into(), vm);
        }
        Ok(())
    }

    fn check_vm(
        &mut self,
        key: &str,
        props: &mut Map<String, Value>,
        location: &str,
    ) -> Result<(), ArmError> {
        let size = props
            .pointer("/hardwareProfile/vmSize")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| {
                bad(
                    "InvalidParameter",
                    "Required parameter 'hardwareProfile.vmSize' is missing (null).",
                )
            })?;
        if self
            .knobs
            .unavailable_sizes
            .iter()
            .any(|(l, s)| eq(l, location) && eq(s, &size))
        {
            return Err(conflict(
                "SkuNotAvailable",
                format!(
                    "The requested VM size {size} is currently not available in location '{location}'. Please try another size or deploy to a different location or different zone."
                ),
            ));
        }
        let old = self.res.get(key);
        match old {
            None => {
                if props.pointer("/storageProfile/imageReference").is_none() {
                    return Err(bad(
                        "InvalidParameter",
                        "Required parameter 'storageProfile.imageReference' is missing (null).",
                    ));
                }
                if props.pointer("/osProfile/adminUsername").is_none() {
                    return Err(bad(
                        "InvalidParameter",
                        "Required parameter 'osProfile.adminUsername' is missing (null).",
                    ));
                }
            }
            Some(old) => {
                let old_size = old
                    .props
                    .pointer("/hardwareProfile/vmSize")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                if !eq(old_size, &size) && self.power_of(key) != "deallocated" {
                    return Err(conflict(
                        "OperationNotAllowed",
                        format!(
                            "Unable to resize the VM to {size} since the requested size is not available in the current hardware cluster. Deallocate the VM and try again."
                        ),
                    ));
                }
                let changed = |p: &str| {
                    old.props.pointer(p).is_some()
                        && props.pointer(p).is_some()
                        && old.props.pointer(p) != props.pointer(p)
                };
                if changed("/osProfile/customData") || changed("/osProfile/adminUsername") {
                    return Err(conflict(
                        "PropertyChangeNotAllowed",
                        "Changing property 'osProfile' is not allowed.",
                    ));
                }
                if changed("/storageProfile/imageReference") {
                    return Err(conflict(
                        "PropertyChangeNotAllowed",
                        "Changing property 'imageReference' is not allowed.",
                    ));
                }
                // What the PUT leaves out stays as it was.
                for p in ["osProfile", "storageProfile"] {
                    if !props.contains_key(p)
                        && let Some(v) = old.props.get(p)
                    {
                        props.insert(p.into(), v.clone());
                    }
                }
                if let Some(os) = old.props.pointer("/storageProfile/imageReference").cloned()
                    && props.pointer("/storageProfile/imageReference").is_none()
                {
                    props.entry("storageProfile").or_insert_with(|| json!({}))["imageReference"] =
                        os;
                }
            }
        }
        let nics: Vec<String> = props
            .pointer("/networkProfile/networkInterfaces")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|n| n.get("id").and_then(Value::as_str))
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        if nics.is_empty() {
            return Err(bad(
                "InvalidParameter",
                "Required parameter 'networkProfile' is missing (null).",
            ));
        }
        for n in &nics {
            let nk = n.to_ascii_lowercase();
            let Some(nic) = self.res.get(&nk).filter(|r| self.visible(r)) else {
                return Err(bad(
                    "InvalidResourceReference",
                    format!("Resource {n} referenced by resource {key} was not found."),
                ));
            };
            if let Some(other) = nic
                .props
                .pointer("/virtualMachine/id")
                .and_then(Value::as_str)
                && !eq(other, key)
            {
                return Err(bad(
                    "NicInUse",
                    format!("Network Interface {n} is used by existing resource {other}."),
                ));
            }
            if !eq(&nic.location, location) {
                return Err(bad(
                    "InvalidResourceReference",
                    format!(
                        "Network interface {n} is in {}, the VM in {location}.",
                        nic.location
                    ),
                ));
            }
        }
        self.check_data_disks(key, props)?;
        for n in &nics {
            let vm_id = key.to_string();
            if let Some(nic) = self.res.get_mut(&n.to_ascii_lowercase()) {
                nic.props
                    .insert("virtualMachine".into(), json!({ "id": vm_id }));
            }
        }
        Ok(())
    }

    fn check_data_disks(&self, key: &str, props: &Map<String, Value>) -> Result<(), ArmError> {
        let disks = props
            .pointer("/storageProfile/dataDisks")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let mut luns = Vec::new();
        for d in &disks {
            let lun = d.get("lun").and_then(Value::as_i64).ok_or_else(|| {
                bad(
                    "InvalidParameter",
                    "Required parameter 'dataDisk.lun' is missing (null).",
                )
            })?;
            if luns.contains(&lun) {
                return Err(bad(
                    "InvalidParameter",
                    format!("Two data disks use lun {lun}."),
                ));
            }
            luns.push(lun);
            let Some(did) = d.pointer("/managedDisk/id").and_then(Value::as_str) else {
                return Err(bad(
                    "InvalidParameter",
                    "Required parameter 'dataDisk.managedDisk.id' is missing (null).",
                ));
            };
            let Some(disk) = self
                .res
                .get(&did.to_ascii_lowercase())
                .filter(|r| self.visible(r))
            else {
                return Err(err(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    format!("Disk {did} was not found."),
                ));
            };
            if let Some(by) = disk.props.get("managedBy").and_then(Value::as_str)
                && !eq(by, key)
            {
                return Err(conflict(
                    "OperationNotAllowed",
                    format!("Disk {} is already attached to VM {by}.", disk.name),
                ));
            }
        }
        Ok(())
    }

    /// Makes every disk's `managedBy` agree with the data disks of VM `key`.
    fn attach_disks(&mut self, key: &str) {
        let vm_id = self.res[key].id.clone();
        let wanted: Vec<String> = self.res[key]
            .props
            .pointer("/storageProfile/dataDisks")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|d| d.pointer("/managedDisk/id").and_then(Value::as_str))
                    .map(str::to_ascii_lowercase)
                    .collect()
            })
            .unwrap_or_default();
        for (k, r) in self.res.iter_mut().filter(|(_, r)| eq(&r.ty, DISK)) {
            let mine = r
                .props
                .get("managedBy")
                .and_then(Value::as_str)
                .is_some_and(|m| eq(m, &vm_id));
            if wanted.contains(k) {
                r.props.insert("managedBy".into(), vm_id.clone().into());
            } else if mine {
                r.props.remove("managedBy");
            }
        }
    }

    fn patch(&mut self, ty: &str, id: &str, headers: &HeaderMap, body: Value) -> Answer {
        let key = self.existing(id)?;
        if self.res[&key].deleting.is_some() {
            return Err(conflict(
                "AnotherOperationInProgress",
                format!("'{id}' is being deleted."),
            ));
        }
        if let Some(want) = headers.get("If-Match").and_then(|v| v.to_str().ok()) {
            let have = format!("\"{}\"", self.res[&key].etag);
            if want != "*" && want != have {
                return Err(err(
                    StatusCode::PRECONDITION_FAILED,
                    "PreconditionFailed",
                    format!(
                        "The condition specified using HTTP conditional header(s) is not met: etag {want}, current {have}."
                    ),
                ));
            }
        }
        let tags = tags_of(&body)?;
        let mut props = self.res[&key].props.clone();
        if let Some(p) = body.get("properties").and_then(Value::as_object) {
            merge(&mut props, p);
        }
        if let Some(sku) = body.get("sku") {
            props.insert("sku".into(), sku.clone());
        }
        let location = self.res[&key].location.clone();
        match ty {
            VM => self.check_vm(&key, &mut props, &location)?,
            DISK => check_disk(self.res.get(&key), &props)?,
            NSG => check_rules(&props)?,
            _ => {}
        }
        let done = Instant::now() + self.knobs.op_duration;
        let r = self.res.get_mut(&key).ok_or_else(|| not_found(id))?;
        r.props = props;
        if let Some(t) = tags {
            r.tags = t;
        }
        r.etag += 1;
        r.ready_at = done;
        r.transitional = "Updating";
        let location = r.location.clone();
        if ty == VM {
            self.attach_disks(&key);
        }
        let ns = ty.split('/').next().unwrap_or_default().to_string();
        let (async_op, _) = self.op(&location, &ns, Some(key.clone()));
        let mut resp = with_json(StatusCode::OK, self.res_json(&self.res[&key]));
        resp.headers_mut()
            .insert("Azure-AsyncOperation", header(&async_op));
        Ok(resp)
    }

    fn delete(&mut self, ty: &str, id: &str) -> Answer {
        let key = id.to_ascii_lowercase();
        let Some(r) = self.res.get(&key) else {
            return Ok(StatusCode::NO_CONTENT.into_response());
        };
        if !self.visible(r) {
            return Err(conflict(
                "OperationNotAllowed",
                format!("'{id}' is still being created."),
            ));
        }
        match ty {
            VNET => {
                let prefix = format!("{key}/subnets/");
                if let Some((_, s)) = self
                    .res
                    .iter()
                    .find(|(k, s)| k.starts_with(&prefix) && self.subnet_in_use(&s.id))
                {
                    return Err(bad(
                        "InUseSubnetCannotBeDeleted",
                        format!("Subnet {} is in use and cannot be deleted.", s.name),
                    ));
                }
            }
            NSG => {
                if let Some(n) = self.res.values().find(|n| {
                    n.deleting.is_none()
                        && (n
                            .props
                            .pointer("/networkSecurityGroup/id")
                            .and_then(Value::as_str)
                            .is_some_and(|g| eq(g, id)))
                }) {
                    return Err(bad(
                        "InUseNetworkSecurityGroupCannotBeDeleted",
                        format!(
                            "Network security group {id} cannot be deleted because it is in use by {}.",
                            n.id
                        ),
                    ));
                }
            }
            NIC => {
                if let Some(vm) = r
                    .props
                    .pointer("/virtualMachine/id")
                    .and_then(Value::as_str)
                {
                    return Err(bad(
                        "NicInUse",
                        format!(
                            "Network Interface {id} is used by existing resource {vm}. In order to delete the network interface, it must be dissociated from the resource."
                        ),
                    ));
                }
            }
            DISK => {
                if let Some(vm) = r.props.get("managedBy").and_then(Value::as_str) {
                    return Err(conflict(
                        "OperationNotAllowed",
                        format!("Disk {} is attached to VM {vm}.", r.name),
                    ));
                }
            }
            _ => {}
        }
        let done = Instant::now() + self.knobs.op_duration;
        let location = r.location.clone();
        if let Some(r) = self.res.get_mut(&key) {
            r.deleting.get_or_insert(done);
        }
        let ns = ty.split('/').next().unwrap_or_default().to_string();
        Ok(self.accepted(&location, &ns, None))
    }

    fn subnet(
        &mut self,
        method: &Method,
        vnet_id: &str,
        name: &str,
        body: Option<Value>,
    ) -> Answer {
        let vkey = self.existing(vnet_id)?;
        let id = format!("{}/subnets/{name}", self.res[&vkey].id);
        let key = id.to_ascii_lowercase();
        match *method {
            Method::GET => {
                let k = self.existing(&id)?;
                Ok(with_json(StatusCode::OK, self.res_json(&self.res[&k])))
            }
            Method::PUT => {
                let mut props = body
                    .as_ref()
                    .and_then(|b| b.get("properties"))
                    .and_then(Value::as_object)
                    .cloned()
                    .unwrap_or_default();
                props.remove("provisioningState");
                props.remove("ipConfigurations");
                let prefix = props
                    .get("addressPrefix")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .ok_or_else(|| {
                        bad(
                            "InvalidRequestFormat",
                            "properties.addressPrefix is required.",
                        )
                    })?;
                let block = cidr(&prefix).ok_or_else(|| {
                    bad(
                        "InvalidAddressPrefixFormat",
                        format!("Address prefix {prefix} has an invalid format."),
                    )
                })?;
                let vnet = &self.res[&vkey];
                let inside = vnet
                    .props
                    .pointer("/addressSpace/addressPrefixes")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .filter_map(cidr)
                    .any(|outer| contains(outer, block));
                if !inside {
                    return Err(bad(
                        "NetcfgSubnetRangeOutsideVnet",
                        format!(
                            "Subnet '{name}' is not valid because its IP address range is outside the IP address range of virtual network '{}'.",
                            vnet.name
                        ),
                    ));
                }
                let sib_prefix = format!("{vkey}/subnets/");
                if let Some((_, other)) = self.res.iter().find(|(k, s)| {
                    k.starts_with(&sib_prefix)
                        && **k != key
                        && s.deleting.is_none()
                        && s.props
                            .get("addressPrefix")
                            .and_then(Value::as_str)
                            .and_then(cidr)
                            .is_some_and(|b| overlaps(b, block))
                }) {
                    return Err(bad(
                        "NetcfgSubnetRangesOverlap",
                        format!(
                            "Subnet '{name}' is not valid because its IP address range overlaps with that of an existing subnet '{}' in the virtual network.",
                            other.name
                        ),
                    ));
                }
                if let Some(old) = self.res.get(&key) {
                    let old_prefix = old
                        .props
                        .get("addressPrefix")
                        .and_then(Value::as_str)
                        .unwrap_or_default();
                    if old_prefix != prefix && self.subnet_in_use(&id) {
                        return Err(bad(
                            "InUseSubnetCannotBeUpdated",
                            format!(
                                "Subnet {name} is in use and its address prefix cannot be changed."
                            ),
                        ));
                    }
                }
                let existed = self.res.contains_key(&key);
                let done = Instant::now() + self.knobs.op_duration;
                let (group, location) = (vnet.group.clone(), vnet.location.clone());
                self.res.insert(
                    key.clone(),
                    Res {
                        id: id.clone(),
                        ty: SUBNET.into(),
                        name: name.into(),
                        group,
                        location: location.clone(),
                        tags: Map::new(),
                        zones: None,
                        props,
                        etag: 1,
                        ready_at: done,
                        hidden_until: None,
                        deleting: None,
                        transitional: "Updating",
                    },
                );
                let (async_op, _) = self.op(&location, "Microsoft.Network", Some(key.clone()));
                let status = if existed {
                    StatusCode::OK
                } else {
                    StatusCode::CREATED
                };
                let mut r = with_json(status, self.res_json(&self.res[&key]));
                r.headers_mut()
                    .insert("Azure-AsyncOperation", header(&async_op));
                Ok(r)
            }
            Method::DELETE => {
                if !self.res.contains_key(&key) {
                    return Ok(StatusCode::NO_CONTENT.into_response());
                }
                if self.subnet_in_use(&id) {
                    return Err(bad(
                        "InUseSubnetCannotBeDeleted",
                        format!(
                            "Subnet {name} is in use by a network interface and cannot be deleted."
                        ),
                    ));
                }
                let done = Instant::now() + self.knobs.op_duration;
                let location = self.res[&key].location.clone();
                if let Some(r) = self.res.get_mut(&key) {
                    r.deleting.get_or_insert(done);
                }
                Ok(self.accepted(&location, "Microsoft.Network", None))
            }
            _ => Err(bad(
                "MethodNotAllowed",
                format!("{method} is not supported on subnets"),
            )),
        }
    }
}

/// JSON pointers into a resource's `properties` (a map, not a value).
trait Pointer {
    fn pointer(&self, path: &str) -> Option<&Value>;
}

impl Pointer for Map<String, Value> {
    fn pointer(&self, path: &str) -> Option<&Value> {
        let rest = path.strip_prefix('/')?;
        let (first, tail) = rest.split_once('/').unwrap_or((rest, ""));
        let v = self.get(first)?;
        if tail.is_empty() {
            Some(v)
        } else {
            v.pointer(&format!("/{tail}"))
        }
    }
}

fn header(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

fn nic_subnet(n: &Res) -> Option<&str> {
    n.props
        .pointer("/ipConfigurations/0/properties/subnet/id")
        .and_then(Value::as_str)
}

/// `tags` of a request body: `None` when absent; more than ARM allows is an error.
fn tags_of(body: &Value) -> Result<Option<Map<String, Value>>, ArmError> {
    let Some(t) = body.get("tags") else {
        return Ok(None);
    };
    let t = t
        .as_object()
        .cloned()
        .ok_or_else(|| bad("InvalidTagFormat", "tags must be an object of strings."))?;
    if t.len() > MAX_TAGS {
        return Err(bad(
            "InvalidTagCount",
            format!(
                "A resource holds at most {MAX_TAGS} tags, the request has {}.",
                t.len()
            ),
        ));
    }
    for (k, v) in &t {
        if k.len() > 512 || v.as_str().is_none_or(|v| v.chars().count() > 256) {
            return Err(bad(
                "InvalidTagNameCharacters",
                format!(
                    "Tag '{k}': names are at most 512 characters, values strings of at most 256."
                ),
            ));
        }
    }
    Ok(Some(t))
}

fn merge(into: &mut Map<String, Value>, from: &Map<String, Value>) {
    for (k, v) in from {
        match (into.get_mut(k), v) {
            (Some(Value::Object(a)), Value::Object(b)) => merge(a, b),
            _ => {
                into.insert(k.clone(), v.clone());
            }
        }
    }
}

/// ARM's NSG rule checks: priorities 100-4096, unique per direction; known protocols.
fn check_rules(props: &Map<String, Value>) -> Result<(), ArmError> {
    let rules = props
        .get("securityRules")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut seen = Vec::new();
    for r in &rules {
        let name = r.get("name").and_then(Value::as_str).unwrap_or_default();
        let p = r.get("properties").cloned().unwrap_or_default();
        let priority = p.get("priority").and_then(Value::as_i64).unwrap_or(0);
        if !(100..=4096).contains(&priority) {
            return Err(bad(
                "SecurityRuleInvalidPriority",
                format!(
                    "Security rule {name} has invalid Priority {priority}. Value provided: {priority} Allowed values are from: 100 to 4096."
                ),
            ));
        }
        let direction = p
            .get("direction")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if !matches!(direction.as_str(), "Inbound" | "Outbound") {
            return Err(bad(
                "SecurityRuleInvalidDirection",
                format!("Security rule {name} has invalid direction '{direction}'."),
            ));
        }
        if seen.contains(&(direction.clone(), priority)) {
            return Err(bad(
                "SecurityRulesConflict",
                format!(
                    "Security rule {name} conflicts with another rule: two rules have the same priority {priority} and direction {direction}."
                ),
            ));
        }
        seen.push((direction, priority));
        let protocol = p
            .get("protocol")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !matches!(protocol, "Tcp" | "Udp" | "Icmp" | "Esp" | "Ah" | "*") {
            return Err(bad(
                "SecurityRuleInvalidProtocol",
                format!("Security rule {name} has invalid protocol '{protocol}'."),
            ));
        }
    }
    Ok(())
}

/// Managed disk checks: a size in 4-32767 GiB, which only grows.
fn check_disk(old: Option<&Res>, props: &Map<String, Value>) -> Result<(), ArmError> {
    let size = props
        .get("diskSizeGB")
        .and_then(Value::as_i64)
        .ok_or_else(|| {
            bad(
                "InvalidParameter",
                "Required parameter 'diskSizeGB' is missing (null).",
            )
        })?;
    if !(4..=32767).contains(&size) {
        return Err(bad(
            "InvalidParameter",
            format!("The value {size} of parameter 'diskSizeGB' is out of range: 4 to 32767."),
        ));
    }
    if let Some(old) = old {
        let was = old
            .props
            .get("diskSizeGB")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        if size < was {
            return Err(bad(
                "BadRequest",
                format!("Disk size can only be increased: {was} GB to {size} GB is a shrink."),
            ));
        }
    }
    Ok(())
}

/// An IPv4 block as (network address, prefix length).
fn cidr(s: &str) -> Option<(u32, u32)> {
    let (ip, len) = s.split_once('/')?;
    let len: u32 = len.parse().ok().filter(|l| *l <= 32)?;
    let ip: std::net::Ipv4Addr = ip.parse().ok()?;
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    Some((u32::from(ip) & mask, len))
}

fn contains(outer: (u32, u32), inner: (u32, u32)) -> bool {
    let mask = if outer.1 == 0 {
        0
    } else {
        u32::MAX << (32 - outer.1)
    };
    inner.1 >= outer.1 && (inner.0 & mask) == outer.0
}

fn overlaps(a: (u32, u32), b: (u32, u32)) -> bool {
    contains(a, b) || contains(b, a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_contain_and_overlap() {
        let vnet = cidr("10.0.0.0/16").unwrap();
        assert!(contains(vnet, cidr("10.0.1.0/24").unwrap()));
        assert!(!contains(vnet, cidr("10.1.0.0/24").unwrap()));
        assert!(overlaps(
            cidr("10.0.0.0/20").unwrap(),
            cidr("10.0.1.0/24").unwrap()
        ));
        assert!(!overlaps(
            cidr("10.0.0.0/24").unwrap(),
            cidr("10.0.1.0/24").unwrap()
        ));
        assert_eq!(cidr("10.0.0.0/33"), None);
    }

    #[test]
    fn queries_are_decoded() {
        let q = parse_query("api-version=2024-07-01&%24filter=tagName%20eq%20%27a%27+and");
        assert_eq!(q["$filter"], "tagName eq 'a' and");
        assert_eq!(q["api-version"], "2024-07-01");
    }
}
