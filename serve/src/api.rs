//! The JSON API beyond the stack list: one stack's status with its controls, its generations,
//! drift, last plan, cost, audit trail, applied resource graph and events; the providers'
//! circuits. Every route is a `GET`; the switches (pause, resume, release) are in `http`.
//!
//! `{stack}` is a stack's name or its path as the daemon was given it. Nothing here carries a
//! resource's attributes: the graph is addresses, kinds, providers and what the daemon thinks
//! of each, so no sensitive value can leave through it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chimera_model::StateResource;
use chimera_workflow::Stack;
use serde::Serialize;
use serde_json::json;

use crate::control::Backoff;
use crate::{DeadLetter, Event, Shared, StackStatus, locked};

/// What a list route returns when `?limit=` is not given.
const DEFAULT_LIMIT: usize = 100;
/// The events `/api/stacks/{stack}` carries.
const STATUS_EVENTS: usize = 20;

pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/api/stacks/{stack}", get(stack))
        .route("/api/stacks/{stack}/generations", get(generations))
        .route("/api/stacks/{stack}/drift", get(drift))
        .route("/api/stacks/{stack}/plan", get(plan))
        .route("/api/stacks/{stack}/cost", get(cost))
        .route("/api/stacks/{stack}/audit", get(audit))
        .route("/api/stacks/{stack}/graph", get(graph))
        .route("/api/stacks/{stack}/events", get(events))
        .route("/api/circuits", get(circuits))
}

/// `?limit=N`: how many entries a list route returns, the newest first (the default when it
/// is missing or malformed).
fn limit(query: Option<String>) -> usize {
    query
        .as_deref()
        .unwrap_or_default()
        .split('&')
        .find_map(|kv| kv.strip_prefix("limit=")?.parse().ok())
        .unwrap_or(DEFAULT_LIMIT)
}

/// A JSON error: `{"error": message}` with its status.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

type Answer = Result<Response, ApiError>;

fn unknown(stack: &str) -> ApiError {
    ApiError(
        StatusCode::NOT_FOUND,
        format!("no stack `{stack}` is served here; GET /api/stacks lists them"),
    )
}

/// A stack the daemon serves: its key, and its status once a tick has seen it.
struct Found {
    key: String,
    status: StackStatus,
}

impl Found {
    /// The stack's name, or its path before its first compile.
    fn label(&self) -> &str {
        self.status.stack.as_deref().unwrap_or(&self.key)
    }
}

fn find(shared: &Shared, stack: &str) -> Result<Found, ApiError> {
    let key = shared.key_of(stack).ok_or_else(|| unknown(stack))?;
    let status = shared.status_of(&key).unwrap_or_else(|| StackStatus {
        path: key.clone(),
        mode: shared.cfg.mode.as_str(),
        outcome: "pending".into(),
        ..StackStatus::default()
    });
    Ok(Found { key, status })
}

/// The stack opened on its state (which needs its name: known after its first compile).
fn open(shared: &Shared, found: &Found) -> Result<(Stack, String), ApiError> {
    match (shared.open(&found.key), found.status.stack.clone()) {
        (Some(stack), Some(name)) => Ok((stack, name)),
        _ => Err(ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "stack `{}` has not compiled yet, so its state is not known; try again after a tick",
                found.key
            ),
        )),
    }
}

fn state_error(stack: &str, e: &chimera_workflow::Error) -> ApiError {
    let lines: Vec<String> = e
        .diagnostics
        .iter()
        .map(|d| format!("{}: {}", d.summary, d.detail))
        .collect();
    ApiError(
        StatusCode::BAD_GATEWAY,
        format!(
            "cannot read the state of stack `{stack}`: {}",
            lines.join("; ")
        ),
    )
}

/// `/api/stacks/{stack}`: the status, flattened, with the daemon's controls and the latest
/// events.
#[derive(Debug, Serialize)]
struct StackView {
    #[serde(flatten)]
    status: StackStatus,
    /// Reconciles of this stack are paused (by itself, or all stacks are).
    paused: bool,
    /// All stacks are paused.
    paused_all: bool,
    dead_letters: Vec<DeadLetter>,
    backoffs: Vec<Backoff>,
    /// The latest events first.
    events: Vec<Event>,
}

async fn stack(State(shared): State<Arc<Shared>>, Path(stack): Path<String>) -> Answer {
    let found = find(&shared, &stack)?;
    let (paused, paused_all, dead_letters, backoffs) = {
        let control = locked(&shared.control);
        (
            control.is_paused(&found.key),
            control.paused_all(),
            control.dead_letters(&found.key),
            control.backoffs(&found.key, Instant::now()),
        )
    };
    let events = shared
        .detail_of(&found.key)
        .events
        .into_iter()
        .take(STATUS_EVENTS)
        .collect();
    Ok(Json(StackView {
        status: found.status,
        paused,
        paused_all,
        dead_letters,
        backoffs,
        events,
    })
    .into_response())
}

