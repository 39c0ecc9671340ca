//! Harnesses the test suites share. Everything listens on 127.0.0.1 with an ephemeral port and
//! is stopped when dropped: tests never leave loopback.
//!
//! [`Moto`] runs `moto_server` (the EC2 emulator; `.ci/run` installs it with pip, pinned) and
//! [`ThrottleProxy`] puts a proxy in front of it that answers some requests with EC2's
//! `RequestLimitExceeded`, to test retries.

pub use aws_sdk_ec2;

pub mod fake_azure;
pub mod fake_gcp;
pub mod forge;
pub mod llm_stub;
mod loopback;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The moto version `.ci/run` installs.
pub const MOTO_VERSION: &str = "5.2.1";

/// A region moto serves (and its bundled AMIs live in).
pub const REGION: &str = "us-east-1";

/// An AMI that moto ships in every region.
pub const MOTO_AMI: &str = "ami-1e749f67";

/// Static test credentials: moto routes unsigned requests to the wrong service.
pub const ACCESS_KEY: &str = "testing";
pub const SECRET_KEY: &str = "testing";

fn moto_installed() -> bool {
    Command::new("python3")
        .args([
            "-c",
            &format!(
                "import moto, moto.server, flask_cors; assert moto.__version__ == '{MOTO_VERSION}'"
            ),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Installs the pinned moto with pip when it is missing, once across parallel test processes
/// (a file lock in the temp dir), so `cargo nextest run` works on a fresh machine by itself.
fn ensure_moto() {
    if moto_installed() {
        return;
    }
    let lock_path = std::env::temp_dir().join("chimera-testkit-moto-install.lock");
    let lock = std::fs::File::create(&lock_path).expect("create the install lock");
    lock.lock().expect("take the install lock");
    if !moto_installed() {
        let status = Command::new("python3")
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                &format!("moto[server]=={MOTO_VERSION}"),
            ])
            .status()
            .expect("run pip");
        assert!(
            status.success() && moto_installed(),
            "cannot install moto {MOTO_VERSION} with pip; install it by hand: pip install 'moto[server]=={MOTO_VERSION}'"
        );
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("an ephemeral port on 127.0.0.1")
}

fn wait_ready(url: &str, child: &mut Child, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if ureq::get(url).call().is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited before it was ready ({status})");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{what} did not answer at {url} within 60 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A `moto_server` on 127.0.0.1, stopped on drop.
pub struct Moto {
    child: Child,
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
}

impl Moto {
    pub fn start() -> Moto {
        Self::start_with_env(&[])
    }

    /// Starts moto with extra environment (e.g. `MOTO_EC2_ENABLE_INSTANCE_TYPE_VALIDATION`).
    pub fn start_with_env(env: &[(&str, &str)]) -> Moto {
        ensure_moto();
        let port = free_port();
        let mut cmd = Command::new("python3");
        cmd.args([
            "-m",
            "moto.server",
            "-H",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap_or_else(|e| {
            panic!(
                "cannot start moto ({e}): install it with `pip install 'moto[server]=={MOTO_VERSION}'`"
            )
        });
        let endpoint = format!("http://127.0.0.1:{port}");
        wait_ready(&format!("{endpoint}/moto-api/"), &mut child, "moto_server");
        Moto { child, endpoint }
    }

    /// Forgets everything (`POST /moto-api/reset`).
    pub fn reset(&self) {
        ureq::post(&format!("{}/moto-api/reset", self.endpoint))
            .send_empty()
            .expect("moto reset");
    }

    /// The environment a `chimera` process needs to use this moto through the standard AWS
    /// chain.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        env_for(&self.endpoint)
    }

    /// SDK configuration with static test credentials, for in-process tests.
    pub async fn sdk_config(&self) -> aws_config::SdkConfig {
        sdk_config(&self.endpoint).await
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The standard-chain environment for an endpoint: static credentials, region, no IMDS.
pub fn env_for(endpoint: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ENDPOINT_URL", endpoint.to_string()),
        ("AWS_ACCESS_KEY_ID", ACCESS_KEY.into()),
        ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.into()),
        ("AWS_REGION", REGION.into()),
        ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ("AWS_CONFIG_FILE", "/dev/null".into()),
        ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null".into()),
    ]
}

pub async fn sdk_config(endpoint: &str) -> aws_config::SdkConfig {
    // rustls on ring, as the aws provider's client (the SDK's default client would bring aws-lc).
    use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https();
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(http)
        .region(aws_sdk_ec2::config::Region::new(REGION))
        .credentials_provider(aws_sdk_ec2::config::Credentials::new(
            ACCESS_KEY,
            SECRET_KEY,
            None,
            None,
            "chimera-tests",
        ))
        .endpoint_url(endpoint)
        .load()
        .await
}

/// A proxy in front of an EC2 endpoint that answers every `every`-th request with
/// `RequestLimitExceeded` (HTTP 503), optionally delaying every request, stopped on drop.
pub struct ThrottleProxy {
    child: Child,
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
}

impl ThrottleProxy {
    pub fn start(upstream: &str, every: u32) -> ThrottleProxy {
        Self::start_with_delay(upstream, every, 0)
    }

    /// Also delays every request by `delay_ms` (a region's round trip and API time); `every`
    /// = 0 never throttles.
    pub fn start_with_delay(upstream: &str, every: u32, delay_ms: u32) -> ThrottleProxy {
        Self::spawn(upstream, every, delay_ms, 0)
    }

    /// Answers the first `count` DescribeInstances-by-id requests with
    /// `InvalidInstanceID.NotFound`, as EC2 may right after RunInstances.
    pub fn start_not_found(upstream: &str, count: u32) -> ThrottleProxy {
        Self::spawn(upstream, 0, 0, count)
    }

    fn spawn(upstream: &str, every: u32, delay_ms: u32, not_found: u32) -> ThrottleProxy {
        let port = free_port();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("support/throttle_proxy.py");
        let mut child = Command::new("python3")
            .arg(&script)
            .args([
                &port.to_string(),
                upstream,
                &every.to_string(),
                &delay_ms.to_string(),
                &not_found.to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the throttling proxy: {e}"));
        let endpoint = format!("http://127.0.0.1:{port}");
        wait_ready(
            &format!("{endpoint}/proxy-health"),
            &mut child,
            "throttle proxy",
        );
        ThrottleProxy { child, endpoint }
    }

    /// How many requests of each EC2 Action it has seen so far (throttled ones included).
    pub fn requests(&self) -> std::collections::BTreeMap<String, u64> {
        ureq::get(&format!("{}/proxy-requests", self.endpoint))
            .call()
            .ok()
            .and_then(|mut r| r.body_mut().read_to_string().ok())
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let (a, n) = l.split_once(' ')?;
                Some((a.to_string(), n.parse().ok()?))
            })
            .collect()
    }

    /// How many requests it has throttled (or answered "not found") so far.
    pub fn throttled(&self) -> u64 {
        ureq::get(&format!("{}/proxy-health", self.endpoint))
            .call()
            .ok()
            .and_then(|mut r| r.body_mut().read_to_string().ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for ThrottleProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An EC2 client on `endpoint` with the test credentials, for raw calls (drift, inventories).
pub async fn ec2(endpoint: &str) -> aws_sdk_ec2::Client {
    aws_sdk_ec2::Client::new(&sdk_config(endpoint).await)
}

/// Instances not terminated that carry `chimera-stack = stack`, by `chimera-address`.
pub async fn live_instances(
    endpoint: &str,
    stack: &str,
) -> std::collections::BTreeMap<String, usize> {
    use aws_sdk_ec2::types::{Filter, InstanceStateName};
    let client = ec2(endpoint).await;
    let mut pages = client
        .describe_instances()
        .filters(
            Filter::builder()
                .name("tag:chimera-stack")
                .values(stack)
                .build(),
        )
        .into_paginator()
        .items()
        .send();
    let mut out = std::collections::BTreeMap::new();
    while let Some(reservation) = pages.try_next().await.expect("describe instances") {
        for i in reservation.instances() {
            if matches!(
                i.state().and_then(|s| s.name()),
                Some(InstanceStateName::Terminated | InstanceStateName::ShuttingDown)
            ) {
                continue;
            }
            let addr = i
                .tags()
                .iter()
                .find(|t| t.key() == Some("chimera-address"))
                .and_then(|t| t.value())
                .unwrap_or_default()
                .to_string();
            *out.entry(addr).or_insert(0) += 1;
        }
    }
    out
}

/// How many VPCs, subnets, security groups and volumes carry `chimera-stack = stack`.
pub async fn tagged_non_instances(endpoint: &str, stack: &str) -> usize {
    use aws_sdk_ec2::types::Filter;
    let client = ec2(endpoint).await;
    let f = || {
        Filter::builder()
            .name("tag:chimera-stack")
            .values(stack)
            .build()
    };
    let vpcs = client
        .describe_vpcs()
        .filters(f())
        .send()
        .await
        .expect("vpcs")
        .vpcs()
        .len();
    let subnets = client
        .describe_subnets()
        .filters(f())
        .send()
        .await
        .expect("subnets")
        .subnets()
        .len();
    let groups = client
        .describe_security_groups()
        .filters(f())
        .send()
        .await
        .expect("groups")
        .security_groups()
        .len();
    let volumes = client
        .describe_volumes()
        .filters(f())
        .send()
        .await
        .expect("volumes")
        .volumes()
        .len();
    vpcs + subnets + groups + volumes
}

/// A PostgreSQL server in a temporary directory, on 127.0.0.1 with an ephemeral port, stopped
/// and deleted on drop. The binaries refuse to run as root, so as root they run as the
/// `postgres` user (`runuser`).
pub struct Postgres {
    dir: std::path::PathBuf,
    /// `postgres://chimera@127.0.0.1:PORT/postgres`
    pub url: String,
    pub port: u16,
    durable: bool,
}

fn pg_start(dir: &std::path::Path, port: u16, durable: bool) {
    let mut start = pg_command("pg_ctl");
    start
        .arg("-D")
        .arg(dir.join("data"))
        .arg("-l")
        .arg(dir.join("log"))
        .args(["-w", "-t", "60", "-o"])
        .arg(format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync={} -c max_connections=200",
            dir.display(),
            if durable { "on" } else { "off" }
        ))
        .arg("start");
    run_ok(start, "pg_ctl start");
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// A PostgreSQL binary, as the `postgres` user when we are root.
fn pg_command(program: &str) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--", program]);
        c
    } else {
        Command::new(program)
    }
}

fn run_ok(mut c: Command, what: &str) {
    let out = c
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Postgres {
    /// `durable`: keep `fsync` on (benchmarks); tests turn it off for speed.
    pub fn start(durable: bool) -> Postgres {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "chimera-pg-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the PostgreSQL directory");
        if is_root() {
            run_ok(
                {
                    let mut c = Command::new("chown");
                    c.args(["postgres:postgres"]).arg(&dir);
                    c
                },
                "chown",
            );
        }
        let data = dir.join("data");
        let mut init = pg_command("initdb");
        init.arg("-D")
            .arg(&data)
            .args(["-A", "trust", "-U", "chimera", "-E", "UTF8", "--no-sync"]);
        run_ok(init, "initdb");
        let port = free_port();
        pg_start(&dir, port, durable);
        Postgres {
            url: format!("postgres://chimera@127.0.0.1:{port}/postgres"),
            dir,
            port,
            durable,
        }
    }

    /// Stops the server at once (as a crash would: `-m immediate`), keeping its data.
    pub fn stop(&self) {
        let mut stop = pg_command("pg_ctl");
        stop.arg("-D")
            .arg(self.dir.join("data"))
            .args(["-w", "-m", "immediate", "stop"]);
        run_ok(stop, "pg_ctl stop");
    }

    /// Starts the server again after [`Postgres::stop`], on the same port and data.
    pub fn start_again(&self) {
        pg_start(&self.dir, self.port, self.durable);
    }

    /// A new empty database on this server; returns its URL.
    pub fn database(&self, name: &str) -> String {
        let mut c = Command::new("psql");
        c.args([
            "-h",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            "-U",
            "chimera",
            "-d",
            "postgres",
            "-c",
        ])
        .arg(format!("CREATE DATABASE \"{name}\""));
        run_ok(c, "createdb");
        format!("postgres://chimera@127.0.0.1:{}/{name}", self.port)
    }

    /// Runs one SQL statement through psql and returns its unaligned output.
    pub fn sql(&self, db: &str, statement: &str) -> String {
        let out = Command::new("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "chimera",
                "-d",
                db,
                "-At",
                "-c",
                statement,
            ])
            .output()
            .expect("run psql");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let mut stop = pg_command("pg_ctl");
        stop.arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let _ = stop.status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs `git ARGS` in `dir` as a test author (no global git configuration needed) and returns
/// its trimmed standard output; panics with git's error when it fails.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=Chimera Test",
            "-c",
            "user.email=test@example.invalid",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run git");
    assert!(
        out.status.success(),
        "git {args:?} in {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
