//! `cargo bench -p chimera-workflow --bench aws [-- N RUNS]`
//!
//! Applies N instances (default 200, plus a network and a subnet) on the AWS provider against
//! moto on 127.0.0.1 (started here, reset before every run), with parallelism 1 and 16, and
//! prints the medians (default 3 runs each) and the speed-up: once straight to moto, once
//! through a proxy that adds 50 ms to every request (a region's round trip and API time; moto
//! answers in a few ms, one request at a time).

use std::sync::Arc;
use std::time::Instant;

mod common;
use chimera_aws::{AwsCloud, AwsSettings};
use chimera_engine::{ApplyOptions, Providers, apply};
use chimera_state::SqliteStore;
use chimera_testkit::{MOTO_AMI, Moto, ThrottleProxy};
use common::{median, plan_of};

fn fleet(n: usize) -> String {
    format!(
        r#"let c = import "chimera.ncl" in
let on = {{ provider = 'aws, region = "us-east" }} in
let net = c.Network & on & {{ name = "main", cidr = "10.0.0.0/16" }} in
let sn = c.Subnet & on & {{ name = "workers", network = net, cidr = "10.0.0.0/20" }} in
{{ stack = "bench-aws", resources = [net, sn] @ std.array.generate
  (fun i => c.Instance & on & {{ name = "w-%{{std.to_string i}}", size = 'small, subnet = sn.outputs.id }}) {n} }}
"#
    )
}

async fn once(moto: &Moto, endpoint: &str, n: usize, parallelism: usize) -> f64 {
    moto.reset();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("main.ncl"), fleet(n)).unwrap();
    let store = SqliteStore::open(&dir.path().join("state.db"))
        .await
        .unwrap();
    let settings = AwsSettings {
        images: [("ubuntu-24.04".to_string(), MOTO_AMI.to_string())].into(),
        ..AwsSettings::default()
    };
    let aws = AwsCloud::with_config(settings, chimera_testkit::sdk_config(endpoint).await);
    let providers = Providers::default().with(Arc::new(aws));
    let p = plan_of(dir.path(), &store).await;
    let opts = ApplyOptions {
        parallelism,
        ..ApplyOptions::default()
    };
    let t = Instant::now();
    let r = apply(&p, &store, &providers, &opts).await.unwrap();
    let secs = t.elapsed().as_secs_f64();
    assert!(r.ok(), "{:?}", r.failed);
    let live = chimera_testkit::live_instances(&moto.endpoint, "bench-aws").await;
    assert_eq!(live.len(), n);
    secs
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let n = args.first().copied().unwrap_or(200);
    let runs = args.get(1).copied().unwrap_or(3);
    let moto = Moto::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let proxy = ThrottleProxy::start_with_delay(&moto.endpoint, 0, 50);
    println!("| instances | endpoint | parallelism | apply median (s) | runs | p16 speed-up |");
    println!("|---:|---|---:|---:|---:|---:|");
    for (label, endpoint) in [
        ("moto", moto.endpoint.as_str()),
        ("moto + 50 ms per request", proxy.endpoint.as_str()),
    ] {
        let mut medians = Vec::new();
        for p in [1, 16] {
            let times: Vec<f64> = (0..runs)
                .map(|_| rt.block_on(once(&moto, endpoint, n, p)))
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
