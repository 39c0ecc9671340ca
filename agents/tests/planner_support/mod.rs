//! Runs one case of the intent set (`agents/intents.json`): the example copied into a temporary
//! directory (applied on its local cloud when the case asks), the case's policies installed,
//! the offline planner's draft, and the verifier's verdict checked against the expectation.
//! Shared by `tests/planner.rs` and `benches/planner.rs`.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chimera_agents::planner::OfflinePlanner;
use chimera_agents::planner::expect::{self, Case};
use chimera_agents::verify::{Verdict, verify};
use chimera_agents::{AgentError, Context, Draft, Proposer, SourceFile};
use chimera_model::Address;
use chimera_workflow::{ApplyRequest, LocalChange, ReadOnlyStack, Settings, Stack};
use serde_json::Value;

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn cases() -> Vec<Case> {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("intents.json"))
        .expect("agents/intents.json");
    serde_json::from_str(&text).expect("agents/intents.json is a list of cases")
}

/// The example `name` copied into a temporary directory, with `policies` installed.
pub fn stack_dir(example: &str, policies: &[String]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let src = root().join("examples").join(example);
    for e in std::fs::read_dir(&src).unwrap() {
        let e = e.unwrap();
        if e.path().extension().and_then(|x| x.to_str()) == Some("ncl") {
            std::fs::copy(e.path(), dir.path().join(e.file_name())).unwrap();
        }
    }
    if !policies.is_empty() {
        std::fs::create_dir_all(dir.path().join("policies")).unwrap();
        for p in policies {
            std::fs::copy(
                root().join(format!("examples/policies/rego/{p}.rego")),
                dir.path().join(format!("policies/{p}.rego")),
            )
            .unwrap();
        }
    }
    dir
}

/// Applies the stack at `dir` on its local cloud.
pub async fn apply(dir: &Path) {
    let req = ApplyRequest {
        refresh: false,
        ..ApplyRequest::default()
    };
    let applied = Stack::open(dir, Settings::default())
        .apply(&req, |_| true)
        .await
        .unwrap();
    assert!(applied.ok(), "the example applies");
}

/// Sets the simulated utilisation of `address` (cpu %, memory %), as `chimera local mutate`.
pub async fn set_utilisation(dir: &Path, address: &str, cpu: f64, memory: f64) {
    let address: Address = address.parse().unwrap();
    Stack::open(dir, Settings::default())
        .local_mutate(
            &address,
            &LocalChange::Set(vec![
                ("cpu_utilisation".into(), Value::from(cpu)),
                ("memory_utilisation".into(), Value::from(memory)),
            ]),
        )
        .await
        .unwrap();
}

/// The context the planner gets: the intent and the stack's Nickel files.
pub fn context(dir: &Path, intent: &str) -> Context {
    let mut files = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().and_then(|x| x.to_str()) == Some("ncl") {
            files.push(SourceFile {
                path: PathBuf::from(p.file_name().unwrap()),
                text: std::fs::read_to_string(&p).unwrap(),
            });
        }
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Context {
        intent: intent.to_string(),
        stack: "stack".into(),
        files,
        ..Context::default()
    }
}

/// What one case came to.
#[derive(Debug)]
pub struct Outcome {
    pub id: String,
    pub draft: Result<Draft, String>,
    pub verdict: Option<Verdict>,
    /// What the plan misses of the expectation (empty: done as asked).
    pub problems: Vec<String>,
    pub propose: Duration,
    pub verify: Duration,
}

impl Outcome {
    pub fn compiled(&self) -> bool {
        self.verdict.as_ref().is_some_and(|v| v.compiled)
    }
    pub fn policy_ok(&self) -> bool {
        self.verdict
            .as_ref()
            .is_some_and(|v| v.compiled && !v.denied())
    }
    pub fn as_asked(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Runs `case`.
pub async fn run(case: &Case) -> Outcome {
    let dir = stack_dir(&case.example, &case.policies);
    if case.apply {
        apply(dir.path()).await;
    }
    for (a, (cpu, mem)) in &case.utilisation {
        set_utilisation(dir.path(), a, *cpu, *mem).await;
    }
    let settings = Settings::default();
    let before = ReadOnlyStack::open(dir.path(), settings.clone())
        .cost()
        .expect("the example prices")
        .cost
        .monthly_after;
    let mut stack = ReadOnlyStack::open(dir.path(), settings.clone());
    let baseline = stack.plan(false).await.expect("the example plans");
    let ctx = context(dir.path(), &case.intent);
    let t = Instant::now();
    let planner = if case.utilisation.is_empty() {
        OfflinePlanner::new()
    } else {
        OfflinePlanner::for_stack(&mut stack).await.unwrap()
    };
    let draft = planner.propose(&ctx).await;
    let propose = t.elapsed();
    let mut out = Outcome {
        id: case.id.clone(),
        draft: draft.as_ref().cloned().map_err(|e| e.to_string()),
        verdict: None,
        problems: Vec::new(),
        propose,
        verify: Duration::ZERO,
    };
    let d = match draft {
        Ok(d) => d,
        Err(AgentError::Unsupported(m)) => {
            if !case.expect.unsupported {
                out.problems.push(format!("unsupported: {m}"));
            }
            return out;
        }
        Err(e) => {
            out.problems.push(e.to_string());
            return out;
        }
    };
    if case.expect.unsupported {
        out.problems
            .push("a draft came back where the planner should refuse".into());
    }
    let t = Instant::now();
    let v = verify(dir.path(), &settings, &d, before).await.unwrap();
    out.verify = t.elapsed();
    out.problems
        .extend(expect::check(&case.expect, &baseline, &v));
    if !v.passed() {
        out.problems
            .extend(v.feedback.iter().map(|f| format!("verifier: {f}")));
    }
    out.verdict = Some(v);
    out
}
