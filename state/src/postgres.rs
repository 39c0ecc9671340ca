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
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, Postgres, Row};
use tokio::sync::{Mutex, OwnedMutexGuard};

use crate::sql::{Backend, Dialect};
use crate::{Lock, LockRequest, Result, StateError, new_id, now, this_host};

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
}

#[async_trait]
impl Backend for PgStore {
    type DB = Postgres;
    type Writer = OwnedMutexGuard<PgConnection>;

    fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The lock's pinned connection: only the session holding the advisory lock can commit.
    async fn writer(&self, lock: &Lock) -> Result<Self::Writer> {
        Ok(self.pinned(lock)?.lock_owned().await)
    }

    /// A write that failed with the connection gone is `LockLost`: the session, its lock and
    /// the transaction ended together.
    async fn write_failed(
        &self,
        lock: &Lock,
        mut conn: Self::Writer,
        error: StateError,
    ) -> StateError {
        if !matches!(error, StateError::Db(_)) || conn.ping().await.is_ok() {
            return error;
        }
        drop(conn);
        self.held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&lock.lock_id);
        StateError::LockLost(lock.stack.clone())
    }

    async fn take_lock(&self, stack: &str, req: &LockRequest) -> Result<Lock> {
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

    async fn release_lock(&self, lock: &Lock) -> Result<()> {
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

    async fn break_lock(&self, stack: &str) -> Result<bool> {
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
}

impl Dialect for Postgres {
    // The database's collation may not sort by bytes; SQLite does.
    const BYTE_ORDER: &'static str = " COLLATE \"C\"";
    // A force-unlock (deleting the row) waits for a write in flight, and a later write sees
    // the row gone.
    const LOCK_ROW: &'static str = " FOR SHARE";
    const SNAPSHOT: Option<&'static str> =
        Some("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY");
    const STACK_BY_ID: &'static str = "stack";
    const JSON_ROWS: &'static str =
        "jsonb_array_elements($1::jsonb) WITH ORDINALITY AS t(value, key)";
    // Binding an array measured faster than joining the rows of a JSON array (~20 ms for
    // 10,000 ids).
    const ID_IN: &'static str = "id = ANY($1)";
    type Ids = Vec<i64>;

    fn ids(ids: Vec<i64>) -> Vec<i64> {
        ids
    }
    const ADDRESS_IN: &'static str = "address = ANY($1)";
    type Addresses = Vec<String>;

    fn addresses(addresses: Vec<String>) -> Vec<String> {
        addresses
    }
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
