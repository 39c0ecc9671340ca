//! `chimera serve`: the reconcile daemon, a client of the workflow library. Every tick, each
//! stack is reconciled (`Stack::reconcile`: recover, read the clouds, heal drift back to the
//! last applied generation or only record it, by the stack's heal mode); what happened is kept
//! for the HTTP API and counted in Prometheus metrics.
//!
//! HTTP (axum): `/healthz`, `/readyz` (after the first tick), `/metrics` (Prometheus text),
//! `/api/stacks` (each stack's last reconcile: outcome, drift, heal, policy denials). Listening
//! beyond loopback needs a bearer token. Sensitive values never reach here: drift and plans
//! carry `(sensitive)` or digests only.

pub mod guard;
mod metrics;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chimera_workflow::{ApplyRequest, HealMode, Settings, Stack};
use serde::Serialize;

pub use metrics::Metrics;

/// What to serve.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Stack paths (directories with `main.ncl`, or `.ncl` files).
    pub stacks: Vec<PathBuf>,
    /// Time between ticks; each wait is stretched by up to `jitter` of it, so stacks of many
    /// daemons do not tick in step.
    pub interval: Duration,
    pub jitter: f64,
    pub mode: HealMode,
    /// Where the HTTP API listens (port 0: any free port, see [`Served::addr`]).
    pub listen: SocketAddr,
    /// Needed (as `Authorization: Bearer TOKEN`) on every request when `listen` is not a
    /// loopback address.
    pub token: Option<String>,
    /// Stop after this many ticks (tests, one-shot runs); `None`: until shut down.
    pub ticks: Option<u64>,
    /// The workflow settings each stack is opened with (the actor is the reconciler).
    pub settings: Settings,
    /// Concurrent provider calls per provider during a heal.
    pub parallelism: usize,
}

/// The last reconcile of one stack, as the API shows it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StackStatus {
    pub path: String,
    pub stack: Option<String>,
    pub mode: &'static str,
    /// `healed`, `in-sync`, `drifted` (recorded, not healed), `denied` (a policy refused the
    /// heal), `failed` (the heal or the reconcile failed).
    pub outcome: String,
    pub ticks: u64,
    /// Unix seconds of the last reconcile that finished without an error.
    pub last_success: Option<u64>,
    pub duration_seconds: f64,
    /// What drifted at the last reconcile: `[address, "deleted" | "changed"]`.
    pub drift: Vec<(String, String)>,
    /// Resources the last heal changed.
    pub healed: usize,
    /// Policy denials of the last heal: `rule: address: message`.
    pub denied: Vec<String>,
    /// The last error's diagnostics, one line each.
    pub errors: Vec<String>,
    /// What the stack's configuration costs per month (list prices, USD), as `chimera cost`
    /// says; `None` when it does not compile.
    pub monthly_cost: Option<f64>,
}

#[derive(Default)]
struct Shared {
    status: Mutex<BTreeMap<String, StackStatus>>,
    ready: AtomicBool,
    metrics: Metrics,
    token: Option<String>,
}

/// A running daemon: where it listens, and its end.
pub struct Served {
    pub addr: SocketAddr,
    pub done: tokio::task::JoinHandle<Result<(), String>>,
}

/// Starts the daemon: binds the HTTP API, then ticks until `ticks` are done or `shutdown`
/// resolves (the tick in flight finishes first: a heal is never cut off between its intents).
pub async fn start(
    cfg: ServeConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<Served, String> {
    if !cfg.listen.ip().is_loopback() && cfg.token.as_deref().is_none_or(str::is_empty) {
        return Err(format!(
            "listening on {} (not a loopback address) needs a token: pass --token or set CHIMERA_SERVE_TOKEN",
            cfg.listen
        ));
    }
    let shared = Arc::new(Shared {
        token: cfg.token.clone(),
        ..Shared::default()
    });
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", cfg.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route("/api/stacks", get(stacks))
        .layer(middleware::from_fn_with_state(shared.clone(), bearer))
        .with_state(shared.clone());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let mut http_stop = stop_rx.clone();
    let http = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = http_stop.wait_for(|s| *s).await;
            })
            .await
    });
    let done = tokio::spawn(async move {
        let r = run_ticks(&cfg, &shared, stop_rx.clone()).await;
        // Ticks are over (or stopped): the API goes with them.
        http.abort();
        r
    });
    Ok(Served { addr, done })
}

