//! What the plans tests share: compiling a stack source and planning it against prior state.

#![allow(dead_code)]

use chimera_compiler::{EvalOptions, compile};
use chimera_model::StateResource;
use chimera_model::graph::Graph;
use chimera_plans::plan::{self, Plan, Prior};

/// The graph of a stack source (which must compile cleanly).
pub fn graph_of(src: &str) -> Graph {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("main.ncl");
    std::fs::write(&path, src).unwrap();
    let c = compile(&path, &EvalOptions::default());
    assert!(
        c.diagnostics.is_empty(),
        "{}",
        c.sources.render(&c.diagnostics, false)
    );
    c.graph.expect("a graph")
}

/// `g` planned against `rows` as generation `serial` of lineage "lineage" (0: no state yet).
pub fn plan_against(g: &Graph, rows: &[StateResource], serial: u64) -> Plan {
    plan::plan(
        Some(g),
        &g.stack,
        &Prior {
            lineage: (serial > 0).then(|| "lineage".to_string()),
            serial,
            resources: rows,
        },
    )
    .unwrap()
}

/// `head` planned against `base` as if `base` were applied (generation `serial`).
pub fn plan_between(base: &str, head: &str, serial: u64) -> Plan {
    let (b, h) = (graph_of(base), graph_of(head));
    plan_against(&h, &plan::prior_from_graph(&b, &[&h]), serial)
}

/// A stack source planned against an empty state.
pub fn fresh(src: &str) -> Plan {
    plan_against(&graph_of(src), &[], 0)
}
