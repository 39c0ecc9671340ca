//! Broken policies: each is a located diagnostic (file, line where known, what to do) within
//! the limits; never a panic or a hang.

use std::path::Path;
use std::time::{Duration, Instant};

use chimera_model::{Diagnostic, codes};
use chimera_policy::{PolicyOptions, load, run_tests};
use serde_json::json;

fn dir_with(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    dir
}

/// A short time limit. Memory limits are tested in `memory_limits.rs`, alone: the limit is
/// the whole process's, which the tests here share.
fn short() -> PolicyOptions {
    PolicyOptions {
        rego_v0: false,
        timeout: Duration::from_secs(2),
        memory_limit: Some(8 << 30),
    }
}

fn plan() -> serde_json::Value {
    json!({
        "format_version": 2, "stack": "s", "changes": [
            { "address": "instance.a", "kind": "instance", "action": "create", "after": { "tags": {} } }
        ],
        "cost": { "currency": "USD", "monthly_after": 10, "delta": 10, "delta_percent": null }
    })
}

/// The one diagnostic, checked to be well formed: a code, a location in `file`, a detail that
/// says what to do, no trailing period.
fn only(diags: Vec<Diagnostic>, file: &str) -> Diagnostic {
    assert_eq!(diags.len(), 1, "{diags:#?}");
    let d = diags.into_iter().next().unwrap();
    let loc = d
        .location
        .clone()
        .unwrap_or_else(|| panic!("no location: {d:#?}"));
    assert!(loc.file.ends_with(file), "{d:#?}");
    assert!(loc.line >= 1 && loc.column >= 1, "{d:#?}");
    assert!(
        !d.summary.ends_with('.') && !d.detail.ends_with('.'),
        "{d:#?}"
    );
    assert!(!d.detail.is_empty(), "{d:#?}");
    d
}

fn load_err(dir: &Path, opts: &PolicyOptions) -> Vec<Diagnostic> {
    match load(dir, opts) {
        Ok(_) => panic!("loaded"),
        Err(d) => d,
    }
}

fn eval_err(dir: &Path, opts: &PolicyOptions) -> (Vec<Diagnostic>, Duration) {
    let lib = load(dir, opts).unwrap_or_else(|d| panic!("{d:#?}"));
    let start = Instant::now();
    match lib.evaluate(&plan()) {
        Ok(f) => panic!("evaluated: {f:#?}"),
        Err(d) => (d, start.elapsed()),
    }
}

#[test]
fn a_missing_directory_is_no_policies() {
    let lib = load(Path::new("/nonexistent/policies"), &short()).unwrap();
    assert!(lib.is_empty());
    assert_eq!(lib.evaluate(&plan()).unwrap(), []);
    assert_eq!(
        run_tests(Path::new("/nonexistent/policies"), &short())
            .unwrap()
            .results,
        []
    );
}

#[test]
fn a_rego_syntax_error_is_located() {
    let dir = dir_with(&[(
        "bad.rego",
        "package chimera\n\ndeny contains msg if {\n  msg := \n}\n",
    )]);
    let d = only(load_err(dir.path(), &short()), "bad.rego");
    assert_eq!(d.code, codes::POLICY_SYNTAX);
    assert!(d.location.unwrap().line >= 4);
}

#[test]
fn rego_v0_needs_the_option() {
    let v0 = "package chimera\n\ndeny[msg] {\n  input.stack == \"s\"\n  msg := \"old style\"\n}\n";
    let dir = dir_with(&[("old.rego", v0)]);
    let d = only(load_err(dir.path(), &short()), "old.rego");
    assert_eq!(d.code, codes::POLICY_SYNTAX);
    assert!(d.detail.contains("rego_v0"), "{d:#?}");
    let opts = PolicyOptions {
        rego_v0: true,
        ..short()
    };
    let findings = load(dir.path(), &opts).unwrap().evaluate(&plan()).unwrap();
    assert_eq!(findings.len(), 1);
    assert_eq!(findings[0].message, "old style");
    assert_eq!(findings[0].line, Some(3));
}

