//! Time and memory limits for a policy evaluation: a worker thread and a watchdog.
//!
//! Nickel cannot be interrupted, and a Rego builtin (e.g. `numbers.range`) runs to its end
//! before regorus's own timer is checked again, so every evaluation runs on a worker thread
//! that the caller waits for: past the deadline, or when the process's resident memory passes
//! the limit, the caller gets [`Breach`] and abandons the worker (as the compiler does; a caller
//! that hits a limit should exit the process soon). Rego also runs under regorus's cooperative
//! timer, which stops the worker itself in loops and recursion.

use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Why a worker was abandoned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Breach {
    Time,
    Memory,
    /// The worker panicked (a bug in Chimera, regorus or Nickel).
    Crashed,
    /// The system refused a thread.
    NoThread,
}

/// A worker thread's result, to wait for.
pub(crate) struct Job<R> {
    rx: mpsc::Receiver<R>,
}

/// Starts `f` on a worker thread with a large stack (deep recursion in the parsers and
/// evaluators).
pub(crate) fn spawn<R: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> R + Send + 'static,
) -> Result<Job<R>, Breach> {
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name(name.into())
        .stack_size(1 << 30)
        .spawn(move || {
            let _ = tx.send(f());
        })
        .map_err(|_| Breach::NoThread)?;
    Ok(Job { rx })
}

impl<R> Job<R> {
    /// Waits at most until `deadline`, and while the process's resident memory stays under
    /// `memory_limit`.
    pub(crate) fn wait(self, deadline: Instant, memory_limit: Option<u64>) -> Result<R, Breach> {
        loop {
            let wait = deadline
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(10));
            match self.rx.recv_timeout(wait) {
                Ok(out) => return Ok(out),
                Err(mpsc::RecvTimeoutError::Disconnected) => return Err(Breach::Crashed),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
            if Instant::now() >= deadline {
                return Err(Breach::Time);
            }
            if let (Some(limit), Some(rss)) = (memory_limit, resident_bytes())
                && rss > limit
            {
                return Err(Breach::Memory);
            }
        }
    }
}

/// Runs `f` on a worker thread and waits for it (see [`Job::wait`]).
pub(crate) fn run<R: Send + 'static>(
    name: &str,
    deadline: Instant,
    memory_limit: Option<u64>,
    f: impl FnOnce() -> R + Send + 'static,
) -> Result<R, Breach> {
    spawn(name, f)?.wait(deadline, memory_limit)
}

/// The compiler's: three quarters of physical memory, or 8 GiB when that cannot be read.
pub use chimera_compiler::eval::default_memory_limit;
use chimera_compiler::eval::resident_bytes;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_that_finishes_returns_its_value() {
        let out = run("t", Instant::now() + Duration::from_secs(5), None, || 42);
        assert_eq!(out, Ok(42));
    }

    #[test]
    fn a_worker_past_the_deadline_is_abandoned() {
        let start = Instant::now();
        let out = run("t", start + Duration::from_millis(50), None, || {
            std::thread::sleep(Duration::from_secs(2));
        });
        assert_eq!(out, Err(Breach::Time));
        assert!(start.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn a_panicking_worker_is_a_crash() {
        let out: Result<(), _> = run("t", Instant::now() + Duration::from_secs(5), None, || {
            panic!("boom")
        });
        assert_eq!(out, Err(Breach::Crashed));
    }
}
