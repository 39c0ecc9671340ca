//! Moves in the planner: a renamed resource with a `moved` entry is planned as a move (never a
//! delete and a create), then diffed against its new configuration; references to it follow;
//! every rendering shows it; a move already done is nothing, and state holding both addresses
//! is a conflict.

mod common;

use chimera_model::codes;
use chimera_plans::plan::{self, Action, Plan, Prior};
use chimera_plans::{PlanFile, markdown, render};
use chimera_seal::Keys;

use common::{graph_of, plan_against};

/// A stack with one instance (named `name`, of `size` and `image`) and a volume attached to it;
/// `moved` entries when `moved` is given.
fn source(name: &str, size: &str, image: &str, moved: &str) -> String {
    format!(
        r#"let c = import "chimera.ncl" in
let net = c.Network & {{ name = "main", cidr = "10.0.0.0/16" }} in
let sn = c.Subnet & {{ name = "web", network = net, cidr = "10.0.1.0/24" }} in
let vm = c.Instance & {{ name = "{name}", size = '{size}, image = "{image}", subnet = sn }} in
{{ stack = "shop", resources = [net, sn, vm, c.Volume & {{ name = "data", size_gib = 10, instance = vm }}],
  moved = [{moved}] }}
"#
    )
}

const MOVE: &str = r#"{ from = "instance.web-0", to = "instance.front-0" }"#;

/// The original stack as applied state, and `head` planned against it.
fn moved_plan(head: &str) -> Plan {
    let base = graph_of(&source("web-0", "small", "ubuntu-24.04", ""));
    let head = graph_of(head);
    let rows = plan::prior_from_graph(&base, &[&head]);
    let p = plan_against(&head, &rows, 1);
    // Planning by value plans the same.
    let by_value = plan::plan_owned(
        head,
        &Prior {
            lineage: Some("lineage".into()),
            serial: 1,
            resources: &rows,
        },
    )
    .unwrap();
    assert_eq!(p, by_value);
    p
}

fn change<'a>(p: &'a Plan, address: &str) -> &'a plan::ResourceChange {
    p.changes
        .iter()
        .find(|c| c.address.to_string() == address)
        .unwrap_or_else(|| panic!("no change for {address}"))
}

fn actions(p: &Plan) -> Vec<(String, Action, Option<String>)> {
    p.changes
        .iter()
        .map(|c| {
            (
                c.address.to_string(),
                c.action,
                c.moved_from.as_ref().map(|a| a.to_string()),
            )
        })
        .collect()
}

