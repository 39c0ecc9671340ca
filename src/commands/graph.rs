use chimera_compiler::graph;
use clap::{Args, ValueEnum};

use super::{Global, StackArg, ctx, open};
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
    let mut stack = open(global, &args.stack.path, None);
    let text = match stack.graph() {
        Ok(g) => match args.format {
            GraphFormat::Dot => graph::to_dot(g),
            GraphFormat::Mermaid => graph::to_mermaid(g),
            GraphFormat::Json => {
                let mut s =
                    serde_json::to_string_pretty(&graph::to_graph_json(g)).unwrap_or_default();
                s.push('\n');
                s
            }
        },
        Err(e) => {
            ctx::report(global, Some(&mut stack), &e);
            return ExitStatus::Failure;
        }
    };
    ctx::warnings(global, &mut stack);
    crate::ui::print(&text);
    ExitStatus::Success
}
