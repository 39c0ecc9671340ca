//! `--forge none`, or no token: the branch and its commit stay in the local repository, and the
//! caller prints the body that would have opened the pull request.

use async_trait::async_trait;

use super::{Forge, PrRequest, PrState, PullRequest};
use crate::AgentError;

/// A forge that is not there: nothing leaves the machine.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NoForge;

#[async_trait]
impl Forge for NoForge {
    /// Number 0 and `(local branch <head>)`: there is no pull request, the caller prints its
    /// body.
    async fn open_or_update(&self, pr: &PrRequest) -> Result<PullRequest, AgentError> {
        Ok(PullRequest {
            number: 0,
            url: format!("(local branch {})", pr.head),
            created: false,
        })
    }

    /// Nothing to comment on; the caller prints the comment.
    async fn comment(&self, _number: u64, _body: &str) -> Result<(), AgentError> {
        Ok(())
    }

    async fn state(&self, number: u64) -> Result<PrState, AgentError> {
        Err(AgentError::Forge(format!(
            "there is no forge (--forge none), so no pull request #{number} to ask about; the \
             branch is local"
        )))
    }

    fn is_remote(&self) -> bool {
        false
    }
}
