//! Chimera's state: stacks with a lineage, append-only generations, temporal resource rows,
//! the intent log that makes applies crash-safe, an audit trail, and a lock per stack.
//!
//! **Architecture Invariant:** only this crate knows SQL. Every write is one transaction; a
//! generation is opened with a compare-and-swap on the serial (the fencing token), and every
//! write checks that the caller still holds the stack's lock.
//!
//! That algorithm is written once (`sql.rs`) over a small dialect layer; `sqlite.rs` and
//! `postgres.rs` hold only what differs: opening, a few SQL fragments, and locking.

pub mod conformance;
mod postgres;
mod sql;
mod sqlite;

use std::time::SystemTime;

use async_trait::async_trait;
use chimera_model::{Address, StateResource};
use serde::{Deserialize, Serialize};

pub use postgres::PgStore;
pub use sqlite::SqliteStore;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{0}")]
    Locked(Box<LockHolder>),
    #[error(
        "the lock on stack `{0}` was lost (force-unlocked by someone else, or the connection holding it dropped); nothing more was written, and the next apply resolves what was in flight"
    )]
    LockLost(String),
    #[error("stack `{stack}` moved on: expected generation {expected}, found {found}; plan again")]
    Stale {
        stack: String,
        expected: u64,
        found: u64,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("state database error: {0}")]
    Db(String),
}

/// Who holds a stack's lock (the answer to a refused `lock`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "stack `{stack}` is locked by {owner} on {host} (pid {pid}) for `{operation}` since {since}"
)]
pub struct LockHolder {
    pub stack: String,
    pub owner: String,
    pub host: String,
    pub pid: i64,
    pub operation: String,
    pub since: String,
}

impl From<sqlx::Error> for StateError {
    fn from(e: sqlx::Error) -> Self {
        StateError::Db(e.to_string())
    }
}

impl From<sqlx::migrate::MigrateError> for StateError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        StateError::Db(e.to_string())
    }
}

pub type Result<T> = std::result::Result<T, StateError>;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StackInfo {
    pub name: String,
    pub lineage: String,
    /// The latest generation (0: none).
    pub serial: u64,
}

/// A `(name, lineage, latest serial)` row.
impl From<(String, String, i64)> for StackInfo {
    fn from((name, lineage, serial): (String, String, i64)) -> Self {
        StackInfo {
            name,
            lineage,
            serial: serial as u64,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenerationInfo {
    pub serial: u64,
    pub parent: Option<u64>,
    pub created_at: String,
    pub finished_at: Option<String>,
    pub status: String,
    pub plan_hash: Option<String>,
    pub desired_hash: Option<String>,
    pub actor: String,
    pub message: String,
}

/// Who holds (or wants) a lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockRequest {
    pub owner: String,
    pub operation: String,
}

/// A held lock; pass it to every write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lock {
    pub stack: String,
    pub lock_id: String,
}

/// What a generation is for.
#[derive(Debug, Clone, Default)]
pub struct GenerationMeta {
    pub actor: String,
    pub message: String,
    pub plan_hash: Option<String>,
    pub desired_hash: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IntentAction {
    Create,
    Update,
    Delete,
}

impl IntentAction {
    pub fn as_str(self) -> &'static str {
        match self {
            IntentAction::Create => "create",
            IntentAction::Update => "update",
            IntentAction::Delete => "delete",
        }
    }
    fn parse(s: &str) -> Result<Self> {
        match s {
            "create" => Ok(IntentAction::Create),
            "update" => Ok(IntentAction::Update),
            "delete" => Ok(IntentAction::Delete),
            other => Err(StateError::Invalid(format!(
                "unknown intent action `{other}`"
            ))),
        }
    }
}

/// An action about to call a provider.
#[derive(Debug, Clone, PartialEq)]
pub struct NewIntent {
    pub address: Address,
    pub action: IntentAction,
    pub client_token: String,
    /// The row to write on success (creates and updates), without `cloud_id` and `outputs`.
    pub payload: Option<StateResource>,
}

/// A recorded intent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Intent {
    pub id: i64,
    pub serial: u64,
    pub address: Address,
    pub action: IntentAction,
    pub client_token: String,
    pub payload: Option<StateResource>,
    pub status: String,
    pub error: Option<String>,
}

