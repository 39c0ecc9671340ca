//! A state store and a local cloud in a temporary directory, shared by the engine's tests.

use std::sync::Arc;

use std::path::Path;

use chimera_compiler::{EvalOptions, compile};
use chimera_engine::{ApplyOptions, Providers, apply};
use chimera_plans::plan::{self, Plan, Prior};
use chimera_providers::local::{Knobs, LocalCloud};
use chimera_state::{SqliteStore, StateStore};

#[allow(dead_code)] // each test file uses a different part
pub struct Env {
    pub dir: tempfile::TempDir,
    pub store: SqliteStore,
    pub cloud: Arc<LocalCloud>,
    pub providers: Providers,
}

pub async fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("state.db"))
        .await
        .unwrap();
    let cloud = Arc::new(
        LocalCloud::open(&dir.path().join("cloud.db"), Knobs::default())
            .await
            .unwrap(),
    );
    let providers = Providers::default().with(cloud.clone());
    Env {
        dir,
        store,
        cloud,
        providers,
    }
}

#[allow(dead_code)]
pub async fn apply_ok(env: &Env, p: &Plan) {
    let report = apply(p, &env.store, &env.providers, &ApplyOptions::default())
        .await
        .unwrap();
    assert!(report.ok(), "failed: {:?}", report.failed);
}

/// Compiles the stack at `file` and plans it (or its destruction) against current state.
#[allow(dead_code)]
pub async fn plan_file(env: &Env, file: &Path, destroy: bool) -> Plan {
    let c = compile(file, &EvalOptions::default());
    assert!(
        c.diagnostics.is_empty(),
        "{}",
        c.sources.render(&c.diagnostics, false)
    );
    let g = c.graph.unwrap();
    let info = env.store.stack(&g.stack).await.unwrap();
    let current = env.store.current(&g.stack).await.unwrap();
    let prior = Prior {
        lineage: info.as_ref().map(|i| i.lineage.clone()),
        serial: info.map(|i| i.serial).unwrap_or(0),
        resources: &current,
    };
    plan::plan(if destroy { None } else { Some(&g) }, &g.stack, &prior).unwrap()
}
