//! The team backend: PostgreSQL, with the same schema as SQLite (`state/migrations_pg`).
//!
//! The stack lock is a session advisory lock held by one pinned connection (opened for the lock
//! and never returned to a pool) for the whole lock lifetime; the `locks` row names the holder
//! and its backend pid. **Every write under a lock runs on that pinned connection**, so only
//! the session holding the advisory lock can commit: if it drops (network, server restart,
//! `pg_terminate_backend`), the lock goes with it and so does any transaction in flight; the
//! write fails with `LockLost` and nothing more is committed. Each write also reads its `locks`
//! row `FOR SHARE`, so a `force-unlock` (which deletes the row, then ends the session) waits for
//! a write in flight, and a later write sees the row gone. Opening a generation is also a
//! compare-and-swap on the serial (the fencing token).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chimera_model::StateResource;
use serde_json::Value;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, Row, Transaction};
use tokio::sync::Mutex;

use crate::{
    AUDIT_COLUMNS, GENERATION_COLUMNS, GenerationInfo, GenerationMeta, GenerationRow,
    GenerationStatus, INTENT_COLUMNS, Intent, Lock, LockRequest, NewIntent, Outcome,
    RESOURCE_COLUMNS, Result, StackDump, StackInfo, StateError, StateStore, new_id, now, this_host,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations_pg");

type Pinned = Arc<Mutex<PgConnection>>;

pub struct PgStore {
    pool: PgPool,
    options: PgConnectOptions,
    /// The pinned connection of each lock this store holds, by lock id.
    held: std::sync::Mutex<HashMap<String, Pinned>>,
}

fn pg_error(url: &str, e: sqlx::Error) -> StateError {
    let hint = match &e {
        sqlx::Error::Database(d) if d.code().as_deref() == Some("3D000") => {
            "the database does not exist: create it (`createdb NAME`) or fix the URL"
        }
        sqlx::Error::Database(d)
            if d.code().as_deref() == Some("28P01") || d.code().as_deref() == Some("28000") =>
        {
            "authentication failed: check the user and password in the URL (or PGPASSWORD)"
        }
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut => {
            "cannot reach the server: check the host and port, and that PostgreSQL is running"
        }
        _ => "check the URL",
    };
    StateError::Invalid(format!(
        "cannot open the PostgreSQL state `{}`: {e}; {hint}",
        redact(url)
    ))
}

/// The URL without its password.
pub(crate) fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let userinfo = &url[s + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// The advisory lock key of a stack.
fn lock_key(stack: &str) -> i64 {
    let h = chimera_model::hash::Hasher::new()
        .part(b"chimera-stack-lock")
        .part(stack.as_bytes())
        .finish();
    i64::from_le_bytes(h.0[..8].try_into().unwrap_or([0; 8]))
}

impl PgStore {
    /// Connects to `url` (`postgres://…`) and migrates the database.
    pub async fn open(url: &str) -> Result<Self> {
        let options: PgConnectOptions = url.parse().map_err(|e| pg_error(url, e))?;
        let options = options.disable_statement_logging();
        // One plain connection first: a wrong host, database or password fails at once with
        // the server's reason, instead of a pool timing out.
        let probe = options.connect().await.map_err(|e| pg_error(url, e))?;
        let _ = probe.close().await;
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options.clone())
            .await
            .map_err(|e| pg_error(url, e))?;
        // Concurrent first runs race on creating the schema: migrations hold an advisory lock.
        MIGRATOR.run(&pool).await?;
        Ok(PgStore {
            pool,
            options,
            held: std::sync::Mutex::new(HashMap::new()),
        })
    }

    /// The pinned connection of a lock this store holds.
    fn pinned(&self, lock: &Lock) -> Result<Pinned> {
        self.held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&lock.lock_id)
            .cloned()
            .ok_or_else(|| StateError::LockLost(lock.stack.clone()))
    }

    /// Runs one write transaction on the lock's pinned connection. A failure with the
    /// connection gone is `LockLost`: the session, its lock and the transaction ended together.
    async fn fenced<T>(
        &self,
        lock: &Lock,
        write: impl AsyncFnOnce(&mut Transaction<'_, sqlx::Postgres>) -> Result<T>,
    ) -> Result<T> {
        let pinned = self.pinned(lock)?;
        let mut conn = pinned.lock().await;
        let result = async {
            let mut tx = conn.begin().await?;
            Self::check_lock(&mut tx, lock).await?;
            let value = write(&mut tx).await?;
            tx.commit().await?;
            Ok(value)
        }
        .await;
        match result {
            Err(StateError::Db(_)) if conn.ping().await.is_err() => {
                drop(conn);
                self.held
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&lock.lock_id);
                Err(StateError::LockLost(lock.stack.clone()))
            }
            other => other,
        }
    }

    /// The lock's row is still ours; `FOR SHARE` makes a concurrent force-unlock wait for this
    /// transaction.
    async fn check_lock(tx: &mut Transaction<'_, sqlx::Postgres>, lock: &Lock) -> Result<()> {
        let held: Option<(i32,)> = sqlx::query_as(
            "SELECT backend_pid FROM locks WHERE stack = $1 AND lock_id = $2 FOR SHARE",
        )
        .bind(&lock.stack)
        .bind(&lock.lock_id)
        .fetch_optional(&mut **tx)
        .await?;
        match held {
            Some(_) => Ok(()),
            None => Err(StateError::LockLost(lock.stack.clone())),
        }
    }

    async fn rows(
        &self,
        sql: &str,
        stack: &str,
        serial: Option<u64>,
    ) -> Result<Vec<StateResource>> {
        let mut q = sqlx::query(sql).bind(stack);
        if let Some(s) = serial {
            q = q.bind(s as i64);
        }
        let rows = q.fetch_all(&self.pool).await?;
        rows.iter()
            .map(|row| {
                crate::resource_from(crate::ResourceColumns {
                    address: row.try_get("address")?,
                    spec: row.try_get("spec")?,
                    outputs: row.try_get("outputs")?,
                    deps: row.try_get("deps")?,
                    provider: row.try_get("provider")?,
                    spec_hash: row.try_get("spec_hash")?,
                    cloud_id: row.try_get("cloud_id")?,
                })
            })
            .collect()
    }
}

