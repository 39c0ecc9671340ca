//! Memory limits, alone in their own test binary: the limit is the whole process's resident
//! memory, so these run one at a time, with no other test allocating beside them.

use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chimera_model::{Diagnostic, codes};
use chimera_policy::{PolicyOptions, load};
use serde_json::json;

static ALONE: Mutex<()> = Mutex::new(());

fn dir_with(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    dir
}

fn resident() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    statm
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap()
        * 4096
}

/// 300 MiB above what the process holds now.
fn short() -> PolicyOptions {
    PolicyOptions {
        rego_v0: false,
        timeout: Duration::from_secs(2),
        memory_limit: Some(resident() + (300 << 20)),
    }
}

fn plan() -> serde_json::Value {
    json!({ "format_version": 2, "stack": "s", "changes": [], "cost": {} })
}

fn only(diags: Vec<Diagnostic>, file: &str) -> Diagnostic {
    assert_eq!(diags.len(), 1, "{diags:#?}");
    let d = diags.into_iter().next().unwrap();
    let loc = d
        .location
        .clone()
        .unwrap_or_else(|| panic!("no location: {d:#?}"));
    assert!(loc.file.ends_with(file), "{d:#?}");
    assert!(
        !d.summary.ends_with('.') && !d.detail.ends_with('.'),
        "{d:#?}"
    );
    d
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
fn a_rego_policy_that_eats_memory_is_stopped() {
    // 40 ranges of a million numbers: past the limit (300 MiB over now) well before the end.
    let text = "package chimera\n\ndeny contains msg if {\n  big := [numbers.range(1, 1000000) | some i in numbers.range(1, 40)]\n  msg := sprintf(\"%v\", [count(big)])\n}\n";
    let _alone = ALONE.lock().unwrap_or_else(|e| e.into_inner());
    let dir = dir_with(&[("eat.rego", text)]);
    let opts = PolicyOptions {
        timeout: Duration::from_secs(20),
        ..short()
    };
    let (diags, took) = eval_err(dir.path(), &opts);
    let d = only(diags, "eat.rego");
    assert_eq!(d.code, codes::POLICY_MEMORY, "{d:#?}");
    assert_eq!(d.location.unwrap().line, 3);
    assert!(took < Duration::from_secs(15), "{took:?}");
}

#[test]
fn a_nickel_policy_that_eats_memory_is_stopped() {
    // A finite but large array: past the limit (300 MiB over now) before its end.
    let text = "{\n  deny = fun plan =>\n    let big = std.array.generate (fun i => { n = i, s = \"item %{std.to_string i}\" }) 4000000 in\n    if std.array.length big > 0 then [] else [],\n}\n";
    let _alone = ALONE.lock().unwrap_or_else(|e| e.into_inner());
    let dir = dir_with(&[("eat.ncl", text)]);
    let opts = PolicyOptions {
        timeout: Duration::from_secs(60),
        ..short()
    };
    let (diags, took) = eval_err(dir.path(), &opts);
    let d = only(diags, "eat.ncl");
    assert_eq!(d.code, codes::POLICY_MEMORY, "{d:#?}");
    assert_eq!(d.location.unwrap().line, 2);
    assert!(took < Duration::from_secs(30), "{took:?}");
}
