use chimera_plans::render;
use clap::{Args, ValueEnum};

use super::{Global, StackArg, ctx, open};
use crate::ui::ExitStatus;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum CostFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct CostArgs {
    #[command(flatten)]
    pub stack: StackArg,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: CostFormat,
}

pub fn run(global: &Global, args: &CostArgs) -> ExitStatus {
    let mut stack = open(global, &args.stack.path, None);
    let priced = match stack.cost() {
        Ok(c) => c,
        Err(e) => {
            ctx::report(global, Some(&mut stack), &e);
            return ExitStatus::Failure;
        }
    };
    ctx::warnings(global, &mut stack);
    let text = match args.format {
        CostFormat::Text => render::breakdown_text(&priced.stack, &priced.cost, &priced.placements),
        CostFormat::Json => {
            let doc = render::breakdown_json(&priced.stack, &priced.cost, &priced.placements);
            let mut s = serde_json::to_string_pretty(&doc).unwrap_or_default();
            s.push('\n');
            s
        }
    };
    crate::ui::print(&text);
    ExitStatus::Success
}
