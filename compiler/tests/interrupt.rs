//! Past a limit, evaluation is stopped, not abandoned: the worker fails at the next thunk it
//! forces and frees its heap, so an in-process caller (the daemon with `--compile-in-process`,
//! the fuzzer) does not keep a runaway evaluation. One test in its own binary, since it counts
//! the process's evaluation threads.

mod runaway;

use std::time::Duration;

use chimera_compiler::{EvalOptions, compile};
use chimera_model::codes;
use runaway::{FINE, RECURSION, evaluation_threads_end};

#[test]
fn a_runaway_evaluation_is_stopped_and_the_next_one_runs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("main.ncl");
    std::fs::write(&path, RECURSION).unwrap();
    let before = chimera_compiler::eval::resident_bytes().unwrap_or(0);
    let opts = EvalOptions {
        memory_limit: Some(before + (300 << 20)),
        ..EvalOptions::default()
    };
    let c = compile(&path, &opts);
    assert_eq!(
        c.diagnostics.iter().map(|d| d.code).collect::<Vec<_>>(),
        vec![codes::EVAL_MEMORY]
    );
    // The stopped worker ends on its own.
    assert!(
        evaluation_threads_end(),
        "the runaway evaluation still runs"
    );

    // The same with the time limit.
    let c = compile(
        &path,
        &EvalOptions {
            timeout: Duration::from_millis(500),
            memory_limit: None,
        },
    );
    assert_eq!(c.diagnostics[0].code, codes::EVAL_TIMEOUT);
    assert!(
        evaluation_threads_end(),
        "the runaway evaluation still runs"
    );

    std::fs::write(&path, FINE).unwrap();
    let c = compile(&path, &EvalOptions::default());
    assert!(c.diagnostics.is_empty(), "{:#?}", c.diagnostics);
}
