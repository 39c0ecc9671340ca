//! What commands share: the workflow's settings from the command line and the environment,
//! the runtime, and reporting workflow errors and warnings.

use std::path::PathBuf;

use chimera_model::{Diagnostic, SourceMap};
use chimera_workflow::{Error, LOCAL_KNOBS, Settings, Stack};
use clap::Args;

use super::Global;
use crate::ui;

#[derive(Debug, Args, Clone)]
pub struct StateArgs {
    /// State URL (default: sqlite://<stack dir>/.chimera/state.db).
    #[arg(long, env = "CHIMERA_STATE", global = true, value_name = "URL")]
    pub state: Option<String>,
}

/// The workflow's settings: the command line's, and the environment's (read here, never in
/// the library).
pub fn settings(global: &Global, state: Option<&StateArgs>) -> Settings {
    Settings {
        state_url: state.and_then(|s| s.state.clone()),
        local_cloud: std::env::var_os("CHIMERA_LOCAL_CLOUD").map(PathBuf::from),
        provider_env: LOCAL_KNOBS
            .iter()
            .filter_map(|k| Some((k.to_string(), std::env::var(k).ok()?)))
            .collect(),
        eval: global.eval_options(),
        policy: global.policy_options(),
        cache_build: (!global.no_cache).then(super::build_id),
        actor: actor(),
        cwd: std::env::current_dir().ok(),
        provider_layer: None,
        keys: keys(global),
    }
}

/// The encryption keys: `--key-file`/`--fallback-key-file` (or their variables),
/// `CHIMERA_KEY`, `CHIMERA_PASSPHRASE` and their fallbacks; read once per process (a
/// passphrase costs an argon2id derivation).
pub fn keys(global: &Global) -> chimera_seal::Keys {
    static KEYS: std::sync::OnceLock<chimera_seal::Keys> = std::sync::OnceLock::new();
    KEYS.get_or_init(|| {
        chimera_seal::Keys::from_lookup(|name| match name {
            "CHIMERA_KEY_FILE" => global.key_file.as_ref().map(|p| p.display().to_string()),
            "CHIMERA_FALLBACK_KEY_FILE" => global
                .fallback_key_file
                .as_ref()
                .map(|p| p.display().to_string()),
            other => std::env::var(other).ok(),
        })
    })
    .clone()
}

/// Who runs, for generations and audit entries.
pub fn actor() -> String {
    std::env::var("USER")
        .map(|u| format!("{u}@chimera"))
        .unwrap_or_else(|_| "chimera".into())
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

/// Reports a workflow error (after the stack's warnings, if any).
pub fn report(global: &Global, stack: Option<&mut Stack>, e: &Error) {
    if let Some(s) = stack {
        warnings(global, s);
    }
    ui::emit_error(e, global.error_format, global.color);
}

/// Prints how the stack was compiled (when traced) and the warnings it collected.
pub fn warnings(global: &Global, stack: &mut Stack) {
    trace_compilations(stack);
    let (diags, sources) = stack.take_warnings();
    if !diags.is_empty() {
        ui::emit_diagnostics(&diags, &sources, global.error_format, global.color);
    }
}

/// `CHIMERA_CACHE_TRACE=1` says on stderr how each compilation used the cache (`cache: hit`,
/// `cache: miss`, `cache: rebuilt (why)`, `cache: plan memo hit`), and each evaluation
/// without it (`eval: evaluated (--no-cache)`).
pub fn trace(line: &str) {
    if std::env::var_os("CHIMERA_CACHE_TRACE").is_some_and(|v| !v.is_empty() && v != "0") {
        eprintln!("{line}");
    }
}

/// Traces how `stack` was compiled (see [`trace`]).
pub fn trace_compilations(stack: &Stack) {
    use chimera_workflow::{CacheUse, Compilation};
    for c in stack.compilations() {
        trace(&match c {
            Compilation::Evaluated => "eval: evaluated (--no-cache)".to_string(),
            Compilation::Cache(CacheUse::Hit) => "cache: hit".into(),
            Compilation::Cache(CacheUse::Miss) => "cache: miss".into(),
            Compilation::Cache(CacheUse::Rebuilt(why)) => format!("cache: rebuilt ({why})"),
        });
    }
}
