use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use chimera_model::{Diagnostic, codes};
use chimera_serve::ServeConfig;
use chimera_workflow::HealMode;
use clap::Args;

use super::ctx::{self, StateArgs};
use super::Global;
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
    let mut settings = ctx::settings(global, Some(&args.state));
    settings.actor = format!("reconciler:{}", settings.actor);
    let cfg = ServeConfig {
        stacks: args.stacks.clone(),
        interval: Duration::from_secs_f64(args.interval.max(0.0)),
        jitter: args.jitter,
        mode: args.heal,
        listen: args.listen,
        token: args.token.clone(),
        ticks: args.ticks,
        settings,
        parallelism: args.parallelism,
    };
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
    eprintln!(
        "chimera serve: listening on http://{} (/metrics, /api/stacks, /healthz, /readyz); heal mode {}",
        served.addr,
        args.heal.as_str()
    );
    match rt.block_on(served.done) {
        Ok(Ok(())) => ExitStatus::Success,
        Ok(Err(m)) => {
            ctx::fail(global, Diagnostic::error(codes::SERVE, "serve stopped").detail(m));
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
