//! The fake's cloud: resources as the API shows them (JSON), operations and their effects, and
//! one function per method. Every resource is keyed by its path (`projects/p/global/networks/n`).
// A method's error is the HTTP response axum sends as it is: large, and never moved far.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, HashMap};
use std::time::{Instant, SystemTime};

use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::{Map, Value, json};

use super::Knobs;

/// Regions the fake serves and their zones' letters (GCP's zones are not always `-a`: us-east1
/// has b, c and d).
pub const ZONES: &[(&str, &str)] = &[
    ("us-east1", "bcd"),
    ("us-east4", "abc"),
    ("us-central1", "abcf"),
    ("us-west1", "abc"),
    ("europe-west1", "bcd"),
    ("europe-west3", "abc"),
    ("europe-west4", "abc"),
    ("asia-southeast1", "abc"),
    ("asia-northeast1", "abc"),
    ("southamerica-east1", "abc"),
    ("me-central1", "abc"),
];

/// Machine series offered only in some regions (the rest, e2, n1 and n2, are offered in every
/// region above).
const REGIONAL_SERIES: &[(&str, &[&str])] = &[
    ("t2a", &["us-central1", "europe-west4", "asia-southeast1"]),
    (
        "a2",
        &["us-central1", "us-east1", "europe-west4", "asia-southeast1"],
    ),
    (
        "c4a",
        &[
            "us-central1",
            "us-east1",
            "us-east4",
            "europe-west1",
            "europe-west4",
            "asia-southeast1",
        ],
    ),
];

/// Machine types by series and shape.
const MACHINE_TYPES: &[&str] = &[
    "e2-micro",
    "e2-small",
    "e2-medium",
    "e2-standard-2",
    "e2-standard-4",
    "e2-standard-8",
    "n1-standard-1",
    "n1-standard-2",
    "n1-standard-4",
    "n2-standard-2",
    "n2-standard-4",
    "n2-standard-8",
    "n2-standard-16",
    "n2-highmem-2",
    "n2-highmem-4",
    "t2a-standard-1",
    "t2a-standard-2",
    "t2a-standard-4",
    "a2-highgpu-1g",
    "c4a-standard-1",
    "c4a-standard-2",
    "c4a-standard-4",
];

const DISK_TYPES: &[(&str, i64)] = &[
    ("pd-standard", 10),
    ("pd-balanced", 10),
    ("pd-ssd", 10),
    ("pd-extreme", 500),
];

/// Public image families: (project, family).
const IMAGE_FAMILIES: &[(&str, &str)] = &[
    ("ubuntu-os-cloud", "ubuntu-2404-lts-amd64"),
    ("ubuntu-os-cloud", "ubuntu-2204-lts"),
    ("debian-cloud", "debian-12"),
    ("debian-cloud", "debian-11"),
];

const BASE: &str = "https://www.googleapis.com/compute/v1/";

/// Whether `region` offers `machine_type` (an unknown region offers nothing).
pub fn machine_type_offered(region: &str, machine_type: &str) -> bool {
    if !ZONES.iter().any(|(r, _)| *r == region) || !MACHINE_TYPES.contains(&machine_type) {
        return false;
    }
    let series = machine_type.split('-').next().unwrap_or_default();
    REGIONAL_SERIES
        .iter()
        .find(|(s, _)| *s == series)
        .is_none_or(|(_, regions)| regions.contains(&region))
}

/// The key of the machine type `reference` names in `zone`, if it is offered there (GCP's
/// for the zone's region, or one the knobs add); otherwise GCP's 400 on `field`.
fn machine_type_key(
    knobs: &Knobs,
    project: &str,
    zone: &str,
    field: &str,
    reference: &str,
) -> Result<String, Response> {
    let key = key_of(project, reference);
    let ty = key
        .strip_prefix(&format!("projects/{project}/zones/{zone}/machineTypes/"))
        .unwrap_or_default();
    let offered = region_of_zone(zone).is_some_and(|r| machine_type_offered(r, ty))
        || knobs.extra_machine_types.iter().any(|t| t == ty);
    if ty.is_empty() || !offered {
        return Err(bad(format!(
            "Invalid value for field '{field}': '{reference}'. Machine type with name '{}' does not exist in zone '{zone}'.",
            last(reference)
        )));
    }
    Ok(key)
}

/// The region of a zone (`us-east1-b` → `us-east1`), if the fake serves it.
fn region_of_zone(zone: &str) -> Option<&'static str> {
    let (region, letter) = zone.rsplit_once('-')?;
    ZONES
        .iter()
        .find(|(r, letters)| *r == region && letter.len() == 1 && letters.contains(letter))
        .map(|(r, _)| *r)
}

/// An error in Google's shape.
pub(crate) fn error(status: StatusCode, reason: &str, message: &str) -> Response {
    let grpc = match status.as_u16() {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        409 => "ALREADY_EXISTS",
        412 => "FAILED_PRECONDITION",
        429 => "RESOURCE_EXHAUSTED",
        503 => "UNAVAILABLE",
        _ => "INTERNAL",
    };
    let body = json!({
        "error": {
            "code": status.as_u16(),
            "message": message,
            "status": grpc,
            "errors": [{ "message": message, "domain": "global", "reason": reason }],
        }
    });
    (status, axum::Json(body)).into_response()
}

fn bad(message: impl AsRef<str>) -> Response {
    error(StatusCode::BAD_REQUEST, "invalid", message.as_ref())
}

fn not_found(path: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "notFound",
        &format!("The resource '{path}' was not found"),
    )
}

/// What a failed operation reports.
pub(crate) struct OpError {
    http: u16,
    code: &'static str,
    message: String,
}

type Effect = Box<dyn FnOnce(&mut Cloud) -> Result<(), OpError> + Send>;

struct Op {
    json: Value,
    created: Instant,
    done_at: Instant,
    effect: Option<Effect>,
    done: bool,
}

type Served = Result<(StatusCode, Value), Response>;

#[derive(Default)]
pub(crate) struct Cloud {
    resources: BTreeMap<String, Value>,
    /// When a resource made lately becomes visible (eventual consistency).
    visible_at: HashMap<String, Instant>,
    /// Resources whose insert is not DONE yet, and when an instance among them goes from
    /// PROVISIONING to STAGING (its operation's RUNNING half).
    making: HashMap<String, Instant>,
    ops: BTreeMap<String, Op>,
    /// `requestId` → the operation it started, and when.
    request_ids: HashMap<String, (String, Instant)>,
    next_id: u64,
    next_host: HashMap<String, u32>,
    served: u64,
    pub(crate) injected: u64,
    pub(crate) requests: BTreeMap<String, u64>,
    pub(crate) inserts: u64,
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

fn fingerprint() -> String {
    base64::engine::general_purpose::URL_SAFE.encode(fastrand::u64(..).to_be_bytes())
}

fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[b.len() - 1] != b'-'
}

fn valid_label_key(k: &str) -> bool {
    let b = k.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-' || *c == b'_')
}

fn valid_label_value(v: &str) -> bool {
    v.len() <= 63
        && v.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'_')
}

fn check_labels(labels: &Value) -> Result<(), Response> {
    let Some(m) = labels.as_object() else {
        return if labels.is_null() {
            Ok(())
        } else {
            Err(bad("Invalid value for field 'labels': must be a map"))
        };
    };
    if m.len() > 64 {
        return Err(bad("A resource may have at most 64 labels"));
    }
    for (k, v) in m {
        let v = v.as_str().unwrap_or("\u{0}");
        if !valid_label_key(k) || !valid_label_value(v) {
            return Err(bad(format!(
                "Invalid value for field 'labels': '{k}' = '{v}'. Label keys and values may contain only lowercase letters, digits, '-' and '_', at most 63 characters, and keys start with a letter"
            )));
        }
    }
    Ok(())
}

/// A reference (full URL, `projects/p/…` or `global/…`, `regions/…`, `zones/…`) as a key.
fn key_of(project: &str, reference: &str) -> String {
    let r = reference
        .split_once("/compute/v1/")
        .map_or(reference, |(_, r)| r);
    if r.starts_with("projects/") {
        r.to_string()
    } else {
        format!("projects/{project}/{r}")
    }
}

fn url(key: &str) -> String {
    format!("{BASE}{key}")
}

