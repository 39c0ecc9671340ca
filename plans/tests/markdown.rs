//! The Markdown plan (a pull-request comment): snapshots of a small plan, a large truncated one
//! and one with sensitive values, plus the cap on a very large plan.

mod common;

use chimera_plans::markdown::{self, MarkdownOptions};
use chimera_plans::plan::Plan;

/// `head` planned against `base` as if `base` were applied (generation 7).
fn plan_between(base: &str, head: &str) -> Plan {
    common::plan_between(base, head, 7)
}

fn stack(subnet_cidr: &str, web_size: &str, web_count: usize, extra: &str) -> String {
    format!(
        r#"let c = import "chimera.ncl" in
let net = c.Network & {{ name = "main", cidr = "10.0.0.0/16" }} in
let sn = c.Subnet & {{ name = "web", network = net, cidr = "{subnet_cidr}" }} in
let fw = c.Firewall & {{ name = "web", network = net, ingress = [{{ ports = 443 }}] }} in
{{ stack = "shop", resources = [net, sn, fw] @ std.array.generate
  (fun i => c.Instance & {{ name = "web-%{{std.to_string i}}", size = '{web_size}, subnet = sn, firewalls = [fw] {extra} }}) {web_count} }}
"#
    )
}

fn md(plan: &Plan, max: usize) -> String {
    markdown::plan_markdown(
        plan,
        &MarkdownOptions {
            max_chars: max,
            ..MarkdownOptions::for_plan(plan)
        },
    )
}

#[test]
fn a_small_plan() {
    // The subnet's CIDR forces a replacement (and so its instances'); one instance goes.
    let p = plan_between(
        &stack("10.0.1.0/24", "small", 3, ""),
        &stack("10.0.2.0/24", "small", 2, ""),
    );
    insta::assert_snapshot!("markdown_small", md(&p, markdown::DEFAULT_MAX_CHARS));
}

#[test]
fn sensitive_values_are_redacted() {
    let p = plan_between(
        &stack(
            "10.0.1.0/24",
            "small",
            1,
            r#", user_data = "PASSWORD=hunter2", tags = { team = "a" }, sensitive = ["tags"]"#,
        ),
        &stack(
            "10.0.1.0/24",
            "small",
            1,
            r#", user_data = "PASSWORD=correct-horse", tags = { team = "b" }, sensitive = ["tags"]"#,
        ),
    );
    let out = md(&p, markdown::DEFAULT_MAX_CHARS);
    for secret in ["hunter2", "correct-horse", "team"] {
        assert!(!out.contains(secret), "`{secret}` leaked:\n{out}");
    }
    insta::assert_snapshot!("markdown_sensitive", out);
}

#[test]
fn no_changes() {
    let s = stack("10.0.1.0/24", "small", 2, "");
    let p = plan_between(&s, &s);
    insta::assert_snapshot!("markdown_no_changes", md(&p, markdown::DEFAULT_MAX_CHARS));
}

#[test]
fn a_large_plan_is_truncated_honestly() {
    let p = plan_between(
        &stack("10.0.1.0/24", "small", 1, ""),
        &stack("10.0.1.0/24", "large", 40, ""),
    );
    // A small cap, so the snapshot stays readable: the same logic as the 60,000 default.
    insta::assert_snapshot!("markdown_truncated", md(&p, 6_000));
}

#[test]
fn a_very_large_plan_stays_under_the_github_limit() {
    let p = plan_between(
        &stack("10.0.1.0/24", "small", 1, ""),
        &stack("10.0.1.0/24", "small", 3000, ""),
    );
    let out = md(&p, markdown::DEFAULT_MAX_CHARS);
    let n = out.chars().count();
    assert!(
        n <= markdown::DEFAULT_MAX_CHARS,
        "{n} characters; GitHub refuses more than {}",
        markdown::GITHUB_COMMENT_LIMIT
    );
    assert!(out.contains("Plan: 2999 to create, 0 to update, 0 to replace, 0 to delete."));
    assert!(out.contains("**Truncated:**"), "the cut is said");
    // The notice's count matches the sections left out.
    let shown = out.matches("<details><summary><code>").count();
    assert!(out.contains(&format!(
        "{} of 2999 changed resources are not shown (",
        2999 - shown
    )));
    assert!(out.contains("The graph is left out"));
}
