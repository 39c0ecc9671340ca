//! Policy as code: Rego (through regorus) and Nickel policies evaluated over the plan JSON
//! document (`format_version` 2, docs/json.md). docs/policy.md has the conventions.
//!
//! [`load`] reads a directory of policies once (parsing Rego, checking that each Nickel file is
//! a policy); [`Policies::evaluate`] runs them all on one plan document and returns
//! [`Finding`]s; [`run_tests`] runs Rego `test_*` rules and Nickel `*_test.ncl` cases.
//!
//! **Architecture Invariant:** every evaluation (loading a Nickel policy, evaluating, testing)
//! runs on a worker thread under the time and memory limits of [`PolicyOptions`]; a policy
//! that loops, recurses or eats memory is a located diagnostic, never a hang or a panic
//! (`limits.rs`). The library prints nothing and reads no environment.

mod finding;
mod limits;
mod nickel;
mod rego;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chimera_model::{ContentHash, Diagnostic, Location, codes};
use serde::Serialize;

pub use limits::default_memory_limit;

use finding::Origin;
use limits::Breach;

/// Limits and dialect for loading, evaluating and testing policies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyOptions {
    /// Accept Rego v0 syntax (older conftest policies: rules without `if` / `contains`);
    /// Rego v1 otherwise. A v0 file can also opt into v1 with `import rego.v1`.
    pub rego_v0: bool,
    /// Wall-clock limit for evaluating every policy on one plan (and for loading the Nickel
    /// policies, and for each test).
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

/// A finding is the plans crate's: the type every renderer shows and every client reads
/// (`rule` is the finding's own, or the policy file's stem, followed by the rule's name for a
/// prefixed Rego rule; `line` is the Rego definition's or the Nickel `deny` / `warn` field's).
pub use chimera_plans::findings::{Finding, Level};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Lang {
    Rego,
    Nickel,
}

/// One file of a policy directory, read.
#[derive(Debug, Clone)]
pub(crate) struct Source {
    path: PathBuf,
    abs: PathBuf,
    shown: String,
    text: Arc<str>,
    lang: Lang,
    is_test: bool,
}

impl Source {
    fn stem(&self) -> String {
        self.path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    fn file_name(&self) -> String {
        self.path
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    fn nickel(&self) -> nickel::File {
        nickel::File {
            abs: self.abs.clone(),
            shown: self.shown.clone(),
            text: self.text.to_string(),
        }
    }
}

/// A loaded policy library: immutable, cheap to share between threads.
#[derive(Debug, Clone)]
pub struct Policies {
    files: Vec<PathBuf>,
    sources: Arc<[Source]>,
    digest: ContentHash,
    rego: Option<Arc<rego::Library>>,
    nickel: Arc<[(usize, nickel::Form)]>,
    opts: PolicyOptions,
}

pub(crate) fn location(file: &str, line: usize, column: usize) -> Location {
    Location {
        file: file.to_string(),
        line,
        column,
        end_line: line,
        end_column: column,
        span: None,
    }
}

/// A path as shown to people: as given, relative to the current directory when under it.
fn shown(path: &Path) -> String {
    if path.is_absolute()
        && let Ok(cwd) = std::env::current_dir()
        && let Ok(rel) = path.strip_prefix(&cwd)
    {
        return rel.to_string_lossy().into_owned();
    }
    path.to_string_lossy().into_owned()
}

fn unreadable(path: &Path, e: &std::io::Error) -> Diagnostic {
    Diagnostic::error(codes::POLICY_UNREADABLE, "cannot read the policies")
        .detail(format!(
            "`{}`: {e}; check that it exists and is readable",
            shown(path)
        ))
        .at(Some(location(&shown(path), 1, 1)))
}

/// Every `*.rego` and `*.ncl` file directly in `dir`, by name. A missing directory is none.
fn discover(dir: &Path) -> Result<Vec<Source>, Vec<Diagnostic>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(vec![unreadable(dir, &e)]),
    };
    let mut paths = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| vec![unreadable(dir, &e)])?;
        let path = entry.path();
        let lang = match path.extension().and_then(|e| e.to_str()) {
            Some("rego") => Lang::Rego,
            Some("ncl") => Lang::Nickel,
            _ => continue,
        };
        if path.is_file() {
            paths.push((path, lang));
        }
    }
    paths.sort();
    let mut out = Vec::new();
    let mut diags = Vec::new();
    for (path, lang) in paths {
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => {
                diags.push(unreadable(&path, &e));
                continue;
            }
        };
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        out.push(Source {
            abs: std::path::absolute(&path).unwrap_or_else(|_| path.clone()),
            shown: shown(&path),
            text: text.into(),
            lang,
            is_test: stem.ends_with("_test"),
            path,
        });
    }
    if diags.is_empty() {
        Ok(out)
    } else {
        Err(diags)
    }
}

