//! Content hashes: stable for the same input, and a change moves exactly the changed resource
//! and everything that depends on it.

use std::path::Path;

use chimera_compiler::{EvalOptions, Graph, compile};
use chimera_model::Address;

const STACK: &str = r#"
let c = import "chimera.ncl" in
let net = c.Network & { name = "main", cidr = "10.0.0.0/16" } in
let sub = c.Subnet & { name = "a", network = net, cidr = "SUBNET_CIDR" } in
let other = c.Subnet & { name = "b", network = net, cidr = "10.0.9.0/24" } in
let web = c.Instance & { name = "web", size = 'small, subnet = sub } in
let vol = c.Volume & { name = "data", size_gib = 10, instance = web } in
let lone = c.Network & { name = "lone", cidr = "172.16.0.0/12" } in
{ stack = "h", resources = [net, sub, other, web, vol, lone] }
"#;

fn build(dir: &Path, cidr: &str) -> Graph {
    let file = dir.join("main.ncl");
    std::fs::write(&file, STACK.replace("SUBNET_CIDR", cidr)).unwrap();
    let c = compile(&file, &EvalOptions::default());
    assert!(
        c.diagnostics.is_empty(),
        "{}",
        c.sources.render(&c.diagnostics, false)
    );
    c.graph.unwrap()
}

fn hash(g: &Graph, a: &str) -> String {
    g.get(&a.parse::<Address>().unwrap()).unwrap().hash.to_hex()
}

#[test]
fn same_input_same_hashes_and_json() {
    let d1 = tempfile::tempdir().unwrap();
    let d2 = tempfile::tempdir().unwrap();
    let a = build(d1.path(), "10.0.1.0/24");
    let b = build(d2.path(), "10.0.1.0/24");
    assert_eq!(a.hash, b.hash, "the directory must not matter");
    let ja = serde_json::to_string(&chimera_compiler::graph::to_eval_json(&a)).unwrap();
    let jb = serde_json::to_string(&chimera_compiler::graph::to_eval_json(&b)).unwrap();
    assert_eq!(ja, jb);
    // The values themselves are pinned by the corpus snapshots (tests/snapshots/ok__*.snap): a
    // change there means every stored state would see a diff.
    assert_eq!(hash(&a, "network.main").len(), 64);
}

#[test]
fn a_change_moves_the_resource_and_its_dependents_only() {
    let d = tempfile::tempdir().unwrap();
    let before = build(d.path(), "10.0.1.0/24");
    let after = build(d.path(), "10.0.2.0/24");
    for changed in ["subnet.a", "instance.web", "volume.data"] {
        assert_ne!(
            hash(&before, changed),
            hash(&after, changed),
            "{changed} should change"
        );
    }
    for same in ["network.main", "subnet.b", "network.lone"] {
        assert_eq!(
            hash(&before, same),
            hash(&after, same),
            "{same} should not change"
        );
    }
    assert_ne!(before.hash, after.hash);
}
