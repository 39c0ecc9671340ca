//! `moved` entries as compiled: chains resolved into the graph, the graph's hash changed by a
//! move (so no plan memo hides one) and unchanged without any, and modules' entries merged
//! with the stack's, their diagnostics located in the module.

use std::path::Path;

use chimera_compiler::{EvalOptions, compile};
use chimera_model::codes;
use chimera_model::graph::Moved;

const RESOURCES: &str = r#"[
    c.Network & { name = "main", cidr = "10.0.0.0/16" },
    c.Subnet & { name = "a", network = c.ref "network" "main" "id", cidr = "10.0.1.0/24" },
    c.Instance & { name = "front-0", size = 'small, subnet = c.ref "subnet" "a" "id" },
  ]"#;

fn stack(dir: &Path, moved: &str) -> chimera_compiler::Compiled {
    std::fs::write(
        dir.join("main.ncl"),
        format!(
            "let c = import \"chimera.ncl\" in\n{{ stack = \"m\", resources = {RESOURCES}, {moved} }}\n"
        ),
    )
    .unwrap();
    compile(dir, &EvalOptions::default())
}

fn mv(from: &str, to: &str) -> Moved {
    Moved {
        from: from.parse().unwrap(),
        to: to.parse().unwrap(),
    }
}

#[test]
fn chains_resolve_to_their_last_address_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let c = stack(
        dir.path(),
        r#"moved = [
      { from = "instance.app-0", to = "instance.front-0" },
      { from = "instance.web-0", to = "instance.app-0" },
    ]"#,
    );
    assert!(
        !c.has_errors(),
        "{}",
        c.sources.render(&c.diagnostics, false)
    );
    let g = c.graph.expect("a graph");
    assert_eq!(
        g.moved,
        vec![
            mv("instance.app-0", "instance.front-0"),
            mv("instance.web-0", "instance.front-0"),
        ]
    );
    assert_eq!(c.diagnostics.len(), 1);
    let d = &c.diagnostics[0];
    assert_eq!(d.code, codes::MOVED_CHAIN);
    assert!(!d.is_error());
    assert!(
        d.detail
            .contains("instance.web-0 → instance.app-0 → instance.front-0"),
        "{}",
        d.detail
    );
    // Located at the chain's first entry (the second one written).
    assert_eq!(d.location.as_ref().map(|l| l.line), Some(8));
}

#[test]
fn a_move_changes_the_graph_hash_and_no_move_leaves_it_alone() {
    let dir = tempfile::tempdir().unwrap();
    let plain = stack(dir.path(), "").graph.expect("a graph");
    let empty = stack(dir.path(), "moved = []").graph.expect("a graph");
    assert_eq!(plain.hash, empty.hash);
    assert!(empty.moved.is_empty());
    let one = stack(
        dir.path(),
        r#"moved = [{ from = "instance.web-0", to = "instance.front-0" }]"#,
    )
    .graph
    .expect("a graph");
    assert_ne!(one.hash, plain.hash, "a new entry must change the hash");
    assert_eq!(one.moved, vec![mv("instance.web-0", "instance.front-0")]);
    // The resources themselves are the same.
    assert_eq!(
        one.resources.iter().map(|r| r.hash).collect::<Vec<_>>(),
        plain.resources.iter().map(|r| r.hash).collect::<Vec<_>>()
    );
    // The graph document (the evaluation cache's file) keeps the moves.
    let back = chimera_model::graph::Graph::from_doc_json(&one.to_doc_json().unwrap()).unwrap();
    assert_eq!(back.moved, one.moved);
    assert_eq!(back.hash, one.hash);
}

#[test]
fn a_module_declares_moves_of_its_own_located_in_the_module() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("main.ncl"),
        r#"let c = import "chimera.ncl" in
{ stack = "m", resources = [], modules = ["web.ncl"], moved = [{ from = "network.old", to = "network.main" }] }
"#,
    )
    .unwrap();
    let module = |moved: &str| {
        format!(
            "let c = import \"chimera.ncl\" in\n{{ resources = {RESOURCES},\n  moved = [{moved}] }}\n"
        )
    };
    std::fs::write(
        dir.path().join("web.ncl"),
        module(r#"{ from = "instance.web-0", to = "instance.front-0" }"#),
    )
    .unwrap();
    let c = compile(dir.path(), &EvalOptions::default());
    assert!(
        c.diagnostics.is_empty(),
        "{}",
        c.sources.render(&c.diagnostics, false)
    );
    assert_eq!(
        c.graph.expect("a graph").moved,
        vec![
            mv("network.old", "network.main"),
            mv("instance.web-0", "instance.front-0"),
        ]
    );

    std::fs::write(
        dir.path().join("web.ncl"),
        module(r#"{ from = "instance.web-0", to = "instance.nowhere" }"#),
    )
    .unwrap();
    let c = compile(dir.path(), &EvalOptions::default());
    assert!(c.graph.is_none());
    assert_eq!(c.diagnostics.len(), 1, "{:?}", c.diagnostics);
    let d = &c.diagnostics[0];
    assert_eq!(d.code, codes::MOVED_TARGET_MISSING);
    let at = d.location.as_ref().expect("a location");
    assert!(at.file.ends_with("web.ncl"), "{}", at.file);
    assert_eq!(at.line, 7);
}
