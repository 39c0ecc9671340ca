//! The agent layer: intents and drift become **verified pull requests**. A proposer (the
//! offline planner, or a model behind an LLM backend) drafts edits to a stack's Nickel files;
//! Chimera verifies every draft itself — compile the patched sources in memory, plan against
//! current state, price, run the policies — and feeds what failed back, for at most five
//! rounds; what passes becomes a branch, a commit and a pull request whose body carries the
//! plan, the cost delta, the policy results and the verifier's log. A memory of past proposals,
//! incidents and outcomes comes back into the context.
//!
//! Agents never apply: they see the workflow library only through a read-only view, and their
//! providers are wrapped read-only. Repository text, tags and drift are data, not
//! instructions.
//!
//! - `llm`: OpenAI-compatible Chat Completions and Anthropic Messages clients with tool calls.
//! - `planner`: the offline, deterministic proposer for the common intents.
//! - `forge`: pull requests (GitHub REST; none = local branch + printed body), and git.
//! - `memory`: what happened before (embedded SQLite, or Qdrant), with a hashing embedder.

pub mod context;
pub mod forge;
pub mod heal;
pub mod llm;
pub mod memory;
pub mod planner;
pub mod propose;
pub mod verify;

use std::path::PathBuf;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// One edit of one file: replace exactly `old` (which must occur once) with `new`. A model
/// proposes edits as structured tool calls of this shape, never as text applied blindly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Edit {
    /// Relative to the stack's directory.
    pub file: PathBuf,
    pub old: String,
    pub new: String,
}

/// A proposer's answer for one round.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Draft {
    pub edits: Vec<Edit>,
    /// One paragraph for the pull request: what the edits do and why.
    pub summary: String,
    /// A numeric goal the intent set (e.g. cut the monthly cost by 30%), for the verifier to
    /// check and the pull request to report plainly when missed.
    pub target: Option<Target>,
}

/// A measurable goal of an intent.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Target {
    /// Monthly cost down by at least this fraction (0.3 = 30%).
    CostCut(f64),
}

/// A file of the stack, as the proposer sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceFile {
    pub path: PathBuf,
    pub text: String,
}

/// A past record the memory found relevant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recalled {
    pub text: String,
    /// `merged`, `closed`, `opened`, `rejected`, `failed`, …
    pub outcome: String,
    pub score: f32,
}

/// What a proposer is given: the intent, and everything Chimera knows that bears on it. All of
/// it is data: nothing in the files, the state or the memories is an instruction.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Context {
    pub intent: String,
    pub stack: String,
    pub files: Vec<SourceFile>,
    /// The compiled graph, one resource per line (address, provider, region, key attributes;
    /// sensitive values never).
    pub graph: String,
    /// What state holds: counts per kind, the latest generation, drift if any.
    pub state: String,
    /// The monthly cost, per resource kind.
    pub cost: String,
    /// The policies' file names and their rules' names.
    pub policies: String,
    pub memories: Vec<Recalled>,
    /// The earlier rounds of this proposal: each draft and what the verifier said of it.
    pub rounds: Vec<Round>,
}

/// One verifier round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Round {
    pub draft: Draft,
    /// What failed (diagnostics with file and line, policy denials, a missed target); empty
    /// when the draft passed.
    pub feedback: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The proposer cannot do this intent (the offline planner does not know it, or a model
    /// gave up).
    #[error("cannot propose: {0}")]
    Unsupported(String),
    /// A model backend failed (network, status, malformed answer).
    #[error("model: {0}")]
    Model(String),
    #[error("forge: {0}")]
    Forge(String),
    #[error("git: {0}")]
    Git(String),
    #[error("memory: {0}")]
    Memory(String),
    #[error(transparent)]
    Workflow(#[from] chimera_workflow::Error),
}

/// Drafts edits for an intent.
#[async_trait]
pub trait Proposer: Send + Sync {
    /// A short name for logs and the pull request (`offline`, `openai:MODEL`, …).
    fn name(&self) -> String;
    async fn propose(&self, ctx: &Context) -> Result<Draft, AgentError>;
}
