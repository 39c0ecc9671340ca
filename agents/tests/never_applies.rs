//! Agents never apply: every agent entry point runs with every provider wrapped in a layer that
//! fails any write (and counts it), on a drifted stack, and none is attempted — neither through
//! the read-only view (its refusals are counted too) nor around it. State gains no generation.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use chimera_agents::heal::{Prepared, assess};
use chimera_agents::planner::OfflinePlanner;
use chimera_agents::propose::{self, Proposal};
use chimera_agents::verify::{verify, verify_adoption};
use chimera_agents::{Draft, Edit, Proposer, context::gather};
use chimera_model::{Kind, ProviderName};
use chimera_providers::{CloudRef, Observed, Provider, ProviderError, Request, Violation};
use chimera_workflow::{ApplyRequest, LocalChange, ProviderLayer, Settings, Stack};

type Result<T> = std::result::Result<T, ProviderError>;

/// Fails every create, update and delete, and counts them.
struct FailOnWrite {
    inner: Arc<dyn Provider>,
    writes: Arc<AtomicUsize>,
}

impl FailOnWrite {
    fn write<T>(&self, verb: &str) -> Result<T> {
        self.writes.fetch_add(1, Ordering::SeqCst);
        Err(ProviderError::Failed {
            code: "Test.WriteAttempted".into(),
            message: format!("an agent entry point attempted a {verb}"),
        })
    }
}

#[async_trait]
impl Provider for FailOnWrite {
    fn name(&self) -> ProviderName {
        self.inner.name()
    }
    fn validate(&self, req: &Request<'_>) -> Vec<Violation> {
        self.inner.validate(req)
    }
    async fn create(&self, _req: &Request<'_>) -> Result<Observed> {
        self.write("create")
    }
    async fn read(&self, at: &CloudRef) -> Result<Option<Observed>> {
        self.inner.read(at).await
    }
    async fn update(&self, _req: &Request<'_>, _id: &str) -> Result<Observed> {
        self.write("update")
    }
    async fn delete(&self, _at: &CloudRef) -> Result<()> {
        self.write("delete")
    }
    async fn find_by_token(
        &self,
        kind: Kind,
        region: &str,
        token: &str,
    ) -> Result<Option<Observed>> {
        self.inner.find_by_token(kind, region, token).await
    }
    async fn list_managed(&self, stack: &str) -> Result<Vec<Observed>> {
        self.inner.list_managed(stack).await
    }
    async fn observe(&self, items: &[CloudRef]) -> Result<Vec<Option<Observed>>> {
        self.inner.observe(items).await
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn guarded(writes: &Arc<AtomicUsize>) -> Settings {
    let w = writes.clone();
    Settings {
        provider_layer: Some(ProviderLayer(Arc::new(move |inner| {
            Arc::new(FailOnWrite {
                inner,
                writes: w.clone(),
            }) as Arc<dyn Provider>
        }))),
        ..Settings::default()
    }
}

fn edit(old: &str, new: &str) -> Edit {
    Edit {
        file: "main.ncl".into(),
        old: old.into(),
        new: new.into(),
    }
}

/// A proposer that drafts one given draft every round.
struct Fixed(Draft);

#[async_trait]
impl Proposer for Fixed {
    fn name(&self) -> String {
        "fixed".into()
    }
    async fn propose(
        &self,
        _ctx: &chimera_agents::Context,
    ) -> std::result::Result<Draft, chimera_agents::AgentError> {
        Ok(self.0.clone())
    }
}

async fn run(
    dir: &Path,
    settings: &Settings,
    intent: &str,
    p: &dyn Proposer,
    adopt: Option<BTreeSet<String>>,
) -> Proposal {
    propose::propose(propose::Request {
        dir: dir.to_path_buf(),
        intent: intent.into(),
        settings: settings.clone(),
        proposer: p,
        memory: None,
        destination: None,
        max_rounds: 2,
        adopt,
    })
    .await
    .unwrap()
}

#[test]
fn no_agent_entry_point_attempts_a_write() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/webapp/main.ncl"),
            dir.path().join("main.ncl"),
        )
        .unwrap();
        let mut stack = Stack::open(dir.path(), Settings::default());
        assert!(
            stack
                .apply(
                    &ApplyRequest {
                        refresh: false,
                        ..ApplyRequest::default()
                    },
                    |_| true
                )
                .await
                .unwrap()
                .ok()
        );
        // Drift an auto-healing daemon would put back (an agent must not).
        stack
            .local_mutate(&"instance.web-1".parse().unwrap(), &LocalChange::Delete)
            .await
            .unwrap();
        stack
            .local_mutate(
                &"subnet.public".parse().unwrap(),
                &LocalChange::Set(vec![("public".into(), serde_json::json!(false))]),
            )
            .await
            .unwrap();
        let generations = stack.history().await.unwrap().len();

        let writes = Arc::new(AtomicUsize::new(0));
        let settings = guarded(&writes);
        let d = dir.path();

        let (ctx, _) = gather(d, &settings, "grow the data volume", Vec::new())
            .await
            .unwrap();
        assert!(!ctx.files.is_empty());

        let grow = Draft {
            edits: vec![edit("size_gib = 50", "size_gib = 70")],
            summary: "grow".into(),
            target: None,
        };
        let v = verify(d, &settings, &grow, 0.0).await.unwrap();
        assert!(v.passed(), "{:?}", v.feedback);
        assert_eq!(v.refused_writes, 0);

        let p = run(
            d,
            &settings,
            "grow the data volume",
            &Fixed(grow.clone()),
            None,
        )
        .await;
        assert_eq!(p.refused_writes, 0);
        // A draft that replaces and deletes resources: still only planned.
        let shrink = Draft {
            edits: vec![edit("      3\n", "      1\n")],
            summary: "one web server".into(),
            target: None,
        };
        let p = run(d, &settings, "scale web to 1", &Fixed(shrink), None).await;
        assert_eq!(p.refused_writes, 0, "{}", p.body);

        let offline = OfflinePlanner::default();
        let p = run(d, &settings, "scale web to 5", &offline, None).await;
        assert_eq!(p.refused_writes, 0, "{}", p.body);

        let a = assess(d, &settings, chimera_workflow::HealMode::Propose)
            .await
            .unwrap();
        assert_eq!(a.drift.len(), 2);
        let adopted: BTreeSet<String> = ["subnet.public".to_string()].into();
        let v = verify_adoption(d, &settings, &a.adopt, &adopted)
            .await
            .unwrap();
        assert_eq!(v.refused_writes, 0);
        let prepared = Prepared {
            draft: a.adopt.clone(),
            name: "adopt".into(),
        };
        let p = run(d, &settings, "adopt drift", &prepared, Some(adopted)).await;
        assert_eq!(p.refused_writes, 0, "{}", p.body);

        assert_eq!(
            writes.load(Ordering::SeqCst),
            0,
            "no write reached a provider"
        );
        assert_eq!(
            stack.history().await.unwrap().len(),
            generations,
            "no generation was opened"
        );
        // The drift is still there: nothing healed it.
        let inventory = Stack::open(d, Settings::default())
            .local_inventory()
            .await
            .unwrap();
        assert_eq!(inventory.len(), 7);
    });
}
