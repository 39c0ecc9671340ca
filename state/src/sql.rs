//! The state tables' algorithm, written once for every SQL backend.
//!
//! Three layers:
//! - [`Dialect`]: the few pieces of SQL the backends spell differently (byte-order collation,
//!   JSON arrays as rows, id lists, snapshot and row-lock clauses), one impl per `sqlx` driver;
//! - [`Sql`]: generations, intents, results, history, dump and restore over any `Dialect`. Its
//!   one blanket impl carries the `sqlx` bounds, so nothing else has to repeat them;
//! - [`Backend`]: what stays backend-specific: the pool, the connection a write under a lock
//!   runs on, what a failed write means for that lock, and locking itself. Every `Backend` is
//!   a [`StateStore`].
//!
//! Statements use `$N` placeholders, which both drivers bind by number.

use std::ops::DerefMut;

use async_trait::async_trait;
use chimera_model::{Address, StateResource};
use serde_json::Value;
use sqlx::{
    ColumnIndex, Connection, Database, Decode, Encode, Executor, IntoArguments, Pool, Type,
};

use crate::{
    GenerationInfo, GenerationMeta, GenerationRow, GenerationStatus, Intent, IntentAction, Lock,
    LockRequest, NewIntent, Outcome, ResourceRow, Result, SealedRow, StackDump, StackInfo,
    StateError, StateStore, now,
};

/// Column lists of the dumped tables, in the order of their row types' fields.
const GENERATION_COLUMNS: &str =
    "serial, parent, created_at, finished_at, status, plan_hash, desired_hash, actor, message";
const RESOURCE_COLUMNS: &str =
    "address, valid_from, valid_to, kind, provider, spec, spec_hash, outputs, cloud_id, deps";
const INTENT_COLUMNS: &str =
    "serial, address, action, client_token, payload, status, started_at, finished_at, error";
const AUDIT_COLUMNS: &str = "time, actor, action, target, outcome, details";
const SEALED_COLUMNS: &str = "digest, key_id, envelope, created_at";

/// The dumped tables in the order of [`StackDump::batches`]: name, columns, whether rows
/// belong to a stack through a `stack` column (audit entries name it in `target`).
const DUMPED_TABLES: [(&str, &str, bool); 5] = [
    ("generations", GENERATION_COLUMNS, true),
    ("resources", RESOURCE_COLUMNS, true),
    ("intents", INTENT_COLUMNS, true),
    ("audit", AUDIT_COLUMNS, false),
    ("sealed_values", SEALED_COLUMNS, true),
];

/// What the backends spell differently.
pub trait Dialect: Database {
    /// Follows an `ORDER BY` of text: byte order, whatever the database's collation.
    const BYTE_ORDER: &'static str;
    /// Follows the lock check's `SELECT`: how it keeps a concurrent force-unlock waiting.
    const LOCK_ROW: &'static str;
    /// Opens a read transaction that must see one snapshot of every table, if `BEGIN` alone
    /// does not.
    const SNAPSHOT: Option<&'static str>;
    /// `stack` where an intent is already found by its id.
    const STACK_BY_ID: &'static str;
    /// The JSON array bound as `$1` as rows `t(value, key)`: an element and its position.
    const JSON_ROWS: &'static str;
    /// `id` is one of the [`Dialect::Ids`] bound as `$1`.
    const ID_IN: &'static str;
    type Ids: for<'q> Encode<'q, Self> + Type<Self> + Send + 'static;
    fn ids(ids: Vec<i64>) -> Self::Ids;
    /// `address` is one of the [`Dialect::Addresses`] bound as `$1`.
    const ADDRESS_IN: &'static str;
    type Addresses: for<'q> Encode<'q, Self> + Type<Self> + Send + 'static;
    fn addresses(addresses: Vec<String>) -> Self::Addresses;
}

