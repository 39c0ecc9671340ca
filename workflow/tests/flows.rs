//! The workflow library as its clients use it: stacks held in memory (an overlay over an empty
//! directory, nothing written but `.chimera/`), one compile per flow, typed results and
//! errors, and a review callback that decides.

use std::path::Path;
use std::sync::Arc;

use chimera_compiler::{Overlay, Source};
use chimera_model::codes;
use chimera_plans::Plan;
use chimera_workflow::{
    ApplyRequest, Compilation, ErrorKind, PlanOptions, Planned, Settings, Stack,
};

fn example(name: &str) -> String {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(name);
    std::fs::read_to_string(dir.join("main.ncl")).unwrap()
}

/// Settings for a test: no evaluation cache, so every compile is an evaluation we can count.
fn settings() -> Settings {
    Settings {
        actor: "test@chimera".into(),
        ..Settings::default()
    }
}

fn overlay(dir: &Path, main: &str) -> Arc<dyn Source> {
    Arc::new(Overlay::new(dir, [("main.ncl", main)]))
}

/// A stack whose `main.ncl` is `src`, held in memory over the empty directory `dir`.
fn in_memory(dir: &Path, src: &str) -> Stack {
    Stack::open_in(overlay(dir, src), dir, settings())
}

fn yes(_: &Plan) -> bool {
    true
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn the_examples_apply_and_plan_from_memory() {
    let rt = rt();
    for name in ["webapp", "fleet"] {
        let dir = tempfile::tempdir().unwrap();
        let src = if name == "fleet" {
            // A smaller fleet: the flow is what is tested here, not its size.
            example(name).replace("default = 1000", "default = 20")
        } else {
            example(name)
        };
        let mut stack = in_memory(dir.path(), &src);
        let applied = rt
            .block_on(stack.apply(&ApplyRequest::default(), yes))
            .unwrap();
        assert!(applied.ok(), "{name}: {:?}", applied.report);
        let report = applied.report.expect("changes were applied");
        assert_eq!(report.serial, 1);
        assert!(report.succeeded.len() > 3, "{name}");
        // One evaluation for recovery, planning and applying together.
        assert_eq!(stack.compilations(), &[Compilation::Evaluated], "{name}");
        // The overlay was never written: only state and the local cloud are on disk.
        assert!(!dir.path().join("main.ncl").exists());
        assert!(dir.path().join(".chimera/state.db").exists());

        // A fresh stack plans the same memory against that state: nothing to do, no drift.
        let mut again = in_memory(dir.path(), &src);
        let planned = rt
            .block_on(again.plan(PlanOptions {
                refresh: true,
                ..Default::default()
            }))
            .unwrap();
        let Planned::Full(file) = planned else {
            panic!("a refreshing plan is never a memo")
        };
        assert!(!file.plan.has_changes(), "{name}");
        assert!(file.plan.drift.is_empty(), "{name}");
        assert_eq!(file.plan.prior_serial, 1);
    }
}

#[test]
fn an_edit_held_in_memory_is_planned_against_state() {
    let rt = rt();
    let dir = tempfile::tempdir().unwrap();
    let src = example("webapp");
    let mut stack = in_memory(dir.path(), &src);
    rt.block_on(stack.apply(&ApplyRequest::default(), yes))
        .unwrap();

    // An agent's proposed edit: one more tag on every resource, never written to disk.
    let edited = src.replacen("tags = {", "tags = { team = \"web\",", 1);
    assert_ne!(edited, src, "the example has tags to edit");
    let mut proposal = in_memory(dir.path(), &edited);
    let Planned::Full(file) = rt.block_on(proposal.plan(PlanOptions::default())).unwrap() else {
        panic!("no memo without a cache")
    };
    assert!(file.plan.has_changes());
    assert!(
        file.plan
            .changes
            .iter()
            .flat_map(|c| &c.changes)
            .any(|a| a.attr == "tags"),
        "{:?}",
        file.plan.changes
    );
    assert!(!dir.path().join("main.ncl").exists());
}

#[test]
fn a_review_that_declines_changes_nothing() {
    let rt = rt();
    let dir = tempfile::tempdir().unwrap();
    let mut stack = in_memory(dir.path(), &example("webapp"));
    let mut seen = 0;
    let err = rt
        .block_on(stack.apply(&ApplyRequest::default(), |p| {
            seen = p.changes.len();
            false
        }))
        .unwrap_err();
    assert!(seen > 0, "the review saw the plan");
    assert_eq!(err.kind, ErrorKind::NotConfirmed);
    assert_eq!(err.code(), Some(codes::NOT_CONFIRMED));
    assert!(!err.hints.is_empty());
    let rows = rt.block_on(stack.state_rows()).unwrap();
    assert!(rows.is_empty(), "nothing was applied");
}

#[test]
fn a_stack_that_does_not_compile_is_a_located_compile_error() {
    let dir = tempfile::tempdir().unwrap();
    let src = "let c = import \"chimera.ncl\" in\n{ stack = \"x\", resources = [ c.Network & { name = \"n\", cidr = \"10.0.0.0/33\" } ] }\n";
    let mut stack = in_memory(dir.path(), src);
    let err = stack.check().unwrap_err();
    assert_eq!(err.kind, ErrorKind::Compile);
    let d = &err.diagnostics[0];
    assert_eq!(d.code, codes::INVALID_CIDR);
    let loc = d.location.as_ref().expect("located");
    // Named relative to the overlay's root, at the line written.
    assert_eq!(loc.file, "main.ncl");
    assert_eq!(loc.line, 2);
    let rendered = err.sources.render(&err.diagnostics, false);
    assert!(rendered.contains("10.0.0.0/33"), "{rendered}");
}

#[test]
fn a_failed_call_keeps_its_class_and_address() {
    let rt = rt();
    let dir = tempfile::tempdir().unwrap();
    let src = example("webapp");
    let mut s = settings();
    s.provider_env
        .insert("CHIMERA_LOCAL_FAILURE_RATE".into(), "1".into());
    let mut stack = Stack::open_in(overlay(dir.path(), &src), dir.path(), s);
    let applied = rt
        .block_on(stack.apply(&ApplyRequest::default(), yes))
        .unwrap();
    assert!(!applied.ok());
    let report = applied.report.unwrap();
    assert!(!report.failed.is_empty());
    for (step, failure) in &report.failed {
        assert_eq!(failure.class, chimera_workflow::FailureClass::Permanent);
        assert_eq!(failure.address.as_ref(), Some(&step.address));
        assert_eq!(failure.code.as_deref(), Some("InjectedFailure"));
    }
    let diags = report.diagnostics();
    assert!(
        diags
            .iter()
            .any(|d| d.code == codes::CALL_REFUSED && d.address.is_some())
    );
    assert!(diags.iter().any(|d| d.code == codes::STEP_SKIPPED));
}

#[test]
fn state_only_flows_do_not_compile_a_named_stack() {
    let rt = rt();
    let dir = tempfile::tempdir().unwrap();
    let mut stack = in_memory(dir.path(), &example("webapp"));
    rt.block_on(stack.apply(&ApplyRequest::default(), yes))
        .unwrap();
    // Broken source, but named: history, rows and pull need no compile.
    let mut named = in_memory(dir.path(), "{ not nickel").named(Some("webapp".into()));
    assert_eq!(rt.block_on(named.history()).unwrap().len(), 1);
    let pulled = rt.block_on(named.pull()).unwrap();
    assert_eq!(pulled.serial, 1);
    assert!(!pulled.resources.is_empty());
    assert!(named.compilations().is_empty());
}

#[test]
fn the_stack_s_provider_settings_reach_its_providers() {
    let rt = rt();
    let dir = tempfile::tempdir().unwrap();
    // A failing local cloud, configured by the stack itself.
    let src = example("webapp").replacen(
        "stack = \"webapp\",",
        "stack = \"webapp\", providers = { local = { failure_rate = 1 } },",
        1,
    );
    let mut stack = in_memory(dir.path(), &src);
    // Without refresh; the plan takes the graph by value, and the settings stay known.
    let req = ApplyRequest {
        refresh: false,
        ..ApplyRequest::default()
    };
    let applied = rt.block_on(stack.apply(&req, yes)).unwrap();
    let report = applied.report.expect("applied");
    assert!(
        report
            .failed
            .iter()
            .all(|(_, f)| f.code.as_deref() == Some("InjectedFailure")),
        "{report:?}"
    );
    assert!(!report.failed.is_empty());
    assert_eq!(stack.name().ok().as_deref(), Some("webapp"));
}

#[test]
fn a_provider_limit_is_a_located_plan_error_before_anything_is_created() {
    let rt = rt();
    let dir = tempfile::tempdir().unwrap();
    let src = r#"let c = import "chimera.ncl" in
{
  stack = "limits",
  resources = [
    c.Network & { name = "main", cidr = "10.0.0.0/16" },
    c.Subnet & {
      name = "tiny",
      network = "network.main",
      cidr = "10.0.0.0/30",
    },
  ],
}
"#
    .replace(r#""network.main""#, r#"c.ref "network" "main" "id""#);
    let mut stack = in_memory(dir.path(), &src);
    let Err(err) = rt.block_on(stack.plan(PlanOptions::default())) else {
        panic!("the plan is refused");
    };
    assert_eq!(err.kind, ErrorKind::Plan);
    let d = &err.diagnostics[0];
    assert_eq!(d.code, codes::PROVIDER_LIMIT);
    assert!(d.detail.contains("/28"), "{d:?}");
    let at = d.location.as_ref().expect("located");
    assert_eq!(at.file, "main.ncl");
    assert_eq!(at.line, 9, "the subnet's `cidr` line: {at:?}");
    let rendered = err.sources.render(&err.diagnostics, false);
    assert!(rendered.contains("10.0.0.0/30"), "{rendered}");
    // Nothing was created: the state has no generation.
    assert!(rt.block_on(stack.history()).unwrap().is_empty());
}
