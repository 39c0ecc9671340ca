use std::path::{Path, PathBuf};

use chimera_model::{Diagnostic, codes};
use clap::{Args, Subcommand};

use super::{Global, ctx};
use crate::ui::{self, ExitStatus};

#[derive(Debug, Subcommand)]
pub enum PolicyCmd {
    /// Run the policy unit tests (Rego `test_*` rules, Nickel `*_test.ncl` cases), like `opa test`.
    Test(PolicyTestArgs),
}

#[derive(Debug, Args)]
pub struct PolicyTestArgs {
    /// A stack directory (its `policies/` is tested) or a policy directory.
    #[arg(default_value = ".")]
    pub path: PathBuf,
}

/// The policy directory `path` means: a stack's `policies/`, or the directory itself.
fn policy_dir(path: &Path) -> PathBuf {
    let stack_dir = chimera_workflow::stack_dir(path);
    let beside = chimera_workflow::policy::policy_dir(&stack_dir);
    if beside.is_dir() {
        beside
    } else {
        path.to_path_buf()
    }
}

pub fn run(global: &Global, cmd: &PolicyCmd) -> ExitStatus {
    match cmd {
        PolicyCmd::Test(args) => test(global, args),
    }
}

fn test(global: &Global, args: &PolicyTestArgs) -> ExitStatus {
    let dir = policy_dir(&args.path);
    let report = match chimera_workflow::policy::test(&dir, &global.policy_options()) {
        Ok(r) => r,
        Err(e) => {
            ctx::report(global, None, &e);
            return ExitStatus::Failure;
        }
    };
    if report.results.is_empty() {
        ctx::fail(
            global,
            Diagnostic::error(codes::NO_TEST_CASES, "no policy tests").detail(format!(
                "`{}` holds no Rego `test_*` rules and no Nickel `*_test.ncl` files; add some (docs/policy.md shows how)",
                dir.display()
            )),
        );
        return ExitStatus::Failure;
    }
    let mut out = String::new();
    let mut failed = 0;
    for r in &report.results {
        let mark = if r.passed { "PASS" } else { "FAIL" };
        out.push_str(&format!("{}: {} {mark}", r.file, r.name));
        if let Some(m) = r.message.as_ref().filter(|_| !r.passed) {
            out.push_str(&format!("\n    {m}"));
        }
        out.push('\n');
        failed += usize::from(!r.passed);
    }
    out.push_str(&format!(
        "{}\nPASS: {}/{}\n",
        "-".repeat(40),
        report.results.len() - failed,
        report.results.len()
    ));
    if failed > 0 {
        out.push_str(&format!("FAIL: {failed}/{}\n", report.results.len()));
    }
    ui::print(&out);
    if failed > 0 {
        ExitStatus::Failure
    } else {
        ExitStatus::Success
    }
}