fn breach_diag(
    breach: Breach,
    what: &str,
    file: &str,
    line: usize,
    opts: &PolicyOptions,
) -> Diagnostic {
    match breach {
        Breach::Time => Diagnostic::error(codes::POLICY_TIMEOUT, "policy evaluation timed out")
            .detail(format!(
                "{what} took longer than {:.1} s, which usually means recursion or a loop that never ends, or a huge generated value; check the rule at this position, or raise the limit (--policy-timeout)",
                opts.timeout.as_secs_f64()
            ))
            .at(Some(location(file, line, 1))),
        Breach::Memory => Diagnostic::error(codes::POLICY_MEMORY, "policy evaluation ran out of memory")
            .detail(format!(
                "{what} used more than {} MiB, which usually means a huge generated value (e.g. `numbers.range` or `std.array.range` over a large span) or unbounded recursion; check the rule at this position",
                opts.memory_limit.unwrap_or(0) >> 20
            ))
            .at(Some(location(file, line, 1))),
        Breach::Crashed => Diagnostic::error(codes::INTERNAL, "the policy evaluator crashed")
            .detail(format!("{what} panicked; this is a bug in Chimera, regorus or Nickel, please report it with the policy"))
            .at(Some(location(file, line, 1))),
        Breach::NoThread => Diagnostic::error(codes::EVALUATOR_UNAVAILABLE, "cannot start the policy evaluator")
            .detail("the system refused a thread; free resources and retry"),
    }
}

/// Loads every `*.rego` and `*.ncl` directly in `dir`, except tests (`*_test.rego`,
/// `*_test.ncl`); helpers a Nickel policy imports go in a subdirectory. A missing directory
/// is no policies. Syntax errors, a Rego package that is not `chimera`, a Nickel file that is
/// not a policy: located diagnostics.
pub fn load(dir: &Path, opts: &PolicyOptions) -> Result<Policies, Vec<Diagnostic>> {
    let all = discover(dir)?;
    let sources: Vec<Source> = all.into_iter().filter(|s| !s.is_test).collect();
    library(sources, opts)
}

fn library(sources: Vec<Source>, opts: &PolicyOptions) -> Result<Policies, Vec<Diagnostic>> {
    let mut diags = Vec::new();
    let rego_files: Vec<usize> = (0..sources.len())
        .filter(|&i| sources[i].lang == Lang::Rego)
        .collect();
    let rego = if rego_files.is_empty() {
        None
    } else {
        match rego::load(&sources, &rego_files, opts.rego_v0) {
            Ok(lib) => Some(Arc::new(lib)),
            Err(d) => {
                diags.extend(d);
                None
            }
        }
    };

    let nickel_files: Vec<usize> = (0..sources.len())
        .filter(|&i| sources[i].lang == Lang::Nickel)
        .collect();
    let mut nickel = Vec::new();
    if !nickel_files.is_empty() {
        let jobs: Vec<nickel::File> = nickel_files.iter().map(|&i| sources[i].nickel()).collect();
        let progress = Arc::new(AtomicUsize::new(0));
        let seen = progress.clone();
        let out = limits::run(
            "policy-load",
            Instant::now() + opts.timeout,
            opts.memory_limit,
            move || {
                jobs.iter()
                    .enumerate()
                    .map(|(i, f)| {
                        seen.store(i, Ordering::Relaxed);
                        nickel::inspect(f)
                    })
                    .collect::<Vec<_>>()
            },
        );
        match out {
            Ok(forms) => {
                for (&i, form) in nickel_files.iter().zip(forms) {
                    match form {
                        Ok(form) => nickel.push((i, form)),
                        Err(d) => diags.extend(d),
                    }
                }
            }
            Err(b) => {
                let at = &sources
                    [nickel_files[progress.load(Ordering::Relaxed).min(nickel_files.len() - 1)]];
                diags.push(breach_diag(b, "loading this policy", &at.shown, 1, opts));
            }
        }
    }
    if !diags.is_empty() {
        return Err(diags);
    }

    let mut hasher = blake3::Hasher::new();
    for s in &sources {
        let name = s.file_name();
        hasher.update(&(name.len() as u64).to_le_bytes());
        hasher.update(name.as_bytes());
        hasher.update(&(s.text.len() as u64).to_le_bytes());
        hasher.update(s.text.as_bytes());
    }
    Ok(Policies {
        files: sources.iter().map(|s| s.path.clone()).collect(),
        digest: ContentHash(*hasher.finalize().as_bytes()),
        sources: sources.into(),
        rego,
        nickel: nickel.into(),
        opts: opts.clone(),
    })
}

