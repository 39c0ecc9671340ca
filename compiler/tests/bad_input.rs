//! Bad input that must not flood or exhaust: identical diagnostics folded and located, files
//! that are not UTF-8 named with their byte, line and column, and default limits that stop
//! unbounded recursion.

use std::path::Path;

use chimera_compiler::eval::{DEFAULT_MEMORY_CAP, default_memory_limit};
use chimera_compiler::{EvalOptions, compile};
use chimera_model::codes;
use chimera_model::diagnostic::FOLD_KEEP;

fn stack(dir: &Path, text: &[u8]) -> std::path::PathBuf {
    let path = dir.join("main.ncl");
    std::fs::write(&path, text).expect("write the stack");
    path
}

#[test]
fn a_flood_of_identical_diagnostics_is_folded_and_located() {
    let dir = tempfile::tempdir().unwrap();
    let path = stack(
        dir.path(),
        b"{ stack = \"x\", resources = std.array.generate (fun i => i) 200000 }\n",
    );
    let c = compile(&path, &EvalOptions::default());
    assert_eq!(c.diagnostics.len(), FOLD_KEEP, "{:#?}", c.diagnostics);
    for d in &c.diagnostics {
        assert_eq!(d.code, codes::NOT_A_STACK);
        let at = d.location.as_ref().expect("located");
        // The generated numbers have no position in the stack file: `resources` has.
        assert!(at.file.ends_with("main.ncl"), "{at:?}");
        assert_eq!(at.line, 1, "{at:?}");
    }
    assert_eq!(
        c.diagnostics[FOLD_KEEP - 1].notes,
        vec![format!(
            "and {} more like this (not shown)",
            200000 - FOLD_KEEP
        )]
    );
}

#[test]
fn resources_that_fail_lowering_alike_are_folded() {
    let dir = tempfile::tempdir().unwrap();
    let path = stack(
        dir.path(),
        br#"let c = import "chimera.ncl" in
{
  stack = "x",
  resources = std.array.generate (fun i => c.Network & { name = "n-%{std.to_string i}", cidr = "10.0.0.0/33" }) 3000,
}
"#,
    );
    let c = compile(&path, &EvalOptions::default());
    assert!(c.has_errors());
    assert!(c.diagnostics.len() <= 2 * FOLD_KEEP, "{:#?}", c.diagnostics);
    assert!(c.diagnostics.iter().all(|d| d.location.is_some()));
    assert!(
        c.diagnostics
            .iter()
            .any(|d| d.notes.iter().any(|n| n.contains("more like this"))),
        "{:#?}",
        c.diagnostics
    );
}

#[test]
fn a_stack_that_is_not_utf8_names_the_byte() {
    let dir = tempfile::tempdir().unwrap();
    let path = stack(
        dir.path(),
        b"{\n  stack = \"caf\xe9\",\n  resources = [] }\n",
    );
    let c = compile(&path, &EvalOptions::default());
    assert_eq!(c.diagnostics.len(), 1, "{:#?}", c.diagnostics);
    let d = &c.diagnostics[0];
    assert_eq!(d.code, codes::SOURCE_NOT_UTF8);
    assert!(
        d.detail.contains("byte 16 (line 2, column 15)"),
        "{}",
        d.detail
    );
    let at = d.location.as_ref().expect("located");
    assert_eq!((at.line, at.column), (2, 15));
    let text = c.sources.render(&c.diagnostics, false);
    assert!(text.contains("main.ncl:2:15"), "{text}");
}

#[test]
fn an_import_that_is_not_utf8_names_the_byte_and_the_import() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("net.ncl"), b"# r\xe9seau\n{}\n").unwrap();
    let path = stack(
        dir.path(),
        b"let net = import \"net.ncl\" in\n{ stack = \"x\", resources = [] }\n",
    );
    let c = compile(&path, &EvalOptions::default());
    let d = c
        .diagnostics
        .iter()
        .find(|d| d.code == codes::SOURCE_NOT_UTF8)
        .unwrap_or_else(|| panic!("{:#?}", c.diagnostics));
    assert!(d.detail.contains("net.ncl"), "{}", d.detail);
    assert!(
        d.detail.contains("byte 3 (line 1, column 4)"),
        "{}",
        d.detail
    );
    assert_eq!(d.location.as_ref().map(|l| l.line), Some(1));
    assert_eq!(d.labels.len(), 1, "the import is labelled: {d:#?}");
    assert!(d.labels[0].location.file.ends_with("main.ncl"));
}

#[test]
fn the_default_memory_limit_is_at_most_four_gib() {
    assert!(DEFAULT_MEMORY_CAP <= 4 << 30);
    assert!(default_memory_limit() <= DEFAULT_MEMORY_CAP);
    assert_eq!(
        EvalOptions::default().memory_limit,
        Some(default_memory_limit())
    );
}
