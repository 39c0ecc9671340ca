//! Drift (refresh), import and orphans on the local cloud; and snapshots of rendered plans for
//! the examples against fixture states: empty, partly applied, drifted.

use std::path::Path;

use chimera_plans::plan::{Action, Plan};
use chimera_plans::render;
use std::sync::Arc;

use chimera_engine::DriftKind;
use chimera_model::Kind;
use chimera_model::ProviderName;
use chimera_providers::Alias;
use chimera_state::{SqliteStore, StateStore};

mod common;
use common::{Env, apply_ok, env, plan_file};

async fn plan_example(env: &Env, example: &str) -> Plan {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let path = if example == "fleet" {
        // The fleet at 5 instances through its `count` field: same file, readable snapshots.
        let file = env.dir.path().join("fleet5.ncl");
        let fleet = std::fs::canonicalize(examples.join("fleet/main.ncl")).unwrap();
        std::fs::write(
            &file,
            format!(
                "(import {:?}) & {{ count = 5 }}\n",
                fleet.display().to_string()
            ),
        )
        .unwrap();
        file
    } else {
        examples.join(example)
    };
    plan_file(env, &path, false).await
}

fn cloud_id_of(rows: &[chimera_model::StateResource], addr: &str) -> String {
    rows.iter()
        .find(|r| r.address.to_string() == addr)
        .unwrap()
        .cloud_id
        .clone()
}

fn snap(name: &str, plan: &Plan) {
    let mut s = insta::Settings::clone_current();
    s.set_snapshot_path(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots"));
    s.set_prepend_module_to_snapshot(false);
    s.bind(|| insta::assert_snapshot!(name, render::plan_text(plan, false)));
}

#[tokio::test]
async fn example_plans_against_fixture_states() {
    for example in ["webapp", "fleet", "multicloud"] {
        let mut env = env().await;
        // The multicloud example's aws, gcp and azure run on the same simulated cloud.
        for name in [ProviderName::Aws, ProviderName::Gcp, ProviderName::Azure] {
            env.providers = env
                .providers
                .clone()
                .with(Arc::new(Alias(name, env.cloud.clone())));
        }
        let empty = plan_example(&env, example).await;
        snap(&format!("plan_{example}_empty"), &empty);

        // Partly applied: only the networks and subnets exist.
        let mut partial = empty.clone();
        for c in &mut partial.changes {
            if !matches!(c.address.kind, Kind::Network | Kind::Subnet) {
                c.action = Action::NoOp;
            }
        }
        apply_ok(&env, &partial).await;
        let p = plan_example(&env, example).await;
        snap(&format!("plan_{example}_partly_applied"), &p);
        apply_ok(&env, &p).await;
        assert!(!plan_example(&env, example).await.has_changes());

        // Drifted: the first instance resized and the last subnet deleted behind Chimera's back.
        let rows = env.store.current(&empty.stack).await.unwrap();
        let instance = rows
            .iter()
            .find(|r| r.address.kind == Kind::Instance)
            .unwrap();
        let subnet = rows
            .iter()
            .rev()
            .find(|r| r.address.kind == Kind::Subnet)
            .unwrap();
        env.cloud
            .mutate(&instance.cloud_id, "instance_type", "huge.by.hand".into())
            .await
            .unwrap();
        env.cloud.remove(&subnet.cloud_id).await.unwrap();
        let (drift, serial) =
            chimera_engine::refresh(&env.store, &env.providers, &empty.stack, "test")
                .await
                .unwrap();
        assert_eq!(drift.len(), 2, "{drift:?}");
        assert!(serial.is_some());
        let p = plan_example(&env, example).await;
        snap(&format!("plan_{example}_drifted"), &p);
        apply_ok(&env, &p).await;
        assert!(!plan_example(&env, example).await.has_changes());
        assert!(
            chimera_engine::detect_drift(&env.store, &env.providers, &empty.stack)
                .await
                .unwrap()
                .is_empty()
        );
    }
}

#[tokio::test]
async fn drift_orphans_and_import() {
    let env = env().await;
    apply_ok(&env, &plan_example(&env, "webapp").await).await;
    assert!(
        chimera_engine::detect_drift(&env.store, &env.providers, "webapp")
            .await
            .unwrap()
            .is_empty()
    );
    let rows = env.store.current("webapp").await.unwrap();
    env.cloud
        .mutate(
            &cloud_id_of(&rows, "network.main"),
            "cidr",
            "10.9.0.0/16".into(),
        )
        .await
        .unwrap();
    let drift = chimera_engine::detect_drift(&env.store, &env.providers, "webapp")
        .await
        .unwrap();
    assert_eq!(drift.len(), 1);
    match &drift[0].kind {
        DriftKind::Changed { attrs } => assert_eq!(attrs[0].0, "cidr"),
        other => panic!("{other:?}"),
    }
    // Nothing is orphaned while state knows everything.
    assert!(
        chimera_engine::orphans(&env.store, &env.providers, "webapp", &[ProviderName::Local])
            .await
            .unwrap()
            .is_empty()
    );
    // Forget a resource in state (as a lost state file would): it becomes an orphan; importing
    // it back makes the stack whole again.
    let empty = tempfile::tempdir().unwrap();
    let fresh = SqliteStore::open(&empty.path().join("state.db"))
        .await
        .unwrap();
    let orphans = chimera_engine::orphans(&fresh, &env.providers, "webapp", &[ProviderName::Local])
        .await
        .unwrap();
    assert_eq!(orphans.len(), 8);
    let net = orphans
        .iter()
        .find(|o| o.tags.get("chimera-address").map(String::as_str) == Some("network.main"))
        .unwrap();
    let addr = "network.main".parse().unwrap();
    chimera_engine::import(
        &fresh,
        &env.providers,
        "webapp",
        &addr,
        ProviderName::Local,
        &net.at(),
        "test",
    )
    .await
    .unwrap();
    assert_eq!(
        chimera_engine::orphans(&fresh, &env.providers, "webapp", &[ProviderName::Local])
            .await
            .unwrap()
            .len(),
        7
    );
    assert!(
        chimera_engine::import(
            &fresh,
            &env.providers,
            "webapp",
            &addr,
            ProviderName::Local,
            &net.at(),
            "test"
        )
        .await
        .is_err(),
        "importing twice is refused"
    );
}
