//! `chimera agent` as a process: `heal` asks a running daemon to put drift back now (it never
//! applies itself) and adopts drift in a local branch; `propose` runs the offline planner and
//! commits on a local branch when no forge is configured.

mod common;

use std::path::Path;

use chimera_testkit::git;
use common::serve::{Daemon, chimera, ok, webapp_dir};

/// The webapp example, committed in a git repository and applied.
fn repo() -> tempfile::TempDir {
    let dir = webapp_dir();
    std::fs::write(dir.path().join(".gitignore"), ".chimera/\n").unwrap();
    git(dir.path(), &["init", "--quiet", "--initial-branch=main"]);
    git(dir.path(), &["add", "."]);
    git(dir.path(), &["commit", "--quiet", "-m", "webapp"]);
    ok(&chimera(dir.path(), &["apply", ".", "-y"]));
    dir
}

fn generations(dir: &Path) -> usize {
    ok(&chimera(dir, &["history", "."]))
        .lines()
        .filter(|l| l.trim_start().starts_with(|c: char| c.is_ascii_digit()))
        .count()
}

#[test]
fn heal_asks_the_running_daemon_to_put_drift_back_now() {
    let dir = repo();
    // A daemon that would not tick again for an hour on its own.
    let daemon = Daemon::start(
        dir.path(),
        &[".", "--heal", "auto", "--interval", "3600"],
        &[],
    );
    daemon.wait_for(|s| s["outcome"] == "in-sync");
    ok(&chimera(
        dir.path(),
        &["local", "mutate", "instance.web-1", "--delete", "."],
    ));
    let before = generations(dir.path());
    let out = chimera(
        dir.path(),
        &[
            "agent",
            "heal",
            ".",
            "--heal",
            "auto",
            "--daemon",
            &daemon.base,
            "--forge",
            "none",
        ],
    );
    let text = ok(&out);
    assert!(text.contains("instance.web-1: deleted"), "{text}");
    assert!(text.contains("re-apply by the daemon"), "{text}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Asked the daemon"), "{stderr}");
    // The agent applied nothing; the daemon heals at once, by its own gated path.
    let healed = daemon.wait_for(|s| s["outcome"] == "healed");
    assert!(healed["generation"].as_u64().is_some());
    assert!(generations(dir.path()) > before);
    let events = daemon.get("/api/stacks/webapp/events");
    assert!(events.contains("requested"), "{events}");
    assert_eq!(daemon.terminate(), 0);
}

#[test]
fn heal_in_propose_mode_adopts_the_live_value_on_a_local_branch() {
    let dir = repo();
    ok(&chimera(
        dir.path(),
        &[
            "local",
            "mutate",
            "subnet.public",
            "--set",
            "public=false",
            ".",
        ],
    ));
    let before = generations(dir.path());
    let out = chimera(
        dir.path(),
        &["agent", "heal", ".", "--heal", "propose", "--forge", "none"],
    );
    let text = ok(&out);
    assert!(text.contains("subnet.public: changed (public)"), "{text}");
    assert!(text.contains("adopt in a pull request"), "{text}");
    assert!(text.contains("## Intent"), "{text}");
    let branch = "chimera/agent/webapp-adopt-drift";
    let file = git(dir.path(), &["show", &format!("{branch}:main.ncl")]);
    assert!(file.contains("public = false"), "{file}");
    // The working tree is untouched and nothing was applied.
    assert!(
        std::fs::read_to_string(dir.path().join("main.ncl"))
            .unwrap()
            .contains("public = true")
    );
    assert_eq!(generations(dir.path()), before);
    // Still drifted: the agent adopts in a pull request, it does not heal.
    let plan = chimera(dir.path(), &["plan", ".", "--detailed-exitcode"]);
    assert_eq!(plan.status.code(), Some(2));
}

