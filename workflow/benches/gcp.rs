//! `cargo bench -p chimera-workflow --bench gcp [-- N RUNS]`
//!
//! Applies N instances (default 200, plus a network and a subnet) on the GCP provider against
//! the in-repo fake of the Compute API on 127.0.0.1 (a new fake per run), with parallelism 1
//! and 16, and prints the medians (default 3 runs each) and the speed-up: every operation takes
//! 50 ms from insert to DONE in the fake (polled from 10 ms, doubling), once with no added
//! request latency and once with 50 ms added to every request as well (a region's round trip).

use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;
use chimera_engine::{ApplyOptions, Providers, apply};
use chimera_gcp::{GcpCloud, GcpSettings};
use chimera_state::SqliteStore;
use chimera_testkit::fake_gcp::{FakeGcp, Knobs};
use common::{cloud, plan_of};

async fn once(latency: Duration, n: usize, parallelism: usize) -> f64 {
    let fake = FakeGcp::start(Knobs {
        op_delay: Duration::from_millis(50),
        latency,
        ..Knobs::default()
    });
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("main.ncl"),
        cloud::fleet("gcp", "bench-gcp", n),
    )
    .unwrap();
    let store = SqliteStore::open(&dir.path().join("state.db"))
        .await
        .unwrap();
    let gcp = GcpCloud::new(GcpSettings {
        project: Some("bench".into()),
        endpoint: Some(fake.url.clone()),
        poll_interval: Duration::from_millis(10),
        ..GcpSettings::default()
    });
    let providers = Providers::default().with(Arc::new(gcp));
    let p = plan_of(dir.path(), &store).await;
    let opts = ApplyOptions {
        parallelism,
        ..ApplyOptions::default()
    };
    let t = Instant::now();
    let r = apply(&p, &store, &providers, &opts).await.unwrap();
    let secs = t.elapsed().as_secs_f64();
    assert!(r.ok(), "{:?}", r.failed);
    assert_eq!(fake.all("instances").len(), n);
    secs
}

fn main() {
    let (n, runs) = cloud::args();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let modes = [
        ("50 ms operations", Duration::ZERO),
        (
            "50 ms operations + 50 ms per request",
            Duration::from_millis(50),
        ),
    ];
    cloud::table(n, runs, "fake", &modes, |latency, p| {
        rt.block_on(once(*latency, n, p))
    });
}