#[test]
fn a_rego_package_other_than_chimera_is_refused() {
    let dir = dir_with(&[(
        "foo.rego",
        "# a comment\npackage foo\n\ndeny contains \"x\" if true\n",
    )]);
    let d = only(load_err(dir.path(), &short()), "foo.rego");
    assert_eq!(d.code, codes::POLICY_PACKAGE);
    assert_eq!(d.location.as_ref().unwrap().line, 2);
    assert!(d.detail.contains("write `package chimera`"), "{d:#?}");
    // A sub-package of chimera is fine.
    let dir = dir_with(&[(
        "sub.rego",
        "package chimera.network\n\ndeny contains \"x\" if true\n",
    )]);
    let f = load(dir.path(), &short())
        .unwrap()
        .evaluate(&plan())
        .unwrap();
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].rule, "sub");
}

#[test]
fn a_rego_runtime_error_is_located() {
    let text = "package chimera\n\ndeny contains msg if {\n  x := 1 / 0\n  msg := sprintf(\"%v\", [x])\n}\n";
    let dir = dir_with(&[("div.rego", text)]);
    let (diags, _) = eval_err(dir.path(), &short());
    let d = only(diags, "div.rego");
    assert_eq!(d.code, codes::POLICY_EVAL);
    assert_eq!(d.location.unwrap().line, 4, "{:#?}", d.detail);
}

#[test]
fn a_rego_finding_of_the_wrong_shape_is_located() {
    let text = "package chimera\n\nwarn contains 3 if true\n\ndeny contains {\"address\": \"x\"} if true\n";
    let dir = dir_with(&[("shape.rego", text)]);
    let (diags, _) = eval_err(dir.path(), &short());
    assert_eq!(diags.len(), 2, "{diags:#?}");
    assert!(diags.iter().all(|d| d.code == codes::POLICY_RESULT));
    let lines: Vec<_> = diags
        .iter()
        .map(|d| d.location.as_ref().unwrap().line)
        .collect();
    assert_eq!(lines, [3, 5]);
}

#[test]
fn rego_recursion_is_refused_when_loading() {
    // Direct, through another function, and through `data.chimera.`: regorus would recurse
    // until the stack overflows (an abort), so recursion is refused before evaluating, as
    // OPA refuses it when compiling.
    let direct = "package chimera\n\nf(x) := y if {\n  y := f(x + 1)\n}\n\ndeny contains msg if {\n  msg := sprintf(\"%v\", [f(1)])\n}\n";
    let mutual = "package chimera\n\neven(n) if {\n  n > 0\n  odd(n - 1)\n}\n\nodd(n) if data.chimera.even(n - 1)\n\ndeny contains \"x\" if even(4)\n";
    for (text, lines) in [(direct, vec![3]), (mutual, vec![3, 8])] {
        let dir = dir_with(&[("rec.rego", text)]);
        let diags = load_err(dir.path(), &short());
        assert_eq!(diags.len(), lines.len(), "{diags:#?}");
        for (d, line) in diags.iter().zip(lines) {
            assert_eq!(d.code, codes::POLICY_RECURSION, "{d:#?}");
            let loc = d.location.as_ref().unwrap();
            assert!(loc.file.ends_with("rec.rego"));
            assert_eq!(loc.line, line, "{d:#?}");
        }
    }
    // Calling a builtin of the same name, or another function, is not recursion.
    let fine = "package chimera\n\nget(o, k) := object.get(o, k, \"none\")\n\nname(c) := get(c, \"address\")\n\ndeny contains name(c) if {\n  some c in input.changes\n}\n";
    let dir = dir_with(&[("fine.rego", fine)]);
    let f = load(dir.path(), &short())
        .unwrap()
        .evaluate(&plan())
        .unwrap();
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].message, "instance.a");
}

#[test]
fn deep_nickel_recursion_is_stopped() {
    let text = "let rec f = fun n => 1 + f (n + 1) in\n{\n  deny = fun plan => if f 0 > 0 then [] else [],\n}\n";
    let dir = dir_with(&[("deep.ncl", text)]);
    let (diags, took) = eval_err(dir.path(), &short());
    let d = only(diags, "deep.ncl");
    assert!(
        [
            codes::POLICY_TIMEOUT,
            codes::POLICY_MEMORY,
            codes::POLICY_EVAL
        ]
        .contains(&d.code),
        "{d:#?}"
    );
    assert!(took < Duration::from_secs(4), "{took:?}");
}