/// The Nickel policies (by position) split over the cores, round robin.
fn nickel_groups(count: usize) -> Vec<Vec<usize>> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let groups = cores.clamp(1, 4).min(count);
    (0..groups)
        .map(|g| (g..count).step_by(groups).collect())
        .collect()
}

/// The finding's default rule: the file's stem, with a prefixed rule's name.
fn rule_id(src: &Source, name: &str) -> String {
    if matches!(name, "deny" | "warn" | "violation") {
        src.stem()
    } else {
        format!("{}.{name}", src.stem())
    }
}

fn result_diag(file: &str, line: usize, message: String) -> Diagnostic {
    Diagnostic::error(
        codes::POLICY_RESULT,
        "a policy's result has the wrong shape",
    )
    .detail(message)
    .at(Some(location(file, line, 1)))
}

impl Policies {
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// The policy files, as found in the directory (tests excluded).
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// blake3 over the files' names and contents (what a plan was checked against).
    pub fn digest(&self) -> ContentHash {
        self.digest
    }

    /// Only the policies of one file (a test case's `policy`), by file name or path as shown.
    fn only(&self, name: &str) -> Option<Policies> {
        let i = self
            .sources
            .iter()
            .position(|s| s.file_name() == name || s.shown == name)?;
        let rego = self.rego.as_ref().map(|lib| {
            let mut lib = (**lib).clone();
            lib.queries.retain(|q| q.file == i);
            Arc::new(lib)
        });
        Some(Policies {
            files: vec![self.sources[i].path.clone()],
            nickel: self
                .nickel
                .iter()
                .filter(|(f, _)| *f == i)
                .cloned()
                .collect(),
            rego,
            ..self.clone()
        })
    }

    /// Evaluates every policy on `input` (the plan JSON document): Rego first, then Nickel,
    /// each file in name order. Runtime errors, a policy that does not end in time or eats
    /// memory: located diagnostics.
    pub fn evaluate(&self, input: &serde_json::Value) -> Result<Vec<Finding>, Vec<Diagnostic>> {
        if self.is_empty() {
            return Ok(Vec::new());
        }
        let deadline = Instant::now() + self.opts.timeout;
        let input = Arc::new(input.clone());
        // Every worker starts at once (Rego, and the Nickel policies split over the cores,
        // each group with its own copy of the plan: Nickel values cannot be shared between
        // threads); their results are then taken in file order.
        let rego = self
            .rego
            .as_ref()
            .filter(|lib| !lib.queries.is_empty())
            .map(|lib| {
                let progress = Arc::new(AtomicUsize::new(0));
                let (worker_lib, worker_input, seen) =
                    (lib.clone(), input.clone(), progress.clone());
                let job = limits::spawn("policy-rego", move || {
                    rego::evaluate(&worker_lib, &worker_input, deadline, &seen)
                });
                (lib, progress, job)
            });
        let groups = nickel_groups(self.nickel.len());
        let nickel: Vec<_> = groups
            .into_iter()
            .map(|positions| {
                let jobs: Vec<(nickel::File, nickel::Form)> = positions
                    .iter()
                    .map(|&p| {
                        let (i, form) = &self.nickel[p];
                        (self.sources[*i].nickel(), form.clone())
                    })
                    .collect();
                let progress = Arc::new(AtomicUsize::new(0));
                let (worker_input, seen) = (input.clone(), progress.clone());
                let job = limits::spawn("policy-nickel", move || {
                    nickel::evaluate(&jobs, &worker_input, &seen)
                });
                (positions, progress, job)
            })
            .collect();

        let mut findings = Vec::new();
        let mut diags = Vec::new();
        if let Some((lib, progress, job)) = rego {
            // regorus's own timer stops loops at the deadline; the watchdog is the backstop.
            let out = job.and_then(|j| {
                j.wait(
                    deadline + Duration::from_millis(250),
                    self.opts.memory_limit,
                )
            });
            self.collect_rego(lib, &progress, out, &mut findings, &mut diags);
        }
        let mut by_position = BTreeMap::new();
        for (positions, progress, job) in nickel {
            let out = job.and_then(|j| j.wait(deadline, self.opts.memory_limit));
            match out {
                Ok(results) => by_position.extend(positions.into_iter().zip(results)),
                Err(b) => {
                    let p = positions[progress.load(Ordering::Relaxed).min(positions.len() - 1)];
                    let (i, form) = &self.nickel[p];
                    let line = match form {
                        nickel::Form::Function { line } => line.unwrap_or(1),
                        nickel::Form::Record { deny, warn } => {
                            deny.flatten().or(warn.flatten()).unwrap_or(1)
                        }
                    };
                    diags.push(breach_diag(
                        b,
                        "this Nickel policy",
                        &self.sources[*i].shown,
                        line,
                        &self.opts,
                    ));
                }
            }
        }
        for (p, result) in by_position {
            self.collect_nickel(p, result, &mut findings, &mut diags);
        }
        if diags.is_empty() {
            // Each finding once (a Rego set is already; a Nickel policy may repeat one).
            let mut seen = std::collections::HashSet::new();
            findings.retain(|f| seen.insert(f.clone()));
            Ok(findings)
        } else {
            Err(diags)
        }
    }

