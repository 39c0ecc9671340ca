//! The forge: a verified change becomes a branch, a commit and a pull request on a GitHub-shaped
//! fake (testkit, 127.0.0.1) backed by a real bare git repository, pushed to from a working
//! clone made with the git CLI. Re-runs update the same pull request; failures leave no branch
//! behind and never show the token; the user's checkout is never touched.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use chimera_agents::AgentError;
use chimera_agents::forge::{
    BODY_LIMIT, Change, Forge, GitHub, NoForge, PrRequest, PrState, Published, Repo, RetryPolicy,
    TOKEN_ENV, branch_for, publish,
};
use chimera_testkit::forge::{FakeForge, FakeState};

const STACK_FILE: &str = "stacks/web/main.ncl";
const ORIGINAL: &str = "let count = 3 in\n{\n  web = { count = count, size = \"small\" },\n}\n";
const INTENT: &str = "scale web to 5";

/// Retries as the default policy does, but with short delays.
fn fast() -> RetryPolicy {
    RetryPolicy {
        retries: 3,
        min_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(40),
        max_wait: Duration::from_secs(5),
        timeout: Duration::from_secs(10),
    }
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "Dev")
        .env("GIT_AUTHOR_EMAIL", "dev@example.com")
        .env("GIT_COMMITTER_NAME", "Dev")
        .env("GIT_COMMITTER_EMAIL", "dev@example.com")
        // `git status` must not refresh the index: the test compares its bytes.
        .env("GIT_OPTIONAL_LOCKS", "0")
        .output()
        .expect("run git");
    assert!(
        out.status.success(),
        "git {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The fake forge, its bare repository seeded with one commit on `main`, and a clone of it.
struct Setup {
    fake: FakeForge,
    dirs: tempfile::TempDir,
    work: PathBuf,
}

impl Setup {
    fn new() -> Setup {
        let fake = FakeForge::start();
        let dirs = tempfile::tempdir().unwrap();
        let seed = dirs.path().join("seed");
        std::fs::create_dir_all(seed.join("stacks/web")).unwrap();
        std::fs::write(seed.join(STACK_FILE), ORIGINAL).unwrap();
        std::fs::write(seed.join("README.md"), "# infra\n").unwrap();
        let remote = fake.remote_path().to_str().unwrap().to_string();
        git(&seed, &["init", "--quiet", "--initial-branch=main"]);
        git(&seed, &["add", "."]);
        git(&seed, &["commit", "--quiet", "-m", "initial"]);
        git(&seed, &["push", "--quiet", &remote, "main"]);
        let work = dirs.path().join("work");
        git(
            dirs.path(),
            &["clone", "--quiet", &remote, work.to_str().unwrap()],
        );
        Setup { fake, dirs, work }
    }

    async fn repo(&self) -> Repo {
        Repo::open(&self.work).await.unwrap()
    }

    fn github(&self) -> GitHub {
        GitHub::new(&self.fake.repo(), self.fake.token())
            .unwrap()
            .with_api_url(self.fake.api_url())
            .unwrap()
            .with_retry(fast())
            .unwrap()
    }

    /// `POST …/pulls` requests the fake received.
    fn opens(&self) -> usize {
        self.fake
            .calls()
            .iter()
            .filter(|(m, p)| m == "POST" && p.ends_with("/pulls"))
            .count()
    }

    fn main_tip(&self) -> String {
        self.fake.branch_tip("main").unwrap()
    }
}

fn change(text: &str, body: &str) -> Change {
    Change {
        branch: branch_for(INTENT),
        base_ref: "origin/main".into(),
        base_branch: "main".into(),
        files: vec![(PathBuf::from(STACK_FILE), text.into())],
        message: "Scale web to 5\n\nRaises the web tier's count.".into(),
        title: "Scale web to 5".into(),
        body: body.into(),
    }
}

fn scaled(n: u32) -> String {
    ORIGINAL.replace("count = 3", &format!("count = {n}"))
}

async fn published(setup: &Setup, forge: &dyn Forge, text: &str, body: &str) -> Published {
    publish(&setup.repo().await, forge, &change(text, body))
        .await
        .unwrap()
}

async fn failed(setup: &Setup, forge: &dyn Forge) -> String {
    failed_with(setup, forge, &scaled(5)).await
}

async fn failed_with(setup: &Setup, forge: &dyn Forge, text: &str) -> String {
    match publish(&setup.repo().await, forge, &change(text, "body")).await {
        Ok(p) => panic!("publishing should have failed, got {p:?}"),
        Err(e) => {
            assert!(matches!(e, AgentError::Forge(_)), "{e:?}");
            e.to_string()
        }
    }
}

#[tokio::test]
async fn a_change_becomes_a_branch_a_commit_and_a_pull_request() {
    let s = Setup::new();
    let branch = branch_for(INTENT);
    assert_eq!(branch, "chimera/agent/scale-web-to-5");
    let p = published(
        &s,
        &s.github(),
        &scaled(5),
        "## Intent\n\n> scale web to 5\n",
    )
    .await;

    assert!(p.pr.created && p.pushed && p.commit.created);
    assert_eq!(p.branch, branch);
    let pulls = s.fake.pulls();
    assert_eq!(pulls.len(), 1);
    let pr = &pulls[0];
    assert_eq!(p.pr.number, pr.number);
    assert_eq!(
        p.pr.url,
        format!("{}/acme/infra/pull/{}", s.fake.api_url(), pr.number)
    );
    assert_eq!(
        (pr.head.as_str(), pr.base.as_str()),
        (branch.as_str(), "main")
    );
    assert_eq!(pr.title, "Scale web to 5");
    assert_eq!(pr.body, "## Intent\n\n> scale web to 5\n");
    assert_eq!(pr.state, FakeState::Open);

    // The bare repository holds the branch: one commit by the agent on top of main, with the
    // new file and everything else as it was.
    assert_eq!(
        s.fake.branch_tip(&branch).as_deref(),
        Some(p.commit.id.as_str())
    );
    assert_eq!(
        s.fake.git(&["show", &format!("{branch}:{STACK_FILE}")]),
        scaled(5).trim()
    );
    assert_eq!(
        s.fake.git(&["show", &format!("{branch}:README.md")]),
        "# infra"
    );
    assert_eq!(
        s.fake.git(&["rev-parse", &format!("{branch}^")]),
        s.main_tip()
    );
    assert_eq!(
        s.fake.git(&["log", "-1", "--format=%an <%ae>|%s", &branch]),
        "Chimera Agent <agent@chimera.invalid>|Scale web to 5"
    );
    // main did not move.
    assert_eq!(s.fake.branches(), ["chimera/agent/scale-web-to-5", "main"]);
}

#[tokio::test]
async fn a_rerun_updates_the_same_branch_and_pull_request() {
    let s = Setup::new();
    let github = s.github();
    let first = published(&s, &github, &scaled(5), "first body").await;
    let second = published(&s, &github, &scaled(6), "second body").await;

    assert_eq!(second.pr.number, first.pr.number);
    assert!(!second.pr.created && second.pushed && second.commit.created);
    assert_eq!(s.fake.pulls().len(), 1, "no second pull request");
    let pr = s.fake.pull(first.pr.number).unwrap();
    assert_eq!(pr.body, "second body");
    // The branch moved to the new commit, still one commit on main.
    let branch = branch_for(INTENT);
    assert_ne!(second.commit.id, first.commit.id);
    assert_eq!(s.fake.branch_tip(&branch), Some(second.commit.id.clone()));
    assert_eq!(
        s.fake.git(&["rev-parse", &format!("{branch}^")]),
        s.main_tip()
    );
    assert_eq!(
        s.fake.git(&["show", &format!("{branch}:{STACK_FILE}")]),
        scaled(6).trim()
    );
    // The second open was GitHub's duplicate 422, then the open one was found and updated.
    let calls: Vec<String> = s
        .fake
        .calls()
        .iter()
        .map(|(m, p)| format!("{m} {p}"))
        .collect();
    assert_eq!(
        calls,
        [
            "POST /repos/acme/infra/pulls",
            "POST /repos/acme/infra/pulls",
            "GET /repos/acme/infra/pulls",
            format!("PATCH /repos/acme/infra/pulls/{}", first.pr.number).as_str(),
        ]
    );

    // The same change a third time: no new commit, nothing pushed, the same pull request.
    let third = published(&s, &github, &scaled(6), "second body").await;
    assert_eq!(third.commit.id, second.commit.id);
    assert!(!third.commit.created && !third.pushed && !third.pr.created);
    assert_eq!(third.pr.number, first.pr.number);
    assert_eq!(s.fake.pulls().len(), 1);
}

#[tokio::test]
async fn a_duplicate_pull_request_is_updated_not_refused() {
    let s = Setup::new();
    let github = s.github();
    // The branch is on the remote and a pull request is open for it, made by an earlier run.
    let p = published(&s, &github, &scaled(5), "old").await;
    let request = PrRequest {
        head: p.branch.clone(),
        base: "main".into(),
        title: "New title".into(),
        body: "new body".into(),
    };
    let pr = github.open_or_update(&request).await.unwrap();
    assert_eq!(pr.number, p.pr.number);
    assert!(!pr.created);
    let held = s.fake.pull(pr.number).unwrap();
    assert_eq!(
        (held.title.as_str(), held.body.as_str()),
        ("New title", "new body")
    );
    assert_eq!(s.fake.pulls().len(), 1);

    // Once that one is closed, the same head opens a new one.
    s.fake.set_closed(pr.number);
    let again = github.open_or_update(&request).await.unwrap();
    assert!(again.created);
    assert_ne!(again.number, pr.number);
}

#[tokio::test]
async fn the_users_working_tree_and_index_are_untouched() {
    let s = Setup::new();
    // A checkout with work in progress: an unstaged edit of the very file the agent changes,
    // a staged edit of another, an untracked file.
    std::fs::write(s.work.join(STACK_FILE), "# the user's own edit\n").unwrap();
    std::fs::write(s.work.join("README.md"), "# infra, staged\n").unwrap();
    git(&s.work, &["add", "README.md"]);
    std::fs::write(s.work.join("notes.txt"), "untracked\n").unwrap();
    let look = || {
        (
            git(&s.work, &["status", "--porcelain=v2", "--branch"]),
            git(&s.work, &["diff"]),
            git(&s.work, &["diff", "--cached"]),
            git(&s.work, &["symbolic-ref", "HEAD"]),
            git(&s.work, &["rev-parse", "HEAD"]),
            std::fs::read(s.work.join(".git/index")).unwrap(),
            std::fs::read_to_string(s.work.join(STACK_FILE)).unwrap(),
            git(&s.work, &["stash", "list"]),
        )
    };
    let before = look();
    let p = published(&s, &s.github(), &scaled(5), "body").await;
    published(&s, &s.github(), &scaled(7), "body").await;
    assert_eq!(look(), before);
    // The commit exists in the working repository too, on the agent branch only.
    assert!(p.commit.created);
    assert_eq!(
        git(&s.work, &["show", &format!("{}:{STACK_FILE}", p.branch)]),
        scaled(7).trim()
    );
    assert_eq!(git(&s.work, &["rev-parse", "main"]), s.main_tip());
}

#[tokio::test]
async fn no_forge_commits_locally_and_pushes_nothing() {
    let s = Setup::new();
    let p = published(&s, &NoForge, &scaled(5), "body").await;
    assert_eq!(p.pr.number, 0);
    assert!(!p.pr.created && !p.pushed && p.commit.created);
    assert_eq!(p.pr.url, "(local branch chimera/agent/scale-web-to-5)");
    assert_eq!(
        git(
            &s.work,
            &["rev-parse", "refs/heads/chimera/agent/scale-web-to-5"]
        ),
        p.commit.id
    );
    assert_eq!(
        git(&s.work, &["show", &format!("{}:{STACK_FILE}", p.branch)]),
        scaled(5).trim()
    );
    // Nothing reached the remote or the API.
    assert_eq!(s.fake.branches(), ["main"]);
    assert!(s.fake.calls().is_empty());
    // No pull request to ask about.
    let err = NoForge.state(1).await.unwrap_err().to_string();
    assert!(err.contains("--forge none"), "{err}");
}

#[tokio::test]
async fn a_rejected_token_is_a_clear_error_without_the_token_or_a_branch() {
    let s = Setup::new();
    let secret = "ghp_notTheRightToken0123456789";
    let github = GitHub::new(&s.fake.repo(), secret)
        .unwrap()
        .with_api_url(s.fake.api_url())
        .unwrap()
        .with_retry(fast())
        .unwrap();
    let err = failed(&s, &github).await;
    assert!(err.contains("401"), "{err}");
    assert!(err.contains("Bad credentials"), "{err}");
    assert!(err.contains(TOKEN_ENV), "{err}");
    assert!(!err.contains(secret), "{err}");
    assert!(err.contains("deleted from the remote again"), "{err}");
    assert_eq!(s.opens(), 1, "no retry");
    assert_eq!(s.fake.branches(), ["main"], "no orphan branch");
    assert!(s.fake.pulls().is_empty());
}

#[tokio::test]
async fn a_forbidden_repository_is_a_clear_error_and_no_retry() {
    let s = Setup::new();
    s.fake.fail_next(403, 1, None);
    let err = failed(&s, &s.github()).await;
    assert!(err.contains("403"), "{err}");
    assert!(err.contains("Resource not accessible"), "{err}");
    assert!(err.contains("lacks rights on acme/infra"), "{err}");
    assert!(!err.contains(s.fake.token()), "{err}");
    assert_eq!(s.opens(), 1, "no retry");
    assert_eq!(s.fake.branches(), ["main"], "no orphan branch");
}

#[tokio::test]
async fn a_missing_repository_is_a_clear_error_and_no_retry() {
    let s = Setup::new();
    // The git remote is right, but the API is asked about another repository.
    let github = GitHub::new("acme/elsewhere", s.fake.token())
        .unwrap()
        .with_api_url(s.fake.api_url())
        .unwrap()
        .with_retry(fast())
        .unwrap();
    let err = failed(&s, &github).await;
    assert!(err.contains("404"), "{err}");
    assert!(err.contains("acme/elsewhere does not exist"), "{err}");
    assert!(!err.contains(s.fake.token()), "{err}");
    assert_eq!(s.fake.calls().len(), 1, "no retry");
    assert_eq!(s.fake.branches(), ["main"], "no orphan branch");
}

#[tokio::test]
async fn a_rate_limit_waits_as_long_as_retry_after_says_and_succeeds() {
    let s = Setup::new();
    s.fake.fail_next(429, 1, Some(1));
    let started = Instant::now();
    let p = published(&s, &s.github(), &scaled(5), "body").await;
    assert!(p.pr.created);
    assert_eq!(s.opens(), 2);
    // It waited what GitHub asked, not the 10 ms backoff.
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert_eq!(s.fake.pulls().len(), 1);
}

#[tokio::test]
async fn a_primary_rate_limit_403_is_retried_too() {
    let s = Setup::new();
    s.fake.fail_next(403, 1, Some(1));
    let p = published(&s, &s.github(), &scaled(5), "body").await;
    assert!(p.pr.created);
    assert_eq!(s.opens(), 2);
}

#[tokio::test]
async fn a_rate_limit_longer_than_the_wait_fails_at_once() {
    let s = Setup::new();
    s.fake.fail_next(429, 1, Some(3600));
    let err = failed(&s, &s.github()).await;
    assert!(err.contains("429"), "{err}");
    assert!(err.contains("3600 s"), "{err}");
    assert_eq!(s.opens(), 1);
    assert_eq!(s.fake.branches(), ["main"]);
}

#[tokio::test]
async fn server_errors_are_retried_a_bounded_number_of_times() {
    let s = Setup::new();
    // Two failures, then it works.
    s.fake.fail_next(503, 2, None);
    let p = published(&s, &s.github(), &scaled(5), "body").await;
    assert!(p.pr.created);
    assert_eq!(s.opens(), 3);

    // Failing for good: four attempts (three retries), a clear error, and the branch this
    // run pushed is deleted again.
    let s = Setup::new();
    s.fake.fail_next(502, 100, None);
    let err = failed(&s, &s.github()).await;
    assert!(err.contains("502"), "{err}");
    assert!(err.contains("4 attempts"), "{err}");
    assert!(err.contains("deleted from the remote again"), "{err}");
    assert!(!err.contains(s.fake.token()), "{err}");
    assert_eq!(s.opens(), 4);
    assert_eq!(s.fake.branches(), ["main"], "no orphan branch");
    // It stays in the local repository, for the user to look at.
    assert!(
        git(
            &s.work,
            &["branch", "--list", "chimera/agent/scale-web-to-5"]
        )
        .contains("scale-web-to-5")
    );
}

#[tokio::test]
async fn a_branch_that_already_had_a_pull_request_is_kept_when_an_update_fails() {
    let s = Setup::new();
    let first = published(&s, &s.github(), &scaled(5), "body").await;
    s.fake.fail_next(500, 100, None);
    let err = failed_with(&s, &s.github(), &scaled(6)).await;
    assert!(err.contains("500"), "{err}");
    assert!(!err.contains("deleted"), "{err}");
    // The branch (moved to the new commit) and its pull request are still there.
    let branch = branch_for(INTENT);
    assert!(s.fake.branches().contains(&branch));
    assert_ne!(s.fake.branch_tip(&branch), Some(first.commit.id));
    assert_eq!(s.fake.pulls().len(), 1);
}

#[tokio::test]
async fn a_branch_someone_else_pushed_to_is_not_overwritten() {
    let s = Setup::new();
    let first = published(&s, &s.github(), &scaled(5), "body").await;
    // A reviewer pushes a fix-up onto the agent branch from another clone.
    let other = s.dirs.path().join("other");
    let remote = s.fake.remote_path().to_str().unwrap();
    git(
        s.dirs.path(),
        &[
            "clone",
            "--quiet",
            "--branch",
            &first.branch,
            remote,
            other.to_str().unwrap(),
        ],
    );
    std::fs::write(other.join(STACK_FILE), scaled(9)).unwrap();
    git(&other, &["commit", "--quiet", "-am", "reviewer's fix-up"]);
    git(&other, &["push", "--quiet", "origin", &first.branch]);
    let theirs = s.fake.branch_tip(&first.branch).unwrap();

    let err = publish(&s.repo().await, &s.github(), &change(&scaled(6), "body"))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("someone else pushed to it"), "{err}");
    assert_eq!(s.fake.branch_tip(&first.branch), Some(theirs));
}

