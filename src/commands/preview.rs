//! `chimera preview --base REF`: how the desired state changed between a git ref and the
//! working tree — the review view of a pull request. It reads no state and calls no provider:
//! the base version is compiled from `git archive REF` and diffed as if it were applied.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use chimera_compiler::graph::Graph;
use chimera_compiler::markdown::{self, MarkdownOptions};
use chimera_compiler::plan::{self, Prior};
use chimera_compiler::render;
use chimera_model::{Diagnostic, SourceMap};
use clap::Args;

use super::plan::PlanFormat;
use super::{Global, StackArg, ctx};
use crate::ui::{self, ExitStatus};

#[derive(Debug, Args)]
pub struct PreviewArgs {
    #[command(flatten)]
    pub stack: StackArg,
    /// The git ref to compare the working tree with (a branch, tag, commit, `HEAD~1`, …).
    #[arg(long, value_name = "REF")]
    pub base: String,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: PlanFormat,
    /// Exit 0 when the desired state is unchanged, 2 when it changed, 1 on error.
    #[arg(long)]
    pub detailed_exitcode: bool,
}

fn git_diag(summary: &str, detail: String) -> Diagnostic {
    Diagnostic::error("E0311", summary.to_string()).detail(detail)
}

fn git(dir: &Path, args: &[&str]) -> Result<String, Diagnostic> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            git_diag(
                "git is not available",
                format!("cannot run `git` ({e}); `chimera preview` needs git on PATH"),
            )
        })?;
    if !out.status.success() {
        return Err(git_diag(
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
fn export(root: &Path, commit: &str, into: &Path) -> Result<(), Diagnostic> {
    let mut archive = Command::new("git")
        .arg("-C")
        .arg(root)
        .args(["archive", "--format=tar", commit])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            git_diag(
                "git is not available",
                format!("cannot run `git archive`: {e}"),
            )
        })?;
    let stdout = archive.stdout.take().expect("piped");
    let tar = Command::new("tar")
        .arg("-x")
        .arg("-C")
        .arg(into)
        .stdin(stdout)
        .output()
        .map_err(|e| git_diag("tar is not available", format!("cannot run `tar -x`: {e}")))?;
    let archived = archive
        .wait_with_output()
        .map_err(|e| git_diag("git failed", format!("`git archive {commit}`: {e}")))?;
    if !archived.status.success() || !tar.status.success() {
        return Err(git_diag(
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

/// Compiles a version of the stack; `Err(())` once its diagnostics are printed.
fn compile(global: &Global, path: &Path, which: &str) -> Result<Graph, ()> {
    let c = chimera_compiler::compile(path, &global.eval_options());
    if !c.diagnostics.is_empty() {
        ui::emit_diagnostics(
            &c.diagnostics,
            &c.sources,
            global.error_format,
            global.color,
        );
    }
    match c.graph {
        Some(g) if !c.has_errors() => Ok(g),
        _ => {
            ctx::fail(
                global,
                Diagnostic::error("E0311", format!("the {which} version does not compile")).detail(
                    format!("fix the errors above in `{}` first", path.display()),
                ),
            );
            Err(())
        }
    }
}

pub fn run(global: &Global, args: &PreviewArgs) -> ExitStatus {
    match preview(global, args) {
        Ok(status) => status,
        Err(Some(d)) => {
            ctx::fail(global, d);
            ExitStatus::Failure
        }
        Err(None) => ExitStatus::Failure,
    }
}

fn preview(global: &Global, args: &PreviewArgs) -> Result<ExitStatus, Option<Diagnostic>> {
    let path = args.stack.path.canonicalize().map_err(|e| {
        Some(
            Diagnostic::error("E0311", "no such stack")
                .detail(format!("`{}`: {e}", args.stack.path.display())),
        )
    })?;
    let dir = ctx::stack_dir(&path);
    let root = PathBuf::from(git(&dir, &["rev-parse", "--show-toplevel"])?);
    let rel = path
        .strip_prefix(root.canonicalize().unwrap_or(root.clone()))
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let commit = git(
        &root,
        &[
            "rev-parse",
            "--verify",
            &format!("{}^{{commit}}", args.base),
        ],
    )
    .map_err(|_| {
        Some(git_diag(
            "unknown git ref",
            format!(
                "`{}` is not a commit in `{}`; try a branch (`origin/main`), a tag or `HEAD~1`",
                args.base,
                root.display()
            ),
        ))
    })?;
    let tmp = tempfile::tempdir().map_err(|e| {
        Some(Diagnostic::error("E0311", "cannot make a temporary directory").detail(e.to_string()))
    })?;
    export(&root, &commit, tmp.path())?;

    let head = compile(global, &path, "working tree").map_err(|_| None)?;
    let base_path = tmp.path().join(&rel);
    let base = if base_path.exists() {
        Some(compile(global, &base_path, &format!("`{}`", args.base)).map_err(|_| None)?)
    } else {
        None
    };
    let prior = base
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
    .map_err(|diags| {
        ui::emit_diagnostics(
            &diags,
            &SourceMap::default(),
            global.error_format,
            global.color,
        );
        None
    })?;
    let short = &commit[..commit.len().min(10)];
    match args.format {
        PlanFormat::Text => {
            let color = ui::use_color(
                global.color,
                std::io::IsTerminal::is_terminal(&std::io::stdout()),
            );
            ui::print(&render::plan_text_titled(
                &plan,
                color,
                &format!(
                    "Desired-state changes to stack `{}` from `{}` ({short}) to the working tree:",
                    plan.stack, args.base
                ),
                &format!(
                    "No changes to the desired state of stack `{}` between `{}` ({short}) and the working tree.",
                    plan.stack, args.base
                ),
            ));
        }
        PlanFormat::Json => {
            let mut doc = render::plan_json(&plan);
            doc["base"] = serde_json::json!({ "ref": args.base, "commit": commit });
            ui::print(&format!(
                "{}\n",
                serde_json::to_string_pretty(&doc).unwrap_or_default()
            ));
        }
        PlanFormat::Markdown => {
            let opts = MarkdownOptions {
                title: format!("Chimera preview for stack `{}`", plan.stack),
                context: Some(format!(
                    "Desired-state changes from `{}` (`{short}`) to this change; no state was read, so outputs of existing resources show as references.",
                    args.base
                )),
                max_chars: markdown::DEFAULT_MAX_CHARS,
            };
            ui::print(&markdown::plan_markdown(&plan, &opts));
        }
    }
    Ok(if args.detailed_exitcode && plan.has_changes() {
        ExitStatus::Changes
    } else {
        ExitStatus::Success
    })
}
