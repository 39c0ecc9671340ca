//! A state store and a local cloud in a temporary directory, shared by the engine's tests.

use std::sync::Arc;

use chimera_compiler::plan::Plan;
use chimera_engine::{ApplyOptions, Providers, apply};
use chimera_providers::local::{Knobs, LocalCloud};
use chimera_state::SqliteStore;

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
