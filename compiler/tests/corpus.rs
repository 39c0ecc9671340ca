//! Data-driven corpus: every `inputs/ok/*.ncl` compiles and its lowered graph is snapshotted;
//! every `inputs/fail/*.ncl` yields diagnostics, each with a location, and never a panic; the
//! rendered diagnostics are snapshotted. Leading comment lines `# timeout-ms: N` and
//! `# memory-mib: N` set the evaluation limits for that input. Inputs are read as bytes: a file
//! that is not UTF-8 is a case too.

use std::path::Path;
use std::time::Duration;

use chimera_compiler::{EvalOptions, compile, graph};

fn options(source: &str) -> EvalOptions {
    let mut opts = EvalOptions::default();
    let header = |name: &str| {
        source
            .lines()
            .take_while(|l| l.starts_with('#'))
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    if let Some(ms) = header("# timeout-ms:") {
        opts.timeout = Duration::from_millis(ms);
    }
    if let Some(mib) = header("# memory-mib:") {
        opts.memory_limit = Some(mib << 20);
    }
    opts
}

fn settings(path: &Path) -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    s.set_snapshot_path(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots"));
    s.set_prepend_module_to_snapshot(false);
    s.set_input_file(path);
    s.add_filter(&regex_escape(env!("CARGO_MANIFEST_DIR")), "[CRATE]");
    s
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            if "\\.+*?()|[]{}^$#&-~".contains(c) {
                vec!['\\', c]
            } else {
                vec![c]
            }
        })
        .collect()
}

fn snapshot_name(path: &Path, prefix: &str) -> String {
    format!("{prefix}__{}", path.file_stem().unwrap().to_string_lossy())
}

fn ok_case(path: &Path, source: String) -> datatest_stable::Result<()> {
    let compiled = compile(path, &options(&source));
    let rendered = compiled.sources.render(&compiled.diagnostics, false);
    // Warnings (a chain of `moved` entries) are allowed, and snapshotted above the graph.
    assert!(
        !compiled.has_errors(),
        "{}: unexpected diagnostics:\n{rendered}",
        path.display()
    );
    let graph = compiled.graph.expect("a graph");
    let json = serde_json::to_string_pretty(&graph::to_eval_json(&graph))?;
    // The same input gives byte-identical output.
    let again = compile(path, &options(&source)).graph.expect("a graph");
    assert_eq!(
        json,
        serde_json::to_string_pretty(&graph::to_eval_json(&again))?
    );
    let shown = if compiled.diagnostics.is_empty() {
        json
    } else {
        format!("{rendered}\n{json}")
    };
    settings(path).bind(|| insta::assert_snapshot!(snapshot_name(path, "ok"), shown));
    Ok(())
}

fn fail_case(path: &Path, source: Vec<u8>) -> datatest_stable::Result<()> {
    let source = String::from_utf8_lossy(&source);
    let compiled = compile(path, &options(&source));
    assert!(
        compiled.has_errors(),
        "{}: expected diagnostics, got none",
        path.display()
    );
    assert!(compiled.graph.is_none());
    for d in &compiled.diagnostics {
        assert!(
            d.location.is_some(),
            "{}: diagnostic without a location: {d:?}",
            path.display()
        );
        assert!(
            d.code.0.starts_with('E') && d.code.0.len() == 5,
            "bad code {:?}",
            d.code
        );
        assert!(
            !d.summary.ends_with('.'),
            "summary ends with a period: {}",
            d.summary
        );
    }
    let rendered = compiled.sources.render(&compiled.diagnostics, false);
    settings(path).bind(|| insta::assert_snapshot!(snapshot_name(path, "fail"), rendered));
    Ok(())
}

datatest_stable::harness! {
    { test = ok_case, root = "tests/inputs/ok", pattern = r"\.ncl$" },
    { test = fail_case, root = "tests/inputs/fail", pattern = r"\.ncl$" },
}