fn last(reference: &str) -> &str {
    reference.rsplit('/').next().unwrap_or_default()
}

fn parse_cidr(cidr: &str) -> Option<(u32, u8)> {
    let (ip, len) = cidr.split_once('/')?;
    let len: u8 = len.parse().ok().filter(|l| *l <= 32)?;
    let ip: std::net::Ipv4Addr = ip.parse().ok()?;
    let ip = u32::from(ip);
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    (ip & mask == ip).then_some((ip, len))
}

fn overlaps(a: (u32, u8), b: (u32, u8)) -> bool {
    let len = a.1.min(b.1);
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    a.0 & mask == b.0 & mask
}

fn size_of(v: &Value) -> Option<i64> {
    match v {
        Value::String(s) => s.parse().ok(),
        Value::Number(n) => n.as_i64(),
        _ => None,
    }
}

/// The scope of a collection's operations: `global`, `regions/r` or `zones/z`.
fn op_scope(segments: &[&str]) -> String {
    match segments {
        ["regions", r, ..] => format!("regions/{r}"),
        ["zones", z, ..] => format!("zones/{z}"),
        _ => "global".to_string(),
    }
}

impl Cloud {
    fn id(&mut self) -> String {
        self.next_id += 1;
        (4_000_000_000_000_000_000u64 + self.next_id * 7919).to_string()
    }

    pub(crate) fn count(&mut self, method: &Method, segments: &[&str]) {
        const COLLECTIONS: &[&str] = &[
            "networks",
            "subnetworks",
            "firewalls",
            "instances",
            "disks",
            "operations",
        ];
        let what = match segments.iter().position(|s| COLLECTIONS.contains(s)) {
            Some(i) if segments[i] != "operations" && segments.len() > i + 2 => {
                format!("{}.{}", segments[i], segments[i + 2])
            }
            Some(i) => segments[i].to_string(),
            None => "other".to_string(),
        };
        *self.requests.entry(format!("{method} {what}")).or_insert(0) += 1;
    }

    /// An injected 429 or 503, if this request draws one.
    pub(crate) fn inject(&mut self, knobs: &Knobs) -> Option<Response> {
        self.served += 1;
        let n = self.served;
        let hit = |every: u32| every > 0 && n.is_multiple_of(u64::from(every));
        if hit(knobs.throttle_every) {
            self.injected += 1;
            return Some(error(
                StatusCode::TOO_MANY_REQUESTS,
                "rateLimitExceeded",
                "Rate Limit Exceeded",
            ));
        }
        if hit(knobs.unavailable_every) {
            self.injected += 1;
            return Some(error(
                StatusCode::SERVICE_UNAVAILABLE,
                "backendError",
                "The service is currently unavailable.",
            ));
        }
        None
    }

    /// Carries out the operations whose time has come, in the order they were made.
    pub(crate) fn advance(&mut self) {
        let now = Instant::now();
        for (key, staging) in &self.making {
            if *staging <= now
                && let Some(r) = self.resources.get_mut(key)
                && r["status"] == "PROVISIONING"
            {
                r["status"] = json!("STAGING");
            }
        }
        let mut due: Vec<(Instant, String)> = self
            .ops
            .iter()
            .filter(|(_, op)| !op.done && op.done_at <= now)
            .map(|(k, op)| (op.created, k.clone()))
            .collect();
        due.sort();
        for (_, key) in due {
            let effect = self.ops.get_mut(&key).and_then(|op| op.effect.take());
            let outcome = match effect {
                Some(f) => f(self),
                None => Ok(()),
            };
            if let Some(op) = self.ops.get_mut(&key) {
                op.done = true;
                let j = &mut op.json;
                j["status"] = json!("DONE");
                j["progress"] = json!(100);
                j["endTime"] = json!(now_rfc3339());
                if let Err(e) = outcome {
                    j["error"] = json!({ "errors": [{ "code": e.code, "message": e.message }] });
                    j["httpErrorStatusCode"] = json!(e.http);
                    j["httpErrorMessage"] = json!(match e.http {
                        400 => "BAD REQUEST",
                        404 => "NOT FOUND",
                        409 => "CONFLICT",
                        503 => "SERVICE UNAVAILABLE",
                        _ => "INTERNAL SERVER ERROR",
                    });
                }
            }
        }
    }

    fn visible(&self, key: &str) -> bool {
        self.visible_at
            .get(key)
            .is_none_or(|t| *t <= Instant::now())
    }

    fn get(&self, key: &str) -> Result<&Value, Response> {
        match self.resources.get(key) {
            Some(v) if self.visible(key) => Ok(v),
            _ => Err(not_found(key)),
        }
    }

    fn get_mut(&mut self, key: &str) -> Result<&mut Value, Response> {
        if !self.visible(key) {
            return Err(not_found(key));
        }
        self.resources.get_mut(key).ok_or_else(|| not_found(key))
    }

    pub(crate) fn collection(&self, project: &str, collection: &str) -> BTreeMap<String, Value> {
        let prefix = format!("projects/{project}/{collection}/");
        self.resources
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .filter(|(k, _)| !k[prefix.len()..].contains('/'))
            .map(|(k, v)| (k[prefix.len()..].to_string(), v.clone()))
            .collect()
    }

    pub(crate) fn all(&self, kind: &str) -> BTreeMap<String, Value> {
        self.resources
            .iter()
            .filter(|(k, _)| k.rsplit('/').nth(1) == Some(kind))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    pub(crate) fn mutate(&mut self, path: &str, change: impl FnOnce(&mut Value)) -> bool {
        let Some(r) = self.resources.get_mut(path) else {
            return false;
        };
        change(r);
        for f in ["fingerprint", "labelFingerprint"] {
            if r.get(f).is_some() {
                r[f] = json!(fingerprint());
            }
        }
        true
    }

    /// A new operation in `scope` on `target` that carries out `effect` when DONE.
    fn operation(
        &mut self,
        knobs: &Knobs,
        project: &str,
        scope: &str,
        kind: &str,
        target: &str,
        effect: Effect,
    ) -> Value {
        let name = format!(
            "operation-{}-{:016x}",
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_millis())
                .unwrap_or_default(),
            fastrand::u64(..)
        );
        let key = format!("projects/{project}/{scope}/operations/{name}");
        let target_id = self
            .resources
            .get(target)
            .and_then(|r| r.get("id").cloned())
            .unwrap_or_else(|| json!(self.id()));
        let mut j = json!({
            "kind": "compute#operation",
            "id": self.id(),
            "name": name,
            "operationType": kind,
            "targetLink": url(target),
            "targetId": target_id,
            "status": "PENDING",
            "user": "fake@chimera.invalid",
            "progress": 0,
            "insertTime": now_rfc3339(),
            "startTime": now_rfc3339(),
            "selfLink": url(&key),
        });
        match scope.split_once('/') {
            Some(("zones", _)) => j["zone"] = json!(url(&format!("projects/{project}/{scope}"))),
            Some(("regions", _)) => {
                j["region"] = json!(url(&format!("projects/{project}/{scope}")))
            }
            _ => {}
        }
        let created = Instant::now();
        self.ops.insert(
            key.clone(),
            Op {
                json: j,
                created,
                done_at: created + knobs.op_delay,
                effect: Some(effect),
                done: false,
            },
        );
        self.advance();
        self.op_json(knobs, &key).unwrap_or(Value::Null)
    }

    fn op_json(&self, knobs: &Knobs, key: &str) -> Option<Value> {
        let op = self.ops.get(key)?;
        let mut j = op.json.clone();
        if !op.done {
            let half = op.created + knobs.op_delay / 2;
            j["status"] = json!(if Instant::now() < half {
                "PENDING"
            } else {
                "RUNNING"
            });
        }
        Some(j)
    }

