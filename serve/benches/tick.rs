//! The daemon's tick, end to end, on one stack of N resources on `local` (issue #15's
//! benchmark): `chimera_serve::start` with `ticks` set, interval 0, heal mode `auto`.
//!
//! - **quiet tick**: compile (in a child process: the `chimera` binary at `$CHIMERA_BIN`, else
//!   `target/release/chimera`; and in process, for comparison), lease, read every resource,
//!   find nothing;
//! - **1% drifted**: 1% of the instances changed or deleted out of band, healed in one tick;
//! - **the phases of those ticks**: the daemon's `debug` spans (`compile`, `cost`, `lease`,
//!   `reconcile`, `release`, `record`, and each `provider_call`) timed by a subscriber here;
//!   within `reconcile`: state and recovery before the first read, the reads, the plan (last
//!   read to first write) and the apply (first write to the end);
//! - **memory and the long-run tick**: the `chimera serve` binary itself, TICKS quiet ticks, its
//!   resident memory sampled every second (it must not grow), at the default provider rate
//!   (20 calls/s: a quiet tick of 10,000 resources is 10 batched reads) and unlimited.
//!
//! `cargo bench -p chimera-serve --bench tick -- [N] [TICKS] [WAY …]` (default `10000 1000
//! inproc child`): the ways to compile, in the order given (`inproc`, `child`), each timed on
//! the same stack in turn; TICKS 0 skips the soak. One way per process (`-- 10000 0 child`)
//! measures it with nothing run before it.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use chimera_serve::ServeConfig;
use chimera_workflow::{ApplyRequest, HealMode, LocalChange, Settings, Stack};
use tracing::field::{Field, Visit};
use tracing::{Subscriber, span};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// A finished span of the daemon: its name, a provider call's verb, when it opened and closed.
struct Timed {
    name: &'static str,
    verb: String,
    start: Instant,
    end: Instant,
}

/// The daemon's spans closed since the last [`take_spans`].
static SPANS: Mutex<Vec<Timed>> = Mutex::new(Vec::new());

fn take_spans() -> Vec<Timed> {
    std::mem::take(&mut *SPANS.lock().unwrap())
}

/// Times every span of `chimera_serve` (installed with a `debug` filter on that crate).
struct Phases;

/// Kept in a span's extensions while it is open.
struct Opened {
    verb: String,
    start: Instant,
}

#[derive(Default)]
struct Verb(String);

impl Visit for Verb {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "verb" {
            self.0 = value.to_string();
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "verb" {
            self.0 = format!("{value:?}");
        }
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Phases {
    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: Context<'_, S>) {
        let mut verb = Verb::default();
        attrs.record(&mut verb);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(Opened {
                verb: verb.0,
                start: Instant::now(),
            });
        }
    }

    fn on_close(&self, id: span::Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let Some(opened) = span.extensions_mut().remove::<Opened>() else {
            return;
        };
        SPANS.lock().unwrap().push(Timed {
            name: span.name(),
            verb: opened.verb,
            start: opened.start,
            end: Instant::now(),
        });
    }
}

/// The phases of one tick, in seconds, in [`PHASES`] order.
const PHASES: [&str; 10] = [
    "compile",
    "cost",
    "lease",
    "state and recovery",
    "read",
    "plan",
    "apply",
    "release",
    "record",
    "rest",
];

/// Splits a tick of `total` seconds by the spans it closed.
fn phases(spans: &[Timed], total: f64) -> Vec<f64> {
    let sum = |name: &str| -> f64 {
        spans
            .iter()
            .filter(|s| s.name == name)
            .map(|s| (s.end - s.start).as_secs_f64())
            .sum()
    };
    let mut out = vec![sum("compile"), sum("cost"), sum("lease")];
    let (mut before, mut read, mut plan, mut apply) = (0.0, 0.0, 0.0, 0.0);
    if let Some(r) = spans.iter().find(|s| s.name == "reconcile") {
        let calls = |verbs: &[&str]| -> Vec<&Timed> {
            spans
                .iter()
                .filter(|s| s.name == "provider_call" && verbs.contains(&s.verb.as_str()))
                .filter(|s| s.start >= r.start && s.end <= r.end)
                .collect()
        };
        let reads = calls(&["observe", "read", "list_managed", "find_by_token"]);
        let writes = calls(&["create", "update", "delete"]);
        let first_read = reads.iter().map(|s| s.start).min().unwrap_or(r.end);
        let last_read = reads.iter().map(|s| s.end).max().unwrap_or(first_read);
        let first_write = writes.iter().map(|s| s.start).min().unwrap_or(r.end);
        before = (first_read - r.start).as_secs_f64();
        read = (last_read - first_read).as_secs_f64();
        plan = (first_write - last_read).as_secs_f64();
        apply = (r.end - first_write).as_secs_f64();
    }
    out.extend([before, read, plan, apply, sum("release"), sum("record")]);
    let rest = total - out.iter().sum::<f64>();
    out.push(rest);
    out
}