#[tokio::test]
async fn long_bodies_and_comments_are_cut_with_a_note() {
    let s = Setup::new();
    let github = s.github();
    let line = "| ~ | aws.instance.web-0 | size: small → large |\n";
    let long = format!("## Plan\n\n{}", line.repeat(2_000));
    assert!(long.chars().count() > BODY_LIMIT);
    let p = published(&s, &github, &scaled(5), &long).await;
    // The fake refuses anything over the limit, so the pull request exists only if it fit.
    let body = s.fake.pull(p.pr.number).unwrap().body;
    assert!(body.chars().count() <= BODY_LIMIT);
    assert!(body.starts_with("## Plan\n\n| ~ |"));
    let note = body.lines().last().unwrap();
    assert!(
        note.starts_with("… (truncated: ") && note.ends_with(" characters omitted)"),
        "{note}"
    );
    let omitted: usize = note
        .trim_start_matches("… (truncated: ")
        .trim_end_matches(" characters omitted)")
        .parse()
        .unwrap();
    // What was kept, the blank line before the note, and what was omitted make up the whole.
    assert_eq!(
        body.chars().count() - note.chars().count() - 2 + omitted,
        long.chars().count()
    );

    github.comment(p.pr.number, &long).await.unwrap();
    github.comment(p.pr.number, "short").await.unwrap();
    let exact = "x".repeat(BODY_LIMIT);
    github.comment(p.pr.number, &exact).await.unwrap();
    let comments = s.fake.comments();
    assert_eq!(comments.len(), 3);
    assert!(comments.iter().all(|c| c.number == p.pr.number));
    assert!(comments[0].body.chars().count() <= BODY_LIMIT);
    assert!(comments[0].body.ends_with(" characters omitted)"));
    assert_eq!(comments[1].body, "short");
    assert_eq!(
        comments[2].body, exact,
        "a comment at the limit is kept whole"
    );
}

