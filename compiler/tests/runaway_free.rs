//! A runaway recursion stopped at the default memory limit is freed without crashing the
//! process. Its heap is one long chain of environments that Nickel drops one link per stack
//! frame; on a fixed 512 MiB stack that overflowed and aborted the process (issue #19: 2 of 3
//! runs of the CLI, after it had printed E0008). Its own binary: it fills the default limit.

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
fn a_recursion_stopped_at_the_default_limit_is_freed_and_the_process_lives() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("main.ncl");
    std::fs::write(
        &path,
        "let c = import \"chimera.ncl\" in\nlet rec f = fun x => f x in\n{ stack = \"x\", resources = [ c.Network & { name = \"main\", cidr = f 1 } ] }\n",
    )
    .unwrap();
    let c = compile(&path, &EvalOptions::default());
    assert_eq!(
        c.diagnostics.iter().map(|d| d.code).collect::<Vec<_>>(),
        vec![codes::EVAL_MEMORY]
    );
    // The worker frees the chain after handing over the diagnostic; a stack overflow there
    // aborts this process and fails the test. Polled generously: this is not a timing test.
    let deadline = Instant::now() + Duration::from_secs(120);
    while evaluation_threads() > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(evaluation_threads(), 0, "the stopped evaluation was never freed");
    // And the heap went back: the next evaluation is not refused for the last one's memory.
    std::fs::write(
        &path,
        "let c = import \"chimera.ncl\" in\n{ stack = \"x\", resources = [ c.Network & { name = \"main\", cidr = \"10.0.0.0/16\" } ] }\n",
    )
    .unwrap();
    let c = compile(&path, &EvalOptions::default());
    assert!(c.diagnostics.is_empty(), "{:#?}", c.diagnostics);
}
