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

    // First plan: the graph from the cache (no evaluation); the no-op is memoized.
    let o = chimera(d, &["plan", "--detailed-exitcode"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stderr(&o).contains("cache: hit"), "{}", stderr(&o));
    // Second: neither evaluation nor state rows.
    let o = chimera(d, &["plan", "--detailed-exitcode"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stderr(&o).contains("plan memo hit"), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("No changes. Stack `memo` matches its desired state (5 resources)."),
        "{out}"
    );
    // Every format renders from the memo.
    let o = chimera(d, &["plan", "--format", "json"]);
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(doc["summary"]["no-op"], 5);

    // State changes (drift recorded by refresh): the memo no longer applies.
    let o = chimera(
        d,
        &["local", "mutate", "subnet.web", "--set", "public=true"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let o = chimera(d, &["refresh"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = chimera(d, &["plan", "--detailed-exitcode"]);
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

    // A saved plan is always a full plan, never a memo.
    let o = chimera(d, &["apply", "-y"]);
    assert!(o.status.success(), "{}", stderr(&o));
    chimera(d, &["plan"]);
    let o = chimera(d, &["plan", "--out", "p.json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stderr(&o).contains("memo hit"), "{}", stderr(&o));
    let o = chimera(d, &["apply", "p.json"]);
    assert!(o.status.success(), "{}", stderr(&o));
}
