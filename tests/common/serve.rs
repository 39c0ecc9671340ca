#![allow(dead_code)]
//! A `chimera serve` process for the CLI tests: started on 127.0.0.1 with an ephemeral port,
//! its log lines collected, its HTTP API polled.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub fn chimera(dir: &Path, args: &[&str]) -> Output {
    chimera_env(dir, args, &[])
}

pub fn chimera_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_chimera"));
    c.args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .env_remove("CHIMERA_STATE")
        .env_remove("CHIMERA_LOCAL_CLOUD");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run chimera")
}

pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The webapp example in a temporary directory (`main.ncl` only).
pub fn webapp_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/webapp/main.ncl"),
        dir.path().join("main.ncl"),
    )
    .unwrap();
    dir
}

/// A running `chimera serve`.
pub struct Daemon {
    pub child: Child,
    pub base: String,
    pub logs: Arc<Mutex<Vec<String>>>,
}

impl Daemon {
    /// Starts `chimera serve ARGS --listen 127.0.0.1:0` in `dir` and waits for its address.
    pub fn start(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Daemon {
        let mut c = Command::new(env!("CARGO_BIN_EXE_chimera"));
        c.arg("serve")
            .args(args)
            .args(["--listen", "127.0.0.1:0"])
            .current_dir(dir)
            .env("NO_COLOR", "1")
            .env_remove("CHIMERA_STATE")
            .env_remove("CHIMERA_LOCAL_CLOUD")
            .stderr(Stdio::piped())
            .stdout(Stdio::null());
        for (k, v) in env {
            c.env(k, v);
        }
        let mut child = c.spawn().expect("start chimera serve");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let mut base = None;
        for line in lines.by_ref() {
            let line = line.unwrap();
            logs.lock().unwrap().push(line.clone());
            if let Some(rest) = line.split("listening on ").nth(1) {
                base = rest
                    .split(|c: char| c.is_whitespace() || c == '"')
                    .next()
                    .map(str::to_string);
                break;
            }
        }
        let base = base.unwrap_or_else(|| panic!("no address in {:?}", logs.lock().unwrap()));
        // Keep draining stderr so the daemon never blocks on a full pipe.
        let sink = logs.clone();
        std::thread::spawn(move || {
            for l in lines.map_while(Result::ok) {
                sink.lock().unwrap().push(l);
            }
        });
        Daemon { child, base, logs }
    }

    pub fn get(&self, path: &str) -> String {
        ureq::get(&format!("{}{path}", self.base))
            .call()
            .expect("GET")
            .body_mut()
            .read_to_string()
            .unwrap()
    }

    /// The status of the stack named `name` (or the only one).
    pub fn status(&self, name: Option<&str>) -> Option<serde_json::Value> {
        let stacks: serde_json::Value = serde_json::from_str(&self.get("/api/stacks")).ok()?;
        stacks
            .as_array()?
            .iter()
            .find(|s| name.is_none_or(|n| s["stack"] == n))
            .cloned()
    }

    /// Polls `/api/stacks` until `done` holds of the stack's status (60 s at most).
    pub fn wait_for(&self, done: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        self.wait_for_stack(None, done)
    }

    pub fn wait_for_stack(
        &self,
        name: Option<&str>,
        done: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let start = Instant::now();
        loop {
            if let Some(s) = self.status(name).filter(|s| done(s)) {
                return s;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "timed out: {}\nlogs:\n{}",
                self.get("/api/stacks"),
                self.logs.lock().unwrap().join("\n")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn log_text(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    /// SIGTERM; waits for the exit and returns its code.
    pub fn terminate(mut self) -> i32 {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// kill -9.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `name{labels} value` lines of a metric, as (labels, value).
pub fn samples(text: &str, name: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| {
            let (head, value) = l.rsplit_once(' ')?;
            let labels = head.strip_prefix(name)?.to_string();
            Some((labels, value.parse().ok()?))
        })
        .collect()
}