async fn run_ticks(
    cfg: &ServeConfig,
    shared: &Shared,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(), String> {
    let mut tick = 0u64;
    loop {
        for path in &cfg.stacks {
            if *stop.borrow() {
                return Ok(());
            }
            reconcile_one(cfg, shared, path).await;
        }
        tick += 1;
        shared.ready.store(true, Ordering::SeqCst);
        if cfg.ticks.is_some_and(|n| tick >= n) {
            return Ok(());
        }
        let wait = cfg
            .interval
            .mul_f64(1.0 + cfg.jitter.max(0.0) * fastrand::f64());
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.wait_for(|s| *s) => return Ok(()),
        }
    }
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

async fn reconcile_one(cfg: &ServeConfig, shared: &Shared, path: &PathBuf) {
    let key = path.display().to_string();
    let started = Instant::now();
    let mut stack = Stack::open(path, cfg.settings.clone());
    let req = ApplyRequest {
        parallelism: cfg.parallelism.max(1),
        message: "heal drift (chimera serve)".into(),
        ..ApplyRequest::default()
    };
    let opts = chimera_workflow::ReconcileOptions {
        mode: cfg.mode,
        ..Default::default()
    };
    let result = stack.reconcile(&opts, &req).await;
    let elapsed = started.elapsed().as_secs_f64();
    let mut status = shared
        .status
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&key)
        .cloned()
        .unwrap_or_default();
    status.path = key.clone();
    status.mode = cfg.mode.as_str();
    status.ticks += 1;
    status.duration_seconds = elapsed;
    let name = stack.name().ok();
    let label = name.clone().unwrap_or_else(|| key.clone());
    // The graph is compiled already (the reconcile needed it): pricing it is a lookup per
    // resource.
    status.monthly_cost = stack
        .cost()
        .ok()
        .map(|c| chimera_plans::cost::cents(c.cost.monthly_after));
    shared.metrics.reconciled(&label, elapsed);
    match result {
        Ok(r) => {
            status.stack = Some(r.stack.clone());
            status.drift = r
                .drift
                .iter()
                .map(|d| {
                    let what = match d.kind {
                        chimera_workflow::DriftKind::Deleted => "deleted",
                        chimera_workflow::DriftKind::Changed { .. } => "changed",
                    };
                    (d.address.to_string(), what.to_string())
                })
                .collect();
            status.denied = r
                .denied
                .iter()
                .map(|f| {
                    format!(
                        "{}: {}: {}",
                        f.rule,
                        f.address.as_deref().unwrap_or("plan"),
                        f.message
                    )
                })
                .collect();
            status.healed = r.report.as_ref().map(|x| x.succeeded.len()).unwrap_or(0);
            status.errors = r
                .report
                .as_ref()
                .map(|x| x.diagnostics().iter().map(|d| d.detail.clone()).collect())
                .unwrap_or_default();
            for d in &r.drift {
                shared.metrics.drift_found(&r.stack, d.address.kind.as_str());
            }
            if !r.denied.is_empty() {
                shared.metrics.denied(&r.stack, r.denied.len());
            }
            status.outcome = if r.drift.is_empty() {
                "in-sync"
            } else if !r.denied.is_empty() {
                "denied"
            } else if let Some(report) = &r.report {
                shared.metrics.applied(&r.stack, report.ok());
                if report.ok() {
                    for d in &r.drift {
                        shared.metrics.drift_healed(&r.stack, d.address.kind.as_str());
                    }
                    "healed"
                } else {
                    "failed"
                }
            } else {
                "drifted"
            }
            .to_string();
            if status.outcome != "failed" {
                status.last_success = Some(now_unix());
                shared.metrics.succeeded(&r.stack, now_unix());
            }
        }
        Err(e) => {
            status.stack = name;
            status.outcome = "failed".into();
            status.errors = e
                .diagnostics
                .iter()
                .map(|d| format!("{}: {}", d.summary, d.detail))
                .collect();
            shared.metrics.failed(&label);
        }
    }
    shared
        .status
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(key, status);
}

async fn bearer(State(shared): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    if let Some(token) = shared.token.as_deref().filter(|t| !t.is_empty()) {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        // Constant-time enough for a token compared once per request: equal lengths first.
        if given.is_none_or(|g| g.len() != token.len() || g != token) {
            return (StatusCode::UNAUTHORIZED, "a bearer token is required\n").into_response();
        }
    }
    next.run(req).await
}

async fn readyz(State(shared): State<Arc<Shared>>) -> Response {
    if shared.ready.load(Ordering::SeqCst) {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "the first tick has not finished\n").into_response()
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
    Json(
        shared
            .status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect(),
    )
}