/// One generation, as the timeline shows it.
#[derive(Debug, Serialize)]
struct Generation {
    serial: u64,
    parent: Option<u64>,
    /// When it was opened (RFC 3339).
    time: String,
    finished_at: Option<String>,
    /// `complete`, `partial` or `applying`.
    status: String,
    actor: String,
    message: String,
}

async fn generations(
    State(shared): State<Arc<Shared>>,
    Path(stack): Path<String>,
    RawQuery(query): RawQuery,
) -> Answer {
    let found = find(&shared, &stack)?;
    let (mut opened, name) = open(&shared, &found)?;
    let history = opened.history().await.map_err(|e| state_error(&name, &e))?;
    let total = history.len();
    let generations: Vec<Generation> = history
        .into_iter()
        .rev()
        .take(limit(query))
        .map(|g| Generation {
            serial: g.serial,
            parent: g.parent,
            time: g.created_at,
            finished_at: g.finished_at,
            status: g.status,
            actor: g.actor,
            message: g.message,
        })
        .collect();
    Ok(Json(json!({ "stack": name, "total": total, "generations": generations })).into_response())
}

async fn drift(State(shared): State<Arc<Shared>>, Path(stack): Path<String>) -> Answer {
    let found = find(&shared, &stack)?;
    let s = &found.status;
    let drift: Vec<_> = s
        .drift
        .iter()
        .map(|(address, change)| json!({ "address": address, "change": change }))
        .collect();
    Ok(Json(json!({
        "stack": found.label(),
        "mode": s.mode,
        "outcome": s.outcome,
        "last_reconcile": s.last_reconcile,
        "drift": drift,
        "proposed": s.proposed,
        "held": s.held,
    }))
    .into_response())
}

async fn plan(State(shared): State<Arc<Shared>>, Path(stack): Path<String>) -> Answer {
    let found = find(&shared, &stack)?;
    let plan = shared.detail_of(&found.key).last_plan;
    // No plan yet is a 404 that still says so in the route's own shape.
    let status = if plan.is_some() {
        StatusCode::OK
    } else {
        StatusCode::NOT_FOUND
    };
    Ok((
        status,
        Json(json!({ "stack": found.label(), "plan": plan })),
    )
        .into_response())
}

async fn cost(State(shared): State<Arc<Shared>>, Path(stack): Path<String>) -> Answer {
    let found = find(&shared, &stack)?;
    Ok(Json(json!({
        "stack": found.label(),
        "monthly_cost": found.status.monthly_cost,
        "currency": "USD",
    }))
    .into_response())
}

async fn audit(
    State(shared): State<Arc<Shared>>,
    Path(stack): Path<String>,
    RawQuery(query): RawQuery,
) -> Answer {
    let found = find(&shared, &stack)?;
    let (mut opened, name) = open(&shared, &found)?;
    // The store reads audit entries only as part of a stack's dump.
    let dumped = match opened.store().await {
        Ok(store) => store
            .dump(&name)
            .await
            .map_err(chimera_workflow::Error::from),
        Err(e) => Err(e),
    };
    let entries = dumped
        .map_err(|e| state_error(&name, &e))?
        .map(|d| d.audit)
        .unwrap_or_default();
    let total = entries.len();
    let entries: Vec<_> = entries.into_iter().rev().take(limit(query)).collect();
    Ok(Json(json!({ "stack": name, "total": total, "entries": entries })).into_response())
}

/// A resource in the graph: what it is and what the daemon thinks of it. No attributes.
#[derive(Debug, Serialize)]
struct Node {
    address: String,
    kind: &'static str,
    provider: &'static str,
    /// `ok`, `drifted`, `backoff` (heals failing, retried later) or `parked` (a dead letter).
    status: &'static str,
    /// `deleted` or `changed` when it drifted at the last reconcile.
    drift: Option<String>,
    /// Its longest chain of dependencies (0: depends on nothing in the stack).
    depth: usize,
}

/// `from` depends on `to`.
#[derive(Debug, Serialize)]
struct Edge {
    from: String,
    to: String,
}

async fn graph(State(shared): State<Arc<Shared>>, Path(stack): Path<String>) -> Answer {
    let found = find(&shared, &stack)?;
    let (mut opened, name) = open(&shared, &found)?;
    let rows = opened
        .state_rows()
        .await
        .map_err(|e| state_error(&name, &e))?;
    let (parked, backing_off): (BTreeSet<String>, BTreeSet<String>) = {
        let control = locked(&shared.control);
        (
            control
                .dead_letters(&found.key)
                .into_iter()
                .map(|d| d.address)
                .collect(),
            control
                .backoffs(&found.key, Instant::now())
                .into_iter()
                .map(|b| b.address)
                .collect(),
        )
    };
    let drift: BTreeMap<&str, &str> = found
        .status
        .drift
        .iter()
        .map(|(a, c)| (a.as_str(), c.as_str()))
        .collect();
    let (nodes, edges) = draw(&rows, |address| {
        let change = drift.get(address).map(|c| c.to_string());
        let status = if parked.contains(address) {
            "parked"
        } else if backing_off.contains(address) {
            "backoff"
        } else if change.is_some() {
            "drifted"
        } else {
            "ok"
        };
        (status, change)
    });
    Ok(Json(json!({
        "stack": name,
        "generation": found.status.generation,
        "nodes": nodes,
        "edges": edges,
    }))
    .into_response())
}

