//! The agents' view of the workflow: compile, read state and the clouds, plan, price and check
//! policies — and nothing that changes a cloud or state. The type has no apply, destroy,
//! import, rollback, refresh or recover, and every provider it builds is wrapped so that a
//! create, update or delete is refused (and counted) before it reaches the cloud.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use chimera_compiler::source::Source;
use chimera_engine::Drift;
use chimera_model::graph::Graph;
use chimera_model::{Address, Diagnostic, Kind, ProviderName, SourceMap, StateResource};
use chimera_plans::findings::Finding;
use chimera_plans::plan::Plan;
use chimera_providers::{
    CloudRef, Observed, Provider, ProviderError, Request, Result as ProviderResult, Utilisation,
    Violation,
};
use chimera_state::GenerationInfo;

use crate::cost::StackCost;
use crate::error::Error;
use crate::settings::{ProviderLayer, Settings};
use crate::stack::Stack;

/// The code of a write a read-only provider refused.
pub const READ_ONLY: &str = "ReadOnly.WriteRefused";

/// A stack an agent may look at but not change.
pub struct ReadOnlyStack {
    inner: Stack,
    refused: Arc<AtomicUsize>,
}

impl ReadOnlyStack {
    /// The stack at `path` on disk.
    pub fn open(path: impl Into<PathBuf>, settings: Settings) -> Self {
        let refused = Arc::new(AtomicUsize::new(0));
        let settings = read_only(settings, refused.clone());
        ReadOnlyStack {
            inner: Stack::open(path, settings),
            refused,
        }
    }

    /// The stack at `path` as `source` holds it (an overlay of proposed edits).
    pub fn open_in(source: Arc<dyn Source>, path: impl Into<PathBuf>, settings: Settings) -> Self {
        let refused = Arc::new(AtomicUsize::new(0));
        let settings = read_only(settings, refused.clone());
        ReadOnlyStack {
            inner: Stack::open_in(source, path, settings),
            refused,
        }
    }

    /// Writes its providers refused so far (an agent that tried to change a cloud).
    pub fn refused_writes(&self) -> usize {
        self.refused.load(Ordering::SeqCst)
    }

    pub fn dir(&self) -> &Path {
        self.inner.dir()
    }

    pub fn name(&mut self) -> Result<String, Error> {
        self.inner.name()
    }

    pub fn compile(&mut self) -> Result<&Graph, Error> {
        self.inner.compile()
    }

    /// The compile warnings collected so far, with their sources.
    pub fn take_warnings(&mut self) -> (Vec<Diagnostic>, SourceMap) {
        self.inner.take_warnings()
    }

    /// The stack's plan against its state; `refresh` reads every resource from its cloud first.
    pub async fn plan(&mut self, refresh: bool) -> Result<Plan, Error> {
        Ok(self.inner.plan_full(false, refresh, false).await?.0)
    }

    pub fn cost(&mut self) -> Result<StackCost, Error> {
        self.inner.cost()
    }

    pub fn check_policies(&self, plan: &Plan) -> Result<Vec<Finding>, Error> {
        self.inner.check_policies(plan)
    }

    pub fn policy_dir(&self) -> PathBuf {
        self.inner.policy_dir()
    }

    pub async fn state_rows(&mut self) -> Result<Vec<StateResource>, Error> {
        self.inner.state_rows().await
    }

    pub async fn history(&mut self) -> Result<Vec<GenerationInfo>, Error> {
        self.inner.history().await
    }

    /// What the clouds changed outside Chimera since the last applied generation (nothing is
    /// recorded).
    pub async fn drift(&mut self) -> Result<Vec<Drift>, Error> {
        let stack = self.inner.name()?;
        let (store, providers) = self.inner.state_and_providers().await?;
        let current = store.current(&stack).await?;
        if current.is_empty() {
            return Ok(Vec::new());
        }
        Ok(chimera_engine::drift_of(providers, &current).await?)
    }

