//! What the benches share: the fleet stack, medians, and compile + read state + plan.
// Each bench uses a part of this.
#![allow(dead_code)]

pub mod cloud;

use std::path::Path;

use chimera_compiler::{EvalOptions, compile};
use chimera_plans::plan::{self, Prior};
use chimera_state::StateStore;

/// A network, a subnet and N − 2 instances in stack `bench`.
pub fn fleet(n: usize) -> String {
    format!(
        r#"let c = import "chimera.ncl" in
let net = c.Network & {{ name = "main", cidr = "10.0.0.0/8" }} in
let sn = c.Subnet & {{ name = "workers", network = net, cidr = "10.0.0.0/9" }} in
{{ stack = "bench", resources = [net, sn] @ std.array.generate
  (fun i => c.Instance & {{ name = "w-%{{std.to_string i}}", size = 'micro, subnet = sn.outputs.id }}) {} }}
"#,
        n - 2
    )
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Compiles `dir/main.ncl`, reads its stack's state and plans.
pub async fn plan_of(dir: &Path, store: &dyn StateStore) -> chimera_plans::plan::Plan {
    let c = compile(&dir.join("main.ncl"), &EvalOptions::default());
    let g = c.graph.expect("compiles");
    let info = store.stack(&g.stack).await.unwrap();
    let current = store.current(&g.stack).await.unwrap();
    let prior = Prior {
        lineage: info.as_ref().map(|i| i.lineage.clone()),
        serial: info.map(|i| i.serial).unwrap_or(0),
        resources: &current,
    };
    plan::plan(Some(&g), &g.stack, &prior).unwrap()
}
