//! One reconcile tick (`Stack::reconcile`), the heart of `chimera serve`: drift injected in the
//! local cloud (an attribute changed, an instance deleted, a firewall rule added, a volume
//! detached) is healed in `auto` — back to the last applied generation, one create for the
//! deleted instance — and recorded but untouched in `report` and `propose`; a policy that
//! denies the heal keeps it from being applied.

use std::path::Path;

use chimera_model::Address;
use chimera_plans::{Action, Plan};
use chimera_workflow::{ApplyRequest, HealMode, LocalChange, Settings, Stack};
use serde_json::json;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn webapp(dir: &Path) -> Stack {
    let src = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/webapp/main.ncl"),
    )
    .unwrap();
    std::fs::write(dir.join("main.ncl"), src).unwrap();
    Stack::open(
        dir,
        Settings {
            actor: "reconciler@chimera".into(),
            ..Settings::default()
        },
    )
}

fn yes(_: &Plan) -> bool {
    true
}

fn addr(s: &str) -> Address {
    s.parse().unwrap()
}

/// Applies the webapp, then changes the local cloud behind Chimera's back four ways.
async fn drifted(dir: &Path) -> Stack {
    let mut stack = webapp(dir);
    let req = ApplyRequest {
        refresh: false,
        ..ApplyRequest::default()
    };
    assert!(stack.apply(&req, yes).await.unwrap().ok());
    let mut stack = webapp(dir);
    let changes = [
        ("subnet.public", LocalChange::Set(vec![("public".into(), json!(false))])),
        ("instance.web-1", LocalChange::Delete),
        (
            "firewall.web",
            LocalChange::Set(vec![(
                "ingress".into(),
                json!([
                    { "protocol": "tcp", "from_port": 443, "to_port": 443, "cidrs": ["0.0.0.0/0"] },
                    { "protocol": "tcp", "from_port": 22, "to_port": 22, "cidrs": ["0.0.0.0/0"] }
                ]),
            )]),
        ),
        ("volume.data", LocalChange::Set(vec![("instance".into(), json!(null))])),
    ];
    for (a, change) in &changes {
        stack.local_mutate(&addr(a), change).await.unwrap();
    }
    webapp(dir)
}

fn drifted_addresses(r: &chimera_workflow::Reconciled) -> Vec<String> {
    let mut v: Vec<String> = r.drift.iter().map(|d| d.address.to_string()).collect();
    v.sort();
    v
}

#[test]
fn auto_heals_drift_back_to_the_last_generation() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let mut stack = drifted(dir.path()).await;
        let serial_before = stack.history().await.unwrap().len();
        let r = stack
            .reconcile(HealMode::Auto, &ApplyRequest::default())
            .await
            .unwrap();
        assert_eq!(
            drifted_addresses(&r),
            ["firewall.web", "instance.web-1", "subnet.public", "volume.data"]
        );
        assert!(r.healed(), "{:?}", r.report);
        let plan = r.plan.as_ref().unwrap();
        let creates: Vec<String> = plan
            .changes
            .iter()
            .filter(|c| c.action == Action::Create)
            .map(|c| c.address.to_string())
            .collect();
        assert_eq!(creates, ["instance.web-1"], "one create for the deleted instance");
        let changed: Vec<String> = plan
            .changes
            .iter()
            .filter(|c| c.action != Action::NoOp)
            .map(|c| c.address.to_string())
            .collect();
        assert!(changed.len() <= 5, "only what drifted (and its dependents) changes: {changed:?}");

        // The next tick finds nothing; the heal was one generation by the reconciler.
        let mut stack = webapp(dir.path());
        let again = stack
            .reconcile(HealMode::Auto, &ApplyRequest::default())
            .await
            .unwrap();
        assert!(again.drift.is_empty(), "{:?}", again.drift);
        assert!(again.report.is_none());
        let history = stack.history().await.unwrap();
        assert_eq!(history.len(), serial_before + 1);
        assert_eq!(history.last().unwrap().actor, "reconciler@chimera");
        // The cloud holds exactly the webapp's eight resources again.
        assert_eq!(stack.local_inventory().await.unwrap().len(), 8);
    });
}

#[test]
fn report_and_propose_record_drift_and_change_nothing() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let mut stack = drifted(dir.path()).await;
        let generations = stack.history().await.unwrap().len();
        for mode in [HealMode::Report, HealMode::Propose, HealMode::Report] {
            let mut stack = webapp(dir.path());
            let r = stack.reconcile(mode, &ApplyRequest::default()).await.unwrap();
            assert_eq!(r.drift.len(), 4, "{mode:?}");
            assert!(r.plan.is_none() && r.report.is_none());
        }
        assert_eq!(stack.history().await.unwrap().len(), generations);
        assert_eq!(stack.local_inventory().await.unwrap().len(), 7);
    });
}

#[test]
fn a_policy_deny_keeps_the_heal_from_being_applied() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let mut stack = drifted(dir.path()).await;
        let generations = stack.history().await.unwrap().len();
        std::fs::create_dir_all(dir.path().join("policies")).unwrap();
        std::fs::write(
            dir.path().join("policies/no_creates.rego"),
            "package chimera\n\ndeny contains {\"msg\": \"no creates outside a review\", \"address\": c.address} if {\n\tsome c in input.changes\n\tc.action == \"create\"\n}\n",
        )
        .unwrap();
        let r = stack
            .reconcile(HealMode::Auto, &ApplyRequest::default())
            .await
            .unwrap();
        assert_eq!(r.drift.len(), 4);
        assert_eq!(r.denied.len(), 1, "{:?}", r.denied);
        assert_eq!(r.denied[0].address.as_deref(), Some("instance.web-1"));
        assert!(r.report.is_none(), "nothing applied");
        assert_eq!(stack.history().await.unwrap().len(), generations);
        assert_eq!(stack.local_inventory().await.unwrap().len(), 7);
    });
}

#[test]
fn a_stack_that_stops_compiling_is_left_alone() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let mut stack = drifted(dir.path()).await;
        let generations = stack.history().await.unwrap().len();
        std::fs::write(dir.path().join("main.ncl"), "{ stack = \"webapp\", resources = [ }\n").unwrap();
        let mut stack = Stack::open(dir.path(), Settings::default());
        let err = stack
            .reconcile(HealMode::Auto, &ApplyRequest::default())
            .await
            .unwrap_err();
        assert_eq!(err.kind, chimera_workflow::ErrorKind::Compile);
        assert!(!err.diagnostics.is_empty());
        let mut named = Stack::open(dir.path(), Settings::default()).named(Some("webapp".into()));
        assert_eq!(named.history().await.unwrap().len(), generations, "nothing applied");
        assert_eq!(named.local_inventory().await.unwrap().len(), 7, "the drift stays");
    });
}