    /// The CPU and memory utilisation of the stack's instances as state knows them, per
    /// address; an instance whose cloud does not report utilisation is left out.
    pub async fn utilisation(&mut self) -> Result<BTreeMap<Address, Utilisation>, Error> {
        let stack = self.inner.name()?;
        let (store, providers) = self.inner.state_and_providers().await?;
        let current = store.current(&stack).await?;
        let mut out = BTreeMap::new();
        for row in current.iter().filter(|r| r.address.kind == Kind::Instance) {
            let provider = providers.get(row.provider)?;
            let at = CloudRef::new(
                row.address.kind,
                row.cloud_id.clone(),
                row.native_region.clone(),
            );
            let u = provider.utilisation(&at).await.map_err(|e| {
                Error::from(chimera_engine::EngineError::Call(
                    chimera_engine::CallFailure::of(&row.address, "read", &e),
                ))
            })?;
            if let Some(u) = u {
                out.insert(row.address.clone(), u);
            }
        }
        Ok(out)
    }

    /// Everything the clouds hold tagged for the stack (to find unmanaged resources).
    pub async fn managed_in_cloud(&mut self) -> Result<Vec<Observed>, Error> {
        let stack = self.inner.name()?;
        let names: Vec<ProviderName> = ProviderName::ALL.to_vec();
        let providers = self.inner.providers().await?;
        let mut out = Vec::new();
        for n in names {
            if let Ok(p) = providers.get(n) {
                out.extend(p.list_managed(&stack).await.map_err(|e| {
                    Error::from(chimera_engine::EngineError::Call(
                        chimera_engine::CallFailure::listing(n, &e),
                    ))
                })?);
            }
        }
        Ok(out)
    }
}

/// `settings` with every provider wrapped read-only (around the caller's own layer, if any).
fn read_only(mut settings: Settings, refused: Arc<AtomicUsize>) -> Settings {
    let outer = settings.provider_layer.take();
    settings.provider_layer = Some(ProviderLayer(Arc::new(move |p| {
        let inner = match &outer {
            Some(l) => l.wrap(p),
            None => p,
        };
        Arc::new(ReadOnlyProvider {
            inner,
            refused: refused.clone(),
        }) as Arc<dyn Provider>
    })));
    settings
}

/// A provider that reads through and refuses every write.
pub struct ReadOnlyProvider {
    inner: Arc<dyn Provider>,
    refused: Arc<AtomicUsize>,
}

impl ReadOnlyProvider {
    fn refuse<T>(&self, verb: &str) -> ProviderResult<T> {
        self.refused.fetch_add(1, Ordering::SeqCst);
        Err(ProviderError::Failed {
            code: READ_ONLY.into(),
            message: format!(
                "a read-only view cannot {verb} on {}: agents propose, the reviewed plan or the daemon applies",
                self.inner.name().as_str()
            ),
        })
    }
}

#[async_trait]
impl Provider for ReadOnlyProvider {
    fn name(&self) -> ProviderName {
        self.inner.name()
    }

    fn validate(&self, req: &Request<'_>) -> Vec<Violation> {
        self.inner.validate(req)
    }

    async fn create(&self, _req: &Request<'_>) -> ProviderResult<Observed> {
        self.refuse("create")
    }

    async fn read(&self, at: &CloudRef) -> ProviderResult<Option<Observed>> {
        self.inner.read(at).await
    }

    async fn update(&self, _req: &Request<'_>, _cloud_id: &str) -> ProviderResult<Observed> {
        self.refuse("update")
    }

    async fn delete(&self, _at: &CloudRef) -> ProviderResult<()> {
        self.refuse("delete")
    }

    async fn find_by_token(
        &self,
        kind: Kind,
        region: &str,
        token: &str,
    ) -> ProviderResult<Option<Observed>> {
        self.inner.find_by_token(kind, region, token).await
    }

    async fn list_managed(&self, stack: &str) -> ProviderResult<Vec<Observed>> {
        self.inner.list_managed(stack).await
    }

    async fn observe(&self, items: &[CloudRef]) -> ProviderResult<Vec<Option<Observed>>> {
        self.inner.observe(items).await
    }

    async fn utilisation(&self, at: &CloudRef) -> ProviderResult<Option<Utilisation>> {
        self.inner.utilisation(at).await
    }
}
