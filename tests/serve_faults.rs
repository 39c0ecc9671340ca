//! `chimera serve` under faults and with its controls, as processes: kill -9 in the middle of a
//! heal, two daemons on one stack, a stack that stops compiling, PostgreSQL restarted under the
//! daemon, two replicas sharing four stacks on PostgreSQL (one killed), a resource whose heal
//! keeps failing (backoff, parked, released), pause and resume through `chimera ctl`, JSON
//! logs, and GitOps following a branch.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use chimera_testkit::Postgres;
use common::serve::{Daemon, chimera, ok, samples, webapp_dir};

/// How many resources the stack's local cloud holds.
fn inventory(dir: &Path) -> usize {
    ok(&chimera(dir, &["local", "list", "."])).lines().count()
}

fn history(dir: &Path, state: &[&str]) -> String {
    let mut args = vec!["history", "."];
    args.extend_from_slice(state);
    ok(&chimera(dir, &args))
}

fn mutate(dir: &Path, args: &[&str]) {
    mutate_in(dir, args, &[]);
}

fn mutate_in(dir: &Path, args: &[&str], state: &[&str]) {
    let mut a = vec!["local", "mutate"];
    a.extend_from_slice(args);
    a.push(".");
    a.extend_from_slice(state);
    ok(&chimera(dir, &a));
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(150));
    }
}

fn converged(dir: &Path, state: &[&str]) -> bool {
    let mut args = vec!["plan", ".", "--detailed-exitcode"];
    args.extend_from_slice(state);
    chimera(dir, &args).status.code() == Some(0)
}

