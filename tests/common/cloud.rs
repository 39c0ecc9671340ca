#![allow(dead_code)]
//! What the CLI tests of the cloud providers on their in-repo fakes share (tests/gcp_cli.rs,
//! tests/azure_cli.rs): the binary run with no cloud settings from the environment, a fleet
//! stack, and applies killed with SIGKILL at seeded moments.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// `chimera ARGS` in `dir`, with no state URL and no cloud project or subscription from the
/// environment (the stacks name the fakes).
pub fn chimera(dir: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_chimera"));
    c.args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .env_remove("CHIMERA_STATE")
        .env_remove("GOOGLE_CLOUD_PROJECT")
        .env_remove("GOOGLE_APPLICATION_CREDENTIALS")
        .env_remove("AZURE_SUBSCRIPTION_ID");
    c
}

pub fn run(dir: &Path, args: &[&str]) -> Output {
    chimera(dir, args).output().expect("run chimera")
}

/// Standard output and standard error.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Stack `burst` on `provider` (`gcp`, `azure`) with its `providers` record: a network, a
/// subnet and `count` small instances `w-0`….
pub fn fleet(provider: &str, providers: &str, count: usize) -> String {
    format!(
        r#"let c = import "chimera.ncl" in
let on = {{ provider = '{provider}, region = "us-east" }} in
let net = c.Network & on & {{ name = "main", cidr = "10.0.0.0/16" }} in
let sn = c.Subnet & on & {{ name = "workers", network = net, cidr = "10.0.0.0/20" }} in
{{ stack = "burst", providers = {providers},
  resources = [net, sn] @ std.array.generate
  (fun i => c.Instance & on & {{ name = "w-%{{std.to_string i}}", size = 'small, subnet = sn }}) {count} }}
"#
    )
}

/// How many applies a crash test kills: `var` from the environment, else 6.
pub fn crash_iterations(var: &str) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6)
}

/// Starts `apply -y --parallelism 16` in `dir` `iterations` times and kills each with SIGKILL
/// after a wait drawn from `seed` in `waits` (milliseconds). Returns how many were still running
/// when killed; an apply that ended by itself in failure fails the test with its output.
pub fn killed_applies(
    dir: &Path,
    iterations: usize,
    mut seed: u64,
    waits: std::ops::Range<u64>,
) -> usize {
    let mut interrupted = 0;
    for _ in 0..iterations {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let wait = waits.start + (seed >> 33) % (waits.end - waits.start);
        let mut child = chimera(dir, &["apply", "-y", "--parallelism", "16"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(wait));
        match child.try_wait().unwrap() {
            None => interrupted += 1,
            Some(s) if !s.success() => {
                let mut err = String::new();
                let _ = std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err);
                panic!("an apply failed by itself: {err}");
            }
            Some(_) => {}
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    interrupted
}
