use clap::Args;

use super::{Global, StackArg, finish, open};
use crate::ui::{ErrorFormat, ExitStatus};

#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub stack: StackArg,
}

pub fn run(global: &Global, args: &CheckArgs) -> ExitStatus {
    let mut stack = open(global, &args.stack.path, None);
    let r = stack.check();
    // JSON also prints the warnings as one document on stdout.
    let warnings = stack.warnings().to_vec();
    let Some(checked) = finish(global, &mut stack, r) else {
        return ExitStatus::Failure;
    };
    if global.error_format == ErrorFormat::Json {
        let doc = serde_json::json!({ "diagnostics": warnings });
        crate::ui::print(&format!("{doc}\n"));
    } else {
        crate::ui::print(&format!(
            "ok: stack `{}`, {} resources, {} references\n",
            checked.stack, checked.resources, checked.references
        ));
    }
    ExitStatus::Success
}
