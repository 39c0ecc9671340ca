//! The tick loop. Per tick: follow the git branch (when asked), then for each stack in a
//! shuffled order (replicas do not all start with the same one): skip it while paused or
//! backing off; compile it (in a child process when a compiler binary is configured); take its
//! **lease** (a state lock named `<stack>#reconciler`: PostgreSQL advisory lock or SQLite row,
//! so a dead replica's lease goes with its session or process); reconcile with the resources
//! that are backing off or parked held back; release the lease; record what happened.
//!
//! Each phase of a stack's tick is a `debug` span (`compile`, `cost`, `lease`, `reconcile`,
//! `release`, `record`; provider calls are `provider_call` spans, see `guard`), so a subscriber
//! can time them (`serve/benches/tick.rs` does); at the daemon's `info` level they cost nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use chimera_model::Address;
use chimera_model::graph::Graph;
use chimera_state::{LockRequest, StateError};
use chimera_workflow::{
    ApplyRequest, DriftKind, Error, ErrorKind, ReconcileOptions, Reconciled, Stack,
};
use tokio::sync::watch;
use tracing::Instrument;

use crate::{Event, GitWatch, Shared, StackStatus, locked, now_unix};

/// The lease a reconciler holds on a stack while it reconciles it (a name no stack can have).
pub fn lease_name(stack: &str) -> String {
    format!("{stack}#reconciler")
}

pub(crate) async fn run(shared: &Arc<Shared>, stop: watch::Receiver<bool>) -> Result<(), String> {
    let cfg = &shared.cfg;
    let mut stop = stop;
    let mut tick = 0u64;
    tracing::info!(
        replica = %cfg.replica,
        stacks = cfg.stacks.len(),
        mode = cfg.mode.as_str(),
        gitops = cfg.gitops,
        "reconciling every {:.1} s",
        cfg.interval.as_secs_f64()
    );
    loop {
        let commits = match &cfg.git {
            Some(git) => follow(shared, git).await,
            None => BTreeMap::new(),
        };
        let mut order: Vec<&PathBuf> = cfg.stacks.iter().collect();
        fastrand::shuffle(&mut order);
        for (i, path) in order.iter().enumerate() {
            shared.metrics.queue_depth(order.len() - i);
            if *stop.borrow() {
                shared.metrics.queue_depth(0);
                return Ok(());
            }
            let commit = commits.get(*path).cloned().flatten();
            reconcile_one(shared, path, commit).await;
        }
        shared.metrics.queue_depth(0);
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
            _ = shared.wake.notified() => {
                tracing::info!("a reconcile was requested: ticking now");
            }
            _ = stop.wait_for(|s| *s) => return Ok(()),
        }
    }
}

/// What a stack's compile gave.
enum Compiled {
    Graph(Box<Graph>),
    Failed(Vec<String>),
}

