//! `moved` entries applied on the local provider: renaming the webapp's instances moves their
//! state rows (same cloud resources, no provider call, nothing created or deleted), the
//! volume's reference follows, history keeps the old addresses, and a move combined with a
//! size change is one update of the same cloud resource.

use std::collections::BTreeMap;

use chimera_compiler::{EvalOptions, compile};
use chimera_engine::{ApplyOptions, apply};
use chimera_plans::plan::{self, Action, Plan, Prior};
use chimera_state::StateStore;

mod common;
use common::{Env, apply_ok, env};

fn webapp() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/webapp/main.ncl"
    ))
    .unwrap()
}

/// The webapp with its instances renamed along `chain` (its last name is the current one):
/// one `moved` entry per step, `instance.{a}-N` to `instance.{b}-N`.
fn renamed(size: &str, chain: &[&str]) -> String {
    let entries: Vec<String> = chain
        .windows(2)
        .map(|w| {
            format!(
                "std.array.generate (fun i => {{ from = \"instance.{}-%{{std.to_string i}}\", to = \"instance.{}-%{{std.to_string i}}\" }}) 3",
                w[0], w[1]
            )
        })
        .collect();
    let name = chain.last().expect("a name");
    webapp()
        .replace(
            "name = \"web-%{std.to_string i}\"",
            &format!("name = \"{name}-%{{std.to_string i}}\""),
        )
        .replace(
            "web_size | default = 'small",
            &format!("web_size | default = '{size}"),
        )
        .replace(
            "  stack = \"webapp\",\n",
            &format!(
                "  stack = \"webapp\",\n  moved = std.array.flatten [{}],\n",
                entries.join(", ")
            ),
        )
}

/// Compiles `source` (warnings allowed: a chain of moves is one) and plans it against state.
async fn plan_for(env: &Env, source: &str) -> Plan {
    let file = env.dir.path().join("main.ncl");
    std::fs::write(&file, source).unwrap();
    let c = compile(&file, &EvalOptions::default());
    assert!(
        !c.has_errors(),
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
    plan::plan(Some(&g), &g.stack, &prior).unwrap()
}

/// Cloud id per state address.
async fn ids(env: &Env) -> BTreeMap<String, String> {
    env.store
        .current("webapp")
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.address.to_string(), r.cloud_id))
        .collect()
}

async fn cloud_ids(env: &Env) -> Vec<String> {
    let mut v: Vec<String> = env
        .cloud
        .all()
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.cloud_id)
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn renaming_with_moved_entries_moves_state_and_touches_no_cloud_resource() {
    let env = env().await;
    apply_ok(&env, &plan_for(&env, &webapp()).await).await;
    let before = ids(&env).await;
    let cloud_before = cloud_ids(&env).await;
    assert_eq!(cloud_before.len(), 8);
    let first = env.store.stack("webapp").await.unwrap().unwrap().serial;

    let src = renamed("small", &["web", "front"]);
    let p = plan_for(&env, &src).await;
    assert_eq!(p.moves(), 3);
    assert!(
        p.changes.iter().all(|c| c.action == Action::NoOp),
        "only moves: {:?}",
        p.changes
            .iter()
            .map(|c| (c.address.to_string(), c.action))
            .collect::<Vec<_>>()
    );
    let report = apply(&p, &env.store, &env.providers, &ApplyOptions::default())
        .await
        .unwrap();
    assert!(report.ok());
    assert!(
        report.succeeded.is_empty(),
        "a move alone makes no provider call: {:?}",
        report.succeeded
    );
    assert_eq!(report.moved.len(), 3);

    // State: the same cloud resources under the new addresses; the volume's reference followed.
    let after = ids(&env).await;
    for i in 0..3 {
        assert_eq!(
            after.get(&format!("instance.front-{i}")),
            before.get(&format!("instance.web-{i}")),
            "{after:?}"
        );
        assert!(!after.contains_key(&format!("instance.web-{i}")));
    }
    assert_eq!(after.len(), 8);
    let rows = env.store.current("webapp").await.unwrap();
    let volume = rows
        .iter()
        .find(|r| r.address.to_string() == "volume.data")
        .unwrap();
    assert_eq!(volume.deps, vec!["instance.front-0".parse().unwrap()]);
    assert_eq!(volume.attrs["instance"], "${chimera:instance.front-0.id}");
    // The cloud: nothing created, nothing deleted.
    assert_eq!(cloud_ids(&env).await, cloud_before);
    // History keeps the old addresses.
    let then = env.store.resources_at("webapp", first).await.unwrap();
    assert!(
        then.iter()
            .any(|r| r.address.to_string() == "instance.web-0")
    );

    // Converged: the same configuration (its entries kept as history) plans nothing, through
    // the hash fast path (a moved row took the desired hash).
    let again = plan_for(&env, &src).await;
    assert!(!again.has_changes());
    let graph_hashes: BTreeMap<String, _> = again
        .changes
        .iter()
        .filter_map(|c| Some((c.address.to_string(), c.desired.as_ref()?.hash)))
        .collect();
    for r in env.store.current("webapp").await.unwrap() {
        assert_eq!(
            Some(&r.hash),
            graph_hashes.get(&r.address.to_string()),
            "{}",
            r.address
        );
    }

    // A chain (web → front → app) with a size change: the moved rows are updated in place, the
    // same cloud resources, under the last address.
    let src = renamed("large", &["web", "front", "app"]);
    let p = plan_for(&env, &src).await;
    assert_eq!(p.moves(), 3);
    let updates: Vec<String> = p
        .changes
        .iter()
        .filter(|c| c.action == Action::Update)
        .map(|c| {
            format!(
                "{} <- {}",
                c.address,
                c.moved_from
                    .as_ref()
                    .map(|a| a.to_string())
                    .unwrap_or_default()
            )
        })
        .collect();
    assert_eq!(
        updates,
        vec![
            "instance.app-0 <- instance.front-0",
            "instance.app-1 <- instance.front-1",
            "instance.app-2 <- instance.front-2",
        ]
    );
    let report = apply(&p, &env.store, &env.providers, &ApplyOptions::default())
        .await
        .unwrap();
    assert!(report.ok(), "{:?}", report.failed);
    assert_eq!(report.succeeded.len(), 3, "one update each");
    let after = ids(&env).await;
    for i in 0..3 {
        assert_eq!(
            after.get(&format!("instance.app-{i}")),
            before.get(&format!("instance.web-{i}"))
        );
    }
    assert_eq!(after.len(), 8);
    assert_eq!(cloud_ids(&env).await, cloud_before);
    let large = env
        .store
        .current("webapp")
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.address.to_string() == "instance.app-1")
        .unwrap();
    assert_eq!(large.attrs["size"], "large");
    assert!(!plan_for(&env, &src).await.has_changes());
}

#[tokio::test]
async fn a_stale_plan_with_moves_moves_nothing() {
    let env = env().await;
    apply_ok(&env, &plan_for(&env, &webapp()).await).await;
    let p = plan_for(&env, &renamed("small", &["web", "front"])).await;
    // State moves on (an in-place update) after the plan was made.
    apply_ok(
        &env,
        &plan_for(
            &env,
            &webapp().replace(
                "web_size | default = 'small",
                "web_size | default = 'medium",
            ),
        )
        .await,
    )
    .await;
    let before = ids(&env).await;
    assert!(
        apply(&p, &env.store, &env.providers, &ApplyOptions::default())
            .await
            .is_err()
    );
    assert_eq!(ids(&env).await, before, "nothing moved");
}
