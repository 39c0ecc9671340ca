//! One module per command; global options here.

mod agent;
mod apply;
mod check;
mod completions;
mod cost;
mod ctl;
mod ctx;
mod destroy;
mod eval;
mod force_unlock;
mod graph;
mod history;
mod import;
mod init;
mod internal;
mod local;
mod migrate;
mod orphans;
mod plan;
mod policy;
mod preview;
mod refresh;
mod rollback;
mod serve;
mod state;
mod stdlib;
mod test;

use std::path::{Path, PathBuf};
use std::time::Duration;

use chimera_compiler::EvalOptions;
use chimera_workflow::Stack;
use clap::{Args, Parser, Subcommand};

use crate::ui::{ColorChoice, ErrorFormat, ExitStatus};

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
    /// Read Rego policies as Rego v0 (older conftest policies); Rego v1 otherwise.
    #[arg(long, global = true)]
    pub rego_v0: bool,
    /// Abandon policy evaluation after this many seconds (a loop becomes a diagnostic).
    #[arg(long, global = true, default_value_t = 10.0, value_name = "SECS")]
    pub policy_timeout: f64,
    /// The encryption key (32 bytes, base64) that seals plan files, cached graphs and the
    /// sensitive values state keeps (or CHIMERA_KEY, CHIMERA_PASSPHRASE; docs/security.md).
    #[arg(long, global = true, env = "CHIMERA_KEY_FILE", value_name = "FILE")]
    pub key_file: Option<PathBuf>,
    /// The previous key, which only opens (rotation; or CHIMERA_FALLBACK_KEY,
    /// CHIMERA_FALLBACK_PASSPHRASE).
    #[arg(
        long,
        global = true,
        env = "CHIMERA_FALLBACK_KEY_FILE",
        value_name = "FILE"
    )]
    pub fallback_key_file: Option<PathBuf>,
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

    pub fn policy_options(&self) -> chimera_policy::PolicyOptions {
        chimera_policy::PolicyOptions {
            rego_v0: self.rego_v0,
            timeout: Duration::from_secs_f64(self.policy_timeout.max(0.001)),
            ..chimera_policy::PolicyOptions::default()
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Scaffold a config repository: a stack, a test case with its snapshot, a CI workflow.
    Init(init::InitArgs),
    /// Check a stack: evaluate, validate and build its graph; print diagnostics.
    Check(check::CheckArgs),
    /// Policies as code (`policies/` beside the stack): run their unit tests.
    #[command(subcommand)]
    Policy(policy::PolicyCmd),
    /// Print the resource graph (dot, mermaid or json).
    Graph(graph::GraphArgs),
    /// Print the lowered resources as JSON.
    Eval(eval::EvalArgs),
    /// Show what applying the stack would change; `--out FILE` saves the plan.
    Plan(plan::PlanArgs),
    /// What the stack costs per month once applied: by provider, kind and region, with how
    /// `'cheapest` placed each group and where the prices come from.
    Cost(cost::CostArgs),
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
    /// Keep stacks converged: reconcile them every interval (heal drift, or record it), with
    /// an HTTP API and Prometheus metrics.
    Serve(serve::ServeArgs),
    /// Agents: turn an intent into a verified pull request (never an apply).
    #[command(subcommand)]
    Agent(agent::AgentCmd),
    /// Control a running `chimera serve`: pause, resume, release a parked resource, status.
    #[command(subcommand)]
    Ctl(ctl::CtlCmd),
    /// What `chimera serve` runs in a child process to compile a stack.
    #[command(hide = true)]
    InternalCompile(internal::InternalCompileArgs),
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
    /// The embedded stdlib for editors: `chimera stdlib export` writes it where Nickel's
    /// language server and CLI find it.
    #[command(subcommand)]
    Stdlib(stdlib::StdlibCmd),
    /// Print a shell completion script: `chimera completions bash > /etc/bash_completion.d/chimera`.
    Completions(completions::CompletionsArgs),
}

pub fn run(cli: Cli) -> ExitStatus {
    match &cli.command {
        Command::Init(args) => init::run(&cli.global, args),
        Command::Check(args) => check::run(&cli.global, args),
        Command::Graph(args) => graph::run(&cli.global, args),
        Command::Eval(args) => eval::run(&cli.global, args),
        Command::Plan(args) => plan::run(&cli.global, args),
        Command::Cost(args) => cost::run(&cli.global, args),
        Command::Agent(cmd) => agent::run(&cli.global, cmd),
        Command::Ctl(cmd) => ctl::run(&cli.global, cmd),
        Command::InternalCompile(args) => internal::run(&cli.global, args),
        Command::Policy(args) => policy::run(&cli.global, args),
        Command::Preview(args) => preview::run(&cli.global, args),
        Command::Apply(args) => apply::run(&cli.global, args),
        Command::Destroy(args) => destroy::run(&cli.global, args),
        Command::Refresh(args) => refresh::run(&cli.global, args),
        Command::Import(args) => import::run(&cli.global, args),
        Command::Orphans(args) => orphans::run(&cli.global, args),
        Command::Rollback(args) => rollback::run(&cli.global, args),
        Command::Serve(args) => serve::run(&cli.global, args),
        Command::State(args) => state::run(&cli.global, args),
        Command::Test(args) => test::run(&cli.global, args),
        Command::History(args) => history::run(&cli.global, args),
        Command::ForceUnlock(args) => force_unlock::run(&cli.global, args),
        Command::Local(args) => local::run(&cli.global, args),
        Command::Stdlib(cmd) => stdlib::run(&cli.global, cmd),
        Command::Completions(args) => completions::run(args),
    }
}

/// The stack path argument shared by commands.
#[derive(Debug, Args)]
pub struct StackArg {
    /// A stack directory (containing main.ncl) or a .ncl file.
    #[arg(default_value = ".")]
    pub path: PathBuf,
}

/// This build of Chimera: its version and its executable's size and modification time, so a
/// rebuilt binary never trusts an older one's cache.
pub(crate) fn build_id() -> String {
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

/// The stack at `path`, with the settings of this command line.
pub fn open(global: &Global, path: &Path, state: Option<&ctx::StateArgs>) -> Stack {
    Stack::open(path, ctx::settings(global, state))
}

/// Reports the stack's warnings, then the error if `r` failed; the value if not.
pub fn finish<T>(
    global: &Global,
    stack: &mut Stack,
    r: Result<T, chimera_workflow::Error>,
) -> Option<T> {
    match r {
        Ok(v) => {
            ctx::warnings(global, stack);
            Some(v)
        }
        Err(e) => {
            ctx::report(global, Some(stack), &e);
            None
        }
    }
}
