//! The git CLI, as the agent layer needs it: put files on a branch without touching the user's
//! checkout, push it with a lease, delete it again.
//!
//! The branch is written with plumbing on a temporary index (`GIT_INDEX_FILE`): `read-tree`
//! of the base, `hash-object` for each file, `update-index`, `write-tree`, `commit-tree`, and
//! `update-ref` with the old value as a compare-and-swap. The user's working tree, index,
//! `HEAD` and stash are never read or written.

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::path::{Component, Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use tokio::io::AsyncWriteExt;

use crate::AgentError;

/// The author and committer of every agent commit.
pub const AGENT_NAME: &str = "Chimera Agent";
pub const AGENT_EMAIL: &str = "agent@chimera.invalid";

/// Agent branches live under this prefix.
pub const BRANCH_PREFIX: &str = "chimera/agent/";

/// The longest slug.
pub const SLUG_MAX: usize = 50;

/// How long one git command may run by default (a push over a slow link included).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// A branch name part for an intent: lowercase `[a-z0-9-]`, at most [`SLUG_MAX`] characters,
/// the same for the same intent. Words are kept; when the intent had to be shortened or lost
/// characters outside ASCII, a short hash of the whole intent keeps different intents apart.
pub fn slug(intent: &str) -> String {
    let mut words = String::new();
    let mut lossy = false;
    for c in intent.chars() {
        if c.is_ascii_alphanumeric() {
            words.push(c.to_ascii_lowercase());
        } else if c == '\'' || c == '\u{2019}' {
            // `tier's` → `tiers`
        } else {
            lossy |= !c.is_ascii();
            if !words.is_empty() && !words.ends_with('-') {
                words.push('-');
            }
        }
    }
    let words = words.trim_end_matches('-');
    if words.len() <= SLUG_MAX && !lossy && !words.is_empty() {
        return words.to_string();
    }
    let hash = format!("{:08x}", fnv1a(intent.trim()) as u32);
    if words.is_empty() {
        return format!("intent-{hash}");
    }
    // Room for `-` and the hash; cut at a word boundary when there is one.
    let room = SLUG_MAX - hash.len() - 1;
    let mut head = &words[..words.len().min(room)];
    if words.len() > room
        && let Some(i) = head.rfind('-')
        && i > room / 2
    {
        head = &head[..i];
    }
    format!("{}-{hash}", head.trim_end_matches('-'))
}

/// The branch for an intent: `chimera/agent/<slug>`.
pub fn branch_for(intent: &str) -> String {
    format!("{BRANCH_PREFIX}{}", slug(intent))
}

/// FNV-1a, 64 bits: stable across Rust versions and machines, unlike `DefaultHasher`.
fn fnv1a(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The commit a branch was left at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    /// The full object id.
    pub id: String,
    /// A new commit was made; false when the branch already held exactly these contents on
    /// this base.
    pub created: bool,
}

/// What [`Repo::push`] found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pushed {
    /// The remote branch's commit before the push; `None`: this run created the branch.
    pub before: Option<String>,
    /// Something was sent (false: the remote already had the commit).
    pub pushed: bool,
}

/// A working repository and the remote its agent branches go to.
#[derive(Debug, Clone)]
pub struct Repo {
    root: PathBuf,
    remote: String,
    timeout: Duration,
}

impl Repo {
    /// The repository containing `path`, pushing to `origin`.
    pub async fn open(path: impl AsRef<Path>) -> Result<Repo, AgentError> {
        let probe = Repo {
            root: path.as_ref().to_path_buf(),
            remote: "origin".into(),
            timeout: DEFAULT_TIMEOUT,
        };
        let top = probe
            .git(&["rev-parse", "--show-toplevel"], &[], None)
            .await?;
        Ok(Repo {
            root: PathBuf::from(top),
            ..probe
        })
    }

    /// Pushes to this remote (a name from `git remote`, or a URL or path) instead of `origin`.
    pub fn with_remote(mut self, remote: impl Into<String>) -> Repo {
        self.remote = remote.into();
        self
    }