const CURRENT: &str =
    "SELECT * FROM resources WHERE stack = $1 AND valid_to IS NULL ORDER BY address COLLATE \"C\"";
const AT: &str = "SELECT * FROM resources WHERE stack = $1 AND valid_from <= $2 AND (valid_to IS NULL OR valid_to > $2) ORDER BY address COLLATE \"C\"";

static DUMP_SQL: std::sync::LazyLock<crate::DumpSql> = std::sync::LazyLock::new(|| {
    crate::DumpSql {
        stack: "SELECT lineage, created_at FROM stacks WHERE name = $1",
        generations: format!(
            "SELECT {GENERATION_COLUMNS} FROM generations WHERE stack = $1 ORDER BY serial"
        ),
        resources: format!(
            "SELECT {RESOURCE_COLUMNS} FROM resources WHERE stack = $1 ORDER BY address COLLATE \"C\", valid_from"
        ),
        intents: format!("SELECT {INTENT_COLUMNS} FROM intents WHERE stack = $1 ORDER BY id"),
        audit: format!(
            "SELECT {AUDIT_COLUMNS} FROM audit WHERE target = $1 OR starts_with(target, $1 || '#') ORDER BY id"
        ),
    }
});

#[async_trait]
impl StateStore for PgStore {
    async fn stack(&self, stack: &str) -> Result<Option<StackInfo>> {
        let row = sqlx::query(
            "SELECT s.lineage, (SELECT COALESCE(MAX(serial), 0) FROM generations g WHERE g.stack = s.name) AS serial FROM stacks s WHERE s.name = $1",
        )
        .bind(stack)
        .fetch_optional(&self.pool)
        .await?;
        Ok(match row {
            Some(r) => Some(StackInfo {
                name: stack.to_string(),
                lineage: r.try_get("lineage")?,
                serial: r.try_get::<i64, _>("serial")? as u64,
            }),
            None => None,
        })
    }

