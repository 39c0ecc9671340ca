//! The daemon's provider guard: delegation, the circuit's states, the token bucket and the
//! call metrics. Time is tokio's paused clock: nothing here depends on how fast the machine is.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chimera_model::kinds::{NetworkSpec, Spec};
use chimera_model::{Address, Kind, ProviderName};
use chimera_providers::local::{Knobs, LocalCloud};
use chimera_providers::{
    CloudRef, FailureClass, Observed, Provider, ProviderError, Request, Result, Violation,
    with_retries,
};
use chimera_serve::guard::{CIRCUIT_OPEN, CircuitStatus, Guard, GuardConfig};
use prometheus_client::registry::Registry;
use serde_json::Map;
use tokio::sync::Semaphore;
use tokio::time::Instant;

/// A provider that records its calls, fails with whatever it is told to, and can be held in
/// the middle of a call.
struct Fake {
    name: ProviderName,
    verbs: Mutex<Vec<&'static str>>,
    calls: AtomicUsize,
    errors: Mutex<VecDeque<ProviderError>>,
    latency: Duration,
    hold: AtomicBool,
    release: Semaphore,
}

impl Fake {
    fn new(name: ProviderName) -> Arc<Fake> {
        Arc::new(Fake {
            name,
            verbs: Mutex::new(Vec::new()),
            calls: AtomicUsize::new(0),
            errors: Mutex::new(VecDeque::new()),
            latency: Duration::ZERO,
            hold: AtomicBool::new(false),
            release: Semaphore::new(0),
        })
    }

    fn slow(name: ProviderName, latency: Duration) -> Arc<Fake> {
        let mut f = Fake::new(name);
        Arc::get_mut(&mut f).expect("fresh").latency = latency;
        f
    }