    fn collect_rego(
        &self,
        lib: &rego::Library,
        progress: &AtomicUsize,
        out: Result<Vec<Result<serde_json::Value, rego::Failure>>, Breach>,
        findings: &mut Vec<Finding>,
        diags: &mut Vec<Diagnostic>,
    ) {
        let results = match out {
            Ok(r) => r,
            Err(b) => {
                let q = &lib.queries[progress.load(Ordering::Relaxed).min(lib.queries.len() - 1)];
                let src = &self.sources[q.file];
                diags.push(breach_diag(
                    b,
                    &format!("the Rego rule `{}`", q.name),
                    &src.shown,
                    q.line,
                    &self.opts,
                ));
                return;
            }
        };
        for (i, r) in results.into_iter().enumerate() {
            match r {
                Ok(value) => {
                    let q = &lib.queries[i];
                    let src = &self.sources[q.file];
                    let rule = rule_id(src, &q.name);
                    let origin = Origin {
                        file: &src.shown,
                        rule: &rule,
                        level: q.level,
                        line: Some(q.line),
                    };
                    match finding::findings(&value, &origin) {
                        Ok(f) => findings.extend(f),
                        Err(m) => diags.push(result_diag(
                            &src.shown,
                            q.line,
                            format!("`{}`: {m}", q.name),
                        )),
                    }
                }
                Err(f) => {
                    let q = &lib.queries[f.query.min(lib.queries.len() - 1)];
                    let src = &self.sources[q.file];
                    if f.time_limit {
                        diags.push(breach_diag(
                            Breach::Time,
                            &format!("the Rego rule `{}`", q.name),
                            &src.shown,
                            q.line,
                            &self.opts,
                        ));
                    } else if f.message.contains(rego::RANGE_TOO_LARGE) {
                        diags.push(rego::error_diag(
                            codes::POLICY_MEMORY,
                            "policy evaluation ran out of memory",
                            &f.message,
                            &src.shown,
                            q.line,
                            "build smaller ranges; a policy over a plan rarely needs more than its resources",
                        ));
                    } else {
                        diags.push(rego::error_diag(
                            codes::POLICY_EVAL,
                            "Rego policy failed",
                            &f.message,
                            &src.shown,
                            q.line,
                            "fix the rule at this position (`opa eval` or `chimera policy test` reproduce it on a small plan)",
                        ));
                    }
                }
            }
        }
    }

    fn collect_nickel(
        &self,
        position: usize,
        result: Result<serde_json::Value, Vec<Diagnostic>>,
        findings: &mut Vec<Finding>,
        diags: &mut Vec<Diagnostic>,
    ) {
        let (i, form) = &self.nickel[position];
        let src = &self.sources[*i];
        let value = match result {
            Ok(v) => v,
            Err(d) => {
                diags.extend(d);
                return;
            }
        };
        let (deny_line, warn_line) = match form {
            nickel::Form::Function { line } => (*line, None),
            nickel::Form::Record { deny, warn } => (deny.flatten(), warn.flatten()),
        };
        let rule = src.stem();
        for (level, key, line) in [
            (Level::Deny, "deny", deny_line),
            (Level::Warn, "warn", warn_line),
        ] {
            let origin = Origin {
                file: &src.shown,
                rule: &rule,
                level,
                line,
            };
            let v = value.get(key).unwrap_or(&serde_json::Value::Null);
            match finding::findings(v, &origin) {
                Ok(f) => findings.extend(f),
                Err(m) => diags.push(result_diag(
                    &src.shown,
                    line.unwrap_or(1),
                    format!("`{key}`: {m}"),
                )),
            }
        }
    }
}

