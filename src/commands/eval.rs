use chimera_compiler::graph;
use clap::Args;

use super::{Global, StackArg, ctx, open};
use crate::ui::ExitStatus;

#[derive(Debug, Args)]
pub struct EvalArgs {
    #[command(flatten)]
    pub stack: StackArg,
    /// Print JSON (the only format for now; sensitive values are redacted).
    #[arg(long, default_value_t = true)]
    pub json: bool,
}

pub fn run(global: &Global, args: &EvalArgs) -> ExitStatus {
    let mut stack = open(global, &args.stack.path, None);
    let mut s = match stack.graph() {
        Ok(g) => serde_json::to_string_pretty(&graph::to_eval_json(g)).unwrap_or_default(),
        Err(e) => {
            ctx::report(global, Some(&mut stack), &e);
            return ExitStatus::Failure;
        }
    };
    ctx::warnings(global, &mut stack);
    s.push('\n');
    crate::ui::print(&s);
    ExitStatus::Success
}
