//! The offline planner: every intent it knows, on the examples, drafted and then judged by the
//! verifier (compiles, no policy denies it, the plan shows what was asked); the text outside
//! the edited spans is kept byte for byte; an intent it does not know is refused with what it
//! knows; rightsizing reads the utilisation set through the local cloud, which is not drift.

mod planner_support;

use std::collections::BTreeMap;
use std::path::PathBuf;

use chimera_agents::planner::OfflinePlanner;
use chimera_agents::planner::expect::Case;
use chimera_agents::verify::apply_edits;
use chimera_agents::{AgentError, Proposer, Round};
use chimera_providers::Utilisation;
use chimera_workflow::{ReadOnlyStack, Settings};
use planner_support as support;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn case(id: &str) -> Case {
    support::cases()
        .into_iter()
        .find(|c| c.id == id)
        .unwrap_or_else(|| panic!("no case {id} in agents/intents.json"))
}

/// Runs the cases of the intent set named `ids` and asserts each compiles, passes its policies
/// and does what was asked (or is refused, when that is what the case expects).
fn cases_pass(ids: &[&str]) {
    rt().block_on(async {
        for id in ids {
            let c = case(id);
            let out = support::run(&c).await;
            if let Some(gap) = &c.known_gap {
                assert!(
                    !out.as_asked() || !out.policy_ok(),
                    "{id} is marked as a known gap ({gap}) but passes now: drop `known_gap`"
                );
                continue;
            }
            assert!(
                out.as_asked(),
                "{id}: `{}`: {:?}\ndraft: {:#?}",
                c.intent,
                out.problems,
                out.draft
            );
            if !c.expect.unsupported {
                assert!(
                    out.compiled() && out.policy_ok(),
                    "{id}: {:?}",
                    out.problems
                );
                // Outside the edits, every byte is as it was.
                let d = out.draft.as_ref().unwrap();
                let dir = support::stack_dir(&c.example, &[]);
                let before = std::fs::read_to_string(dir.path().join("main.ncl")).unwrap();
                let (files, problems) = apply_edits(dir.path(), d);
                assert!(problems.is_empty(), "{id}: {problems:?}");
                let after = &files[&PathBuf::from("main.ncl")];
                assert_kept(&before, after, d, id);
            }
        }
    });
}

/// Every line of `before` that no edit's `old` text covers is still in `after`, in order.
fn assert_kept(before: &str, after: &str, d: &chimera_agents::Draft, id: &str) {
    let mut covered = vec![false; before.len()];
    for e in &d.edits {
        if let Some(at) = before.find(&e.old) {
            covered[at..at + e.old.len()]
                .iter_mut()
                .for_each(|c| *c = true);
        }
    }
    let mut rest = after;
    let mut pos = 0;
    for line in before.split_inclusive('\n') {
        let start = pos;
        pos += line.len();
        if covered[start..pos].iter().any(|c| *c) {
            continue;
        }
        let at = rest
            .find(line)
            .unwrap_or_else(|| panic!("{id}: the line {line:?} was lost or reordered"));
        rest = &rest[at + line.len()..];
    }
    // The edits are small: never more than a handful of lines each.
    for e in &d.edits {
        assert!(
            e.old.lines().count() <= 4,
            "{id}: an edit quotes {} lines",
            e.old.lines().count()
        );
    }
}

#[test]
fn scale_up_and_down_edits_the_generate_count() {
    cases_pass(&[
        "webapp-scale-up",
        "webapp-scale-down",
        "multicloud-scale",
        "cheapest-scale",
    ]);
}

#[test]
fn resize_follows_a_default_field_and_picks_the_call_that_builds_the_instance() {
    cases_pass(&["webapp-resize", "mixed-resize-prod", "cheapest-resize"]);
}

#[test]
fn a_volume_is_added_next_to_its_instance() {
    cases_pass(&["webapp-volume", "cheapest-volume"]);
}

#[test]
fn ports_open_and_close_in_the_firewalls_of_a_tier() {
    cases_pass(&[
        "webapp-open-port",
        "webapp-open-port-from",
        "webapp-close-port",
        "multicloud-open-port",
    ]);
}

#[test]
fn tags_go_where_the_tags_are_written() {
    cases_pass(&["webapp-tag", "mixed-tag", "cheapest-tag"]);
}

#[test]
fn region_and_cheapest_provider_moves() {
    cases_pass(&[
        "webapp-region",
        "mixed-region",
        "multicloud-region",
        "webapp-cheapest",
    ]);
}

#[test]
fn cost_cuts_meet_their_target_under_constraints() {
    cases_pass(&["mixed-cost-cut", "cheapest-cost-cut", "multicloud-cost-cut"]);
}

#[test]
fn the_drafts_for_a_cost_cut_carry_the_target() {
    rt().block_on(async {
        let dir = support::stack_dir("mixed", &[]);
        let ctx = support::context(
            dir.path(),
            "cut cost by 30% keeping at least 1 shop-prod-web",
        );
        let d = OfflinePlanner::new().propose(&ctx).await.unwrap();
        assert_eq!(d.target, Some(chimera_agents::Target::CostCut(0.3)));
        assert!(d.summary.contains("30%"), "{}", d.summary);
    });
}

