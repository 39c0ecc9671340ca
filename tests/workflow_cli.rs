//! The pull-request workflow end to end, in a temp dir with real git: `chimera init`,
//! `chimera test` (pass, fail with a diff, `--update`, pass; CI refuses new snapshots),
//! `chimera preview --base HEAD~1`, and the commands the scaffolded CI workflow runs.

use std::path::Path;
use std::process::{Command, Output};

/// What users see, as a reviewed snapshot: commit ids and temporary paths filtered out.
fn snapshot(name: &str, text: &str) {
    insta::with_settings!({
        filters => vec![
            (r"/tmp/\.tmp[A-Za-z0-9]+", "[TMP]"),
            (r"\b[0-9a-f]{40}\b", "[COMMIT]"),
            (r"\b[0-9a-f]{10}\b", "[COMMIT]"),
        ],
        prepend_module_to_snapshot => false,
    }, {
        insta::assert_snapshot!(name, text);
    });
}

fn chimera(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_chimera"))
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .env_remove("CI")
        .env_remove("CHIMERA_STATE")
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn git(dir: &Path, args: &[&str]) {
    let o = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .output()
        .unwrap();
    assert!(o.status.success(), "git {args:?}: {}", text(&o));
}

#[test]
fn init_test_update_and_preview_with_real_git() {
    let tmp = tempfile::tempdir().unwrap();
    let o = chimera(tmp.path(), &["init", "infra"]);
    assert!(o.status.success(), "{}", text(&o));
    let repo = tmp.path().join("infra");
    for f in [
        "main.ncl",
        ".gitignore",
        "tests/default.ncl",
        "tests/snapshots/default.snap",
        ".github/workflows/chimera.yml",
        ".git",
    ] {
        assert!(repo.join(f).exists(), "{f} was not written");
    }
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-qm", "chimera init"]);

    // Running init again writes nothing.
    let before = std::fs::read_to_string(repo.join("main.ncl")).unwrap();
    let o = chimera(&repo, &["init"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("nothing was written"), "{}", text(&o));
    assert_eq!(
        std::fs::read_to_string(repo.join("main.ncl")).unwrap(),
        before
    );

    // The scaffold's own test passes.
    let o = chimera(&repo, &["test"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("1 passed, 0 failed"), "{}", text(&o));

    // A change to the stack: the snapshot no longer matches, and the diff says how.
    let edited = before.replace("web_count | default = 2", "web_count | default = 3");
    assert_ne!(edited, before);
    std::fs::write(repo.join("main.ncl"), &edited).unwrap();
    let o = chimera(&repo, &["test"]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    snapshot("workflow_test_fails_with_a_diff", &t);
    assert!(t.contains("FAIL    default"), "{t}");
    assert!(t.contains("++ instance.web-2 will be created"), "{t}");
    assert!(
        t.contains("-Plan: 5 to create") && t.contains("+Plan: 6 to create"),
        "{t}"
    );

    // In CI a new case's snapshot is written for review, not accepted.
    std::fs::write(
        repo.join("tests/big.ncl"),
        "(import \"../main.ncl\") & { web_count = 5, web_size = 'large }\n",
    )
    .unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_chimera"))
        .args(["test", "--filter", "big"])
        .current_dir(&repo)
        .env("CI", "true")
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("not accepted"), "{}", text(&o));
    assert!(!repo.join("tests/snapshots/big.snap").exists());
    let pending = std::fs::read_to_string(repo.join("tests/snapshots/big.snap.new")).unwrap();
    assert!(
        pending.contains("instance_type = \"local.large\""),
        "{pending}"
    );

    // --update accepts both; then everything passes.
    let o = chimera(&repo, &["test", "--update"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = chimera(&repo, &["test"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("2 passed, 0 failed"), "{}", text(&o));
    let snap = std::fs::read_to_string(repo.join("tests/snapshots/default.snap")).unwrap();
    assert!(snap.contains("Plan: 6 to create"), "{snap}");
    std::fs::remove_file(repo.join("tests/snapshots/big.snap.new")).unwrap();

    // The review view: what the last commit changed in the desired state, without any state.
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-qm", "three web servers"]);
    let o = chimera(
        &repo,
        &["preview", "--base", "HEAD~1", "--detailed-exitcode"],
    );
    let t = text(&o);
    assert_eq!(o.status.code(), Some(2), "{t}");
    snapshot("workflow_preview_text", &t);
    assert!(t.contains("+ instance.web-2 will be created"), "{t}");
    assert!(
        t.contains("Plan: 1 to create, 0 to update, 0 to replace, 0 to delete."),
        "{t}"
    );
    assert!(
        !repo.join(".chimera/state.db").exists() && !repo.join(".chimera/local-cloud.db").exists(),
        "preview reads and writes no state"
    );
    let o = chimera(
        &repo,
        &["preview", "--base", "HEAD~1", "--format", "markdown"],
    );
    assert!(o.status.success(), "{}", text(&o));
    let md = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        md.starts_with("### Chimera preview for stack `infra`"),
        "{md}"
    );
    assert!(
        md.contains("<code>+ instance.web-2</code> will be created"),
        "{md}"
    );
    let o = chimera(&repo, &["preview", "--base", "HEAD", "--detailed-exitcode"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        text(&o).contains("No changes to the desired state"),
        "{}",
        text(&o)
    );
    let o = chimera(&repo, &["preview", "--base", "no-such-branch"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("unknown git ref"), "{}", text(&o));

    // What the scaffolded workflow runs: check, test, plan with the Markdown comment, apply.
    let workflow = std::fs::read_to_string(repo.join(".github/workflows/chimera.yml")).unwrap();
    for line in [
        "run: chimera check",
        "run: chimera test",
        "run: chimera plan --out plan.json --format markdown > plan.md",
        "run: chimera apply plan.json",
    ] {
        assert!(workflow.contains(line), "the workflow runs `{line}`");
    }
    assert!(chimera(&repo, &["check"]).status.success());
    let o = chimera(
        &repo,
        &["plan", "--out", "plan.json", "--format", "markdown"],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("**Plan: 6 to create"),
        "{}",
        text(&o)
    );
    let o = chimera(&repo, &["apply", "plan.json"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = chimera(&repo, &["plan", "--detailed-exitcode"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    // State, the local cloud and the saved plan stay out of git.
    let status = Command::new("git")
        .args(["status", "--porcelain"])
        .current_dir(&repo)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&status.stdout), "");
}

#[test]
fn test_without_cases_is_a_diagnostic() {
    let tmp = tempfile::tempdir().unwrap();
    let o = chimera(tmp.path(), &["test"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("E0310"), "{}", text(&o));
}
