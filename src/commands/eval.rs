use chimera_compiler::graph;
use clap::Args;

use super::{Global, StackArg, compile_or_report};
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
    let Some(g) = compile_or_report(global, &args.stack.path).and_then(|c| c.graph) else {
        return ExitStatus::Failure;
    };
    let mut s = serde_json::to_string_pretty(&graph::to_eval_json(&g)).unwrap_or_default();
    s.push('\n');
    crate::ui::print(&s);
    ExitStatus::Success
}
