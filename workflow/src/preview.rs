//! `preview --base REF`: how the desired state changed between a git ref and the working tree
//! — the review view of a pull request. It reads no state and calls no provider: the base
//! version is compiled from the ref and diffed as if it were applied.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use chimera_compiler::graph::Graph;
use chimera_compiler::{Disk, GitTree, Source};
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

/// Compiles one version of the stack; its diagnostics and a closing one when it does not.
fn compile(
    source: &Arc<dyn Source>,
    path: &Path,
    which: &str,
    settings: &Settings,
) -> Result<Graph, Error> {
    let c = chimera_compiler::compile_from(source, path, &settings.eval);
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
    let disk: Arc<dyn Source> = Arc::new(Disk::at(settings.cwd.clone()));
    let head = compile(&disk, &path, "working tree", settings)?;
    // The base version is read from git into memory, never unpacked to disk.
    let tree =
        GitTree::open(&root, &commit).map_err(|m| git_err("cannot read the base version", m))?;
    let base_graph = if tree.contains(&rel) {
        let path = tree.path(&rel);
        let tree: Arc<dyn Source> = Arc::new(tree);
        Some(compile(&tree, &path, &format!("`{base}`"), settings)?)
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
