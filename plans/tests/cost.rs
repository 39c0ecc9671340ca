//! What plans cost: snapshots of the cost in text, JSON and Markdown for a change that resizes
//! and adds aws resources, plus unpriced types, regional prices, local's free simulator shown
//! apart from a cloud, and `'cheapest` explained.

mod common;

use chimera_plans::cost::{self, plan_cost};
use chimera_plans::markdown::{self, MarkdownOptions};
use chimera_plans::plan::{self, Plan};
use chimera_plans::render;
use common::{fresh, graph_of, plan_against};
use serde_json::Value;

/// `head` planned against `base` as if `base` were applied (generation 3).
fn plan_between(base: &str, head: &str) -> Plan {
    common::plan_between(base, head, 3)
}

fn shop(provider: &str, region: &str, size: &str, web: usize, disk_gib: u32) -> String {
    format!(
        r#"let c = import "chimera.ncl" in
let base = {{ provider = '{provider}, region = "{region}" }} in
let net = c.Network & base & {{ name = "main", cidr = "10.0.0.0/16" }} in
let sn = c.Subnet & base & {{ name = "web", network = net, cidr = "10.0.1.0/24" }} in
let vol = if {disk_gib} == 0 then [] else [c.Volume & base & {{ name = "data", size_gib = {disk_gib} }}] in
{{ stack = "shop", resources = [net, sn] @ vol @ std.array.generate
  (fun i => c.Instance & base & {{ name = "web-%{{std.to_string i}}", size = '{size}, subnet = sn }}) {web} }}
"#
    )
}

#[test]
fn a_resize_and_growth_on_aws_in_every_format() {
    let p = plan_between(
        &shop("aws", "us-east", "medium", 2, 100),
        &shop("aws", "us-east", "large", 3, 0),
    );
    let c = plan_cost(&p);
    // 2 × t3.medium + 100 GiB gp3 → 3 × m7i.large.
    assert!(c.monthly_before > 0.0 && c.monthly_after > c.monthly_before);
    assert!(c.delta_percent.unwrap() > 100.0);
    insta::assert_snapshot!("cost_text", render::plan_text(&p, false));
    let doc = render::plan_json(&p);
    insta::assert_json_snapshot!("cost_json", serde_json::json!({
        "cost": doc["cost"],
        "changes": doc["changes"].as_array().unwrap().iter().map(|c| serde_json::json!({
            "address": c["address"], "action": c["action"], "provider": c["provider"],
            "native_region": c["native_region"], "cost": c["cost"],
            "after_type": c["after"]["instance_type"],
        })).collect::<Vec<_>>(),
    }));
    let md = markdown::plan_markdown(&p, &MarkdownOptions::for_plan(&p));
    assert!(
        md.contains("**Monthly cost will increase by $"),
        "the comment starts with the cost: {md}"
    );
    let head: String = md.split("**Plan:").next().unwrap().to_string();
    insta::assert_snapshot!("cost_markdown_head", head);
}

#[test]
fn a_decrease_says_so() {
    let p = plan_between(
        &shop("aws", "us-east", "large", 3, 0),
        &shop("aws", "us-east", "small", 3, 0),
    );
    let c = plan_cost(&p);
    assert!(c.delta < 0.0);
    let md = markdown::plan_markdown(&p, &MarkdownOptions::for_plan(&p));
    assert!(md.contains("**Monthly cost will decrease by $"), "{md}");
    assert!(render::plan_text(&p, false).contains("Monthly cost: $"));
}

#[test]
fn prices_are_regional() {
    let east = plan_cost(&fresh(&shop("aws", "us-east", "large", 2, 100)));
    let sa = plan_cost(&fresh(&shop("aws", "sa-east", "large", 2, 100)));
    let tokyo = plan_cost(&fresh(&shop("aws", "ap-northeast", "large", 2, 100)));
    assert!(sa.monthly_after > east.monthly_after, "{sa:?} vs {east:?}");
    assert!(tokyo.monthly_after > east.monthly_after);
    for p in ["gcp", "azure"] {
        let east = plan_cost(&fresh(&shop(p, "us-east", "large", 1, 50)));
        let sa = plan_cost(&fresh(&shop(p, "sa-east", "large", 1, 50)));
        assert!(sa.monthly_after > east.monthly_after, "{p}: {sa:?} vs {east:?}");
    }
}

#[test]
fn a_type_the_catalog_lacks_is_unpriced_not_free() {
    let g = graph_of(&shop("aws", "us-east", "medium", 1, 0));
    let mut prior = plan::prior_from_graph(&g, &[&g]);
    // State recorded a type this catalog does not know (say, imported by hand).
    let web = prior
        .iter_mut()
        .find(|r| r.address.to_string() == "instance.web-0")
        .unwrap();
    web.attrs
        .insert("instance_type".into(), Value::String("x9.mega".into()));
    web.hash = chimera_model::ContentHash([1; 32]);
    let p = plan_against(&g, &prior, 1);
    let c = plan_cost(&p);
    assert_eq!(
        c.unpriced
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        ["instance.web-0"]
    );
    let text = render::plan_text(&p, false);
    assert!(
        text.contains("Not priced: instance.web-0 (aws x9.mega in us-east-1"),
        "{text}"
    );
    assert_eq!(render::plan_json(&p)["cost"]["unpriced"][0], "instance.web-0");
}

#[test]
fn local_is_free_and_never_hides_a_cloud() {
    let only_local = fresh(&shop("local", "us-east", "large", 2, 100));
    let c = plan_cost(&only_local);
    assert_eq!((c.monthly_before, c.monthly_after), (0.0, 0.0));
    assert!(render::plan_text(&only_local, false).contains("the free simulator"));

    let mixed_src = r#"let c = import "chimera.ncl" in
let mk = fun cloud tag => let b = { provider = cloud } in
  let n = c.Network & b & { name = "n-%{tag}", cidr = "10.0.0.0/16" } in
  let s = c.Subnet & b & { name = "s-%{tag}", network = n, cidr = "10.0.1.0/24" } in
  [n, s, c.Instance & b & { name = "web-%{tag}", size = 'large, subnet = s }] in
{ stack = "mixed", resources = mk 'local "l" @ mk 'aws "a" }
"#;
    let p = fresh(mixed_src);
    let c = plan_cost(&p);
    assert_eq!(c.by_provider.len(), 2);
    let text = render::plan_text(&p, false);
    assert!(text.contains("aws "), "{text}");
    assert!(text.contains("(simulated: free)"), "{text}");
    let md = markdown::plan_markdown(&p, &MarkdownOptions::for_plan(&p));
    assert!(md.contains("local $0.00 (simulated, free) · aws $"), "{md}");
    let json = render::plan_json(&p);
    assert_eq!(json["cost"]["by_provider"]["local"]["monthly_after"], 0.0);
    assert!(json["cost"]["by_provider"]["aws"]["monthly_after"].as_f64().unwrap() > 50.0);
}

#[test]
fn cheapest_is_explained() {
    let src = r#"let c = import "chimera.ncl" in
let b = { provider = 'cheapest, region = "us-east" } in
let n = c.Network & b & { name = "n", cidr = "10.0.0.0/16" } in
let s = c.Subnet & b & { name = "s", network = n, cidr = "10.0.1.0/24" } in
let tiny = c.Network & b & { name = "tiny", cidr = "10.1.0.0/16" } in
let ts = c.Subnet & b & { name = "tiny", network = tiny, cidr = "10.1.1.0/24" } in
{ stack = "cheap", resources = [n, s, c.Instance & b & { name = "web", size = 'medium, subnet = s },
  tiny, ts, c.Instance & b & { name = "nano", size = 'nano, subnet = ts }] }
"#;
    let p = fresh(src);
    assert_eq!(p.placements.len(), 2);
    let text = render::plan_text(&p, false);
    let from = text.find("'cheapest placed").expect("placements shown");
    insta::assert_snapshot!("cheapest_text", &text[from..]);
    // gcp has no nano size: it cannot host that group, and says why.
    let nano = p
        .placements
        .iter()
        .find(|g| g.resources.iter().any(|a| a.name == "nano"))
        .unwrap();
    let gcp = nano
        .candidates
        .iter()
        .find(|c| c.provider == chimera_model::ProviderName::Gcp)
        .unwrap();
    assert!(gcp.monthly.is_none() && gcp.unavailable.is_some());
    // The winner is the cheapest that can host the group.
    for g in &p.placements {
        let best = g
            .candidates
            .iter()
            .filter_map(|c| c.monthly)
            .fold(f64::INFINITY, f64::min);
        let won = g
            .candidates
            .iter()
            .find(|c| Some(c.provider) == g.chosen)
            .unwrap();
        assert_eq!(won.monthly, Some(best));
    }
    assert_eq!(
        render::plan_json(&p)["placements"].as_array().unwrap().len(),
        2
    );
    let md = markdown::plan_markdown(&p, &MarkdownOptions::for_plan(&p));
    assert!(md.contains("How <code>'cheapest</code> placed 2 groups"));
}

#[test]
fn money_is_formatted_like_a_bill() {
    assert_eq!(cost::money(1234567.891), "$1,234,567.89");
    assert_eq!(cost::money(0.0), "$0.00");
    assert_eq!(cost::signed_money(-3.1), "-$3.10");
    assert_eq!(cost::signed_money(3.1), "+$3.10");
    assert_eq!(cost::percent(Some(12.345)), " (+12.3%)");
    assert_eq!(cost::percent(None), "");
}
