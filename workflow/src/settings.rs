//! What a caller decides for a run: passed in, never read from the environment here.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use chimera_compiler::EvalOptions;

/// Settings of one run, as the caller (the CLI, the daemon, an agent) decided them.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The state store's URL; `None`: `sqlite://<stack dir>/.chimera/state.db`.
    pub state_url: Option<String>,
    /// The local cloud's file; `None`: `<stack dir>/.chimera/local-cloud.db`.
    pub local_cloud: Option<PathBuf>,
    /// Environment-style provider knobs (`CHIMERA_LOCAL_LATENCY_MS`, …) that override the
    /// stack's `providers` settings. The CLI fills it from its environment; a test or the
    /// daemon from wherever it likes.
    pub provider_env: BTreeMap<String, String>,
    /// Evaluation limits.
    pub eval: EvalOptions,
    /// Policy dialect and limits.
    pub policy: chimera_policy::PolicyOptions,
    /// The evaluation cache's build id (a rebuilt binary never trusts an older one's
    /// entries); `None` disables the cache (`--no-cache`).
    pub cache_build: Option<String>,
    /// Who runs: recorded with generations and audit entries.
    pub actor: String,
    /// The caller's working directory: relative stack paths are read from it, and
    /// diagnostics name files relative to it. `None`: absolute names.
    pub cwd: Option<PathBuf>,
    /// Wraps every provider the run builds (the daemon's rate limits, circuits and call
    /// metrics); `None`: the providers as they are.
    pub provider_layer: Option<ProviderLayer>,
    /// Encryption keys (the CLI reads them with `chimera_seal::Keys::from_lookup`): plan
    /// files and cached graphs holding a sensitive value are sealed with them, and state keeps
    /// sensitive values sealed so a rollback can restore them. None: no plan file holding a
    /// sensitive value is saved, no such graph is cached, state keeps only digests.
    pub keys: chimera_seal::Keys,
}

/// A wrapper put around each provider a run builds, shared by every run given it (so a token
/// bucket or a circuit outlives one stack's reconcile).
#[derive(Clone)]
pub struct ProviderLayer(pub Arc<WrapProvider>);

/// What a [`ProviderLayer`] does to one provider.
pub type WrapProvider = dyn Fn(Arc<dyn chimera_providers::Provider>) -> Arc<dyn chimera_providers::Provider>
    + Send
    + Sync;

impl ProviderLayer {
    pub fn wrap(
        &self,
        provider: Arc<dyn chimera_providers::Provider>,
    ) -> Arc<dyn chimera_providers::Provider> {
        (self.0)(provider)
    }
}

impl std::fmt::Debug for ProviderLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProviderLayer")
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            state_url: None,
            local_cloud: None,
            provider_env: BTreeMap::new(),
            eval: EvalOptions::default(),
            policy: chimera_policy::PolicyOptions::default(),
            cache_build: None,
            actor: "chimera".into(),
            cwd: None,
            provider_layer: None,
            keys: chimera_seal::Keys::None,
        }
    }
}

/// The `CHIMERA_LOCAL_*` knobs the local provider reads, for a caller filling
/// [`Settings::provider_env`] from its environment.
pub const LOCAL_KNOBS: &[&str] = &[
    "CHIMERA_LOCAL_LATENCY_MS",
    "CHIMERA_LOCAL_FAILURE_RATE",
    "CHIMERA_LOCAL_THROTTLE_RATE",
    "CHIMERA_LOCAL_CONSISTENCY_MS",
];
