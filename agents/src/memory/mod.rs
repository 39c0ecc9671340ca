//! What happened before: past proposals, incidents and their outcomes, recalled by similarity
//! to what an agent is about to do, so a fix that was merged comes back first and one that was
//! rejected comes back with less weight.
//!
//! - [`Memory`]: the trait every backend implements, checked by one suite ([`contract`]).
//! - [`SqliteMemory`]: the embedded default, one file beside the stack
//!   (`.chimera/agent-memory.db`), brute-force similarity in Rust.
//! - `QdrantMemory` (feature `qdrant`, on by default): a Qdrant server over gRPC, one
//!   collection per [`RecordKind`].
//! - [`HashingEmbedder`]: deterministic feature hashing; no model is downloaded.
//!
//! **Architecture Invariant:** both backends rank through the one [`rank`] function: the
//! similarity comes from the backend, the outcome weighting and the order never do.

pub mod contract;
mod embed;
#[cfg(feature = "qdrant")]
mod qdrant;
mod sqlite;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::{AgentError, Recalled};

pub use embed::{Embedder, HashingEmbedder, cosine};
#[cfg(feature = "qdrant")]
pub use qdrant::{QdrantMemory, QdrantOptions};
pub use sqlite::SqliteMemory;

/// What a record is about; the Qdrant backend keeps one collection per kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordKind {
    /// A pull request an agent opened for an intent.
    Proposal,
    /// Drift or a failure seen on a stack, and what was done about it.
    Incident,
    /// How something ended, recorded on its own (a heal, a rollback).
    Outcome,
}

impl RecordKind {
    pub const ALL: [RecordKind; 3] = [
        RecordKind::Proposal,
        RecordKind::Incident,
        RecordKind::Outcome,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RecordKind::Proposal => "proposal",
            RecordKind::Incident => "incident",
            RecordKind::Outcome => "outcome",
        }
    }
}

impl fmt::Display for RecordKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RecordKind {
    type Err = MemoryError;

    fn from_str(s: &str) -> Result<Self, MemoryError> {
        RecordKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| MemoryError::Corrupt(format!("unknown record kind `{s}`")))
    }
}

/// One thing that happened. The text is data, never an instruction: it is shown to a proposer
/// as a past example, nothing more.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Unique in a memory; remembering the same id again replaces the record.
    pub id: String,
    pub stack: String,
    pub kind: RecordKind,
    /// The resource kind it is about (`instance`, `volume`, …), if one.
    pub resource_kind: Option<String>,
    /// What happened: the intent, the drift, the fix. This is what is embedded and compared.
    pub text: String,
    /// `opened`, `merged`, `closed`, `rejected`, `failed`, `healed`, … (see [`outcome_weight`]).
    pub outcome: String,
    /// The pull request, if one was opened.
    pub pr: Option<u64>,
    /// Seconds since the Unix epoch.
    pub created_unix: u64,
}

impl Record {
    /// A record of something that happens now, on no particular resource and with no pull
    /// request; [`Memory::remember`] gives it an id.
    pub fn new(
        stack: impl Into<String>,
        kind: RecordKind,
        text: impl Into<String>,
        outcome: impl Into<String>,
    ) -> Record {
        Record {
            id: String::new(),
            stack: stack.into(),
            kind,
            resource_kind: None,
            text: text.into(),
            outcome: outcome.into(),
            pr: None,
            created_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        }
    }

    /// The same record about a resource kind.
    pub fn on(mut self, resource_kind: impl Into<String>) -> Record {
        self.resource_kind = Some(resource_kind.into());
        self
    }

    /// The same record with its pull request.
    pub fn with_pr(mut self, pr: u64) -> Record {
        self.pr = Some(pr);
        self
    }

    /// The record with an id: its own, or a new one when it has none (blank). New ids are
    /// the kind and 16 hex digits (`proposal-3f2a…`), unique across processes and calls.
    pub(crate) fn identified(mut self) -> Record {
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        if self.id.trim().is_empty() {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            let mut h = blake3::Hasher::new();
            for part in [&self.stack, self.kind.as_str(), &self.text] {
                h.update(part.as_bytes());
                h.update(&[0]);
            }
            h.update(&self.created_unix.to_le_bytes());
            h.update(&nanos.to_le_bytes());
            h.update(&std::process::id().to_le_bytes());
            h.update(&COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
            let hex = h.finalize().to_hex();
            self.id = format!("{}-{}", self.kind, &hex[..16]);
        }
        self
    }

    /// The record as a proposer's context shows it: kind, resource kind and pull request
    /// before the text.
    pub fn recalled(&self, score: f32) -> Recalled {
        let mut head = self.kind.to_string();
        if let Some(rk) = &self.resource_kind {
            head.push_str(&format!(" on {rk}"));
        }
        if let Some(pr) = self.pr {
            head.push_str(&format!(" (PR #{pr})"));
        }
        Recalled {
            text: format!("{head}: {}", self.text),
            outcome: self.outcome.clone(),
            score,
        }
    }
}

/// The results of [`Memory::recall`] as the crate's [`Recalled`], in the same order.
pub fn recalled(hits: &[(Record, f32)]) -> Vec<Recalled> {
    hits.iter().map(|(r, s)| r.recalled(*s)).collect()
}

/// Which records a recall may return; `None` matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub stack: Option<String>,
    pub kind: Option<RecordKind>,
    pub resource_kind: Option<String>,
}

