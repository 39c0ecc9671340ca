//! Cost through the `chimera` binary, for every example: `chimera cost` (text and JSON) and the
//! cost part of `chimera plan` in text, JSON and Markdown, as insta snapshots. Includes
//! `'cheapest` (examples/cheapest) and local beside a cloud (examples/mixed).

use std::path::{Path, PathBuf};
use std::process::Command;

const EXAMPLES: [&str; 5] = ["webapp", "fleet", "multicloud", "cheapest", "mixed"];

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples").join(name)
}

/// Runs `chimera` in a copy of the example (plans write state beside the stack).
fn run(dir: &Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_chimera"))
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .env_remove("CHIMERA_STATE")
        .env_remove("CHIMERA_LOCAL_CLOUD")
        .output()
        .expect("run chimera");
    assert!(
        out.stderr.is_empty() || out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn copy_of(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(example(name).join("main.ncl"), dir.path().join("main.ncl")).unwrap();
    dir
}

#[test]
fn chimera_cost_of_every_example() {
    for name in EXAMPLES {
        let dir = copy_of(name);
        let (code, text) = run(dir.path(), &["cost", "."]);
        assert_eq!(code, 0, "{name}: {text}");
        insta::assert_snapshot!(format!("cost_{name}"), text);
        let (code, json) = run(dir.path(), &["cost", ".", "--format", "json"]);
        assert_eq!(code, 0);
        let mut doc: serde_json::Value = serde_json::from_str(&json).unwrap();
        // The per-resource list of the 1,000-instance fleet is left to the totals.
        doc["resources"] = doc["resources"]
            .as_array()
            .map(|r| r.iter().take(5).cloned().collect())
            .unwrap_or_default();
        insta::assert_json_snapshot!(format!("cost_json_{name}"), doc);
    }
}

#[test]
fn the_cost_in_every_plan_format_of_every_example() {
    for name in EXAMPLES {
        let dir = copy_of(name);
        let (code, text) = run(dir.path(), &["plan", ".", "--refresh=false"]);
        assert_eq!(code, 0, "{name}: {text}");
        let from = text.find("\nPlan: ").expect("a summary line");
        insta::assert_snapshot!(format!("plan_cost_text_{name}"), &text[from + 1..]);

        let (_, json) = run(dir.path(), &["plan", ".", "--refresh=false", "--format", "json"]);
        let doc: serde_json::Value = serde_json::from_str(&json).unwrap();
        insta::assert_json_snapshot!(
            format!("plan_cost_json_{name}"),
            serde_json::json!({ "format_version": doc["format_version"], "cost": doc["cost"], "placements": doc["placements"] })
        );
        // Every change carries its price; money in the total is the sum of the parts.
        let changes = doc["changes"].as_array().unwrap();
        let sum: f64 = changes
            .iter()
            .filter_map(|c| c["cost"]["monthly_after"].as_f64())
            .sum();
        let total = doc["cost"]["monthly_after"].as_f64().unwrap();
        assert!((sum - total).abs() < 0.01 * changes.len() as f64, "{name}: {sum} vs {total}");

        let (_, md) = run(dir.path(), &["plan", ".", "--refresh=false", "--format", "markdown"]);
        let head = md.split("**Plan:").next().unwrap();
        insta::assert_snapshot!(format!("plan_cost_markdown_{name}"), head);
    }
}
