//! `preview --base REF`: how the desired state changed between a git ref and the working tree
//! — the review view of a pull request. It reads no state and calls no provider: the base
//! version is compiled from the ref and diffed as if it were applied.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use chimera_compiler::graph::Graph;
use chimera_model::{Diagnostic, SourceMap, codes};
use chimera_plans::plan::{self, Plan, Prior};

use crate::error::{Error, ErrorKind};
use crate::settings::Settings;
use crate::stack::stack_dir;

/// The desired-state change from a git ref to the working tree.
#[derive(Debug)]
pub struct Preview {
    pub plan: Plan,
    /// The ref as given, and the commit it names.
    pub base: String,
    pub commit: String,
}

fn git_err(summary: &str, detail: String) -> Error {
    Error::new(
        ErrorKind::Input,
        Diagnostic::error(codes::GIT, summary.to_string()).detail(detail),
    )
}

fn git(dir: &Path, args: &[&str]) -> Result<String, Error> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            git_err(
                "git is not available",
                format!("cannot run `git` ({e}); `chimera preview` needs git on PATH"),
            )
        })?;
    if !out.status.success() {
        return Err(git_err(
            "git failed",
            format!(
                "`git {}` in `{}`: {}",
                args.join(" "),
                dir.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Writes the tree of `commit` into `into` (`git archive | tar -x`).
fn export(root: &Path, commit: &str, into: &Path) -> Result<(), Error> {
    let mut archive = Command::new("git")
        .arg("-C")
        .arg(root)
        .args(["archive", "--format=tar", commit])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            git_err(
                "git is not available",
                format!("cannot run `git archive`: {e}"),
            )
        })?;
    let Some(stdout) = archive.stdout.take() else {
        return Err(git_err("git failed", "`git archive` gave no output".into()));
    };
    let tar = Command::new("tar")
        .arg("-x")
        .arg("-C")
        .arg(into)
        .stdin(stdout)
        .output()
        .map_err(|e| git_err("tar is not available", format!("cannot run `tar -x`: {e}")))?;
    let archived = archive
        .wait_with_output()
        .map_err(|e| git_err("git failed", format!("`git archive {commit}`: {e}")))?;
    if !archived.status.success() || !tar.status.success() {
        return Err(git_err(
            "cannot read the base version",
            format!(
                "`git archive {commit} | tar -x` failed: {}{}",
                String::from_utf8_lossy(&archived.stderr).trim(),
                String::from_utf8_lossy(&tar.stderr).trim()
            ),
        ));
    }
    Ok(())
}

/// Compiles one version of the stack; its diagnostics and a closing one when it does not.
fn compile(path: &Path, which: &str, settings: &Settings) -> Result<Graph, Error> {
    let c = chimera_compiler::compile(path, &settings.eval);
    match c.graph {
        Some(g) if !c.has_errors() => Ok(g),
        _ => {
            let mut diagnostics = c.diagnostics;
            diagnostics.push(
                Diagnostic::error(
                    codes::BASE_BROKEN,
                    format!("the {which} version does not compile"),
                )
                .detail(format!(
                    "fix the errors above in `{}` first",
                    path.display()
                )),
            );
            Err(Error::many(ErrorKind::Compile, diagnostics, c.sources))
        }
    }
}

/// Plans the working tree's stack at `path` against its version at git ref `base`.
pub fn preview(path: &Path, base: &str, settings: &Settings) -> Result<Preview, Error> {
    let path = path.canonicalize().map_err(|e| {
        Error::new(
            ErrorKind::Input,
            Diagnostic::error(codes::STACK_UNREADABLE, "no such stack")
                .detail(format!("`{}`: {e}", path.display())),
        )
    })?;
    let dir = stack_dir(&path);
    let root = PathBuf::from(git(&dir, &["rev-parse", "--show-toplevel"])?);
    let rel = path
        .strip_prefix(root.canonicalize().unwrap_or(root.clone()))
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let commit = git(
        &root,
        &["rev-parse", "--verify", &format!("{base}^{{commit}}")],
    )
    .map_err(|_| {
        git_err(
            "unknown git ref",
            format!(
                "`{base}` is not a commit in `{}`; try a branch (`origin/main`), a tag or `HEAD~1`",
                root.display()
            ),
        )
    })?;
    let tmp = tempfile::tempdir().map_err(|e| {
        Error::new(
            ErrorKind::Io,
            Diagnostic::error(codes::GIT, "cannot make a temporary directory")
                .detail(e.to_string()),
        )
    })?;
    export(&root, &commit, tmp.path())?;

    let head = compile(&path, "working tree", settings)?;
    let base_path = tmp.path().join(&rel);
    let base_graph = if base_path.exists() {
        Some(compile(&base_path, &format!("`{base}`"), settings)?)
    } else {
        None
    };
    let prior = base_graph
        .as_ref()
        .map(|b| plan::prior_from_graph(b, &[&head]))
        .unwrap_or_default();
    let plan = plan::plan(
        Some(&head),
        &head.stack,
        &Prior {
            lineage: None,
            serial: 0,
            resources: &prior,
        },
    )
    .map_err(|d| Error::many(ErrorKind::Plan, d, SourceMap::default()))?;
    Ok(Preview {
        plan,
        base: base.to_string(),
        commit,
    })
}
