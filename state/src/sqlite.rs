//! The embedded default backend: SQLite in WAL mode with `synchronous=FULL`.

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::pool::PoolConnection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, Sqlite, SqlitePool};

use crate::sql::{Backend, Dialect};
use crate::{Lock, LockRequest, Result, StateError, new_id, now, this_host};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`, and migrates it.
    pub async fn open(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(|e| {
                StateError::Invalid(format!(
                    "cannot create the state directory `{}`: {e}",
                    dir.display()
                ))
            })?;
        }
        // Two processes opening a new database at once race on creating it (WAL switch,
        // migrations): retry while the error is contention.
        let mut attempt = 0;
        loop {
            match Self::try_open(path).await {
                Ok(pool) => return Ok(SqliteStore { pool }),
                Err((_, true)) if attempt < 50 => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(20 + 10 * attempt)).await;
                }
                Err((e, _)) => return Err(e),
            }
        }
    }

    async fn try_open(path: &Path) -> std::result::Result<SqlitePool, (StateError, bool)> {
        let transient =
            |m: &str| m.contains("locked") || m.contains("busy") || m.contains("already exists");
        let opts = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .busy_timeout(Duration::from_secs(10))
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(opts)
            .await
            .map_err(|e| {
                let t = transient(&e.to_string());
                (open_error(path, e), t)
            })?;
        if let Err(e) = MIGRATOR.run(&pool).await {
            let t = transient(&e.to_string());
            return Err((
                StateError::Invalid(format!(
                    "`{}` is not a Chimera state database, or is damaged ({e}); point --state elsewhere or restore a backup",
                    path.display()
                )),
                t,
            ));
        }
        Ok(pool)
    }
}

fn open_error(path: &Path, e: sqlx::Error) -> StateError {
    StateError::Invalid(format!(
        "cannot open the state database `{}`: {e}; check that the directory is writable and the file is a SQLite database",
        path.display()
    ))
}

#[async_trait]
impl Backend for SqliteStore {
    type DB = Sqlite;
    type Writer = PoolConnection<Sqlite>;

    fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    async fn writer(&self, _lock: &Lock) -> Result<Self::Writer> {
        Ok(self.pool.acquire().await?)
    }

    async fn take_lock(&self, stack: &str, req: &LockRequest) -> Result<Lock> {
        let host = this_host();
        let pid = std::process::id() as i64;
        for _ in 0..2 {
            let lock_id = new_id();
            let inserted = sqlx::query(
                "INSERT INTO locks (stack, lock_id, owner, host, pid, started_at, operation) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(stack) DO NOTHING",
            )
            .bind(stack)
            .bind(&lock_id)
            .bind(&req.owner)
            .bind(&host)
            .bind(pid)
            .bind(now())
            .bind(&req.operation)
            .execute(&self.pool)
            .await?
            .rows_affected();
            if inserted == 1 {
                return Ok(Lock {
                    stack: stack.to_string(),
                    lock_id,
                });
            }
            let row = sqlx::query("SELECT owner, host, pid, started_at, operation, lock_id FROM locks WHERE stack = ?")
                .bind(stack)
                .fetch_optional(&self.pool)
                .await?;
            let Some(row) = row else { continue };
            let (h_host, h_pid): (String, i64) = (row.try_get("host")?, row.try_get("pid")?);
            if h_host == host && !process_alive(h_pid) {
                // Left by a process on this host that no longer runs (e.g. killed): take over.
                let stale: String = row.try_get("lock_id")?;
                sqlx::query("DELETE FROM locks WHERE stack = ? AND lock_id = ?")
                    .bind(stack)
                    .bind(stale)
                    .execute(&self.pool)
                    .await?;
                continue;
            }
            return Err(StateError::Locked(Box::new(crate::LockHolder {
                stack: stack.to_string(),
                owner: row.try_get("owner")?,
                host: h_host,
                pid: h_pid,
                operation: row.try_get("operation")?,
                since: row.try_get("started_at")?,
            })));
        }
        Err(StateError::Db(format!(
            "could not take the lock on `{stack}`"
        )))
    }

    async fn release_lock(&self, lock: &Lock) -> Result<()> {
        sqlx::query("DELETE FROM locks WHERE stack = ? AND lock_id = ?")
            .bind(&lock.stack)
            .bind(&lock.lock_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn break_lock(&self, stack: &str) -> Result<bool> {
        let n = sqlx::query("DELETE FROM locks WHERE stack = ?")
            .bind(stack)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(n > 0)
    }
}

impl Dialect for Sqlite {
    // SQLite compares text by bytes unless told otherwise.
    const BYTE_ORDER: &'static str = "";
    // A write transaction excludes every other writer already.
    const LOCK_ROW: &'static str = "";
    // A transaction reads one snapshot in WAL mode.
    const SNAPSHOT: Option<&'static str> = None;
    // `+stack` keeps the planner off the `intents_pending (stack, status)` index: find the
    // rows by id, not by scanning the stack's whole intent log.
    const STACK_BY_ID: &'static str = "+stack";
    const JSON_ROWS: &'static str = "json_each($1) AS t";
    const ID_IN: &'static str = "id IN (SELECT value FROM json_each($1))";
    type Ids = String;

    fn ids(ids: Vec<i64>) -> String {
        serde_json::to_string(&ids).unwrap_or_else(|_| "[]".into())
    }
    const ADDRESS_IN: &'static str = "address IN (SELECT value FROM json_each($1))";
    type Addresses = String;

    fn addresses(addresses: Vec<String>) -> String {
        serde_json::to_string(&addresses).unwrap_or_else(|_| "[]".into())
    }
}

fn process_alive(pid: i64) -> bool {
    // /proc/PID exists while the process runs (Linux); elsewhere assume alive (never steal).
    if cfg!(target_os = "linux") {
        Path::new(&format!("/proc/{pid}")).exists()
    } else {
        true
    }
}