/// Compiles the stack at `path`: in a child process (`<compiler> internal-compile PATH`, killed
/// when it outlives the evaluation timeout), or in this process.
async fn compile(shared: &Shared, path: &Path) -> Compiled {
    let settings = &shared.cfg.settings;
    let Some(exe) = &shared.cfg.compiler else {
        let mut stack = Stack::open(path, settings.clone());
        return match stack.compile() {
            Ok(g) => Compiled::Graph(Box::new(g.clone())),
            Err(e) => Compiled::Failed(diagnostic_lines(&e)),
        };
    };
    let mut cmd = tokio::process::Command::new(exe);
    cmd.arg("--color")
        .arg("never")
        .arg("--eval-timeout")
        .arg(settings.eval.timeout.as_secs_f64().to_string());
    if let Some(limit) = settings.eval.memory_limit {
        cmd.arg("--eval-memory-mib")
            .arg((limit >> 20).max(1).to_string());
    }
    if settings.cache_build.is_none() {
        cmd.arg("--no-cache");
    }
    cmd.arg("internal-compile").arg(path);
    if let Some(cwd) = &settings.cwd {
        cmd.current_dir(cwd);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    // The child stops itself at the evaluation timeout; this is the backstop.
    let limit = settings.eval.timeout + Duration::from_secs(30);
    let out = match tokio::time::timeout(limit, cmd.output()).await {
        Err(_) => {
            return Compiled::Failed(vec![format!(
                "compiling took longer than {:.0} s and was stopped",
                limit.as_secs_f64()
            )]);
        }
        Ok(Err(e)) => {
            return Compiled::Failed(vec![format!(
                "cannot run the compiler {}: {e}",
                exe.display()
            )]);
        }
        Ok(Ok(out)) => out,
    };
    if out.status.success() {
        match Graph::from_doc_json(&out.stdout) {
            Ok(g) => Compiled::Graph(Box::new(g)),
            Err(e) => Compiled::Failed(vec![format!("the compiler's output is not a graph: {e}")]),
        }
    } else {
        let text = String::from_utf8_lossy(&out.stderr);
        let mut lines: Vec<String> = text
            .lines()
            .map(str::trim_end)
            .filter(|l| !l.trim().is_empty())
            .map(str::to_string)
            .collect();
        if lines.len() > 40 {
            let more = lines.len() - 40;
            lines.truncate(40);
            lines.push(format!("… {more} more lines"));
        }
        if lines.is_empty() {
            lines.push(format!("the compiler exited with {}", out.status));
        }
        Compiled::Failed(lines)
    }
}

fn diagnostic_lines(e: &Error) -> Vec<String> {
    e.diagnostics
        .iter()
        .map(|d| match &d.location {
            Some(l) => format!("{}:{}: {}: {}", l.file, l.line, d.summary, d.detail),
            None => format!("{}: {}", d.summary, d.detail),
        })
        .collect()
}

/// Fetches and fast-forwards each stack's repository (once per repository); returns each
/// stack's commit.
async fn follow(shared: &Shared, git: &GitWatch) -> BTreeMap<PathBuf, Option<String>> {
    let mut tops: BTreeMap<String, Option<String>> = BTreeMap::new();
    let mut out = BTreeMap::new();
    for path in &shared.cfg.stacks {
        let dir = if path.is_dir() {
            path.clone()
        } else {
            path.parent().map(Path::to_path_buf).unwrap_or_default()
        };
        let Ok(top) = run_git(&dir, &["rev-parse", "--show-toplevel"]).await else {
            out.insert(path.clone(), None);
            continue;
        };
        if !tops.contains_key(&top) {
            let key = path.display().to_string();
            let before = run_git(&dir, &["rev-parse", "--short", "HEAD"]).await.ok();
            let fetched = async {
                run_git(&dir, &["fetch", "--quiet", &git.remote, &git.branch]).await?;
                run_git(&dir, &["merge", "--ff-only", "--quiet", "FETCH_HEAD"]).await
            }
            .await;
            let after = run_git(&dir, &["rev-parse", "--short", "HEAD"]).await.ok();
            match fetched {
                Ok(_) if before != after => {
                    tracing::info!(repository = %top, commit = after.as_deref().unwrap_or(""), action = "fetch", "fast-forwarded to {}/{}", git.remote, git.branch);
                    shared.event(
                        &key,
                        Event {
                            at: now_unix(),
                            kind: "fetched",
                            address: None,
                            detail: format!(
                                "fast-forwarded {} → {} ({}/{})",
                                before.as_deref().unwrap_or("?"),
                                after.as_deref().unwrap_or("?"),
                                git.remote,
                                git.branch
                            ),
                            generation: None,
                        },
                    );
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(repository = %top, action = "fetch", error = %e, "cannot follow {}/{}; reconciling the checkout as it is", git.remote, git.branch);
                    shared.event(
                        &key,
                        Event {
                            at: now_unix(),
                            kind: "fetch-failed",
                            address: None,
                            detail: e,
                            generation: None,
                        },
                    );
                }
            }
            tops.insert(top.clone(), after);
        }
        out.insert(path.clone(), tops.get(&top).cloned().flatten());
    }
    out
}

async fn run_git(dir: &Path, args: &[&str]) -> Result<String, String> {
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .map_err(|_| format!("git {} took longer than 120 s", args.join(" ")))?
    .map_err(|e| format!("cannot run git: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(format!(
            "git {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// One stack, one tick.
async fn reconcile_one(shared: &Shared, path: &Path, commit: Option<String>) {
    let cfg = &shared.cfg;
    let key = path.display().to_string();
    let started = Instant::now();
    let mut status = shared.status_of(&key).unwrap_or_else(|| StackStatus {
        path: key.clone(),
        mode: cfg.mode.as_str(),
        ..StackStatus::default()
    });
    status.replica = cfg.replica.clone();
    if commit.is_some() {
        status.commit = commit;
    }
    let label = status.stack.clone().unwrap_or_else(|| key.clone());

    if let Some(why) = locked(&shared.control).wait_reason(&key, started) {
        status.outcome = if why.starts_with("paused") {
            "paused"
        } else {
            "backoff"
        }
        .into();
        tracing::debug!(stack = %label, action = "skip", "{why}");
        store(shared, &key, status);
        return;
    }

    // Compile first: a stack that does not compile keeps its last good state, and nothing is
    // applied.
    let compiled = compile(shared, path)
        .instrument(tracing::debug_span!(
            "compile",
            child = cfg.compiler.is_some()
        ))
        .await;
    let graph = match compiled {
        Compiled::Graph(g) => g,
        Compiled::Failed(lines) => {
            let first = lines.first().cloned().unwrap_or_default();
            if status.outcome != "failed" || status.errors != lines {
                tracing::warn!(stack = %label, action = "compile", error = %first, "the stack does not compile; nothing is applied");
                shared.event(
                    &key,
                    Event {
                        at: now_unix(),
                        kind: "compile-failed",
                        address: None,
                        detail: lines.join("\n"),
                        generation: status.generation,
                    },
                );
            }
            status.outcome = "failed".into();
            status.errors = lines;
            status.monthly_cost = None;
            // No backoff: a fix is picked up at the next tick.
            finish_failed(shared, &key, &label, status, started, false);
            return;
        }
    };
    let name = graph.stack.clone();
    status.stack = Some(name.clone());
    let desired: BTreeMap<String, String> = graph
        .resources
        .iter()
        .map(|r| (r.address.to_string(), r.hash.to_hex()))
        .collect();
    let opened = locked(&shared.opened).remove(&key);
    let mut stack = match opened {
        Some(s) => s.next_round(*graph),
        None => Stack::open(path, cfg.settings.clone()).with_graph(*graph),
    };
    status.monthly_cost = tracing::debug_span!("cost").in_scope(|| {
        stack
            .cost()
            .ok()
            .map(|c| chimera_plans::cost::cents(c.cost.monthly_after))
    });

    // The lease: one reconciler per stack at a time, whichever replica gets it.
    let lease = match take_lease(&mut stack, &name, &cfg.replica)
        .instrument(tracing::debug_span!("lease"))
        .await
    {
        Ok(l) => l,
        Err(Lease::Held(by)) => {
            shared.metrics.lock_wait(&name);
            if status.outcome != "waiting" {
                tracing::info!(stack = %name, action = "wait", holder = %by, "another reconciler holds the stack; waiting for it");
                shared.event(
                    &key,
                    Event {
                        at: now_unix(),
                        kind: "waiting",
                        address: None,
                        detail: format!("held by {by}"),
                        generation: status.generation,
                    },
                );
            }
            status.outcome = "waiting".into();
            status.errors = vec![format!("held by {by}")];
            store(shared, &key, status);
            return;
        }
        Err(Lease::Failed(lines)) => {
            tracing::warn!(stack = %name, action = "lease", error = %lines.join("; "), "cannot reach the state; backing off");
            status.outcome = "failed".into();
            status.errors = lines;
            finish_failed(shared, &key, &name, status, started, true);
            return;
        }
    };

    let (hold, released) = locked(&shared.control).held(&key, started, |a| desired.get(a).cloned());
    for d in released {
        tracing::info!(stack = %name, address = %d.address, action = "release", "configuration changed: a parked resource is healed again");
        shared.event(
            &key,
            Event {
                at: now_unix(),
                kind: "released",
                address: Some(d.address.clone()),
                detail: "its configuration changed".into(),
                generation: status.generation,
            },
        );
    }
    let opts = ReconcileOptions {
        mode: cfg.mode,
        hold: hold
            .iter()
            .filter_map(|a| a.parse::<Address>().ok())
            .collect(),
        gitops: cfg.gitops,
    };
    let req = ApplyRequest {
        parallelism: cfg.parallelism.max(1),
        message: if cfg.gitops {
            "apply the configuration and heal drift (chimera serve, GitOps)".into()
        } else {
            "heal drift (chimera serve)".into()
        },
        progress: Arc::new(LogProgress {
            stack: name.clone(),
        }),
        ..ApplyRequest::default()
    };
    let result = stack
        .reconcile(&opts, &req)
        .instrument(tracing::debug_span!("reconcile"))
        .await;
    status.generation = async {
        release_lease(&mut stack, lease).await;
        match stack.store().await {
            Ok(s) => s.stack(&name).await.ok().flatten().map(|i| i.serial),
            Err(_) => status.generation,
        }
    }
    .instrument(tracing::debug_span!("release"))
    .await;
    match result {
        Ok(r) => {
            locked(&shared.opened).insert(key.clone(), stack);
            tracing::debug_span!("record")
                .in_scope(|| record(shared, &key, &mut status, &r, &desired));
            crate::agent::propose_adoption(shared, path, &key, &r.drift, &r.proposed).await;
        }
        Err(e) if e.kind == ErrorKind::Locked => {
            // An apply by a person holds the stack.
            shared.metrics.lock_wait(&name);
            status.outcome = "waiting".into();
            status.errors = diagnostic_lines(&e);
            tracing::info!(stack = %name, action = "wait", "the stack is locked by an apply; waiting for it");
            store(shared, &key, status);
            return;
        }
        Err(e) => {
            let lines = diagnostic_lines(&e);
            tracing::warn!(stack = %name, generation = status.generation, action = "reconcile", error = %lines.join("; "), "reconcile failed");
            shared.event(
                &key,
                Event {
                    at: now_unix(),
                    kind: "failed",
                    address: None,
                    detail: lines.join("\n"),
                    generation: status.generation,
                },
            );
            status.outcome = "failed".into();
            status.errors = lines;
            finish_failed(shared, &key, &name, status, started, true);
            return;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    status.duration_seconds = elapsed;
    status.ticks += 1;
    status.last_reconcile = Some(now_unix());
    shared.metrics.reconciled(&name, elapsed);
    if status.outcome != "failed" {
        status.last_success = Some(now_unix());
        shared.metrics.succeeded(&name, now_unix());
        locked(&shared.control).stack_succeeded(&key);
    }
    store(shared, &key, status);
}

/// Logs each provider call of a heal as it starts and ends.
struct LogProgress {
    stack: String,
}

impl chimera_workflow::Progress for LogProgress {
    fn started(&self, step: &chimera_workflow::Step) {
        tracing::info!(stack = %self.stack, address = %step.address, action = step.kind.as_str(), "started");
    }

    fn finished(
        &self,
        step: &chimera_workflow::Step,
        error: Option<&chimera_workflow::CallFailure>,
    ) {
        match error {
            None => {
                tracing::info!(stack = %self.stack, address = %step.address, action = step.kind.as_str(), "done")
            }
            Some(f) => {
                tracing::warn!(stack = %self.stack, address = %step.address, action = step.kind.as_str(), class = f.class.as_str(), "failed")
            }
        }
    }
}

fn store(shared: &Shared, key: &str, status: StackStatus) {
    locked(&shared.status).insert(key.to_string(), status);
}

/// A failed reconcile; `backoff`: the next ones wait (the state or a cloud is unreachable).
fn finish_failed(
    shared: &Shared,
    key: &str,
    label: &str,
    mut status: StackStatus,
    started: Instant,
    backoff: bool,
) {
    let elapsed = started.elapsed().as_secs_f64();
    status.duration_seconds = elapsed;
    status.ticks += 1;
    status.last_reconcile = Some(now_unix());
    shared.metrics.reconciled(label, elapsed);
    shared.metrics.failed(label);
    if backoff {
        locked(&shared.control).stack_failed(key, &shared.cfg.backoff, Instant::now());
    }
    store(shared, key, status);
}

enum Lease {
    Held(String),
    Failed(Vec<String>),
}

async fn take_lease(
    stack: &mut Stack,
    name: &str,
    replica: &str,
) -> Result<chimera_state::Lock, Lease> {
    let store = stack
        .store()
        .await
        .map_err(|e| Lease::Failed(diagnostic_lines(&e)))?;
    let req = LockRequest {
        owner: replica.to_string(),
        operation: "serve".into(),
    };
    match store.lock(&lease_name(name), &req).await {
        Ok(l) => Ok(l),
        Err(StateError::Locked(h)) => Err(Lease::Held(format!(
            "{} (host {}, pid {}, since {})",
            h.owner, h.host, h.pid, h.since
        ))),
        Err(e) => Err(Lease::Failed(vec![e.to_string()])),
    }
}

async fn release_lease(stack: &mut Stack, lease: chimera_state::Lock) {
    if let Ok(store) = stack.store().await
        && let Err(e) = store.unlock(&lease).await
    {
        // A lease whose session died is gone already.
        tracing::debug!(stack = %lease.stack, error = %e, "lease release");
    }
}

/// Records a finished reconcile: status, events, metrics, backoff and parking.
fn record(
    shared: &Shared,
    key: &str,
    status: &mut StackStatus,
    r: &Reconciled,
    desired: &BTreeMap<String, String>,
) {
    let name = r.stack.as_str();
    status.mode = r.policy.mode.as_str();
    let before: BTreeSet<(String, String)> = status.drift.iter().cloned().collect();
    status.drift = r
        .drift
        .iter()
        .map(|d| {
            let what = match d.kind {
                DriftKind::Deleted => "deleted",
                DriftKind::Changed { .. } => "changed",
            };
            (d.address.to_string(), what.to_string())
        })
        .collect();
    status.proposed = r.proposed.iter().map(ToString::to_string).collect();
    status.held = r.held.iter().map(ToString::to_string).collect();
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
    let generation = r.report.as_ref().map(|x| x.serial).or(status.generation);
    for d in &r.drift {
        shared.metrics.drift_found(name, d.address.kind.as_str());
        let pair = (
            d.address.to_string(),
            match d.kind {
                DriftKind::Deleted => "deleted".to_string(),
                DriftKind::Changed { .. } => "changed".to_string(),
            },
        );
        if !before.contains(&pair) {
            let mode = r.policy.mode_of(&d.address);
            tracing::info!(stack = %name, address = %d.address, action = "drift", mode = mode.as_str(), "drift found: {}", pair.1);
            shared.event(
                key,
                Event {
                    at: now_unix(),
                    kind: "drift",
                    address: Some(d.address.to_string()),
                    detail: format!("{} outside Chimera (mode {})", pair.1, mode.as_str()),
                    generation,
                },
            );
        }
    }
    if !r.denied.is_empty() {
        shared.metrics.denied(name, r.denied.len());
        for f in &r.denied {
            tracing::warn!(stack = %name, address = f.address.as_deref().unwrap_or(""), action = "deny", rule = %f.rule, "a policy refused the heal: {}", f.message);
        }
        shared.event(
            key,
            Event {
                at: now_unix(),
                kind: "denied",
                address: None,
                detail: status.denied.join("\n"),
                generation,
            },
        );
    }
    if let Some(plan) = &r.plan {
        locked(&shared.details)
            .entry(key.to_string())
            .or_default()
            .last_plan = Some(chimera_plans::render::plan_json(plan));
    }
    let mut outcome = if r.drift.is_empty() && r.report.is_none() {
        "in-sync"
    } else if !r.denied.is_empty() {
        "denied"
    } else if r.report.is_none() {
        "drifted"
    } else {
        "healed"
    };
    if let Some(report) = &r.report {
        shared.metrics.applied(name, report.ok());
        let now = Instant::now();
        let mut control = locked(&shared.control);
        for step in &report.succeeded {
            control.resource_healed(key, &step.address.to_string());
            tracing::info!(stack = %name, generation = report.serial, address = %step.address, action = step.kind.as_str(), "healed");
        }
        for d in &r.drift {
            if report.succeeded.iter().any(|s| s.address == d.address) {
                shared.metrics.drift_healed(name, d.address.kind.as_str());
                shared.event(
                    key,
                    Event {
                        at: now_unix(),
                        kind: "healed",
                        address: Some(d.address.to_string()),
                        detail: "put back to the last applied generation".into(),
                        generation: Some(report.serial),
                    },
                );
            }
        }
        for (step, failure) in &report.failed {
            let a = step.address.to_string();
            shared
                .metrics
                .resource_failed(name, step.address.kind.as_str());
            let error = failure.diagnostic().detail;
            tracing::warn!(stack = %name, generation = report.serial, address = %a, action = step.kind.as_str(), error = %error, "heal failed; backing off");
            shared.event(
                key,
                Event {
                    at: now_unix(),
                    kind: "heal-failed",
                    address: Some(a.clone()),
                    detail: error.clone(),
                    generation: Some(report.serial),
                },
            );
            if let Some(parked) = control.resource_failed(
                key,
                &a,
                &error,
                desired.get(&a).cloned(),
                &shared.cfg.backoff,
                now,
            ) {
                tracing::warn!(stack = %name, address = %a, action = "park", failures = parked.failures, "heals keep failing: parked until released or its configuration changes");
                shared.event(
                    key,
                    Event {
                        at: now_unix(),
                        kind: "parked",
                        address: Some(a.clone()),
                        detail: format!(
                            "parked after {} failed heals: {}",
                            parked.failures, parked.last_error
                        ),
                        generation: Some(report.serial),
                    },
                );
            }
        }
        shared
            .metrics
            .dead_letters(name, control.dead_letters(key).len());
        if !report.ok() {
            outcome = "failed";
        }
    }
    status.outcome = outcome.into();
}
