//! The `chimera` command: parse arguments, call the libraries, render, exit.
//!
//! **Architecture Invariant:** only this crate knows terminals, colours and exit codes.

mod commands;
mod ui;

use std::process::ExitCode;

use clap::Parser;

// Nickel allocates heavily on the evaluation thread; glibc grows a thread's arena with one
// mprotect per step, which cost ~20% of a 10k-resource compile (docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    chimera_providers::install_tls_crypto();
    let cli = commands::Cli::parse();
    let status = commands::run(cli);
    // Exit right away: an evaluation abandoned at its time or memory limit may still be running
    // on a worker thread (see compiler::eval).
    std::process::exit(status.code())
}