#[test]
fn propose_offline_without_a_forge_commits_locally_and_prints_the_body() {
    let dir = repo();
    let before = generations(dir.path());
    let out = chimera(
        dir.path(),
        &["agent", "propose", "scale web to 4", ".", "--forge", "none"],
    );
    let text = ok(&out);
    for part in [
        "## Intent",
        "> scale web to 4",
        "Verifier log",
        "Nothing was applied",
    ] {
        assert!(text.contains(part), "{part}: {text}");
    }
    let branches = git(dir.path(), &["branch", "--list", "chimera/agent/*"]);
    assert!(
        branches.contains("chimera/agent/webapp-scale-web-to-4"),
        "{branches}"
    );
    assert_eq!(generations(dir.path()), before);
    // The same intent again: the same branch, no second one.
    ok(&chimera(
        dir.path(),
        &["agent", "propose", "scale web to 4", ".", "--forge", "none"],
    ));
    let branches = git(dir.path(), &["branch", "--list", "chimera/agent/*"]);
    assert_eq!(branches.lines().count(), 1, "{branches}");
    // Something the planner does not know is refused plainly, with exit 1.
    let out = chimera(
        dir.path(),
        &["agent", "propose", "make it better", ".", "--forge", "none"],
    );
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn rightsize_reads_utilisation_from_the_local_cloud() {
    let dir = repo();
    for web in ["instance.web-0", "instance.web-1", "instance.web-2"] {
        ok(&chimera(
            dir.path(),
            &[
                "local",
                "mutate",
                web,
                "--set",
                "cpu_utilisation=8",
                "--set",
                "memory_utilisation=20",
                ".",
            ],
        ));
    }
    // Setting utilisation is not drift.
    let plan = chimera(dir.path(), &["plan", ".", "--detailed-exitcode"]);
    assert_eq!(plan.status.code(), Some(0));
    let text = ok(&chimera(
        dir.path(),
        &[
            "agent",
            "propose",
            "rightsize from utilisation",
            ".",
            "--forge",
            "none",
        ],
    ));
    assert!(text.contains("## Intent"), "{text}");
    let file = git(
        dir.path(),
        &[
            "show",
            "chimera/agent/webapp-rightsize-from-utilisation:main.ncl",
        ],
    );
    assert!(file.contains("web_size | default = 'micro"), "{file}");
}

#[test]
fn the_daemon_in_propose_mode_opens_one_adopting_change_per_drift() {
    let dir = repo();
    let daemon = Daemon::start(
        dir.path(),
        &[
            ".",
            "--heal",
            "propose",
            "--interval",
            "0.2",
            "--open-prs",
            "local",
        ],
        &[],
    );
    daemon.wait_for(|s| s["outcome"] == "in-sync");
    ok(&chimera(
        dir.path(),
        &[
            "local",
            "mutate",
            "subnet.public",
            "--set",
            "public=false",
            ".",
        ],
    ));
    let branch = "chimera/agent/webapp-adopt-drift";
    let start = std::time::Instant::now();
    let events = loop {
        let events = daemon.get("/api/stacks/webapp/events");
        if events.contains("\"proposed\"") || events.contains("propose-failed") {
            break events;
        }
        assert!(start.elapsed().as_secs() < 60, "{}", daemon.log_text());
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert!(events.contains(&format!("on {branch}")), "{events}");
    let tip = git(dir.path(), &["rev-parse", branch]);
    let file = git(dir.path(), &["show", &format!("{branch}:main.ncl")]);
    assert!(file.contains("public = false"), "{file}");
    // Later ticks see the same drift and leave the branch alone; nothing was applied.
    let ticks = daemon.status(None).unwrap()["ticks"].as_u64().unwrap();
    daemon.wait_for(|s| s["ticks"].as_u64() >= Some(ticks + 3));
    assert_eq!(git(dir.path(), &["rev-parse", branch]), tip);
    let proposed = daemon
        .get("/api/stacks/webapp/events")
        .matches("\"proposed\"")
        .count();
    assert_eq!(proposed, 1);
    assert_eq!(daemon.status(None).unwrap()["outcome"], "drifted");
    assert_eq!(daemon.terminate(), 0);
}
