//! The flow from verified files to a pull request: commit on the agent branch, push it, open
//! or update the pull request — and take the branch back when the pull request cannot be
//! opened, so a failed run leaves no orphan branch on the remote.

use std::path::PathBuf;

use super::git::{Commit, Repo, redact};
use super::{Forge, PrRequest, PullRequest};
use crate::AgentError;

/// What to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The agent branch (see [`super::branch_for`]).
    pub branch: String,
    /// The commit the branch starts from, as git names it (`origin/main`, `main`, `HEAD`).
    pub base_ref: String,
    /// The branch the pull request is proposed for, as the forge names it (`main`).
    pub base_branch: String,
    /// Full contents, paths relative to the repository root.
    pub files: Vec<(PathBuf, String)>,
    pub message: String,
    pub title: String,
    pub body: String,
}

/// What [`publish`] left behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub branch: String,
    pub commit: Commit,
    /// The remote branch was created or moved by this run (false: no forge, or the remote
    /// already had this commit).
    pub pushed: bool,
    pub pr: PullRequest,
}

/// Publishes a verified change: what the propose loop calls once a draft passed the verifier.
///
/// What it needs:
/// - `repo`: [`Repo::open`] on any directory of the user's git repository. Its remote
///   (`origin`, or [`Repo::with_remote`]) must be the repository the forge serves.
/// - `forge`: [`super::GitHub`] for pull requests, or [`super::NoForge`] to stay local.
/// - `change.branch`: [`super::branch_for`] of the intent (the same intent gives the same
///   branch, which is how a re-run updates its pull request instead of opening another).
/// - `change.base_ref`: the commit the branch starts from, as git names it: `origin/main` for
///   a remote forge (fetch it first; `publish` does not fetch), `main` or `HEAD` without one.
/// - `change.base_branch`: the branch the pull request targets, as the forge names it
///   (`main`).
/// - `change.files`: the full new text of every file the draft changed (the verifier's
///   `Verdict::files`), with paths relative to the **repository root**, not to the stack's
///   directory. Files not named keep their contents at `base_ref`.
/// - `change.message`: the commit message; `change.title` and `change.body`: the pull
///   request's title and Markdown body (a body over [`super::BODY_LIMIT`] is cut, with a
///   note). Neither may hold secrets: they are sent as given.
///
/// What it does: commits the files on `change.branch` as one commit on `base_ref` by the
/// Chimera agent, without touching the user's working tree, index or `HEAD` (see
/// [`Repo::commit_files`]; unchanged contents on an unchanged base reuse the existing
/// commit). With a local forge ([`Forge::is_remote`] false) that is all: the caller prints
/// the body. Otherwise it pushes the branch with a lease (a branch someone else pushed to is
/// refused, not overwritten) and opens the pull request or updates the open one.
///
/// Errors: [`AgentError::Git`] when the files equal `base_ref` ("nothing to commit"), the
/// branch is checked out somewhere, or git fails; [`AgentError::Forge`] when the forge refuses
/// or fails. When opening fails on a branch this run created on the remote, the branch is
/// deleted there again (it stays in the local repository) and the error says so; a branch
/// that existed before, with its pull request, is left as it is.
pub async fn publish(
    repo: &Repo,
    forge: &dyn Forge,
    change: &Change,
) -> Result<Published, AgentError> {
    let commit = repo
        .commit_files(
            &change.branch,
            &change.base_ref,
            &change.files,
            &change.message,
        )
        .await?;
    let request = PrRequest {
        head: change.branch.clone(),
        base: change.base_branch.clone(),
        title: change.title.clone(),
        body: change.body.clone(),
    };
    if !forge.is_remote() {
        let pr = forge.open_or_update(&request).await?;
        return Ok(Published {
            branch: change.branch.clone(),
            commit,
            pushed: false,
            pr,
        });
    }
    let pushed = repo.push(&change.branch, &commit.id).await?;
    match forge.open_or_update(&request).await {
        Ok(pr) => Ok(Published {
            branch: change.branch.clone(),
            commit,
            pushed: pushed.pushed,
            pr,
        }),
        Err(e) if pushed.before.is_none() => {
            let what = match e {
                AgentError::Forge(m) => m,
                other => other.to_string(),
            };
            Err(AgentError::Forge(
                match repo.delete_remote_branch(&change.branch, &commit.id).await {
                    Ok(()) => format!(
                        "{what}; the branch {} was deleted from the remote again (it stays \
                         in the local repository)",
                        change.branch
                    ),
                    Err(cleanup) => format!(
                        "{what}; and the branch {} this run pushed could not be deleted from \
                         the remote again, delete it by hand (`git push {} --delete {}`): \
                         {cleanup}",
                        change.branch,
                        redact(repo.remote()),
                        change.branch
                    ),
                },
            ))
        }
        Err(e) => Err(e),
    }
}
