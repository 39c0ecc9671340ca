//! `chimera serve`: the reconcile daemon, a client of the workflow library. Every tick, each
//! stack is compiled (in a child process when given a compiler binary: Nickel evaluation cannot
//! be interrupted), leased, reconciled (`Stack::reconcile`: recover, read the clouds, heal
//! drift by the stack's heal policy), and released; what happened is kept for the HTTP API and
//! the dashboard, counted in Prometheus metrics, and logged through `tracing`.
//!
//! - `tick`: the loop, leases, git fetch, child-process compiles, backoff bookkeeping.
//! - `control`: pauses, per-resource backoff, the dead-letter list, per-stack backoff.
//! - `agent`: in mode `propose`, drift becomes a pull request adopting the live values
//!   (`chimera_agents::heal`), once per distinct drift.
//! - `guard`: a token bucket and a circuit per provider, and provider call metrics.
//! - `http`: health, metrics, the stack list and the control endpoints; `api`: the JSON API;
//!   `dashboard`: the page and its assets, served by the binary (no CDN).
//!
//! Listening beyond loopback needs a bearer token. Sensitive values never reach the API:
//! drift and plans carry `(sensitive)` or digests only.

pub mod agent;
pub mod control;
pub mod guard;
mod http;
mod metrics;
mod tick;

mod api;
mod dashboard;

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::middleware;
use chimera_workflow::{HealMode, Settings, Stack};
use serde::Serialize;

pub use agent::{AgentConfig, AgentForge};
pub use control::{BackoffConfig, Control, DeadLetter};
pub use guard::GuardConfig;
pub use metrics::Metrics;

/// A git branch each stack's repository follows: fetched and fast-forwarded every tick, so
/// merged pull requests are picked up.
#[derive(Debug, Clone)]
pub struct GitWatch {
    pub remote: String,
    pub branch: String,
}

/// What to serve.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Stack paths (directories with `main.ncl`, or `.ncl` files).
    pub stacks: Vec<PathBuf>,
    /// Time between ticks; each wait is stretched by up to `jitter` of it, so stacks of many
    /// daemons do not tick in step.
    pub interval: Duration,
    pub jitter: f64,
    /// The heal mode of a stack whose settings name none.
    pub mode: HealMode,
    /// Apply configuration changes (what was merged), not only put drift back.
    pub gitops: bool,
    /// Follow a git branch in each stack's repository.
    pub git: Option<GitWatch>,
    /// The `chimera` binary to compile each stack with, in a child process (`None`: compile
    /// in this process, for library callers that have no binary).
    pub compiler: Option<PathBuf>,
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
    /// Per-resource and per-stack backoff, and when a resource is parked.
    pub backoff: BackoffConfig,
    /// Rate limit and circuit per provider.
    pub guard: GuardConfig,
    /// This daemon's name among replicas (lease owner, logs, the API).
    pub replica: String,
    /// Where drift in mode `propose` goes as an adopting pull request; `None`: it is only
    /// recorded, for `chimera agent heal`.
    pub agent: Option<AgentConfig>,
}

impl ServeConfig {
    /// A config with the defaults for everything but the stacks.
    pub fn new(stacks: Vec<PathBuf>, settings: Settings) -> Self {
        ServeConfig {
            stacks,
            interval: Duration::from_secs(60),
            jitter: 0.1,
            mode: HealMode::Report,
            gitops: false,
            git: None,
            compiler: None,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            token: None,
            ticks: None,
            settings,
            parallelism: 10,
            backoff: BackoffConfig::default(),
            guard: GuardConfig::default(),
            replica: default_replica(),
            agent: None,
        }
    }
}

/// `host:pid`: unique among the replicas of one state database.
pub fn default_replica() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    format!("{host}:{}", std::process::id())
}

/// The last reconcile of one stack, as the API shows it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StackStatus {
    pub path: String,
    pub stack: Option<String>,
    /// The stack's heal mode (its settings', or the daemon's).
    pub mode: &'static str,
    /// `healed`, `in-sync`, `drifted` (recorded, not healed), `denied` (a policy refused the
    /// heal), `failed` (the heal or the reconcile failed), `waiting` (another reconciler holds
    /// the stack), `paused`, `backoff` (waiting after failed reconciles).
    pub outcome: String,
    pub ticks: u64,
    /// Unix seconds of the last reconcile that finished without an error.
    pub last_success: Option<u64>,
    /// Unix seconds of the last reconcile, whatever its outcome.
    pub last_reconcile: Option<u64>,
    pub duration_seconds: f64,
    /// The stack's latest generation.
    pub generation: Option<u64>,
    /// What drifted at the last reconcile: `[address, "deleted" | "changed"]`.
    pub drift: Vec<(String, String)>,
    /// Drift left for the agent layer (mode `propose`).
    pub proposed: Vec<String>,
    /// Drift not healed this time: backing off or parked.
    pub held: Vec<String>,
    /// Resources the last heal changed.
    pub healed: usize,
    /// Policy denials of the last heal: `rule: address: message`.
    pub denied: Vec<String>,
    /// The last error's diagnostics, one line each.
    pub errors: Vec<String>,
    /// What the stack's configuration costs per month (list prices, USD), as `chimera cost`
    /// says; `None` when it does not compile.
    pub monthly_cost: Option<f64>,
    /// The replica that reconciled it last.
    pub replica: String,
    /// The git commit the stack was compiled at, when following a branch.
    pub commit: Option<String>,
}