/// The outcome of `chimera policy test`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TestReport {
    pub results: Vec<TestResult>,
}

impl TestReport {
    pub fn passed(&self) -> usize {
        self.results.iter().filter(|r| r.passed).count()
    }

    pub fn failed(&self) -> usize {
        self.results.len() - self.passed()
    }
}

/// One test: a Rego `test_*` rule or a Nickel test case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TestResult {
    pub file: String,
    pub name: String,
    pub passed: bool,
    /// Why it failed.
    pub message: Option<String>,
}

/// Runs the tests in `dir`, like `opa test`: every Rego rule named `test_*` (in `*_test.rego`
/// or any policy file) must be `true`, and every case of every `*_test.ncl` file must produce
/// the findings it expects (docs/policy.md). The policies must load; a test file that is not
/// a record of cases is a diagnostic.
pub fn run_tests(dir: &Path, opts: &PolicyOptions) -> Result<TestReport, Vec<Diagnostic>> {
    let all = discover(dir)?;
    let policies = library(all.iter().filter(|s| !s.is_test).cloned().collect(), opts)?;
    let mut results = Vec::new();
    let mut diags = Vec::new();
    match rego_tests(&all, opts) {
        Ok(r) => results.extend(r),
        Err(d) => diags.extend(d),
    }
    for src in all.iter().filter(|s| s.is_test && s.lang == Lang::Nickel) {
        match nickel_tests(src, &policies, opts) {
            Ok(r) => results.extend(r),
            Err(d) => diags.extend(d),
        }
    }
    if diags.is_empty() {
        Ok(TestReport { results })
    } else {
        Err(diags)
    }
}

fn rego_tests(all: &[Source], opts: &PolicyOptions) -> Result<Vec<TestResult>, Vec<Diagnostic>> {
    let files: Vec<usize> = (0..all.len())
        .filter(|&i| all[i].lang == Lang::Rego)
        .collect();
    if files.is_empty() {
        return Ok(Vec::new());
    }
    let (mut engine, tests) = rego::load_tests(all, &files, opts.rego_v0)?;
    if tests.is_empty() {
        return Ok(Vec::new());
    }
    let progress = Arc::new(AtomicUsize::new(0));
    let (jobs, seen, timeout) = (tests.clone(), progress.clone(), opts.timeout);
    let budget = opts.timeout * (tests.len() as u32).max(1) + Duration::from_millis(250);
    let out = limits::run(
        "policy-test",
        Instant::now() + budget,
        opts.memory_limit,
        move || {
            jobs.iter()
                .enumerate()
                .map(|(i, t)| {
                    seen.store(i, Ordering::Relaxed);
                    rego::run_test(&mut engine, t, timeout)
                })
                .collect::<Vec<_>>()
        },
    );
    match out {
        Ok(outcomes) => Ok(tests
            .iter()
            .zip(outcomes)
            .map(|(t, o)| TestResult {
                file: all[t.file].shown.clone(),
                name: t.name.clone(),
                passed: o.is_ok(),
                message: o.err(),
            })
            .collect()),
        Err(b) => {
            let t = &tests[progress.load(Ordering::Relaxed).min(tests.len() - 1)];
            Err(vec![breach_diag(
                b,
                &format!("the test `{}`", t.name),
                &all[t.file].shown,
                1,
                opts,
            )])
        }
    }
}

/// One case of a Nickel test file.
struct Case {
    name: String,
    input: serde_json::Value,
    policy: Option<String>,
    deny: Option<Vec<String>>,
    warn: Option<Vec<String>>,
}

fn invalid_test(src: &Source, what: String) -> Vec<Diagnostic> {
    vec![Diagnostic::error(codes::POLICY_TEST_INVALID, "not a policy test file")
        .detail(format!(
            "{what}; a test file is a record of cases `{{ NAME = {{ input = PLAN, policy | optional = \"FILE\", deny | optional = [\"RULE or MESSAGE\"], warn | optional = [...] }} }}`"
        ))
        .at(Some(location(&src.shown, 1, 1)))]
}

