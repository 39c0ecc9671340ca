//! `chimera internal-compile PATH` (hidden): what `chimera serve` runs in a child process to
//! compile a stack, so a Nickel evaluation that will not stop can be killed with its process.
//! On success the graph goes to stdout (the evaluation cache's JSON document); on failure the
//! diagnostics go to stderr as usual and the exit status is 1.

use std::io::Write;

use clap::Args;

use super::{Global, StackArg, open};
use crate::ui::ExitStatus;

#[derive(Debug, Args)]
pub struct InternalCompileArgs {
    #[command(flatten)]
    pub stack: StackArg,
}

pub fn run(global: &Global, args: &InternalCompileArgs) -> ExitStatus {
    let mut stack = open(global, &args.stack.path, None);
    let bytes = match stack.compile() {
        Ok(graph) => graph.to_doc_json(),
        Err(e) => {
            super::ctx::report(global, Some(&mut stack), &e);
            return ExitStatus::Failure;
        }
    };
    match bytes {
        Ok(b) => {
            let mut out = std::io::stdout().lock();
            if out.write_all(&b).and_then(|_| out.flush()).is_err() {
                return ExitStatus::Failure;
            }
            ExitStatus::Success
        }
        Err(e) => {
            super::ctx::fail(
                global,
                chimera_model::Diagnostic::error(
                    chimera_model::codes::INTERNAL,
                    "cannot write the graph",
                )
                .detail(e.to_string()),
            );
            ExitStatus::Failure
        }
    }
}