#[tokio::test]
async fn pull_request_states() {
    let s = Setup::new();
    let github = s.github();
    let p = published(&s, &github, &scaled(5), "body").await;
    assert_eq!(github.state(p.pr.number).await.unwrap(), PrState::Open);
    s.fake.set_merged(p.pr.number);
    assert_eq!(github.state(p.pr.number).await.unwrap(), PrState::Merged);
    s.fake.set_closed(p.pr.number);
    assert_eq!(github.state(p.pr.number).await.unwrap(), PrState::Closed);

    let err = github.state(99).await.unwrap_err().to_string();
    assert!(err.contains("#99") && err.contains("404"), "{err}");
    let err = github.comment(99, "hi").await.unwrap_err().to_string();
    assert!(err.contains("#99") && err.contains("404"), "{err}");
}

#[tokio::test]
async fn github_enterprise_and_the_token_come_from_the_environment() {
    let s = Setup::new();
    let api = format!("{}/api/v3/", s.fake.api_url());
    let token = s.fake.token().to_string();
    let env = |k: &str| match k {
        "GITHUB_TOKEN" => Some(token.clone()),
        "GITHUB_API_URL" => Some(api.clone()),
        _ => None,
    };
    let github = GitHub::from_lookup(&s.fake.repo(), None, env)
        .unwrap()
        .with_retry(fast())
        .unwrap();
    assert_eq!(github.api_url(), format!("{}/api/v3", s.fake.api_url()));
    let p = published(&s, &github, &scaled(5), "body").await;
    assert!(p.pr.created);
    assert_eq!(
        s.fake.calls()[0],
        (
            "POST".to_string(),
            "/api/v3/repos/acme/infra/pulls".to_string()
        )
    );

    // No token: a clear error naming the variable and the way out.
    let err = GitHub::from_lookup(&s.fake.repo(), None, |_| None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("GITHUB_TOKEN is not set") && err.contains("--forge none"),
        "{err}"
    );
}

#[tokio::test]
async fn nothing_to_commit_is_an_error_and_pushes_nothing() {
    let s = Setup::new();
    let err = publish(&s.repo().await, &s.github(), &change(ORIGINAL, "body"))
        .await
        .unwrap_err();
    assert!(matches!(err, AgentError::Git(_)), "{err:?}");
    assert!(err.to_string().contains("nothing to commit"), "{err}");
    assert_eq!(s.fake.branches(), ["main"]);
    assert!(s.fake.calls().is_empty());
}