    /// The common part of every insert: the request id, the name, then `build` makes the
    /// resource. As on GCP, the resource is there at once, in its transitional state (an
    /// instance PROVISIONING, then STAGING; a disk CREATING), and its operation finishes it: the
    /// checks run, an instance gets its address and boot disk and is RUNNING, a disk READY. A
    /// failed insert leaves nothing behind. Until then, the resource takes no other method
    /// (400 `resourceNotReady`).
    #[allow(clippy::too_many_arguments)]
    fn insert(
        &mut self,
        knobs: &Knobs,
        project: &str,
        segments: &[&str],
        query: &BTreeMap<String, String>,
        body: &Value,
        build: impl FnOnce(&mut Cloud, &str, &Value) -> Result<(Value, Vec<Check>), Response>,
    ) -> Served {
        if let Some(op) = self.repeated(knobs, query) {
            return Ok((StatusCode::OK, op));
        }
        let name = body["name"].as_str().unwrap_or_default();
        if !valid_name(name) {
            return Err(bad(format!(
                "Invalid value for field 'resource.name': '{name}'. Must be a match of regex '(?:[a-z](?:[-a-z0-9]{{0,61}}[a-z0-9])?)'"
            )));
        }
        let collection = segments.join("/");
        let key = format!("projects/{project}/{collection}/{name}");
        if self.resources.contains_key(&key) {
            return Err(error(
                StatusCode::CONFLICT,
                "alreadyExists",
                &format!("The resource '{key}' already exists"),
            ));
        }
        let (mut resource, checks) = build(self, &key, body)?;
        let id = self.id();
        let r = resource.as_object_mut().expect("a resource is an object");
        r.insert("id".into(), json!(id));
        r.insert("name".into(), json!(name));
        r.insert("creationTimestamp".into(), json!(now_rfc3339()));
        r.insert("selfLink".into(), json!(url(&key)));
        let now = Instant::now();
        self.resources.insert(key.clone(), resource);
        self.making.insert(key.clone(), now + knobs.op_delay / 2);
        if !knobs.invisible_for.is_zero() {
            self.visible_at
                .insert(key.clone(), now + knobs.op_delay + knobs.invisible_for);
        }
        self.inserts += 1;
        let k = key.clone();
        let effect: Effect = Box::new(move |c: &mut Cloud| {
            c.making.remove(&k);
            let Some(mut resource) = c.resources.get(&k).cloned() else {
                return Err(OpError {
                    http: 404,
                    code: "RESOURCE_NOT_FOUND",
                    message: format!("The resource '{k}' was not found"),
                });
            };
            for check in checks {
                if let Err(e) = check(c, &mut resource) {
                    c.resources.remove(&k);
                    c.visible_at.remove(&k);
                    return Err(e);
                }
            }
            c.resources.insert(k, resource);
            Ok(())
        });
        let scope = op_scope(segments);
        let op = self.operation(knobs, project, &scope, "insert", &key, effect);
        self.remember(project, query, &op);
        Ok((StatusCode::OK, op))
    }

    /// The operation an earlier call with this request's `requestId` started, if any: GCP
    /// answers a repeated call with it and does nothing again.
    fn repeated(&self, knobs: &Knobs, query: &BTreeMap<String, String>) -> Option<Value> {
        let rid = query.get("requestId")?;
        self.request_ids
            .get(rid)
            .filter(|(_, at)| at.elapsed() < knobs.request_ids_kept)
            .and_then(|(k, _)| self.op_json(knobs, k))
    }

    /// Remembers which operation this request's `requestId` started.
    fn remember(&mut self, project: &str, query: &BTreeMap<String, String>, op: &Value) {
        if let (Some(rid), Some(link)) = (query.get("requestId"), op["selfLink"].as_str()) {
            self.request_ids
                .insert(rid.clone(), (key_of(project, link), Instant::now()));
        }
    }

    /// 400 `resourceNotReady` if `key` (or the resource a method path under it names) is
    /// still being made by its insert.
    fn ready(&self, key: &str) -> Result<(), Response> {
        let making = self.making.keys().find(|m| {
            key == m.as_str()
                || key
                    .strip_prefix(m.as_str())
                    .is_some_and(|r| r.starts_with('/'))
        });
        match making {
            Some(m) => Err(error(
                StatusCode::BAD_REQUEST,
                "resourceNotReady",
                &format!("The resource '{m}' is not ready"),
            )),
            None => Ok(()),
        }
    }

    /// A mutation of an existing resource, carried out by its operation.
    fn change(
        &mut self,
        knobs: &Knobs,
        project: &str,
        key: &str,
        kind: &str,
        query: &BTreeMap<String, String>,
        effect: impl FnOnce(&mut Cloud) -> Result<(), OpError> + Send + 'static,
    ) -> Served {
        if let Some(op) = self.repeated(knobs, query) {
            return Ok((StatusCode::OK, op));
        }
        let segments: Vec<&str> = key.split('/').skip(2).collect();
        let scope = op_scope(&segments);
        let op = self.operation(knobs, project, &scope, kind, key, Box::new(effect));
        self.remember(project, query, &op);
        Ok((StatusCode::OK, op))
    }

    /// A method whose operation sets `fields` of the resource at `key` when it is DONE.
    fn set_when_done(
        &mut self,
        knobs: &Knobs,
        project: &str,
        key: &str,
        kind: &str,
        query: &BTreeMap<String, String>,
        fields: Vec<(&'static str, Value)>,
    ) -> Served {
        let k = key.to_string();
        self.change(knobs, project, key, kind, query, move |c| {
            if let Some(r) = c.resources.get_mut(&k) {
                for (field, value) in fields {
                    r[field] = value;
                }
            }
            Ok(())
        })
    }

    fn list(&self, project: &str, segments: &[&str], query: &BTreeMap<String, String>) -> Served {
        let collection = segments.join("/");
        let filter = match query.get("filter").map(|f| Filter::parse(f)) {
            None => None,
            Some(Ok(f)) => Some(f),
            Some(Err(m)) => return Err(bad(format!("Invalid value for field 'filter': {m}"))),
        };
        let items: Vec<Value> = self
            .collection(project, &collection)
            .into_iter()
            .filter(|(name, _)| self.visible(&format!("projects/{project}/{collection}/{name}")))
            .map(|(_, v)| v)
            .filter(|v| filter.as_ref().is_none_or(|f| f.matches(v)))
            .collect();
        let max = query
            .get("maxResults")
            .and_then(|m| m.parse::<usize>().ok())
            .unwrap_or(500)
            .clamp(1, 500);
        let start = query
            .get("pageToken")
            .filter(|t| !t.is_empty())
            .map(|t| t.parse::<usize>().map_err(|_| bad("Invalid page token")))
            .transpose()?
            .unwrap_or(0);
        let kind = segments.last().copied().unwrap_or_default();
        let singular = kind.trim_end_matches('s');
        let mut out = json!({
            "kind": format!("compute#{singular}List"),
            "id": format!("projects/{project}/{collection}"),
            "selfLink": url(&format!("projects/{project}/{collection}")),
        });
        let page: Vec<Value> = items.iter().skip(start).take(max).cloned().collect();
        if !page.is_empty() {
            out["items"] = Value::Array(page);
        }
        if start + max < items.len() {
            out["nextPageToken"] = json!((start + max).to_string());
        }
        Ok((StatusCode::OK, out))
    }

    /// An aggregated list: every scope's `kind` that the filter selects, by scope.
    fn aggregated(&self, project: &str, kind: &str, query: &BTreeMap<String, String>) -> Served {
        let filter = match query.get("filter").map(|f| Filter::parse(f)) {
            None => None,
            Some(Ok(f)) => Some(f),
            Some(Err(m)) => return Err(bad(format!("Invalid value for field 'filter': {m}"))),
        };
        let prefix = format!("projects/{project}/");
        let mut scopes: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for (k, v) in self.resources.range(prefix.clone()..) {
            let Some(rest) = k.strip_prefix(&prefix) else {
                break;
            };
            let parts: Vec<&str> = rest.split('/').collect();
            if let [scope_kind @ ("zones" | "regions"), scope, c, _] = parts.as_slice()
                && *c == kind
                && self.visible(k)
                && filter.as_ref().is_none_or(|f| f.matches(v))
            {
                scopes
                    .entry(format!("{scope_kind}/{scope}"))
                    .or_default()
                    .push(v.clone());
            }
        }
        let items: Map<String, Value> = scopes
            .into_iter()
            .map(|(scope, list)| (scope, json!({ kind: list })))
            .collect();
        let singular = kind.trim_end_matches('s');
        Ok((
            StatusCode::OK,
            json!({
                "kind": format!("compute#{singular}AggregatedList"),
                "id": format!("projects/{project}/aggregated/{kind}"),
                "items": items,
                "selfLink": url(&format!("projects/{project}/aggregated/{kind}")),
            }),
        ))
    }

    fn check_zone(&self, project: &str, zone: &str) -> Result<&'static str, Response> {
        region_of_zone(zone).ok_or_else(|| not_found(&format!("projects/{project}/zones/{zone}")))
    }

