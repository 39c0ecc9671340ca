//! The secret scan: a stack with a known secret in `user_data` goes through every output
//! Chimera writes — plans as text, JSON and Markdown, `eval` and `graph`, saved plan files,
//! state dumps and history, the daemon's JSON logs, API and dashboard, an agent's pull request
//! on the fake forge, diagnostics — and the secret's bytes appear in none of them, nor in any
//! file under the stack's directory or the state database (docs/security.md). Excluded: the
//! user's own sources (`*.ncl`, and git, which holds them) and the local simulator's cloud file,
//! which is the cloud.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use chimera_testkit::forge::FakeForge;
use chimera_testkit::git;
use common::serve::{Daemon, chimera_env, webapp_dir};

const SECRET: &str = "canary-51c0ff-secret-scan";

/// The webapp example with `SECRET` in every instance's `user_data`, in a git repository.
fn stack() -> tempfile::TempDir {
    let dir = webapp_dir();
    let main = dir.path().join("main.ncl");
    let src = std::fs::read_to_string(&main).unwrap();
    let start = src.find("user_data = \"").expect("webapp has user_data") + "user_data = \"".len();
    let end = start + src[start..].find('"').unwrap();
    std::fs::write(
        &main,
        format!(
            "{}#!/bin/sh\\necho {SECRET} web-%{{std.to_string i}}\\n{}",
            &src[..start],
            &src[end..]
        ),
    )
    .unwrap();
    std::fs::write(dir.path().join(".gitignore"), ".chimera/\n*.plan\n").unwrap();
    git(dir.path(), &["init", "--quiet", "--initial-branch=main"]);
    git(dir.path(), &["add", "."]);
    git(
        dir.path(),
        &["commit", "--quiet", "-m", "webapp with a secret"],
    );
    dir
}

/// Everything seen, by where it came from.
#[derive(Default)]
struct Seen(Vec<(String, Vec<u8>)>);

impl Seen {
    fn add(&mut self, what: impl Into<String>, bytes: impl Into<Vec<u8>>) {
        self.0.push((what.into(), bytes.into()));
    }

    fn output(&mut self, what: &str, o: &Output) {
        self.add(format!("{what} (stdout)"), o.stdout.clone());
        self.add(format!("{what} (stderr)"), o.stderr.clone());
    }

    /// Every file under `dir` but the user's sources and the local cloud's file.
    fn files(&mut self, dir: &Path) {
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                let p = e.path();
                let name = e.file_name().to_string_lossy().into_owned();
                if p.is_dir() {
                    if name != ".git" {
                        stack.push(p);
                    }
                    continue;
                }
                if name.ends_with(".ncl") || name.starts_with("local-cloud.db") {
                    continue;
                }
                self.add(p.display().to_string(), std::fs::read(&p).unwrap());
            }
        }
    }

    /// Where the secret was found.
    fn leaks(&self) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(_, b)| b.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()))
            .map(|(w, _)| w.as_str())
            .collect()
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn key_file(dir: &Path) -> PathBuf {
    let path = dir.join("chimera.key");
    std::fs::write(&path, chimera_seal::Key::generate().unwrap()).unwrap();
    path
}

