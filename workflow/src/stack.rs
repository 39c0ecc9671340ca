//! An opened stack: where it lives, and — each made at most once per [`Stack`] — its compiled
//! graph, its state store and its providers. Every flow borrows these, so a command compiles
//! once, opens state once and builds its providers once, however many steps it takes.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use chimera_compiler::cache::{CacheUse, EvalCache};
use chimera_compiler::{Compiled, Disk, Source, graph::Graph};
use chimera_engine::Providers;
use chimera_model::{Diagnostic, SourceMap, codes};
use chimera_providers::local::{Knobs, LocalCloud};
use chimera_state::StateStore;
use serde_json::Value;

use crate::error::{Error, ErrorKind};
use crate::settings::Settings;

/// How the stack's graph was obtained, for tracing and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compilation {
    /// Nickel evaluated the stack (no cache, or `--no-cache`).
    Evaluated,
    /// Through the evaluation cache.
    Cache(CacheUse),
}

/// The directory holding `.chimera/` for a stack path (a directory, or a file's directory).
pub fn stack_dir(path: &Path) -> PathBuf {
    if path.is_dir() {
        path.to_path_buf()
    } else {
        path.parent()
            .map(Path::to_path_buf)
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| PathBuf::from("."))
    }
}

/// A stack and what it has opened so far.
pub struct Stack {
    pub(crate) path: PathBuf,
    dir: PathBuf,
    pub(crate) source: Arc<dyn Source>,
    pub(crate) settings: Settings,
    /// The stack's name: given by the caller (state-only commands need no compile), or
    /// recorded at the first successful compile.
    name: Option<String>,
    /// The stack's `providers` settings, recorded at the first successful compile (the graph
    /// itself may have moved into a plan since); `None` before.
    provider_settings: Option<Value>,
    compiled: Option<Compiled>,
    compilations: Vec<Compilation>,
    warnings: Vec<Diagnostic>,
    warning_sources: SourceMap,
    store: Option<Box<dyn StateStore>>,
    providers: Option<Providers>,
}

impl Stack {
    /// The stack at `path` (a directory with `main.ncl`, or a `.ncl` file) on disk. Nothing
    /// is read until a flow needs it.
    pub fn open(path: impl Into<PathBuf>, settings: Settings) -> Stack {
        let disk = Disk::at(settings.cwd.clone());
        Self::open_in(Arc::new(disk), path, settings)
    }

    /// The stack at `path` as `source` holds it (e.g. an
    /// [`Overlay`](chimera_compiler::Overlay) of proposed edits over a checkout: compiled and
    /// planned without writing them). State and the local cloud live beside `path` on disk, as
    /// for [`Stack::open`].
    pub fn open_in(source: Arc<dyn Source>, path: impl Into<PathBuf>, settings: Settings) -> Stack {
        let path = path.into();
        Stack {
            dir: stack_dir(&path),
            source,
            path,
            settings,
            name: None,
            provider_settings: None,
            compiled: None,
            compilations: Vec::new(),
            warnings: Vec::new(),
            warning_sources: SourceMap::default(),
            store: None,
            providers: None,
        }
    }

