//! `chimera completions bash|zsh|fish|elvish|powershell`: the shell's completion script for
//! every command and flag, generated from the same definitions the parser uses (clap_complete).

use clap::{Args, CommandFactory};
use clap_complete::Shell;

use super::Cli;
use crate::ui::ExitStatus;

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to write the completion script for.
    #[arg(value_enum)]
    pub shell: Shell,
}

pub fn run(args: &CompletionsArgs) -> ExitStatus {
    let mut cmd = Cli::command();
    clap_complete::generate(args.shell, &mut cmd, "chimera", &mut std::io::stdout());
    ExitStatus::Success
}