impl Filter {
    /// Every record of one stack.
    pub fn stack(stack: impl Into<String>) -> Filter {
        Filter {
            stack: Some(stack.into()),
            ..Filter::default()
        }
    }

    pub fn kind(mut self, kind: RecordKind) -> Filter {
        self.kind = Some(kind);
        self
    }

    pub fn resource_kind(mut self, resource_kind: impl Into<String>) -> Filter {
        self.resource_kind = Some(resource_kind.into());
        self
    }

    /// Whether `rec` passes the filter (what every backend's native filtering must agree
    /// with).
    pub fn matches(&self, rec: &Record) -> bool {
        self.stack.as_ref().is_none_or(|s| *s == rec.stack)
            && self.kind.is_none_or(|k| k == rec.kind)
            && self
                .resource_kind
                .as_ref()
                .is_none_or(|rk| rec.resource_kind.as_ref() == Some(rk))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// The store cannot be opened or reached (a file, a server).
    #[error("{0}")]
    Unavailable(String),
    /// The store holds vectors of another dimension than the embedder makes.
    #[error(
        "the memory at {at} holds vectors of dimension {stored} but the embedder makes {embedder}; use the embedder it was written with, or another store"
    )]
    Dimension {
        at: String,
        stored: usize,
        embedder: usize,
    },
    /// A stored record cannot be read back (damaged, or written by something else).
    #[error("a stored record is damaged: {0}")]
    Corrupt(String),
    /// A record that cannot be stored as given.
    #[error("invalid record: {0}")]
    Invalid(String),
    /// The backend refused or failed a request.
    #[error("{0}")]
    Backend(String),
}

impl From<MemoryError> for AgentError {
    fn from(e: MemoryError) -> Self {
        AgentError::Memory(e.to_string())
    }
}

/// A store of [`Record`]s, searched by meaning.
///
/// Records hold what the caller passes, verbatim: the caller redacts first. Sensitive
/// attribute values, API keys and tokens must never be part of a record's text (they would be
/// stored, and shown to proposers as past examples).
#[async_trait]
pub trait Memory: Send + Sync {
    /// Stores `rec` and returns its id. A record with an empty id gets a new one; a record
    /// with the id of a stored one replaces it (its kind may change too).
    async fn remember(&self, rec: Record) -> Result<String, MemoryError>;

    /// At most `k` records passing `filter`, most relevant first, each with its score: the
    /// cosine similarity of its text to `query`, weighted by its outcome ([`ranked_score`]).
    async fn recall(
        &self,
        query: &str,
        filter: &Filter,
        k: usize,
    ) -> Result<Vec<(Record, f32)>, MemoryError>;

    /// Changes a record's outcome (a pull request was merged or closed). `Ok(false)` when no
    /// record has this id; nothing is created then.
    async fn set_outcome(&self, id: &str, outcome: &str) -> Result<bool, MemoryError>;

    async fn get(&self, id: &str) -> Result<Option<Record>, MemoryError>;
}

/// The `k` records of `stack` most relevant to `intent`, as a proposer's
/// [`Context::memories`](crate::Context::memories): what the propose loop puts in the context
/// before the first round.
pub async fn memories(
    memory: &dyn Memory,
    intent: &str,
    stack: &str,
    k: usize,
) -> Result<Vec<Recalled>, MemoryError> {
    let hits = memory.recall(intent, &Filter::stack(stack), k).await?;
    Ok(recalled(&hits))
}

/// The words the agents record as outcomes. Any other word is kept as given and weighs 1.
pub mod outcome {
    /// A pull request was opened and is waiting for review.
    pub const OPENED: &str = "opened";
    /// The pull request was merged.
    pub const MERGED: &str = "merged";
    /// The pull request was closed without merging.
    pub const CLOSED: &str = "closed";
    /// A reviewer (or an agent's caller) turned the proposal down.
    pub const REJECTED: &str = "rejected";
    /// Proposing failed (the model, the forge, git).
    pub const FAILED: &str = "failed";
    /// No round produced sources that compile.
    pub const NOT_COMPILED: &str = "not-compiled";
    /// A policy denied every round's plan.
    pub const DENIED: &str = "denied";
    /// The edits verified but missed the intent's numeric target.
    pub const TARGET_MISSED: &str = "target-missed";
    /// The proposer could not do the intent (the offline planner does not know it).
    pub const UNSUPPORTED: &str = "unsupported";
    /// The edits verified and were committed to a local branch (no forge).
    pub const COMMITTED: &str = "committed";
    /// The edits verified; nothing was published.
    pub const VERIFIED: &str = "verified";
    /// Drift was healed (an incident's fix worked).
    pub const HEALED: &str = "healed";
}

