//! The planner on a compiled stack: planning a graph by value gives the plan planning it by
//! reference does, and a no-op plan's memo renders as the plan does.

use chimera_compiler::{EvalOptions, compile};
use chimera_model::graph::Graph;
use chimera_plans::plan::{self, Prior};
use chimera_plans::{NoopPlan, markdown, render};

const STACK: &str = r#"let c = import "chimera.ncl" in
let net = c.Network & { name = "main", cidr = "10.0.0.0/16", provider = 'aws } in
let sub = c.Subnet & { name = "web", network = net, cidr = "10.0.1.0/24", provider = 'aws } in
{ stack = "planner", resources = [net, sub] @ std.array.generate
    (fun i => c.Instance & { name = "w-%{std.to_string i}", size = 'small, subnet = sub, provider = 'aws }) 6 }
"#;

fn graph() -> Graph {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("main.ncl"), STACK).unwrap();
    let c = compile(dir.path(), &EvalOptions::default());
    assert!(c.diagnostics.is_empty(), "{:?}", c.diagnostics);
    c.graph.expect("compiles")
}

#[test]
fn planning_by_value_equals_planning_by_reference() {
    let g = graph();
    let rows = plan::prior_from_graph(&g, &[]);
    let mut rows_changed = rows.clone();
    rows_changed.retain(|r| r.address.name != "w-3");
    for rows in [vec![], rows, rows_changed] {
        let prior = Prior {
            lineage: Some("l".into()),
            serial: 2,
            resources: &rows,
        };
        assert_eq!(
            plan::plan(Some(&g), &g.stack, &prior).unwrap(),
            plan::plan_owned(g.clone(), &prior).unwrap()
        );
    }
}

#[test]
fn a_desired_resource_keeps_its_price_and_native_type() {
    let g = graph();
    let p = plan::plan_owned(
        g,
        &Prior {
            lineage: None,
            serial: 0,
            resources: &[],
        },
    )
    .unwrap();
    let web = p
        .changes
        .iter()
        .find(|c| c.address.to_string() == "instance.w-0")
        .and_then(|c| c.desired.as_ref())
        .expect("a create");
    assert!(web.monthly_cost > 0.0, "{}", web.monthly_cost);
    assert!(web.native_type.as_deref().is_some_and(|t| !t.is_empty()));
    let net = p
        .changes
        .iter()
        .find(|c| c.address.to_string() == "network.main");
    assert_eq!(
        net.and_then(|c| c.desired.as_ref()).unwrap().native_type,
        None
    );
}

#[test]
fn a_noop_memo_renders_as_the_noop_plan() {
    let g = graph();
    let rows = plan::prior_from_graph(&g, &[]);
    let p = plan::plan(
        Some(&g),
        &g.stack,
        &Prior {
            lineage: Some("l".into()),
            serial: 3,
            resources: &rows,
        },
    )
    .unwrap();
    let memo = NoopPlan::of(&p).expect("a no-op plan has a memo");
    assert_eq!(render::noop_text(&memo), render::plan_text(&p, false));
    assert_eq!(render::noop_json(&memo), render::plan_json(&p));
    let opts = markdown::MarkdownOptions::for_plan(&p);
    assert_eq!(
        markdown::noop_markdown(&memo, &opts),
        markdown::plan_markdown(&p, &opts)
    );
    // A plan with changes, or a destroy, has none.
    let fresh = plan::plan(
        Some(&g),
        &g.stack,
        &Prior {
            lineage: None,
            serial: 0,
            resources: &[],
        },
    )
    .unwrap();
    assert!(NoopPlan::of(&fresh).is_none());
}