/// The state flags of a case: none (SQLite beside the stack), or a new database on `pg`.
fn state_of(pg: Option<&Postgres>, name: &str) -> Vec<String> {
    pg.map(|p| vec!["--state".to_string(), p.database(name)])
        .unwrap_or_default()
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// `chimera serve . ARGS STATE`.
fn serve(dir: &Path, args: &[&str], state: &[&str], env: &[(&str, &str)]) -> Daemon {
    let mut a = vec!["."];
    a.extend_from_slice(args);
    a.extend_from_slice(state);
    Daemon::start(dir, &a, env)
}

fn apply(dir: &Path, state: &[&str]) {
    let mut a = vec!["apply", ".", "-y"];
    a.extend_from_slice(state);
    ok(&chimera(dir, &a));
}

fn kill_9_in_the_middle_of_a_heal(pg: Option<&Postgres>) {
    let state = state_of(pg, "kill9");
    let state = strs(&state);
    let dir = webapp_dir();
    apply(dir.path(), &state);
    mutate_in(dir.path(), &["instance.web-1", "--delete"], &state);
    mutate_in(dir.path(), &["instance.web-2", "--delete"], &state);
    // Every provider call takes 1.5 s: the create is in flight when the daemon dies.
    let slow = [("CHIMERA_LOCAL_LATENCY_MS", "1500")];
    let args = ["--heal", "auto", "--interval", "0.2"];
    let daemon = serve(dir.path(), &args, &state, &slow);
    wait_until("the heal's first create to start", || {
        daemon
            .log_text()
            .lines()
            .any(|l| l.contains("instance.web-") && l.contains("create") && l.contains("started"))
    });
    std::thread::sleep(Duration::from_millis(300));
    daemon.kill();
    assert!(inventory(dir.path()) <= 8);

    // On restart the pending intents are resolved first, then the stack converges.
    let daemon = serve(dir.path(), &args, &state, &[]);
    daemon.wait_for(|s| s["outcome"] == "in-sync" && s["ticks"].as_u64() >= Some(1));
    assert_eq!(daemon.terminate(), 0);
    assert_eq!(
        inventory(dir.path()),
        8,
        "every instance once: no duplicate, none missing"
    );
    assert!(converged(dir.path(), &state));
}

#[test]
fn kill_9_in_the_middle_of_a_heal_then_a_restart_converges_without_duplicates() {
    kill_9_in_the_middle_of_a_heal(None);
}

#[test]
fn kill_9_in_the_middle_of_a_heal_on_postgresql() {
    kill_9_in_the_middle_of_a_heal(Some(&Postgres::start(false)));
}

fn two_daemons_on_one_stack(pg: Option<&Postgres>) {
    let state = state_of(pg, "two");
    let state = strs(&state);
    let dir = webapp_dir();
    apply(dir.path(), &state);
    let generations = history(dir.path(), &state).lines().count();
    mutate_in(dir.path(), &["instance.web-1", "--delete"], &state);
    let slow = [("CHIMERA_LOCAL_LATENCY_MS", "300")];
    let args = ["--heal", "auto", "--interval", "0"];
    let a = serve(dir.path(), &args, &state, &slow);
    let b = serve(dir.path(), &args, &state, &slow);
    let waits = |d: &Daemon| -> f64 {
        samples(&d.get("/metrics"), "chimera_lock_waits_total")
            .iter()
            .map(|(_, v)| v)
            .sum()
    };
    wait_until("one daemon to wait for the other", || {
        waits(&a) + waits(&b) > 0.0
    });
    let logs = format!("{}\n{}", a.log_text(), b.log_text());
    assert!(
        logs.contains("another reconciler holds the stack"),
        "{logs}"
    );
    wait_until("the heal", || inventory(dir.path()) == 8);
    // A few more rounds of both, then stop them.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(a.terminate(), 0);
    assert_eq!(b.terminate(), 0);
    assert_eq!(inventory(dir.path()), 8, "healed once, not twice");
    let after = history(dir.path(), &state);
    assert_eq!(
        after.lines().count(),
        generations + 1,
        "one heal generation: {after}"
    );
}

#[test]
fn two_daemons_on_one_stack_one_works_and_the_other_waits() {
    two_daemons_on_one_stack(None);
}

#[test]
fn two_daemons_on_one_stack_on_postgresql() {
    two_daemons_on_one_stack(Some(&Postgres::start(false)));
}

fn a_stack_that_stops_compiling(pg: Option<&Postgres>) {
    let state = state_of(pg, "broken");
    let state = strs(&state);
    let dir = webapp_dir();
    apply(dir.path(), &state);
    let main = dir.path().join("main.ncl");
    let good = std::fs::read_to_string(&main).unwrap();
    let daemon = serve(
        dir.path(),
        &["--heal", "auto", "--interval", "0.2"],
        &state,
        &[],
    );
    daemon.wait_for(|s| s["outcome"] == "in-sync");
    // Drift while paused (`local mutate` compiles the stack: before it breaks), then the
    // stack stops compiling.
    ok(&chimera(
        dir.path(),
        &["ctl", "pause", "--url", &daemon.base],
    ));
    daemon.wait_for(|s| s["outcome"] == "paused");
    mutate_in(dir.path(), &["instance.web-1", "--delete"], &state);
    std::fs::write(&main, good.replace("cidr = \"10.0.1.0/24\"", "cidr = 10")).unwrap();
    ok(&chimera(
        dir.path(),
        &["ctl", "resume", "--url", &daemon.base],
    ));
    let failed = daemon.wait_for(|s| s["outcome"] == "failed");
    let errors = failed["errors"].to_string();
    assert!(
        errors.contains("main.ncl:"),
        "the diagnostics name the file and line: {errors}"
    );
    assert_eq!(failed["stack"], "webapp", "the last good state is kept");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        inventory(dir.path()),
        7,
        "nothing applied while it does not compile"
    );
    // Fixed: picked up at the next tick, and the drift is healed.
    std::fs::write(&main, &good).unwrap();
    daemon.wait_for(|s| s["outcome"] == "in-sync" && inventory(dir.path()) == 8);
    assert_eq!(daemon.terminate(), 0);
}

#[test]
fn a_stack_that_stops_compiling_keeps_its_state_and_says_where() {
    a_stack_that_stops_compiling(None);
}