    async fn current(&self, stack: &str) -> Result<Vec<StateResource>> {
        self.rows(CURRENT, stack, None).await
    }

    async fn resources_at(&self, stack: &str, serial: u64) -> Result<Vec<StateResource>> {
        self.rows(AT, stack, Some(serial)).await
    }

    async fn history(&self, stack: &str) -> Result<Vec<GenerationInfo>> {
        let rows: Vec<GenerationRow> = sqlx::query_as(&DUMP_SQL.generations)
            .bind(stack)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(GenerationInfo::from).collect())
    }

    async fn stacks(&self) -> Result<Vec<StackInfo>> {
        let rows: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT s.name, s.lineage, (SELECT COALESCE(MAX(serial), 0) FROM generations g WHERE g.stack = s.name) FROM stacks s ORDER BY s.name COLLATE \"C\"",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(StackInfo::from).collect())
    }

    async fn dump(&self, stack: &str) -> Result<Option<StackDump>> {
        let mut tx = self.pool.begin().await?;
        // One snapshot for every table.
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await?;
        let dump = crate::read_dump::<sqlx::Postgres>(&mut tx, &DUMP_SQL, stack).await?;
        tx.commit().await?;
        Ok(dump)
    }

    async fn restore(&self, dump: &StackDump) -> Result<()> {
        let [generations, resources, intents, audit] = dump.batches()?;
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO stacks (name, lineage, created_at) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING",
        )
        .bind(&dump.name)
        .bind(&dump.lineage)
        .bind(&dump.created_at)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 0 {
            let (lineage,): (String,) =
                sqlx::query_as("SELECT lineage FROM stacks WHERE name = $1")
                    .bind(&dump.name)
                    .fetch_one(&mut *tx)
                    .await?;
            return Err(crate::already_exists(&dump.name, &lineage));
        }
        for (table, columns, batch, with_stack) in [
            ("generations", GENERATION_COLUMNS, &generations, true),
            ("resources", RESOURCE_COLUMNS, &resources, true),
            ("intents", INTENT_COLUMNS, &intents, true),
            ("audit", AUDIT_COLUMNS, &audit, false),
        ] {
            // Rows are inserted in the dump's order, so intents and audit entries get ids in
            // their original order.
            let fields: Vec<String> = columns
                .split(", ")
                .map(|c| match c {
                    "serial" | "parent" | "valid_from" | "valid_to" => {
                        format!("(e->>'{c}')::bigint")
                    }
                    _ => format!("e->>'{c}'"),
                })
                .collect();
            let (stack_col, stack_val, arg) = if with_stack {
                ("stack, ", "$2, ", "$1")
            } else {
                ("", "", "$1")
            };
            let sql = format!(
                "INSERT INTO {table} ({stack_col}{columns}) SELECT {stack_val}{} \
                 FROM jsonb_array_elements({arg}::jsonb) WITH ORDINALITY AS t(e, n) ORDER BY n",
                fields.join(", ")
            );
            let mut q = sqlx::query(&sql).bind(batch);
            if with_stack {
                q = q.bind(&dump.name);
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn lock(&self, stack: &str, req: &LockRequest) -> Result<Lock> {
        // One connection for the lock's whole life, never from the pool.
        let mut conn = self.options.connect().await?;
        let (got,): (bool,) = sqlx::query_as("SELECT pg_try_advisory_lock($1)")
            .bind(lock_key(stack))
            .fetch_one(&mut conn)
            .await?;
        if !got {
            let _ = conn.close().await;
            // The holder writes its row right after taking the advisory lock: give it a moment.
            let mut row = None;
            for _ in 0..20 {
                row = sqlx::query(
                    "SELECT owner, host, pid, started_at, operation FROM locks WHERE stack = $1",
                )
                .bind(stack)
                .fetch_optional(&self.pool)
                .await?;
                if row.is_some() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            return Err(match row {
                Some(row) => StateError::Locked(Box::new(crate::LockHolder {
                    stack: stack.to_string(),
                    owner: row.try_get("owner")?,
                    host: row.try_get("host")?,
                    pid: row.try_get("pid")?,
                    operation: row.try_get("operation")?,
                    since: row.try_get("started_at")?,
                })),
                None => StateError::Locked(Box::new(crate::LockHolder {
                    stack: stack.to_string(),
                    owner: "another session".into(),
                    host: "unknown".into(),
                    pid: 0,
                    operation: "starting".into(),
                    since: now(),
                })),
            });
        }
        // Holding the advisory lock: any row left is from a session that is gone.
        let lock_id = new_id();
        sqlx::query(
            "INSERT INTO locks (stack, lock_id, owner, host, pid, started_at, operation, backend_pid) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, pg_backend_pid()) \
             ON CONFLICT (stack) DO UPDATE SET lock_id = excluded.lock_id, owner = excluded.owner, host = excluded.host, \
             pid = excluded.pid, started_at = excluded.started_at, operation = excluded.operation, backend_pid = excluded.backend_pid",
        )
        .bind(stack)
        .bind(&lock_id)
        .bind(&req.owner)
        .bind(this_host())
        .bind(std::process::id() as i64)
        .bind(now())
        .bind(&req.operation)
        .execute(&mut conn)
        .await?;
        self.held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(lock_id.clone(), Arc::new(Mutex::new(conn)));
        Ok(Lock {
            stack: stack.to_string(),
            lock_id,
        })
    }

    async fn unlock(&self, lock: &Lock) -> Result<()> {
        sqlx::query("DELETE FROM locks WHERE stack = $1 AND lock_id = $2")
            .bind(&lock.stack)
            .bind(&lock.lock_id)
            .execute(&self.pool)
            .await?;
        let pinned = self
            .held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&lock.lock_id);
        if let Some(pinned) = pinned {
            let mut conn = pinned.lock().await;
            let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
                .bind(lock_key(&lock.stack))
                .execute(&mut *conn)
                .await;
            drop(conn);
            if let Ok(conn) = Arc::try_unwrap(pinned) {
                let _ = conn.into_inner().close().await;
            }
        }
        Ok(())
    }

    async fn force_unlock(&self, stack: &str) -> Result<bool> {
        // The holder's session keeps the advisory lock while it lives: end that session.
        let row: Option<(i32,)> =
            sqlx::query_as("DELETE FROM locks WHERE stack = $1 RETURNING backend_pid")
                .bind(stack)
                .fetch_optional(&self.pool)
                .await?;
        if let Some((backend,)) = row {
            // Waits (up to 5 s) until that session is gone and its advisory lock with it.
            let _ = sqlx::query("SELECT pg_terminate_backend($1, 5000)")
                .bind(backend)
                .execute(&self.pool)
                .await;
        }
        Ok(row.is_some())
    }

    async fn begin_generation(
        &self,
        lock: &Lock,
        expected: u64,
        lineage: &str,
        meta: &GenerationMeta,
    ) -> Result<u64> {
        self.fenced(lock, async |tx| {
        let stack = &lock.stack;
        let existing: Option<(String,)> =
            sqlx::query_as("SELECT lineage FROM stacks WHERE name = $1")
                .bind(stack)
                .fetch_optional(&mut **tx)
                .await?;
        match existing {
            None => {
                sqlx::query("INSERT INTO stacks (name, lineage, created_at) VALUES ($1, $2, $3)")
                    .bind(stack)
                    .bind(lineage)
                    .bind(now())
                    .execute(&mut **tx)
                    .await?;
            }
            Some((l,)) if l != lineage => {
                return Err(StateError::Invalid(format!(
                    "stack `{stack}` has lineage {l}, not {lineage}: this plan was made for another stack with the same name"
                )));
            }
            Some(_) => {}
        }
        let (latest,): (i64,) = sqlx::query_as(
            "SELECT COALESCE(MAX(serial), 0)::BIGINT FROM generations WHERE stack = $1",
        )
        .bind(stack)
        .fetch_one(&mut **tx)
        .await?;
        if latest as u64 != expected {
            return Err(StateError::Stale {
                stack: stack.clone(),
                expected,
                found: latest as u64,
            });
        }
        let serial = expected + 1;
        sqlx::query(
            "INSERT INTO generations (stack, serial, parent, created_at, status, plan_hash, desired_hash, actor, message) VALUES ($1, $2, $3, $4, 'applying', $5, $6, $7, $8)",
        )
        .bind(stack)
        .bind(serial as i64)
        .bind(if expected == 0 { None } else { Some(expected as i64) })
        .bind(now())
        .bind(&meta.plan_hash)
        .bind(&meta.desired_hash)
        .bind(&meta.actor)
        .bind(&meta.message)
        .execute(&mut **tx)
        .await?;
        Ok(serial)
        })
        .await
    }

    async fn record(
        &self,
        lock: &Lock,
        serial: u64,
        results: &[(i64, Outcome)],
        intents: &[NewIntent],
    ) -> Result<Vec<i64>> {
        self.fenced(lock, async |tx| {
            write_results(tx, &lock.stack, serial, results).await?;
            write_intents(tx, &lock.stack, serial, intents).await
        })
        .await
    }

    async fn finish_generation(
        &self,
        lock: &Lock,
        serial: u64,
        status: GenerationStatus,
    ) -> Result<()> {
        let status = match status {
            GenerationStatus::Complete => "complete",
            GenerationStatus::Partial => "partial",
        };
        self.fenced(lock, async |tx| {
            sqlx::query(
                "UPDATE generations SET status = $1, finished_at = $2 WHERE stack = $3 AND serial = $4",
            )
            .bind(status)
            .bind(now())
            .bind(&lock.stack)
            .bind(serial as i64)
            .execute(&mut **tx)
            .await?;
            Ok(())
        })
        .await
    }

    async fn pending_intents(&self, stack: &str) -> Result<Vec<Intent>> {
        let rows = sqlx::query(
            "SELECT * FROM intents WHERE stack = $1 AND status = 'pending' ORDER BY id",
        )
        .bind(stack)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                crate::intent_from(crate::IntentColumns {
                    id: r.try_get("id")?,
                    serial: r.try_get("serial")?,
                    address: r.try_get("address")?,
                    action: r.try_get("action")?,
                    client_token: r.try_get("client_token")?,
                    payload: r.try_get("payload")?,
                    status: r.try_get("status")?,
                    error: r.try_get("error")?,
                })
            })
            .collect()
    }

    async fn audit(
        &self,
        actor: &str,
        action: &str,
        target: &str,
        outcome: &str,
        details: &str,
    ) -> Result<()> {
        sqlx::query("INSERT INTO audit (time, actor, action, target, outcome, details) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(now())
            .bind(actor)
            .bind(action)
            .bind(target)
            .bind(outcome)
            .bind(details)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

async fn write_results(
    tx: &mut Transaction<'_, sqlx::Postgres>,
    stack: &str,
    serial: u64,
    results: &[(i64, Outcome)],
) -> Result<()> {
    let t = now();
    let serial = serial as i64;
    for (_, outcome) in results {
        if let Outcome::Remove { address, cloud_id } = outcome {
            let a = address.to_string();
            sqlx::query("DELETE FROM resources WHERE stack = $1 AND address = $2 AND cloud_id = $3 AND valid_from = $4")
                .bind(stack)
                .bind(&a)
                .bind(cloud_id)
                .bind(serial)
                .execute(&mut **tx)
                .await?;
            sqlx::query("UPDATE resources SET valid_to = $1 WHERE stack = $2 AND address = $3 AND cloud_id = $4 AND valid_to IS NULL")
                .bind(serial)
                .bind(stack)
                .bind(&a)
                .bind(cloud_id)
                .execute(&mut **tx)
                .await?;
        }
    }
    let puts: Vec<Value> = results
        .iter()
        .filter_map(|(_, o)| match o {
            Outcome::Put(r) => Some(serde_json::json!({
                "a": r.address.to_string(),
                "k": r.address.kind.as_str(),
                "p": r.provider.as_str(),
                "s": crate::spec_json(r),
                "h": r.hash.to_hex(),
                "o": Value::Object(r.outputs.clone()).to_string(),
                "c": r.cloud_id,
                "d": serde_json::to_string(&r.deps).unwrap_or_else(|_| "[]".into()),
            })),
            _ => None,
        })
        .collect();
    if !puts.is_empty() {
        let batch = Value::Array(puts).to_string();
        sqlx::query(
            "UPDATE resources SET valid_to = $1 WHERE stack = $2 AND valid_to IS NULL AND valid_from < $1 \
             AND address IN (SELECT e->>'a' FROM jsonb_array_elements($3::jsonb) e)",
        )
        .bind(serial)
        .bind(stack)
        .bind(&batch)
        .execute(&mut **tx)
        .await?;
        sqlx::query(
            "INSERT INTO resources (stack, address, valid_from, valid_to, kind, provider, spec, spec_hash, outputs, cloud_id, deps) \
             SELECT $1, e->>'a', $2, NULL, e->>'k', e->>'p', e->>'s', e->>'h', e->>'o', e->>'c', e->>'d' \
             FROM jsonb_array_elements($3::jsonb) e \
             ON CONFLICT (stack, address, valid_from) DO UPDATE SET valid_to = NULL, kind = excluded.kind, provider = excluded.provider, \
             spec = excluded.spec, spec_hash = excluded.spec_hash, outputs = excluded.outputs, cloud_id = excluded.cloud_id, deps = excluded.deps",
        )
        .bind(stack)
        .bind(serial)
        .bind(&batch)
        .execute(&mut **tx)
        .await?;
    }
    let succeeded: Vec<i64> = results
        .iter()
        .filter(|(_, o)| !matches!(o, Outcome::Failed(_)))
        .map(|(id, _)| *id)
        .collect();
    if !succeeded.is_empty() {
        sqlx::query("UPDATE intents SET status = 'succeeded', finished_at = $1 WHERE stack = $2 AND id = ANY($3)")
            .bind(&t)
            .bind(stack)
            .bind(&succeeded)
            .execute(&mut **tx)
            .await?;
    }
    for (id, outcome) in results {
        if let Outcome::Failed(e) = outcome {
            sqlx::query("UPDATE intents SET status = 'failed', finished_at = $1, error = $2 WHERE id = $3 AND stack = $4")
                .bind(&t)
                .bind(e)
                .bind(id)
                .bind(stack)
                .execute(&mut **tx)
                .await?;
        }
    }
    Ok(())
}

async fn write_intents(
    tx: &mut Transaction<'_, sqlx::Postgres>,
    stack: &str,
    serial: u64,
    intents: &[NewIntent],
) -> Result<Vec<i64>> {
    if intents.is_empty() {
        return Ok(Vec::new());
    }
    let batch: Vec<Value> = intents
        .iter()
        .map(|i| {
            serde_json::json!({
                "a": i.address.to_string(),
                "x": i.action.as_str(),
                "t": i.client_token,
                "p": i.payload.as_ref().map(|p| serde_json::to_string(p).unwrap_or_default()),
            })
        })
        .collect();
    let mut ids: Vec<i64> = sqlx::query_scalar(
        "INSERT INTO intents (stack, serial, address, action, client_token, payload, status, started_at) \
         SELECT $1, $2, e->>'a', e->>'x', e->>'t', e->>'p', 'pending', $3 \
         FROM jsonb_array_elements($4::jsonb) WITH ORDINALITY AS t(e, n) ORDER BY n RETURNING id",
    )
    .bind(stack)
    .bind(serial as i64)
    .bind(now())
    .bind(Value::Array(batch).to_string())
    .fetch_all(&mut **tx)
    .await?;
    // A sequence hands out ids in insertion order; RETURNING's own order is unspecified.
    ids.sort_unstable();
    Ok(ids)
}

#[cfg(test)]
mod tests {
    #[test]
    fn urls_lose_their_passwords() {
        assert_eq!(
            super::redact("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(super::redact("postgres://u@h/db"), "postgres://u@h/db");
    }
}