#[test]
fn a_rename_with_a_moved_entry_is_a_move_and_nothing_else() {
    let p = moved_plan(&source("front-0", "small", "ubuntu-24.04", MOVE));
    assert_eq!(
        actions(&p),
        vec![
            ("network.main".into(), Action::NoOp, None),
            ("subnet.web".into(), Action::NoOp, None),
            (
                "instance.front-0".into(),
                Action::NoOp,
                Some("instance.web-0".into())
            ),
            // The volume's reference followed the instance: nothing to update.
            ("volume.data".into(), Action::NoOp, None),
        ]
    );
    assert!(p.has_changes(), "a move is a change");
    assert_eq!(p.moves(), 1);
    let front = change(&p, "instance.front-0");
    assert_eq!(
        front
            .prior
            .as_ref()
            .map(|r| r.address.to_string())
            .as_deref(),
        Some("instance.front-0"),
        "the prior row is planned under its new address"
    );
    assert_eq!(
        change(&p, "volume.data").prior.as_ref().unwrap().deps,
        vec!["instance.front-0".parse().unwrap()]
    );

    let text = render::plan_text(&p, false);
    assert!(
        text.contains("# instance.web-0 has moved to instance.front-0\n"),
        "{text}"
    );
    assert!(
        text.contains("Plan: 0 to create, 0 to update, 0 to replace, 0 to delete, 1 to move."),
        "{text}"
    );
    assert!(!text.contains("will be"), "{text}");

    let json = render::plan_json(&p);
    assert_eq!(json["summary"]["move"], 1);
    let changes = json["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 1, "{json:#}");
    assert_eq!(changes[0]["address"], "instance.front-0");
    assert_eq!(changes[0]["moved_from"], "instance.web-0");
    assert_eq!(changes[0]["action"], "no-op");

    let md = markdown::plan_markdown(&p, &markdown::MarkdownOptions::for_plan(&p));
    assert!(md.contains("has moved from instance.web-0"), "{md}");
    assert!(md.contains("1 to move"), "{md}");
}

#[test]
fn a_moved_resource_is_diffed_against_its_new_configuration() {
    // A size change too: the moved resource is updated in place.
    let p = moved_plan(&source("front-0", "medium", "ubuntu-24.04", MOVE));
    let front = change(&p, "instance.front-0");
    assert_eq!(front.action, Action::Update);
    assert_eq!(
        front.moved_from.as_ref().unwrap().to_string(),
        "instance.web-0"
    );
    let text = render::plan_text(&p, false);
    assert!(
        text.contains(
            "~ instance.front-0 will be updated in place\n    # (moved from instance.web-0)\n"
        ),
        "{text}"
    );
    assert!(text.contains("0 to create, 1 to update"), "{text}");

    // A force-new attribute too: replaced under its new address, never deleted at the old one.
    let p = moved_plan(&source("front-0", "small", "ubuntu-22.04", MOVE));
    let front = change(&p, "instance.front-0");
    assert_eq!(front.action, Action::Replace);
    assert!(front.moved_from.is_some());
    assert!(
        p.changes
            .iter()
            .all(|c| c.address.to_string() != "instance.web-0"),
        "{:?}",
        actions(&p)
    );
}

#[test]
fn without_the_entry_a_rename_deletes_and_creates() {
    let p = moved_plan(&source("front-0", "small", "ubuntu-24.04", ""));
    let a = actions(&p);
    assert!(
        a.contains(&("instance.web-0".into(), Action::Delete, None)),
        "{a:?}"
    );
    assert!(
        a.contains(&("instance.front-0".into(), Action::Create, None)),
        "{a:?}"
    );
    assert_eq!(p.moves(), 0);
}

#[test]
fn a_move_already_applied_plans_nothing() {
    let head = graph_of(&source("front-0", "small", "ubuntu-24.04", MOVE));
    let rows = plan::prior_from_graph(&head, &[]);
    let p = plan_against(&head, &rows, 2);
    assert!(!p.has_changes(), "{:?}", actions(&p));
    assert_eq!(p.moves(), 0);
}

#[test]
fn state_holding_both_addresses_is_a_conflict() {
    let base = graph_of(&source("web-0", "small", "ubuntu-24.04", ""));
    let head = graph_of(&source("front-0", "small", "ubuntu-24.04", MOVE));
    let mut rows = plan::prior_from_graph(&base, &[&head]);
    rows.extend(
        plan::prior_from_graph(&head, &[])
            .into_iter()
            .filter(|r| r.address.to_string() == "instance.front-0"),
    );
    let diags = plan::plan(
        Some(&head),
        &head.stack,
        &Prior {
            lineage: Some("l".into()),
            serial: 1,
            resources: &rows,
        },
    )
    .unwrap_err();
    assert_eq!(diags.len(), 1);
    assert_eq!(diags[0].code, codes::MOVE_CONFLICT);
    assert!(
        diags[0].detail.contains("remove the `moved` entry"),
        "{}",
        diags[0].detail
    );
}

#[test]
fn a_saved_plan_keeps_its_moves() {
    let p = moved_plan(&source("front-0", "small", "ubuntu-24.04", MOVE));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plan.json");
    let f = PlanFile {
        plan: p,
        state_url: "sqlite:///tmp/state.db".into(),
        local_cloud: "/tmp/cloud.db".into(),
        policies: String::new(),
    };
    f.write(&path, &Keys::None).unwrap();
    let back = PlanFile::read(&path, &Keys::None).unwrap();
    assert_eq!(back.plan, f.plan);
    assert_eq!(back.plan.moves(), 1);
}
