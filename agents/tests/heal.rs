//! Drift, classified and routed by the stack's heal policy: `auto` is left to the daemon,
//! `propose` becomes a pull request that adopts the live values (its head, planned against the
//! cloud as it is, shows no changes for them), `report` is only reported — and nothing is ever
//! written to a cloud by the agent.

use std::collections::BTreeSet;
use std::path::Path;

use chimera_agents::forge::{NoForge, Repo};
use chimera_agents::heal::{Action, Class, Prepared, assess};
use chimera_agents::propose::{self, Destination, Outcome};
use chimera_testkit::git;
use chimera_workflow::{ApplyRequest, HealMode, LocalChange, ReadOnlyStack, Settings, Stack};
use serde_json::json;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The webapp example with a heal policy (propose by default, instances auto, the volume
/// report only), in a git repository, applied, then changed out of band four ways.
async fn drifted() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/webapp/main.ncl"),
    )
    .unwrap()
    .replacen(
        "stack = \"webapp\",",
        "stack = \"webapp\",\n  reconcile = { heal = 'propose, overrides = { instance = 'auto, \"volume.data\" = 'report } },",
        1,
    );
    std::fs::write(dir.path().join("main.ncl"), text).unwrap();
    std::fs::write(dir.path().join(".gitignore"), ".chimera/\n").unwrap();
    git(dir.path(), &["init", "--quiet", "--initial-branch=main"]);
    git(dir.path(), &["add", "."]);
    git(dir.path(), &["commit", "--quiet", "-m", "webapp"]);
    let mut stack = Stack::open(dir.path(), Settings::default());
    let applied = stack
        .apply(
            &ApplyRequest {
                refresh: false,
                ..ApplyRequest::default()
            },
            |_| true,
        )
        .await
        .unwrap();
    assert!(applied.ok());
    let set = |k: &str, v: serde_json::Value| LocalChange::Set(vec![(k.to_string(), v)]);
    for (address, change) in [
        ("subnet.public", set("public", json!(false))),
        ("instance.web-1", LocalChange::Delete),
        ("volume.data", set("instance", json!(null))),
        (
            "firewall.web",
            set(
                "ingress",
                json!([
                    {"protocol": "tcp", "from_port": 80, "to_port": 80, "cidrs": ["0.0.0.0/0"]},
                    {"protocol": "tcp", "from_port": 443, "to_port": 443, "cidrs": ["0.0.0.0/0"]},
                    {"protocol": "tcp", "from_port": 22, "to_port": 22, "cidrs": ["10.0.0.0/16"], "description": "ssh from inside"},
                    {"protocol": "tcp", "from_port": 8080, "to_port": 8080, "cidrs": ["10.0.0.0/16"]},
                ]),
            ),
        ),
    ] {
        stack
            .local_mutate(&address.parse().unwrap(), &change)
            .await
            .unwrap();
    }
    dir
}

#[test]
fn drift_is_classified_and_routed_by_the_stacks_heal_policy() {
    rt().block_on(async {
        let dir = drifted().await;
        let a = assess(dir.path(), &Settings::default(), HealMode::Report)
            .await
            .unwrap();
        let by: std::collections::BTreeMap<String, _> = a
            .items
            .iter()
            .map(|i| (i.address.as_ref().unwrap().to_string(), i))
            .collect();
        assert_eq!(by.len(), 4, "{:?}", a.items);
        let public = by["subnet.public"];
        assert_eq!(
            public.class,
            Class::Changed {
                attrs: vec!["public".into()]
            }
        );
        assert_eq!(
            (public.mode, public.action),
            (HealMode::Propose, Action::Adopt)
        );
        let fw = by["firewall.web"];
        assert_eq!(fw.class, Class::RuleAdded { rules: 1 });
        assert_eq!(fw.action, Action::Adopt);
        let web1 = by["instance.web-1"];
        assert_eq!(web1.class, Class::Deleted);
        assert_eq!((web1.mode, web1.action), (HealMode::Auto, Action::ReApply));
        let data = by["volume.data"];
        assert_eq!((data.mode, data.action), (HealMode::Report, Action::Report));
        // Two adopting edits, one per adopted resource.
        assert_eq!(a.adopt.edits.len(), 2, "{:?}", a.adopt.edits);
        assert!(
            a.adopt
                .edits
                .iter()
                .any(|e| e.new.contains("public = false"))
        );
        assert!(a.adopt.edits.iter().any(|e| e.new.contains("ports = 8080")));
    });
}

