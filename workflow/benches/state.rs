//! `cargo bench -p chimera-workflow --bench state [-- N]`
//!
//! The state backends at scale, SQLite (embedded, `synchronous=FULL`) and PostgreSQL (a local
//! server started for the run, `fsync=on`), N resources (default 10,000):
//! - **commit**: one generation of N resources, as an apply writes it: the intents (one
//!   transaction), the results (one transaction), finishing the generation;
//! - **read**: the stack's current rows;
//! - **no-op plan**: compile the stack, read its state, plan (nothing to do).
//!
//! Medians of 5 runs, in process.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use chimera_engine::{ApplyOptions, Providers, apply};
use chimera_providers::local::{Knobs, LocalCloud};
use chimera_state::{
    GenerationMeta, GenerationStatus, IntentAction, LockRequest, NewIntent, Outcome, StateStore,
};

mod common;
use common::{fleet, median, plan_of};

const RUNS: usize = 5;

// The allocator the `chimera` binary uses.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Row {
    backend: &'static str,
    intents: f64,
    results: f64,
    generation: f64,
    read: f64,
    noop: f64,
}

async fn bench(backend: &'static str, store: &dyn StateStore, dir: &Path) -> Row {
    // The stack, applied once through the engine and the local cloud.
    let cloud = LocalCloud::open(&dir.join(format!("{backend}-cloud.db")), Knobs::default())
        .await
        .unwrap();
    let providers = Providers::default().with(Arc::new(cloud));
    let p = plan_of(dir, store).await;
    assert!(
        apply(&p, store, &providers, &ApplyOptions::default())
            .await
            .unwrap()
            .ok()
    );
    let rows = store.current("bench").await.unwrap();

    // Commit: the same rows as a new stack's first generation, each run a new stack.
    let (mut intents, mut results, mut generation) = (vec![], vec![], vec![]);
    for run in 0..RUNS {
        let stack = format!("commit-{run}");
        let t = Instant::now();
        let lock = store
            .lock(
                &stack,
                &LockRequest {
                    owner: "bench".into(),
                    operation: "bench".into(),
                },
            )
            .await
            .unwrap();
        let serial = store
            .begin_generation(&lock, 0, &stack, &GenerationMeta::default())
            .await
            .unwrap();
        let new: Vec<NewIntent> = rows
            .iter()
            .map(|r| NewIntent {
                address: r.address.clone(),
                action: IntentAction::Create,
                client_token: format!("{stack}-{}", r.address),
                payload: Some(r.clone()),
            })
            .collect();
        let t1 = Instant::now();
        let ids = store.record_intents(&lock, serial, &new).await.unwrap();
        intents.push(t1.elapsed().as_secs_f64());
        let done: Vec<(i64, Outcome)> = ids
            .into_iter()
            .zip(&rows)
            .map(|(id, r)| (id, Outcome::Put(Box::new(r.clone()))))
            .collect();
        let t2 = Instant::now();
        store.record_results(&lock, serial, &done).await.unwrap();
        results.push(t2.elapsed().as_secs_f64());
        store
            .finish_generation(&lock, serial, GenerationStatus::Complete)
            .await
            .unwrap();
        store.unlock(&lock).await.unwrap();
        generation.push(t.elapsed().as_secs_f64());
        assert_eq!(store.current(&stack).await.unwrap().len(), rows.len());
    }

    // Reading the current rows, and a whole no-op plan.
    let (mut read, mut noop) = (vec![], vec![]);
    for _ in 0..RUNS {
        let t = Instant::now();
        assert_eq!(store.current("bench").await.unwrap().len(), rows.len());
        read.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        assert!(!plan_of(dir, store).await.has_changes(), "no-op expected");
        noop.push(t.elapsed().as_secs_f64());
    }
    Row {
        backend,
        intents: median(intents),
        results: median(results),
        generation: median(generation),
        read: median(read),
        noop: median(noop),
    }
}

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find(|a| a != "--bench")
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("main.ncl"), fleet(n)).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut table = vec![];
    rt.block_on(async {
        let sqlite = chimera_state::open(&format!(
            "sqlite://{}",
            dir.path().join("state.db").display()
        ))
        .await
        .unwrap();
        table.push(bench("sqlite", sqlite.as_ref(), dir.path()).await);
        let pg = chimera_testkit::Postgres::start(true);
        let store = chimera_state::open(&pg.url).await.unwrap();
        table.push(bench("postgres", store.as_ref(), dir.path()).await);
    });
    println!(
        "| backend | resources | intents commit (s) | results commit (s) | whole generation (s) | read current (s) | no-op plan (s) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for r in table {
        println!(
            "| {} | {n} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} |",
            r.backend, r.intents, r.results, r.generation, r.read, r.noop
        );
    }
}
