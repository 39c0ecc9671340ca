//! End-to-end checks of the `chimera` binary: exit codes, formats, examples.

use std::path::Path;
use std::process::Command;

fn chimera(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_chimera"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run chimera");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn examples_check_clean() {
    for ex in ["examples/webapp", "examples/fleet", "examples/multicloud"] {
        let (code, out, err) = chimera(&["check", ex]);
        assert_eq!(code, 0, "{ex}: {err}");
        assert!(out.starts_with("ok: stack"), "{out}");
    }
    let (_, out, _) = chimera(&["check", "examples/fleet"]);
    assert!(out.contains("1003 resources"), "{out}");
}

#[test]
fn check_failure_exits_1_with_location_and_json_format() {
    let bad = "compiler/tests/inputs/fail/port_70000.ncl";
    assert!(Path::new(env!("CARGO_MANIFEST_DIR")).join(bad).exists());
    let (code, _, err) = chimera(&["check", bad, "--color", "never"]);
    assert_eq!(code, 1);
    assert!(err.contains("error[E0103]"), "{err}");
    assert!(err.contains("port_70000.ncl:3:"), "{err}");
    let (code, _, err) = chimera(&["check", bad, "--error-format", "json"]);
    assert_eq!(code, 1);
    let doc: serde_json::Value = serde_json::from_str(err.trim()).expect("json diagnostics");
    let d = &doc["diagnostics"][0];
    assert_eq!(d["code"], "E0103");
    assert_eq!(d["location"]["line"], 3);
    assert_eq!(d["address"], "firewall.web");
}

#[test]
fn missing_stack_is_a_diagnostic() {
    let (code, _, err) = chimera(&["check", "no/such/dir", "--color", "never"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("E0009") && err.contains("no/such/dir"),
        "{err}"
    );
}

#[test]
fn graph_formats_and_eval_redact_secrets() {
    let (code, dot, _) = chimera(&["graph", "examples/webapp", "--format", "dot"]);
    assert_eq!(code, 0);
    assert!(
        dot.contains("\"subnet.public\" -> \"instance.web-0\""),
        "{dot}"
    );
    let (_, mermaid, _) = chimera(&["graph", "examples/webapp", "--format", "mermaid"]);
    assert!(mermaid.starts_with("flowchart LR"));
    let (_, json, _) = chimera(&["graph", "examples/webapp", "--format", "json"]);
    let g: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(g["nodes"].as_array().unwrap().len(), 8);
    let (code, eval, _) = chimera(&["eval", "examples/webapp"]);
    assert_eq!(code, 0);
    assert!(!eval.contains("echo hello"), "user_data must be redacted");
    assert!(eval.contains("(sensitive)"));
}

#[test]
fn infinite_loop_times_out_as_a_diagnostic() {
    let (code, _, err) = chimera(&[
        "check",
        "compiler/tests/inputs/fail/infinite_loop.ncl",
        "--eval-timeout",
        "1",
        "--color",
        "never",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("E0007"), "{err}");
}

#[test]
fn help_is_available_everywhere() {
    for cmd in [
        &["--help"][..],
        &["check", "--help"],
        &["graph", "--help"],
        &["eval", "--help"],
    ] {
        let (code, out, _) = chimera(cmd);
        assert_eq!(code, 0);
        assert!(out.contains("Usage"), "{out}");
    }
}