#[test]
fn a_stack_that_stops_compiling_on_postgresql() {
    a_stack_that_stops_compiling(Some(&Postgres::start(false)));
}

#[test]
fn postgresql_restarted_under_the_daemon_means_backoff_then_resume() {
    let pg = Postgres::start(false);
    let url = pg.database("restart");
    let state = ["--state", url.as_str()];
    let dir = webapp_dir();
    ok(&chimera(dir.path(), &["apply", ".", "-y", "--state", &url]));
    let daemon = Daemon::start(
        dir.path(),
        &[".", "--heal", "auto", "--interval", "0.2", "--state", &url],
        &[],
    );
    daemon.wait_for(|s| s["outcome"] == "in-sync");
    // The drift goes in while the database is still up (`local mutate` reads the state).
    ok(&chimera(
        dir.path(),
        &["ctl", "pause", "--url", &daemon.base],
    ));
    daemon.wait_for(|s| s["outcome"] == "paused");
    mutate_in(dir.path(), &["instance.web-1", "--delete"], &state);
    pg.stop();
    ok(&chimera(
        dir.path(),
        &["ctl", "resume", "--url", &daemon.base],
    ));
    let down = daemon.wait_for(|s| s["outcome"] == "failed" || s["outcome"] == "backoff");
    assert!(!down["errors"].as_array().unwrap().is_empty(), "{down}");
    daemon.wait_for(|s| s["outcome"] == "backoff");
    assert_eq!(daemon.get("/healthz"), "ok\n", "still serving");
    pg.start_again();
    daemon.wait_for(|s| s["outcome"] == "in-sync" && inventory(dir.path()) == 8);
    assert_eq!(daemon.terminate(), 0);
    assert!(converged(dir.path(), &state));
}

#[test]
fn two_replicas_share_four_stacks_on_postgresql_and_one_takes_over_when_the_other_dies() {
    let pg = Postgres::start(false);
    let url = pg.database("replicas");
    let root = tempfile::tempdir().unwrap();
    let good = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/webapp/main.ncl"),
    )
    .unwrap();
    let names = ["app-1", "app-2", "app-3", "app-4"];
    for n in names {
        let d = root.path().join(n);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(
            d.join("main.ncl"),
            good.replace("stack = \"webapp\"", &format!("stack = \"{n}\"")),
        )
        .unwrap();
        ok(&chimera(&d, &["apply", ".", "-y", "--state", &url]));
    }
    let base = |replica: &'static str| -> Vec<String> {
        let mut a: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        a.extend(
            [
                "--heal",
                "auto",
                "--interval",
                "0.2",
                "--state",
                &url,
                "--replica",
                replica,
            ]
            .iter()
            .map(|s| s.to_string()),
        );
        a
    };
    let args1 = base("r1");
    let args2 = base("r2");
    let slow = [("CHIMERA_LOCAL_LATENCY_MS", "100")];
    let r1 = Daemon::start(
        root.path(),
        &args1.iter().map(String::as_str).collect::<Vec<_>>(),
        &slow,
    );
    let r2 = Daemon::start(
        root.path(),
        &args2.iter().map(String::as_str).collect::<Vec<_>>(),
        &slow,
    );
    let before: Vec<usize> = names
        .iter()
        .map(|n| {
            history(&root.path().join(n), &["--state", &url])
                .lines()
                .count()
        })
        .collect();
    for n in names {
        mutate_in(
            &root.path().join(n),
            &["instance.web-1", "--delete"],
            &["--state", &url],
        );
    }
    for n in names {
        wait_until(n, || inventory(&root.path().join(n)) == 8);
    }
    std::thread::sleep(Duration::from_secs(1));
    // Each stack was healed once: never by both replicas at the same time.
    for (i, n) in names.iter().enumerate() {
        let h = history(&root.path().join(n), &["--state", &url]);
        assert_eq!(h.lines().count(), before[i] + 1, "{n}: {h}");
    }
    // r1 dies; r2 heals everything from now on.
    r1.kill();
    for n in names {
        mutate_in(
            &root.path().join(n),
            &["instance.web-2", "--delete"],
            &["--state", &url],
        );
    }
    for n in names {
        wait_until(n, || inventory(&root.path().join(n)) == 8);
    }
    for n in names {
        let h = history(&root.path().join(n), &["--state", &url]);
        let last = h.lines().last().unwrap_or_default().to_string();
        assert!(last.contains("reconciler:r2"), "{n}: {h}");
    }
    assert_eq!(r2.terminate(), 0);
}