    /// The longest one git command may take before it is killed.
    pub fn with_timeout(mut self, timeout: Duration) -> Repo {
        self.timeout = timeout;
        self
    }

    /// The top of the working tree.
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn remote(&self) -> &str {
        &self.remote
    }

    /// Puts `files` (paths relative to the repository root, full contents) on `branch`, as one
    /// commit on top of `base` (any commit-ish: `main`, `origin/main`, `HEAD`), authored by
    /// [`AGENT_NAME`]. The branch is created or moved (it is the agent's own); when it already
    /// holds exactly this tree on this base, nothing is committed and its commit is returned.
    ///
    /// Files not named keep their contents at `base`; an executable file stays executable.
    pub async fn commit_files(
        &self,
        branch: &str,
        base: &str,
        files: &[(PathBuf, String)],
        message: &str,
    ) -> Result<Commit, AgentError> {
        let refname = self.branch_ref(branch).await?;
        self.refuse_checked_out(&refname).await?;
        let base_commit = self
            .git(
                &[
                    "rev-parse",
                    "--verify",
                    "--end-of-options",
                    &format!("{base}^{{commit}}"),
                ],
                &[],
                None,
            )
            .await
            .map_err(|e| AgentError::Git(format!("the base {base:?} is not a commit: {e}")))?;
        let paths = files
            .iter()
            .map(|(p, _)| repo_path(p))
            .collect::<Result<Vec<_>, _>>()?;

        let scratch = tempfile::tempdir()
            .map_err(|e| AgentError::Git(format!("cannot create a temporary index: {e}")))?;
        let index = scratch.path().join("index");
        let env: &[(&str, &OsStr)] = &[("GIT_INDEX_FILE", index.as_os_str())];
        self.git(&["read-tree", &base_commit], env, None).await?;

        let modes = self.modes(&base_commit, &paths).await?;
        let mut info = String::new();
        for ((_, text), path) in files.iter().zip(&paths) {
            let blob = self
                .git(
                    &["hash-object", "-w", "--stdin"],
                    &[],
                    Some(text.as_bytes()),
                )
                .await?;
            let mode = match modes.iter().find(|(p, _)| p == path) {
                Some((_, m)) if m == "100755" => "100755",
                _ => "100644",
            };
            let _ = write!(info, "{mode} {blob}\t{path}\0");
        }
        self.git(
            &["update-index", "-z", "--index-info"],
            env,
            Some(info.as_bytes()),
        )
        .await?;
        let tree = self.git(&["write-tree"], env, None).await?;
        let base_tree = self
            .git(
                &["rev-parse", &format!("{base_commit}^{{tree}}")],
                &[],
                None,
            )
            .await?;
        if tree == base_tree {
            return Err(AgentError::Git(format!(
                "nothing to commit: the files are the same as at {base}"
            )));
        }

        let previous = self.local_tip(&refname).await?;
        if let Some(tip) = &previous {
            let line = self
                .git(&["rev-list", "--parents", "-n", "1", tip], &[], None)
                .await?;
            let parents: Vec<&str> = line.split_whitespace().skip(1).collect();
            let tip_tree = self
                .git(&["rev-parse", &format!("{tip}^{{tree}}")], &[], None)
                .await?;
            if tip_tree == tree && parents == [base_commit.as_str()] {
                return Ok(Commit {
                    id: tip.clone(),
                    created: false,
                });
            }
        }

        let agent: &[(&str, &OsStr)] = &[
            ("GIT_AUTHOR_NAME", OsStr::new(AGENT_NAME)),
            ("GIT_AUTHOR_EMAIL", OsStr::new(AGENT_EMAIL)),
            ("GIT_COMMITTER_NAME", OsStr::new(AGENT_NAME)),
            ("GIT_COMMITTER_EMAIL", OsStr::new(AGENT_EMAIL)),
        ];
        let commit = self
            .git(
                &["commit-tree", &tree, "-p", &base_commit, "-F", "-"],
                agent,
                Some(message.as_bytes()),
            )
            .await?;
        // Compare-and-swap: fails if the branch moved since it was read.
        let old = previous.unwrap_or_else(|| "0".repeat(commit.len()));
        self.git(
            &[
                "update-ref",
                "-m",
                "chimera agent: commit",
                &refname,
                &commit,
                &old,
            ],
            &[],
            None,
        )
        .await?;
        Ok(Commit {
            id: commit,
            created: true,
        })
    }

