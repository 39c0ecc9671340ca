//! `chimera init [DIR]`: scaffolds a config repository — a stack, a `.gitignore`, one
//! `chimera test` case with its snapshot, and a CI workflow — and never overwrites a file.

use std::path::{Path, PathBuf};

use chimera_model::{Diagnostic, codes};
use chimera_workflow::test;
use clap::Args;

use super::{Global, ctx};
use crate::ui::ExitStatus;

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Where to create the repository (created if missing).
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// The stack's name (default: the directory's name).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
}

const MAIN: &str = include_str!("../../templates/init/main.ncl");
const GITIGNORE: &str = include_str!("../../templates/init/gitignore");
/// Editors: Nickel's language server reads `NICKEL_IMPORT_PATH` from its environment; direnv
/// (and editors' direnv integrations) set it from this file.
const ENVRC: &str = "# Lets Nickel's language server (nls) and CLI resolve `import \"chimera.ncl\"`; the files\n# are written by `chimera init` and `chimera stdlib export` (run it again after upgrading).\nexport NICKEL_IMPORT_PATH=\"$PWD/.chimera/stdlib\"\n";
const TEST_CASE: &str = include_str!("../../templates/init/default.ncl");
const WORKFLOW: &str = include_str!("../../templates/init/chimera.yml");

/// A valid stack name from a directory name: `[A-Za-z0-9][A-Za-z0-9._-]*`, at most 64.
fn stack_name(dir: &Path) -> String {
    let raw = dir
        .canonicalize()
        .ok()
        .and_then(|d| d.file_name().map(|n| n.to_string_lossy().to_string()))
        .unwrap_or_default();
    let mut name: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .skip_while(|c| !c.is_ascii_alphanumeric())
        .take(64)
        .collect();
    if name.is_empty() {
        name = "infra".into();
    }
    name
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        && name.len() <= 128
}

pub fn run(global: &Global, args: &InitArgs) -> ExitStatus {
    let dir = &args.dir;
    if let Err(e) = std::fs::create_dir_all(dir) {
        ctx::fail(
            global,
            Diagnostic::error(codes::INIT_WRITE, "cannot create the directory")
                .detail(format!("`{}`: {e}", dir.display())),
        );
        return ExitStatus::Failure;
    }
    let name = args.name.clone().unwrap_or_else(|| stack_name(dir));
    if !valid_name(&name) {
        ctx::fail(
            global,
            Diagnostic::error(codes::INIT_NAME, "invalid stack name").detail(format!(
                "`{name}`: a stack name is letters, digits, `.`, `_` and `-`, starting with a letter or digit; pass --name"
            )),
        );
        return ExitStatus::Failure;
    }
    let files: [(&str, String); 5] = [
        ("main.ncl", MAIN.replace("{{stack}}", &name)),
        (".gitignore", GITIGNORE.to_string()),
        (".envrc", ENVRC.to_string()),
        ("tests/default.ncl", TEST_CASE.to_string()),
        (".github/workflows/chimera.yml", WORKFLOW.to_string()),
    ];
    // Nothing is written if anything would be overwritten.
    let taken: Vec<&str> = files
        .iter()
        .map(|(f, _)| *f)
        .chain(["tests/snapshots/default.snap"])
        .filter(|f| dir.join(f).exists())
        .collect();
    if !taken.is_empty() {
        ctx::fail(
            global,
            Diagnostic::error(codes::INIT_EXISTS, "the directory already has Chimera files").detail(format!(
                "`{}` already has {}; nothing was written. Run `chimera init` in an empty directory (or a new one: `chimera init NEW_DIR`)",
                dir.display(),
                taken.iter().map(|t| format!("`{t}`")).collect::<Vec<_>>().join(", ")
            )),
        );
        return ExitStatus::Failure;
    }
    for (file, text) in &files {
        let path = dir.join(file);
        let written = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|_| std::fs::write(&path, text));
        if let Err(e) = written {
            ctx::fail(
                global,
                Diagnostic::error(codes::INIT_WRITE, "cannot write a file")
                    .detail(format!("`{}`: {e}", path.display())),
            );
            return ExitStatus::Failure;
        }
    }
    // The stdlib where an editor's Nickel language server finds it (`.envrc` points there).
    if let Err(d) = super::stdlib::export(&dir.join(".chimera/stdlib")) {
        ctx::fail(global, d);
        return ExitStatus::Failure;
    }
    // The test case's snapshot, exactly as `chimera test` renders it.
    let case = test::cases(dir)
        .ok()
        .and_then(|c| c.into_iter().find(|c| c.name == "default"));
    if let Some(case) = case {
        let preview = test::preview(dir, &case, &ctx::settings(global, None));
        let ok = case
            .snapshot
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|_| std::fs::write(&case.snapshot, preview));
        if let Err(e) = ok {
            ctx::fail(
                global,
                Diagnostic::error(codes::INIT_WRITE, "cannot write a file")
                    .detail(format!("`{}`: {e}", case.snapshot.display())),
            );
            return ExitStatus::Failure;
        }
    }
    // A repository of its own, unless it is inside one already.
    let in_repo = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["rev-parse", "--is-inside-work-tree"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .map(|s| s.success());
    let git_note = match in_repo {
        Ok(true) => String::new(),
        Ok(false) => {
            let ok = std::process::Command::new("git")
                .arg("-C")
                .arg(dir)
                .args(["init", "-q"])
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                " (a new git repository)".into()
            } else {
                String::new()
            }
        }
        Err(_) => " (git is not on PATH: run `git init` yourself)".into(),
    };
    eprintln!(
        "Created stack `{name}` in {}{git_note}:\n  main.ncl                        the desired state\n  tests/default.ncl               a `chimera test` case, with tests/snapshots/default.snap\n  .github/workflows/chimera.yml   check, test and plan on pull requests; apply the reviewed plan on merge\n  .gitignore\n  .envrc                          NICKEL_IMPORT_PATH for editors (direnv), pointing at .chimera/stdlib\n\nNext: `chimera plan`, then `chimera apply`. docs/workflow.md walks through the pull-request flow.",
        dir.display()
    );
    ExitStatus::Success
}