#[test]
fn a_resource_whose_heal_keeps_failing_is_parked_until_released_and_others_heal() {
    let dir = webapp_dir();
    let main = dir.path().join("main.ncl");
    let src = std::fs::read_to_string(&main).unwrap();
    // Subnets are only reported: a deleted subnet stays deleted, so creating an instance in
    // it fails every time.
    let at = src.rfind('}').unwrap();
    std::fs::write(
        &main,
        format!(
            "{}  reconcile = {{ overrides = {{ subnet = 'report }} }},\n{}",
            &src[..at],
            &src[at..]
        ),
    )
    .unwrap();
    ok(&chimera(dir.path(), &["apply", ".", "-y"]));
    mutate(dir.path(), &["instance.web-1", "--delete"]);
    mutate(dir.path(), &["subnet.public", "--delete"]);
    mutate(dir.path(), &["volume.data", "--set", "size_gib=10"]);
    let daemon = Daemon::start(
        dir.path(),
        &[
            ".",
            "--heal",
            "auto",
            "--interval",
            "0.2",
            "--max-failures",
            "2",
            "--log-format",
            "json",
        ],
        &[],
    );
    let wait_metric = |name: &str, want: f64| {
        wait_until(name, || {
            samples(&daemon.get("/metrics"), name)
                .iter()
                .map(|(_, v)| v)
                .sum::<f64>()
                >= want
        })
    };
    wait_metric("chimera_dead_letters", 1.0);
    let s = daemon.wait_for(|s| {
        s["outcome"] == "drifted" || s["outcome"] == "healed" || s["outcome"] == "failed"
    });
    assert_eq!(s["stack"], "webapp");
    // The others were healed meanwhile: only the parked instance and the reported subnet
    // are still drifted.
    daemon.wait_for(|s| {
        let mut d: Vec<&str> = s["drift"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|d| d[0].as_str())
            .collect();
        d.sort();
        d == ["instance.web-1", "subnet.public"]
    });
    // Parked: held back, not retried.
    let held = daemon.wait_for(|s| s["held"].as_array().is_some_and(|h| !h.is_empty()));
    assert_eq!(held["held"][0], "instance.web-1");
    // Every log line is one JSON object; the ones about the resource carry stack and address.
    let logs = daemon.log_text();
    let parked: Vec<serde_json::Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|v: &serde_json::Value| v["action"] == "park")
        .collect();
    assert_eq!(parked.len(), 1, "{logs}");
    assert_eq!(parked[0]["stack"], "webapp");
    assert_eq!(parked[0]["address"], "instance.web-1");
    assert!(
        logs.lines()
            .filter(|l| !l.trim().is_empty())
            .all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok())
    );

    // Released by a person, it fails again (the subnet is still gone) and is parked again.
    let out = ok(&chimera(
        dir.path(),
        &[
            "ctl",
            "release",
            "webapp",
            "instance.web-1",
            "--url",
            &daemon.base,
        ],
    ));
    assert!(out.contains("released instance.web-1"), "{out}");
    wait_until("parked again", || {
        daemon
            .log_text()
            .lines()
            .filter(|l| l.contains("\"action\":\"park\""))
            .count()
            >= 2
    });
    // Releasing what is not parked says so.
    let out = chimera(
        dir.path(),
        &[
            "ctl",
            "release",
            "webapp",
            "instance.web-0",
            "--url",
            &daemon.base,
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not parked"));
    assert_eq!(daemon.terminate(), 0);
}

#[test]
fn pause_and_resume_through_chimera_ctl() {
    let dir = webapp_dir();
    ok(&chimera(dir.path(), &["apply", ".", "-y"]));
    let daemon = Daemon::start(
        dir.path(),
        &[".", "--heal", "auto", "--interval", "0.2"],
        &[],
    );
    daemon.wait_for(|s| s["outcome"] == "in-sync");
    let out = ok(&chimera(
        dir.path(),
        &["ctl", "pause", "webapp", "--url", &daemon.base],
    ));
    assert!(out.contains("paused webapp"), "{out}");
    daemon.wait_for(|s| s["outcome"] == "paused");
    mutate(dir.path(), &["instance.web-1", "--delete"]);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(inventory(dir.path()), 7, "paused: not healed");
    let metrics = daemon.get("/metrics");
    assert!(
        samples(&metrics, "chimera_stack_paused")
            .iter()
            .any(|(_, v)| *v == 1.0),
        "{metrics}"
    );
    let status = ok(&chimera(
        dir.path(),
        &["ctl", "status", "--url", &daemon.base],
    ));
    assert!(status.contains("webapp: paused"), "{status}");
    ok(&chimera(
        dir.path(),
        &["ctl", "resume", "webapp", "--url", &daemon.base],
    ));
    daemon.wait_for(|s| s["outcome"] == "in-sync" && inventory(dir.path()) == 8);
    // A daemon that is not there: a clear error, exit 1.
    let out = chimera(dir.path(), &["ctl", "pause", "--url", "http://127.0.0.1:9"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach"));
    assert_eq!(daemon.terminate(), 0);
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@example.test",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn gitops_follows_a_branch_and_applies_what_is_merged() {
    let root = tempfile::tempdir().unwrap();
    let origin = root.path().join("origin.git");
    std::fs::create_dir_all(&origin).unwrap();
    git(&origin, &["init", "--bare", "-q"]);
    let author = root.path().join("author");
    git(
        root.path(),
        &["clone", "-q", origin.to_str().unwrap(), "author"],
    );
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/webapp/main.ncl"),
        author.join("main.ncl"),
    )
    .unwrap();
    std::fs::write(author.join(".gitignore"), ".chimera/\n").unwrap();
    git(&author, &["add", "."]);
    git(&author, &["commit", "-q", "-m", "webapp"]);
    git(&author, &["push", "-q", "origin", "HEAD:main"]);
    let deployed = root.path().join("deployed");
    git(
        root.path(),
        &[
            "clone",
            "-q",
            "-b",
            "main",
            origin.to_str().unwrap(),
            "deployed",
        ],
    );

    let daemon = Daemon::start(
        &deployed,
        &[
            ".",
            "--heal",
            "auto",
            "--gitops",
            "--follow",
            "main",
            "--interval",
            "0.2",
        ],
        &[],
    );
    // GitOps from an empty state: the configuration is applied.
    daemon.wait_for(|s| s["outcome"] == "in-sync" && s["generation"] == 1);
    assert_eq!(inventory(&deployed), 8);
    // A merged change is fetched, fast-forwarded and applied.
    let main = author.join("main.ncl");
    let changed = std::fs::read_to_string(&main)
        .unwrap()
        .replace("size_gib = 50", "size_gib = 60");
    std::fs::write(&main, changed).unwrap();
    git(&author, &["commit", "-q", "-am", "bigger data volume"]);
    git(&author, &["push", "-q", "origin", "HEAD:main"]);
    let head = git(&author, &["rev-parse", "--short", "HEAD"]);
    daemon.wait_for(|s| {
        s["commit"] == head.as_str() && s["generation"] == 2 && s["outcome"] == "in-sync"
    });
    assert_eq!(daemon.terminate(), 0);
    assert!(
        converged(&deployed, &[]),
        "the cloud matches the merged configuration"
    );
}
