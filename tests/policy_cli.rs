//! Policy as code through the `chimera` binary: `plan` shows what the stack's `policies/`
//! find, every apply refuses on a deny before anything changes, a saved plan must pass the
//! policies as they are when it is applied, warnings never block, broken policies are located
//! diagnostics, and `chimera policy test` runs the policies' unit tests.

use std::path::Path;
use std::process::{Command, Output};

fn chimera(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_chimera"))
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .env_remove("CHIMERA_STATE")
        .env_remove("CHIMERA_LOCAL_CLOUD")
        .output()
        .expect("run chimera")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

const STACK: &str = r#"let c = import "chimera.ncl" in
let t = { tags = { app = "shop" } } in
let net = c.Network & t & { name = "main", cidr = "10.0.0.0/16" } in
let sn = c.Subnet & t & { name = "web", network = net, cidr = "10.0.1.0/24" } in
{ stack = "shop", resources = [net, sn, c.Instance & t & { name = "web", size = 'small, subnet = sn }] }
"#;

/// Every created or updated resource needs an `owner` tag.
const OWNER_REGO: &str = r#"package chimera

deny contains {"msg": sprintf("%s has no owner tag", [c.address]), "address": c.address} if {
	some c in input.changes
	c.after != null
	not c.after.tags.owner
}
"#;

const BIG_PLAN_WARN: &str = r#"package chimera

warn contains "this plan creates more than two resources" if {
	input.summary.create > 2
}
"#;

fn stack_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("main.ncl"), STACK).unwrap();
    dir
}

fn policy(dir: &Path, name: &str, text: &str) {
    std::fs::create_dir_all(dir.join("policies")).unwrap();
    std::fs::write(dir.join("policies").join(name), text).unwrap();
}

/// Generations in state (the header line of `history` aside) and resources in the local cloud.
fn footprint(dir: &Path) -> (usize, usize) {
    let history = chimera(dir, &["history", "."]);
    let gens = String::from_utf8_lossy(&history.stdout).lines().count().saturating_sub(1);
    let local = chimera(dir, &["local", "list", "."]);
    let things = String::from_utf8_lossy(&local.stdout).lines().count();
    (gens, things)
}

#[test]
fn apply_is_refused_by_a_deny_and_changes_nothing() {
    let dir = stack_dir();
    policy(dir.path(), "owner.rego", OWNER_REGO);
    let out = chimera(dir.path(), &["apply", ".", "-y"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("error[E0510]: a policy denies this plan"), "{t}");
    // The policy file and line, the rule, the address and the message.
    assert!(t.contains("instance.web: instance.web has no owner tag"), "{t}");
    assert!(t.contains("policies/owner.rego:3"), "{t}");
    assert!(t.contains("rule `"), "{t}");
    assert_eq!(footprint(dir.path()), (0, 0), "nothing created, no generation");

    // Fixed in the stack, the same apply goes through.
    std::fs::write(
        dir.path().join("main.ncl"),
        STACK.replace(r#"app = "shop""#, r#"app = "shop", owner = "web-team""#),
    )
    .unwrap();
    let out = chimera(dir.path(), &["apply", ".", "-y"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(footprint(dir.path()), (1, 3));
}

#[test]
fn plan_shows_findings_in_every_format_and_fails_on_a_deny() {
    let dir = stack_dir();
    policy(dir.path(), "owner.rego", OWNER_REGO);
    policy(dir.path(), "size.rego", BIG_PLAN_WARN);
    let out = chimera(dir.path(), &["plan", ".", "--refresh=false"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("Policy: 3 denied, 1 warnings"), "{t}");
    assert!(t.contains("warn plan: this plan creates more than two resources"), "{t}");
    assert!(t.contains("`chimera apply` will refuse this plan"), "{t}");

    let out = chimera(dir.path(), &["plan", ".", "--refresh=false", "--format", "json"]);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["policy"]["denied"], 3);
    assert_eq!(doc["policy"]["warnings"], 1);
    let f = &doc["policy"]["findings"][0];
    assert_eq!(f["level"], "deny");
    assert!(f["file"].as_str().unwrap().ends_with("owner.rego"));
    assert_eq!(f["line"], 3);

    let out = chimera(dir.path(), &["plan", ".", "--refresh=false", "--format", "markdown"]);
    let md = String::from_utf8_lossy(&out.stdout);
    assert!(md.contains("**Policy: 3 denied** (1 warnings)"), "{md}");
    assert!(md.contains("| ❌ deny | `instance.web` |"), "{md}");
}

#[test]
fn warnings_are_shown_and_do_not_block() {
    let dir = stack_dir();
    policy(dir.path(), "size.rego", BIG_PLAN_WARN);
    let out = chimera(dir.path(), &["apply", ".", "-y"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(t.contains("warning[E0511]"), "{t}");
    assert!(t.contains("this plan creates more than two resources"), "{t}");
    assert_eq!(footprint(dir.path()), (1, 3));
}

#[test]
fn a_saved_plan_must_pass_the_policies_of_when_it_is_applied() {
    let dir = stack_dir();
    let out = chimera(dir.path(), &["plan", ".", "--out", "p.json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // The rule arrives after the plan was saved: the plan is refused all the same.
    policy(dir.path(), "owner.rego", OWNER_REGO);
    let out = chimera(dir.path(), &["apply", "p.json"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("error[E0510]"), "{t}");
    assert_eq!(footprint(dir.path()), (0, 0));
    // Editing the file to drop the policy directory breaks its integrity check.
    let saved = std::fs::read_to_string(dir.path().join("p.json")).unwrap();
    let mut doc: serde_json::Value = serde_json::from_str(&saved).unwrap();
    doc.as_object_mut().unwrap().remove("policies");
    std::fs::write(dir.path().join("p.json"), doc.to_string()).unwrap();
    let out = chimera(dir.path(), &["apply", "p.json"]);
    assert!(text(&out).contains("integrity check failed"), "{}", text(&out));
    assert_eq!(footprint(dir.path()), (0, 0));
}

#[test]
fn a_broken_policy_is_a_located_diagnostic() {
    let dir = stack_dir();
    policy(dir.path(), "broken.rego", "package chimera\n\ndeny contains msg if {\n  msg :=\n}\n");
    let out = chimera(dir.path(), &["plan", ".", "--refresh=false"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("E0500"), "{t}");
    assert!(t.contains("broken.rego:"), "{t}");
    assert!(!t.contains("panicked"), "{t}");
    let out = chimera(dir.path(), &["apply", ".", "-y"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(footprint(dir.path()), (0, 0));
}

#[test]
fn a_policy_that_never_ends_is_stopped() {
    let dir = stack_dir();
    policy(
        dir.path(),
        "forever.ncl",
        "{ deny = fun plan => let rec loop = fun x => loop (x + 1) in loop 0 }\n",
    );
    let started = std::time::Instant::now();
    let out = chimera(dir.path(), &["--policy-timeout", "2", "plan", ".", "--refresh=false"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("E0504"), "{t}");
    assert!(t.contains("forever.ncl"), "{t}");
    assert!(started.elapsed() < std::time::Duration::from_secs(60));
}

#[test]
fn policy_test_runs_rego_and_nickel_tests() {
    let dir = stack_dir();
    policy(dir.path(), "owner.rego", OWNER_REGO);
    policy(
        dir.path(),
        "owner_test.rego",
        r#"package chimera

test_untagged_is_denied if {
	count(deny) == 1 with input as {"changes": [{"address": "instance.a", "after": {"tags": {}}}]}
}

test_tagged_passes if {
	count(deny) == 0 with input as {"changes": [{"address": "instance.a", "after": {"tags": {"owner": "x"}}}]}
}

test_this_one_fails if {
	count(deny) == 5 with input as {"changes": []}
}
"#,
    );
    let out = chimera(dir.path(), &["policy", "test", "."]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "one test fails: {t}");
    assert!(t.contains("test_untagged_is_denied PASS"), "{t}");
    assert!(t.contains("test_this_one_fails FAIL"), "{t}");
    assert!(t.contains("PASS: 2/3"), "{t}");
}
