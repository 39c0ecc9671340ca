//! Stacks split into modules: evaluated in parallel, merged into one graph that is the same as
//! the single-file stack's, with diagnostics pointing into the module that caused them.

use std::path::Path;

use chimera_compiler::cache::{CacheUse, EvalCache};
use chimera_compiler::{EvalOptions, compile};

const NETWORK: &str = r#"let c = import "chimera.ncl" in
{ resources = [
  c.Network & { name = "main", cidr = "10.0.0.0/16" },
  c.Subnet & { name = "web", network = c.ref "network" "main" "id", cidr = "10.0.1.0/24" },
] }
"#;

fn web(first: usize, count: usize) -> String {
    format!(
        r#"let c = import "chimera.ncl" in
{{ resources = std.array.generate
  (fun i => c.Instance & {{ name = "w-%{{std.to_string (i + {first})}}", size = 'small, subnet = c.ref "subnet" "web" "id" }}) {count} }}
"#
    )
}

fn write(dir: &Path, files: &[(&str, String)]) {
    for (name, text) in files {
        std::fs::write(dir.join(name), text).unwrap();
    }
}

fn split(dir: &Path) {
    write(
        dir,
        &[
            (
                "main.ncl",
                r#"{ stack = "split", resources = [], modules = ["network.ncl", "web-a.ncl", "web-b.ncl"] }"#.into(),
            ),
            ("network.ncl", NETWORK.into()),
            ("web-a.ncl", web(0, 5)),
            ("web-b.ncl", web(5, 5)),
        ],
    );
}

#[test]
fn a_split_stack_compiles_to_the_same_graph_as_one_file() {
    let a = tempfile::tempdir().unwrap();
    split(a.path());
    let split = compile(a.path(), &EvalOptions::default());
    assert!(
        split.diagnostics.is_empty(),
        "{}",
        split.sources.render(&split.diagnostics, false)
    );
    let g = split.graph.unwrap();
    assert_eq!(g.resources.len(), 12);
    assert_eq!(split.files_read.len(), 4, "{:?}", split.files_read);

    // The same resources in one file.
    let b = tempfile::tempdir().unwrap();
    let one = r#"let net = import "network.ncl" in
let a = import "web-a.ncl" in
let b = import "web-b.ncl" in
{ stack = "split", resources = net.resources @ a.resources @ b.resources }
"#
    .to_string();
    write(
        b.path(),
        &[
            ("main.ncl", one),
            ("network.ncl", NETWORK.into()),
            ("web-a.ncl", web(0, 5)),
            ("web-b.ncl", web(5, 5)),
        ],
    );
    let whole = compile(b.path(), &EvalOptions::default());
    let w = whole.graph.expect("compiles");
    assert_eq!(g.hash, w.hash, "the same desired state, split or not");
    assert_eq!(g.edges, w.edges);
}

#[test]
fn a_broken_module_is_reported_in_its_own_file() {
    let d = tempfile::tempdir().unwrap();
    split(d.path());
    std::fs::write(
        d.path().join("web-b.ncl"),
        web(5, 5).replace("size = 'small", "size = 'enormous"),
    )
    .unwrap();
    let c = compile(d.path(), &EvalOptions::default());
    assert!(c.has_errors());
    let text = c.sources.render(&c.diagnostics, false);
    assert!(text.contains("web-b.ncl:3:"), "{text}");
    assert!(!text.contains("web-a.ncl"), "{text}");
}

#[test]
fn module_problems_are_diagnostics() {
    let d = tempfile::tempdir().unwrap();
    split(d.path());
    // A missing module file.
    std::fs::write(
        d.path().join("main.ncl"),
        r#"{ stack = "split", resources = [], modules = ["network.ncl", "nope.ncl"] }"#,
    )
    .unwrap();
    let c = compile(d.path(), &EvalOptions::default());
    let text = c.sources.render(&c.diagnostics, false);
    assert!(c.has_errors() && text.contains("nope.ncl"), "{text}");
    // The same address in two modules.
    std::fs::write(
        d.path().join("main.ncl"),
        r#"{ stack = "split", resources = [], modules = ["network.ncl", "web-a.ncl", "web-a.ncl"] }"#,
    )
    .unwrap();
    let c = compile(d.path(), &EvalOptions::default());
    let text = c.sources.render(&c.diagnostics, false);
    assert!(c.has_errors() && text.contains("instance.w-0"), "{text}");
    // `modules` that is not a list of files.
    std::fs::write(
        d.path().join("main.ncl"),
        r#"{ stack = "split", resources = [], modules = "network.ncl" }"#,
    )
    .unwrap();
    let c = compile(d.path(), &EvalOptions::default());
    let text = c.sources.render(&c.diagnostics, false);
    assert!(c.diagnostics.iter().any(|d| d.code.0 == "E0118"), "{text}");
    // A reference to a resource no module defines.
    std::fs::write(
        d.path().join("main.ncl"),
        r#"{ stack = "split", resources = [], modules = ["web-a.ncl"] }"#,
    )
    .unwrap();
    let c = compile(d.path(), &EvalOptions::default());
    let text = c.sources.render(&c.diagnostics, false);
    assert!(c.has_errors() && text.contains("subnet.web"), "{text}");
}

#[test]
fn the_cache_keys_on_every_module() {
    let d = tempfile::tempdir().unwrap();
    split(d.path());
    let cache = EvalCache::new(d.path().join(".chimera/cache"), "b");
    assert_eq!(
        cache.compile(d.path(), &EvalOptions::default()).1,
        CacheUse::Miss
    );
    assert_eq!(
        cache.compile(d.path(), &EvalOptions::default()).1,
        CacheUse::Hit
    );
    std::fs::write(d.path().join("web-b.ncl"), web(5, 6)).unwrap();
    let (c, used) = cache.compile(d.path(), &EvalOptions::default());
    assert!(
        matches!(&used, CacheUse::Rebuilt(w) if w.contains("web-b.ncl")),
        "{used:?}"
    );
    assert_eq!(c.graph.unwrap().resources.len(), 13);
}