/// The one algorithm: every read and write of the state tables.
#[async_trait]
pub trait Sql: Dialect {
    async fn stack(pool: &Pool<Self>, stack: &str) -> Result<Option<StackInfo>>;
    async fn stacks(pool: &Pool<Self>) -> Result<Vec<StackInfo>>;
    /// Rows valid now, or when generation `at` finished.
    async fn resources(
        pool: &Pool<Self>,
        stack: &str,
        at: Option<u64>,
    ) -> Result<Vec<StateResource>>;
    async fn history(pool: &Pool<Self>, stack: &str) -> Result<Vec<GenerationInfo>>;
    async fn pending_intents(pool: &Pool<Self>, stack: &str) -> Result<Vec<Intent>>;
    async fn audit(
        pool: &Pool<Self>,
        actor: &str,
        action: &str,
        target: &str,
        outcome: &str,
        details: &str,
    ) -> Result<()>;
    async fn dump(pool: &Pool<Self>, stack: &str) -> Result<Option<StackDump>>;
    /// The stack's sealed values: those of `digests`, or all of them (`None`).
    async fn sealed(
        pool: &Pool<Self>,
        stack: &str,
        digests: Option<&[String]>,
    ) -> Result<Vec<SealedRow>>;
    /// Inserts sealed values, replacing those of the same digests.
    async fn put_sealed(
        conn: &mut Self::Connection,
        stack: &str,
        values: &[SealedRow],
    ) -> Result<()>;
    async fn restore(pool: &Pool<Self>, dump: &StackDump) -> Result<()>;

    /// Fails with `LockLost` unless `lock` still holds its stack.
    async fn check_lock(conn: &mut Self::Connection, lock: &Lock) -> Result<()>;
    async fn begin_generation(
        conn: &mut Self::Connection,
        stack: &str,
        expected: u64,
        lineage: &str,
        meta: &GenerationMeta,
    ) -> Result<u64>;
    async fn write_results(
        conn: &mut Self::Connection,
        stack: &str,
        serial: u64,
        results: &[(i64, Outcome)],
    ) -> Result<()>;
    async fn write_intents(
        conn: &mut Self::Connection,
        stack: &str,
        serial: u64,
        intents: &[NewIntent],
    ) -> Result<Vec<i64>>;
    /// Ends the current rows of `rows`' addresses and writes `rows` in generation `serial`
    /// (replacing a row written earlier in it).
    async fn put_rows(
        conn: &mut Self::Connection,
        stack: &str,
        serial: u64,
        rows: &[&StateResource],
    ) -> Result<()>;
    /// Renames: checks each `from` has a current row and its `to` none, ends the `from` rows
    /// and writes `rows` (see [`StateStore::record_moves`]).
    async fn write_moves(
        conn: &mut Self::Connection,
        stack: &str,
        serial: u64,
        moves: &[(Address, Address)],
        rows: &[StateResource],
    ) -> Result<()>;
    async fn finish_generation(
        conn: &mut Self::Connection,
        stack: &str,
        serial: u64,
        status: GenerationStatus,
    ) -> Result<()>;
}