#[test]
fn a_rego_loop_that_does_not_end_times_out() {
    let text = "package chimera\n\nwarn contains \"fine\" if true\n\ndeny contains msg if {\n  n := count([1 | some i in numbers.range(1, 100000); some j in numbers.range(1, 100000)])\n  msg := sprintf(\"%v\", [n])\n}\n";
    let dir = dir_with(&[("slow.rego", text)]);
    let (diags, took) = eval_err(dir.path(), &short());
    let d = only(diags, "slow.rego");
    assert_eq!(d.code, codes::POLICY_TIMEOUT);
    assert_eq!(d.location.unwrap().line, 5);
    assert!(took < Duration::from_secs(4), "{took:?}");
}

#[test]
fn a_huge_rego_range_is_refused_at_once() {
    let text = "package chimera\n\ndeny contains msg if {\n  n := count(numbers.range(1, 1e9))\n  msg := sprintf(\"%v\", [n])\n}\n";
    let dir = dir_with(&[("range.rego", text)]);
    let (diags, took) = eval_err(dir.path(), &short());
    let d = only(diags, "range.rego");
    assert_eq!(d.code, codes::POLICY_MEMORY);
    assert_eq!(d.location.unwrap().line, 4);
    assert!(took < Duration::from_secs(1), "{took:?}");
    // Far past what could be allocated: no abort either.
    let dir = dir_with(&[("range.rego", &text.replace("1e9", "1e15"))]);
    let (diags, _) = eval_err(dir.path(), &short());
    assert_eq!(only(diags, "range.rego").code, codes::POLICY_MEMORY);
}

#[test]
fn a_nickel_syntax_error_is_located() {
    let dir = dir_with(&[(
        "bad.ncl",
        "{\n  deny = fun plan =>\n    [ { message = \"x\" ,\n}\n",
    )]);
    let diags = load_err(dir.path(), &short());
    let d = &diags[0];
    assert_eq!(d.code, codes::POLICY_SYNTAX, "{diags:#?}");
    assert!(d.location.as_ref().unwrap().file.ends_with("bad.ncl"));
}

#[test]
fn a_nickel_file_that_is_not_a_policy_says_what_one_is() {
    for (text, line) in [
        ("[1, 2]", 1),
        ("{ deny = 3 }", 1),
        (
            "{\n  deny = fun plan => [],\n  allow = fun plan => [],\n}",
            3,
        ),
        ("{}", 1),
    ] {
        let dir = dir_with(&[("p.ncl", text)]);
        let d = only(load_err(dir.path(), &short()), "p.ncl");
        assert_eq!(d.code, codes::NOT_A_POLICY, "{text}: {d:#?}");
        assert!(d.detail.contains("fun plan"), "{d:#?}");
        assert_eq!(d.location.unwrap().line, line, "{text}");
    }
}

#[test]
fn a_bare_nickel_function_denies() {
    let text = "# Everything is denied.\nfun plan =>\n  plan.changes |> std.array.map (fun c => { address = c.address, message = \"no %{c.kind}\", rule = \"nothing\" })\n";
    let dir = dir_with(&[("all.ncl", text)]);
    let f = load(dir.path(), &short())
        .unwrap()
        .evaluate(&plan())
        .unwrap();
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].rule, "nothing");
    assert_eq!(f[0].message, "no instance");
    assert_eq!(f[0].address.as_deref(), Some("instance.a"));
    assert_eq!(f[0].line, Some(2));
}

#[test]
fn a_nickel_runtime_error_is_located() {
    let text = "{\n  deny = fun plan =>\n    [plan.no_such_field],\n}\n";
    let dir = dir_with(&[("err.ncl", text)]);
    let (diags, _) = eval_err(dir.path(), &short());
    let d = &diags[0];
    assert_eq!(d.code, codes::POLICY_EVAL, "{diags:#?}");
    let loc = d.location.as_ref().unwrap();
    assert!(loc.file.ends_with("err.ncl"), "{diags:#?}");
    assert_eq!(loc.line, 3, "{diags:#?}");
}

