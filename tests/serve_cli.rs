//! `chimera serve` as a process: drift injected with `chimera local mutate` (an attribute
//! changed, an instance deleted, a volume detached) is healed in `auto` and only recorded in
//! `report`; `/metrics` is scraped and parsed as drift is found and healed; SIGTERM ends it
//! with exit 0; a non-loopback address without a token is refused.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn chimera(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_chimera"))
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .env_remove("CHIMERA_STATE")
        .env_remove("CHIMERA_LOCAL_CLOUD")
        .output()
        .expect("run chimera")
}

fn webapp() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/webapp/main.ncl"),
        dir.path().join("main.ncl"),
    )
    .unwrap();
    let out = chimera(dir.path(), &["apply", ".", "-y"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for args in [
        &["local", "mutate", "subnet.public", "--set", "public=false", "."][..],
        &["local", "mutate", "instance.web-1", "--delete", "."][..],
        &["local", "mutate", "volume.data", "--set", "instance=null", "."][..],
    ] {
        let out = chimera(dir.path(), args);
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    dir
}

/// A running `chimera serve` and the address it listens on.
struct Daemon {
    child: Child,
    base: String,
}

impl Daemon {
    fn start(dir: &Path, heal: &str) -> Daemon {
        let mut child = Command::new(env!("CARGO_BIN_EXE_chimera"))
            .args([
                "serve", ".", "--heal", heal, "--interval", "0.3", "--listen", "127.0.0.1:0",
            ])
            .current_dir(dir)
            .env("NO_COLOR", "1")
            .env_remove("CHIMERA_STATE")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("start chimera serve");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let first = lines.next().expect("a first line").unwrap();
        let base = first
            .split("listening on ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or_else(|| panic!("no address in {first:?}"))
            .to_string();
        // Keep draining stderr so the daemon never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Daemon { child, base }
    }

    fn get(&self, path: &str) -> String {
        ureq::get(&format!("{}{path}", self.base))
            .call()
            .expect("GET")
            .body_mut()
            .read_to_string()
            .unwrap()
    }

    /// Polls `/api/stacks` until `done` holds of the stack's status.
    fn wait_for(&self, done: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        let start = Instant::now();
        loop {
            let stacks: serde_json::Value = serde_json::from_str(&self.get("/api/stacks")).unwrap();
            if let Some(s) = stacks.get(0).filter(|s| done(s)) {
                return s.clone();
            }
            assert!(start.elapsed() < Duration::from_secs(60), "timed out: {stacks}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn terminate(mut self) -> i32 {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            assert!(start.elapsed() < Duration::from_secs(30), "did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// `name{labels} value` lines of a metric, as (labels, value).
fn samples(text: &str, name: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| {
            let (head, value) = l.rsplit_once(' ')?;
            let labels = head.strip_prefix(name)?.to_string();
            Some((labels, value.parse().ok()?))
        })
        .collect()
}

#[test]
fn auto_heals_drift_and_metrics_follow() {
    let dir = webapp();
    let daemon = Daemon::start(dir.path(), "auto");
    assert_eq!(daemon.get("/healthz"), "ok\n");
    let healed = daemon.wait_for(|s| s["outcome"] == "healed");
    let drift: Vec<&str> = healed["drift"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d[0].as_str().unwrap())
        .collect();
    assert_eq!(drift, ["instance.web-1", "subnet.public", "volume.data"]);
    // The webapp runs on the free local simulator: its cost is known, and $0.
    assert_eq!(healed["monthly_cost"], 0.0);
    // The next tick finds the stack in sync.
    daemon.wait_for(|s| s["outcome"] == "in-sync");
    assert_eq!(daemon.get("/readyz"), "ready\n");

    let metrics = daemon.get("/metrics");
    let found = samples(&metrics, "chimera_drift_found_total");
    assert!(
        found.iter().any(|(l, v)| l.contains("kind=\"instance\"") && *v == 1.0),
        "{metrics}"
    );
    let healed = samples(&metrics, "chimera_drift_healed_total");
    assert_eq!(healed.iter().map(|(_, v)| v).sum::<f64>(), 3.0, "{metrics}");
    let applies = samples(&metrics, "chimera_heal_applies_total");
    assert!(applies.iter().any(|(l, v)| l.contains("outcome=\"succeeded\"") && *v == 1.0));
    let last = samples(&metrics, "chimera_last_successful_reconcile_timestamp_seconds");
    assert!(last[0].1 > 1.7e9, "{metrics}");
    assert!(!samples(&metrics, "chimera_reconcile_duration_seconds_count").is_empty());
    assert_eq!(daemon.terminate(), 0, "SIGTERM ends the daemon cleanly");

    // The heal is in the stack's history, by the reconciler; the cloud is whole again.
    let history = String::from_utf8_lossy(&chimera(dir.path(), &["history", "."]).stdout).into_owned();
    assert!(history.contains("reconciler:"), "{history}");
    let list = chimera(dir.path(), &["local", "list", "."]);
    assert_eq!(String::from_utf8_lossy(&list.stdout).lines().count(), 8);
    let plan = chimera(dir.path(), &["plan", ".", "--detailed-exitcode"]);
    assert_eq!(plan.status.code(), Some(0), "{}", String::from_utf8_lossy(&plan.stdout));
}

#[test]
fn report_records_drift_and_changes_nothing() {
    let dir = webapp();
    let daemon = Daemon::start(dir.path(), "report");
    let s = daemon.wait_for(|s| s["ticks"].as_u64() >= Some(2));
    assert_eq!(s["outcome"], "drifted");
    assert_eq!(s["drift"].as_array().unwrap().len(), 3);
    let metrics = daemon.get("/metrics");
    assert!(samples(&metrics, "chimera_drift_healed_total").is_empty(), "{metrics}");
    assert_eq!(daemon.terminate(), 0);
    let list = chimera(dir.path(), &["local", "list", "."]);
    assert_eq!(String::from_utf8_lossy(&list.stdout).lines().count(), 7, "untouched");
}

#[test]
fn beyond_loopback_a_token_is_required() {
    let dir = tempfile::tempdir().unwrap();
    let out = chimera(dir.path(), &["serve", ".", "--listen", "0.0.0.0:0", "--ticks", "1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs a token"));
}