    fn check_region(&self, project: &str, region: &str) -> Result<(), Response> {
        if ZONES.iter().any(|(r, _)| *r == region) {
            Ok(())
        } else {
            Err(not_found(&format!("projects/{project}/regions/{region}")))
        }
    }

    pub(crate) fn serve(
        &mut self,
        knobs: &Knobs,
        project: &str,
        method: &Method,
        segments: &[&str],
        query: &BTreeMap<String, String>,
        body: Value,
    ) -> Served {
        let key = format!("projects/{project}/{}", segments.join("/"));
        let m = method.as_str();
        if m != "GET" && !matches!(segments, [.., "operations", _, "wait"]) {
            self.ready(&key)?;
        }
        match (m, segments) {
            ("GET", [.., "operations", _]) => self
                .op_json(knobs, &key)
                .map(|op| (StatusCode::OK, op))
                .ok_or_else(|| not_found(&key)),
            ("POST", [.., "operations", _, "wait"]) => {
                let key = key.trim_end_matches("/wait");
                self.op_json(knobs, key)
                    .map(|op| (StatusCode::OK, op))
                    .ok_or_else(|| not_found(key))
            }
            ("GET", ["aggregated", kind @ ("instances" | "disks" | "subnetworks")]) => {
                self.aggregated(project, kind, query)
            }
            // Networks.
            ("GET", ["global", "networks"]) => self.list(project, segments, query),
            ("POST", ["global", "networks"]) => {
                self.insert_network(knobs, project, segments, query, &body)
            }
            ("GET", ["global", "networks", _]) => Ok((StatusCode::OK, self.get(&key)?.clone())),
            ("PATCH", ["global", "networks", _]) => {
                self.patch_network(knobs, project, &key, query, &body)
            }
            ("DELETE", ["global", "networks", _]) => {
                self.delete(knobs, project, &key, query, Cloud::network_users)
            }
            // Subnetworks.
            ("GET", ["regions", r, "subnetworks"]) => {
                self.check_region(project, r)?;
                self.list(project, segments, query)
            }
            ("POST", ["regions", r, "subnetworks"]) => {
                self.check_region(project, r)?;
                self.insert_subnetwork(knobs, project, segments, query, &body)
            }
            ("GET", ["regions", _, "subnetworks", _]) => {
                Ok((StatusCode::OK, self.get(&key)?.clone()))
            }
            ("PATCH", ["regions", _, "subnetworks", _]) => {
                self.patch_subnetwork(knobs, project, &key, query, &body)
            }
            ("DELETE", ["regions", _, "subnetworks", _]) => {
                self.delete(knobs, project, &key, query, Cloud::subnetwork_users)
            }
            // Firewalls.
            ("GET", ["global", "firewalls"]) => self.list(project, segments, query),
            ("POST", ["global", "firewalls"]) => {
                self.insert_firewall(knobs, project, segments, query, &body)
            }
            ("GET", ["global", "firewalls", _]) => Ok((StatusCode::OK, self.get(&key)?.clone())),
            ("PATCH", ["global", "firewalls", _]) => {
                self.patch_firewall(knobs, project, &key, query, &body)
            }
            ("DELETE", ["global", "firewalls", _]) => {
                self.delete(knobs, project, &key, query, |_, _| None)
            }
            // Instances.
            ("GET", ["zones", z, "instances"]) => {
                self.check_zone(project, z)?;
                self.list(project, segments, query)
            }
            ("POST", ["zones", z, "instances"]) => {
                let region = self.check_zone(project, z)?;
                self.insert_instance(knobs, project, region, segments, query, &body)
            }
            ("GET", ["zones", _, "instances", _]) => Ok((StatusCode::OK, self.get(&key)?.clone())),
            ("DELETE", ["zones", _, "instances", _]) => {
                self.delete_instance(knobs, project, &key, query)
            }
            ("POST", ["zones", z, "instances", _, verb]) => {
                self.check_zone(project, z)?;
                let key = key.trim_end_matches(&format!("/{verb}")).to_string();
                self.get(&key)?;
                self.instance_verb(knobs, project, &key, verb, query, &body)
            }
            // Disks.
            ("GET", ["zones", z, "disks"]) => {
                self.check_zone(project, z)?;
                self.list(project, segments, query)
            }
            ("POST", ["zones", z, "disks"]) => {
                self.check_zone(project, z)?;
                self.insert_disk(knobs, project, segments, query, &body)
            }
            ("GET", ["zones", _, "disks", _]) => Ok((StatusCode::OK, self.get(&key)?.clone())),
            ("DELETE", ["zones", _, "disks", _]) => {
                self.delete(knobs, project, &key, query, Cloud::disk_users)
            }
            ("POST", ["zones", _, "disks", _, verb]) => {
                let key = key.trim_end_matches(&format!("/{verb}")).to_string();
                self.get(&key)?;
                self.disk_verb(knobs, project, &key, verb, query, &body)
            }
            _ => Err(error(
                StatusCode::NOT_FOUND,
                "notFound",
                &format!("the fake does not serve {m} /compute/v1/{key}"),
            )),
        }
    }

    /// Deletes `key` once its operation is DONE, unless `users` names a resource that uses it.
    fn delete(
        &mut self,
        knobs: &Knobs,
        project: &str,
        key: &str,
        query: &BTreeMap<String, String>,
        users: fn(&Cloud, &str) -> Option<String>,
    ) -> Served {
        self.get(key)?;
        let k = key.to_string();
        self.change(knobs, project, key, "delete", query, move |c| {
            if let Some(user) = users(c, &k) {
                return Err(OpError {
                    http: 400,
                    code: "RESOURCE_IN_USE_BY_ANOTHER_RESOURCE",
                    message: format!("The resource '{k}' is already being used by '{user}'"),
                });
            }
            c.resources.remove(&k);
            c.visible_at.remove(&k);
            Ok(())
        })
    }

    fn network_users(&self, key: &str) -> Option<String> {
        let u = url(key);
        self.resources
            .iter()
            .find(|(_, r)| {
                r["network"].as_str() == Some(u.as_str())
                    || r["networkInterfaces"]
                        .as_array()
                        .is_some_and(|n| n.iter().any(|i| i["network"].as_str() == Some(&u)))
            })
            .map(|(k, _)| k.clone())
    }

    fn subnetwork_users(&self, key: &str) -> Option<String> {
        let u = url(key);
        self.resources
            .iter()
            .find(|(_, r)| {
                r["networkInterfaces"]
                    .as_array()
                    .is_some_and(|n| n.iter().any(|i| i["subnetwork"].as_str() == Some(&u)))
            })
            .map(|(k, _)| k.clone())
    }

    fn disk_users(&self, key: &str) -> Option<String> {
        self.resources
            .get(key)
            .and_then(|d| d["users"].as_array()?.first()?.as_str().map(str::to_string))
    }

    fn insert_network(
        &mut self,
        knobs: &Knobs,
        project: &str,
        segments: &[&str],
        query: &BTreeMap<String, String>,
        body: &Value,
    ) -> Served {
        self.insert(knobs, project, segments, query, body, |_, _, body| {
            if body.get("IPv4Range").is_some() {
                return Err(bad("Legacy networks (IPv4Range) cannot be created"));
            }
            let auto = body["autoCreateSubnetworks"].as_bool().unwrap_or(true);
            let mode = body["routingConfig"]["routingMode"]
                .as_str()
                .unwrap_or("REGIONAL");
            if !matches!(mode, "REGIONAL" | "GLOBAL") {
                return Err(bad(format!(
                    "Invalid value for field 'resource.routingConfig.routingMode': '{mode}'"
                )));
            }
            let mut n = json!({
                "kind": "compute#network",
                "autoCreateSubnetworks": auto,
                "routingConfig": { "routingMode": mode },
                "networkFirewallPolicyEnforcementOrder": "AFTER_CLASSIC_FIREWALL",
                "mtu": body["mtu"].as_i64().unwrap_or(1460),
            });
            if let Some(d) = body["description"].as_str() {
                n["description"] = json!(d);
            }
            Ok((n, Vec::new()))
        })
    }

