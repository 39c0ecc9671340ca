//! The verifier: a draft's edits are applied in memory, compiled, planned against the current
//! state, priced and checked against the stack's policies; what fails comes back as feedback
//! lines with file and line; nothing on disk or in the cloud changes.

use std::path::{Path, PathBuf};

use chimera_agents::verify::{apply_edits, verify};
use chimera_agents::{Draft, Edit, Target};
use chimera_workflow::{ApplyRequest, Settings, Stack};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The webapp example, applied.
async fn webapp() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/webapp/main.ncl"),
        dir.path().join("main.ncl"),
    )
    .unwrap();
    let req = ApplyRequest {
        refresh: false,
        ..ApplyRequest::default()
    };
    let applied = Stack::open(dir.path(), Settings::default())
        .apply(&req, |_| true)
        .await
        .unwrap();
    assert!(applied.ok());
    dir
}

fn edit(old: &str, new: &str) -> Edit {
    Edit {
        file: PathBuf::from("main.ncl"),
        old: old.into(),
        new: new.into(),
    }
}

fn draft(edits: Vec<Edit>) -> Draft {
    Draft {
        edits,
        summary: "test".into(),
        target: None,
    }
}

#[test]
fn a_good_draft_passes_with_its_plan_and_cost_and_nothing_on_disk_changes() {
    rt().block_on(async {
        let dir = webapp().await;
        let before = std::fs::read_to_string(dir.path().join("main.ncl")).unwrap();
        let d = draft(vec![edit("size_gib = 50", "size_gib = 60")]);
        let v = verify(dir.path(), &Settings::default(), &d, 0.0)
            .await
            .unwrap();
        assert!(v.passed(), "{:?}", v.feedback);
        let plan = v.plan.as_ref().unwrap();
        let changed: Vec<String> = plan
            .changes
            .iter()
            .filter(|c| c.action != chimera_plans::Action::NoOp)
            .map(|c| c.address.to_string())
            .collect();
        assert_eq!(changed, ["volume.data"]);
        assert!(v.cost.is_some());
        assert_eq!(v.refused_writes, 0);
        assert!(v.files[&PathBuf::from("main.ncl")].contains("size_gib = 60"));
        assert_eq!(
            std::fs::read_to_string(dir.path().join("main.ncl")).unwrap(),
            before
        );
    });
}

#[test]
fn a_draft_that_does_not_compile_comes_back_with_the_file_and_line() {
    rt().block_on(async {
        let dir = webapp().await;
        let d = draft(vec![edit("size_gib = 50", "size_gib = \"fifty\"")]);
        let v = verify(dir.path(), &Settings::default(), &d, 0.0)
            .await
            .unwrap();
        assert!(!v.compiled && !v.passed());
        assert!(
            v.feedback.iter().any(|f| f.starts_with("main.ncl:")),
            "{:?}",
            v.feedback
        );
    });
}

#[test]
fn edits_must_quote_text_that_occurs_once_in_a_nickel_file_inside_the_stack() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("main.ncl"), "{ a = 1, b = 1 }\n").unwrap();
    let cases = [
        (edit("c = 1", "c = 2"), "does not occur"),
        (edit("= 1", "= 2"), "occurs 2 times"),
        (
            Edit {
                file: PathBuf::from("../outside.ncl"),
                old: "x".into(),
                new: "y".into(),
            },
            "not a path inside",
        ),
        (
            Edit {
                file: PathBuf::from(".github/workflows/ci.yml"),
                old: String::new(),
                new: "on: push".into(),
            },
            "not a Nickel file",
        ),
    ];
    for (e, want) in cases {
        let (_, problems) = apply_edits(dir.path(), &draft(vec![e]));
        assert!(
            problems.iter().any(|p| p.contains(want)),
            "{want}: {problems:?}"
        );
    }
    let (files, problems) = apply_edits(dir.path(), &draft(vec![edit("a = 1", "a = 3")]));
    assert!(problems.is_empty());
    assert_eq!(files[&PathBuf::from("main.ncl")], "{ a = 3, b = 1 }\n");
}

#[test]
fn a_policy_deny_fails_the_draft_and_says_why() {
    rt().block_on(async {
        let dir = webapp().await;
        std::fs::create_dir_all(dir.path().join("policies")).unwrap();
        std::fs::write(
            dir.path().join("policies/volumes.rego"),
            "package chimera\n\ndeny contains {\"msg\": \"volumes stay under 55 GiB\", \"address\": c.address} if {\n\tsome c in input.changes\n\tc.after.size_gib > 55\n}\n",
        )
        .unwrap();
        let d = draft(vec![edit("size_gib = 50", "size_gib = 60")]);
        let v = verify(dir.path(), &Settings::default(), &d, 0.0).await.unwrap();
        assert!(v.compiled && v.denied() && !v.passed());
        assert!(
            v.feedback.iter().any(|f| f.contains("volumes stay under 55 GiB")),
            "{:?}",
            v.feedback
        );
    });
}

#[test]
fn a_missed_cost_target_is_reported_but_does_not_block() {
    rt().block_on(async {
        let dir = webapp().await;
        let mut d = draft(vec![edit("size_gib = 50", "size_gib = 40")]);
        d.target = Some(Target::CostCut(0.3));
        // The local cloud is free: nothing to cut.
        let v = verify(dir.path(), &Settings::default(), &d, 0.0)
            .await
            .unwrap();
        let (_, reached, met) = v.target.unwrap();
        assert!(!met && reached == 0.0, "{reached}");
        assert!(v.passed(), "{:?}", v.feedback);
        assert!(v.feedback.iter().any(|f| f.starts_with("target missed:")));
    });
}
