//! Where a verified proposal goes: a branch, a commit and a pull request.
//!
//! - [`git`]: the git CLI, driven without touching the user's working tree or index (a
//!   temporary index and plumbing), pushing with a lease.
//! - [`Forge`]: pull requests — open or update, comment, ask their state. [`GitHub`] speaks
//!   GitHub's REST API (github.com or Enterprise); [`NoForge`] keeps everything local.
//! - [`publish`]: the flow that ties them: commit, push, open or update, and delete the branch
//!   again when the pull request cannot be opened.
//!
//! **Architecture Invariant:** the user's checkout is never touched: no checkout, no reset, no
//! stash; the branch is written through a temporary index and `update-ref`.
//!
//! **Architecture Invariant:** no token ever appears in an error or a log line.

mod body;
pub mod git;
mod github;
mod none;
mod publish;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::AgentError;

pub use body::{BODY_LIMIT, truncate_body};
pub use git::{Commit, Pushed, Repo, branch_for, slug};
pub use github::{API_URL_ENV, DEFAULT_API_URL, GitHub, RetryPolicy, TOKEN_ENV};
pub use none::NoForge;
pub use publish::{Change, Published, publish};

/// A pull request to open, or to update when one is already open for `head`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrRequest {
    /// The branch the changes are on (`chimera/agent/<slug>`).
    pub head: String,
    /// The branch they are proposed for (`main`).
    pub base: String,
    pub title: String,
    /// Markdown; cut to [`BODY_LIMIT`] by the forge if longer.
    pub body: String,
}

/// An opened (or updated) pull request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullRequest {
    /// 0 for [`NoForge`]: there is no pull request, only a local branch.
    pub number: u64,
    pub url: String,
    /// A new pull request was opened (false: an open one was updated, or there is none).
    pub created: bool,
}

/// Where a pull request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PrState {
    Open,
    Merged,
    /// Closed without being merged.
    Closed,
}

impl PrState {
    pub fn as_str(self) -> &'static str {
        match self {
            PrState::Open => "open",
            PrState::Merged => "merged",
            PrState::Closed => "closed",
        }
    }
}

/// A place pull requests are opened.
#[async_trait]
pub trait Forge: Send + Sync {
    /// Opens a pull request from `pr.head` into `pr.base`, or updates the title and body of the
    /// one already open for that head, so re-running the same intent never opens a second one.
    async fn open_or_update(&self, pr: &PrRequest) -> Result<PullRequest, AgentError>;

    /// Adds a comment to pull request `number` (cut to [`BODY_LIMIT`] if longer).
    async fn comment(&self, number: u64, body: &str) -> Result<(), AgentError>;

    async fn state(&self, number: u64) -> Result<PrState, AgentError>;

    /// Whether the forge lives behind the git remote, so [`publish`] pushes the branch before
    /// opening the pull request. [`NoForge`] says no: the branch stays local.
    fn is_remote(&self) -> bool {
        true
    }
}