    /// The commit `branch` is at locally, if it exists.
    pub async fn branch_tip(&self, branch: &str) -> Result<Option<String>, AgentError> {
        let refname = self.branch_ref(branch).await?;
        self.local_tip(&refname).await
    }

    /// The commit `branch` is at on the remote, if it exists there (`git ls-remote`).
    pub async fn remote_branch(&self, branch: &str) -> Result<Option<String>, AgentError> {
        let refname = self.branch_ref(branch).await?;
        let out = self
            .git(&["ls-remote", "--", &self.remote, &refname], &[], None)
            .await?;
        Ok(out
            .lines()
            .filter_map(|l| l.split_once('\t'))
            .find(|(_, r)| *r == refname)
            .map(|(id, _)| id.to_string()))
    }

    /// Brings the remote's `branch` up to date in this repository (`git fetch REMOTE BRANCH`),
    /// so a branch made on `REMOTE/BRANCH` starts from what the remote holds now.
    pub async fn fetch(&self, branch: &str) -> Result<(), AgentError> {
        let refspec = format!("+refs/heads/{branch}:refs/remotes/{}/{branch}", self.remote);
        self.git(&["fetch", "--quiet", &self.remote, &refspec], &[], None)
            .await
            .map(drop)
    }

    /// Pushes `commit` to `branch` on the remote, replacing what is there only if it is what
    /// this repository last saw of it (`--force-with-lease`): the remote-tracking branch when
    /// there is one, else the value read just before. A branch someone else pushed to since is
    /// refused, not overwritten.
    pub async fn push(&self, branch: &str, commit: &str) -> Result<Pushed, AgentError> {
        let refname = self.branch_ref(branch).await?;
        let before = self.remote_branch(branch).await?;
        if before.as_deref() == Some(commit) {
            return Ok(Pushed {
                before,
                pushed: false,
            });
        }
        let expect = match (&before, self.tracking_tip(branch).await?) {
            (None, _) => String::new(),
            (Some(now), Some(seen)) if *now != seen => {
                return Err(AgentError::Git(format!(
                    "the branch {branch} on {remote} is at {now}, not at {seen} where this \
                     repository last saw it: someone else pushed to it, and Chimera does not \
                     overwrite their commits; fetch it (`git fetch {remote}`) to accept the \
                     remote's state, or delete it there",
                    remote = self.remote_label(),
                )));
            }
            (Some(now), _) => now.clone(),
        };
        self.git(
            &[
                "push",
                "--porcelain",
                &format!("--force-with-lease={refname}:{expect}"),
                "--",
                &self.remote,
                &format!("{commit}:{refname}"),
            ],
            &[],
            None,
        )
        .await?;
        Ok(Pushed {
            before,
            pushed: true,
        })
    }

    /// Deletes `branch` from the remote, if it is still at `commit`.
    pub async fn delete_remote_branch(&self, branch: &str, commit: &str) -> Result<(), AgentError> {
        let refname = self.branch_ref(branch).await?;
        self.git(
            &[
                "push",
                "--porcelain",
                &format!("--force-with-lease={refname}:{commit}"),
                "--",
                &self.remote,
                &format!(":{refname}"),
            ],
            &[],
            None,
        )
        .await?;
        Ok(())
    }

    /// `refs/heads/<branch>`, checked by `git check-ref-format`.
    async fn branch_ref(&self, branch: &str) -> Result<String, AgentError> {
        let refname = format!("refs/heads/{branch}");
        let ok = self
            .run(&["check-ref-format", &refname], &[], None)
            .await?
            .status
            .success();
        if ok && !branch.starts_with('-') {
            Ok(refname)
        } else {
            Err(AgentError::Git(format!(
                "{branch:?} is not a valid branch name"
            )))
        }
    }