/// Nodes (by address, with their dependency depth) and edges of the applied resources. A
/// dependency outside the rows (a resource state no longer holds) has no edge.
fn draw(
    rows: &[StateResource],
    judge: impl Fn(&str) -> (&'static str, Option<String>),
) -> (Vec<Node>, Vec<Edge>) {
    let deps: BTreeMap<String, Vec<String>> = rows
        .iter()
        .map(|r| {
            (
                r.address.to_string(),
                r.deps.iter().map(ToString::to_string).collect(),
            )
        })
        .collect();
    let mut depth: BTreeMap<&str, usize> = BTreeMap::new();
    // Longest path by relaxation: at most one round per resource (state has no cycles; a
    // damaged one with a cycle stops at the bound instead of looping).
    for _ in 0..=deps.len() {
        let mut changed = false;
        for (address, ds) in &deps {
            let d = ds
                .iter()
                .filter_map(|dep| deps.get_key_value(dep.as_str()))
                .map(|(k, _)| depth.get(k.as_str()).copied().unwrap_or(0) + 1)
                .max()
                .unwrap_or(0);
            if depth.get(address.as_str()) != Some(&d) {
                depth.insert(address, d);
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    let nodes = rows
        .iter()
        .map(|r| {
            let address = r.address.to_string();
            let (status, drift) = judge(&address);
            Node {
                depth: depth.get(address.as_str()).copied().unwrap_or(0),
                kind: r.address.kind.as_str(),
                provider: r.provider.as_str(),
                status,
                drift,
                address,
            }
        })
        .collect();
    let edges = deps
        .iter()
        .flat_map(|(from, ds)| {
            ds.iter().filter(|d| deps.contains_key(*d)).map(|to| Edge {
                from: from.clone(),
                to: to.clone(),
            })
        })
        .collect();
    (nodes, edges)
}

async fn events(
    State(shared): State<Arc<Shared>>,
    Path(stack): Path<String>,
    RawQuery(query): RawQuery,
) -> Answer {
    let found = find(&shared, &stack)?;
    let events: Vec<Event> = shared
        .detail_of(&found.key)
        .events
        .into_iter()
        .take(limit(query))
        .collect();
    Ok(Json(json!({ "stack": found.label(), "events": events })).into_response())
}

async fn circuits(State(shared): State<Arc<Shared>>) -> Response {
    Json(json!({ "circuits": shared.guard.circuits() })).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(address: &str, deps: &[&str]) -> StateResource {
        let mut r: StateResource = serde_json::from_value(json!({
            "address": address,
            "provider": "local",
            "region": "us-east",
            "native_region": "us-east",
            "attrs": { "password": "hunter2" },
            "sensitive": ["password"],
            "hash": "0".repeat(64),
            "cloud_id": "id",
            "outputs": {},
            "deps": [],
        }))
        .expect("a state row");
        r.deps = deps.iter().map(|d| d.parse().unwrap()).collect();
        r
    }

    #[test]
    fn depth_is_the_longest_chain_of_dependencies_and_attributes_stay_out() {
        let rows = [
            row("instance.web", &["subnet.a", "firewall.web"]),
            row("subnet.a", &["network.main"]),
            row("network.main", &[]),
            row("firewall.web", &["network.main"]),
            row("volume.data", &["instance.web", "volume.gone"]),
        ];
        let (nodes, edges) = draw(&rows, |a| {
            if a == "instance.web" {
                ("drifted", Some("deleted".into()))
            } else {
                ("ok", None)
            }
        });
        let depth: BTreeMap<&str, usize> = nodes
            .iter()
            .map(|n| (n.address.as_str(), n.depth))
            .collect();
        assert_eq!(depth["network.main"], 0);
        assert_eq!(depth["subnet.a"], 1);
        assert_eq!(depth["instance.web"], 2);
        assert_eq!(depth["volume.data"], 3);
        assert_eq!(edges.len(), 5, "no edge to a resource not in state");
        let text = serde_json::to_string(&(nodes, edges)).unwrap();
        assert!(
            !text.contains("hunter2") && !text.contains("password"),
            "{text}"
        );
        assert!(text.contains(r#""status":"drifted""#), "{text}");
    }
}
