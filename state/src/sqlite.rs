//! The embedded default backend: SQLite in WAL mode with `synchronous=FULL`.

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use chimera_model::StateResource;
use serde_json::Value;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool, Transaction};

use crate::{
    AUDIT_COLUMNS, GENERATION_COLUMNS, GenerationInfo, GenerationMeta, GenerationRow,
    GenerationStatus, INTENT_COLUMNS, Intent, Lock, LockRequest, NewIntent, Outcome,
    RESOURCE_COLUMNS, Result, StackDump, StackInfo, StateError, StateStore, new_id, now, this_host,
};

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

    async fn check_lock(tx: &mut Transaction<'_, sqlx::Sqlite>, lock: &Lock) -> Result<()> {
        let held: Option<(String,)> = sqlx::query_as("SELECT lock_id FROM locks WHERE stack = ?")
            .bind(&lock.stack)
            .fetch_optional(&mut **tx)
            .await?;
        match held {
            Some((id,)) if id == lock.lock_id => Ok(()),
            _ => Err(StateError::LockLost(lock.stack.clone())),
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
            q = q.bind(s as i64).bind(s as i64);
        }
        let rows = q.fetch_all(&self.pool).await?;
        rows.iter().map(row_to_resource).collect()
    }
}

fn open_error(path: &Path, e: sqlx::Error) -> StateError {
    StateError::Invalid(format!(
        "cannot open the state database `{}`: {e}; check that the directory is writable and the file is a SQLite database",
        path.display()
    ))
}

fn row_to_resource(row: &sqlx::sqlite::SqliteRow) -> Result<StateResource> {
    crate::resource_from(crate::ResourceColumns {
        address: row.try_get("address")?,
        spec: row.try_get("spec")?,
        outputs: row.try_get("outputs")?,
        deps: row.try_get("deps")?,
        provider: row.try_get("provider")?,
        spec_hash: row.try_get("spec_hash")?,
        cloud_id: row.try_get("cloud_id")?,
    })
}

const CURRENT: &str =
    "SELECT * FROM resources WHERE stack = ? AND valid_to IS NULL ORDER BY address";
const AT: &str = "SELECT * FROM resources WHERE stack = ? AND valid_from <= ? AND (valid_to IS NULL OR valid_to > ?) ORDER BY address";

static DUMP_SQL: std::sync::LazyLock<crate::DumpSql> = std::sync::LazyLock::new(|| {
    crate::DumpSql {
        stack: "SELECT lineage, created_at FROM stacks WHERE name = ?",
        generations: format!(
            "SELECT {GENERATION_COLUMNS} FROM generations WHERE stack = ? ORDER BY serial"
        ),
        resources: format!(
            "SELECT {RESOURCE_COLUMNS} FROM resources WHERE stack = ? ORDER BY address, valid_from"
        ),
        intents: format!("SELECT {INTENT_COLUMNS} FROM intents WHERE stack = ? ORDER BY id"),
        audit: format!(
            "SELECT {AUDIT_COLUMNS} FROM audit WHERE target = ?1 OR substr(target, 1, length(?1) + 1) = ?1 || '#' ORDER BY id"
        ),
    }
});

#[async_trait]
impl StateStore for SqliteStore {
    async fn stack(&self, stack: &str) -> Result<Option<StackInfo>> {
        let row = sqlx::query(
            "SELECT s.lineage, (SELECT COALESCE(MAX(serial), 0) FROM generations g WHERE g.stack = s.name) AS serial FROM stacks s WHERE s.name = ?",
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
            "SELECT s.name, s.lineage, (SELECT COALESCE(MAX(serial), 0) FROM generations g WHERE g.stack = s.name) FROM stacks s ORDER BY s.name",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(StackInfo::from).collect())
    }

    async fn dump(&self, stack: &str) -> Result<Option<StackDump>> {
        // One read transaction: a consistent snapshot (WAL) even if a writer commits meanwhile.
        let mut tx = self.pool.begin().await?;
        let dump = crate::read_dump::<sqlx::Sqlite>(&mut tx, &DUMP_SQL, stack).await?;
        tx.commit().await?;
        Ok(dump)
    }