    /// Names the stack, so flows that only need state do not compile it to learn its name.
    pub fn named(mut self, name: Option<String>) -> Stack {
        self.name = name;
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The directory holding the stack's `.chimera/`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// How the stack was compiled, once per compilation (at most one per [`Stack`]).
    pub fn compilations(&self) -> &[Compilation] {
        &self.compilations
    }

    /// Warnings collected so far (compile warnings, an interrupted apply), with the sources
    /// they point into. Taking them empties the list.
    pub fn take_warnings(&mut self) -> (Vec<Diagnostic>, SourceMap) {
        (
            std::mem::take(&mut self.warnings),
            std::mem::take(&mut self.warning_sources),
        )
    }

    /// The warnings collected so far, without taking them.
    pub fn warnings(&self) -> &[Diagnostic] {
        &self.warnings
    }

    pub(crate) fn warn(&mut self, d: Diagnostic) {
        self.warnings.push(d);
    }

    /// The state URL: the settings', or the SQLite file beside the stack.
    pub fn state_url(&self) -> String {
        self.settings
            .state_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.dir.join(".chimera/state.db").display()))
    }

    /// The local cloud's file: the settings', or beside the stack.
    pub fn local_cloud_path(&self) -> PathBuf {
        self.settings
            .local_cloud
            .clone()
            .unwrap_or_else(|| self.dir.join(".chimera/local-cloud.db"))
    }

    /// The evaluation cache, unless disabled.
    pub(crate) fn eval_cache(&self) -> Option<EvalCache> {
        self.settings.cache_build.as_ref().map(|build| {
            EvalCache::new(self.dir.join(".chimera/cache"), build.clone())
                .with_source(self.source.clone())
                .with_keys(self.settings.keys.clone())
        })
    }

    /// Compiles the stack (through the evaluation cache when enabled), once.
    pub fn compile(&mut self) -> Result<&Graph, Error> {
        if self.compiled.is_none() {
            let compiled = match self.eval_cache() {
                Some(cache) => {
                    let (c, used) = cache.compile(&self.path, &self.settings.eval);
                    self.compilations.push(Compilation::Cache(used));
                    c
                }
                None => {
                    self.compilations.push(Compilation::Evaluated);
                    chimera_compiler::compile_from(&self.source, &self.path, &self.settings.eval)
                }
            };
            self.compiled = Some(compiled);
        }
        let compiled = self.compiled.as_mut().expect("compiled above");
        if compiled.has_errors() || (compiled.graph.is_none() && self.provider_settings.is_none()) {
            return Err(Error::many(
                ErrorKind::Compile,
                compiled.diagnostics.clone(),
                compiled.sources.clone(),
            ));
        }
        if compiled.graph.is_none() {
            return Err(graph_taken());
        }
        if !compiled.diagnostics.is_empty() {
            self.warnings.append(&mut compiled.diagnostics);
            let sources = std::mem::take(&mut compiled.sources);
            self.warning_sources = sources;
        }
        let graph = compiled.graph.as_ref().expect("checked above");
        if self.provider_settings.is_none() {
            self.provider_settings = Some(graph.provider_settings.clone());
            self.name.get_or_insert_with(|| graph.stack.clone());
        }
        Ok(graph)
    }

    /// The compiled graph by value (compiling if needed): the plan takes the desired values
    /// instead of copying them. The stack cannot hand it out twice; its name and provider
    /// settings stay known.
    pub(crate) fn take_graph(&mut self) -> Result<Graph, Error> {
        self.compile()?;
        self.compiled
            .as_mut()
            .and_then(|c| c.graph.take())
            .ok_or_else(graph_taken)
    }

    /// The stack with its graph compiled elsewhere (the daemon compiles in a child process):
    /// [`Stack::compile`] returns it without evaluating.
    pub fn with_graph(mut self, graph: chimera_model::graph::Graph) -> Self {
        self.compiled = Some(chimera_compiler::Compiled {
            graph: Some(graph),
            diagnostics: Vec::new(),
            sources: Default::default(),
            files_read: Vec::new(),
        });
        self
    }

    /// The same stack for another round with a graph compiled elsewhere (the daemon's next
    /// tick): the state store stays open, and the providers stay built while the stack's
    /// `providers` settings are unchanged; the last round's graph, name, warnings and
    /// compilations are forgotten. Reopening both every tick cost the daemon a connection pool
    /// and a local-cloud pool per tick.
    pub fn next_round(mut self, graph: chimera_model::graph::Graph) -> Self {
        if self.provider_settings.as_ref() != Some(&graph.provider_settings) {
            self.providers = None;
        }
        self.provider_settings = None;
        self.name = None;
        self.compilations.clear();
        self.warnings.clear();
        self.warning_sources = SourceMap::default();
        self.with_graph(graph)
    }

    /// The stack's name: given, or from compiling it.
    pub fn name(&mut self) -> Result<String, Error> {
        if let Some(n) = &self.name {
            return Ok(n.clone());
        }
        Ok(self.compile()?.stack.clone())
    }

    /// The state store, opened once.
    pub async fn store(&mut self) -> Result<&dyn StateStore, Error> {
        if self.store.is_none() {
            self.store = Some(chimera_state::open(&self.state_url()).await?);
        }
        Ok(self.store.as_deref().expect("opened above"))
    }

    /// The providers, built once, with the stack's settings when it was compiled.
    pub async fn providers(&mut self) -> Result<&Providers, Error> {
        if self.providers.is_none() {
            let p = build_providers(
                &self.local_cloud_path(),
                // Not compiled (a command given `--stack NAME`): no settings.
                self.provider_settings.as_ref().unwrap_or(&Value::Null),
                &self.settings.provider_env,
                self.settings.provider_layer.as_ref(),
            )
            .await?;
            self.providers = Some(p);
        }
        Ok(self.providers.as_ref().expect("built above"))
    }

    /// State and providers together (both borrowed for one engine call).
    pub(crate) async fn state_and_providers(
        &mut self,
    ) -> Result<(&dyn StateStore, &Providers), Error> {
        self.store().await?;
        self.providers().await?;
        Ok((
            self.store.as_deref().expect("opened"),
            self.providers.as_ref().expect("built"),
        ))
    }
}

