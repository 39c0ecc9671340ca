//! The daemon's JSON API and its dashboard, against a real daemon started in this process on a
//! temporary copy of `examples/webapp` (local provider), applied and then drifted behind
//! Chimera's back (`instance.web-1` deleted): every route's shape, the 404 of an unknown
//! stack, pause and resume, the token; and the dashboard as Debian's headless chromium draws
//! it (driven through chromiumoxide, which never downloads a browser), checked on its rendered
//! DOM, with a screenshot kept as `target/test-artifacts/dashboard.png`. Only 127.0.0.1.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chimera_serve::ServeConfig;
use chimera_workflow::{ApplyRequest, HealMode, LocalChange, Settings, Stack};
use chromiumoxide::browser::{Browser, BrowserConfig};
use chromiumoxide::handler::viewport::Viewport;
use chromiumoxide::page::{Page, ScreenshotParams};
use futures_util::StreamExt;
use serde_json::Value;
use tokio::runtime::Runtime;
use tokio::sync::oneshot;

const CHROMIUM: &str = "/usr/bin/chromium";
const TOKEN: &str = "s3cret-dashboard-token";

/// A daemon serving a drifted webapp, stopped on drop.
struct Daemon {
    rt: Option<Runtime>,
    stop: Option<oneshot::Sender<()>>,
    base: String,
    token: Option<&'static str>,
    agent: ureq::Agent,
    dir: tempfile::TempDir,
}

fn settings() -> Settings {
    Settings {
        actor: "reconciler@chimera".into(),
        ..Settings::default()
    }
}

impl Daemon {
    /// Applies the webapp, deletes `instance.web-1` in the local cloud, starts the daemon in
    /// `mode` and waits for its first tick.
    fn start(mode: HealMode, token: Option<&'static str>) -> Daemon {
        Daemon::start_with(mode, token, |_| {})
    }

    /// As [`Daemon::start`], with the daemon's config changed by `tweak` first.
    fn start_with(
        mode: HealMode,
        token: Option<&'static str>,
        tweak: impl FnOnce(&mut ServeConfig),
    ) -> Daemon {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let src = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/webapp/main.ncl"),
        )
        .unwrap();
        std::fs::write(dir.path().join("main.ncl"), src).unwrap();
        rt.block_on(async {
            let mut stack = Stack::open(dir.path(), settings());
            let req = ApplyRequest {
                refresh: false,
                message: "first apply".into(),
                ..ApplyRequest::default()
            };
            assert!(stack.apply(&req, |_| true).await.unwrap().ok());
            let mut stack = Stack::open(dir.path(), settings());
            stack
                .local_mutate(&"instance.web-1".parse().unwrap(), &LocalChange::Delete)
                .await
                .unwrap();
        });
        let mut cfg = ServeConfig::new(vec![dir.path().to_path_buf()], settings());
        cfg.interval = Duration::from_millis(300);
        cfg.jitter = 0.0;
        cfg.ticks = None;
        cfg.mode = mode;
        cfg.token = token.map(str::to_string);
        cfg.replica = "test-replica".into();
        tweak(&mut cfg);
        let (stop, stopped) = oneshot::channel::<()>();
        let served = rt
            .block_on(chimera_serve::start(cfg, async move {
                let _ = stopped.await;
            }))
            .unwrap();
        assert!(served.addr.ip().is_loopback());
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        let d = Daemon {
            rt: Some(rt),
            stop: Some(stop),
            base: format!("http://{}", served.addr),
            token,
            agent,
            dir,
        };
        let start = Instant::now();
        while d.get("/readyz").0 != 200 {
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "the first tick did not finish"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        d
    }

    fn path(&self) -> String {
        self.dir.path().display().to_string()
    }

