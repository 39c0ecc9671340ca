//! `cargo bench -p chimera-workflow --bench azure [-- N RUNS]`
//!
//! Applies N instances (default 200, plus a network and a subnet) on the Azure provider against
//! the in-repo fake of Azure Resource Manager on 127.0.0.1 (a fresh one per run), with
//! parallelism 1 and 16, and prints the medians (default 3 runs each) and the speed-up: once with
//! no latency, once with 50 ms added to every request (a region's round trip and ARM's own
//! time). Operations take 50 ms in the fake either way, polled every 50 ms at most.

use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;
use chimera_engine::{ApplyOptions, Providers, apply};
use chimera_providers::azure::{AzureCloud, AzureSettings, CredentialKind};
use chimera_state::SqliteStore;
use chimera_testkit::fake_azure::{FakeAzure, Knobs};
use common::{median, plan_of};

fn fleet(n: usize) -> String {
    format!(
        r#"let c = import "chimera.ncl" in
let on = {{ provider = 'azure, region = "us-east" }} in
let net = c.Network & on & {{ name = "main", cidr = "10.0.0.0/16" }} in
let sn = c.Subnet & on & {{ name = "workers", network = net, cidr = "10.0.0.0/20" }} in
{{ stack = "bench-azure", resources = [net, sn] @ std.array.generate
  (fun i => c.Instance & on & {{ name = "w-%{{std.to_string i}}", size = 'small, subnet = sn.outputs.id }}) {n} }}
"#
    )
}

async fn once(latency: Duration, n: usize, parallelism: usize) -> f64 {
    let fake = FakeAzure::start(Knobs {
        latency,
        op_duration: Duration::from_millis(50),
        ..Knobs::default()
    });
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("main.ncl"), fleet(n)).unwrap();
    let store = SqliteStore::open(&dir.path().join("state.db"))
        .await
        .unwrap();
    let settings = AzureSettings {
        subscription: Some("00000000-0000-0000-0000-000000000000".into()),
        endpoint: fake.endpoint.clone(),
        credential: CredentialKind::None,
        max_poll_interval: Duration::from_millis(50),
        ..AzureSettings::default()
    };
    let providers = Providers::default().with(Arc::new(AzureCloud::new(settings)));
    let p = plan_of(dir.path(), &store).await;
    let opts = ApplyOptions {
        parallelism,
        ..ApplyOptions::default()
    };
    let t = Instant::now();
    let r = apply(&p, &store, &providers, &opts).await.unwrap();
    let secs = t.elapsed().as_secs_f64();
    assert!(r.ok(), "{:?}", r.failed);
    assert_eq!(
        fake.count_tagged(
            "Microsoft.Compute/virtualMachines",
            "chimera-stack",
            "bench-azure"
        ),
        n
    );
    secs
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let n = args.first().copied().unwrap_or(200);
    let runs = args.get(1).copied().unwrap_or(3);
    let rt = tokio::runtime::Runtime::new().unwrap();
    println!("| instances | endpoint | parallelism | apply median (s) | runs | p16 speed-up |");
    println!("|---:|---|---:|---:|---:|---:|");
    for (label, latency) in [
        ("fake ARM", Duration::ZERO),
        ("fake ARM + 50 ms per request", Duration::from_millis(50)),
    ] {
        let mut medians = Vec::new();
        for p in [1, 16] {
            let times: Vec<f64> = (0..runs)
                .map(|_| rt.block_on(once(latency, n, p)))
                .collect();
            let m = median(times);
            medians.push(m);
            let speedup = if p == 16 {
                format!("{:.2}×", medians[0] / m)
            } else {
                String::new()
            };
            println!("| {n} | {label} | {p} | {m:.2} | {runs} | {speedup} |");
        }
    }
}
