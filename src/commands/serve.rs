use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use chimera_model::{Diagnostic, codes};
use chimera_serve::{AgentConfig, AgentForge, GitWatch, ServeConfig};
use chimera_workflow::HealMode;
use clap::Args;

use super::Global;
use super::ctx::{self, StateArgs};
use crate::ui::ExitStatus;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The stacks to keep converged (directories with main.ncl, or .ncl files).
    #[arg(default_value = ".")]
    pub stacks: Vec<PathBuf>,
    #[command(flatten)]
    pub state: StateArgs,
    /// What to do about drift: `auto` puts it back (gated by policy), `propose` records it for
    /// the agents, `report` records it only.
    #[arg(long, default_value = "report", value_parser = parse_mode)]
    pub heal: HealMode,
    /// Seconds between ticks (each wait is stretched by up to --jitter of it).
    #[arg(long, default_value_t = 60.0, value_name = "SECS")]
    pub interval: f64,
    #[arg(long, default_value_t = 0.1, value_name = "FRACTION")]
    pub jitter: f64,
    /// Where the HTTP API and /metrics listen (port 0: any free port, printed at start).
    #[arg(long, default_value = "127.0.0.1:8087", value_name = "ADDR")]
    pub listen: SocketAddr,
    /// Bearer token every request must carry; required to listen beyond loopback.
    #[arg(long, env = "CHIMERA_SERVE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Stop after this many ticks (default: run until SIGTERM or Ctrl-C).
    #[arg(long, value_name = "N")]
    pub ticks: Option<u64>,
    /// Concurrent provider calls per provider during a heal.
    #[arg(long, default_value_t = 10)]
    pub parallelism: usize,
    /// GitOps: apply configuration changes (what was merged into the followed branch), not
    /// only put drift back. Off by default: the pull-request workflow applies reviewed plans.
    #[arg(long)]
    pub gitops: bool,
    /// Follow this branch: fetch and fast-forward each stack's repository every tick.
    #[arg(long, value_name = "BRANCH")]
    pub follow: Option<String>,
    /// The remote `--follow` fetches from (and `--open-prs github` pushes to).
    #[arg(long, default_value = "origin", value_name = "REMOTE")]
    pub remote: String,
    /// This daemon's name among replicas sharing one state database (default: host:pid).
    #[arg(long, value_name = "NAME")]
    pub replica: Option<String>,
    /// Consecutive failed heals of one resource before it is parked (until released with
    /// `chimera ctl release` or its configuration changes).
    #[arg(long, default_value_t = 8, value_name = "N")]
    pub max_failures: u32,
    /// Provider calls per second, per provider (a token bucket).
    #[arg(long, default_value_t = 20.0, value_name = "N")]
    pub rate: f64,
    /// Log lines as `text` or `json` (one object per line), on stderr. `CHIMERA_LOG` filters
    /// them (e.g. `debug`, `chimera_serve=debug`; default `info`).
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Compile in this process instead of a child process (faster for small stacks; a
    /// runaway evaluation then cannot be stopped).
    #[arg(long)]
    pub compile_in_process: bool,
    /// Turn drift in mode `propose` into pull requests that adopt the live values: `local`
    /// (a branch and commit in the stack's repository) or `github` (pushed to --remote, the
    /// pull request opened in --pr-repo with `GITHUB_TOKEN`). Without it, such drift is only
    /// recorded, for `chimera agent heal`.
    #[arg(long, value_enum, value_name = "WHERE")]
    pub open_prs: Option<OpenPrs>,
    /// The repository pull requests are opened in, `OWNER/NAME` (with `--open-prs github`).
    #[arg(long, value_name = "OWNER/NAME")]
    pub pr_repo: Option<String>,
    /// The forge's API URL (GitHub Enterprise: `https://HOST/api/v3`).
    #[arg(long, value_name = "URL")]
    pub pr_forge_url: Option<String>,
    /// The branch adopting pull requests are proposed for.
    #[arg(long, default_value = "main", value_name = "BRANCH")]
    pub pr_base: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OpenPrs {
    Local,
    Github,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

fn init_logs(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("CHIMERA_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.with_ansi(false).try_init(),
    };
}

fn parse_mode(s: &str) -> Result<HealMode, String> {
    s.parse()
}

/// Resolves on SIGTERM or Ctrl-C.
async fn terminated() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

pub fn run(global: &Global, args: &ServeArgs) -> ExitStatus {
    let settings = ctx::settings(global, Some(&args.state));
    let mut cfg = ServeConfig::new(args.stacks.clone(), settings);
    cfg.interval = Duration::from_secs_f64(args.interval.max(0.0));
    cfg.jitter = args.jitter;
    cfg.mode = args.heal;
    cfg.gitops = args.gitops;
    cfg.git = args.follow.as_ref().map(|branch| GitWatch {
        remote: args.remote.clone(),
        branch: branch.clone(),
    });
    cfg.compiler = if args.compile_in_process {
        None
    } else {
        std::env::current_exe().ok()
    };
    cfg.listen = args.listen;
    cfg.token = args.token.clone();
    cfg.ticks = args.ticks;
    cfg.parallelism = args.parallelism;
    cfg.backoff.max_failures = args.max_failures.max(1);
    cfg.guard.calls_per_second = args.rate.max(0.01);
    cfg.guard.burst = (2.0 * args.rate).ceil().max(1.0) as u32;
    if let Some(r) = &args.replica {
        cfg.replica = r.clone();
    }
    cfg.agent = match args.open_prs {
        None => None,
        Some(OpenPrs::Local) => Some(AgentConfig {
            forge: AgentForge::None,
            remote: args.remote.clone(),
            base: args.pr_base.clone(),
        }),
        Some(OpenPrs::Github) => {
            let token = std::env::var(chimera_agents::forge::TOKEN_ENV)
                .ok()
                .filter(|t| !t.trim().is_empty());
            let (Some(repo), Some(token)) = (args.pr_repo.clone(), token) else {
                ctx::fail(
                    global,
                    Diagnostic::error(
                        codes::SERVE,
                        "--open-prs github needs a repository and a token",
                    )
                    .detail(format!(
                        "pass --pr-repo OWNER/NAME and set {}, or use --open-prs local",
                        chimera_agents::forge::TOKEN_ENV
                    )),
                );
                return ExitStatus::Failure;
            };
            Some(AgentConfig {
                forge: AgentForge::GitHub {
                    repo,
                    api_url: args.pr_forge_url.clone(),
                    token,
                },
                remote: args.remote.clone(),
                base: args.pr_base.clone(),
            })
        }
    };
    // Generations and audit entries say which replica healed.
    cfg.settings.actor = format!("reconciler:{}", cfg.replica);
    init_logs(args.log_format);
    let rt = ctx::runtime();
    let served = rt.block_on(chimera_serve::start(cfg, terminated()));
    let served = match served {
        Ok(s) => s,
        Err(m) => {
            ctx::fail(
                global,
                Diagnostic::error(codes::SERVE, "cannot serve").detail(m),
            );
            return ExitStatus::Failure;
        }
    };
    tracing::info!(
        addr = %served.addr,
        mode = args.heal.as_str(),
        "listening on http://{} (dashboard /, API /api/stacks, /metrics, /healthz, /readyz)",
        served.addr
    );
    match rt.block_on(served.done) {
        Ok(Ok(())) => ExitStatus::Success,
        Ok(Err(m)) => {
            ctx::fail(
                global,
                Diagnostic::error(codes::SERVE, "serve stopped").detail(m),
            );
            ExitStatus::Failure
        }
        Err(e) => {
            ctx::fail(
                global,
                Diagnostic::error(codes::INTERNAL, "serve stopped").detail(e.to_string()),
            );
            ExitStatus::Failure
        }
    }
}