    async fn restore(&self, dump: &StackDump) -> Result<()> {
        let [generations, resources, intents, audit] = dump.batches()?;
        let mut tx = self.pool.begin().await?;
        let existing: Option<(String,)> =
            sqlx::query_as("SELECT lineage FROM stacks WHERE name = ?")
                .bind(&dump.name)
                .fetch_optional(&mut *tx)
                .await?;
        if let Some((lineage,)) = existing {
            return Err(crate::already_exists(&dump.name, &lineage));
        }
        sqlx::query("INSERT INTO stacks (name, lineage, created_at) VALUES (?, ?, ?)")
            .bind(&dump.name)
            .bind(&dump.lineage)
            .bind(&dump.created_at)
            .execute(&mut *tx)
            .await?;
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
                .map(|c| format!("json_extract(value, '$.{c}')"))
                .collect();
            let (stack_col, stack_val) = if with_stack {
                ("stack, ", "?1, ")
            } else {
                ("", "")
            };
            sqlx::query(&format!(
                "INSERT INTO {table} ({stack_col}{columns}) SELECT {stack_val}{} FROM json_each(?2) ORDER BY key",
                fields.join(", ")
            ))
            .bind(&dump.name)
            .bind(batch)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn lock(&self, stack: &str, req: &LockRequest) -> Result<Lock> {
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

    async fn unlock(&self, lock: &Lock) -> Result<()> {
        sqlx::query("DELETE FROM locks WHERE stack = ? AND lock_id = ?")
            .bind(&lock.stack)
            .bind(&lock.lock_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn force_unlock(&self, stack: &str) -> Result<bool> {
        let n = sqlx::query("DELETE FROM locks WHERE stack = ?")
            .bind(stack)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(n > 0)
    }

    async fn begin_generation(
        &self,
        lock: &Lock,
        expected: u64,
        lineage: &str,
        meta: &GenerationMeta,
    ) -> Result<u64> {
        let mut tx = self.pool.begin().await?;
        Self::check_lock(&mut tx, lock).await?;
        let stack = &lock.stack;
        let existing: Option<(String,)> =
            sqlx::query_as("SELECT lineage FROM stacks WHERE name = ?")
                .bind(stack)
                .fetch_optional(&mut *tx)
                .await?;
        match existing {
            None => {
                sqlx::query("INSERT INTO stacks (name, lineage, created_at) VALUES (?, ?, ?)")
                    .bind(stack)
                    .bind(lineage)
                    .bind(now())
                    .execute(&mut *tx)
                    .await?;
            }
            Some((l,)) if l != lineage => {
                return Err(StateError::Invalid(format!(
                    "stack `{stack}` has lineage {l}, not {lineage}: this plan was made for another stack with the same name"
                )));
            }
            Some(_) => {}
        }
        let (latest,): (i64,) =
            sqlx::query_as("SELECT COALESCE(MAX(serial), 0) FROM generations WHERE stack = ?")
                .bind(stack)
                .fetch_one(&mut *tx)
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
            "INSERT INTO generations (stack, serial, parent, created_at, status, plan_hash, desired_hash, actor, message) VALUES (?, ?, ?, ?, 'applying', ?, ?, ?, ?)",
        )
        .bind(stack)
        .bind(serial as i64)
        .bind(if expected == 0 { None } else { Some(expected as i64) })
        .bind(now())
        .bind(&meta.plan_hash)
        .bind(&meta.desired_hash)
        .bind(&meta.actor)
        .bind(&meta.message)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(serial)
    }

    async fn record(
        &self,
        lock: &Lock,
        serial: u64,
        results: &[(i64, Outcome)],
        intents: &[NewIntent],
    ) -> Result<Vec<i64>> {
        let mut tx = self.pool.begin().await?;
        Self::check_lock(&mut tx, lock).await?;
        write_results(&mut tx, &lock.stack, serial, results).await?;
        let ids = write_intents(&mut tx, &lock.stack, serial, intents).await?;
        tx.commit().await?;
        Ok(ids)
    }

    async fn finish_generation(
        &self,
        lock: &Lock,
        serial: u64,
        status: GenerationStatus,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        Self::check_lock(&mut tx, lock).await?;
        let status = match status {
            GenerationStatus::Complete => "complete",
            GenerationStatus::Partial => "partial",
        };
        sqlx::query(
            "UPDATE generations SET status = ?, finished_at = ? WHERE stack = ? AND serial = ?",
        )
        .bind(status)
        .bind(now())
        .bind(&lock.stack)
        .bind(serial as i64)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn pending_intents(&self, stack: &str) -> Result<Vec<Intent>> {
        let rows =
            sqlx::query("SELECT * FROM intents WHERE stack = ? AND status = 'pending' ORDER BY id")
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
        sqlx::query("INSERT INTO audit (time, actor, action, target, outcome, details) VALUES (?, ?, ?, ?, ?, ?)")
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

fn process_alive(pid: i64) -> bool {
    // /proc/PID exists while the process runs (Linux); elsewhere assume alive (never steal).
    if cfg!(target_os = "linux") {
        Path::new(&format!("/proc/{pid}")).exists()
    } else {
        true
    }
}

// Batches travel as one JSON array bound to a constant statement (`json_each`): the statement
// is prepared once and cached, where a multi-row VALUES list is a new statement for every batch
// size (preparing it cost more than running it: ~200 µs for 10 rows).

async fn write_results(
    tx: &mut Transaction<'_, sqlx::Sqlite>,
    stack: &str,
    serial: u64,
    results: &[(i64, Outcome)],
) -> Result<()> {
    let t = now();
    let serial = serial as i64;
    // Removals (few): end exactly the row with that cloud id, or drop it if this generation
    // wrote it.
    for (_, outcome) in results {
        if let Outcome::Remove { address, cloud_id } = outcome {
            let a = address.to_string();
            sqlx::query("DELETE FROM resources WHERE stack = ? AND address = ? AND cloud_id = ? AND valid_from = ?")
                .bind(stack)
                .bind(&a)
                .bind(cloud_id)
                .bind(serial)
                .execute(&mut **tx)
                .await?;
            sqlx::query("UPDATE resources SET valid_to = ? WHERE stack = ? AND address = ? AND cloud_id = ? AND valid_to IS NULL")
                .bind(serial)
                .bind(stack)
                .bind(&a)
                .bind(cloud_id)
                .execute(&mut **tx)
                .await?;
        }
    }
    // Puts: end the rows they replace, then write this generation's rows (replacing one
    // written earlier in it).
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
            "UPDATE resources SET valid_to = ? WHERE stack = ? AND valid_to IS NULL AND valid_from < ? \
             AND address IN (SELECT json_extract(value, '$.a') FROM json_each(?))",
        )
        .bind(serial)
        .bind(stack)
        .bind(serial)
        .bind(&batch)
        .execute(&mut **tx)
        .await?;
        sqlx::query(
            "INSERT INTO resources (stack, address, valid_from, valid_to, kind, provider, spec, spec_hash, outputs, cloud_id, deps) \
             SELECT ?, json_extract(value, '$.a'), ?, NULL, json_extract(value, '$.k'), json_extract(value, '$.p'), \
             json_extract(value, '$.s'), json_extract(value, '$.h'), json_extract(value, '$.o'), json_extract(value, '$.c'), \
             json_extract(value, '$.d') FROM json_each(?) WHERE true \
             ON CONFLICT (stack, address, valid_from) DO UPDATE SET valid_to = NULL, kind = excluded.kind, provider = excluded.provider, \
             spec = excluded.spec, spec_hash = excluded.spec_hash, outputs = excluded.outputs, cloud_id = excluded.cloud_id, deps = excluded.deps",
        )
        .bind(stack)
        .bind(serial)
        .bind(&batch)
        .execute(&mut **tx)
        .await?;
    }
    // Intent statuses: successes in bulk, failures (with their errors) one by one.
    let succeeded: Vec<i64> = results
        .iter()
        .filter(|(_, o)| !matches!(o, Outcome::Failed(_)))
        .map(|(id, _)| *id)
        .collect();
    if !succeeded.is_empty() {
        // `+stack`: find the rows by id, not by scanning the stack's whole intent log.
        sqlx::query(
            "UPDATE intents SET status = 'succeeded', finished_at = ? \
             WHERE +stack = ? AND id IN (SELECT value FROM json_each(?))",
        )
        .bind(&t)
        .bind(stack)
        .bind(serde_json::to_string(&succeeded).unwrap_or_else(|_| "[]".into()))
        .execute(&mut **tx)
        .await?;
    }
    for (id, outcome) in results {
        if let Outcome::Failed(e) = outcome {
            sqlx::query("UPDATE intents SET status = 'failed', finished_at = ?, error = ? WHERE id = ? AND +stack = ?")
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
    tx: &mut Transaction<'_, sqlx::Sqlite>,
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
         SELECT ?, ?, json_extract(value, '$.a'), json_extract(value, '$.x'), json_extract(value, '$.t'), \
         json_extract(value, '$.p'), 'pending', ? FROM json_each(?) ORDER BY key RETURNING id",
    )
    .bind(stack)
    .bind(serial as i64)
    .bind(now())
    .bind(Value::Array(batch).to_string())
    .fetch_all(&mut **tx)
    .await?;
    // Ids are assigned in the order of the array; RETURNING's own order is unspecified.
    ids.sort_unstable();
    Ok(ids)
}