    /// Refuses a branch checked out in any worktree of the repository: moving it would change
    /// what that checkout shows.
    async fn refuse_checked_out(&self, refname: &str) -> Result<(), AgentError> {
        let list = self
            .git(&["worktree", "list", "--porcelain"], &[], None)
            .await?;
        let mut worktree = "";
        for line in list.lines() {
            if let Some(path) = line.strip_prefix("worktree ") {
                worktree = path;
            } else if line.strip_prefix("branch ") == Some(refname) {
                return Err(AgentError::Git(format!(
                    "{} is checked out in {worktree}: Chimera writes agent branches without \
                     touching a checkout, so switch that worktree to another branch first",
                    refname.trim_start_matches("refs/heads/"),
                )));
            }
        }
        Ok(())
    }

    async fn local_tip(&self, refname: &str) -> Result<Option<String>, AgentError> {
        self.optional(&["rev-parse", "--verify", "-q", refname])
            .await
    }

    /// The remote-tracking branch for `branch`, when the remote is a named one.
    async fn tracking_tip(&self, branch: &str) -> Result<Option<String>, AgentError> {
        let named = self
            .optional(&["config", "--get", &format!("remote.{}.url", self.remote)])
            .await?
            .is_some();
        if !named {
            return Ok(None);
        }
        self.optional(&[
            "rev-parse",
            "--verify",
            "-q",
            &format!("refs/remotes/{}/{branch}", self.remote),
        ])
        .await
    }

    /// The modes `paths` have at `commit` (absent paths are left out).
    async fn modes(
        &self,
        commit: &str,
        paths: &[String],
    ) -> Result<Vec<(String, String)>, AgentError> {
        if paths.is_empty() {
            return Ok(Vec::new());
        }
        let mut args = vec![
            "--literal-pathspecs",
            "ls-tree",
            "-z",
            "--full-tree",
            commit,
            "--",
        ];
        args.extend(paths.iter().map(String::as_str));
        let out = self.git(&args, &[], None).await?;
        Ok(out
            .split('\0')
            .filter_map(|entry| {
                let (meta, path) = entry.split_once('\t')?;
                let mode = meta.split(' ').next()?;
                Some((path.to_string(), mode.to_string()))
            })
            .collect())
    }

    /// Output of a command that exits 1 for "no such thing": `None` then.
    async fn optional(&self, args: &[&str]) -> Result<Option<String>, AgentError> {
        let out = self.run(args, &[], None).await?;
        match out.status.code() {
            Some(0) => Ok(Some(
                String::from_utf8_lossy(&out.stdout).trim().to_string(),
            )),
            Some(1) => Ok(None),
            _ => Err(self.failure(args, &out)),
        }
    }

    /// Runs git and returns its trimmed standard output; a non-zero exit is an error carrying
    /// git's standard error.
    async fn git(
        &self,
        args: &[&str],
        env: &[(&str, &OsStr)],
        stdin: Option<&[u8]>,
    ) -> Result<String, AgentError> {
        let out = self.run(args, env, stdin).await?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(self.failure(args, &out))
        }
    }

    async fn run(
        &self,
        args: &[&str],
        env: &[(&str, &OsStr)],
        stdin: Option<&[u8]>,
    ) -> Result<Output, AgentError> {
        let mut cmd = tokio::process::Command::new("git");
        cmd.args(args)
            .current_dir(&self.root)
            .kill_on_drop(true)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // The repository is `root`, whatever the caller's environment says; never prompt.
            .env_remove("GIT_DIR")
            .env_remove("GIT_WORK_TREE")
            .env_remove("GIT_INDEX_FILE")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_ASKPASS", "")
            .env("SSH_ASKPASS", "")
            .env("GCM_INTERACTIVE", "never");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let what = self.describe(args);
        let work = async {
            let mut child = cmd
                .spawn()
                .map_err(|e| AgentError::Git(format!("cannot run {what}: {e}")))?;
            if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
                pipe.write_all(input)
                    .await
                    .map_err(|e| AgentError::Git(format!("{what}: writing its input: {e}")))?;
            }
            child
                .wait_with_output()
                .await
                .map_err(|e| AgentError::Git(format!("{what}: {e}")))
        };
        match tokio::time::timeout(self.timeout, work).await {
            Ok(result) => result,
            // Dropping the future kills the child (`kill_on_drop`).
            Err(_) => Err(AgentError::Git(format!(
                "{what} did not finish within {} s and was stopped",
                self.timeout.as_secs()
            ))),
        }
    }

    fn failure(&self, args: &[&str], out: &Output) -> AgentError {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let code = out
            .status
            .code()
            .map_or_else(|| "a signal".to_string(), |c| c.to_string());
        AgentError::Git(format!(
            "{} failed (exit {code}): {}",
            self.describe(args),
            redact(stderr.trim())
        ))
    }

    /// `git <args>` for messages, with any credentials in URLs hidden.
    fn describe(&self, args: &[&str]) -> String {
        redact(&format!("git {}", args.join(" ")))
    }

    fn remote_label(&self) -> String {
        redact(&self.remote)
    }
}

