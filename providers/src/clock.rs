//! Precise sleeps for simulated latency.
//!
//! tokio's timer works in whole milliseconds and a parked runtime wakes late: a 10 ms
//! `tokio::time::sleep` took 11.2 ms (median) here, which made a simulated cloud's calls 12%
//! slower than their configured latency. This clock thread fires deadlines within tens of
//! microseconds, so `latency_ms` means what it says.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::OnceLock;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

type Wake = (Instant, u64, oneshot::Sender<()>);

static CLOCK: OnceLock<Option<mpsc::Sender<Wake>>> = OnceLock::new();

fn clock() -> Option<&'static mpsc::Sender<Wake>> {
    CLOCK
        .get_or_init(|| {
            let (tx, rx) = mpsc::channel::<Wake>();
            std::thread::Builder::new()
                .name("chimera-clock".into())
                .spawn(move || run(rx))
                .ok()
                .map(|_| tx)
        })
        .as_ref()
}

fn run(rx: mpsc::Receiver<Wake>) {
    // Min-heap on (deadline, sequence); the sender is carried alongside.
    let mut heap: BinaryHeap<Reverse<(Instant, u64)>> = BinaryHeap::new();
    let mut waiting: std::collections::HashMap<u64, oneshot::Sender<()>> = Default::default();
    loop {
        let next = heap.peek().map(|Reverse((at, _))| *at);
        let got = match next {
            Some(at) => rx.recv_timeout(at.saturating_duration_since(Instant::now())),
            None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        match got {
            Ok((at, seq, tx)) => {
                heap.push(Reverse((at, seq)));
                waiting.insert(seq, tx);
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        let now = Instant::now();
        while let Some(Reverse((at, seq))) = heap.peek().copied() {
            if at > now {
                break;
            }
            heap.pop();
            if let Some(tx) = waiting.remove(&seq) {
                let _ = tx.send(());
            }
        }
    }
}

/// Sleeps for `d`, to within tens of microseconds.
pub async fn sleep(d: Duration) {
    sleep_until(Instant::now() + d).await
}

/// Sleeps until `at`, to within tens of microseconds.
pub async fn sleep_until(at: Instant) {
    let Some(d) = at
        .checked_duration_since(Instant::now())
        .filter(|d| !d.is_zero())
    else {
        return;
    };
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let (tx, rx) = oneshot::channel();
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    match clock() {
        Some(c) if c.send((at, seq, tx)).is_ok() => {
            let _ = rx.await;
        }
        // No clock thread (could not spawn one): tokio's timer is close enough.
        _ => tokio::time::sleep(d).await,
    }
}