fn cases(src: &Source, value: serde_json::Value) -> Result<Vec<Case>, Vec<Diagnostic>> {
    let serde_json::Value::Object(map) = value else {
        return Err(invalid_test(src, "the file is not a record".into()));
    };
    let strings =
        |name: &str, case: &serde_json::Map<String, serde_json::Value>, field: &str| match case
            .get(field)
        {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::Array(items)) => items
                .iter()
                .map(|i| i.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .map(Some)
                .ok_or_else(|| {
                    invalid_test(
                        src,
                        format!("case `{name}`: `{field}` must be an array of strings"),
                    )
                }),
            Some(_) => Err(invalid_test(
                src,
                format!("case `{name}`: `{field}` must be an array of strings"),
            )),
        };
    let mut out = Vec::new();
    for (name, case) in map {
        let serde_json::Value::Object(case) = case else {
            return Err(invalid_test(src, format!("case `{name}` is not a record")));
        };
        if let Some(k) = case
            .keys()
            .find(|k| !matches!(k.as_str(), "input" | "policy" | "deny" | "warn"))
        {
            return Err(invalid_test(
                src,
                format!("case `{name}` has an unknown field `{k}`"),
            ));
        }
        let Some(input) = case.get("input").cloned() else {
            return Err(invalid_test(src, format!("case `{name}` has no `input`")));
        };
        let policy = match case.get("policy") {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(_) => {
                return Err(invalid_test(
                    src,
                    format!("case `{name}`: `policy` must be a file name"),
                ));
            }
        };
        out.push(Case {
            deny: strings(&name, &case, "deny")?,
            warn: strings(&name, &case, "warn")?,
            name,
            input,
            policy,
        });
    }
    Ok(out)
}

fn nickel_tests(
    src: &Source,
    policies: &Policies,
    opts: &PolicyOptions,
) -> Result<Vec<TestResult>, Vec<Diagnostic>> {
    let file = src.nickel();
    let exported = limits::run(
        "policy-test",
        Instant::now() + opts.timeout,
        opts.memory_limit,
        move || nickel::export(&file),
    )
    .map_err(|b| vec![breach_diag(b, "this test file", &src.shown, 1, opts)])??;
    let cases = cases(src, exported)?;
    let mut out = Vec::new();
    for case in cases {
        let scoped;
        let library = match &case.policy {
            None => policies,
            Some(name) => match policies.only(name) {
                Some(p) => {
                    scoped = p;
                    &scoped
                }
                None => {
                    return Err(invalid_test(
                        src,
                        format!(
                            "case `{}`: no policy file `{name}` in the directory",
                            case.name
                        ),
                    ));
                }
            },
        };
        let result = match library.evaluate(&case.input) {
            Ok(findings) => compare(&case, &findings),
            Err(d) => Err(format!(
                "evaluation failed: {}",
                d.iter()
                    .map(|d| match &d.location {
                        Some(l) => format!("{}:{}: {} ({})", l.file, l.line, d.summary, d.detail),
                        None => format!("{} ({})", d.summary, d.detail),
                    })
                    .collect::<Vec<_>>()
                    .join("; ")
            )),
        };
        out.push(TestResult {
            file: src.shown.clone(),
            name: case.name,
            passed: result.is_ok(),
            message: result.err(),
        });
    }
    Ok(out)
}

/// The findings a case expects, level by level: each expected entry matches a finding by rule
/// or message, and each finding is expected.
fn compare(case: &Case, findings: &[Finding]) -> Result<(), String> {
    let mut problems = Vec::new();
    for (level, expected) in [(Level::Deny, &case.deny), (Level::Warn, &case.warn)] {
        let Some(expected) = expected else {
            continue;
        };
        let got: Vec<&Finding> = findings.iter().filter(|f| f.level == level).collect();
        let name = if level == Level::Deny { "deny" } else { "warn" };
        let matches = |e: &str, f: &Finding| f.rule == e || f.message == e;
        for e in expected {
            if !got.iter().any(|f| matches(e, f)) {
                problems.push(format!(
                    "expected {name} `{e}`, which no finding has as rule or message"
                ));
            }
        }
        for f in &got {
            if !expected.iter().any(|e| matches(e, f)) {
                problems.push(format!(
                    "unexpected {name} from {}: {} ({}{})",
                    f.file,
                    f.message,
                    f.rule,
                    f.address
                        .as_deref()
                        .map(|a| format!(", {a}"))
                        .unwrap_or_default()
                ));
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
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
