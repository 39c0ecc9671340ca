//! The apply spine in-process on the local provider: compile → plan → apply → plan again.

use std::sync::Arc;

use chimera_compiler::{EvalOptions, compile};
use chimera_engine::{ApplyOptions, Providers, apply};
use chimera_plans::plan::{self, Action, Plan, Prior};
use chimera_providers::local::{Knobs, LocalCloud};
use chimera_state::StateStore;

mod common;
use common::{Env, apply_ok, env, plan_file};
use proptest::prelude::*;

async fn plan_for(env: &Env, source: &str) -> Plan {
    let file = env.dir.path().join("main.ncl");
    std::fs::write(&file, source).unwrap();
    plan_file(env, &file, false).await
}

fn actions(p: &Plan) -> Vec<(String, Action)> {
    p.changes
        .iter()
        .filter(|c| c.action != Action::NoOp)
        .map(|c| (c.address.to_string(), c.action))
        .collect()
}

#[tokio::test]
async fn webapp_lifecycle_on_local() {
    let env = env().await;
    let src = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/webapp/main.ncl"
    ))
    .unwrap();
    let p = plan_for(&env, &src).await;
    assert_eq!(p.counts().get(&Action::Create), Some(&8));
    apply_ok(&env, &p).await;
    assert_eq!(env.cloud.all().await.unwrap().len(), 8);

    // Idempotent: nothing to do, and the no-op is the hash fast path.
    let p = plan_for(&env, &src).await;
    assert!(!p.has_changes(), "{:?}", actions(&p));

    // An in-place update.
    let p = plan_for(
        &env,
        &src.replace("web_size | default = 'small", "web_size | default = 'large"),
    )
    .await;
    assert_eq!(
        actions(&p),
        vec![
            ("instance.web-0".into(), Action::Update),
            ("instance.web-1".into(), Action::Update),
            ("instance.web-2".into(), Action::Update)
        ]
    );
    apply_ok(&env, &p).await;
    let changed = src.replace("web_size | default = 'small", "web_size | default = 'large");
    assert!(!plan_for(&env, &changed).await.has_changes());

    // A force-new change replaces the subnet and everything attached to it through a
    // force-new reference (the instances); the volume follows its instance.
    let moved = changed.replace("cidr = \"10.0.1.0/24\"", "cidr = \"10.0.4.0/24\"");
    let p = plan_for(&env, &moved).await;
    let acts = actions(&p);
    assert!(
        acts.contains(&("subnet.public".into(), Action::Replace)),
        "{acts:?}"
    );
    assert!(
        acts.contains(&("instance.web-0".into(), Action::Replace)),
        "{acts:?}"
    );
    apply_ok(&env, &p).await;
    assert!(!plan_for(&env, &moved).await.has_changes());
    assert_eq!(
        env.cloud.all().await.unwrap().len(),
        8,
        "a replace must not leave the old resource"
    );
    let ip = env
        .store
        .current("webapp")
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.address.to_string() == "instance.web-0")
        .unwrap();
    assert!(
        ip.outputs["private_ip"]
            .as_str()
            .unwrap()
            .starts_with("10.0.4."),
        "{:?}",
        ip.outputs
    );

    // Destroy leaves nothing.
    let p = plan_file(&env, &env.dir.path().join("main.ncl"), true).await;
    assert_eq!(p.counts().get(&Action::Delete), Some(&8));
    apply_ok(&env, &p).await;
    assert!(env.cloud.all().await.unwrap().is_empty());
    assert!(env.store.current("webapp").await.unwrap().is_empty());
    let history = env.store.history("webapp").await.unwrap();
    assert_eq!(history.len(), 4);
    assert!(history.iter().all(|g| g.status == "complete"));
}