/// Something that happened to a stack, for the dashboard's event list.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// Unix seconds.
    pub at: u64,
    /// `drift`, `healed`, `heal-failed`, `denied`, `parked`, `released`, `compile-failed`,
    /// `failed`, `waiting`, `fetched`, `applied` (GitOps).
    pub kind: &'static str,
    pub address: Option<String>,
    pub detail: String,
    pub generation: Option<u64>,
}

/// What the API shows of a stack beyond its status.
#[derive(Debug, Clone, Default)]
pub struct StackDetail {
    /// The last plan applied or refused (plan JSON, `chimera plan --json`'s format).
    pub last_plan: Option<serde_json::Value>,
    /// The latest events first; at most [`EVENTS_KEPT`].
    pub events: VecDeque<Event>,
}

pub const EVENTS_KEPT: usize = 200;

/// Everything the tick loop and the HTTP handlers share.
pub(crate) struct Shared {
    pub cfg: ServeConfig,
    pub status: Mutex<BTreeMap<String, StackStatus>>,
    pub details: Mutex<BTreeMap<String, StackDetail>>,
    pub control: Mutex<Control>,
    pub ready: AtomicBool,
    pub metrics: Metrics,
    pub guard: Arc<guard::Guard>,
    /// Per stack, the drift last proposed in an adopting pull request (its signature).
    pub proposals: Mutex<BTreeMap<String, String>>,
    /// Woken by `POST /api/reconcile` (or a stack's): the next tick starts now.
    pub wake: tokio::sync::Notify,
    /// Per stack, its state store and providers as the last good tick left them, reused by the
    /// next tick (taken out while a tick runs; dropped after a failure, so a stack whose state
    /// went away reopens it).
    pub opened: Mutex<BTreeMap<String, chimera_workflow::Stack>>,
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    /// The key (the path as given) of a stack named `name` or given as `name`.
    pub fn key_of(&self, name: &str) -> Option<String> {
        let status = locked(&self.status);
        if status.contains_key(name) {
            return Some(name.to_string());
        }
        status
            .values()
            .find(|s| s.stack.as_deref() == Some(name))
            .map(|s| s.path.clone())
            .or_else(|| {
                self.cfg
                    .stacks
                    .iter()
                    .map(|p| p.display().to_string())
                    .find(|p| p == name)
            })
    }

    /// The stack at `key`, opened on its state by name (no compile).
    pub fn open(&self, key: &str) -> Option<Stack> {
        let name = locked(&self.status).get(key)?.stack.clone()?;
        Some(Stack::open(PathBuf::from(key), self.cfg.settings.clone()).named(Some(name)))
    }

    pub fn status_of(&self, key: &str) -> Option<StackStatus> {
        locked(&self.status).get(key).cloned()
    }

    pub fn detail_of(&self, key: &str) -> StackDetail {
        locked(&self.details).get(key).cloned().unwrap_or_default()
    }

    pub fn event(&self, key: &str, event: Event) {
        let mut details = locked(&self.details);
        let d = details.entry(key.to_string()).or_default();
        d.events.push_front(event);
        d.events.truncate(EVENTS_KEPT);
    }
}

pub(crate) fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A running daemon: where it listens, and its end.
pub struct Served {
    pub addr: SocketAddr,
    pub done: tokio::task::JoinHandle<Result<(), String>>,
}

/// Starts the daemon: binds the HTTP API, then ticks until `ticks` are done or `shutdown`
/// resolves (the reconcile in flight finishes and its lease is released first: a heal is never
/// cut off between its intents).
pub async fn start(
    mut cfg: ServeConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<Served, String> {
    if !cfg.listen.ip().is_loopback() && cfg.token.as_deref().is_none_or(str::is_empty) {
        return Err(format!(
            "listening on {} (not a loopback address) needs a token: pass --token or set CHIMERA_SERVE_TOKEN",
            cfg.listen
        ));
    }
    let metrics = Metrics::default();
    let guard = metrics.register(|r| guard::Guard::new(cfg.guard.clone(), r));
    cfg.settings.provider_layer = Some(guard.layer());
    let shared = Arc::new(Shared {
        cfg,
        status: Mutex::default(),
        details: Mutex::default(),
        control: Mutex::default(),
        ready: AtomicBool::new(false),
        metrics,
        guard,
        proposals: Mutex::default(),
        wake: tokio::sync::Notify::new(),
        opened: Mutex::default(),
    });
    let listener = tokio::net::TcpListener::bind(shared.cfg.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", shared.cfg.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let app = Router::new()
        .merge(http::routes())
        .merge(api::routes())
        .merge(dashboard::routes())
        .layer(middleware::from_fn_with_state(shared.clone(), http::bearer))
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
        let r = tick::run(&shared, stop_rx.clone()).await;
        // Ticks are over (or stopped): the API goes with them.
        http.abort();
        r
    });
    Ok(Served { addr, done })
}
