//! The daemon's `propose` mode, end to end: drift left for the agents becomes a pull request
//! that adopts the live values (`chimera_agents::heal`), opened once per distinct drift — the
//! same drift on the next tick changes nothing, and the same branch and pull request are updated
//! when it changes. The daemon still applies nothing here: the pull request is verified against
//! the cloud as it is, and merging it is a person's decision.

use std::collections::BTreeSet;
use std::path::Path;

use chimera_agents::forge::{Forge, GitHub, NoForge, Repo};
use chimera_agents::heal::{Action, Prepared, assess};
use chimera_agents::propose::{self, Destination, Outcome};
use chimera_plans::drift::Drift;
use chimera_workflow::HealMode;

use crate::{Event, Shared, locked, now_unix};

/// Where the daemon's adopting pull requests go.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub forge: AgentForge,
    /// The git remote the branch is pushed to (with a forge).
    pub remote: String,
    /// The branch pull requests are proposed for.
    pub base: String,
}

#[derive(Clone)]
pub enum AgentForge {
    /// Branches and commits in the stack's local repository only.
    None,
    GitHub {
        /// `OWNER/NAME`.
        repo: String,
        api_url: Option<String>,
        token: String,
    },
}

impl std::fmt::Debug for AgentForge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AgentForge::None => f.write_str("None"),
            AgentForge::GitHub { repo, api_url, .. } => f
                .debug_struct("GitHub")
                .field("repo", repo)
                .field("api_url", api_url)
                .finish_non_exhaustive(),
        }
    }
}

/// What identifies one drift: the addresses left for the agents and what the cloud holds.
fn signature(drift: &[Drift], proposed: &BTreeSet<String>) -> String {
    let mut parts: Vec<String> = drift
        .iter()
        .filter(|d| proposed.contains(&d.address.to_string()))
        .map(|d| serde_json::to_string(d).unwrap_or_default())
        .collect();
    parts.sort();
    blake3::hash(parts.join("\n").as_bytes())
        .to_hex()
        .to_string()
}

/// Opens (or updates) the pull request adopting the drift `proposed` on the stack at `path`,
/// unless this very drift was proposed already.
pub(crate) async fn propose_adoption(
    shared: &Shared,
    path: &Path,
    key: &str,
    drift: &[Drift],
    proposed: &[chimera_model::Address],
) {
    let Some(cfg) = shared.cfg.agent.as_ref() else {
        return;
    };
    let proposed: BTreeSet<String> = proposed.iter().map(ToString::to_string).collect();
    if proposed.is_empty() {
        locked(&shared.proposals).remove(key);
        return;
    }
    let sig = signature(drift, &proposed);
    if locked(&shared.proposals).get(key) == Some(&sig) {
        return;
    }
    let (kind, detail) = match adopt(shared, cfg, path, &proposed).await {
        Ok(line) => ("proposed", line),
        Err(Failure::Final(why)) => ("propose-failed", why),
        Err(Failure::Transient(why)) => {
            // The forge, git or the cloud failed: tried again next tick.
            tracing::warn!(stack = %key, action = "propose", error = %why, "adopting pull request not opened; retrying next tick");
            return;
        }
    };
    // Remembered either way: a drift that cannot be adopted is not retried every tick (a new
    // drift, or a restart, tries again).
    locked(&shared.proposals).insert(key.to_string(), sig);
    if kind == "proposed" {
        tracing::info!(stack = %key, action = "propose", "{detail}");
    } else {
        tracing::warn!(stack = %key, action = "propose", error = %detail, "no adopting pull request");
    }
    shared.event(
        key,
        Event {
            at: now_unix(),
            kind,
            address: None,
            detail,
            generation: None,
        },
    );
}

/// The intent (and so the branch, `chimera/agent/<stack>-adopt-drift`) of every adoption.
pub const ADOPT_INTENT: &str = "adopt drift";

/// Why no pull request was opened.
enum Failure {
    /// It cannot be adopted (the values are not written literally, or do not verify).
    Final(String),
    /// Something on the way failed (reading the cloud, git, the forge): try again.
    Transient(String),
}

async fn adopt(
    shared: &Shared,
    cfg: &AgentConfig,
    path: &Path,
    proposed: &BTreeSet<String>,
) -> Result<String, Failure> {
    let transient = |e: chimera_agents::AgentError| Failure::Transient(e.to_string());
    let settings = &shared.cfg.settings;
    let dir = chimera_workflow::stack_dir(path);
    let assessment = assess(&dir, settings, shared.cfg.mode)
        .await
        .map_err(transient)?;
    let adopted: BTreeSet<String> = assessment
        .items
        .iter()
        .filter(|i| i.action == Action::Adopt && i.mode == HealMode::Propose)
        // The assessment uses the reconcile's policy: its adopted set is the proposed drift
        // that can be adopted, and its draft holds exactly their edits.
        .filter_map(|i| i.address.as_ref().map(ToString::to_string))
        .collect();
    if adopted.is_empty() || assessment.adopt.edits.is_empty() {
        let why: Vec<String> = assessment
            .items
            .iter()
            .filter_map(|i| {
                let a = i.address.as_ref()?.to_string();
                proposed
                    .contains(&a)
                    .then(|| format!("{a}: {}", i.note.clone().unwrap_or_default()))
            })
            .collect();
        return Err(Failure::Final(format!(
            "nothing to adopt in a pull request: {}",
            why.join("; ")
        )));
    }
    let forge: Box<dyn Forge> = match &cfg.forge {
        AgentForge::None => Box::new(NoForge),
        AgentForge::GitHub {
            repo,
            api_url,
            token,
        } => {
            let mut g = GitHub::new(repo, token).map_err(|e| Failure::Final(e.to_string()))?;
            if let Some(url) = api_url {
                g = g
                    .with_api_url(url)
                    .map_err(|e| Failure::Final(e.to_string()))?;
            }
            Box::new(g)
        }
    };
    let repo = Repo::open(&dir)
        .await
        .map_err(|e| Failure::Final(e.to_string()))?
        .with_remote(cfg.remote.clone());
    if forge.is_remote() {
        repo.fetch(&cfg.base).await.map_err(transient)?;
    }
    let prepared = Prepared {
        draft: assessment.adopt.clone(),
        name: format!("chimera serve ({})", shared.cfg.replica),
    };
    // One branch and pull request per stack, whatever drifted: new drift updates it.
    let intent = ADOPT_INTENT.to_string();
    let p = propose::propose(propose::Request {
        dir: dir.clone(),
        intent,
        settings: settings.clone(),
        proposer: &prepared,
        memory: None,
        destination: Some(Destination {
            repo: &repo,
            forge: forge.as_ref(),
            base_ref: if forge.is_remote() {
                format!("{}/{}", cfg.remote, cfg.base)
            } else {
                cfg.base.clone()
            },
            base_branch: cfg.base.clone(),
        }),
        max_rounds: 1,
        adopt: Some(adopted),
    })
    .await
    .map_err(transient)?;
    match &p.outcome {
        Outcome::Opened { number, url } => Ok(format!("opened pull request #{number}: {url}")),
        Outcome::Updated { number, url } => Ok(format!("updated pull request #{number}: {url}")),
        Outcome::Committed { branch, commit } => Ok(format!(
            "committed {} on {branch} (no forge)",
            &commit[..commit.len().min(12)]
        )),
        other => Err(Failure::Final(format!(
            "the adopting edits did not verify ({other:?}): {}",
            p.rounds
                .last()
                .map(|r| r.feedback.join("; "))
                .unwrap_or_default()
        ))),
    }
}
