//! The apply spine through the `chimera` binary: crash safety under kill -9, two writers,
//! and bad input around state and plan files.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

fn chimera(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_chimera"));
    c.args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .env_remove("CHIMERA_STATE");
    for (k, v) in env {
        c.env(k, v);
    }
    c
}

fn run(dir: &Path, args: &[&str]) -> Output {
    chimera(dir, args, &[]).output().expect("run chimera")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn fleet(count: usize, size: &str) -> String {
    format!(
        r#"let c = import "chimera.ncl" in
let net = c.Network & {{ name = "main", cidr = "10.0.0.0/16" }} in
let sn = c.Subnet & {{ name = "workers", network = net, cidr = "10.0.1.0/24" }} in
{{ stack = "crashy", resources = [net, sn] @ std.array.generate
  (fun i => c.Instance & {{ name = "w-%{{std.to_string i}}", size = '{size}, subnet = sn }}) {count} }}
"#
    )
}

/// (cloud objects by `chimera-address`, state addresses).
fn inventory(dir: &Path) -> (BTreeMap<String, usize>, Vec<String>) {
    let cloud = run(dir, &["local", "list", "--stack", "crashy"]);
    let mut by_addr = BTreeMap::new();
    for line in String::from_utf8_lossy(&cloud.stdout).lines() {
        let addr = line.split('\t').nth(2).unwrap_or("").to_string();
        *by_addr.entry(addr).or_insert(0) += 1;
    }
    let state = run(dir, &["state", "list", "--stack", "crashy"]);
    let addrs = String::from_utf8_lossy(&state.stdout)
        .lines()
        .map(|l| l.split('\t').next().unwrap_or("").to_string())
        .collect();
    (by_addr, addrs)
}

#[test]
fn kill_9_at_random_moments_never_duplicates_or_orphans() {
    let iterations: usize = std::env::var("CHIMERA_CRASH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let dir = tempfile::tempdir().unwrap();
    let mut seed: u64 = 0x5eed_1234;
    let mut next = || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        seed >> 33
    };
    for i in 0..iterations {
        // Alternate the desired state so every run has creates, updates and deletes to do.
        let (count, size) = match (i / 4) % 3 {
            0 => (12, "small"),
            1 => (6, "medium"),
            _ => (9, "small"),
        };
        std::fs::write(dir.path().join("main.ncl"), fleet(count, size)).unwrap();
        let mut child = chimera(
            dir.path(),
            &["apply", "-y", "--parallelism", "2"],
            &[("CHIMERA_LOCAL_LATENCY_MS", "40")],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
        std::thread::sleep(Duration::from_millis(next() % 600));
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
    }
    // The kills must have interrupted applies (not only idle moments): each interrupted
    // apply leaves a `partial` generation once recovered.
    let history = run(dir.path(), &["history", "--stack", "crashy"]);
    let partial = String::from_utf8_lossy(&history.stdout)
        .lines()
        .filter(|l| l.contains("\tpartial\t"))
        .count();
    eprintln!("{iterations} kills, {partial} interrupted applies recovered");
    assert!(
        partial >= iterations / 10,
        "only {partial} of {iterations} kills hit an apply in flight"
    );
    // Converge, then check the invariants.
    std::fs::write(dir.path().join("main.ncl"), fleet(10, "small")).unwrap();
    let out = run(dir.path(), &["apply", "-y"]);
    assert!(out.status.success(), "final apply failed:\n{}", text(&out));
    let out = run(dir.path(), &["plan", "--detailed-exitcode"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "plan not empty after recovery:\n{}",
        text(&out)
    );
    let (cloud, state) = inventory(dir.path());
    for (addr, n) in &cloud {
        assert_eq!(*n, 1, "{addr} exists {n} times in the cloud");
    }
    let cloud_addrs: Vec<String> = cloud.keys().cloned().collect();
    let mut state_sorted = state.clone();
    state_sorted.sort();
    assert_eq!(
        cloud_addrs, state_sorted,
        "cloud and state disagree (orphans or ghosts)"
    );
    assert_eq!(state.len(), 12, "2 network resources + 10 instances");
}

#[test]
fn two_writers_exactly_one_proceeds() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("main.ncl"), fleet(8, "small")).unwrap();
    let env = [("CHIMERA_LOCAL_LATENCY_MS", "150")];
    let a = chimera(dir.path(), &["apply", "-y"], &env)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let b = chimera(dir.path(), &["apply", "-y"], &env)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    let oks = [&a, &b].iter().filter(|o| o.status.success()).count();
    let loser = [&a, &b].into_iter().find(|o| !o.status.success());
    // Either one won and the other was refused with the holder named, or the second started
    // after the first finished and found nothing to do.
    match loser {
        Some(l) => {
            assert_eq!(oks, 1);
            let t = text(l);
            assert!(
                t.contains("E0301") && t.contains("is locked by") && t.contains("pid"),
                "{t}"
            );
        }
        None => assert_eq!(oks, 2),
    }
    let history = run(dir.path(), &["history", "--stack", "crashy"]);
    let gens = String::from_utf8_lossy(&history.stdout)
        .lines()
        .skip(1)
        .count();
    assert_eq!(gens, 1, "exactly one generation: {}", text(&history));
    let (cloud, _) = inventory(dir.path());
    assert!(cloud.values().all(|n| *n == 1));
}

#[test]
fn bad_state_and_plan_files_are_diagnostics_and_state_is_untouched() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("main.ncl"), fleet(2, "small")).unwrap();
    assert!(run(dir.path(), &["apply", "-y"]).status.success());
    let state_db = dir.path().join(".chimera/state.db");

    // A plan from another stack (same name, other lineage) is refused.
    let other = tempfile::tempdir().unwrap();
    std::fs::write(other.path().join("main.ncl"), fleet(3, "small")).unwrap();
    assert!(run(other.path(), &["apply", "-y"]).status.success());
    std::fs::write(other.path().join("main.ncl"), fleet(4, "small")).unwrap();
    let plan_path = other.path().join("other.plan");
    assert!(
        run(
            other.path(),
            &["plan", "--out", plan_path.to_str().unwrap()]
        )
        .status
        .success()
    );
    let out = run(
        dir.path(),
        &[
            "apply",
            plan_path.to_str().unwrap(),
            "--state",
            &format!("sqlite://{}", state_db.display()),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let t = text(&out);
    assert!(t.contains("lineage") || t.contains("E0302"), "{t}");

    // A state file that is not a database.
    let junk = dir.path().join("junk.db");
    std::fs::write(&junk, b"this is not sqlite, just bytes\n".repeat(100)).unwrap();
    let out = run(
        dir.path(),
        &["plan", "--state", &format!("sqlite://{}", junk.display())],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("E0300"), "{}", text(&out));
    assert_eq!(
        std::fs::read(&junk).unwrap(),
        b"this is not sqlite, just bytes\n".repeat(100),
        "junk must be left as it was"
    );

    // A read-only state directory (skipped as root, who can write anyway).
    let ro = tempfile::tempdir().unwrap();
    let mut perms = std::fs::metadata(ro.path()).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o555);
    std::fs::set_permissions(ro.path(), perms).unwrap();
    let probe = ro.path().join("probe");
    if std::fs::write(&probe, b"x").is_err() {
        let out = run(
            dir.path(),
            &[
                "plan",
                "--state",
                &format!("sqlite://{}/state.db", ro.path().display()),
            ],
        );
        assert_eq!(out.status.code(), Some(1));
        assert!(text(&out).contains("E0300"), "{}", text(&out));
    }

    // Nothing above changed the real state: the plan is still empty.
    let out = run(dir.path(), &["plan", "--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

#[test]
fn apply_without_a_terminal_or_yes_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("main.ncl"), fleet(1, "small")).unwrap();
    let out = chimera(dir.path(), &["apply"], &[])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("E0307"));
    let out = run(dir.path(), &["plan", "--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(2), "still everything to create");
}

#[test]
fn truncated_or_edited_plan_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("main.ncl"), fleet(2, "small")).unwrap();
    let plan = dir.path().join("p.plan");
    assert!(
        run(dir.path(), &["plan", "--out", plan.to_str().unwrap()])
            .status
            .success()
    );
    let full = std::fs::read_to_string(&plan).unwrap();
    let truncated = dir.path().join("t.plan");
    std::fs::write(&truncated, &full[..full.len() / 2]).unwrap();
    let edited = dir.path().join("e.plan");
    std::fs::write(&edited, full.replace("local.small", "local.xlarge")).unwrap();
    for (file, needle) in [
        (&truncated, "truncated or not JSON"),
        (&edited, "integrity check failed"),
    ] {
        let out = run(dir.path(), &["apply", file.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(1));
        let t = text(&out);
        assert!(t.contains("E0303") && t.contains(needle), "{t}");
    }
    // Nothing was applied; the untouched file still applies.
    assert_eq!(
        run(dir.path(), &["plan", "--detailed-exitcode"])
            .status
            .code(),
        Some(2)
    );
    assert!(
        run(dir.path(), &["apply", plan.to_str().unwrap()])
            .status
            .success()
    );
    assert_eq!(
        run(dir.path(), &["plan", "--detailed-exitcode"])
            .status
            .code(),
        Some(0)
    );
}

#[test]
fn rollback_returns_to_an_earlier_generation() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("main.ncl"), fleet(2, "small")).unwrap();
    assert!(run(dir.path(), &["apply", "-y"]).status.success());
    std::fs::write(dir.path().join("main.ncl"), fleet(3, "medium")).unwrap();
    assert!(run(dir.path(), &["apply", "-y"]).status.success());
    let out = run(dir.path(), &["rollback", "1", "-y"]);
    assert!(out.status.success(), "{}", text(&out));
    // State is generation 1's again: its configuration plans nothing.
    std::fs::write(dir.path().join("main.ncl"), fleet(2, "small")).unwrap();
    let out = run(dir.path(), &["plan", "--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = run(dir.path(), &["rollback", "99", "-y"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("no such generation"));
}

#[test]
fn local_knobs_come_from_the_stack_and_the_environment_overrides_them() {
    let dir = tempfile::tempdir().unwrap();
    let src = fleet(1, "small").replace(
        "{ stack = \"crashy\",",
        "{ providers = { local = { failure_rate = 1 } }, stack = \"crashy\",",
    );
    std::fs::write(dir.path().join("main.ncl"), &src).unwrap();
    let out = run(dir.path(), &["apply", "-y"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("InjectedFailure"), "{}", text(&out));
    let out = chimera(
        dir.path(),
        &["apply", "-y"],
        &[("CHIMERA_LOCAL_FAILURE_RATE", "0")],
    )
    .output()
    .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    std::fs::write(
        dir.path().join("main.ncl"),
        src.replace("failure_rate = 1", "failure_rte = 1"),
    )
    .unwrap();
    // A misspelt setting is a located diagnostic at `check`, before anything runs.
    let out = run(dir.path(), &["check"]);
    assert_eq!(out.status.code(), Some(1));
    let t = text(&out);
    assert!(t.contains("error[E0003]"), "{t}");
    assert!(t.contains("extra field `failure_rte`"), "{t}");
    assert!(t.contains("main.ncl:4:"), "{t}");
    // A bad value in the environment, which no contract sees, is refused before any call.
    std::fs::write(dir.path().join("main.ncl"), &src).unwrap();
    let out = chimera(
        dir.path(),
        &["apply", "-y"],
        &[("CHIMERA_LOCAL_FAILURE_RATE", "2")],
    )
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("error[E0313]"), "{}", text(&out));
}

#[test]
fn a_failed_provider_call_is_a_coded_diagnostic_with_its_address() {
    let dir = tempfile::tempdir().unwrap();
    let src = fleet(1, "small").replace(
        "{ stack = \"crashy\",",
        "{ providers = { local = { failure_rate = 1 } }, stack = \"crashy\",",
    );
    std::fs::write(dir.path().join("main.ncl"), &src).unwrap();
    let out = run(dir.path(), &["--error-format", "json", "apply", "-y"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let doc: serde_json::Value = stderr
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .find(|d: &serde_json::Value| d.get("diagnostics").is_some())
        .unwrap_or_else(|| panic!("no JSON diagnostics in {stderr}"));
    let diags = doc["diagnostics"].as_array().unwrap();
    let refused: Vec<_> = diags.iter().filter(|d| d["code"] == "E0400").collect();
    assert!(!refused.is_empty(), "{doc}");
    for d in &refused {
        assert_eq!(d["severity"], "error");
        assert!(
            d["address"].as_str().is_some_and(|a| a.contains('.')),
            "{d}"
        );
        assert!(
            d["detail"].as_str().unwrap().contains("InjectedFailure"),
            "{d}"
        );
    }
    // What the failures ruled out is said too, as warnings with their own code.
    assert!(
        diags
            .iter()
            .any(|d| d["code"] == "E0406" && d["severity"] == "warning"),
        "{doc}"
    );
}
