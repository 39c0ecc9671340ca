//! A fake of the GCP Compute REST API on loopback (issue #17; being written).

/// `chimera-fake-cloud gcp …`; returns the exit code.
pub fn main(_args: Vec<String>) -> i32 {
    eprintln!("chimera-fake-cloud gcp: not built yet");
    2
}
