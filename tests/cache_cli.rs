//! The evaluation cache and the plan memo through the binary: an unchanged repository against
//! unchanged state re-plans without evaluating; a change to the files or to state does not.

use std::path::Path;
use std::process::{Command, Output};

fn chimera(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_chimera"))
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .env("CHIMERA_CACHE_TRACE", "1")
        .env_remove("CHIMERA_STATE")
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

fn stack(count: usize) -> String {
    format!(
        r#"let c = import "chimera.ncl" in
let net = c.Network & {{ name = "main", cidr = "10.0.0.0/16" }} in
let sn = c.Subnet & {{ name = "web", network = net, cidr = "10.0.1.0/24" }} in
{{ stack = "memo", resources = [net, sn] @ std.array.generate
  (fun i => c.Instance & {{ name = "w-%{{std.to_string i}}", size = 'small, subnet = sn }}) {count} }}
"#
    )
}

#[test]
fn re_planning_an_unchanged_repository_uses_the_cache_until_something_changes() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    std::fs::write(d.join("main.ncl"), stack(3)).unwrap();
    let o = chimera(d, &["apply", "-y"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("cache: miss"), "{}", stderr(&o));

    // A refreshing plan (the default) reads the cloud, so it is never a memo.
    for _ in 0..2 {
        let o = chimera(d, &["plan", "--detailed-exitcode"]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        assert!(stderr(&o).contains("cache: hit"), "{}", stderr(&o));
        assert!(!stderr(&o).contains("memo hit"), "{}", stderr(&o));
    }
    // Without refresh: the first plan takes the graph from the cache (no evaluation) and
    // the no-op is memoized.
    let o = chimera(d, &["plan", "--refresh=false", "--detailed-exitcode"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stderr(&o).contains("cache: hit"), "{}", stderr(&o));
    // Second: neither evaluation nor state rows.
    let o = chimera(d, &["plan", "--refresh=false", "--detailed-exitcode"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stderr(&o).contains("plan memo hit"), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("No changes. Stack `memo` matches its desired state (5 resources)."),
        "{out}"
    );
    // Every format renders from the memo.
    let o = chimera(d, &["plan", "--refresh=false", "--format", "json"]);
    assert!(stderr(&o).contains("plan memo hit"), "{}", stderr(&o));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(doc["summary"]["no-op"], 5);
    let o = chimera(d, &["plan", "--refresh=false", "--format", "markdown"]);
    assert!(stderr(&o).contains("plan memo hit"), "{}", stderr(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("**No changes.** Stack `memo`"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );

    // State changes (drift recorded by refresh): the memo no longer applies.
    let o = chimera(
        d,
        &["local", "mutate", "subnet.web", "--set", "public=true"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let o = chimera(d, &["refresh"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = chimera(d, &["plan", "--refresh=false", "--detailed-exitcode"]);
    assert_eq!(o.status.code(), Some(2), "drift to heal: {}", stderr(&o));
    assert!(!stderr(&o).contains("memo hit"), "{}", stderr(&o));
    let o = chimera(d, &["apply", "-y"]);
    assert!(o.status.success(), "{}", stderr(&o));

    // A file changes: evaluated again, and the plan shows the change.
    std::fs::write(d.join("main.ncl"), stack(4)).unwrap();
    let o = chimera(d, &["plan", "--detailed-exitcode"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("cache: rebuilt"), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("+ instance.w-3 will be created"));

    // --no-cache evaluates and neither reads nor writes the cache.
    let o = chimera(d, &["plan", "--no-cache", "--detailed-exitcode"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(!stderr(&o).contains("cache:"), "{}", stderr(&o));
    assert!(stderr(&o).contains("eval: evaluated"), "{}", stderr(&o));

    // `apply -y --no-cache` evaluates the stack once: recovery, planning and applying share
    // one compile.
    let o = chimera(d, &["apply", "-y", "--no-cache"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        stderr(&o).matches("eval: evaluated").count(),
        1,
        "{}",
        stderr(&o)
    );

    // A saved plan is always a full plan, never a memo.
    let o = chimera(d, &["apply", "-y"]);
    assert!(o.status.success(), "{}", stderr(&o));
    chimera(d, &["plan", "--refresh=false"]);
    let o = chimera(d, &["plan", "--refresh=false", "--out", "p.json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stderr(&o).contains("memo hit"), "{}", stderr(&o));
    let o = chimera(d, &["apply", "p.json"]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn a_plan_shows_drift_without_a_refresh_first() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    std::fs::write(d.join("main.ncl"), stack(2)).unwrap();
    let o = chimera(d, &["apply", "-y"]);
    assert!(o.status.success(), "{}", stderr(&o));
    // Out-of-band changes: one attribute, one deletion.
    for args in [
        &["local", "mutate", "subnet.web", "--set", "public=true"][..],
        &["local", "mutate", "instance.w-1", "--delete"][..],
    ] {
        let o = chimera(d, args);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let o = chimera(d, &["plan", "--detailed-exitcode"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    let drift_at = out
        .find("Chimera found changes made outside it")
        .unwrap_or_else(|| panic!("{out}"));
    let plan_at = out.find("Chimera will perform these actions").unwrap();
    assert!(drift_at < plan_at, "drift comes first: {out}");
    assert!(out.contains("~ subnet.web ("), "{out}");
    assert!(out.contains("~ public = false -> true"), "{out}");
    assert!(out.contains("- instance.w-1 ("), "{out}");
    // The plan heals both: the subnet back, the instance again.
    assert!(
        out.contains("~ subnet.web will be updated in place"),
        "{out}"
    );
    assert!(out.contains("+ instance.w-1 will be created"), "{out}");
    // JSON carries the drift apart from the changes.
    let o = chimera(d, &["plan", "--format", "json"]);
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let drift = doc["drift"].as_array().unwrap();
    assert_eq!(drift.len(), 2, "{doc}");
    assert!(
        drift
            .iter()
            .any(|x| x["kind"] == "deleted" && x["address"] == "instance.w-1")
    );
    // Without refresh, state as recorded: nothing to do.
    let o = chimera(d, &["plan", "--refresh=false", "--detailed-exitcode"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    // Applying heals it, and then nothing drifts.
    let o = chimera(d, &["apply", "-y"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = chimera(d, &["plan", "--detailed-exitcode"]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    assert!(!String::from_utf8_lossy(&o.stdout).contains("outside"));
}