    fn patch_network(
        &mut self,
        knobs: &Knobs,
        project: &str,
        key: &str,
        query: &BTreeMap<String, String>,
        body: &Value,
    ) -> Served {
        let current = self.get(key)?.clone();
        let patch = body.as_object().cloned().unwrap_or_default();
        for (k, v) in &patch {
            if k != "routingConfig" && current.get(k) != Some(v) {
                return Err(bad(format!(
                    "Invalid value for field 'resource.{k}': only routingConfig can be modified on a network"
                )));
            }
        }
        let fields = patch
            .get("routingConfig")
            .map(|rc| vec![("routingConfig", rc.clone())])
            .unwrap_or_default();
        self.set_when_done(knobs, project, key, "patch", query, fields)
    }

    fn insert_subnetwork(
        &mut self,
        knobs: &Knobs,
        project: &str,
        segments: &[&str],
        query: &BTreeMap<String, String>,
        body: &Value,
    ) -> Served {
        let region = segments[1].to_string();
        self.insert(knobs, project, segments, query, body, |c, _key, body| {
            let network = body["network"].as_str().unwrap_or_default();
            if network.is_empty() {
                return Err(bad("Required field 'resource.network' not specified"));
            }
            let net_key = key_of(project, network);
            c.get(&net_key)?;
            let cidr_s = body["ipCidrRange"].as_str().unwrap_or_default();
            let cidr = parse_cidr(cidr_s)
                .filter(|(_, l)| (8..=29).contains(l))
                .ok_or_else(|| {
                    bad(format!(
                        "Invalid value for field 'resource.ipCidrRange': '{cidr_s}'. Invalid IPCidrRange: a block of /8 to /29 with no host bits set is expected"
                    ))
                })?;
            let net_url = url(&net_key);
            for (k, s) in c.resources.iter().filter(|(k, _)| k.contains("/subnetworks/")) {
                if s["network"].as_str() == Some(&net_url)
                    && parse_cidr(s["ipCidrRange"].as_str().unwrap_or_default())
                        .is_some_and(|o| overlaps(o, cidr))
                {
                    return Err(bad(format!(
                        "Invalid IPCidrRange: {cidr_s} conflicts with existing subnetwork '{}' in region '{}'.",
                        last(k),
                        k.split('/').nth(3).unwrap_or_default()
                    )));
                }
            }
            let gateway = std::net::Ipv4Addr::from(cidr.0 + 1).to_string();
            let mut s = json!({
                "kind": "compute#subnetwork",
                "network": net_url,
                "ipCidrRange": cidr_s,
                "gatewayAddress": gateway,
                "region": url(&format!("projects/{project}/regions/{region}")),
                "privateIpGoogleAccess": body["privateIpGoogleAccess"].as_bool().unwrap_or(false),
                "stackType": "IPV4_ONLY",
                "purpose": "PRIVATE",
                "state": "READY",
                "fingerprint": fingerprint(),
            });
            if let Some(d) = body["description"].as_str() {
                s["description"] = json!(d);
            }
            Ok((s, vec![network_exists(net_key)]))
        })
    }

    fn patch_subnetwork(
        &mut self,
        knobs: &Knobs,
        project: &str,
        key: &str,
        query: &BTreeMap<String, String>,
        body: &Value,
    ) -> Served {
        let current = self.get(key)?.clone();
        if body["fingerprint"].as_str() != current["fingerprint"].as_str() {
            return Err(error(
                StatusCode::PRECONDITION_FAILED,
                "conditionNotMet",
                "Supplied fingerprint does not match current metadata fingerprint.",
            ));
        }
        let patch = body.as_object().cloned().unwrap_or_default();
        const CHANGEABLE: &[&str] = &[
            "privateIpGoogleAccess",
            "enableFlowLogs",
            "logConfig",
            "secondaryIpRanges",
            "stackType",
            "fingerprint",
        ];
        for (k, v) in &patch {
            if !CHANGEABLE.contains(&k.as_str()) && current.get(k) != Some(v) {
                return Err(bad(format!(
                    "Invalid value for field 'resource.{k}': the field cannot be modified on a subnetwork"
                )));
            }
        }
        let k = key.to_string();
        self.change(knobs, project, key, "patch", query, move |c| {
            if let Some(s) = c.resources.get_mut(&k) {
                for (f, v) in patch {
                    if CHANGEABLE.contains(&f.as_str()) && f != "fingerprint" {
                        s[f.as_str()] = v;
                    }
                }
                s["fingerprint"] = json!(fingerprint());
            }
            Ok(())
        })
    }

    fn insert_firewall(
        &mut self,
        knobs: &Knobs,
        project: &str,
        segments: &[&str],
        query: &BTreeMap<String, String>,
        body: &Value,
    ) -> Served {
        self.insert(knobs, project, segments, query, body, |c, _, body| {
            let network = body["network"]
                .as_str()
                .unwrap_or("global/networks/default");
            let net_key = key_of(project, network);
            c.get(&net_key)?;
            let mut f = json!({
                "kind": "compute#firewall",
                "network": url(&net_key),
                "priority": 1000,
                "direction": "INGRESS",
                "disabled": false,
                "logConfig": { "enable": false },
            });
            merge_firewall(&mut f, body)?;
            Ok((f, vec![network_exists(net_key)]))
        })
    }

