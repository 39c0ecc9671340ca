//! One module per command; global options here.

mod apply;
mod check;
mod ctx;
mod destroy;
mod eval;
mod force_unlock;
mod graph;
mod history;
mod import;
mod init;
mod local;
mod migrate;
mod orphans;
mod plan;
mod preview;
mod refresh;
mod rollback;
mod state;
mod test;

use std::path::{Path, PathBuf};
use std::time::Duration;

use chimera_compiler::{Compiled, EvalOptions};
use clap::{Args, Parser, Subcommand};

use crate::ui::{self, ColorChoice, ErrorFormat, ExitStatus};

/// Chimera: a declarative, reconciling infrastructure compiler.
///
/// Stacks are Nickel files (`main.ncl` in a directory) that import the embedded standard
/// library with `import "chimera.ncl"`.
#[derive(Debug, Parser)]
#[command(name = "chimera", version, about, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct Global {
    /// How to print diagnostics.
    #[arg(long, global = true, value_enum, default_value = "text")]
    pub error_format: ErrorFormat,
    /// When to use colours.
    #[arg(long, global = true, value_enum, default_value = "auto")]
    pub color: ColorChoice,
    /// Abandon evaluation after this many seconds (an infinite loop becomes a diagnostic).
    #[arg(long, global = true, default_value_t = 60.0, value_name = "SECS")]
    pub eval_timeout: f64,
    /// Abandon evaluation when the process uses more than this much memory.
    #[arg(long, global = true, value_name = "MIB")]
    pub eval_memory_mib: Option<u64>,
    /// Evaluate even when `.chimera/cache` holds a valid result (and do not update it).
    #[arg(long, global = true)]
    pub no_cache: bool,
}

impl Global {
    pub fn eval_options(&self) -> EvalOptions {
        let mut opts = EvalOptions {
            timeout: Duration::from_secs_f64(self.eval_timeout.max(0.001)),
            ..EvalOptions::default()
        };
        if let Some(mib) = self.eval_memory_mib {
            opts.memory_limit = Some(mib << 20);
        }
        opts
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Scaffold a config repository: a stack, a test case with its snapshot, a CI workflow.
    Init(init::InitArgs),
    /// Check a stack: evaluate, validate and build its graph; print diagnostics.
    Check(check::CheckArgs),
    /// Print the resource graph (dot, mermaid or json).
    Graph(graph::GraphArgs),
    /// Print the lowered resources as JSON.
    Eval(eval::EvalArgs),
    /// Show what applying the stack would change; `--out FILE` saves the plan.
    Plan(plan::PlanArgs),
    /// The desired-state change between a git ref and the working tree (no state needed): the
    /// review view of a pull request.
    Preview(preview::PreviewArgs),
    /// Apply a saved plan file exactly, or plan a stack, show it, ask, and apply.
    Apply(apply::ApplyArgs),
    /// Destroy everything in the stack.
    Destroy(destroy::DestroyArgs),
    /// Compare state with the cloud, show drift, and record it for the next plan.
    Refresh(refresh::RefreshArgs),
    /// Adopt an existing cloud resource into state.
    Import(import::ImportArgs),
    /// List resources tagged for the stack but missing from its state.
    Orphans(orphans::OrphansArgs),
    /// Plan the way back to generation N's resources, then apply it as usual.
    Rollback(rollback::RollbackArgs),
    /// Inspect state.
    State(state::StateCmd),
    /// Snapshot-tested previews: plan each `tests/NAME.ncl` offline and compare with
    /// `tests/snapshots/NAME.snap`.
    Test(test::TestArgs),
    /// List the stack's generations.
    History(history::HistoryArgs),
    /// Remove a stack's lock left by a process that is gone.
    ForceUnlock(force_unlock::ForceUnlockArgs),
    /// The local simulated cloud: list it, or change it out of band to cause drift.
    Local(local::LocalCmd),
}

pub fn run(cli: Cli) -> ExitStatus {
    match &cli.command {
        Command::Init(args) => init::run(&cli.global, args),
        Command::Check(args) => check::run(&cli.global, args),
        Command::Graph(args) => graph::run(&cli.global, args),
        Command::Eval(args) => eval::run(&cli.global, args),
        Command::Plan(args) => plan::run(&cli.global, args),
        Command::Preview(args) => preview::run(&cli.global, args),
        Command::Apply(args) => apply::run(&cli.global, args),
        Command::Destroy(args) => destroy::run(&cli.global, args),
        Command::Refresh(args) => refresh::run(&cli.global, args),
        Command::Import(args) => import::run(&cli.global, args),
        Command::Orphans(args) => orphans::run(&cli.global, args),
        Command::Rollback(args) => rollback::run(&cli.global, args),
        Command::State(args) => state::run(&cli.global, args),
        Command::Test(args) => test::run(&cli.global, args),
        Command::History(args) => history::run(&cli.global, args),
        Command::ForceUnlock(args) => force_unlock::run(&cli.global, args),
        Command::Local(args) => local::run(&cli.global, args),
    }
}

/// The stack path argument shared by commands.
#[derive(Debug, Args)]
pub struct StackArg {
    /// A stack directory (containing main.ncl) or a .ncl file.
    #[arg(default_value = ".")]
    pub path: PathBuf,
}

/// The evaluation cache of the stack at `path` (`.chimera/cache` beside it), unless
/// `--no-cache`.
pub fn eval_cache(global: &Global, path: &Path) -> Option<chimera_compiler::cache::EvalCache> {
    if global.no_cache {
        return None;
    }
    Some(chimera_compiler::cache::EvalCache::new(
        ctx::stack_dir(path).join(".chimera/cache"),
        build_id(),
    ))
}

/// This build of Chimera: its version and its executable's size and modification time, so a
/// rebuilt binary never trusts an older one's cache.
fn build_id() -> String {
    let exe = std::env::current_exe()
        .ok()
        .and_then(|p| std::fs::metadata(p).ok())
        .map(|m| {
            let mtime = m
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            format!("{}-{mtime}", m.len())
        })
        .unwrap_or_default();
    format!("{}+{exe}", env!("CARGO_PKG_VERSION"))
}

/// `CHIMERA_CACHE_TRACE=1` says on stderr how each compilation used the cache.
pub fn cache_trace(what: &str) {
    if std::env::var_os("CHIMERA_CACHE_TRACE").is_some_and(|v| !v.is_empty() && v != "0") {
        eprintln!("cache: {what}");
    }
}

/// Compiles (through the evaluation cache unless `--no-cache`) and prints diagnostics; `None`
/// when there were errors.
pub fn compile_or_report(global: &Global, path: &Path) -> Option<Compiled> {
    let compiled = match eval_cache(global, path) {
        Some(cache) => {
            let (compiled, used) = cache.compile(path, &global.eval_options());
            cache_trace(&match used {
                chimera_compiler::cache::CacheUse::Hit => "hit".to_string(),
                chimera_compiler::cache::CacheUse::Miss => "miss".to_string(),
                chimera_compiler::cache::CacheUse::Rebuilt(why) => format!("rebuilt ({why})"),
            });
            compiled
        }
        None => chimera_compiler::compile(path, &global.eval_options()),
    };
    if !compiled.diagnostics.is_empty() {
        ui::emit_diagnostics(
            &compiled.diagnostics,
            &compiled.sources,
            global.error_format,
            global.color,
        );
    }
    if compiled.has_errors() || compiled.graph.is_none() {
        return None;
    }
    Some(compiled)
}
