//! Past a limit, evaluation is stopped, not abandoned: the worker fails at the next thunk it
//! forces and frees its heap, so an in-process caller (the daemon with `--compile-in-process`,
//! the fuzzer) does not keep a runaway evaluation. One test in its own binary, since it counts
//! the process's evaluation threads.

use std::time::{Duration, Instant};

use chimera_compiler::{EvalOptions, compile};
use chimera_model::codes;

fn evaluation_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|tasks| {
            tasks
                .flatten()
                .filter(|t| {
                    std::fs::read_to_string(t.path().join("comm"))
                        .is_ok_and(|c| c.trim() == "nickel-eval")
                })
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn a_runaway_evaluation_is_stopped_and_the_next_one_runs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("main.ncl");
    std::fs::write(
        &path,
        "let c = import \"chimera.ncl\" in\nlet rec f = fun x => f x in\n{ stack = \"x\", resources = [ c.Network & { name = \"main\", cidr = f 1 } ] }\n",
    )
    .unwrap();
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
    // The stopped worker ends on its own (polled, generously: this is not a timing test).
    let deadline = Instant::now() + Duration::from_secs(60);
    while evaluation_threads() > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(evaluation_threads(), 0, "the runaway evaluation still runs");

    // The same with the time limit.
    let c = compile(
        &path,
        &EvalOptions {
            timeout: Duration::from_millis(500),
            memory_limit: None,
        },
    );
    assert_eq!(c.diagnostics[0].code, codes::EVAL_TIMEOUT);
    let deadline = Instant::now() + Duration::from_secs(60);
    while evaluation_threads() > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(evaluation_threads(), 0, "the runaway evaluation still runs");

    std::fs::write(
        &path,
        "let c = import \"chimera.ncl\" in\n{ stack = \"x\", resources = [ c.Network & { name = \"main\", cidr = \"10.0.0.0/16\" } ] }\n",
    )
    .unwrap();
    let c = compile(&path, &EvalOptions::default());
    assert!(c.diagnostics.is_empty(), "{:#?}", c.diagnostics);
}
