use clap::Args;

use super::{Global, StackArg, compile_or_report};
use crate::ui::{ErrorFormat, ExitStatus};

#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub stack: StackArg,
}

pub fn run(global: &Global, args: &CheckArgs) -> ExitStatus {
    let Some(compiled) = compile_or_report(global, &args.stack.path) else {
        return ExitStatus::Failure;
    };
    let Some(graph) = compiled.graph else {
        return ExitStatus::Failure;
    };
    if global.error_format == ErrorFormat::Json {
        let doc = serde_json::json!({ "diagnostics": compiled.diagnostics });
        crate::ui::print(&format!("{doc}\n"));
    } else {
        crate::ui::print(&format!(
            "ok: stack `{}`, {} resources, {} references\n",
            graph.stack,
            graph.resources.len(),
            graph.edges.len()
        ));
    }
    ExitStatus::Success
}