    fn request(&self, method: &str, path: &str, token: Option<&str>) -> (u16, String) {
        let url = format!("{}{path}", self.base);
        let auth = token.map(|t| format!("Bearer {t}"));
        let response = if method == "POST" {
            let mut req = self.agent.post(&url);
            if let Some(a) = &auth {
                req = req.header("Authorization", a);
            }
            req.send_empty()
        } else {
            let mut req = self.agent.get(&url);
            if let Some(a) = &auth {
                req = req.header("Authorization", a);
            }
            req.call()
        };
        let mut response = response.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = response.status().as_u16();
        (status, response.body_mut().read_to_string().unwrap())
    }

    fn get(&self, path: &str) -> (u16, String) {
        self.request("GET", path, self.token)
    }

    /// The JSON of a GET that answers `status`.
    fn json_with(&self, path: &str, status: u16) -> Value {
        let (got, body) = self.get(path);
        assert_eq!(got, status, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
    }

    fn json(&self, path: &str) -> Value {
        self.json_with(path, 200)
    }

    fn post(&self, path: &str) -> Value {
        let (got, body) = self.request("POST", path, self.token);
        assert_eq!(got, 200, "POST {path}: {body}");
        serde_json::from_str(&body).unwrap()
    }

    /// Polls `/api/stacks/webapp` until `done` holds of it.
    fn wait_for(&self, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let start = Instant::now();
        loop {
            let (status, body) = self.get("/api/stacks/webapp");
            if status == 200 {
                let v: Value = serde_json::from_str(&body).unwrap();
                if done(&v) {
                    return v;
                }
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "timed out waiting for {what}: {status} {body}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn drifted(&self) -> Value {
        self.wait_for("drift of instance.web-1", |v| {
            v["drift"]
                .as_array()
                .is_some_and(|d| d.iter().any(|p| p[0] == "instance.web-1"))
        })
    }

    fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.as_ref().unwrap().block_on(f)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(10));
        }
    }
}

