//! One reconcile tick of `chimera serve` on a stack of N resources on `local`: with no drift,
//! with 1% drifted (healed in `auto`), and the process's memory over many quiet ticks (it must
//! not grow). Prints a Markdown table (docs/benchmarks.md).
//!
//! `cargo bench -p chimera-workflow --bench reconcile -- [N] [TICKS]` (default 10000 100).

mod common;

use std::time::Instant;

use chimera_workflow::{ApplyRequest, HealMode, LocalChange, Settings, Stack};

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

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let n: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let ticks: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(100);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("main.ncl"), common::fleet(n)).unwrap();
    // As the daemon runs: the evaluation cache on (an unchanged stack is not evaluated again).
    let settings = Settings {
        actor: "reconciler:bench".into(),
        cache_build: Some("bench".into()),
        ..Settings::default()
    };
    let open = || Stack::open(dir.path(), settings.clone());
    let req = ApplyRequest {
        refresh: false,
        ..ApplyRequest::default()
    };
    rt.block_on(async {
        assert!(open().apply(&req, |_| true).await.unwrap().ok());
        let tick = |mode| async move {
            let t = Instant::now();
            let r = open().reconcile(&chimera_workflow::ReconcileOptions { mode, ..Default::default() }, &ApplyRequest::default()).await.unwrap();
            (t.elapsed().as_secs_f64(), r)
        };
        let mut quiet = Vec::new();
        for _ in 0..5 {
            let (s, r) = tick(HealMode::Auto).await;
            assert!(r.drift.is_empty());
            quiet.push(s);
        }
        let mut drifted = Vec::new();
        for round in 0..3 {
            let mut s = open();
            let rows = s.state_rows().await.unwrap();
            for (i, row) in rows.iter().filter(|r| r.address.kind.as_str() == "instance").enumerate() {
                if i % 100 == round {
                    let change = if i % 200 == round {
                        LocalChange::Delete
                    } else {
                        LocalChange::Set(vec![("public_ip".into(), serde_json::json!(true))])
                    };
                    s.local_mutate(&row.address, &change).await.unwrap();
                }
            }
            let (secs, r) = tick(HealMode::Auto).await;
            assert!(r.healed(), "{:?}", r.report.map(|x| x.diagnostics()));
            assert!(r.drift.len() >= n / 100 - 1, "{}", r.drift.len());
            drifted.push(secs);
        }
        let rss_start = rss_mib();
        for _ in 0..ticks {
            tick(HealMode::Auto).await;
        }
        let rss_end = rss_mib();
        println!("| resources | tick, no drift (median of 5) | tick, 1% drifted and healed (median of 3) | RSS after warm-up | RSS after {ticks} more ticks |");
        println!("|---:|---:|---:|---:|---:|");
        println!(
            "| {n} | {:.3} s | {:.3} s | {rss_start:.0} MiB | {rss_end:.0} MiB |",
            common::median(quiet),
            common::median(drifted)
        );
    });
}
