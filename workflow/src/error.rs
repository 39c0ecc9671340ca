//! The workflow's one error type: what kind of failure it is (so a caller can act on it), what
//! to do next, and the diagnostics to show.

use chimera_engine::EngineError;
use chimera_model::{Diagnostic, SourceMap, codes};
use chimera_state::StateError;

/// What went wrong, as a caller acts on it (the CLI picks exit codes and wording; the daemon
/// decides whether to retry; an agent whether to repair its change).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The stack does not compile (the diagnostics point into its sources).
    Compile,
    /// Planning refused (e.g. `prevent_destroy`, a rollback that needs a lost secret).
    Plan,
    /// The state store is unreachable, damaged or refused a write.
    State,
    /// Another run holds the stack's lock.
    Locked,
    /// The lock was lost during the run.
    LockLost,
    /// A saved plan no longer matches state.
    Stale,
    /// A provider cannot be used (not in this build, a bad setting, its cloud unreachable).
    Provider,
    /// A provider call or read failed, or an interrupted apply needs a person.
    Cloud,
    /// The caller's review of the plan said no.
    NotConfirmed,
    /// The input names something that does not exist (a plan file, a generation, a resource,
    /// a git ref) or is malformed.
    Input,
    /// Writing a file (a plan, a snapshot) failed.
    Io,
    /// A policy denies the plan, or a policy is broken (does not parse, fails, exceeds its
    /// limits).
    Policy,
}

/// A failed workflow call.
#[derive(Debug)]
pub struct Error {
    pub kind: ErrorKind,
    /// What to do next, as short imperative sentences (also in the diagnostics' details).
    pub hints: Vec<String>,
    pub diagnostics: Vec<Diagnostic>,
    /// The sources the diagnostics point into (a compile error's files); empty otherwise.
    pub sources: SourceMap,
}

impl Error {
    pub fn new(kind: ErrorKind, diagnostic: Diagnostic) -> Self {
        Error {
            kind,
            hints: Vec::new(),
            diagnostics: vec![diagnostic],
            sources: SourceMap::default(),
        }
    }

    pub fn many(kind: ErrorKind, diagnostics: Vec<Diagnostic>, sources: SourceMap) -> Self {
        Error {
            kind,
            hints: Vec::new(),
            diagnostics,
            sources,
        }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hints.push(hint.into());
        self
    }

    /// The first diagnostic's code, for callers that branch on it.
    pub fn code(&self) -> Option<chimera_model::Code> {
        self.diagnostics.first().map(|d| d.code)
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.diagnostics.first() {
            Some(d) if d.detail.is_empty() => write!(f, "{}: {}", d.code.0, d.summary),
            Some(d) => write!(f, "{}: {}: {}", d.code.0, d.summary, d.detail),
            None => write!(f, "{:?}", self.kind),
        }
    }
}

impl std::error::Error for Error {}

impl From<StateError> for Error {
    fn from(e: StateError) -> Self {
        match &e {
            StateError::Locked(_) => Error::new(
                ErrorKind::Locked,
                Diagnostic::error(codes::LOCKED, "the stack is locked").detail(format!(
                    "{e}. Wait for it to finish; if that process is gone for good, run `chimera force-unlock`"
                )),
            )
            .hint("wait for the other run, or run `chimera force-unlock` if it is gone"),
            StateError::Stale { .. } => Error::new(
                ErrorKind::Stale,
                Diagnostic::error(codes::STALE_PLAN, "the plan is stale").detail(format!(
                    "{e}: state changed since this plan was made; run `chimera plan --out FILE` again and review it"
                )),
            )
            .hint("make and review a new plan"),
            StateError::LockLost(_) => Error::new(
                ErrorKind::LockLost,
                Diagnostic::error(codes::LOCK_LOST, "the lock was lost").detail(e.to_string()),
            )
            .hint("run the command again: it recovers what was in flight"),
            StateError::Invalid(m) => Error::new(
                ErrorKind::State,
                Diagnostic::error(codes::STATE, "state problem").detail(m.clone()),
            ),
            StateError::Db(m) => Error::new(
                ErrorKind::State,
                Diagnostic::error(codes::STATE, "state database error").detail(format!(
                    "{m}; check that the state location is writable and not damaged"
                )),
            ),
        }
    }
}

impl From<EngineError> for Error {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::State(s) => s.into(),
            EngineError::NoProvider(p) => Error::new(
                ErrorKind::Provider,
                Diagnostic::error(codes::NO_PROVIDER, "provider not available").detail(format!(
                    "the plan uses provider {p}, which this build cannot reach; build Chimera with its cargo feature, or move the resources to another provider"
                )),
            ),
            EngineError::Unresolved(m) => Error::new(
                ErrorKind::Cloud,
                Diagnostic::error(codes::UNRESOLVED, "an interrupted apply needs attention")
                    .detail(m),
            ),
            EngineError::Call(failure) => Error::new(ErrorKind::Cloud, failure.diagnostic()),
            EngineError::AlreadyInState(address) => Error::new(
                ErrorKind::Input,
                Diagnostic::error(codes::ALREADY_IN_STATE, "already in state")
                    .detail(format!(
                        "{address} is already in state; `chimera state show {address}` shows it"
                    ))
                    .address(&address),
            ),
            EngineError::NoSuchCloudResource {
                provider,
                kind,
                cloud_id,
            } => Error::new(
                ErrorKind::Input,
                Diagnostic::error(codes::NO_SUCH_CLOUD_RESOURCE, "no such cloud resource").detail(
                    format!(
                        "{provider} has no {kind} `{cloud_id}`; check the id (`chimera orphans` lists what is tagged for the stack)"
                    ),
                ),
            ),
        }
    }
}
