//! `chimera stdlib export [DIR]`: writes the embedded stdlib (`chimera.ncl`, `catalog.ncl`) where
//! Nickel's own tools find it, so an editor running the Nickel language server (`nls`) resolves
//! `import "chimera.ncl"` and offers completion, hover and contract errors, and `nickel eval`
//! works on a stack. Both honour `NICKEL_IMPORT_PATH`; the command prints the line to set it.

use std::path::{Path, PathBuf};

use chimera_model::{Diagnostic, codes};
use clap::{Args, Subcommand};

use super::{Global, ctx};
use crate::ui::ExitStatus;

#[derive(Debug, Subcommand)]
pub enum StdlibCmd {
    /// Write the embedded stdlib to DIR (default `.chimera/stdlib`) for `nls` and `nickel`,
    /// and print the `NICKEL_IMPORT_PATH` that points at it.
    Export(ExportArgs),
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Where to write the stdlib's files (created if missing; the files in it are replaced).
    #[arg(default_value = ".chimera/stdlib")]
    pub dir: PathBuf,
}

pub fn run(global: &Global, cmd: &StdlibCmd) -> ExitStatus {
    match cmd {
        StdlibCmd::Export(args) => match export(&args.dir) {
            Ok(dir) => {
                println!(
                    "Wrote the Chimera stdlib {} to {}.\nPoint Nickel's tools at it (the language server reads it from its environment):\n  export NICKEL_IMPORT_PATH={}",
                    chimera_compiler::stdlib::VERSION,
                    dir.display(),
                    dir.display()
                );
                ExitStatus::Success
            }
            Err(d) => {
                ctx::fail(global, d);
                ExitStatus::Failure
            }
        },
    }
}

/// Writes the embedded stdlib files into `dir`; its absolute path.
pub fn export(dir: &Path) -> Result<PathBuf, Diagnostic> {
    let cannot = |what: &Path, e: std::io::Error| {
        Diagnostic::error(codes::INIT_WRITE, "cannot write the stdlib").detail(format!(
            "`{}`: {e}; pass a writable directory: `chimera stdlib export DIR`",
            what.display()
        ))
    };
    std::fs::create_dir_all(dir).map_err(|e| cannot(dir, e))?;
    for (name, text) in chimera_compiler::stdlib::FILES {
        let path = dir.join(name);
        // Through a temporary file, so an editor never reads half a file.
        let tmp = dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text)
            .and_then(|_| std::fs::rename(&tmp, &path))
            .map_err(|e| cannot(&path, e))?;
    }
    std::path::absolute(dir).map_err(|e| cannot(dir, e))
}