/// `path` as git names it in a tree: relative, `/`-separated, inside the repository, not in
/// `.git`.
fn repo_path(path: &Path) -> Result<String, AgentError> {
    let mut parts = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => match p.to_str() {
                Some(".git") | None => break,
                Some(p) => parts.push(p),
            },
            Component::CurDir => {}
            _ => {
                parts.clear();
                break;
            }
        }
    }
    let ok = !parts.is_empty()
        && parts.len()
            == path
                .components()
                .filter(|c| *c != Component::CurDir)
                .count()
        && !parts.iter().any(|p| p.contains(['\0', '\n', '\\']));
    if ok {
        Ok(parts.join("/"))
    } else {
        Err(AgentError::Git(format!(
            "{} is not a path inside the repository (it must be relative, without `..`, and \
             not under .git)",
            path.display()
        )))
    }
}

/// Hides the user-info part of every URL (`https://user:token@host` → `https://***@host`).
pub(crate) fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (before, after) = rest.split_at(i + 3);
        out.push_str(before);
        let end = after
            .find(|c: char| c.is_whitespace() || c == '/' || c == '\'' || c == '"')
            .unwrap_or(after.len());
        match after[..end].rfind('@') {
            Some(at) => {
                out.push_str("***");
                rest = &after[at..];
            }
            None => rest = after,
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs() {
        assert_eq!(
            slug("Cut the web tier's cost by 30%"),
            "cut-the-web-tiers-cost-by-30"
        );
        assert_eq!(slug("  add a replica  "), "add-a-replica");
        let long = slug(&"scale the web tier out to more instances ".repeat(4));
        assert!(long.len() <= SLUG_MAX, "{long}");
        assert_ne!(
            long,
            slug(&"scale the web tier out to more instances ".repeat(5))
        );
        assert!(slug("削減").starts_with("intent-"));
        assert_ne!(slug("réduire"), slug("r duire"));
        for s in [long, slug("削減"), slug("réduire les coûts")] {
            assert!(s.len() <= SLUG_MAX);
            assert!(
                s.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "{s}"
            );
            assert!(!s.starts_with('-') && !s.ends_with('-'), "{s}");
        }
    }

    #[test]
    fn paths() {
        assert_eq!(
            repo_path(Path::new("stacks/web/main.ncl")).unwrap(),
            "stacks/web/main.ncl"
        );
        assert_eq!(repo_path(Path::new("./a.ncl")).unwrap(), "a.ncl");
        for bad in [
            "/etc/passwd",
            "../x",
            "a/../../x",
            ".git/config",
            "",
            "a/.git/x",
        ] {
            assert!(repo_path(Path::new(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            redact("fatal: unable to access 'https://x-access-token:ghs_abc@github.com/o/r/'"),
            "fatal: unable to access 'https://***@github.com/o/r/'"
        );
        assert_eq!(redact("git push -- origin"), "git push -- origin");
        assert_eq!(redact("ssh://git@host/x"), "ssh://***@host/x");
    }
}