fn graph_taken() -> Error {
    Error::new(
        ErrorKind::Compile,
        Diagnostic::error(codes::INTERNAL, "the compiled graph was already used").detail(
            "a workflow asked for the stack's graph after planning took it; this is a bug in Chimera, please report it",
        ),
    )
}

/// The knobs of the local cloud: the stack's `providers.local`, overridden by the caller's
/// environment-style settings.
pub fn local_knobs(
    settings: &Value,
    env: &std::collections::BTreeMap<String, String>,
) -> Result<Knobs, Error> {
    Knobs::from_settings(settings, |k| env.get(k).cloned()).map_err(|m| {
        Error::new(
            ErrorKind::Provider,
            Diagnostic::error(codes::PROVIDER_SETTING, "invalid local provider setting").detail(m),
        )
    })
}

/// Opens the local cloud at `file`.
pub async fn open_local(file: &Path, knobs: Knobs) -> Result<LocalCloud, Error> {
    LocalCloud::open(file, knobs).await.map_err(|m| {
        Error::new(
            ErrorKind::Provider,
            Diagnostic::error(codes::LOCAL_CLOUD, "cannot open the local cloud").detail(m),
        )
    })
}

/// Every provider this build has, with the given settings, each wrapped by `layer`.
pub async fn build_providers(
    local_cloud: &Path,
    settings: &Value,
    env: &std::collections::BTreeMap<String, String>,
    layer: Option<&crate::ProviderLayer>,
) -> Result<Providers, Error> {
    let wrap = |p: Arc<dyn chimera_providers::Provider>| match layer {
        Some(l) => l.wrap(p),
        None => p,
    };
    let local = open_local(local_cloud, local_knobs(settings, env)?).await?;
    let providers = Providers::default().with(wrap(Arc::new(local)));
    #[cfg(feature = "aws")]
    let providers = {
        use chimera_aws::{AwsCloud, AwsSettings};
        let s = AwsSettings::from_settings(settings).map_err(|m| {
            Error::new(
                ErrorKind::Provider,
                Diagnostic::error(codes::PROVIDER_SETTING, "invalid aws provider setting")
                    .detail(m),
            )
        })?;
        // Credentials load on first use: stacks without 'aws never touch the AWS chain.
        providers.with(wrap(Arc::new(AwsCloud::new(s))))
    };
    #[cfg(feature = "gcp")]
    let providers = {
        use chimera_gcp::{GcpCloud, GcpSettings};
        // GOOGLE_CLOUD_PROJECT, like the ADC the SDK reads, comes from the environment.
        let lookup = |k: &str| env.get(k).cloned().or_else(|| std::env::var(k).ok());
        let s = GcpSettings::from_settings(settings, lookup).map_err(|m| {
            Error::new(
                ErrorKind::Provider,
                Diagnostic::error(codes::PROVIDER_SETTING, "invalid gcp provider setting")
                    .detail(m),
            )
        })?;
        // Credentials (Application Default Credentials) load on first use: stacks without
        // 'gcp never look for them.
        providers.with(wrap(Arc::new(GcpCloud::new(s))))
    };
    #[cfg(feature = "azure")]
    let providers = {
        use chimera_azure::{AzureCloud, AzureSettings};
        let s = AzureSettings::from_settings(settings, env).map_err(|m| {
            Error::new(
                ErrorKind::Provider,
                Diagnostic::error(codes::PROVIDER_SETTING, "invalid azure provider setting")
                    .detail(m),
            )
        })?;
        // The credential is made on first use: stacks without 'azure never touch it.
        providers.with(wrap(Arc::new(AzureCloud::new(s))))
    };
    Ok(providers)
}