#[test]
fn unknown_intents_are_refused_with_what_the_planner_knows() {
    cases_pass(&["refuse-unknown", "refuse-single-instance-scale"]);
    rt().block_on(async {
        let dir = support::stack_dir("webapp", &[]);
        for intent in [
            "make it faster",
            "delete the database",
            "scale nothing to 3",
        ] {
            let ctx = support::context(dir.path(), intent);
            match OfflinePlanner::new().propose(&ctx).await {
                Err(AgentError::Unsupported(m)) => {
                    assert!(!m.is_empty(), "{intent}");
                    if intent != "scale nothing to 3" {
                        assert!(m.contains("scale TIER to N"), "{intent}: {m}");
                    } else {
                        assert!(m.contains("web-0"), "names the instances it has: {m}");
                    }
                }
                other => panic!("{intent}: {other:?}"),
            }
        }
    });
}

#[test]
fn a_rejected_draft_is_never_proposed_again() {
    rt().block_on(async {
        let dir = support::stack_dir("webapp", &[]);
        let mut ctx = support::context(dir.path(), "scale web to 4");
        let planner = OfflinePlanner::new();
        let first = planner.propose(&ctx).await.unwrap();
        ctx.rounds.push(Round {
            draft: first.clone(),
            feedback: vec!["policy denies it: budget (the plan): too dear".into()],
        });
        match planner.propose(&ctx).await {
            Err(AgentError::Unsupported(m)) => assert!(m.contains("too dear"), "{m}"),
            Ok(d) => assert_ne!(d.edits, first.edits),
            Err(e) => panic!("{e}"),
        }
    });
}

#[test]
fn rightsize_reads_utilisation_set_through_the_local_cloud_which_is_not_drift() {
    rt().block_on(async {
        let dir = support::stack_dir("webapp", &[]);
        support::apply(dir.path()).await;
        // web-0 and web-1 idle, web-2 busy: they share one size expression, so nothing moves.
        support::set_utilisation(dir.path(), "instance.web-0", 3.0, 10.0).await;
        support::set_utilisation(dir.path(), "instance.web-1", 5.0, 12.0).await;
        support::set_utilisation(dir.path(), "instance.web-2", 95.0, 70.0).await;
        let mut stack = ReadOnlyStack::open(dir.path(), Settings::default());
        assert!(
            stack.drift().await.unwrap().is_empty(),
            "utilisation is not drift"
        );
        let u = stack.utilisation().await.unwrap();
        assert_eq!(u.len(), 3);
        let web0 = u[&"instance.web-0".parse::<chimera_model::Address>().unwrap()];
        assert_eq!((web0.cpu_percent, web0.memory_percent), (3.0, 10.0));
        let planner = OfflinePlanner::for_stack(&mut stack).await.unwrap();
        let ctx = support::context(dir.path(), "rightsize from utilisation");
        match planner.propose(&ctx).await {
            Err(AgentError::Unsupported(m)) => assert!(m.contains("size"), "{m}"),
            Ok(d) => panic!("instances that disagree moved together: {d:#?}"),
            Err(e) => panic!("{e}"),
        }
        // All three idle: the shared `web_size` default goes one size down.
        support::set_utilisation(dir.path(), "instance.web-2", 2.0, 8.0).await;
        let planner = OfflinePlanner::for_stack(&mut stack).await.unwrap();
        let d = planner.propose(&ctx).await.unwrap();
        assert_eq!(d.edits.len(), 1, "{d:#?}");
        let (files, problems) = apply_edits(dir.path(), &d);
        assert!(problems.is_empty(), "{problems:?}");
        assert!(
            files[&PathBuf::from("main.ncl")].contains("web_size | default = 'micro,"),
            "{d:#?}"
        );
        assert!(
            d.summary.contains("instance.web-2 runs at 2% CPU"),
            "{}",
            d.summary
        );
    });
    cases_pass(&["webapp-rightsize"]);
}

#[test]
fn rightsize_without_utilisation_or_within_bounds_is_refused() {
    rt().block_on(async {
        let dir = support::stack_dir("webapp", &[]);
        let ctx = support::context(dir.path(), "rightsize from utilisation");
        let e = OfflinePlanner::new().propose(&ctx).await.unwrap_err();
        assert!(e.to_string().contains("no utilisation"), "{e}");
        let busy = Utilisation {
            cpu_percent: 50.0,
            memory_percent: 50.0,
        };
        let u: BTreeMap<String, Utilisation> = (0..3)
            .map(|i| (format!("instance.web-{i}"), busy))
            .collect();
        let e = OfflinePlanner::with_utilisation(u)
            .propose(&ctx)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("within bounds"), "{e}");
    });
}

#[test]
fn fleet_intents_scale_and_tag_a_large_generated_stack() {
    cases_pass(&["fleet-scale", "fleet-tag"]);
}

#[test]
fn the_known_gaps_of_the_intent_set_still_fail_cleanly() {
    cases_pass(&[
        "gap-webapp-resize-one",
        "gap-mixed-region-prod",
        "gap-multicloud-cheapest",
    ]);
}

/// The whole intent set (also `cargo bench -p chimera-agents --bench planner`, which times it).
#[test]
fn the_whole_intent_set() {
    let ids: Vec<String> = support::cases().into_iter().map(|c| c.id).collect();
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    cases_pass(&ids);
}