    fn patch_firewall(
        &mut self,
        knobs: &Knobs,
        project: &str,
        key: &str,
        query: &BTreeMap<String, String>,
        body: &Value,
    ) -> Served {
        let mut next = self.get(key)?.clone();
        for fixed in ["name", "network", "direction"] {
            if let Some(v) = body.get(fixed) {
                let same = match fixed {
                    "network" => {
                        v.as_str().map(|n| url(&key_of(project, n))).as_deref()
                            == next[fixed].as_str()
                    }
                    _ => Some(v) == next.get(fixed),
                };
                if !same {
                    return Err(bad(format!(
                        "Invalid value for field 'resource.{fixed}': it cannot be changed"
                    )));
                }
            }
        }
        let mut patch = body.clone();
        if let Some(p) = patch.as_object_mut() {
            p.remove("network");
        }
        merge_firewall(&mut next, &patch)?;
        let k = key.to_string();
        self.change(knobs, project, key, "patch", query, move |c| {
            c.resources.insert(k, next);
            Ok(())
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn insert_instance(
        &mut self,
        knobs: &Knobs,
        project: &str,
        region: &str,
        segments: &[&str],
        query: &BTreeMap<String, String>,
        body: &Value,
    ) -> Served {
        let zone = segments[1].to_string();
        let region = region.to_string();
        let exhausted = knobs.exhausted_zones.contains(&zone);
        self.insert(knobs, project, segments, query, body, |c, key, body| {
            let mt = body["machineType"].as_str().unwrap_or_default();
            let mt_key = machine_type_key(knobs, project, &zone, "resource.machineType", mt)?;
            check_labels(&body["labels"])?;
            let tags = tag_items(&body["tags"])?;
            let nics = body["networkInterfaces"].as_array().cloned().unwrap_or_default();
            let [nic] = nics.as_slice() else {
                return Err(bad("Exactly one network interface is expected by this fake"));
            };
            let sub_ref = nic["subnetwork"].as_str().unwrap_or_default();
            if sub_ref.is_empty() {
                return Err(bad(
                    "Invalid value for field 'resource.networkInterfaces[0]': a subnetwork is required on a custom-mode network",
                ));
            }
            let sub_key = key_of(project, sub_ref);
            if sub_key.split('/').nth(3) != Some(region.as_str()) {
                return Err(bad(format!(
                    "Invalid value for field 'resource.networkInterfaces[0].subnetwork': '{sub_ref}'. The subnetwork must be in the instance's region {region}"
                )));
            }
            let subnet = c.get(&sub_key)?.clone();
            let disks = body["disks"].as_array().cloned().unwrap_or_default();
            let boot = disks
                .iter()
                .find(|d| d["boot"].as_bool() == Some(true))
                .ok_or_else(|| bad("Invalid value for field 'resource.disks': a boot disk is required"))?;
            let image = boot["initializeParams"]["sourceImage"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            if image.is_empty() {
                return Err(bad(
                    "Invalid value for field 'resource.disks[0].initializeParams.sourceImage': required for a new boot disk",
                ));
            }
            let boot_size = size_of(&boot["initializeParams"]["diskSizeGb"]).unwrap_or(10);
            let metadata = body["metadata"]["items"].as_array().cloned().unwrap_or_default();
            let script_len: usize = metadata
                .iter()
                .map(|i| i["value"].as_str().map_or(0, str::len))
                .sum();
            if script_len > 512 * 1024 {
                return Err(bad("Metadata values may hold at most 512 KB in all"));
            }
            let public = nic["accessConfigs"].as_array().is_some_and(|a| !a.is_empty());
            let name = last(key).to_string();
            let disk_key = format!("projects/{project}/zones/{zone}/disks/{name}");
            let mut i = json!({
                "kind": "compute#instance",
                "zone": url(&format!("projects/{project}/zones/{zone}")),
                "machineType": url(&mt_key),
                "status": "PROVISIONING",
                "cpuPlatform": "Intel Broadwell",
                "canIpForward": false,
                "networkInterfaces": [{
                    "kind": "compute#networkInterface",
                    "name": "nic0",
                    "network": subnet["network"],
                    "subnetwork": url(&sub_key),
                    "fingerprint": fingerprint(),
                    "stackType": "IPV4_ONLY",
                }],
                "disks": [{
                    "kind": "compute#attachedDisk",
                    "type": "PERSISTENT",
                    "mode": "READ_WRITE",
                    "source": url(&disk_key),
                    "deviceName": name,
                    "index": 0,
                    "boot": true,
                    "autoDelete": true,
                    "diskSizeGb": boot_size.to_string(),
                    "interface": "SCSI",
                }],
                "metadata": { "kind": "compute#metadata", "fingerprint": fingerprint(), "items": metadata },
                "tags": { "items": tags, "fingerprint": fingerprint() },
                "labels": body["labels"].as_object().cloned().unwrap_or_default(),
                "labelFingerprint": fingerprint(),
                "fingerprint": fingerprint(),
                "scheduling": { "onHostMaintenance": "MIGRATE", "automaticRestart": true, "preemptible": false },
            });
            if let Some(d) = body["description"].as_str() {
                i["description"] = json!(d);
            }
            let sub_key2 = sub_key.clone();
            let pname = project.to_string();
            let z = zone.clone();
            let checks: Vec<Check> = vec![Box::new(move |c: &mut Cloud, i: &mut Value| {
                if exhausted {
                    return Err(OpError {
                        http: 503,
                        code: "ZONE_RESOURCE_POOL_EXHAUSTED",
                        message: format!(
                            "The zone 'projects/{pname}/zones/{z}' does not have enough resources available to fulfill the request. Try a different zone, or try again later."
                        ),
                    });
                }
                let Some((ip_project, family)) = image_family(&image) else {
                    return Err(OpError {
                        http: 404,
                        code: "RESOURCE_NOT_FOUND",
                        message: format!("The resource '{image}' was not found"),
                    });
                };
                if !IMAGE_FAMILIES.contains(&(ip_project.as_str(), family.as_str())) {
                    return Err(OpError {
                        http: 404,
                        code: "RESOURCE_NOT_FOUND",
                        message: format!("The resource '{}' was not found", key_of("", &image)),
                    });
                }
                let Some(subnet) = c.resources.get(&sub_key2) else {
                    return Err(OpError {
                        http: 404,
                        code: "RESOURCE_NOT_FOUND",
                        message: format!("The resource '{sub_key2}' was not found"),
                    });
                };
                let (base, _) = parse_cidr(subnet["ipCidrRange"].as_str().unwrap_or_default())
                    .unwrap_or((0, 32));
                let host = c.next_host.entry(sub_key2.clone()).or_insert(1);
                *host += 1;
                let ip = std::net::Ipv4Addr::from(base + *host).to_string();
                i["networkInterfaces"][0]["networkIP"] = json!(ip);
                if public {
                    let n = c.next_id;
                    i["networkInterfaces"][0]["accessConfigs"] = json!([{
                        "kind": "compute#accessConfig",
                        "type": "ONE_TO_ONE_NAT",
                        "name": "External NAT",
                        "natIP": format!("34.{}.{}.{}", 100 + (n >> 16) % 100, (n >> 8) % 256, n % 256),
                        "networkTier": "PREMIUM",
                    }]);
                }
                if c.resources.contains_key(&disk_key) {
                    return Err(OpError {
                        http: 409,
                        code: "RESOURCE_ALREADY_EXISTS",
                        message: format!("The resource '{disk_key}' already exists"),
                    });
                }
                let id = c.id();
                let self_link = i["selfLink"].clone();
                c.resources.insert(
                    disk_key.clone(),
                    json!({
                        "kind": "compute#disk",
                        "id": id,
                        "name": last(&disk_key),
                        "creationTimestamp": now_rfc3339(),
                        "sizeGb": boot_size.to_string(),
                        "zone": url(&format!("projects/{pname}/zones/{z}")),
                        "status": "READY",
                        "selfLink": url(&disk_key),
                        "sourceImage": url(&key_of("", &image).replace("projects//", "")),
                        "type": url(&format!("projects/{pname}/zones/{z}/diskTypes/pd-balanced")),
                        "users": [self_link],
                        "labelFingerprint": fingerprint(),
                    }),
                );
                i["status"] = json!("RUNNING");
                Ok(())
            })];
            Ok((i, checks))
        })
    }

    fn delete_instance(
        &mut self,
        knobs: &Knobs,
        project: &str,
        key: &str,
        query: &BTreeMap<String, String>,
    ) -> Served {
        self.get_mut(key)?["status"] = json!("STOPPING");
        let k = key.to_string();
        self.change(knobs, project, key, "delete", query, move |c| {
            let Some(i) = c.resources.remove(&k) else {
                return Ok(());
            };
            let me = url(&k);
            for d in i["disks"].as_array().cloned().unwrap_or_default() {
                let dk = key_of("", d["source"].as_str().unwrap_or_default());
                if d["autoDelete"].as_bool() == Some(true) {
                    c.resources.remove(&dk);
                } else if let Some(users) = c
                    .resources
                    .get_mut(&dk)
                    .and_then(|disk| disk["users"].as_array_mut())
                {
                    users.retain(|u| u.as_str() != Some(&me));
                }
            }
            Ok(())
        })
    }

    fn instance_verb(
        &mut self,
        knobs: &Knobs,
        project: &str,
        key: &str,
        verb: &str,
        query: &BTreeMap<String, String>,
        body: &Value,
    ) -> Served {
        let current = self.get(key)?.clone();
        let k = key.to_string();
        match verb {
            "setLabels" => self.set_labels(knobs, project, key, query, body),
            "setTags" => {
                if body["fingerprint"].as_str() != current["tags"]["fingerprint"].as_str() {
                    return Err(error(
                        StatusCode::PRECONDITION_FAILED,
                        "conditionNotMet",
                        "Supplied fingerprint does not match current metadata fingerprint.",
                    ));
                }
                let tags = json!({ "items": tag_items(body)?, "fingerprint": fingerprint() });
                self.set_when_done(knobs, project, key, verb, query, vec![("tags", tags)])
            }
            "setMachineType" => {
                let status = current["status"].as_str().unwrap_or_default();
                if status != "TERMINATED" {
                    return Err(bad(format!(
                        "Invalid resource usage: 'Instance {} must be stopped (TERMINATED) to change its machine type; it is {status}'.",
                        last(key)
                    )));
                }
                let mt = body["machineType"].as_str().unwrap_or_default();
                let zone = key.split('/').nth(3).unwrap_or_default();
                let mt_key = machine_type_key(knobs, project, zone, "machineType", mt)?;
                let fields = vec![("machineType", json!(url(&mt_key)))];
                self.set_when_done(knobs, project, key, verb, query, fields)
            }
            "stop" | "start" => {
                let (during, after) = if verb == "stop" {
                    ("STOPPING", "TERMINATED")
                } else {
                    ("STAGING", "RUNNING")
                };
                if current["status"] != after {
                    self.get_mut(key)?["status"] = json!(during);
                }
                self.set_when_done(
                    knobs,
                    project,
                    key,
                    verb,
                    query,
                    vec![("status", json!(after))],
                )
            }
            "attachDisk" => {
                let source = body["source"].as_str().unwrap_or_default();
                let dk = key_of(project, source);
                let disk = self.get(&dk)?.clone();
                if dk.split('/').nth(3) != key.split('/').nth(3) {
                    return Err(bad(format!(
                        "Invalid value for field 'resource.source': '{source}'. The disk must be in the instance's zone"
                    )));
                }
                if disk["users"].as_array().is_some_and(|u| !u.is_empty()) {
                    return Err(error(
                        StatusCode::BAD_REQUEST,
                        "resourceInUseByAnotherResource",
                        &format!(
                            "The disk resource '{dk}' is already being used by '{}'",
                            disk["users"][0].as_str().unwrap_or_default()
                        ),
                    ));
                }
                let device = body["deviceName"].as_str().unwrap_or(last(&dk)).to_string();
                let index = current["disks"].as_array().map_or(0, Vec::len);
                let me = url(key);
                let size = disk["sizeGb"].clone();
                self.change(knobs, project, key, "attachDisk", query, move |c| {
                    if let Some(d) = c.resources.get_mut(&dk) {
                        d["users"] = json!([me]);
                    }
                    if let Some(disks) = c
                        .resources
                        .get_mut(&k)
                        .and_then(|i| i["disks"].as_array_mut())
                    {
                        disks.push(json!({
                            "kind": "compute#attachedDisk",
                            "type": "PERSISTENT",
                            "mode": "READ_WRITE",
                            "source": url(&dk),
                            "deviceName": device,
                            "index": index,
                            "boot": false,
                            "autoDelete": false,
                            "diskSizeGb": size,
                            "interface": "SCSI",
                        }));
                    }
                    Ok(())
                })
            }
            "detachDisk" => {
                let device = query.get("deviceName").cloned().unwrap_or_default();
                let Some(attached) = current["disks"]
                    .as_array()
                    .and_then(|d| d.iter().find(|d| d["deviceName"] == json!(device)))
                    .cloned()
                else {
                    return Err(bad(format!(
                        "Invalid value for field 'deviceName': '{device}'. No attached disk found with device name '{device}'"
                    )));
                };
                let dk = key_of(project, attached["source"].as_str().unwrap_or_default());
                self.change(knobs, project, key, "detachDisk", query, move |c| {
                    if let Some(d) = c.resources.get_mut(&dk) {
                        d["users"] = json!([]);
                    }
                    if let Some(disks) = c
                        .resources
                        .get_mut(&k)
                        .and_then(|i| i["disks"].as_array_mut())
                    {
                        disks.retain(|d| d["deviceName"] != json!(device));
                    }
                    Ok(())
                })
            }
            _ => Err(error(
                StatusCode::NOT_FOUND,
                "notFound",
                &format!("the fake does not serve instances.{verb}"),
            )),
        }
    }

    fn set_labels(
        &mut self,
        knobs: &Knobs,
        project: &str,
        key: &str,
        query: &BTreeMap<String, String>,
        body: &Value,
    ) -> Served {
        let current = self.get(key)?;
        match body["labelFingerprint"].as_str() {
            None => {
                return Err(bad("Required field 'labelFingerprint' not specified"));
            }
            Some(f) if Some(f) != current["labelFingerprint"].as_str() => {
                return Err(error(
                    StatusCode::PRECONDITION_FAILED,
                    "conditionNotMet",
                    "Labels fingerprint either invalid or resource labels have changed",
                ));
            }
            Some(_) => {}
        }
        check_labels(&body["labels"])?;
        let labels = body["labels"].as_object().cloned().unwrap_or_default();
        let fields = vec![
            ("labels", Value::Object(labels)),
            ("labelFingerprint", json!(fingerprint())),
        ];
        self.set_when_done(knobs, project, key, "setLabels", query, fields)
    }

    fn insert_disk(
        &mut self,
        knobs: &Knobs,
        project: &str,
        segments: &[&str],
        query: &BTreeMap<String, String>,
        body: &Value,
    ) -> Served {
        let zone = segments[1].to_string();
        let extra = knobs.extra_disk_types.clone();
        self.insert(knobs, project, segments, query, body, |_, _, body| {
            let ty_ref = body["type"]
                .as_str()
                .map(str::to_string)
                .unwrap_or(format!("zones/{zone}/diskTypes/pd-standard"));
            let ty_key = key_of(project, &ty_ref);
            let ty = ty_key
                .strip_prefix(&format!("projects/{project}/zones/{zone}/diskTypes/"))
                .unwrap_or_default();
            let min = DISK_TYPES
                .iter()
                .find(|(t, _)| *t == ty)
                .map(|(_, min)| *min)
                .or_else(|| extra.iter().any(|t| t == ty).then_some(1));
            let Some(min) = min else {
                return Err(bad(format!(
                    "Invalid value for field 'resource.type': '{ty_ref}'. Disk type '{}' does not exist in zone '{zone}'.",
                    last(&ty_ref)
                )));
            };
            let size = match &body["sizeGb"] {
                Value::Null => min.max(10),
                v => size_of(v).ok_or_else(|| {
                    bad("Invalid value for field 'resource.sizeGb': an int64 is expected")
                })?,
            };
            if size < min || size > 65_536 {
                return Err(bad(format!(
                    "Invalid value for field 'resource.sizeGb': '{size}'. Disk size must be between {min} GB and 65536 GB for disk type {ty}"
                )));
            }
            check_labels(&body["labels"])?;
            let mut d = json!({
                "kind": "compute#disk",
                "sizeGb": size.to_string(),
                "zone": url(&format!("projects/{project}/zones/{zone}")),
                "status": "CREATING",
                "type": url(&ty_key),
                "users": [],
                "labels": body["labels"].as_object().cloned().unwrap_or_default(),
                "labelFingerprint": fingerprint(),
                "physicalBlockSizeBytes": "4096",
            });
            if let Some(desc) = body["description"].as_str() {
                d["description"] = json!(desc);
            }
            let ready: Check = Box::new(|_: &mut Cloud, d: &mut Value| {
                d["status"] = json!("READY");
                Ok(())
            });
            Ok((d, vec![ready]))
        })
    }

    fn disk_verb(
        &mut self,
        knobs: &Knobs,
        project: &str,
        key: &str,
        verb: &str,
        query: &BTreeMap<String, String>,
        body: &Value,
    ) -> Served {
        match verb {
            "setLabels" => self.set_labels(knobs, project, key, query, body),
            "resize" => {
                let current = size_of(&self.get(key)?["sizeGb"]).unwrap_or(0);
                let Some(size) = size_of(&body["sizeGb"]) else {
                    return Err(bad("Required field 'sizeGb' not specified"));
                };
                if size <= current {
                    return Err(bad(format!(
                        "Invalid value for field 'sizeGb': '{size}'. Requested disk size cannot be smaller than or equal to the current size {current} GB"
                    )));
                }
                let fields = vec![("sizeGb", json!(size.to_string()))];
                self.set_when_done(knobs, project, key, verb, query, fields)
            }
            _ => Err(error(
                StatusCode::NOT_FOUND,
                "notFound",
                &format!("the fake does not serve disks.{verb}"),
            )),
        }
    }
}

/// A check an insert's operation makes when it is carried out (the resource may change).
type Check = Box<dyn FnOnce(&mut Cloud, &mut Value) -> Result<(), OpError> + Send>;

/// The network still exists when the operation is carried out.
fn network_exists(net_key: String) -> Check {
    Box::new(move |c: &mut Cloud, _: &mut Value| {
        if c.resources.contains_key(&net_key) {
            Ok(())
        } else {
            Err(OpError {
                http: 404,
                code: "RESOURCE_NOT_FOUND",
                message: format!("The resource '{net_key}' was not found"),
            })
        }
    })
}

/// `(project, family)` of `projects/p/global/images/family/f` (a URL or a path).
fn image_family(image: &str) -> Option<(String, String)> {
    let k = key_of("", image);
    let parts: Vec<&str> = k.split('/').collect();
    match parts.as_slice() {
        ["projects", p, "global", "images", "family", f] => Some((p.to_string(), f.to_string())),
        _ => None,
    }
}

fn tag_items(tags: &Value) -> Result<Vec<String>, Response> {
    let items: Vec<String> = tags["items"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|t| t.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    if let Some(t) = items.iter().find(|t| !valid_name(t)) {
        return Err(bad(format!(
            "Invalid value for field 'resource.tags.items': '{t}'. Must be a match of regex '(?:[a-z](?:[-a-z0-9]{{0,61}}[a-z0-9])?)'"
        )));
    }
    Ok(items)
}

/// Sets the rule fields of `patch` on firewall `f` and checks the result.
fn merge_firewall(f: &mut Value, patch: &Value) -> Result<(), Response> {
    const FIELDS: &[&str] = &[
        "description",
        "priority",
        "direction",
        "allowed",
        "denied",
        "sourceRanges",
        "destinationRanges",
        "sourceTags",
        "targetTags",
        "disabled",
        "logConfig",
    ];
    for field in FIELDS {
        if let Some(v) = patch.get(*field) {
            f[*field] = v.clone();
        }
    }
    let direction = f["direction"].as_str().unwrap_or_default();
    if !matches!(direction, "INGRESS" | "EGRESS") {
        return Err(bad(format!(
            "Invalid value for field 'resource.direction': '{direction}'"
        )));
    }
    let priority = f["priority"].as_i64().unwrap_or(-1);
    if !(0..=65535).contains(&priority) {
        return Err(bad(format!(
            "Invalid value for field 'resource.priority': '{priority}'. Must be between 0 and 65535"
        )));
    }
    let nonempty = |k: &str| f[k].as_array().is_some_and(|a| !a.is_empty());
    if nonempty("allowed") == nonempty("denied") {
        return Err(bad(
            "Exactly one of 'resource.allowed' or 'resource.denied' must be specified",
        ));
    }
    let rules = if nonempty("allowed") {
        "allowed"
    } else {
        "denied"
    };
    for r in f[rules].as_array().cloned().unwrap_or_default() {
        let proto = r["IPProtocol"].as_str().unwrap_or_default();
        if !matches!(
            proto,
            "tcp" | "udp" | "icmp" | "esp" | "ah" | "sctp" | "ipip" | "all"
        ) && proto.parse::<u8>().is_err()
        {
            return Err(bad(format!(
                "Invalid value for field 'resource.{rules}[].IPProtocol': '{proto}'"
            )));
        }
        let ports = r["ports"].as_array().cloned().unwrap_or_default();
        if !ports.is_empty() && !matches!(proto, "tcp" | "udp" | "sctp") {
            return Err(bad(format!(
                "Invalid value for field 'resource.{rules}[].ports': ports are only allowed for tcp, udp and sctp, not '{proto}'"
            )));
        }
        for p in ports {
            let p = p.as_str().unwrap_or_default();
            let range: Option<(u32, u32)> = match p.split_once('-') {
                Some((a, b)) => a.parse().ok().zip(b.parse().ok()),
                None => p.parse().ok().map(|a| (a, a)),
            };
            if !range.is_some_and(|(a, b)| a <= b && b <= 65535) {
                return Err(bad(format!(
                    "Invalid value for field 'resource.{rules}[].ports': '{p}'"
                )));
            }
        }
    }
    let ranges = if direction == "INGRESS" {
        "sourceRanges"
    } else {
        "destinationRanges"
    };
    if direction == "INGRESS" && !nonempty("sourceRanges") && !nonempty("sourceTags") {
        return Err(bad("An INGRESS firewall needs sourceRanges or sourceTags"));
    }
    if direction == "EGRESS" && !nonempty("destinationRanges") {
        return Err(bad("An EGRESS firewall needs destinationRanges"));
    }
    for r in f[ranges].as_array().cloned().unwrap_or_default() {
        let r = r.as_str().unwrap_or_default();
        if parse_cidr(r).is_none() {
            return Err(bad(format!(
                "Invalid value for field 'resource.{ranges}[]': '{r}'. Must be a CIDR with no host bits set"
            )));
        }
    }
    tag_items(&json!({ "items": f["targetTags"] }))?;
    Ok(())
}

/// A list filter: terms joined by AND.
struct Filter(Vec<Term>);

struct Term {
    path: Vec<String>,
    op: FilterOp,
    value: String,
    regex: Option<regex::Regex>,
}

enum FilterOp {
    Equal,
    NotEqual,
    Matches,
    NotMatches,
}

impl Filter {
    fn parse(text: &str) -> Result<Filter, String> {
        let text = text.trim();
        let parts: Vec<String> = if text.starts_with('(') {
            let mut out = Vec::new();
            let mut depth = 0;
            let mut cur = String::new();
            for ch in text.chars() {
                match ch {
                    '(' => {
                        if depth > 0 {
                            cur.push(ch);
                        }
                        depth += 1;
                    }
                    ')' => {
                        depth -= 1;
                        if depth == 0 {
                            out.push(std::mem::take(&mut cur));
                        } else {
                            cur.push(ch);
                        }
                    }
                    _ if depth > 0 => cur.push(ch),
                    _ => {}
                }
            }
            out
        } else {
            text.split(" AND ").map(str::to_string).collect()
        };
        let terms = parts
            .iter()
            .map(|p| Term::parse(p.trim()))
            .collect::<Result<_, _>>()?;
        Ok(Filter(terms))
    }

    fn matches(&self, v: &Value) -> bool {
        self.0.iter().all(|t| t.matches(v))
    }
}

impl Term {
    fn parse(text: &str) -> Result<Term, String> {
        let (field, op, value) = if let Some((f, v)) = text.split_once(" eq ") {
            (f, FilterOp::Matches, v)
        } else if let Some((f, v)) = text.split_once(" ne ") {
            (f, FilterOp::NotMatches, v)
        } else if let Some((f, v)) = text.split_once("!=") {
            (f, FilterOp::NotEqual, v)
        } else if let Some((f, v)) = text.split_once('=') {
            (f, FilterOp::Equal, v)
        } else {
            return Err(format!("cannot parse the term `{text}`"));
        };
        let value = value.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
            .unwrap_or(value)
            .to_string();
        let regex = match op {
            FilterOp::Matches | FilterOp::NotMatches => Some(
                regex::Regex::new(&format!("^(?:{value})$"))
                    .map_err(|e| format!("invalid regular expression `{value}`: {e}"))?,
            ),
            _ => None,
        };
        Ok(Term {
            path: field.trim().split('.').map(str::to_string).collect(),
            op,
            value,
            regex,
        })
    }

    fn matches(&self, v: &Value) -> bool {
        let mut cur = v;
        for p in &self.path {
            cur = &cur[p.as_str()];
        }
        let text = match cur {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            other => other.to_string(),
        };
        match self.op {
            FilterOp::Equal => text == self.value,
            FilterOp::NotEqual => text != self.value,
            FilterOp::Matches => self.regex.as_ref().is_some_and(|r| r.is_match(&text)),
            FilterOp::NotMatches => !self.regex.as_ref().is_some_and(|r| r.is_match(&text)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_parse_the_forms_the_provider_sends() {
        let v = json!({ "name": "web-1", "labels": { "chimera-stack": "shop" } });
        assert!(
            Filter::parse("labels.chimera-stack = \"shop\"")
                .unwrap()
                .matches(&v)
        );
        assert!(
            !Filter::parse("labels.chimera-stack = other")
                .unwrap()
                .matches(&v)
        );
        assert!(
            Filter::parse("name eq \"web-1|web-2\"")
                .unwrap()
                .matches(&v)
        );
        assert!(!Filter::parse("name eq \"web\"").unwrap().matches(&v));
        assert!(
            Filter::parse("(name eq web-.*) (labels.chimera-stack = shop)")
                .unwrap()
                .matches(&v)
        );
        assert!(Filter::parse("name eq \"(\"").is_err());
    }

    #[test]
    fn regional_series_are_offered_only_where_listed() {
        assert!(machine_type_offered("us-east1", "e2-small"));
        assert!(!machine_type_offered("us-east1", "t2a-standard-1"));
        assert!(machine_type_offered("us-central1", "t2a-standard-1"));
        assert!(!machine_type_offered("us-east1", "t3.micro"));
        assert_eq!(region_of_zone("us-east1-b"), Some("us-east1"));
        assert_eq!(region_of_zone("us-east1-a"), None);
    }
}
