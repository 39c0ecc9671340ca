//! Chimera's state: stacks with a lineage, append-only generations, temporal resource rows,
//! the intent log that makes applies crash-safe, an audit trail, and a lock per stack.
//!
//! **Architecture Invariant:** only this crate knows SQL. Every write is one transaction; a
//! generation is opened with a compare-and-swap on the serial (the fencing token), and every
//! write checks that the caller still holds the stack's lock.

pub mod conformance;
mod postgres;
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

/// Column lists of the dumped tables, in the order of their row types' fields.
pub(crate) const GENERATION_COLUMNS: &str =
    "serial, parent, created_at, finished_at, status, plan_hash, desired_hash, actor, message";
pub(crate) const RESOURCE_COLUMNS: &str =
    "address, valid_from, valid_to, kind, provider, spec, spec_hash, outputs, cloud_id, deps";
pub(crate) const INTENT_COLUMNS: &str =
    "serial, address, action, client_token, payload, status, started_at, finished_at, error";
pub(crate) const AUDIT_COLUMNS: &str = "time, actor, action, target, outcome, details";

/// The statements `read_dump` runs, in a backend's dialect: the stack row, then generations,
/// resources, intents and audit entries, each with the stack name as its only parameter.
pub(crate) struct DumpSql {
    pub stack: &'static str,
    pub generations: String,
    pub resources: String,
    pub intents: String,
    pub audit: String,
}

/// Reads a whole stack through `conn` (the caller's read transaction).
pub(crate) async fn read_dump<DB>(
    conn: &mut DB::Connection,
    sql: &DumpSql,
    stack: &str,
) -> Result<Option<StackDump>>
where
    DB: sqlx::Database,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'q> <DB as sqlx::Database>::Arguments<'q>: sqlx::IntoArguments<'q, DB>,
    for<'q> &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'r> (String, String): sqlx::FromRow<'r, DB::Row>,
    for<'r> GenerationRow: sqlx::FromRow<'r, DB::Row>,
    for<'r> ResourceRow: sqlx::FromRow<'r, DB::Row>,
    for<'r> IntentRow: sqlx::FromRow<'r, DB::Row>,
    for<'r> AuditRow: sqlx::FromRow<'r, DB::Row>,
{
    let Some((lineage, created_at)): Option<(String, String)> = sqlx::query_as(sql.stack)
        .bind(stack)
        .fetch_optional(&mut *conn)
        .await?
    else {
        return Ok(None);
    };
    Ok(Some(StackDump {
        name: stack.to_string(),
        lineage,
        created_at,
        generations: sqlx::query_as(&sql.generations)
            .bind(stack)
            .fetch_all(&mut *conn)
            .await?,
        resources: sqlx::query_as(&sql.resources)
            .bind(stack)
            .fetch_all(&mut *conn)
            .await?,
        intents: sqlx::query_as(&sql.intents)
            .bind(stack)
            .fetch_all(&mut *conn)
            .await?,
        audit: sqlx::query_as(&sql.audit)
            .bind(stack)
            .fetch_all(&mut *conn)
            .await?,
    }))
}

impl StackDump {
    /// The JSON arrays the backends' restore statements read, one per table.
    pub(crate) fn batches(&self) -> Result<[String; 4]> {
        let enc = |e: serde_json::Error| StateError::Db(format!("cannot encode the stack: {e}"));
        Ok([
            serde_json::to_string(&self.generations).map_err(enc)?,
            serde_json::to_string(&self.resources).map_err(enc)?,
            serde_json::to_string(&self.intents).map_err(enc)?,
            serde_json::to_string(&self.audit).map_err(enc)?,
        ])
    }
}

pub(crate) fn already_exists(stack: &str, lineage: &str) -> StateError {
    StateError::Invalid(format!(
        "stack `{stack}` already exists in the destination (lineage {lineage}); nothing was written: remove it there or migrate to another database"
    ))
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

    async fn finish_generation(
        &self,
        lock: &Lock,
        serial: u64,
        status: GenerationStatus,
    ) -> Result<()>;
    /// Intents left `pending` by an interrupted apply.
    async fn pending_intents(&self, stack: &str) -> Result<Vec<Intent>>;
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

/// A resource row's text columns, as every backend stores them.
pub(crate) struct ResourceColumns {
    pub address: String,
    pub spec: String,
    pub outputs: String,
    pub deps: String,
    pub provider: String,
    pub spec_hash: String,
    pub cloud_id: String,
}

pub(crate) fn resource_from(c: ResourceColumns) -> Result<StateResource> {
    use chimera_model::ContentHash;
    use serde_json::{Map, Value};
    use std::str::FromStr;
    let bad = |what: &str, e: &dyn std::fmt::Display| {
        StateError::Invalid(format!("corrupt state row ({what}): {e}"))
    };
    let spec: Value = serde_json::from_str(&c.spec).map_err(|e| bad("spec", &e))?;
    let outputs: Map<String, Value> =
        serde_json::from_str(&c.outputs).map_err(|e| bad("outputs", &e))?;
    let deps: Vec<Address> = serde_json::from_str(&c.deps).map_err(|e| bad("deps", &e))?;
    let get_str = |k: &str| {
        spec.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    Ok(StateResource {
        address: Address::from_str(&c.address).map_err(|e| bad("address", &e))?,
        provider: c
            .provider
            .parse()
            .map_err(|e: String| bad("provider", &e))?,
        region: get_str("region"),
        native_region: get_str("native_region"),
        attrs: spec
            .get("attrs")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default(),
        sensitive: spec
            .get("sensitive")
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .unwrap_or_default(),
        hash: ContentHash::from_hex(&c.spec_hash).map_err(|e| bad("hash", &e))?,
        cloud_id: c.cloud_id,
        outputs,
        deps,
        prevent_destroy: spec
            .get("prevent_destroy")
            .and_then(Value::as_bool)
            .unwrap_or(false),
    })
}

/// The `spec` column: what a row holds besides its identity, outputs and dependencies.
pub(crate) fn spec_json(r: &StateResource) -> String {
    serde_json::json!({
        "region": r.region,
        "native_region": r.native_region,
        "attrs": r.attrs,
        "sensitive": r.sensitive,
        "prevent_destroy": r.prevent_destroy,
    })
    .to_string()
}

/// An intent row's columns, as every backend stores them.
pub(crate) struct IntentColumns {
    pub id: i64,
    pub serial: i64,
    pub address: String,
    pub action: String,
    pub client_token: String,
    pub payload: Option<String>,
    pub status: String,
    pub error: Option<String>,
}

pub(crate) fn intent_from(c: IntentColumns) -> Result<Intent> {
    let payload = match c.payload {
        Some(p) => Some(
            serde_json::from_str(&p)
                .map_err(|e| StateError::Invalid(format!("corrupt intent payload: {e}")))?,
        ),
        None => None,
    };
    Ok(Intent {
        payload,
        id: c.id,
        serial: c.serial as u64,
        address: c.address.parse().map_err(StateError::Invalid)?,
        action: IntentAction::parse(&c.action)?,
        client_token: c.client_token,
        status: c.status,
        error: c.error,
    })
}