#[tokio::test]
async fn create_before_destroy_keeps_the_new_resource() {
    let env = env().await;
    let src = |cidr: &str| {
        format!(
            r#"let c = import "chimera.ncl" in
{{ stack = "cbd", resources = [ c.Network & {{ name = "n", cidr = "{cidr}", lifecycle = {{ create_before_destroy = true }} }} ] }}"#
        )
    };
    apply_ok(&env, &plan_for(&env, &src("10.1.0.0/16")).await).await;
    let old = env.cloud.all().await.unwrap()[0].cloud_id.clone();
    let p = plan_for(&env, &src("10.2.0.0/16")).await;
    assert_eq!(
        actions(&p),
        vec![("network.n".to_string(), Action::Replace)]
    );
    assert!(p.changes[0].create_before_destroy);
    apply_ok(&env, &p).await;
    let cloud = env.cloud.all().await.unwrap();
    assert_eq!(cloud.len(), 1, "exactly the new network remains");
    assert_ne!(cloud[0].cloud_id, old);
    let state = env.store.current("cbd").await.unwrap();
    assert_eq!(state.len(), 1);
    assert_eq!(state[0].cloud_id, cloud[0].cloud_id);
    assert!(!plan_for(&env, &src("10.2.0.0/16")).await.has_changes());
}

