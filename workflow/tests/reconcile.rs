//! One reconcile tick (`Stack::reconcile`), the heart of `chimera serve`: drift injected in the
//! local cloud (an attribute changed, an instance deleted, a firewall rule added, a volume
//! detached) is healed in `auto` — back to the last applied generation, one create for the
//! deleted instance — and recorded but untouched in `report` and `propose`; a policy that
//! denies the heal keeps it from being applied.

use std::path::Path;

use chimera_model::Address;
use chimera_plans::{Action, Plan};
use chimera_workflow::{ApplyRequest, HealMode, LocalChange, ReconcileOptions, Settings, Stack};
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

/// The stack as its directory holds it now (not rewritten from the example).
fn webapp_kept(dir: &Path) -> Stack {
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

fn mode(mode: HealMode) -> ReconcileOptions {
    ReconcileOptions {
        mode,
        ..ReconcileOptions::default()
    }
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
        (
            "subnet.public",
            LocalChange::Set(vec![("public".into(), json!(false))]),
        ),
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
        (
            "volume.data",
            LocalChange::Set(vec![("instance".into(), json!(null))]),
        ),
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
            .reconcile(&mode(HealMode::Auto), &ApplyRequest::default())
            .await
            .unwrap();
        assert_eq!(
            drifted_addresses(&r),
            [
                "firewall.web",
                "instance.web-1",
                "subnet.public",
                "volume.data"
            ]
        );
        assert!(r.healed(), "{:?}", r.report);
        let plan = r.plan.as_ref().unwrap();
        let creates: Vec<String> = plan
            .changes
            .iter()
            .filter(|c| c.action == Action::Create)
            .map(|c| c.address.to_string())
            .collect();
        assert_eq!(
            creates,
            ["instance.web-1"],
            "one create for the deleted instance"
        );
        let changed: Vec<String> = plan
            .changes
            .iter()
            .filter(|c| c.action != Action::NoOp)
            .map(|c| c.address.to_string())
            .collect();
        assert!(
            changed.len() <= 5,
            "only what drifted (and its dependents) changes: {changed:?}"
        );

        // The next tick finds nothing; the heal was one generation by the reconciler.
        let mut stack = webapp(dir.path());
        let again = stack
            .reconcile(&mode(HealMode::Auto), &ApplyRequest::default())
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
        for m in [HealMode::Report, HealMode::Propose, HealMode::Report] {
            let mut stack = webapp(dir.path());
            let r = stack
                .reconcile(&mode(m), &ApplyRequest::default())
                .await
                .unwrap();
            assert_eq!(r.drift.len(), 4, "{m:?}");
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
            .reconcile(&mode(HealMode::Auto), &ApplyRequest::default())
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
        std::fs::write(
            dir.path().join("main.ncl"),
            "{ stack = \"webapp\", resources = [ }\n",
        )
        .unwrap();
        let mut stack = Stack::open(dir.path(), Settings::default());
        let err = stack
            .reconcile(&mode(HealMode::Auto), &ApplyRequest::default())
            .await
            .unwrap_err();
        assert_eq!(err.kind, chimera_workflow::ErrorKind::Compile);
        assert!(!err.diagnostics.is_empty());
        let mut named = Stack::open(dir.path(), Settings::default()).named(Some("webapp".into()));
        assert_eq!(
            named.history().await.unwrap().len(),
            generations,
            "nothing applied"
        );
        assert_eq!(
            named.local_inventory().await.unwrap().len(),
            7,
            "the drift stays"
        );
    });
}

/// The stack's own `reconcile` settings: its mode wins over the caller's, and an override per
/// kind or address narrows it.
#[test]
fn the_stack_settings_set_the_mode_per_kind_and_address() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        drifted(dir.path()).await;
        let main = dir.path().join("main.ncl");
        let src = std::fs::read_to_string(&main).unwrap();
        // The webapp example ends with its record's closing brace.
        let at = src.rfind('}').unwrap();
        let with = format!(
            "{}  reconcile = {{ heal = 'auto, overrides = {{ firewall = 'report, \"volume.data\" = 'propose }} }},\n{}",
            &src[..at],
            &src[at..]
        );
        std::fs::write(&main, with).unwrap();
        let mut stack = webapp_kept(dir.path());
        // The caller says report; the stack says auto, except firewalls and one volume.
        let r = stack
            .reconcile(&mode(HealMode::Report), &ApplyRequest::default())
            .await
            .unwrap();
        assert_eq!(r.policy.mode, HealMode::Auto);
        let names = |v: &[Address]| v.iter().map(ToString::to_string).collect::<Vec<_>>();
        assert_eq!(names(&r.healing), ["instance.web-1", "subnet.public"]);
        assert_eq!(names(&r.proposed), ["volume.data"]);
        assert!(r.healed(), "{:?}", r.report);
        // Next tick: what was not healed is still drifted, and nothing else.
        let again = webapp_kept(dir.path())
            .reconcile(&mode(HealMode::Report), &ApplyRequest::default())
            .await
            .unwrap();
        let mut left = names(&again.drift.iter().map(|d| d.address.clone()).collect::<Vec<_>>());
        left.sort();
        assert_eq!(left, ["firewall.web", "volume.data"]);
    });
}

