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
use chimera_azure::{AzureCloud, AzureSettings, CredentialKind};
use chimera_engine::{ApplyOptions, Providers, apply};
use chimera_state::SqliteStore;
use chimera_testkit::fake_azure::{FakeAzure, Knobs};
use common::{cloud, plan_of};

async fn once(latency: Duration, n: usize, parallelism: usize) -> f64 {
    let fake = FakeAzure::start(Knobs {
        latency,
        op_duration: Duration::from_millis(50),
        ..Knobs::default()
    });
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("main.ncl"),
        cloud::fleet("azure", "bench-azure", n),
    )
    .unwrap();
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
    let (n, runs) = cloud::args();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let modes = [
        ("fake ARM", Duration::ZERO),
        ("fake ARM + 50 ms per request", Duration::from_millis(50)),
    ];
    cloud::table(n, runs, "endpoint", &modes, |latency, p| {
        rt.block_on(once(*latency, n, p))
    });
}