#[tokio::test]
async fn references_are_resolved_inside_strings() {
    let env = env().await;
    let src = r#"
let c = import "chimera.ncl" in
let net = c.Network & { name = "n", cidr = "10.1.0.0/16" } in
let sn = c.Subnet & { name = "s", network = net, cidr = "10.1.1.0/24" } in
let database = c.Instance & { name = "db", size = 'small, subnet = sn } in
let app = c.Instance & { name = "app", size = 'small, subnet = sn, tags = { db = "at %{database.outputs.private_ip}:5432" } } in
{ stack = "refs", resources = [net, sn, database, app] }
"#;
    let p = plan_for(&env, src).await;
    let app = p
        .changes
        .iter()
        .find(|c| c.address.to_string() == "instance.app")
        .unwrap();
    let tags = app.changes.iter().find(|a| a.attr == "tags").unwrap();
    assert_eq!(tags.after.as_ref().unwrap()["db"], "(known after apply)");
    apply_ok(&env, &p).await;
    let cloud = env.cloud.all().await.unwrap();
    let app = cloud
        .iter()
        .find(|o| o.tags.get("chimera-address").map(String::as_str) == Some("instance.app"))
        .unwrap();
    let db_ip = cloud
        .iter()
        .find(|o| o.tags.get("chimera-address").map(String::as_str) == Some("instance.db"))
        .unwrap()
        .outputs["private_ip"]
        .clone();
    assert_eq!(
        app.tags["db"],
        format!("at {}:5432", db_ip.as_str().unwrap())
    );
    assert!(!plan_for(&env, src).await.has_changes());
}

#[tokio::test]
async fn a_failure_stops_only_its_dependents() {
    let env = env().await;
    // Two independent branches on a cloud that refuses every call.
    let src = r#"
let c = import "chimera.ncl" in
let a = c.Network & { name = "a", cidr = "10.1.0.0/16" } in
let b = c.Network & { name = "b", cidr = "10.2.0.0/16" } in
{ stack = "partial", resources = [a, b,
  c.Subnet & { name = "sa", network = a, cidr = "10.1.1.0/24" },
  c.Subnet & { name = "sb", network = b, cidr = "10.2.1.0/24" },
  c.Instance & { name = "vb", size = 'small, subnet = c.ref "subnet" "sb" "id" } ] }
"#;
    let p = plan_for(&env, src).await;
    let failing = Arc::new(
        LocalCloud::open(
            &env.dir.path().join("failing.db"),
            Knobs {
                failure_rate: 1.0,
                ..Knobs::default()
            },
        )
        .await
        .unwrap(),
    );
    let providers = Providers::default().with(failing);
    let report = apply(&p, &env.store, &providers, &ApplyOptions::default())
        .await
        .unwrap();
    assert_eq!(report.failed.len(), 2, "both networks fail");
    assert_eq!(
        report.skipped.len(),
        3,
        "their subnets and the instance are skipped"
    );
    assert_eq!(
        env.store.history("partial").await.unwrap()[0].status,
        "partial"
    );
    // Intents are written ahead (a step's intent when the first step it waits for starts);
    // those of skipped steps are closed, so nothing is left for recovery to chase.
    assert!(
        env.store
            .pending_intents("partial")
            .await
            .unwrap()
            .is_empty(),
        "no pending intents after a finished apply"
    );
    // A later apply with a healthy cloud converges.
    let p = plan_for(&env, src).await;
    apply_ok(&env, &p).await;
    assert!(!plan_for(&env, src).await.has_changes());
}

#[tokio::test]
async fn stale_plans_and_protected_resources_are_refused() {
    let env = env().await;
    let src = r#"
let c = import "chimera.ncl" in
{ stack = "guard", resources = [ c.Network & { name = "n", cidr = "10.1.0.0/16", lifecycle = { prevent_destroy = true } } ] }
"#;
    let first = plan_for(&env, src).await;
    let second = plan_for(&env, src).await;
    apply_ok(&env, &first).await;
    let err = apply(
        &second,
        &env.store,
        &env.providers,
        &ApplyOptions::default(),
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string().contains("expected generation 0, found 1")
            || err.to_string().contains("plan again"),
        "{err}"
    );
    // Destroying a protected resource is a plan error.
    let c = compile(&env.dir.path().join("main.ncl"), &EvalOptions::default());
    let g = c.graph.unwrap();
    let current = env.store.current("guard").await.unwrap();
    let info = env.store.stack("guard").await.unwrap().unwrap();
    let prior = Prior {
        lineage: Some(info.lineage),
        serial: info.serial,
        resources: &current,
    };
    let diags = plan::plan(None, &g.stack, &prior).unwrap_err();
    assert_eq!(diags[0].code.0, "E0200");
}

fn stack_source(nets: &[(u8, Vec<Vec<&'static str>>)]) -> String {
    let mut s = String::from("let c = import \"chimera.ncl\" in\n");
    let mut names = Vec::new();
    for (n, (tag, subnets)) in nets.iter().enumerate() {
        s.push_str(&format!("let n{n} = c.Network & {{ name = \"n{n}\", cidr = \"10.{n}.0.0/16\", tags = {{ t = \"{tag}\" }} }} in\n"));
        names.push(format!("n{n}"));
        for (k, instances) in subnets.iter().enumerate() {
            s.push_str(&format!("let s{n}_{k} = c.Subnet & {{ name = \"s{n}-{k}\", network = n{n}, cidr = \"10.{n}.{k}.0/24\" }} in\n"));
            names.push(format!("s{n}_{k}"));
            for (j, size) in instances.iter().enumerate() {
                let peer = if j > 0 {
                    format!(
                        ", user_data = \"peer %{{i{n}_{k}_{}.outputs.private_ip}}\"",
                        j - 1
                    )
                } else {
                    String::new()
                };
                s.push_str(&format!("let i{n}_{k}_{j} = c.Instance & {{ name = \"i{n}-{k}-{j}\", size = '{size}, subnet = s{n}_{k}{peer} }} in\n"));
                names.push(format!("i{n}_{k}_{j}"));
            }
        }
    }
    s.push_str(&format!(
        "{{ stack = \"prop\", resources = [{}] }}\n",
        names.join(", ")
    ));
    s
}

fn arb_stack() -> impl Strategy<Value = Vec<(u8, Vec<Vec<&'static str>>)>> {
    let size = prop::sample::select(vec!["micro", "small", "medium"]);
    let subnet = prop::collection::vec(size, 0..3);
    let net = (0u8..3, prop::collection::vec(subnet, 0..3));
    prop::collection::vec(net, 1..3)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, .. ProptestConfig::default() })]

    /// Random graphs, and a random change to them: plan → apply → plan is empty each time.
    #[test]
    fn apply_converges(first in arb_stack(), second in arb_stack()) {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let env = env().await;
            for src in [stack_source(&first), stack_source(&second)] {
                let p = plan_for(&env, &src).await;
                apply_ok(&env, &p).await;
                let again = plan_for(&env, &src).await;
                prop_assert!(!again.has_changes(), "not converged: {:?}", actions(&again));
                let in_cloud = env.cloud.all().await.unwrap().len();
                let in_state = env.store.current("prop").await.unwrap().len();
                prop_assert_eq!(in_cloud, in_state);
            }
            Ok(())
        })?;
    }
}

#[tokio::test]
async fn a_missing_provider_is_refused_before_anything_is_recorded() {
    let env = env().await;
    let src = r#"
let c = import "chimera.ncl" in
{ stack = "clouds", resources = [ c.Network & { name = "n", cidr = "10.1.0.0/16", provider = 'aws } ] }
"#;
    let p = plan_for(&env, src).await;
    let err = apply(&p, &env.store, &env.providers, &ApplyOptions::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("aws"), "{err}");
    assert!(
        env.store.history("clouds").await.unwrap().is_empty(),
        "no generation may be opened"
    );
}