// What the algorithm asks of a driver. Bounds like these are not implied by a trait's own
// where clause, so they are stated once here and everything else only asks for `Sql`.
#[async_trait]
impl<DB> Sql for DB
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> Option<&'q str>: Encode<'q, DB>,
    i64: for<'q> Encode<'q, DB> + for<'r> Decode<'r, DB> + Type<DB>,
    Option<i64>: for<'q> Encode<'q, DB>,
    String: for<'r> Decode<'r, DB> + Type<DB>,
    usize: ColumnIndex<DB::Row>,
    for<'n> &'n str: ColumnIndex<DB::Row>,
{
    async fn stack(pool: &Pool<Self>, stack: &str) -> Result<Option<StackInfo>> {
        let row: Option<(String, i64)> = sqlx::query_as(
            "SELECT s.lineage, (SELECT COALESCE(MAX(serial), 0) FROM generations g WHERE g.stack = s.name) FROM stacks s WHERE s.name = $1",
        )
        .bind(stack)
        .fetch_optional(pool)
        .await?;
        Ok(row.map(|(lineage, serial)| (stack.to_string(), lineage, serial).into()))
    }

    async fn stacks(pool: &Pool<Self>) -> Result<Vec<StackInfo>> {
        let rows: Vec<(String, String, i64)> = sqlx::query_as(&format!(
            "SELECT s.name, s.lineage, (SELECT COALESCE(MAX(serial), 0) FROM generations g WHERE g.stack = s.name) FROM stacks s ORDER BY s.name{}",
            DB::BYTE_ORDER
        ))
        .fetch_all(pool)
        .await?;
        Ok(rows.into_iter().map(StackInfo::from).collect())
    }

    async fn resources(
        pool: &Pool<Self>,
        stack: &str,
        at: Option<u64>,
    ) -> Result<Vec<StateResource>> {
        let valid = match at {
            None => "valid_to IS NULL",
            Some(_) => "valid_from <= $2 AND (valid_to IS NULL OR valid_to > $2)",
        };
        let sql = format!(
            "SELECT {RESOURCE_COLUMNS} FROM resources WHERE stack = $1 AND {valid} ORDER BY address{}",
            DB::BYTE_ORDER
        );
        let mut q = sqlx::query_as(&sql).bind(stack);
        if let Some(serial) = at {
            q = q.bind(serial as i64);
        }
        let rows: Vec<ResourceRow> = q.fetch_all(pool).await?;
        rows.into_iter().map(resource_from).collect()
    }

    async fn history(pool: &Pool<Self>, stack: &str) -> Result<Vec<GenerationInfo>> {
        let rows: Vec<GenerationRow> = sqlx::query_as(&format!(
            "SELECT {GENERATION_COLUMNS} FROM generations WHERE stack = $1 ORDER BY serial"
        ))
        .bind(stack)
        .fetch_all(pool)
        .await?;
        Ok(rows.into_iter().map(GenerationInfo::from).collect())
    }

    async fn pending_intents(pool: &Pool<Self>, stack: &str) -> Result<Vec<Intent>> {
        let rows: Vec<IntentColumns> = sqlx::query_as(
            "SELECT id, serial, address, action, client_token, payload, status, error FROM intents \
             WHERE stack = $1 AND status = 'pending' ORDER BY id",
        )
        .bind(stack)
        .fetch_all(pool)
        .await?;
        rows.into_iter().map(intent_from).collect()
    }

    async fn audit(
        pool: &Pool<Self>,
        actor: &str,
        action: &str,
        target: &str,
        outcome: &str,
        details: &str,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO audit (time, actor, action, target, outcome, details) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(now().as_str())
        .bind(actor)
        .bind(action)
        .bind(target)
        .bind(outcome)
        .bind(details)
        .execute(pool)
        .await?;
        Ok(())
    }

    async fn dump(pool: &Pool<Self>, stack: &str) -> Result<Option<StackDump>> {
        // One read transaction, so that a writer committing meanwhile is seen in no table or
        // in all of them.
        let mut tx = pool.begin().await?;
        if let Some(snapshot) = DB::SNAPSHOT {
            sqlx::query(snapshot).execute(&mut *tx).await?;
        }
        let Some((lineage, created_at)): Option<(String, String)> =
            sqlx::query_as("SELECT lineage, created_at FROM stacks WHERE name = $1")
                .bind(stack)
                .fetch_optional(&mut *tx)
                .await?
        else {
            return Ok(None);
        };
        let order = DB::BYTE_ORDER;
        let dump = StackDump {
            name: stack.to_string(),
            lineage,
            created_at,
            generations: sqlx::query_as(&format!(
                "SELECT {GENERATION_COLUMNS} FROM generations WHERE stack = $1 ORDER BY serial"
            ))
            .bind(stack)
            .fetch_all(&mut *tx)
            .await?,
            resources: sqlx::query_as(&format!(
                "SELECT {RESOURCE_COLUMNS} FROM resources WHERE stack = $1 ORDER BY address{order}, valid_from"
            ))
            .bind(stack)
            .fetch_all(&mut *tx)
            .await?,
            intents: sqlx::query_as(&format!(
                "SELECT {INTENT_COLUMNS} FROM intents WHERE stack = $1 ORDER BY id"
            ))
            .bind(stack)
            .fetch_all(&mut *tx)
            .await?,
            // Not `LIKE`: a stack name may hold `_` or `%`.
            audit: sqlx::query_as(&format!(
                "SELECT {AUDIT_COLUMNS} FROM audit \
                 WHERE target = $1 OR substr(target, 1, length($1) + 1) = $1 || '#' ORDER BY id"
            ))
            .bind(stack)
            .fetch_all(&mut *tx)
            .await?,
            sealed: sqlx::query_as(&format!(
                "SELECT {SEALED_COLUMNS} FROM sealed_values WHERE stack = $1 ORDER BY digest{order}"
            ))
            .bind(stack)
            .fetch_all(&mut *tx)
            .await?,
        };
        tx.commit().await?;
        Ok(Some(dump))
    }

    async fn sealed(
        pool: &Pool<Self>,
        stack: &str,
        digests: Option<&[String]>,
    ) -> Result<Vec<SealedRow>> {
        // A stack holds one row per distinct secret value it ever applied: few, so they are
        // read whole and picked here.
        let mut rows: Vec<SealedRow> = sqlx::query_as(&format!(
            "SELECT {SEALED_COLUMNS} FROM sealed_values WHERE stack = $1 ORDER BY digest{}",
            DB::BYTE_ORDER
        ))
        .bind(stack)
        .fetch_all(pool)
        .await?;
        if let Some(digests) = digests {
            rows.retain(|r| digests.contains(&r.digest));
        }
        Ok(rows)
    }

    async fn put_sealed(
        conn: &mut Self::Connection,
        stack: &str,
        values: &[SealedRow],
    ) -> Result<()> {
        for v in values {
            sqlx::query(
                "INSERT INTO sealed_values (stack, digest, key_id, envelope, created_at) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (stack, digest) DO UPDATE \
                 SET key_id = excluded.key_id, envelope = excluded.envelope",
            )
            .bind(stack)
            .bind(v.digest.as_str())
            .bind(v.key_id.as_str())
            .bind(v.envelope.as_str())
            .bind(v.created_at.as_str())
            .execute(&mut *conn)
            .await?;
        }
        Ok(())
    }

    async fn restore(pool: &Pool<Self>, dump: &StackDump) -> Result<()> {
        let batches = dump.batches()?;
        let mut tx = pool.begin().await?;
        // Inserting first, not looking first: of two restores racing, the second waits for
        // the first and then finds its stack.
        let created: Option<(String,)> = sqlx::query_as(
            "INSERT INTO stacks (name, lineage, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO NOTHING RETURNING name",
        )
        .bind(dump.name.as_str())
        .bind(dump.lineage.as_str())
        .bind(dump.created_at.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        if created.is_none() {
            let (lineage,): (String,) =
                sqlx::query_as("SELECT lineage FROM stacks WHERE name = $1")
                    .bind(dump.name.as_str())
                    .fetch_one(&mut *tx)
                    .await?;
            return Err(already_exists(&dump.name, &lineage));
        }
        for ((table, columns, with_stack), batch) in DUMPED_TABLES.into_iter().zip(&batches) {
            let fields: Vec<String> = columns
                .split(", ")
                // `->>` gives PostgreSQL text, which an integer column does not take.
                .map(|c| match c {
                    "serial" | "parent" | "valid_from" | "valid_to" => {
                        format!("CAST(t.value ->> '{c}' AS BIGINT)")
                    }
                    _ => format!("t.value ->> '{c}'"),
                })
                .collect();
            let (stack_col, stack_val) = if with_stack {
                ("stack, ", "$2, ")
            } else {
                ("", "")
            };
            // Rows are inserted in the dump's order, so intents and audit entries get ids in
            // their original order.
            let sql = format!(
                "INSERT INTO {table} ({stack_col}{columns}) SELECT {stack_val}{} FROM {} ORDER BY t.key",
                fields.join(", "),
                DB::JSON_ROWS,
            );
            let mut q = sqlx::query(&sql).bind(batch.as_str());
            if with_stack {
                q = q.bind(dump.name.as_str());
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn check_lock(conn: &mut Self::Connection, lock: &Lock) -> Result<()> {
        let held: Option<(String,)> = sqlx::query_as(&format!(
            "SELECT lock_id FROM locks WHERE stack = $1 AND lock_id = $2{}",
            DB::LOCK_ROW
        ))
        .bind(lock.stack.as_str())
        .bind(lock.lock_id.as_str())
        .fetch_optional(&mut *conn)
        .await?;
        match held {
            Some(_) => Ok(()),
            None => Err(StateError::LockLost(lock.stack.clone())),
        }
    }

    async fn begin_generation(
        conn: &mut Self::Connection,
        stack: &str,
        expected: u64,
        lineage: &str,
        meta: &GenerationMeta,
    ) -> Result<u64> {
        let existing: Option<(String,)> =
            sqlx::query_as("SELECT lineage FROM stacks WHERE name = $1")
                .bind(stack)
                .fetch_optional(&mut *conn)
                .await?;
        match existing {
            None => {
                sqlx::query("INSERT INTO stacks (name, lineage, created_at) VALUES ($1, $2, $3)")
                    .bind(stack)
                    .bind(lineage)
                    .bind(now().as_str())
                    .execute(&mut *conn)
                    .await?;
            }
            Some((l,)) if l != lineage => {
                return Err(StateError::Invalid(format!(
                    "stack `{stack}` has lineage {l}, not {lineage}: this plan was made for another stack with the same name"
                )));
            }
            Some(_) => {}
        }
        // The compare-and-swap on the serial: the fencing token of the generation.
        let (latest,): (i64,) =
            sqlx::query_as("SELECT COALESCE(MAX(serial), 0) FROM generations WHERE stack = $1")
                .bind(stack)
                .fetch_one(&mut *conn)
                .await?;
        if latest as u64 != expected {
            return Err(StateError::Stale {
                stack: stack.to_string(),
                expected,
                found: latest as u64,
            });
        }
        let serial = expected + 1;
        sqlx::query(
            "INSERT INTO generations (stack, serial, parent, created_at, status, plan_hash, desired_hash, actor, message) \
             VALUES ($1, $2, $3, $4, 'applying', $5, $6, $7, $8)",
        )
        .bind(stack)
        .bind(serial as i64)
        .bind((expected != 0).then_some(expected as i64))
        .bind(now().as_str())
        .bind(meta.plan_hash.as_deref())
        .bind(meta.desired_hash.as_deref())
        .bind(meta.actor.as_str())
        .bind(meta.message.as_str())
        .execute(&mut *conn)
        .await?;
        Ok(serial)
    }

    // Batches travel as one JSON array bound to a constant statement: the statement is
    // prepared once and cached, where a multi-row VALUES list is a new statement for every
    // batch size (preparing it cost more than running it: ~200 µs for 10 rows in SQLite).

    async fn write_results(
        conn: &mut Self::Connection,
        stack: &str,
        serial: u64,
        results: &[(i64, Outcome)],
    ) -> Result<()> {
        let t = now();
        let serial = serial as i64;
        // Removals (few): end exactly the row with that cloud id, or drop it if this
        // generation wrote it.
        for (_, outcome) in results {
            if let Outcome::Remove { address, cloud_id } = outcome {
                let a = address.to_string();
                sqlx::query(
                    "DELETE FROM resources WHERE stack = $1 AND address = $2 AND cloud_id = $3 AND valid_from = $4",
                )
                .bind(stack)
                .bind(a.as_str())
                .bind(cloud_id.as_str())
                .bind(serial)
                .execute(&mut *conn)
                .await?;
                sqlx::query(
                    "UPDATE resources SET valid_to = $1 WHERE stack = $2 AND address = $3 AND cloud_id = $4 AND valid_to IS NULL",
                )
                .bind(serial)
                .bind(stack)
                .bind(a.as_str())
                .bind(cloud_id.as_str())
                .execute(&mut *conn)
                .await?;
            }
        }
        // Puts: end the rows they replace, then write this generation's rows (replacing one
        // written earlier in it).
        let puts: Vec<&StateResource> = results
            .iter()
            .filter_map(|(_, o)| match o {
                Outcome::Put(r) => Some(r.as_ref()),
                _ => None,
            })
            .collect();
        Self::put_rows(conn, stack, serial as u64, &puts).await?;
        // Intent statuses: successes in bulk, failures (with their errors) one by one.
        let succeeded: Vec<i64> = results
            .iter()
            .filter(|(_, o)| !matches!(o, Outcome::Failed(_)))
            .map(|(id, _)| *id)
            .collect();
        let by_id = DB::STACK_BY_ID;
        if !succeeded.is_empty() {
            sqlx::query(&format!(
                "UPDATE intents SET status = 'succeeded', finished_at = $2 WHERE {by_id} = $3 AND {}",
                DB::ID_IN
            ))
            .bind(DB::ids(succeeded))
            .bind(t.as_str())
            .bind(stack)
            .execute(&mut *conn)
            .await?;
        }
        for (id, outcome) in results {
            if let Outcome::Failed(e) = outcome {
                sqlx::query(&format!(
                    "UPDATE intents SET status = 'failed', finished_at = $1, error = $2 WHERE id = $3 AND {by_id} = $4"
                ))
                .bind(t.as_str())
                .bind(e.as_str())
                .bind(*id)
                .bind(stack)
                .execute(&mut *conn)
                .await?;
            }
        }
        Ok(())
    }

    async fn write_intents(
        conn: &mut Self::Connection,
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
        let mut ids: Vec<i64> = sqlx::query_scalar(&format!(
            "INSERT INTO intents (stack, serial, address, action, client_token, payload, status, started_at) \
             SELECT $2, $3, t.value ->> 'a', t.value ->> 'x', t.value ->> 't', t.value ->> 'p', 'pending', $4 \
             FROM {} ORDER BY t.key RETURNING id",
            DB::JSON_ROWS
        ))
        .bind(Value::Array(batch).to_string().as_str())
        .bind(stack)
        .bind(serial as i64)
        .bind(now().as_str())
        .fetch_all(&mut *conn)
        .await?;
        // Ids are handed out in insertion order, which is the array's; RETURNING's own order
        // is unspecified.
        ids.sort_unstable();
        Ok(ids)
    }

    async fn put_rows(
        conn: &mut Self::Connection,
        stack: &str,
        serial: u64,
        rows: &[&StateResource],
    ) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let serial = serial as i64;
        let mut addresses = Vec::with_capacity(rows.len());
        let puts: Vec<Value> = rows
            .iter()
            .map(|r| {
                let a = r.address.to_string();
                addresses.push(a.clone());
                serde_json::json!({
                    "a": a,
                    "k": r.address.kind.as_str(),
                    "p": r.provider.as_str(),
                    "s": spec_json(r),
                    "h": r.hash.to_hex(),
                    "o": Value::Object(r.outputs.clone()).to_string(),
                    "c": r.cloud_id,
                    "d": serde_json::to_string(&r.deps).unwrap_or_else(|_| "[]".into()),
                })
            })
            .collect();
        let batch = Value::Array(puts).to_string();
        let json_rows = DB::JSON_ROWS;
        sqlx::query(&format!(
            "UPDATE resources SET valid_to = $2 WHERE stack = $3 AND valid_to IS NULL AND valid_from < $2 AND {}",
            DB::ADDRESS_IN
        ))
        .bind(DB::addresses(addresses))
        .bind(serial)
        .bind(stack)
        .execute(&mut *conn)
        .await?;
        // `WHERE true` keeps SQLite from reading `ON CONFLICT` as a join constraint.
        sqlx::query(&format!(
            "INSERT INTO resources (stack, address, valid_from, valid_to, kind, provider, spec, spec_hash, outputs, cloud_id, deps) \
             SELECT $2, t.value ->> 'a', $3, NULL, t.value ->> 'k', t.value ->> 'p', t.value ->> 's', t.value ->> 'h', \
             t.value ->> 'o', t.value ->> 'c', t.value ->> 'd' FROM {json_rows} WHERE true \
             ON CONFLICT (stack, address, valid_from) DO UPDATE SET valid_to = NULL, kind = excluded.kind, provider = excluded.provider, \
             spec = excluded.spec, spec_hash = excluded.spec_hash, outputs = excluded.outputs, cloud_id = excluded.cloud_id, deps = excluded.deps"
        ))
        .bind(batch.as_str())
        .bind(stack)
        .bind(serial)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    async fn write_moves(
        conn: &mut Self::Connection,
        stack: &str,
        serial: u64,
        moves: &[(Address, Address)],
        rows: &[StateResource],
    ) -> Result<()> {
        if moves.is_empty() {
            return Ok(());
        }
        // Moves are few (one per `moved` entry that applies): one check and one end each.
        for (from, to) in moves {
            let (f, t) = (from.to_string(), to.to_string());
            let mut current = [0i64; 2];
            for (i, address) in [f.as_str(), t.as_str()].into_iter().enumerate() {
                let (n,): (i64,) = sqlx::query_as(
                    "SELECT COUNT(*) FROM resources WHERE stack = $1 AND address = $2 AND valid_to IS NULL",
                )
                .bind(stack)
                .bind(address)
                .fetch_one(&mut *conn)
                .await?;
                current[i] = n;
            }
            let [at_from, at_to] = current;
            if at_from == 0 || at_to != 0 {
                return Err(StateError::Invalid(format!(
                    "cannot move {from} to {to} in stack `{stack}`: state {}; plan again",
                    if at_from == 0 {
                        format!("has no {from}")
                    } else {
                        format!("already has {to}")
                    }
                )));
            }
            if !rows.iter().any(|r| r.address == *to) {
                return Err(StateError::Invalid(format!(
                    "cannot move {from} to {to}: no row for {to} was given"
                )));
            }
            sqlx::query(
                "UPDATE resources SET valid_to = $1 WHERE stack = $2 AND address = $3 AND valid_to IS NULL",
            )
            .bind(serial as i64)
            .bind(stack)
            .bind(f.as_str())
            .execute(&mut *conn)
            .await?;
        }
        let rows: Vec<&StateResource> = rows.iter().collect();
        Self::put_rows(conn, stack, serial, &rows).await
    }

    async fn finish_generation(
        conn: &mut Self::Connection,
        stack: &str,
        serial: u64,
        status: GenerationStatus,
    ) -> Result<()> {
        let status = match status {
            GenerationStatus::Complete => "complete",
            GenerationStatus::Partial => "partial",
        };
        sqlx::query(
            "UPDATE generations SET status = $1, finished_at = $2 WHERE stack = $3 AND serial = $4",
        )
        .bind(status)
        .bind(now().as_str())
        .bind(stack)
        .bind(serial as i64)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }
}

/// What stays backend-specific. Every write under a lock is one transaction on
/// [`Backend::writer`] that first checks the lock.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    type DB: Sql;
    /// The connection a write under a lock runs on, held for the write.
    type Writer: DerefMut<Target = <Self::DB as Database>::Connection> + Send;

    fn pool(&self) -> &Pool<Self::DB>;
    async fn writer(&self, lock: &Lock) -> Result<Self::Writer>;
    /// What a failed write under `lock` reports, given the connection it ran on.
    async fn write_failed(
        &self,
        _lock: &Lock,
        _writer: Self::Writer,
        error: StateError,
    ) -> StateError {
        error
    }

    async fn take_lock(&self, stack: &str, req: &LockRequest) -> Result<Lock>;
    async fn release_lock(&self, lock: &Lock) -> Result<()>;
    async fn break_lock(&self, stack: &str) -> Result<bool>;
}

/// Runs `write` as one transaction under `lock`, on the backend's writer.
async fn locked<B: Backend, T>(
    backend: &B,
    lock: &Lock,
    write: impl AsyncFnOnce(&mut <B::DB as Database>::Connection) -> Result<T>,
) -> Result<T> {
    let mut conn = backend.writer(lock).await?;
    let result = async {
        let mut tx = conn.begin().await?;
        B::DB::check_lock(&mut tx, lock).await?;
        let value = write(&mut tx).await?;
        tx.commit().await?;
        Ok(value)
    }
    .await;
    match result {
        Err(e) => Err(backend.write_failed(lock, conn, e).await),
        ok => ok,
    }
}

#[async_trait]
impl<B: Backend> StateStore for B {
    async fn stack(&self, stack: &str) -> Result<Option<StackInfo>> {
        B::DB::stack(self.pool(), stack).await
    }

    async fn stacks(&self) -> Result<Vec<StackInfo>> {
        B::DB::stacks(self.pool()).await
    }

    async fn dump(&self, stack: &str) -> Result<Option<StackDump>> {
        B::DB::dump(self.pool(), stack).await
    }

    async fn restore(&self, dump: &StackDump) -> Result<()> {
        B::DB::restore(self.pool(), dump).await
    }

    async fn current(&self, stack: &str) -> Result<Vec<StateResource>> {
        B::DB::resources(self.pool(), stack, None).await
    }

    async fn resources_at(&self, stack: &str, serial: u64) -> Result<Vec<StateResource>> {
        B::DB::resources(self.pool(), stack, Some(serial)).await
    }

    async fn history(&self, stack: &str) -> Result<Vec<GenerationInfo>> {
        B::DB::history(self.pool(), stack).await
    }

    async fn lock(&self, stack: &str, req: &LockRequest) -> Result<Lock> {
        self.take_lock(stack, req).await
    }

    async fn unlock(&self, lock: &Lock) -> Result<()> {
        self.release_lock(lock).await
    }

    async fn force_unlock(&self, stack: &str) -> Result<bool> {
        self.break_lock(stack).await
    }

    async fn begin_generation(
        &self,
        lock: &Lock,
        expected: u64,
        lineage: &str,
        meta: &GenerationMeta,
    ) -> Result<u64> {
        locked(self, lock, async |conn| {
            B::DB::begin_generation(conn, &lock.stack, expected, lineage, meta).await
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
        locked(self, lock, async |conn| {
            B::DB::write_results(conn, &lock.stack, serial, results).await?;
            B::DB::write_intents(conn, &lock.stack, serial, intents).await
        })
        .await
    }

    async fn record_moves(
        &self,
        lock: &Lock,
        serial: u64,
        moves: &[(Address, Address)],
        rows: &[StateResource],
    ) -> Result<()> {
        locked(self, lock, async |conn| {
            B::DB::write_moves(conn, &lock.stack, serial, moves, rows).await
        })
        .await
    }

    async fn finish_generation(
        &self,
        lock: &Lock,
        serial: u64,
        status: GenerationStatus,
    ) -> Result<()> {
        locked(self, lock, async |conn| {
            B::DB::finish_generation(conn, &lock.stack, serial, status).await
        })
        .await
    }

    async fn pending_intents(&self, stack: &str) -> Result<Vec<Intent>> {
        B::DB::pending_intents(self.pool(), stack).await
    }

    async fn sealed(&self, stack: &str, digests: Option<&[String]>) -> Result<Vec<SealedRow>> {
        B::DB::sealed(self.pool(), stack, digests).await
    }

    async fn put_sealed(&self, lock: &Lock, values: &[SealedRow]) -> Result<()> {
        locked(self, lock, async |conn| {
            B::DB::put_sealed(conn, &lock.stack, values).await
        })
        .await
    }

    async fn audit(
        &self,
        actor: &str,
        action: &str,
        target: &str,
        outcome: &str,
        details: &str,
    ) -> Result<()> {
        B::DB::audit(self.pool(), actor, action, target, outcome, details).await
    }
}

impl StackDump {
    /// The JSON arrays the restore statements read, one per table of `DUMPED_TABLES`.
    fn batches(&self) -> Result<[String; 5]> {
        let enc = |e: serde_json::Error| StateError::Db(format!("cannot encode the stack: {e}"));
        Ok([
            serde_json::to_string(&self.generations).map_err(enc)?,
            serde_json::to_string(&self.resources).map_err(enc)?,
            serde_json::to_string(&self.intents).map_err(enc)?,
            serde_json::to_string(&self.audit).map_err(enc)?,
            serde_json::to_string(&self.sealed).map_err(enc)?,
        ])
    }
}

fn already_exists(stack: &str, lineage: &str) -> StateError {
    StateError::Invalid(format!(
        "stack `{stack}` already exists in the destination (lineage {lineage}); nothing was written: remove it there or migrate to another database"
    ))
}

fn resource_from(row: ResourceRow) -> Result<StateResource> {
    use chimera_model::ContentHash;
    use serde_json::Map;
    use std::str::FromStr;
    let bad = |what: &str, e: &dyn std::fmt::Display| {
        StateError::Invalid(format!("corrupt state row ({what}): {e}"))
    };
    let spec: Value = serde_json::from_str(&row.spec).map_err(|e| bad("spec", &e))?;
    let outputs: Map<String, Value> =
        serde_json::from_str(&row.outputs).map_err(|e| bad("outputs", &e))?;
    let deps: Vec<Address> = serde_json::from_str(&row.deps).map_err(|e| bad("deps", &e))?;
    let get_str = |k: &str| {
        spec.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    Ok(StateResource {
        address: Address::from_str(&row.address).map_err(|e| bad("address", &e))?,
        provider: row
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
        hash: ContentHash::from_hex(&row.spec_hash).map_err(|e| bad("hash", &e))?,
        cloud_id: row.cloud_id,
        outputs,
        deps,
        prevent_destroy: spec
            .get("prevent_destroy")
            .and_then(Value::as_bool)
            .unwrap_or(false),
    })
}

/// The `spec` column: what a row holds besides its identity, outputs and dependencies.
fn spec_json(r: &StateResource) -> String {
    serde_json::json!({
        "region": r.region,
        "native_region": r.native_region,
        "attrs": r.attrs,
        "sensitive": r.sensitive,
        "prevent_destroy": r.prevent_destroy,
    })
    .to_string()
}

/// The columns of an intent as `pending_intents` reads them.
#[derive(sqlx::FromRow)]
struct IntentColumns {
    id: i64,
    serial: i64,
    address: String,
    action: String,
    client_token: String,
    payload: Option<String>,
    status: String,
    error: Option<String>,
}

fn intent_from(c: IntentColumns) -> Result<Intent> {
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
