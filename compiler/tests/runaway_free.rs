//! A runaway recursion stopped at the default memory limit is freed without crashing the
//! process. Its heap is one long chain of environments that Nickel drops one link per stack
//! frame; on a fixed 512 MiB stack that overflowed and aborted the process (issue #19: 2 of 3
//! runs of the CLI, after it had printed E0008). Its own binary: it fills the default limit.

mod runaway;

use chimera_compiler::{EvalOptions, compile};
use chimera_model::codes;
use runaway::{FINE, RECURSION, evaluation_threads_end};

#[test]
fn a_recursion_stopped_at_the_default_limit_is_freed_and_the_process_lives() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("main.ncl");
    std::fs::write(&path, RECURSION).unwrap();
    let c = compile(&path, &EvalOptions::default());
    assert_eq!(
        c.diagnostics.iter().map(|d| d.code).collect::<Vec<_>>(),
        vec![codes::EVAL_MEMORY]
    );
    // The worker frees the chain after handing over the diagnostic; a stack overflow there
    // aborts this process and fails the test.
    assert!(
        evaluation_threads_end(),
        "the stopped evaluation was never freed"
    );
    // And the heap went back: the next evaluation is not refused for the last one's memory.
    std::fs::write(&path, FINE).unwrap();
    let c = compile(&path, &EvalOptions::default());
    assert!(c.diagnostics.is_empty(), "{:#?}", c.diagnostics);
}