    /// The next `n` calls fail with `e`.
    fn fail(&self, n: usize, e: ProviderError) {
        let mut q = self.errors.lock().unwrap();
        q.extend(std::iter::repeat_n(e, n));
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    async fn step(&self, verb: &'static str) -> Result<()> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.verbs.lock().unwrap().push(verb);
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
        if self.hold.load(Ordering::SeqCst) {
            self.release.acquire().await.expect("open").forget();
        }
        match self.errors.lock().unwrap().pop_front() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

fn observed(id: &str) -> Observed {
    Observed {
        cloud_id: id.to_string(),
        kind: Kind::Network,
        native_region: "r1".into(),
        attrs: Map::new(),
        outputs: Map::new(),
        tags: BTreeMap::new(),
    }
}

#[async_trait]
impl Provider for Fake {
    fn name(&self) -> ProviderName {
        self.name
    }
    fn validate(&self, req: &Request<'_>) -> Vec<Violation> {
        self.verbs.lock().unwrap().push("validate");
        vec![Violation::new(
            "name",
            format!("{} is too long", req.address),
        )]
    }
    async fn create(&self, req: &Request<'_>) -> Result<Observed> {
        self.step("create").await?;
        Ok(observed(&format!("created:{}", req.token)))
    }
    async fn read(&self, at: &CloudRef) -> Result<Option<Observed>> {
        self.step("read").await?;
        Ok((at.id != "gone").then(|| observed(&format!("read:{}", at.id))))
    }
    async fn update(&self, _req: &Request<'_>, cloud_id: &str) -> Result<Observed> {
        self.step("update").await?;
        Ok(observed(&format!("updated:{cloud_id}")))
    }
    async fn delete(&self, _at: &CloudRef) -> Result<()> {
        self.step("delete").await
    }
    async fn find_by_token(
        &self,
        _kind: Kind,
        region: &str,
        token: &str,
    ) -> Result<Option<Observed>> {
        self.step("find_by_token").await?;
        Ok(Some(observed(&format!("found:{region}:{token}"))))
    }
    async fn list_managed(&self, stack: &str) -> Result<Vec<Observed>> {
        self.step("list_managed").await?;
        Ok(vec![observed(&format!("managed:{stack}"))])
    }
    async fn observe(&self, items: &[CloudRef]) -> Result<Vec<Option<Observed>>> {
        self.step("observe").await?;
        Ok(items
            .iter()
            .map(|at| Some(observed(&format!("observed:{}", at.id))))
            .collect())
    }
}

fn cfg(failures_to_open: u32) -> GuardConfig {
    GuardConfig {
        calls_per_second: 1000.0,
        burst: 1000,
        failures_to_open,
        open_for: Duration::from_secs(30),
    }
}

/// A guard on a registry prefixed like the daemon's.
fn guard(cfg: GuardConfig) -> (Arc<Guard>, Registry) {
    let mut registry = Registry::with_prefix("chimera");
    let g = Guard::new(cfg, &mut registry);
    (g, registry)
}

fn metrics(registry: &Registry) -> String {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, registry).expect("encode");
    out
}

/// The value of the sample line that starts with `series ` (name and labels).
fn sample(text: &str, series: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(str::to_string)
}

fn at(id: &str) -> CloudRef {
    CloudRef::new(Kind::Network, id, "r1")
}

fn throttled() -> ProviderError {
    ProviderError::Retryable("RequestLimitExceeded: request rate exceeded".into())
}

fn circuit(g: &Guard, provider: &str) -> CircuitStatus {
    g.circuits()
        .into_iter()
        .find(|c| c.provider == provider)
        .expect("the provider has a circuit")
}

fn is_refusal(e: &ProviderError) -> bool {
    matches!(e, ProviderError::Failed { code, .. } if code == CIRCUIT_OPEN)
}

#[tokio::test(start_paused = true)]
async fn every_verb_is_delegated_and_its_result_returned_unchanged() {
    let (g, _r) = guard(cfg(5));
    let fake = Fake::new(ProviderName::Local);
    let p = g.wrap(fake.clone());
    assert_eq!(p.name(), ProviderName::Local);

    let address = Address::new(Kind::Network, "net");
    let spec = Spec::Network(NetworkSpec {
        cidr: "10.0.0.0/16".into(),
    });
    let (tags, native) = (BTreeMap::new(), Map::new());
    let req = Request {
        stack: "s",
        address: &address,
        native_region: "r1",
        spec: &spec,
        tags: &tags,
        native: &native,
        token: "tok",
    };

    assert_eq!(
        p.validate(&req),
        vec![Violation::new("name", "network.net is too long")]
    );
    assert_eq!(p.create(&req).await, Ok(observed("created:tok")));
    assert_eq!(p.read(&at("a")).await, Ok(Some(observed("read:a"))));
    assert_eq!(p.read(&at("gone")).await, Ok(None));
    assert_eq!(p.update(&req, "i-1").await, Ok(observed("updated:i-1")));
    assert_eq!(p.delete(&at("a")).await, Ok(()));
    assert_eq!(
        p.find_by_token(Kind::Network, "r1", "tok").await,
        Ok(Some(observed("found:r1:tok")))
    );
    assert_eq!(p.list_managed("s").await, Ok(vec![observed("managed:s")]));
    assert_eq!(
        p.observe(&[at("x"), at("y")]).await,
        Ok(vec![
            Some(observed("observed:x")),
            Some(observed("observed:y"))
        ])
    );
    let refused = ProviderError::Failed {
        code: "InvalidParameterValue".into(),
        message: "bad cidr".into(),
    };
    fake.fail(1, refused.clone());
    assert_eq!(p.delete(&at("a")).await, Err(refused));

    assert_eq!(
        *fake.verbs.lock().unwrap(),
        [
            "validate",
            "create",
            "read",
            "read",
            "update",
            "delete",
            "find_by_token",
            "list_managed",
            "observe",
            "delete"
        ]
    );
}

#[tokio::test]
async fn a_local_cloud_works_through_the_guard() {
    let dir = tempfile::tempdir().expect("tempdir");
    let local = LocalCloud::open(&dir.path().join("cloud.db"), Knobs::default())
        .await
        .expect("open the local cloud");
    let (g, _r) = guard(GuardConfig::default());
    let p = g.layer().wrap(Arc::new(local));

    let address = Address::new(Kind::Network, "net");
    let spec = Spec::Network(NetworkSpec {
        cidr: "10.0.0.0/16".into(),
    });
    let (tags, native) = (BTreeMap::new(), Map::new());
    let req = Request {
        stack: "s",
        address: &address,
        native_region: "local-1",
        spec: &spec,
        tags: &tags,
        native: &native,
        token: "tok-1",
    };
    let made = p.create(&req).await.expect("create");
    let read = p.read(&made.at()).await.expect("read");
    assert_eq!(read.as_ref().map(|o| &o.cloud_id), Some(&made.cloud_id));
    let managed = p.list_managed("s").await.expect("list");
    assert_eq!(managed.len(), 1);
    p.delete(&made.at()).await.expect("delete");
    assert_eq!(p.read(&made.at()).await, Ok(None));
    assert_eq!(circuit(&g, "local").state, "closed");
}

#[tokio::test(start_paused = true)]
async fn transient_failures_open_the_circuit_and_refused_calls_never_reach_the_provider() {
    let (g, _r) = guard(cfg(3));
    let fake = Fake::new(ProviderName::Local);
    let p = g.wrap(fake.clone());
    fake.fail(2, throttled());
    fake.fail(1, ProviderError::Retryable("InternalError: oops".into()));

    for _ in 0..3 {
        let e = p.read(&at("a")).await.expect_err("scripted failure");
        assert!(!is_refusal(&e), "{e}");
    }
    assert_eq!(fake.calls(), 3);
    let c = circuit(&g, "local");
    assert_eq!((c.state, c.consecutive_failures), ("open", 3));
    assert!(c.open_until_unix.is_some());

    for _ in 0..5 {
        let e = read_err(&p).await;
        assert!(is_refusal(&e), "{e}");
        assert_eq!(e.class(), FailureClass::Retryable);
        assert!(e.to_string().contains("circuit open"), "{e}");
    }
    assert_eq!(fake.calls(), 3, "refused calls reached the provider");
}

/// The error of a read that must fail.
async fn read_err(p: &Arc<dyn Provider>) -> ProviderError {
    p.read(&at("a")).await.expect_err("the read fails")
}

#[tokio::test(start_paused = true)]
async fn the_engine_retry_loop_stops_at_once_on_an_open_circuit() {
    let (g, r) = guard(cfg(4));
    let fake = Fake::new(ProviderName::Local);
    let p = g.wrap(fake.clone());
    // Failing for ever: the retries open the circuit, and the refusal ends them.
    fake.fail(100, throttled());
    let a = at("a");
    let e = with_retries(|| p.read(&a)).await.expect_err("fails");
    assert!(is_refusal(&e), "{e}");
    assert_eq!(fake.calls(), 4);

    // Already open: one refusal, no retry.
    let e = with_retries(|| p.delete(&a)).await.expect_err("fails");
    assert!(is_refusal(&e), "{e}");
    assert_eq!(fake.calls(), 4);
    let text = metrics(&r);
    assert_eq!(
        sample(
            &text,
            r#"chimera_provider_calls_refused_total{provider="local"}"#
        )
        .as_deref(),
        Some("2")
    );
}

#[tokio::test(start_paused = true)]
async fn errors_of_the_request_do_not_open_the_circuit_and_a_success_resets_the_count() {
    let (g, _r) = guard(cfg(3));
    let fake = Fake::new(ProviderName::Local);
    let p = g.wrap(fake.clone());
    for code in [
        "InvalidParameterValue",
        "InvalidVpcID.NotFound",
        "DependencyViolation",
        "VcpuLimitExceeded",
    ] {
        fake.fail(
            5,
            ProviderError::Failed {
                code: code.into(),
                message: "no".into(),
            },
        );
    }
    for _ in 0..20 {
        let e = p.read(&at("a")).await.expect_err("scripted failure");
        assert!(!is_refusal(&e), "{e}");
    }
    let c = circuit(&g, "local");
    assert_eq!((c.state, c.consecutive_failures), ("closed", 0));

    fake.fail(2, throttled());
    for _ in 0..2 {
        p.read(&at("a")).await.expect_err("throttled");
    }
    assert_eq!(circuit(&g, "local").consecutive_failures, 2);
    p.read(&at("a")).await.expect("a success");
    assert_eq!(circuit(&g, "local").consecutive_failures, 0);
    fake.fail(2, throttled());
    for _ in 0..2 {
        p.read(&at("a")).await.expect_err("throttled");
    }
    let c = circuit(&g, "local");
    assert_eq!((c.state, c.consecutive_failures), ("closed", 2));
    assert_eq!(fake.calls(), 25);
}

/// Opens `fake`'s circuit through `p` with `n` throttled calls.
async fn open(p: &Arc<dyn Provider>, fake: &Fake, n: usize) {
    fake.fail(n, throttled());
    for _ in 0..n {
        p.read(&at("a")).await.expect_err("throttled");
    }
}

#[tokio::test(start_paused = true)]
async fn after_open_for_a_trial_success_closes_the_circuit() {
    let (g, r) = guard(cfg(2));
    let fake = Fake::new(ProviderName::Local);
    let p = g.wrap(fake.clone());
    open(&p, &fake, 2).await;
    assert_eq!(circuit(&g, "local").state, "open");

    tokio::time::advance(Duration::from_secs(29)).await;
    assert!(is_refusal(&p.read(&at("a")).await.expect_err("open")));
    assert_eq!(fake.calls(), 2);

    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(circuit(&g, "local").state, "half-open");
    assert_eq!(
        p.read(&at("a")).await,
        Ok(Some(observed("read:a"))),
        "the trial call"
    );
    assert_eq!(fake.calls(), 3);
    let c = circuit(&g, "local");
    assert_eq!(
        c,
        CircuitStatus {
            provider: "local".into(),
            state: "closed",
            consecutive_failures: 0,
            open_until_unix: None,
        }
    );
    p.read(&at("a")).await.expect("closed again");
    assert_eq!(fake.calls(), 4);
    assert_eq!(
        sample(
            &metrics(&r),
            r#"chimera_provider_circuit_open{provider="local"}"#
        )
        .as_deref(),
        Some("0")
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_trial_opens_the_circuit_for_another_open_for() {
    let (g, _r) = guard(cfg(2));
    let fake = Fake::new(ProviderName::Local);
    let p = g.wrap(fake.clone());
    open(&p, &fake, 2).await;
    tokio::time::advance(Duration::from_secs(30)).await;

    fake.fail(1, throttled());
    let e = p.read(&at("a")).await.expect_err("the trial fails");
    assert!(!is_refusal(&e), "{e}");
    assert_eq!(fake.calls(), 3);
    let c = circuit(&g, "local");
    assert_eq!((c.state, c.consecutive_failures), ("open", 3));

    tokio::time::advance(Duration::from_secs(29)).await;
    assert!(is_refusal(&p.read(&at("a")).await.expect_err("open")));
    assert_eq!(fake.calls(), 3);
    tokio::time::advance(Duration::from_secs(1)).await;
    p.read(&at("a")).await.expect("the second trial");
    assert_eq!(circuit(&g, "local").state, "closed");
}

#[tokio::test(start_paused = true)]
async fn only_one_trial_goes_through_and_a_cancelled_trial_makes_way_for_the_next() {
    let (g, _r) = guard(cfg(1));
    let fake = Fake::new(ProviderName::Local);
    let p = g.wrap(fake.clone());
    open(&p, &fake, 1).await;
    tokio::time::advance(Duration::from_secs(30)).await;

    // A trial held in the provider: every other call is refused meanwhile.
    fake.hold.store(true, Ordering::SeqCst);
    let trial = tokio::spawn({
        let p = p.clone();
        async move { p.read(&at("t")).await }
    });
    while fake.calls() < 2 {
        tokio::task::yield_now().await;
    }
    let e = p.read(&at("a")).await.expect_err("refused");
    assert!(is_refusal(&e) && e.to_string().contains("half-open"), "{e}");
    assert_eq!(circuit(&g, "local").state, "half-open");
    fake.release.add_permits(1);
    assert_eq!(trial.await.expect("join"), Ok(Some(observed("read:t"))));
    assert_eq!(circuit(&g, "local").state, "closed");

    // A trial cancelled before its answer: the next call is the trial.
    fake.hold.store(false, Ordering::SeqCst);
    open(&p, &fake, 1).await;
    tokio::time::advance(Duration::from_secs(30)).await;
    fake.hold.store(true, Ordering::SeqCst);
    let cut = tokio::time::timeout(Duration::from_secs(1), p.read(&at("t"))).await;
    assert!(cut.is_err(), "the held trial was cut off");
    assert_eq!(circuit(&g, "local").state, "half-open");
    fake.hold.store(false, Ordering::SeqCst);
    let before = fake.calls();
    p.read(&at("a")).await.expect("the next trial");
    assert_eq!(fake.calls(), before + 1);
    assert_eq!(circuit(&g, "local").state, "closed");
}

#[tokio::test(start_paused = true)]
async fn circuits_are_shared_by_every_wrap_of_a_provider_and_kept_apart_between_providers() {
    let (g, _r) = guard(cfg(2));
    let layer = g.layer();
    let first = Fake::new(ProviderName::Local);
    let p = layer.wrap(first.clone());
    open(&p, &first, 2).await;

    // The next run builds its provider afresh: the circuit is still open.
    let second = Fake::new(ProviderName::Local);
    let again = layer.wrap(second.clone());
    assert!(is_refusal(&again.read(&at("a")).await.expect_err("open")));
    assert_eq!(second.calls(), 0);

    let aws = Fake::new(ProviderName::Aws);
    let other = layer.wrap(aws.clone());
    other.read(&at("a")).await.expect("aws is not local");
    let names: Vec<_> = g
        .circuits()
        .into_iter()
        .map(|c| (c.provider, c.state))
        .collect();
    assert_eq!(
        names,
        [("aws".to_string(), "closed"), ("local".to_string(), "open")]
    );
    let json = serde_json::to_value(circuit(&g, "aws")).expect("json");
    assert_eq!(
        json,
        serde_json::json!({
            "provider": "aws",
            "state": "closed",
            "consecutive_failures": 0,
            "open_until_unix": null
        })
    );
}

#[tokio::test(start_paused = true)]
async fn metrics_count_latency_errors_by_class_circuits_and_refusals() {
    let (g, r) = guard(cfg(2));
    let fake = Fake::slow(ProviderName::Local, Duration::from_millis(50));
    let p = g.wrap(fake.clone());
    assert_eq!(
        sample(
            &metrics(&r),
            r#"chimera_provider_circuit_open{provider="local"}"#
        )
        .as_deref(),
        Some("0"),
        "a provider's circuit is shown from its first wrap"
    );

    p.read(&at("a")).await.expect("read");
    fake.fail(
        1,
        ProviderError::Failed {
            code: "InvalidParameterValue".into(),
            message: "no".into(),
        },
    );
    read_err(&p).await;
    open(&p, &fake, 2).await;
    read_err(&p).await;
    p.list_managed("s").await.expect_err("refused");

    let text = metrics(&r);
    let expect = [
        (
            r#"chimera_provider_call_duration_seconds_count{provider="local",verb="read"}"#,
            "4",
        ),
        (
            r#"chimera_provider_call_duration_seconds_sum{provider="local",verb="read"}"#,
            "0.2",
        ),
        (
            r#"chimera_provider_call_duration_seconds_bucket{le="0.064",provider="local",verb="read"}"#,
            "4",
        ),
        (
            r#"chimera_provider_call_duration_seconds_bucket{le="0.032",provider="local",verb="read"}"#,
            "0",
        ),
        (
            r#"chimera_provider_call_errors_total{provider="local",verb="read",class="permanent"}"#,
            "1",
        ),
        (
            r#"chimera_provider_call_errors_total{provider="local",verb="read",class="throttled"}"#,
            "2",
        ),
        (r#"chimera_provider_circuit_open{provider="local"}"#, "1"),
        (
            r#"chimera_provider_calls_refused_total{provider="local"}"#,
            "2",
        ),
    ];
    for (series, value) in expect {
        assert_eq!(
            sample(&text, series).as_deref(),
            Some(value),
            "{series} in\n{text}"
        );
    }
    for family in [
        "# TYPE chimera_provider_call_duration_seconds histogram",
        "# TYPE chimera_provider_call_errors counter",
        "# TYPE chimera_provider_circuit_open gauge",
        "# TYPE chimera_provider_calls_refused counter",
    ] {
        assert!(text.contains(family), "{family} in\n{text}");
    }
    assert!(
        !text.contains(r#"verb="list_managed""#),
        "a refused call is not a provider call:\n{text}"
    );
}

#[tokio::test(start_paused = true)]
async fn the_token_bucket_makes_the_call_past_the_burst_wait_for_a_token() {
    let (g, _r) = guard(GuardConfig {
        calls_per_second: 10.0,
        burst: 5,
        failures_to_open: 5,
        open_for: Duration::from_secs(30),
    });
    let fake = Fake::new(ProviderName::Local);
    let p = g.wrap(fake.clone());
    let start = Instant::now();
    for _ in 0..5 {
        p.read(&at("a")).await.expect("read");
    }
    assert_eq!(start.elapsed(), Duration::ZERO, "the burst goes at once");

    // The sixth waits for one token: 1/10 s (tokio's timer rounds to the millisecond).
    let sixth = tokio::spawn({
        let p = p.clone();
        async move { p.read(&at("a")).await }
    });
    tokio::time::advance(Duration::from_millis(50)).await;
    assert_eq!(fake.calls(), 5, "the sixth call went before its token");
    sixth.await.expect("join").expect("read");
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(100) && waited <= Duration::from_millis(102),
        "{waited:?}"
    );
    assert_eq!(fake.calls(), 6);

    // Each provider has its own bucket: aws is not slowed by local's.
    let aws = g.wrap(Fake::new(ProviderName::Aws));
    let t = Instant::now();
    for _ in 0..5 {
        aws.read(&at("a")).await.expect("read");
    }
    assert_eq!(t.elapsed(), Duration::ZERO);
}