#[test]
fn an_adopting_pull_request_plans_to_no_changes_against_the_cloud_and_nothing_is_applied() {
    rt().block_on(async {
        let dir = drifted().await;
        let before = Stack::open(dir.path(), Settings::default())
            .history()
            .await
            .unwrap()
            .len();
        let a = assess(dir.path(), &Settings::default(), HealMode::Report)
            .await
            .unwrap();
        let adopted: BTreeSet<String> = ["subnet.public", "firewall.web"]
            .into_iter()
            .map(String::from)
            .collect();
        let prepared = Prepared {
            draft: a.adopt.clone(),
            name: "adopt-drift".into(),
        };
        let repo = Repo::open(dir.path()).await.unwrap();
        let p = propose::propose(propose::Request {
            dir: dir.path().to_path_buf(),
            intent: "adopt drift: subnet.public, firewall.web".into(),
            settings: Settings::default(),
            proposer: &prepared,
            memory: None,
            destination: Some(Destination {
                repo: &repo,
                forge: &NoForge,
                base_ref: "main".into(),
                base_branch: "main".into(),
            }),
            max_rounds: 1,
            adopt: Some(adopted),
        })
        .await
        .unwrap();
        let Outcome::Committed { branch, .. } = &p.outcome else {
            panic!("{:?}\n{}", p.outcome, p.body)
        };
        assert_eq!(p.refused_writes, 0);
        // The head, planned against the cloud as it is: the adopted resources do not change.
        let head = tempfile::tempdir().unwrap();
        std::fs::write(
            head.path().join("main.ncl"),
            git(dir.path(), &["show", &format!("{branch}:main.ncl")]),
        )
        .unwrap();
        std::fs::create_dir_all(head.path().join(".chimera")).unwrap();
        for f in std::fs::read_dir(dir.path().join(".chimera")).unwrap() {
            let f = f.unwrap();
            if f.path().is_file() {
                std::fs::copy(f.path(), head.path().join(".chimera").join(f.file_name())).unwrap();
            }
        }
        let plan = ReadOnlyStack::open(head.path(), Settings::default())
            .plan(true)
            .await
            .unwrap();
        let changed: Vec<String> = plan
            .changes
            .iter()
            .filter(|c| c.action != chimera_plans::Action::NoOp)
            .map(|c| c.address.to_string())
            .collect();
        assert!(
            !changed.contains(&"subnet.public".to_string()),
            "{changed:?}"
        );
        assert!(
            !changed.contains(&"firewall.web".to_string()),
            "{changed:?}"
        );
        // What is left is the daemon's to heal (the deleted instance) or only reported.
        assert!(
            changed.contains(&"instance.web-1".to_string()),
            "{changed:?}"
        );
        // Nothing was applied.
        assert_eq!(
            Stack::open(dir.path(), Settings::default())
                .history()
                .await
                .unwrap()
                .len(),
            before
        );
    });
}

#[test]
fn a_resource_tagged_for_the_stack_but_not_in_its_state_is_reported_as_unmanaged() {
    rt().block_on(async {
        let dir = drifted().await;
        // A second state for the same stack in the same local cloud: what the first applied is,
        // from the second's view, tagged for the stack but unmanaged.
        let other = tempfile::tempdir().unwrap();
        let settings = Settings {
            state_url: Some(format!(
                "sqlite://{}",
                other.path().join("state.db").display()
            )),
            local_cloud: Some(Stack::open(dir.path(), Settings::default()).local_cloud_path()),
            ..Settings::default()
        };
        let a = assess(dir.path(), &settings, HealMode::Report)
            .await
            .unwrap();
        let unmanaged = a
            .items
            .iter()
            .filter(|i| matches!(i.class, Class::Unmanaged { .. }))
            .count();
        assert!(unmanaged >= 7, "{:?}", a.items);
        assert!(
            a.items
                .iter()
                .all(|i| i.action == Action::Report || i.address.is_some())
        );
    });
}
