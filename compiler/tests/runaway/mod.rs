//! What the runaway-evaluation tests share: the stack that never ends, and a count of the
//! evaluation threads still alive in this process.

/// A stack whose evaluation recurses without end (Nickel's call stack grows until a limit).
pub const RECURSION: &str = "let c = import \"chimera.ncl\" in\nlet rec f = fun x => f x in\n{ stack = \"x\", resources = [ c.Network & { name = \"main\", cidr = f 1 } ] }\n";

/// A stack that evaluates at once.
pub const FINE: &str = "let c = import \"chimera.ncl\" in\n{ stack = \"x\", resources = [ c.Network & { name = \"main\", cidr = \"10.0.0.0/16\" } ] }\n";

/// The evaluation threads (`nickel-eval`) alive in this process.
pub fn evaluation_threads() -> usize {
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

/// Waits (generously: not a timing test) until no evaluation thread is left; false if one is.
pub fn evaluation_threads_end() -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while evaluation_threads() > 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    evaluation_threads() == 0
}
