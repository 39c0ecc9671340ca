//! `chimera ctl`: control a running `chimera serve` through its HTTP API — pause and resume
//! reconciles (all stacks, or one), release a parked resource, show the stacks' status.

use clap::{Args, Subcommand};
use serde_json::Value;

use super::Global;
use super::ctx;
use crate::ui::ExitStatus;
use chimera_model::{Diagnostic, codes};

#[derive(Debug, Args)]
pub struct Daemon {
    /// The daemon's address, as `chimera serve` printed it.
    #[arg(
        long,
        default_value = "http://127.0.0.1:8087",
        global = true,
        value_name = "URL"
    )]
    pub url: String,
    /// The daemon's bearer token.
    #[arg(
        long,
        env = "CHIMERA_SERVE_TOKEN",
        hide_env_values = true,
        global = true
    )]
    pub token: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum CtlCmd {
    /// Stop reconciling (a stack, or every stack): drift is neither read nor healed until
    /// `resume`.
    Pause(Target),
    /// Reconcile again after `pause`.
    Resume(Target),
    /// Reconcile now (a stack's next tick starts at once; heals go through the daemon's gate).
    Reconcile(Target),
    /// Heal a parked resource again (it was parked after its heals kept failing).
    Release(Release),
    /// The stacks the daemon serves and how their last reconcile went.
    Status(Daemon),
}

#[derive(Debug, Args)]
pub struct Target {
    /// The stack's name (or path, as the daemon was given it); none: every stack.
    pub stack: Option<String>,
    #[command(flatten)]
    pub daemon: Daemon,
}

#[derive(Debug, Args)]
pub struct Release {
    pub stack: String,
    /// The parked resource, e.g. instance.web-1.
    pub address: String,
    #[command(flatten)]
    pub daemon: Daemon,
}

pub(crate) fn call(daemon: &Daemon, method: &str, path: &str) -> Result<Value, String> {
    let url = format!("{}{path}", daemon.url.trim_end_matches('/'));
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(std::time::Duration::from_secs(30)))
        .build()
        .into();
    let auth = daemon.token.as_ref().map(|t| format!("Bearer {t}"));
    let response = if method == "POST" {
        let mut req = agent.post(&url);
        if let Some(a) = &auth {
            req = req.header("Authorization", a);
        }
        req.send_empty()
    } else {
        let mut req = agent.get(&url);
        if let Some(a) = &auth {
            req = req.header("Authorization", a);
        }
        req.call()
    };
    let mut response = response.map_err(|e| {
        format!(
            "cannot reach `chimera serve` at {}: {e}; is it running, and is --url right?",
            daemon.url
        )
    })?;
    let status = response.status().as_u16();
    let text = response
        .body_mut()
        .read_to_string()
        .map_err(|e| format!("cannot read the daemon's answer: {e}"))?;
    if status == 401 {
        return Err("the daemon needs a token: pass --token or set CHIMERA_SERVE_TOKEN".into());
    }
    let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text.clone()));
    if status >= 400 {
        let msg = value
            .get("error")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or(text);
        return Err(msg);
    }
    Ok(value)
}

pub fn run(global: &Global, cmd: &CtlCmd) -> ExitStatus {
    let (daemon, method, path) = match cmd {
        CtlCmd::Pause(t) | CtlCmd::Resume(t) => {
            let verb = if matches!(cmd, CtlCmd::Pause(_)) {
                "pause"
            } else {
                "resume"
            };
            let path = match &t.stack {
                Some(s) => format!("/api/stacks/{}/{verb}", encode(s)),
                None => format!("/api/{verb}"),
            };
            (&t.daemon, "POST", path)
        }
        CtlCmd::Reconcile(t) => (
            &t.daemon,
            "POST",
            match &t.stack {
                Some(s) => format!("/api/stacks/{}/reconcile", encode(s)),
                None => "/api/reconcile".to_string(),
            },
        ),
        CtlCmd::Release(r) => (
            &r.daemon,
            "POST",
            format!(
                "/api/stacks/{}/dead-letters/{}/release",
                encode(&r.stack),
                encode(&r.address)
            ),
        ),
        CtlCmd::Status(d) => (d, "GET", "/api/stacks".to_string()),
    };
    match call(daemon, method, &path) {
        Ok(v) => {
            crate::ui::print(&render(cmd, &v));
            ExitStatus::Success
        }
        Err(m) => {
            ctx::fail(
                global,
                Diagnostic::error(codes::SERVE, "the daemon refused or cannot be reached")
                    .detail(m),
            );
            ExitStatus::Failure
        }
    }
}

/// Percent-encodes a path segment (stack names and addresses are plain, paths may not be).
pub(crate) fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn render(cmd: &CtlCmd, v: &Value) -> String {
    match cmd {
        CtlCmd::Status(_) => {
            let mut out = String::new();
            for s in v.as_array().into_iter().flatten() {
                let name = s["stack"].as_str().or(s["path"].as_str()).unwrap_or("?");
                out.push_str(&format!(
                    "{name}: {} (mode {}), {} drifted, generation {}\n",
                    s["outcome"].as_str().unwrap_or("?"),
                    s["mode"].as_str().unwrap_or("?"),
                    s["drift"].as_array().map(Vec::len).unwrap_or(0),
                    s["generation"]
                        .as_u64()
                        .map(|g| g.to_string())
                        .unwrap_or_else(|| "-".into()),
                ));
                for e in s["errors"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                {
                    out.push_str(&format!("  {e}\n"));
                }
            }
            if out.is_empty() {
                out.push_str("no stacks reconciled yet\n");
            }
            out
        }
        CtlCmd::Pause(t) => format!("paused {}\n", t.stack.as_deref().unwrap_or("every stack")),
        CtlCmd::Resume(t) => format!("resumed {}\n", t.stack.as_deref().unwrap_or("every stack")),
        CtlCmd::Reconcile(t) => format!(
            "reconcile requested for {}: the daemon ticks now\n",
            t.stack.as_deref().unwrap_or("every stack")
        ),
        CtlCmd::Release(r) => format!(
            "released {} in {}: it is healed again from the next tick\n",
            r.address, r.stack
        ),
    }
}
