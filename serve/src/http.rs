//! The daemon's own endpoints: health, readiness, metrics, the stack list, and the control
//! switches (pause, resume, release a parked resource).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use crate::{Event, Shared, StackStatus, locked, now_unix};

pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route("/api/stacks", get(stacks))
        .route("/api/pause", post(pause_all))
        .route("/api/resume", post(resume_all))
        .route("/api/reconcile", post(reconcile_all))
        .route("/api/stacks/{stack}/reconcile", post(reconcile))
        .route("/api/stacks/{stack}/pause", post(pause))
        .route("/api/stacks/{stack}/resume", post(resume))
        .route(
            "/api/stacks/{stack}/dead-letters/{address}/release",
            post(release),
        )
}

pub(crate) async fn bearer(
    State(shared): State<Arc<Shared>>,
    req: Request,
    next: Next,
) -> Response {
    // The dashboard page and its assets hold no data (the page asks the API with the token
    // given in its own address), and a browser cannot add a header to loading them.
    let path = req.uri().path();
    let public = path == "/" || path == "/dashboard" || path.starts_with("/assets/");
    if let Some(token) = shared
        .cfg
        .token
        .as_deref()
        .filter(|t| !t.is_empty() && !public)
    {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        // Equal lengths first, then a comparison that does not stop at the first difference.
        let ok = given.is_some_and(|g| {
            g.len() == token.len()
                && g.bytes()
                    .zip(token.bytes())
                    .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                    == 0
        });
        if !ok {
            return (StatusCode::UNAUTHORIZED, "a bearer token is required\n").into_response();
        }
    }
    next.run(req).await
}

async fn readyz(State(shared): State<Arc<Shared>>) -> Response {
    if shared.ready.load(Ordering::SeqCst) {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "the first tick has not finished\n",
        )
            .into_response()
    }
}

async fn metrics_text(State(shared): State<Arc<Shared>>) -> Response {
    match shared.metrics.encode() {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e).into_response(),
    }
}

async fn stacks(State(shared): State<Arc<Shared>>) -> Json<Vec<StackStatus>> {
    Json(locked(&shared.status).values().cloned().collect())
}

fn unknown(stack: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({ "error": format!("no stack `{stack}` is served here; GET /api/stacks lists them") })),
    )
        .into_response()
}

fn set_pause(shared: &Shared, key: Option<&str>, paused: bool) {
    locked(&shared.control).pause(key, paused);
    let what = if paused { "paused" } else { "resumed" };
    tracing::info!(
        stack = key.unwrap_or("*"),
        action = what,
        "reconciles {what}"
    );
    match key {
        Some(k) => shared.metrics.paused(k, paused),
        None => {
            for p in &shared.cfg.stacks {
                shared.metrics.paused(&p.display().to_string(), paused);
            }
        }
    }
}

async fn pause_all(State(shared): State<Arc<Shared>>) -> Json<serde_json::Value> {
    set_pause(&shared, None, true);
    Json(json!({ "paused": true }))
}

async fn resume_all(State(shared): State<Arc<Shared>>) -> Json<serde_json::Value> {
    set_pause(&shared, None, false);
    Json(json!({ "paused": false }))
}

/// Starts the next tick now (the daemon's gated heal, as on any tick): what `chimera agent
/// heal` asks for when drift is to be put back.
async fn reconcile_all(State(shared): State<Arc<Shared>>) -> Json<serde_json::Value> {
    tracing::info!(stack = "*", action = "reconcile", "reconcile requested");
    shared.wake.notify_one();
    Json(json!({ "requested": true }))
}

async fn reconcile(State(shared): State<Arc<Shared>>, Path(stack): Path<String>) -> Response {
    let Some(key) = shared.key_of(&stack) else {
        return unknown(&stack);
    };
    shared.event(
        &key,
        Event {
            at: now_unix(),
            kind: "requested",
            address: None,
            detail: "a reconcile was requested: the next tick starts now".into(),
            generation: None,
        },
    );
    tracing::info!(stack = %stack, action = "reconcile", "reconcile requested");
    shared.wake.notify_one();
    Json(json!({ "stack": stack, "requested": true })).into_response()
}

async fn pause(State(shared): State<Arc<Shared>>, Path(stack): Path<String>) -> Response {
    let Some(key) = shared.key_of(&stack) else {
        return unknown(&stack);
    };
    set_pause(&shared, Some(&key), true);
    Json(json!({ "stack": stack, "paused": true })).into_response()
}

async fn resume(State(shared): State<Arc<Shared>>, Path(stack): Path<String>) -> Response {
    let Some(key) = shared.key_of(&stack) else {
        return unknown(&stack);
    };
    set_pause(&shared, Some(&key), false);
    Json(json!({ "stack": stack, "paused": false })).into_response()
}

async fn release(
    State(shared): State<Arc<Shared>>,
    Path((stack, address)): Path<(String, String)>,
) -> Response {
    let Some(key) = shared.key_of(&stack) else {
        return unknown(&stack);
    };
    let was = locked(&shared.control).release(&key, &address);
    if !was {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({ "error": format!("`{address}` is not parked in stack `{stack}`") })),
        )
            .into_response();
    }
    shared
        .metrics
        .dead_letters(&key, locked(&shared.control).dead_letters(&key).len());
    shared.event(
        &key,
        Event {
            at: now_unix(),
            kind: "released",
            address: Some(address.clone()),
            detail: "released by a person: healed again from the next tick".into(),
            generation: None,
        },
    );
    tracing::info!(stack = %stack, address = %address, action = "release", "parked resource released");
    Json(json!({ "stack": stack, "address": address, "released": true })).into_response()
}