fn cache_graphs(dir: &Path) -> Vec<Vec<u8>> {
    std::fs::read_dir(dir.join(".chimera/cache"))
        .map(|r| {
            r.flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".graph.json"))
                .map(|e| std::fs::read(e.path()).unwrap())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn no_output_and_no_file_holds_the_secret_with_a_key() {
    let dir = stack();
    let d = dir.path();
    let keys = tempfile::tempdir().unwrap();
    let key = key_file(keys.path()).display().to_string();
    let env = [("CHIMERA_KEY_FILE", key.as_str())];
    let mut seen = Seen::default();
    let run = |seen: &mut Seen, args: &[&str]| {
        let o = chimera_env(d, args, &env);
        seen.output(&args.join(" "), &o);
        o
    };

    for args in [
        &["check", "."][..],
        &["eval", ".", "--json"],
        &["graph", ".", "--format", "json"],
        &["plan", "."],
        &["plan", ".", "--format", "json"],
        &["plan", ".", "--format", "markdown"],
        &["cost", ".", "--format", "json"],
        &["preview", "--base", "HEAD", "."],
    ] {
        let o = run(&mut seen, args);
        assert!(o.status.success(), "{args:?}: {}", text(&o));
    }
    let o = run(&mut seen, &["plan", ".", "--out", "saved.plan"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(chimera_seal::is_sealed(
        &std::fs::read(d.join("saved.plan")).unwrap()
    ));
    let o = run(&mut seen, &["apply", "saved.plan"]);
    assert!(o.status.success(), "{}", text(&o));
    // A size change, then back: the rollback restores the secret from state, sealed.
    let main = d.join("main.ncl");
    let src = std::fs::read_to_string(&main).unwrap();
    std::fs::write(
        &main,
        src.replace(
            "web_size | default = 'small",
            "web_size | default = 'medium",
        ),
    )
    .unwrap();
    let o = run(&mut seen, &["apply", "-y", "."]);
    assert!(o.status.success(), "{}", text(&o));
    std::fs::write(&main, &src).unwrap();
    for args in [
        &["rollback", "1", "-y", "."][..],
        &["state", "pull", "."],
        &["state", "list", "."],
        &["state", "show", "instance.web-0", "."],
        &["history", "."],
        &["plan", ".", "--error-format", "json", "--detailed-exitcode"],
    ] {
        let o = run(&mut seen, args);
        assert!(o.status.code() != Some(1), "{args:?}: {}", text(&o));
    }
    // Diagnostics about sealed data name keys, never values.
    let wrong_keys = tempfile::tempdir().unwrap();
    let wrong = key_file(wrong_keys.path()).display().to_string();
    let o = chimera_env(
        d,
        &["apply", "saved.plan", "--error-format", "json"],
        &[("CHIMERA_KEY_FILE", wrong.as_str())],
    );
    assert!(text(&o).contains("E0802"), "{}", text(&o));
    seen.output("apply with another key", &o);

    // The daemon: JSON logs, the API, the dashboard, with drift to report (in mode `report`
    // it makes no plan, so `/plan` is not served; plans' JSON is scanned above).
    let o = run(
        &mut seen,
        &["local", "mutate", "instance.web-1", "--delete", "."],
    );
    assert!(o.status.success(), "{}", text(&o));
    let daemon = Daemon::start(
        d,
        &[
            ".",
            "--heal",
            "report",
            "--interval",
            "0.3",
            "--log-format",
            "json",
        ],
        &env,
    );
    let status = daemon.wait_for(|s| s["outcome"] == "drifted");
    let name = status["stack"].as_str().unwrap().to_string();
    for route in [
        "/api/stacks".to_string(),
        format!("/api/stacks/{name}"),
        format!("/api/stacks/{name}/generations"),
        format!("/api/stacks/{name}/drift"),
        format!("/api/stacks/{name}/cost"),
        format!("/api/stacks/{name}/audit"),
        format!("/api/stacks/{name}/graph"),
        format!("/api/stacks/{name}/events"),
        "/api/circuits".to_string(),
        "/metrics".to_string(),
        "/".to_string(),
    ] {
        let body = daemon.get(&route);
        seen.add(format!("GET {route}"), body);
    }
    let logs = daemon.logs.lock().unwrap().join("\n");
    assert!(logs.contains('{'), "JSON logs: {logs}");
    seen.add("serve logs", logs);
    daemon.terminate();

    // An agent's pull request on the fake forge (body, branch pushed, memory).
    let forge = FakeForge::start();
    let remote = forge.remote_path().display().to_string();
    git(d, &["remote", "add", "origin", &remote]);
    git(d, &["push", "--quiet", "origin", "main"]);
    git(d, &["fetch", "--quiet", "origin"]);
    let repo = forge.repo();
    let o = chimera_env(
        d,
        &[
            "agent",
            "propose",
            "scale web to 4",
            ".",
            "--forge",
            "github",
            "--repo",
            &repo,
            "--forge-url",
            forge.api_url(),
        ],
        &[
            ("CHIMERA_KEY_FILE", key.as_str()),
            ("GITHUB_TOKEN", forge.token()),
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    seen.output("agent propose", &o);
    let pulls = forge.pulls();
    assert_eq!(pulls.len(), 1, "one pull request");
    for p in &pulls {
        seen.add(format!("pull request #{} title", p.number), p.title.clone());
        seen.add(format!("pull request #{} body", p.number), p.body.clone());
    }
    for c in forge.comments() {
        seen.add("pull request comment", format!("{c:?}"));
    }

    // Files: the cache's graphs are sealed, the plan file too, and nothing holds the secret.
    let graphs = cache_graphs(d);
    assert!(!graphs.is_empty(), "the stack is cached (sealed)");
    assert!(graphs.iter().all(|g| chimera_seal::is_sealed(g)));
    assert!(d.join(".chimera/state.db").exists());
    seen.files(d);
    assert!(seen.0.len() > 60, "{} outputs scanned", seen.0.len());
    assert_eq!(seen.leaks(), Vec::<&str>::new(), "the secret leaked");
}

#[test]
fn without_a_key_nothing_secret_is_written_and_nothing_is_cached() {
    let dir = stack();
    let d = dir.path();
    let mut seen = Seen::default();
    for args in [
        &["apply", "-y", "."][..],
        &["plan", "."],
        &["state", "pull", "."],
    ] {
        let o = chimera_env(d, args, &[]);
        assert!(o.status.success(), "{args:?}: {}", text(&o));
        seen.output(&args.join(" "), &o);
    }
    let o = chimera_env(d, &["plan", ".", "--out", "saved.plan"], &[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("E0801"), "{}", text(&o));
    seen.output("plan --out without a key", &o);
    assert!(!d.join("saved.plan").exists());
    assert!(
        cache_graphs(d).is_empty(),
        "a graph with a secret is not cached"
    );
    seen.files(d);
    assert_eq!(seen.leaks(), Vec::<&str>::new(), "the secret leaked");
}
