//! What stateful commands share: where state and the local cloud live, the runtime, providers,
//! and turning library errors into diagnostics.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use chimera_engine::{EngineError, Providers};
use chimera_model::{Diagnostic, SourceMap};
use chimera_providers::local::{Knobs, LocalCloud};
use chimera_state::{StateError, StateStore};
use clap::Args;

use super::Global;
use crate::ui;

#[derive(Debug, Args, Clone)]
pub struct StateArgs {
    /// State URL (default: sqlite://<stack dir>/.chimera/state.db).
    #[arg(long, env = "CHIMERA_STATE", global = true, value_name = "URL")]
    pub state: Option<String>,
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

pub fn state_url(args: &StateArgs, path: &Path) -> String {
    args.state.clone().unwrap_or_else(|| {
        format!(
            "sqlite://{}",
            stack_dir(path).join(".chimera/state.db").display()
        )
    })
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

pub fn fail(global: &Global, d: Diagnostic) {
    ui::emit_diagnostics(
        &[d],
        &SourceMap::default(),
        global.error_format,
        global.color,
    );
}

pub fn state_diag(e: &StateError) -> Diagnostic {
    match e {
        StateError::Locked(_) => Diagnostic::error("E0301", "the stack is locked")
            .detail(format!("{e}. Wait for it to finish; if that process is gone for good, run `chimera force-unlock`")),
        StateError::Stale { .. } => Diagnostic::error("E0302", "the plan is stale")
            .detail(format!("{e}: state changed since this plan was made; run `chimera plan --out FILE` again and review it")),
        StateError::LockLost(_) => Diagnostic::error("E0301", "the lock was lost").detail(e.to_string()),
        StateError::Invalid(m) => Diagnostic::error("E0300", "state problem").detail(m.clone()),
        StateError::Db(m) => Diagnostic::error("E0300", "state database error")
            .detail(format!("{m}; check that the state location is writable and not damaged")),
    }
}

pub fn engine_diag(e: &EngineError) -> Diagnostic {
    match e {
        EngineError::State(s) => state_diag(s),
        EngineError::NoProvider(p) => Diagnostic::error("E0304", "provider not available")
            .detail(format!("the plan uses provider {p}, which this build cannot reach yet; only `local` is available")),
        EngineError::Unresolved(m) => Diagnostic::error("E0305", "an interrupted apply needs attention").detail(m.clone()),
    }
}

pub async fn open_state(global: &Global, url: &str) -> Option<Box<dyn StateStore>> {
    match chimera_state::open(url).await {
        Ok(s) => Some(s),
        Err(e) => {
            fail(global, state_diag(&e));
            None
        }
    }
}

pub fn local_cloud_path(path: &Path) -> PathBuf {
    std::env::var_os("CHIMERA_LOCAL_CLOUD")
        .map(PathBuf::from)
        .unwrap_or_else(|| stack_dir(path).join(".chimera/local-cloud.db"))
}

pub async fn open_local(global: &Global, path: &Path) -> Option<LocalCloud> {
    open_local_at(global, &local_cloud_path(path), &serde_json::Value::Null).await
}

/// Opens the local cloud at `file` with knobs from the stack's `providers` settings, overridden
/// by the environment.
pub async fn open_local_at(
    global: &Global,
    file: &Path,
    settings: &serde_json::Value,
) -> Option<LocalCloud> {
    let knobs = match Knobs::from_settings(settings, |k| std::env::var(k).ok()) {
        Ok(k) => k,
        Err(m) => {
            fail(
                global,
                Diagnostic::error("E0304", "invalid local provider setting").detail(m),
            );
            return None;
        }
    };
    match LocalCloud::open(file, knobs).await {
        Ok(c) => Some(c),
        Err(m) => {
            fail(
                global,
                Diagnostic::error("E0304", "cannot open the local cloud").detail(m),
            );
            None
        }
    }
}

pub async fn providers(global: &Global, path: &Path) -> Option<Providers> {
    providers_with(global, &local_cloud_path(path), &serde_json::Value::Null).await
}

pub async fn providers_with(
    global: &Global,
    local_cloud: &Path,
    settings: &serde_json::Value,
) -> Option<Providers> {
    let local = open_local_at(global, local_cloud, settings).await?;
    let providers = Providers::default().with(Arc::new(local));
    #[cfg(feature = "aws")]
    let providers = {
        use chimera_providers::aws::{AwsCloud, AwsSettings};
        match AwsSettings::from_settings(settings) {
            // Credentials load on first use: stacks without 'aws never touch the AWS chain.
            Ok(s) => providers.with(Arc::new(AwsCloud::new(s))),
            Err(m) => {
                fail(
                    global,
                    Diagnostic::error("E0304", "invalid aws provider setting").detail(m),
                );
                return None;
            }
        }
    };
    Some(providers)
}