#[test]
fn a_nickel_loop_at_load_times_out() {
    let text = "let rec spin = fun n => if n < 0 then 0 else spin (n + 1) in\n{ deny = fun plan => [], warn = spin 0 }\n";
    let dir = dir_with(&[("spin.ncl", text)]);
    let start = Instant::now();
    let d = only(load_err(dir.path(), &short()), "spin.ncl");
    assert_eq!(d.code, codes::POLICY_TIMEOUT, "{d:#?}");
    assert!(start.elapsed() < Duration::from_secs(4));
}

#[test]
fn a_nickel_policy_that_does_not_end_times_out() {
    let text = "let rec spin = fun n => if n < 0 then [] else spin (n + 1) in\n{\n  deny = fun plan => spin 0,\n}\n";
    let dir = dir_with(&[("spin.ncl", text)]);
    let (diags, took) = eval_err(dir.path(), &short());
    let d = only(diags, "spin.ncl");
    assert_eq!(d.code, codes::POLICY_TIMEOUT, "{d:#?}");
    assert_eq!(d.location.unwrap().line, 3);
    assert!(took < Duration::from_secs(4), "{took:?}");
}

#[test]
fn failing_tests_are_reported_as_failures() {
    let policy = "package chimera\n\ndeny contains \"always\" if true\n";
    let tests = "package chimera\n\ntest_passes if { \"always\" in deny }\n\ntest_fails if { count(deny) == 0 }\n\ntest_errors if { 1 / 0 == 1 }\n";
    let nickel = "{\n  ok = { input = { changes = [] }, deny = [\"always\"] },\n  wrong = { input = { changes = [] }, deny = [] },\n  missing = { input = { changes = [] }, deny = [\"always\", \"never\"] },\n}\n";
    let dir = dir_with(&[
        ("always.rego", policy),
        ("always_test.rego", tests),
        ("cases_test.ncl", nickel),
    ]);
    let report = run_tests(dir.path(), &short()).unwrap_or_else(|d| panic!("{d:#?}"));
    let outcome: Vec<_> = report
        .results
        .iter()
        .map(|r| (r.name.as_str(), r.passed))
        .collect();
    assert_eq!(
        outcome,
        [
            ("test_passes", true),
            ("test_fails", false),
            ("test_errors", false),
            ("missing", false),
            ("ok", true),
            ("wrong", false),
        ]
    );
    let wrong = report.results.iter().find(|r| r.name == "wrong").unwrap();
    assert!(
        wrong
            .message
            .as_deref()
            .unwrap()
            .contains("unexpected deny"),
        "{wrong:#?}"
    );
    let missing = report.results.iter().find(|r| r.name == "missing").unwrap();
    assert!(
        missing.message.as_deref().unwrap().contains("`never`"),
        "{missing:#?}"
    );
    assert_eq!(report.failed(), 4);
}

#[test]
fn a_nickel_test_file_of_the_wrong_shape_is_located() {
    for text in [
        "[1]",
        "{ a = 1 }",
        "{ a = { deny = [] } }",
        "{ a = { input = {}, deny = \"x\" } }",
        "{ a = { input = {}, expect = [] } }",
        "{ a = { input = {}, policy = \"nope.ncl\" } }",
    ] {
        let dir = dir_with(&[("t_test.ncl", text)]);
        let diags = run_tests(dir.path(), &short()).unwrap_err();
        let d = only(diags, "t_test.ncl");
        assert_eq!(d.code, codes::POLICY_TEST_INVALID, "{text}: {d:#?}");
    }
}

#[test]
fn a_policy_rule_read_by_another_rule_is_queried_whole() {
    // `deny` is read by `warn`: both definitions of `deny` are queried together (at the first
    // one's line), and `warn` still sees every deny.
    let text = "package chimera\n\ndeny contains \"one\" if input.stack == \"s\"\n\ndeny contains \"two\" if input.stack == \"s\"\n\nwarn contains msg if {\n  msg := sprintf(\"%d denials\", [count(deny)])\n}\n";
    let dir = dir_with(&[("whole.rego", text)]);
    let mut f = load(dir.path(), &short())
        .unwrap()
        .evaluate(&plan())
        .unwrap();
    f.sort_by(|a, b| a.message.cmp(&b.message));
    let got: Vec<_> = f
        .iter()
        .map(|f| (f.message.as_str(), f.line, f.rule.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("2 denials", Some(7), "whole"),
            ("one", Some(3), "whole"),
            ("two", Some(3), "whole")
        ]
    );
}
