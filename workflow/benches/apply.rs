//! `cargo bench -p chimera-workflow --bench apply [-- CASES...]`
//!
//! Cases: `apply N` (compile + plan + apply N local resources from an empty state, no
//! latency), `noop N` (compile + read state + plan of an applied N-resource stack), `chains N L`
//! (N resources in chains of 10, L ms latency per call, parallelism 128, against the
//! critical-path bound of 10 × L). Each measurement runs in a fresh child process (peak RSS per measurement); medians
//! of 3 runs.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;
use chimera_engine::{ApplyOptions, Providers, apply};
use chimera_providers::local::{Knobs, LocalCloud};
use chimera_state::SqliteStore;
use common::{fleet, median, plan_of};

/// A provider that only waits: it separates the engine's scheduling from the local simulator's
/// own cost (its SQLite writes are serialised, like a control plane's).
struct Waiting(Duration, std::sync::atomic::AtomicU64);

#[async_trait::async_trait]
impl chimera_providers::Provider for Waiting {
    fn name(&self) -> chimera_model::ProviderName {
        chimera_model::ProviderName::Local
    }
    async fn create(
        &self,
        req: &chimera_providers::Request<'_>,
    ) -> chimera_providers::Result<chimera_providers::Observed> {
        chimera_providers::clock::sleep(self.0).await;
        let n = self.1.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let id = format!("mem-{n}");
        let mut outputs = serde_json::Map::new();
        outputs.insert("id".into(), serde_json::Value::String(id.clone()));
        Ok(chimera_providers::Observed {
            cloud_id: id,
            kind: req.address.kind,
            native_region: req.native_region.into(),
            attrs: req.spec.to_attrs(),
            outputs,
            tags: Default::default(),
        })
    }
    async fn read(
        &self,
        _: &chimera_providers::CloudRef,
    ) -> chimera_providers::Result<Option<chimera_providers::Observed>> {
        Ok(None)
    }
    async fn update(
        &self,
        req: &chimera_providers::Request<'_>,
        _: &str,
    ) -> chimera_providers::Result<chimera_providers::Observed> {
        self.create(req).await
    }
    async fn delete(&self, _: &chimera_providers::CloudRef) -> chimera_providers::Result<()> {
        chimera_providers::clock::sleep(self.0).await;
        Ok(())
    }
    async fn find_by_token(
        &self,
        _: chimera_model::Kind,
        _: &str,
        _: &str,
    ) -> chimera_providers::Result<Option<chimera_providers::Observed>> {
        Ok(None)
    }
    async fn list_managed(
        &self,
        _: &str,
    ) -> chimera_providers::Result<Vec<chimera_providers::Observed>> {
        Ok(Vec::new())
    }
}

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// N resources: a network, a subnet and N-2 instances.
/// N networks in chains of 10: each refers to the previous one through a tag.
fn chains(n: usize) -> String {
    format!(
        r#"let c = import "chimera.ncl" in
let mk = fun i => c.Network & {{
  name = "n%{{std.to_string i}}",
  cidr = "10.0.0.0/16",
  tags = if i % 10 == 0 then {{}} else {{ after = c.ref "network" "n%{{std.to_string (i - 1)}}" "id" }},
}} in
{{ stack = "bench", resources = std.array.generate mk {n} }}
"#
    )
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

async fn child(case: &str, n: usize, latency_ms: u64, dir: &Path) {
    let store = SqliteStore::open(&dir.join("state.db")).await.unwrap();
    let knobs = Knobs {
        latency: Duration::from_millis(latency_ms),
        ..Knobs::default()
    };
    let cloud = Arc::new(
        LocalCloud::open(&dir.join("cloud.db"), knobs)
            .await
            .unwrap(),
    );
    let providers = if case == "chains-mem" {
        Providers::default().with(Arc::new(Waiting(
            Duration::from_millis(latency_ms),
            Default::default(),
        )))
    } else {
        Providers::default().with(cloud)
    };
    // Chains: enough parallelism for all 100 chains at once, so the bound is the critical path.
    let opts = ApplyOptions {
        parallelism: if case.starts_with("chains") { 128 } else { 64 },
        ..ApplyOptions::default()
    };
    let t = Instant::now();
    let mut apply_only = f64::NAN;
    match case {
        "apply" | "chains" | "chains-mem" => {
            let p = plan_of(dir, &store).await;
            let t2 = Instant::now();
            let r = apply(&p, &store, &providers, &opts).await.unwrap();
            apply_only = t2.elapsed().as_secs_f64();
            assert!(r.ok());
        }
        "noop" => {
            let p = plan_of(dir, &store).await;
            assert!(!p.has_changes(), "no-op expected");
        }
        "setup" => {
            let p = plan_of(dir, &store).await;
            assert!(apply(&p, &store, &providers, &opts).await.unwrap().ok());
        }
        _ => unreachable!(),
    }
    let _ = n;
    println!(
        "{} {} {}",
        t.elapsed().as_secs_f64(),
        peak_rss_mib(),
        apply_only
    );
}

fn measure(exe: &Path, case: &str, n: usize, latency: u64, runs: usize) -> (f64, f64, f64) {
    let (mut ts, mut ms, mut ap) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        let dir = tempfile::tempdir().unwrap();
        let src = if case.starts_with("chains") {
            chains(n)
        } else {
            fleet(n)
        };
        std::fs::write(dir.path().join("main.ncl"), src).unwrap();
        if case == "noop" {
            let out = Command::new(exe)
                .args(["--child", "setup", &n.to_string(), "0"])
                .arg(dir.path())
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let out = Command::new(exe)
            .args(["--child", case, &n.to_string(), &latency.to_string()])
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line = String::from_utf8_lossy(&out.stdout);
        let mut it = line
            .split_whitespace()
            .map(|x| x.parse::<f64>().unwrap_or(f64::NAN));
        ts.push(it.next().unwrap_or(f64::NAN));
        ms.push(it.next().unwrap_or(f64::NAN));
        ap.push(it.next().unwrap_or(f64::NAN));
    }
    (median(ts), median(ms), median(ap))
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    if args.first().map(String::as_str) == Some("--child") {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(child(
            &args[1],
            args[2].parse().unwrap(),
            args[3].parse().unwrap(),
            Path::new(&args[4]),
        ));
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let cases: Vec<(String, usize, u64)> = if args.is_empty() {
        vec![
            ("apply".into(), 1000, 0),
            ("apply".into(), 10000, 0),
            ("noop".into(), 1000, 0),
            ("noop".into(), 10000, 0),
            ("noop".into(), 100000, 0),
            ("chains".into(), 1000, 10),
            ("chains-mem".into(), 1000, 10),
        ]
    } else {
        args.chunks(3)
            .map(|c| {
                (
                    c[0].clone(),
                    c[1].parse().unwrap(),
                    c.get(2).and_then(|l| l.parse().ok()).unwrap_or(0),
                )
            })
            .collect()
    };
    println!(
        "| case | resources | latency (ms) | total median (s) | apply phase (s) | peak RSS (MiB) | note |"
    );
    println!("|---|---:|---:|---:|---:|---:|---|");
    for (case, n, latency) in cases {
        let runs = if n >= 100_000 { 1 } else { 3 };
        let (t, m, a) = measure(&exe, &case, n, latency, runs);
        let note = if case.starts_with("chains") {
            let bound = (10 * latency) as f64 / 1000.0;
            format!(
                "critical path {bound:.2} s; apply phase / bound = {:.2}",
                a / bound
            )
        } else {
            String::new()
        };
        let a = if a.is_nan() {
            "-".to_string()
        } else {
            format!("{a:.3}")
        };
        println!("| {case} | {n} | {latency} | {t:.3} | {a} | {m:.0} | {note} |");
    }
}
