//! A fake of Azure Resource Manager on loopback (issue #18; being written).

/// `chimera-fake-cloud azure …`; returns the exit code.
pub fn main(_args: Vec<String>) -> i32 {
    eprintln!("chimera-fake-cloud azure: not built yet");
    2
}
