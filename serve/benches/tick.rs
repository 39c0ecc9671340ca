//! The daemon's tick, end to end, on one stack of N resources on `local` (issue #15's
//! benchmark): `chimera_serve::start` with `ticks` set, interval 0, heal mode `auto`.
//!
//! - **quiet tick**: compile (in a child process: the `chimera` binary at `$CHIMERA_BIN`, else
//!   `target/release/chimera`; and in process, for comparison), lease, read every resource,
//!   find nothing;
//! - **1% drifted**: 1% of the instances changed or deleted out of band, healed in one tick;
//! - **memory and the long-run tick**: the `chimera serve` binary itself, TICKS quiet ticks, its
//!   resident memory sampled every second (it must not grow), at the default provider rate
//!   (20 calls/s: a quiet tick of 10,000 resources is 10 batched reads) and unlimited.
//!
//! `cargo bench -p chimera-serve --bench tick -- [N] [TICKS]` (default 10000 1000).

use std::path::{Path, PathBuf};
use std::time::Instant;

use chimera_serve::ServeConfig;
use chimera_workflow::{ApplyRequest, HealMode, LocalChange, Settings, Stack};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
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

/// Runs the daemon for `ticks` ticks; seconds per tick.
async fn run(dir: &Path, settings: &Settings, compiler: Option<PathBuf>, ticks: u64) -> f64 {
    let mut cfg = ServeConfig::new(vec![dir.to_path_buf()], settings.clone());
    cfg.interval = std::time::Duration::ZERO;
    cfg.jitter = 0.0;
    cfg.mode = HealMode::Auto;
    cfg.compiler = compiler;
    cfg.ticks = Some(ticks);
    cfg.guard.calls_per_second = 1e9;
    let t = Instant::now();
    let served = chimera_serve::start(cfg, std::future::pending())
        .await
        .unwrap();
    served.done.await.unwrap().unwrap();
    t.elapsed().as_secs_f64() / ticks as f64
}

async fn drift(dir: &Path, settings: &Settings, n: usize, round: usize) {
    let mut s = Stack::open(dir, settings.clone());
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
    let bin = chimera_bin();
    if bin.is_none() {
        eprintln!(
            "no chimera binary (build it with `cargo build --release`, or set CHIMERA_BIN): child-process rows are skipped"
        );
    }
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
        let mut ways: Vec<(&str, Option<PathBuf>)> = vec![("in process", None)];
        if let Some(b) = &bin {
            ways.push(("child process", Some(b.clone())));
        }
        for (round, (name, compiler)) in ways.iter().enumerate() {
            let mut quiet = Vec::new();
            for _ in 0..5 {
                quiet.push(run(dir.path(), &settings, compiler.clone(), 1).await);
            }
            let mut healed = Vec::new();
            for r in 0..3 {
                drift(dir.path(), &settings, n, round * 3 + r).await;
                healed.push(run(dir.path(), &settings, compiler.clone(), 1).await);
            }
            println!(
                "| {name} | {n} | {:.3} s | {:.3} s |",
                median(quiet),
                median(healed)
            );
        }
        // Memory and the long-run tick: the daemon itself (`chimera serve`, its own process,
        // nothing else in it), `ticks` quiet ticks, its resident memory sampled every second.
        let Some(bin) = &bin else { return };
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