#[test]
fn an_unknown_override_is_a_located_setting_error() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        drifted(dir.path()).await;
        let main = dir.path().join("main.ncl");
        let src = std::fs::read_to_string(&main).unwrap();
        let at = src.rfind('}').unwrap();
        std::fs::write(
            &main,
            format!(
                "{}  reconcile = {{ overrides = {{ bucket = 'auto }} }},\n{}",
                &src[..at],
                &src[at..]
            ),
        )
        .unwrap();
        let err = webapp_kept(dir.path())
            .reconcile(&mode(HealMode::Auto), &ApplyRequest::default())
            .await
            .unwrap_err();
        // The stdlib's contract finds it where it is written, as `chimera check` would.
        assert_eq!(err.kind, chimera_workflow::ErrorKind::Compile);
        let d = &err.diagnostics[0];
        let text = format!("{} {}", d.summary, d.detail);
        assert!(text.contains("\"bucket\" is neither a kind"), "{text}");
        let at = d.location.as_ref().expect("located");
        assert!(at.file.ends_with("main.ncl") && at.line == 64, "{at:?}");
    });
}

/// Held resources (backing off, parked) are not healed; the rest are.
#[test]
fn held_drift_is_left_for_later() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let mut stack = drifted(dir.path()).await;
        let opts = ReconcileOptions {
            mode: HealMode::Auto,
            hold: [addr("instance.web-1")].into_iter().collect(),
            gitops: false,
        };
        let r = stack
            .reconcile(&opts, &ApplyRequest::default())
            .await
            .unwrap();
        assert_eq!(r.held, [addr("instance.web-1")]);
        assert!(r.healed());
        let creates = r
            .plan
            .as_ref()
            .unwrap()
            .changes
            .iter()
            .filter(|c| c.action == Action::Create)
            .count();
        assert_eq!(creates, 0, "the held instance is not created again");
        assert_eq!(webapp(dir.path()).local_inventory().await.unwrap().len(), 7);
    });
}

/// GitOps mode applies what was merged into the configuration, with the heal; without it, a
/// configuration change is left to the reviewed plan.
#[test]
fn gitops_applies_configuration_changes_only_when_opted_in() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let mut stack = webapp(dir.path());
        let req = ApplyRequest {
            refresh: false,
            ..ApplyRequest::default()
        };
        assert!(stack.apply(&req, yes).await.unwrap().ok());
        let main = dir.path().join("main.ncl");
        let src = std::fs::read_to_string(&main).unwrap();
        let changed = src.replacen("size_gib = 50", "size_gib = 60", 1);
        assert_ne!(src, changed, "the webapp has a volume size to change");
        std::fs::write(&main, changed).unwrap();
        let r = webapp_kept(dir.path())
            .reconcile(&mode(HealMode::Auto), &ApplyRequest::default())
            .await
            .unwrap();
        assert!(
            r.drift.is_empty() && r.plan.is_none(),
            "not applied without GitOps"
        );
        let opts = ReconcileOptions {
            mode: HealMode::Auto,
            gitops: true,
            ..ReconcileOptions::default()
        };
        let r = webapp_kept(dir.path())
            .reconcile(&opts, &ApplyRequest::default())
            .await
            .unwrap();
        assert!(r.healed(), "{:?}", r.report);
        let updated: Vec<String> = r
            .plan
            .as_ref()
            .unwrap()
            .changes
            .iter()
            .filter(|c| c.action != Action::NoOp)
            .map(|c| c.address.to_string())
            .collect();
        assert_eq!(updated, ["volume.data"]);
        let again = webapp_kept(dir.path())
            .reconcile(&opts, &ApplyRequest::default())
            .await
            .unwrap();
        assert!(again.report.is_none(), "converged");
    });
}
