//! `chimera agent`: intents and drift become verified pull requests. Agents never apply.

use std::path::PathBuf;

use chimera_agents::forge::{Forge, GitHub, NoForge, Repo};
use chimera_agents::llm::{LlmConfig, LlmKind, LlmProposer};
use chimera_agents::memory::{self, HashingEmbedder, Memory, SqliteMemory};
use chimera_agents::planner::OfflinePlanner;
use chimera_agents::propose::{self, Destination, Outcome, Proposal};
use chimera_agents::{AgentError, Proposer, heal};
use chimera_model::{Diagnostic, codes};
use chimera_workflow::{HealMode, ReadOnlyStack};
use clap::{Args, Subcommand, ValueEnum};

use super::ctx::StateArgs;
use super::{Global, ctx};
use crate::ui::ExitStatus;

#[derive(Debug, Subcommand)]
pub enum AgentCmd {
    /// Turn an intent into a verified pull request: draft edits to the stack's Nickel files,
    /// compile, plan, price and policy-check them (up to 5 rounds), then commit them on
    /// `chimera/agent/<stack>-<intent>` and open (or update) a pull request. Nothing is applied.
    Propose(ProposeArgs),
    /// Classify the stack's drift (attribute changed, resource deleted, rule added, unmanaged
    /// resource) and route each by the stack's heal policy: `auto` asks the daemon to put it
    /// back, `propose` opens a pull request adopting the live values (verified: planned against
    /// the cloud as it is, it shows no changes), `report` only reports. Nothing is applied.
    Heal(HealArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ForgeKind {
    /// GitHub's REST API (or GitHub Enterprise: `--forge-url`); token in `GITHUB_TOKEN`.
    Github,
    /// No forge: commit on the local branch and print the pull request's body.
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProposerKind {
    /// The built-in, deterministic planner for the common intents (no model, no network).
    Offline,
    /// An OpenAI-compatible Chat Completions service (`CHIMERA_LLM_BASE_URL`, `CHIMERA_LLM_MODEL`,
    /// `OPENAI_API_KEY`).
    Openai,
    /// Anthropic's Messages API (`CHIMERA_LLM_MODEL`, `ANTHROPIC_API_KEY`).
    Anthropic,
}

#[derive(Debug, Args)]
pub struct ProposeArgs {
    /// What to change, in words: "scale web to 5", "cut cost by 30% keeping 2 web", …
    pub intent: String,
    /// A stack directory (containing main.ncl).
    #[arg(default_value = ".")]
    pub path: PathBuf,
    /// Who drafts the edits.
    #[arg(long, value_enum, default_value = "offline")]
    pub proposer: ProposerKind,
    /// Verifier rounds (at most 5).
    #[arg(long, default_value_t = propose::MAX_ROUNDS)]
    pub rounds: usize,
    #[command(flatten)]
    pub publish: PublishArgs,
}

#[derive(Debug, Args)]
pub struct HealArgs {
    /// A stack directory (containing main.ncl).
    #[arg(default_value = ".")]
    pub path: PathBuf,
    /// The running `chimera serve` to ask for a re-apply of drift in heal mode `auto`
    /// (without it, the daemon heals on its next tick).
    #[arg(long, value_name = "URL")]
    pub daemon: Option<String>,
    /// The daemon's bearer token.
    #[arg(long, env = "CHIMERA_SERVE_TOKEN", hide_env_values = true)]
    pub daemon_token: Option<String>,
    /// The heal mode where the stack's `reconcile` settings name none (as `chimera serve
    /// --heal`): auto (the daemon puts drift back), propose (adopt it in a pull request),
    /// report.
    #[arg(long, default_value = "report", value_parser = parse_mode)]
    pub heal: HealMode,
    #[command(flatten)]
    pub publish: PublishArgs,
}

/// Where a verified change goes, shared by `propose` and `heal`.
#[derive(Debug, Args)]
pub struct PublishArgs {
    /// Where the pull request goes. Default: GitHub when `GITHUB_TOKEN` and `--repo` are set,
    /// else none.
    #[arg(long, value_enum)]
    pub forge: Option<ForgeKind>,
    /// The forge's repository, `OWNER/NAME`.
    #[arg(long, value_name = "OWNER/NAME")]
    pub repo: Option<String>,
    /// The forge's API URL (GitHub Enterprise: `https://HOST/api/v3`).
    #[arg(long, value_name = "URL")]
    pub forge_url: Option<String>,
    /// The git remote the branch is pushed to.
    #[arg(long, default_value = "origin")]
    pub remote: String,
    /// The branch the pull request is proposed for.
    #[arg(long, default_value = "main")]
    pub base: String,
    /// Verify only: no branch, no commit, no pull request.
    #[arg(long)]
    pub dry_run: bool,
    /// The memory of past proposals, a SQLite file (default: Qdrant when `QDRANT_URL` is set,
    /// else `.chimera/agent-memory.db` beside the stack).
    #[arg(long, value_name = "FILE")]
    pub memory: Option<PathBuf>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub state: StateArgs,
}

fn parse_mode(s: &str) -> Result<HealMode, String> {
    s.parse()
}

pub fn run(global: &Global, cmd: &AgentCmd) -> ExitStatus {
    match cmd {
        AgentCmd::Propose(args) => run_propose(global, args),
        AgentCmd::Heal(args) => run_heal(global, args),
    }
}

fn agent_failure(global: &Global, summary: &str, e: &AgentError) -> ExitStatus {
    match e {
        AgentError::Workflow(w) => ctx::report(global, None, w),
        other => ctx::fail(
            global,
            Diagnostic::error(codes::AGENT, summary.to_string()).detail(other.to_string()),
        ),
    }
    ExitStatus::Failure
}

/// The proposer of `kind`; the offline planner reads the stack's utilisation (for `rightsize`)
/// through the read-only view.
async fn proposer(
    kind: ProposerKind,
    dir: &std::path::Path,
    settings: &chimera_workflow::Settings,
) -> Result<Box<dyn Proposer>, AgentError> {
    Ok(match kind {
        ProposerKind::Offline => {
            let mut stack = ReadOnlyStack::open(dir, settings.clone());
            Box::new(OfflinePlanner::for_stack(&mut stack).await?)
        }
        ProposerKind::Openai => Box::new(LlmProposer::from_config(
            LlmKind::OpenAi,
            LlmConfig::from_env(LlmKind::OpenAi)?,
        )?),
        ProposerKind::Anthropic => Box::new(LlmProposer::from_config(
            LlmKind::Anthropic,
            LlmConfig::from_env(LlmKind::Anthropic)?,
        )?),
    })
}

fn forge(args: &PublishArgs) -> Result<Box<dyn Forge>, AgentError> {
    let token_set =
        std::env::var(chimera_agents::forge::TOKEN_ENV).is_ok_and(|t| !t.trim().is_empty());
    let kind = args.forge.unwrap_or(if token_set && args.repo.is_some() {
        ForgeKind::Github
    } else {
        ForgeKind::None
    });
    Ok(match kind {
        ForgeKind::None => Box::new(NoForge),
        ForgeKind::Github => {
            let repo = args.repo.as_deref().ok_or_else(|| {
                AgentError::Forge(
                    "--forge github needs --repo OWNER/NAME (the repository pull requests are opened in)"
                        .into(),
                )
            })?;
            Box::new(GitHub::from_lookup(repo, args.forge_url.as_deref(), |k| {
                std::env::var(k).ok()
            })?)
        }
    })
}

/// Runs one proposal through the loop with `args`' destination and memory.
async fn run_loop(
    dir: PathBuf,
    intent: String,
    settings: chimera_workflow::Settings,
    proposer: &dyn Proposer,
    forge: &dyn Forge,
    args: &PublishArgs,
    rounds: usize,
    adopt: Option<std::collections::BTreeSet<String>>,
) -> Result<Proposal, AgentError> {
    // `--memory FILE`: that SQLite file; else Qdrant when `QDRANT_URL` is set, else the
    // SQLite file beside the stack.
    let memory: Box<dyn Memory> = match &args.memory {
        Some(path) => Box::new(SqliteMemory::open(path).await?),
        None => memory::open(&dir, |k| std::env::var(k).ok(), HashingEmbedder::default()).await?,
    };
    let repo = if args.dry_run {
        None
    } else {
        let repo = Repo::open(&dir).await?.with_remote(args.remote.clone());
        // The branch starts from the remote's base as it is now, not as last fetched.
        if forge.is_remote() {
            repo.fetch(&args.base).await?;
        }
        Some(repo)
    };
    let destination = repo.as_ref().map(|repo| Destination {
        repo,
        forge,
        base_ref: if forge.is_remote() {
            format!("{}/{}", args.remote, args.base)
        } else {
            args.base.clone()
        },
        base_branch: args.base.clone(),
    });
    propose::propose(propose::Request {
        dir,
        intent,
        settings,
        proposer,
        memory: Some(memory.as_ref()),
        destination,
        max_rounds: rounds,
        adopt,
    })
    .await
}

fn run_propose(global: &Global, args: &ProposeArgs) -> ExitStatus {
    let rt = ctx::runtime();
    let settings = ctx::settings(global, Some(&args.publish.state));
    let dir = chimera_workflow::stack_dir(&args.path);
    let proposer = match rt.block_on(proposer(args.proposer, &dir, &settings)) {
        Ok(p) => p,
        Err(e) => return agent_failure(global, "cannot start the proposer", &e),
    };
    let forge = match forge(&args.publish) {
        Ok(f) => f,
        Err(e) => return agent_failure(global, "cannot reach the forge", &e),
    };
    let result = rt.block_on(run_loop(
        dir,
        args.intent.clone(),
        settings,
        proposer.as_ref(),
        forge.as_ref(),
        &args.publish,
        args.rounds,
        None,
    ));
    match result {
        Ok(p) => report(&args.publish, &p),
        Err(e) => agent_failure(global, "the proposal stopped", &e),
    }
}

fn run_heal(global: &Global, args: &HealArgs) -> ExitStatus {
    let rt = ctx::runtime();
    let settings = ctx::settings(global, Some(&args.publish.state));
    let dir = chimera_workflow::stack_dir(&args.path);
    let assessment = match rt.block_on(heal::assess(&dir, &settings, args.heal)) {
        Ok(a) => a,
        Err(e) => return agent_failure(global, "cannot read the stack's drift", &e),
    };
    let mut out = String::new();
    if assessment.items.is_empty() {
        out.push_str(&format!(
            "{}: no drift; the cloud matches the last applied generation.\n",
            assessment.stack
        ));
    }
    for item in &assessment.items {
        let what = match &item.class {
            heal::Class::Changed { attrs } => format!("changed ({})", attrs.join(", ")),
            heal::Class::RuleAdded { rules } => format!("{rules} firewall rule(s) added"),
            heal::Class::Deleted => "deleted".into(),
            heal::Class::Unmanaged { kind, cloud_id } => {
                format!("unmanaged {kind} {cloud_id} tagged for the stack")
            }
        };
        let action = match item.action {
            heal::Action::ReApply => "re-apply by the daemon",
            heal::Action::Adopt => "adopt in a pull request",
            heal::Action::Report => "report",
        };
        out.push_str(&format!(
            "{}: {what} — mode {} → {action}\n",
            item.address
                .as_ref()
                .map(|a| a.to_string())
                .unwrap_or_else(|| "(unmanaged)".into()),
            item.mode.as_str()
        ));
        if let Some(n) = &item.note {
            out.push_str(&format!("  {n}\n"));
        }
    }
    crate::ui::print(&out);
    let mut status = ExitStatus::Success;
    let reapply = assessment
        .items
        .iter()
        .filter(|i| i.action == heal::Action::ReApply)
        .count();
    if reapply > 0 {
        match &args.daemon {
            Some(url) => {
                let daemon = super::ctl::Daemon {
                    url: url.clone(),
                    token: args.daemon_token.clone(),
                };
                let path = format!(
                    "/api/stacks/{}/reconcile",
                    super::ctl::encode(&assessment.stack)
                );
                match super::ctl::call(&daemon, "POST", &path) {
                    Ok(_) => eprintln!(
                        "Asked the daemon at {url} to reconcile {} now: it puts back {reapply} drifted resource(s) through its policy gate.",
                        assessment.stack
                    ),
                    Err(m) => {
                        ctx::fail(
                            global,
                            Diagnostic::error(
                                codes::SERVE,
                                "the daemon refused or cannot be reached",
                            )
                            .detail(m),
                        );
                        status = ExitStatus::Failure;
                    }
                }
            }
            None => eprintln!(
                "{reapply} drifted resource(s) in heal mode auto: `chimera serve` puts them back on its next tick (`chimera ctl reconcile {}` starts it now). Agents never apply.",
                assessment.stack
            ),
        }
    }
    if assessment.adopt.edits.is_empty() {
        return status;
    }
    let forge = match forge(&args.publish) {
        Ok(f) => f,
        Err(e) => return agent_failure(global, "cannot reach the forge", &e),
    };
    let adopted: Vec<String> = assessment
        .items
        .iter()
        .filter(|i| i.action == heal::Action::Adopt)
        .filter_map(|i| i.address.as_ref().map(|a| a.to_string()))
        .collect();
    let prepared = heal::Prepared {
        draft: assessment.adopt.clone(),
        name: "adopt-drift".into(),
    };
    let result = rt.block_on(run_loop(
        dir,
        chimera_serve::agent::ADOPT_INTENT.to_string(),
        settings,
        &prepared,
        forge.as_ref(),
        &args.publish,
        1,
        Some(adopted.iter().cloned().collect()),
    ));
    match result {
        Ok(p) => {
            let s = report(&args.publish, &p);
            if s == ExitStatus::Success { status } else { s }
        }
        Err(e) => agent_failure(global, "the adopting proposal stopped", &e),
    }
}

fn report(args: &PublishArgs, p: &Proposal) -> ExitStatus {
    if args.json {
        let doc = serde_json::json!({
            "intent": p.intent,
            "stack": p.stack,
            "proposer": p.proposer,
            "branch": p.branch,
            "result": p.outcome,
            "title": p.title,
            "rounds": p.rounds,
            "monthly_before": p.monthly_before,
            "monthly_after": p.verdict.as_ref().and_then(|v| v.cost.as_ref()).map(|c| c.monthly_after),
            "refused_writes": p.refused_writes,
            "body": p.body,
        });
        crate::ui::print(&format!(
            "{}\n",
            serde_json::to_string_pretty(&doc).unwrap_or_default()
        ));
    }
    let rounds = p.rounds.len();
    let line = match &p.outcome {
        Outcome::Opened { number, url } => {
            format!("Opened pull request #{number}: {url} ({rounds} round(s))")
        }
        Outcome::Updated { number, url } => {
            format!("Updated pull request #{number}: {url} ({rounds} round(s))")
        }
        Outcome::Committed { branch, commit } => format!(
            "Committed on {branch} ({}) in the local repository; no forge, so the pull request body follows.",
            &commit[..commit.len().min(12)]
        ),
        Outcome::Verified => format!("Verified in {rounds} round(s) (dry run: nothing committed)."),
        Outcome::NotCompiled => {
            format!("No pull request: no draft compiled in {rounds} round(s).")
        }
        Outcome::Denied => "No pull request: a policy denies the proposal.".into(),
        Outcome::Exhausted => format!("No pull request: no draft passed in {rounds} round(s)."),
        Outcome::Unsupported { reason } => format!("No pull request: {reason}"),
    };
    if !args.json {
        if !matches!(p.outcome, Outcome::Opened { .. } | Outcome::Updated { .. }) {
            crate::ui::print(&format!("# {}\n\n{}\n", p.title, p.body));
        }
        eprintln!("{line}");
    }
    if p.outcome.published() || p.outcome == Outcome::Verified {
        ExitStatus::Success
    } else {
        ExitStatus::Failure
    }
}