#[test]
fn every_stack_route_answers_json_of_its_documented_shape() {
    let d = Daemon::start(HealMode::Report, None);
    let view = d.drifted();

    // The status, flattened, with the daemon's controls and the latest events.
    assert_eq!(view["stack"], "webapp");
    assert_eq!(view["path"], d.path());
    assert_eq!(view["mode"], "report");
    assert_eq!(view["outcome"], "drifted");
    assert_eq!(view["replica"], "test-replica");
    assert!(view["last_reconcile"].as_u64().is_some(), "{view}");
    assert_eq!(view["generation"], 1);
    assert_eq!(view["paused"], false);
    assert_eq!(view["paused_all"], false);
    assert_eq!(view["dead_letters"], serde_json::json!([]));
    assert_eq!(view["backoffs"], serde_json::json!([]));
    let drift_event = view["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "drift")
        .unwrap_or_else(|| panic!("no drift event: {view}"));
    assert_eq!(drift_event["address"], "instance.web-1");
    assert!(drift_event["at"].as_u64().is_some());

    // By path as well as by name.
    let by_path = d.json(&format!("/api/stacks/{}", d.path().replace('/', "%2F")));
    assert_eq!(by_path["stack"], "webapp");

    let g = d.json("/api/stacks/webapp/generations");
    assert_eq!(g["stack"], "webapp");
    assert_eq!(g["total"], 1);
    let first = &g["generations"][0];
    assert_eq!(first["serial"], 1);
    assert_eq!(first["status"], "complete");
    assert_eq!(first["actor"], "reconciler@chimera");
    assert_eq!(first["message"], "first apply");
    assert!(first["time"].as_str().is_some_and(|t| !t.is_empty()), "{g}");

    let drift = d.json("/api/stacks/webapp/drift");
    assert_eq!(drift["stack"], "webapp");
    assert_eq!(drift["outcome"], "drifted");
    assert_eq!(
        drift["drift"],
        serde_json::json!([{ "address": "instance.web-1", "change": "deleted" }])
    );
    assert_eq!(drift["proposed"], serde_json::json!([]));
    assert_eq!(drift["held"], serde_json::json!([]));

    // Report mode plans nothing.
    let plan = d.json_with("/api/stacks/webapp/plan", 404);
    assert_eq!(plan, serde_json::json!({ "stack": "webapp", "plan": null }));

    let cost = d.json("/api/stacks/webapp/cost");
    assert_eq!(cost["currency"], "USD");
    assert!(cost["monthly_cost"].as_f64().is_some(), "{cost}");

    let audit = d.json("/api/stacks/webapp/audit");
    assert_eq!(audit["stack"], "webapp");
    let entry = &audit["entries"][0];
    assert_eq!(entry["action"], "apply", "{audit}");
    assert_eq!(entry["target"], "webapp#1");
    assert_eq!(entry["actor"], "reconciler@chimera");
    assert_eq!(entry["outcome"], "ok");

    let events = d.json("/api/stacks/webapp/events?limit=1");
    assert_eq!(events["events"].as_array().unwrap().len(), 1, "{events}");

    let circuits = d.json("/api/circuits");
    assert!(circuits["circuits"].is_array(), "{circuits}");
}

#[test]
fn the_graph_is_the_applied_resources_by_depth_with_drift_marked_and_no_attributes() {
    let d = Daemon::start(HealMode::Report, None);
    d.drifted();
    let (status, body) = d.get("/api/stacks/webapp/graph");
    assert_eq!(status, 200, "{body}");
    for value in [
        "10.0.1.0/24",
        "ubuntu-24.04",
        "hello from web",
        "attrs",
        "outputs",
    ] {
        assert!(!body.contains(value), "the graph carries `{value}`: {body}");
    }
    let graph: Value = serde_json::from_str(&body).unwrap();
    let nodes = graph["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 8, "{graph}");
    let node = |a: &str| {
        nodes
            .iter()
            .find(|n| n["address"] == a)
            .unwrap_or_else(|| panic!("no node {a}: {graph}"))
            .clone()
    };
    let web1 = node("instance.web-1");
    assert_eq!(web1["status"], "drifted");
    assert_eq!(web1["drift"], "deleted");
    assert_eq!(web1["kind"], "instance");
    assert_eq!(web1["provider"], "local");
    assert_eq!(node("instance.web-2")["status"], "ok");
    assert_eq!(node("network.main")["depth"], 0);
    assert_eq!(node("subnet.public")["depth"], 1);
    assert_eq!(web1["depth"], 2);
    assert_eq!(node("volume.data")["depth"], 3);
    let edges: Vec<(String, String)> = graph["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["from"].as_str().unwrap().to_string(),
                e["to"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for edge in [
        ("instance.web-1", "subnet.public"),
        ("instance.web-1", "firewall.web"),
        ("subnet.public", "network.main"),
        ("volume.data", "instance.web-0"),
    ] {
        assert!(
            edges.contains(&(edge.0.into(), edge.1.into())),
            "no edge {edge:?}: {edges:?}"
        );
    }
}

#[test]
fn a_heal_in_auto_mode_leaves_its_plan_its_generation_and_its_audit_entry() {
    let d = Daemon::start(HealMode::Auto, None);
    let view = d.wait_for("the heal", |v| {
        v["events"]
            .as_array()
            .is_some_and(|e| e.iter().any(|e| e["kind"] == "healed"))
    });
    assert_eq!(view["mode"], "auto");

    let plan = d.json("/api/stacks/webapp/plan");
    assert_eq!(plan["stack"], "webapp");
    assert_eq!(plan["plan"]["format_version"], 2, "{plan}");
    let creates: Vec<&Value> = plan["plan"]["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["action"] == "create")
        .collect();
    assert_eq!(creates.len(), 1, "{plan}");
    assert_eq!(creates[0]["address"], "instance.web-1");

    let g = d.json("/api/stacks/webapp/generations");
    assert_eq!(g["total"], 2, "{g}");
    assert_eq!(g["generations"][0]["serial"], 2, "newest first: {g}");
    assert_eq!(g["generations"][0]["message"], "heal drift (chimera serve)");
    assert_eq!(g["generations"][1]["serial"], 1);
    assert_eq!(
        d.json("/api/stacks/webapp/generations?limit=1")["generations"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    let audit = d.json("/api/stacks/webapp/audit");
    let targets = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "apply")
        .map(|e| e["target"].as_str().unwrap().to_string())
        .collect::<Vec<_>>();
    assert_eq!(targets, ["webapp#2", "webapp#1"], "{audit}");
}

#[test]
fn an_unknown_stack_is_a_json_404_that_says_how_to_list_stacks() {
    let d = Daemon::start(HealMode::Report, None);
    for route in [
        "",
        "/generations",
        "/drift",
        "/plan",
        "/cost",
        "/audit",
        "/graph",
        "/events",
    ] {
        let path = format!("/api/stacks/nosuch{route}");
        let v = d.json_with(&path, 404);
        let error = v["error"].as_str().unwrap_or_else(|| panic!("{path}: {v}"));
        assert!(
            error.contains("nosuch") && error.contains("GET /api/stacks"),
            "{path}: {error}"
        );
    }
}

#[test]
fn pausing_a_stack_shows_in_its_status_until_it_is_resumed() {
    let d = Daemon::start(HealMode::Report, None);
    d.drifted();
    assert_eq!(d.post("/api/stacks/webapp/pause")["paused"], true);
    let v = d.json("/api/stacks/webapp");
    assert_eq!(v["paused"], true);
    assert_eq!(v["paused_all"], false);
    d.wait_for("the paused outcome", |v| v["outcome"] == "paused");

    d.post("/api/stacks/webapp/resume");
    assert_eq!(d.json("/api/stacks/webapp")["paused"], false);
    d.wait_for("a reconcile after resuming", |v| v["outcome"] == "drifted");

    d.post("/api/pause");
    let v = d.json("/api/stacks/webapp");
    assert_eq!(
        (v["paused"].clone(), v["paused_all"].clone()),
        (true.into(), true.into())
    );
    d.post("/api/resume");
    assert_eq!(d.json("/api/stacks/webapp")["paused"], false);
}

#[test]
fn a_configured_token_is_required_on_every_route_but_the_page_itself() {
    let d = Daemon::start(HealMode::Report, Some(TOKEN));
    d.drifted();
    // The page and its assets hold no data: a browser loads them without a header, and the
    // page calls the API with the token from its own address.
    for path in ["/", "/dashboard", "/assets/dashboard.js"] {
        assert_eq!(d.request("GET", path, None).0, 200, "GET {path}");
    }
    let gets = [
        "/api/stacks",
        "/api/stacks/webapp",
        "/api/stacks/webapp/generations",
        "/api/stacks/webapp/graph",
        "/api/stacks/webapp/audit",
        "/api/circuits",
    ];
    for path in gets {
        assert_eq!(
            d.request("GET", path, None).0,
            401,
            "GET {path} without a token"
        );
        assert_eq!(
            d.request("GET", path, Some("wrong")).0,
            401,
            "GET {path} with a wrong token"
        );
        assert_eq!(d.request("GET", path, Some(TOKEN)).0, 200, "GET {path}");
    }
    assert_eq!(d.request("POST", "/api/stacks/webapp/pause", None).0, 401);
    assert_eq!(d.json("/api/stacks/webapp")["paused"], false);
}

#[test]
fn the_dashboard_is_served_from_the_binary_and_loads_nothing_from_elsewhere() {
    let d = Daemon::start(HealMode::Report, None);
    for (path, kind) in [
        ("/", "text/html"),
        ("/dashboard", "text/html"),
        ("/assets/dashboard.js", "text/javascript"),
        ("/assets/dashboard.css", "text/css"),
    ] {
        let response = d.agent.get(&format!("{}{path}", d.base)).call().unwrap();
        assert_eq!(response.status().as_u16(), 200, "{path}");
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        assert!(content_type.starts_with(kind), "{path}: {content_type}");
        if kind == "text/html" {
            let policy = response
                .headers()
                .get("content-security-policy")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            assert!(policy.contains("default-src 'none'"), "{path}: {policy}");
        }
        let body = d.get(path).1;
        // The only absolute URL is SVG's namespace, which names no place to load from.
        let outside = body
            .replace("http://www.w3.org/2000/svg", "")
            .matches("://")
            .count();
        assert_eq!(outside, 0, "{path} names another origin");
    }
    let page = d.get("/").1;
    assert!(page.contains(r#"src="assets/dashboard.js""#), "{page}");
    assert!(page.contains(r#"href="assets/dashboard.css""#), "{page}");
}

/// Where screenshots and other things a person may want to look at after a run go.
fn artifacts() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let dir = target.join("test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Debian's headless chromium showing the dashboard.
struct Chromium {
    browser: Browser,
    page: Page,
    events: tokio::task::JoinHandle<()>,
    _profile: tempfile::TempDir,
}

impl Chromium {
    /// Opens `url` and waits until the JavaScript expression `ready` holds.
    async fn open(url: &str, ready: &str) -> Chromium {
        assert!(
            Path::new(CHROMIUM).exists(),
            "this test drives Debian's headless chromium at {CHROMIUM}, which is not installed: \
             install it with `apt-get install chromium` (.ci/run does so in CI)"
        );
        let profile = tempfile::tempdir().unwrap();
        let config = BrowserConfig::builder()
            .chrome_executable(CHROMIUM)
            .no_sandbox()
            .arg("disable-gpu")
            .arg("disable-dev-shm-usage")
            .user_data_dir(profile.path())
            .window_size(1400, 1100)
            .viewport(Viewport {
                width: 1400,
                height: 1100,
                ..Viewport::default()
            })
            .launch_timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let (browser, mut handler) = Browser::launch(config)
            .await
            .unwrap_or_else(|e| panic!("cannot start {CHROMIUM}: {e}"));
        let events = tokio::spawn(async move { while handler.next().await.is_some() {} });
        let page = browser.new_page(url).await.unwrap();
        let c = Chromium {
            browser,
            page,
            events,
            _profile: profile,
        };
        c.until(ready).await;
        c
    }

    async fn holds(&self, expr: &str) -> bool {
        self.page
            .evaluate(format!("Boolean({expr})"))
            .await
            .unwrap_or_else(|e| panic!("{expr}: {e}"))
            .into_value()
            .unwrap()
    }

    /// Waits (up to 30 s) until the JavaScript expression `expr` holds.
    async fn until(&self, expr: &str) {
        let start = Instant::now();
        while !self.holds(expr).await {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the page never got to `{expr}`: {}",
                self.page.content().await.unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn text(&self, selector: &str) -> String {
        self.page
            .find_element(selector)
            .await
            .unwrap_or_else(|e| panic!("no {selector}: {e}"))
            .inner_text()
            .await
            .unwrap()
            .unwrap_or_default()
    }

    async fn click(&self, selector: &str) {
        self.page
            .find_element(selector)
            .await
            .unwrap_or_else(|e| panic!("no {selector}: {e}"))
            .click()
            .await
            .unwrap();
    }

    async fn close(mut self) {
        self.browser.close().await.unwrap();
        let _ = self.browser.wait().await;
        self.events.abort();
    }
}

#[test]
fn the_dashboard_draws_the_stack_its_drift_and_its_graph_in_chromium() {
    let d = Daemon::start(HealMode::Report, None);
    d.drifted();
    let shot = artifacts().join("dashboard.png");
    let stack = r#".stack[data-stack="webapp"]"#;
    let node = r#"svg .node[data-address="instance.web-1"]"#;

    d.block_on(async {
        let c = Chromium::open(
            &format!("{}/", d.base),
            &format!("document.querySelector('{node}')"),
        )
        .await;
        c.page
            .save_screenshot(ScreenshotParams::builder().full_page(true).build(), &shot)
            .await
            .unwrap();

        assert_eq!(c.text(&format!("{stack} h2.name")).await, "webapp");
        let facts = c.text(&format!("{stack} .facts")).await;
        assert!(
            facts.contains("drifted") && facts.contains("test-replica"),
            "the last reconcile's outcome and the replica: {facts}"
        );
        let event = c
            .text(&format!(
                r#"{stack} .event[data-kind="drift"][data-address="instance.web-1"]"#
            ))
            .await;
        assert!(
            event.contains("instance.web-1") && event.contains("deleted"),
            "{event}"
        );
        let status = c
            .page
            .find_element(node)
            .await
            .unwrap()
            .attribute("data-status")
            .await
            .unwrap();
        assert_eq!(status.as_deref(), Some("drifted"));
        assert_eq!(c.page.find_elements("svg .node").await.unwrap().len(), 8);
        let edges = c.page.find_elements("svg .edge").await.unwrap().len();
        assert_eq!(edges, 10, "one line per dependency");
        assert!(
            c.holds(r#"document.querySelector('.generation[data-serial="1"]')"#)
                .await,
            "the generations timeline"
        );
        assert!(
            c.holds("document.getElementById('problem').hidden").await,
            "the page shows a problem: {}",
            c.text("#problem").await
        );

        // The pause toggle pauses the stack through the API, and the page says so.
        c.click(&format!("{stack} .pause-toggle")).await;
        c.until(&format!(
            r#"document.querySelector('{stack}').dataset.paused === "true""#
        ))
        .await;
        c.close().await;
    });
    assert_eq!(d.json("/api/stacks/webapp")["paused"], true);
    let png = std::fs::read(&shot).unwrap();
    assert!(png.starts_with(b"\x89PNG"), "{} is no PNG", shot.display());
}

#[test]
fn a_parked_resource_is_shown_and_released_with_the_dashboards_button() {
    // Every heal fails (the local cloud's failure knob), and one failure parks.
    let d = Daemon::start_with(HealMode::Auto, None, |cfg| {
        cfg.settings
            .provider_env
            .insert("CHIMERA_LOCAL_FAILURE_RATE".into(), "1".into());
        cfg.backoff.max_failures = 1;
    });
    let view = d.wait_for("a dead letter", |v| {
        v["dead_letters"].as_array().is_some_and(|d| !d.is_empty())
    });
    let dead = &view["dead_letters"][0];
    assert_eq!(dead["address"], "instance.web-1", "{view}");
    assert_eq!(dead["failures"], 1);
    assert!(
        dead["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("InjectedFailure") || e.contains("failure knob")),
        "{view}"
    );
    assert!(dead["since"].as_u64().is_some());
    let graph = d.json("/api/stacks/webapp/graph");
    let node = graph["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["address"] == "instance.web-1")
        .unwrap()
        .clone();
    assert_eq!(node["status"], "parked", "{graph}");

    let item = r#".dead-letter[data-address="instance.web-1"]"#;
    d.block_on(async {
        let c = Chromium::open(
            &format!("{}/", d.base),
            &format!(
                r#"document.querySelector('{item} button.release') && document.querySelector('svg .node[data-address="instance.web-1"][data-status="parked"]')"#
            ),
        )
        .await;
        c.page
            .save_screenshot(
                ScreenshotParams::builder().full_page(true).build(),
                artifacts().join("dashboard-parked.png"),
            )
            .await
            .unwrap();
        c.click(&format!("{item} button.release")).await;
        // Released, it is healed (and fails, and is parked) again from the next tick; the
        // release itself stays in the events.
        c.until(r#"document.querySelector('.event[data-kind="released"][data-address="instance.web-1"]')"#)
            .await;
        c.close().await;
    });
    let events = d.json("/api/stacks/webapp/events");
    let released = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "released")
        .unwrap_or_else(|| panic!("no release: {events}"))
        .clone();
    assert_eq!(released["address"], "instance.web-1");
    assert!(
        released["detail"]
            .as_str()
            .unwrap()
            .contains("released by a person"),
        "{released}"
    );
}
