use chimera_compiler::graph;
use clap::{Args, ValueEnum};

use super::{Global, StackArg, compile_or_report};
use crate::ui::ExitStatus;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum GraphFormat {
    Dot,
    Mermaid,
    Json,
}

#[derive(Debug, Args)]
pub struct GraphArgs {
    #[command(flatten)]
    pub stack: StackArg,
    /// Output format.
    #[arg(long, value_enum, default_value = "dot")]
    pub format: GraphFormat,
}

pub fn run(global: &Global, args: &GraphArgs) -> ExitStatus {
    let Some(g) = compile_or_report(global, &args.stack.path).and_then(|c| c.graph) else {
        return ExitStatus::Failure;
    };
    let text = match args.format {
        GraphFormat::Dot => graph::to_dot(&g),
        GraphFormat::Mermaid => graph::to_mermaid(&g),
        GraphFormat::Json => {
            let mut s = serde_json::to_string_pretty(&graph::to_graph_json(&g)).unwrap_or_default();
            s.push('\n');
            s
        }
    };
    crate::ui::print(&text);
    ExitStatus::Success
}