/// The weight of outcomes that did not work (`rejected`, `closed`, `failed`,
/// `not-compiled`, `denied`, `target-missed`, `unsupported`): an equally similar record that was rejected
/// ranks below one that was merged, and below any record at least half as similar.
pub const PENALTY: f32 = 0.5;

/// The weight of outcomes that worked (`merged`, `healed`): ahead of an equally similar open
/// proposal, but not of a clearly closer one.
pub const BONUS: f32 = 1.1;

/// The weight an outcome puts on similarity: [`PENALTY`], [`BONUS`], or 1 for anything else
/// (`opened`, `committed`, `verified`, unknown words). Case and surrounding blanks are
/// ignored.
pub fn outcome_weight(outcome: &str) -> f32 {
    use outcome::*;
    let o = outcome.trim().to_ascii_lowercase();
    if [
        REJECTED,
        CLOSED,
        FAILED,
        NOT_COMPILED,
        DENIED,
        TARGET_MISSED,
        UNSUPPORTED,
    ]
    .contains(&o.as_str())
    {
        PENALTY
    } else if [MERGED, HEALED].contains(&o.as_str()) {
        BONUS
    } else {
        1.0
    }
}

/// A similarity weighted by an outcome. A penalty always moves a score down and a bonus up,
/// also for negative similarities (which are divided by the weight instead).
pub fn ranked_score(similarity: f32, outcome: &str) -> f32 {
    weighted(similarity, outcome_weight(outcome))
}

fn weighted(similarity: f32, weight: f32) -> f32 {
    if similarity >= 0.0 {
        similarity * weight
    } else {
        similarity / weight
    }
}

/// The highest score a record of similarity `similarity` can reach, whatever its outcome: a
/// backend that searches for candidates by raw similarity has seen every record that can still
/// make the top `k` once the k-th ranked score is at least this bound of its lowest candidate.
pub fn best_possible(similarity: f32) -> f32 {
    weighted(similarity, BONUS)
}

/// Ranks candidates given with their raw cosine similarity: weights each by its outcome,
/// keeps the best of any repeated id, orders by score (then newer first, then by id, so equal
/// scores come out the same way every time) and keeps `k`.
pub fn rank(candidates: Vec<(Record, f32)>, k: usize) -> Vec<(Record, f32)> {
    let mut scored: Vec<(Record, f32)> = candidates
        .into_iter()
        .map(|(r, sim)| {
            let s = ranked_score(sim, &r.outcome);
            (r, s)
        })
        .collect();
    scored.sort_by(|(a, sa), (b, sb)| {
        sb.total_cmp(sa)
            .then(b.created_unix.cmp(&a.created_unix))
            .then(a.id.cmp(&b.id))
    });
    let mut seen = std::collections::HashSet::new();
    scored.retain(|(r, _)| seen.insert(r.id.clone()));
    scored.truncate(k);
    scored
}

/// Where a stack's embedded memory lives, relative to its directory.
pub const DB_FILE: &str = ".chimera/agent-memory.db";

/// The embedded memory's file for the stack in `stack_dir`.
pub fn default_path(stack_dir: &Path) -> PathBuf {
    stack_dir.join(DB_FILE)
}

/// Opens the memory the environment asks for: Qdrant when `QDRANT_URL` is set (with
/// `QDRANT_API_KEY` if set), else SQLite at [`default_path`]. The environment is read through
/// `lookup` (`|k| std::env::var(k).ok()` in the CLI), never directly.
pub async fn open(
    stack_dir: &Path,
    lookup: impl Fn(&str) -> Option<String>,
    embedder: impl Embedder + 'static,
) -> Result<Box<dyn Memory>, MemoryError> {
    let set = |k: &str| lookup(k).filter(|v| !v.trim().is_empty());
    match set("QDRANT_URL") {
        #[cfg(feature = "qdrant")]
        Some(url) => {
            let options = QdrantOptions {
                api_key: set("QDRANT_API_KEY"),
                ..QdrantOptions::default()
            };
            Ok(Box::new(
                QdrantMemory::connect_with(&url, options, embedder).await?,
            ))
        }
        #[cfg(not(feature = "qdrant"))]
        Some(_) => Err(MemoryError::Unavailable(
            "QDRANT_URL is set but this build has no Qdrant support; rebuild chimera-agents with the `qdrant` feature, or unset QDRANT_URL to use the embedded memory".into(),
        )),
        None => Ok(Box::new(
            SqliteMemory::open_with(&default_path(stack_dir), embedder).await?,
        )),
    }
}