/// The median of each phase over several ticks.
fn phase_medians(ticks: &[Vec<f64>]) -> Vec<f64> {
    (0..PHASES.len())
        .map(|i| median(ticks.iter().map(|t| t[i]).collect()))
        .collect()
}

/// A network, a subnet and N − 2 instances in stack `bench`.
fn fleet(n: usize) -> String {
    format!(
        r#"let c = import "chimera.ncl" in
let net = c.Network & {{ name = "main", cidr = "10.0.0.0/8" }} in
let sn = c.Subnet & {{ name = "workers", network = net, cidr = "10.0.0.0/9" }} in
{{ stack = "bench", resources = [net, sn] @ std.array.generate
  (fun i => c.Instance & {{ name = "w-%{{std.to_string i}}", size = 'micro, subnet = sn.outputs.id }}) {} }}
"#,
        n - 2
    )
}

fn chimera_bin() -> Option<PathBuf> {
    let p = std::env::var_os("CHIMERA_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/chimera"));
    p.exists().then_some(p)
}

/// Runs the daemon for `ticks` ticks: seconds per tick, and the phases of those ticks.
async fn run(
    dir: &Path,
    settings: &Settings,
    compiler: Option<PathBuf>,
    ticks: u64,
) -> (f64, Vec<f64>) {
    let mut cfg = ServeConfig::new(vec![dir.to_path_buf()], settings.clone());
    cfg.interval = std::time::Duration::ZERO;
    cfg.jitter = 0.0;
    cfg.mode = HealMode::Auto;
    cfg.compiler = compiler;
    cfg.ticks = Some(ticks);
    cfg.guard.calls_per_second = 1e9;
    take_spans();
    let t = Instant::now();
    let served = chimera_serve::start(cfg, std::future::pending())
        .await
        .unwrap();
    served.done.await.unwrap().unwrap();
    let total = t.elapsed().as_secs_f64();
    (total / ticks as f64, phases(&take_spans(), total))
}

/// Changes or deletes 1% of the instances in the local cloud, behind the daemon's back. The
/// stack is opened by name: it is not compiled here. (Compiling it here, with the bench's
/// evaluation-cache build id, replaced the cache entry the `chimera` binary had made — one entry
/// per stack, checked against the build that made it — so the next child-process compile
/// evaluated the stack again: that was the whole gap of the heal rows, 1.0–1.1 s against
/// 0.4–0.5 s in process.)
async fn drift(dir: &Path, settings: &Settings, n: usize, round: usize) {
    let mut s = Stack::open(dir, settings.clone()).named(Some("bench".into()));
    let rows = s.state_rows().await.unwrap();
    let mut changed = 0;
    for (i, row) in rows
        .iter()
        .filter(|r| r.address.kind.as_str() == "instance")
        .enumerate()
    {
        if i % 100 == round {
            let change = if i % 200 == round {
                LocalChange::Delete
            } else {
                LocalChange::Set(vec![("public_ip".into(), serde_json::json!(true))])
            };
            s.local_mutate(&row.address, &change).await.unwrap();
            changed += 1;
        }
    }
    assert!(changed >= n / 100 - 1);
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let n: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let ticks: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(1000);
    let mut named: Vec<&str> = args.iter().skip(2).map(String::as_str).collect();
    if named.is_empty() {
        named = vec!["inproc", "child"];
    }
    let bin = chimera_bin();
    if bin.is_none() {
        eprintln!(
            "no chimera binary (build it with `cargo build --release`, or set CHIMERA_BIN): child-process rows are skipped"
        );
    }
    let mut ways: Vec<(&str, Option<PathBuf>)> = Vec::new();
    for w in named {
        match w {
            "inproc" => ways.push(("in process", None)),
            "child" => {
                if let Some(b) = &bin {
                    ways.push(("child process", Some(b.clone())));
                }
            }
            other => {
                eprintln!("unknown way `{other}`: use inproc or child");
                std::process::exit(2);
            }
        }
    }
    tracing_subscriber::registry()
        .with(
            Phases.with_filter(
                tracing_subscriber::filter::Targets::new()
                    .with_target("chimera_serve", tracing::Level::DEBUG),
            ),
        )
        .init();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("main.ncl"), fleet(n)).unwrap();
    let settings = Settings {
        actor: "reconciler:bench".into(),
        cache_build: Some("bench".into()),
        ..Settings::default()
    };
    rt.block_on(async {
        let req = ApplyRequest {
            refresh: false,
            ..ApplyRequest::default()
        };
        let applied = Stack::open(dir.path(), settings.clone())
            .apply(&req, |_| true)
            .await
            .unwrap();
        assert!(applied.ok());
        println!("| compile | resources | tick, no drift (median of 5) | tick, 1% drifted and healed (median of 3) |");
        println!("|---|---:|---:|---:|");
        let mut split = Vec::new();
        for (round, (name, compiler)) in ways.iter().enumerate() {
            // Untimed: the first compile of a way after another evaluates the stack (the
            // evaluation cache holds one entry per stack, and the bench and the binary are two
            // builds).
            run(dir.path(), &settings, compiler.clone(), 1).await;
            let (mut quiet, mut quiet_phases) = (Vec::new(), Vec::new());
            for _ in 0..5 {
                let (t, p) = run(dir.path(), &settings, compiler.clone(), 1).await;
                quiet.push(t);
                quiet_phases.push(p);
            }
            let (mut healed, mut healed_phases) = (Vec::new(), Vec::new());
            for r in 0..3 {
                drift(dir.path(), &settings, n, round * 3 + r).await;
                let (t, p) = run(dir.path(), &settings, compiler.clone(), 1).await;
                healed.push(t);
                healed_phases.push(p);
            }
            println!(
                "| {name} | {n} | {:.3} s | {:.3} s |",
                median(quiet),
                median(healed)
            );
            split.push((format!("{name}, no drift"), phase_medians(&quiet_phases)));
            split.push((format!("{name}, 1% healed"), phase_medians(&healed_phases)));
        }
        println!();
        println!("| tick (medians, s) | {} |", PHASES.join(" | "));
        println!("|---|{}", "---:|".repeat(PHASES.len()));
        for (row, p) in &split {
            let cells: Vec<String> = p.iter().map(|x| format!("{x:.3}")).collect();
            println!("| {row} | {} |", cells.join(" | "));
        }
        // Memory and the long-run tick: the daemon itself (`chimera serve`, its own process,
        // nothing else in it), `ticks` quiet ticks, its resident memory sampled every second.
        let Some(bin) = bin.as_ref().filter(|_| ticks > 0) else {
            return;
        };
        println!();
        println!("| provider rate | RSS, median of the first 10 samples | RSS, median of the last 10 | RSS trend per 1,000 ticks | mean tick |");
        println!("|---|---:|---:|---:|---:|");
        for rate in ["20", "1000000000"] {
            let (first, last, slope, per_tick) = soak(bin, dir.path(), ticks, rate).await;
            let shown = if rate == "20" { "20 calls/s (the default)" } else { "unlimited" };
            println!(
                "| {shown} | {first:.0} MiB | {last:.0} MiB | {slope:+.1} MiB | {per_tick:.3} s |"
            );
        }
    });
}

/// Runs `chimera serve` on `dir` for `ticks` quiet ticks, sampling its resident memory every
/// second: the medians of the first and last ten samples, the least-squares slope per 1,000
/// ticks (ticks estimated from the elapsed time), and seconds per tick.
async fn soak(bin: &Path, dir: &Path, ticks: u64, rate: &str) -> (f64, f64, f64, f64) {
    let t = Instant::now();
    let mut child = tokio::process::Command::new(bin)
        .arg("serve")
        .arg(dir)
        .args([
            "--heal",
            "auto",
            "--interval",
            "0",
            "--jitter",
            "0",
            "--rate",
            rate,
        ])
        .args(["--listen", "127.0.0.1:0", "--ticks", &ticks.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let status = format!("/proc/{}/status", child.id().unwrap());
    let mut samples: Vec<(f64, f64)> = Vec::new();
    loop {
        tokio::select! {
            done = child.wait() => { assert!(done.unwrap().success(), "chimera serve failed"); break; }
            _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {
                if let Some(kb) = std::fs::read_to_string(&status).ok().and_then(|s| {
                    s.lines()
                        .find(|l| l.starts_with("VmRSS:"))
                        .and_then(|l| l.split_whitespace().nth(1))
                        .and_then(|kb| kb.parse::<f64>().ok())
                }) {
                    samples.push((t.elapsed().as_secs_f64(), kb / 1024.0));
                }
            }
        }
    }
    let elapsed = t.elapsed().as_secs_f64();
    let per_tick = elapsed / ticks as f64;
    assert!(
        samples.len() >= 20,
        "the run was too short to sample: raise TICKS"
    );
    let first = median(samples.iter().take(10).map(|s| s.1).collect());
    let last = median(samples.iter().rev().take(10).map(|s| s.1).collect());
    let n = samples.len() as f64;
    let mx = samples.iter().map(|s| s.0).sum::<f64>() / n;
    let my = samples.iter().map(|s| s.1).sum::<f64>() / n;
    let slope_per_sec = samples.iter().map(|s| (s.0 - mx) * (s.1 - my)).sum::<f64>()
        / samples.iter().map(|s| (s.0 - mx).powi(2)).sum::<f64>();
    (first, last, slope_per_sec * per_tick * 1000.0, per_tick)
}