/// What a finished provider call did to state.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// The resource exists as described (create, update, adopt).
    Put(Box<StateResource>),
    /// The resource with this cloud id is gone. Only that row ends: in a create-before-destroy
    /// replace, the new row of the same address stays.
    Remove { address: Address, cloud_id: String },
    /// The call failed; state is unchanged.
    Failed(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GenerationStatus {
    Complete,
    Partial,
}

/// Everything stored about one stack, row for row: what `chimera state migrate` moves between
/// backends. Rows keep their timestamps and serials; intents keep their order (not their ids,
/// which each database assigns).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StackDump {
    pub name: String,
    pub lineage: String,
    pub created_at: String,
    pub generations: Vec<GenerationRow>,
    pub resources: Vec<ResourceRow>,
    pub intents: Vec<IntentRow>,
    /// Audit entries about this stack (target `STACK` or `STACK#SERIAL`).
    pub audit: Vec<AuditRow>,
    /// Sensitive values kept sealed (envelopes, never plaintext).
    #[serde(default)]
    pub sealed: Vec<SealedRow>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct GenerationRow {
    pub serial: i64,
    pub parent: Option<i64>,
    pub created_at: String,
    pub finished_at: Option<String>,
    pub status: String,
    pub plan_hash: Option<String>,
    pub desired_hash: Option<String>,
    pub actor: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct ResourceRow {
    pub address: String,
    pub valid_from: i64,
    pub valid_to: Option<i64>,
    pub kind: String,
    pub provider: String,
    pub spec: String,
    pub spec_hash: String,
    pub outputs: String,
    pub cloud_id: String,
    pub deps: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct IntentRow {
    pub serial: i64,
    pub address: String,
    pub action: String,
    pub client_token: String,
    pub payload: Option<String>,
    pub status: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct AuditRow {
    pub time: String,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub outcome: String,
    pub details: String,
}

/// A sensitive value kept in state, sealed: an AES-256-GCM envelope (`chimera_seal`) under the
/// digest resource rows hold in the value's place (`{"$sensitive": DIGEST}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct SealedRow {
    pub digest: String,
    pub key_id: String,
    pub envelope: String,
    pub created_at: String,
}

impl SealedRow {
    pub fn new(digest: String, key_id: String, envelope: String) -> SealedRow {
        SealedRow {
            digest,
            key_id,
            envelope,
            created_at: now(),
        }
    }
}

impl From<GenerationRow> for GenerationInfo {
    fn from(r: GenerationRow) -> Self {
        GenerationInfo {
            serial: r.serial as u64,
            parent: r.parent.map(|p| p as u64),
            created_at: r.created_at,
            finished_at: r.finished_at,
            status: r.status,
            plan_hash: r.plan_hash,
            desired_hash: r.desired_hash,
            actor: r.actor,
            message: r.message,
        }
    }
}

/// The state store: one implementation per backend, chosen by URL.
#[async_trait]
pub trait StateStore: Send + Sync {
    async fn stack(&self, stack: &str) -> Result<Option<StackInfo>>;
    /// Every stack, by name.
    async fn stacks(&self) -> Result<Vec<StackInfo>>;
    /// Everything stored about a stack, read in one transaction (`None`: no such stack).
    async fn dump(&self, stack: &str) -> Result<Option<StackDump>>;
    /// Writes a dumped stack in one transaction. Fails, writing nothing, if a stack of that
    /// name exists.
    async fn restore(&self, dump: &StackDump) -> Result<()>;
    /// Current resources (rows valid now), by address.
    async fn current(&self, stack: &str) -> Result<Vec<StateResource>>;
    /// Resources as they were when generation `serial` finished.
    async fn resources_at(&self, stack: &str, serial: u64) -> Result<Vec<StateResource>>;
    async fn history(&self, stack: &str) -> Result<Vec<GenerationInfo>>;
    /// The newest generation, if any.
    async fn latest_generation(&self, stack: &str) -> Result<Option<GenerationInfo>> {
        Ok(self.history(stack).await?.pop())
    }

    /// Takes the stack's lock, or says who holds it. A lock left by a dead process on this
    /// host is taken over.
    async fn lock(&self, stack: &str, req: &LockRequest) -> Result<Lock>;
    async fn unlock(&self, lock: &Lock) -> Result<()>;
    /// Removes any lock on the stack; returns whether there was one.
    async fn force_unlock(&self, stack: &str) -> Result<bool>;

    /// Opens generation `expected + 1` if the latest is `expected` (creating the stack with
    /// `lineage` when it has none yet). Fails with `Stale` otherwise.
    async fn begin_generation(
        &self,
        lock: &Lock,
        expected: u64,
        lineage: &str,
        meta: &GenerationMeta,
    ) -> Result<u64>;
    /// In one transaction: records the results of finished calls (resource rows and intent
    /// statuses), then the intents of calls about to start (group commit); returns the new
    /// intents' ids in order. An intent is durable before its call because the caller starts
    /// no call before this returns.
    async fn record(
        &self,
        lock: &Lock,
        serial: u64,
        results: &[(i64, Outcome)],
        intents: &[NewIntent],
    ) -> Result<Vec<i64>>;

    async fn record_intents(
        &self,
        lock: &Lock,
        serial: u64,
        intents: &[NewIntent],
    ) -> Result<Vec<i64>> {
        self.record(lock, serial, &[], intents).await
    }

    async fn record_results(
        &self,
        lock: &Lock,
        serial: u64,
        results: &[(i64, Outcome)],
    ) -> Result<()> {
        self.record(lock, serial, results, &[]).await.map(|_| ())
    }

    /// In one transaction, renames resources (`moved` entries): for each `(from, to)`, ends
    /// the current row of `from`, and writes `rows` in generation `serial` — the moved rows
    /// under their `to` addresses and the rows whose references followed them. Fails, writing
    /// nothing, unless every `from` has a current row, no `to` has one, and `rows` holds each
    /// `to`. Earlier generations keep the old addresses (history is not rewritten).
    async fn record_moves(
        &self,
        lock: &Lock,
        serial: u64,
        moves: &[(Address, Address)],
        rows: &[StateResource],
    ) -> Result<()>;

    async fn finish_generation(
        &self,
        lock: &Lock,
        serial: u64,
        status: GenerationStatus,
    ) -> Result<()>;
    /// Intents left `pending` by an interrupted apply.
    async fn pending_intents(&self, stack: &str) -> Result<Vec<Intent>>;
    /// The stack's sealed sensitive values: those under `digests`, or all (`None`).
    async fn sealed(&self, stack: &str, digests: Option<&[String]>) -> Result<Vec<SealedRow>>;
    /// Keeps sealed sensitive values (replacing those under the same digests), under the
    /// stack's lock.
    async fn put_sealed(&self, lock: &Lock, values: &[SealedRow]) -> Result<()>;
    async fn audit(
        &self,
        actor: &str,
        action: &str,
        target: &str,
        outcome: &str,
        details: &str,
    ) -> Result<()>;
}

/// Opens a state store from a URL: `sqlite://PATH` or `postgres://USER@HOST:PORT/DB`.
pub async fn open(url: &str) -> Result<Box<dyn StateStore>> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        return Ok(Box::new(
            SqliteStore::open(std::path::Path::new(path)).await?,
        ));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(Box::new(PgStore::open(url).await?));
    }
    Err(StateError::Invalid(format!(
        "unsupported state URL `{}`: use sqlite://PATH or postgres://USER@HOST:PORT/DATABASE",
        postgres::redact(url)
    )))
}

/// A state URL fit to print: without its password.
pub fn redact_url(url: &str) -> String {
    postgres::redact(url)
}

pub(crate) fn now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

pub(crate) fn this_host() -> String {
    hostname::get()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "unknown-host".into())
}

/// A fresh random-enough id (lineage, lock id): time, pid and a counter, hashed.
pub fn new_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = chimera_model::hash::Hasher::new();
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    h.part(&nanos.to_le_bytes())
        .part(&std::process::id().to_le_bytes())
        .part(&COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes())
        .part(this_host().as_bytes());
    h.finish().to_hex()[..32].to_string()
}
