//! The embedded memory: one SQLite table, vectors as little-endian f32 blobs, similarity
//! computed in Rust over every record that passes the filter (fine for thousands of records).

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

use super::{Embedder, Filter, HashingEmbedder, Memory, MemoryError, Record, cosine, rank};

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS records (
    id TEXT PRIMARY KEY NOT NULL,
    stack TEXT NOT NULL,
    kind TEXT NOT NULL,
    resource_kind TEXT,
    text TEXT NOT NULL,
    outcome TEXT NOT NULL,
    pr INTEGER,
    created_unix INTEGER NOT NULL,
    vector BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS records_stack_kind ON records (stack, kind);";

const COLUMNS: &str = "id, stack, kind, resource_kind, text, outcome, pr, created_unix";

pub struct SqliteMemory {
    pool: SqlitePool,
    embedder: Box<dyn Embedder>,
    at: String,
}

impl SqliteMemory {
    /// Opens (creating the file and its directory if needed) the memory at `path`, usually
    /// [`default_path`](super::default_path), with the default [`HashingEmbedder`].
    pub async fn open(path: &Path) -> Result<SqliteMemory, MemoryError> {
        SqliteMemory::open_with(path, HashingEmbedder::default()).await
    }

    /// Opens the memory at `path` with another embedder. Refused when the file holds vectors
    /// of another dimension than `embedder` makes.
    pub async fn open_with(
        path: &Path,
        embedder: impl Embedder + 'static,
    ) -> Result<SqliteMemory, MemoryError> {
        let at = path.display().to_string();
        let unavailable = |e: &dyn std::fmt::Display| {
            MemoryError::Unavailable(format!(
                "cannot open the agent memory `{at}`: {e}; check that the directory is writable and the file is a SQLite database"
            ))
        };
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(|e| unavailable(&e))?;
        }
        let opts = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .busy_timeout(Duration::from_secs(10))
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal);
        let pool = SqlitePoolOptions::new()
            .max_connections(2)
            .connect_with(opts)
            .await
            .map_err(|e| unavailable(&e))?;
        sqlx::raw_sql(SCHEMA)
            .execute(&pool)
            .await
            .map_err(|e| unavailable(&e))?;
        let stored: Option<i64> = sqlx::query_scalar("SELECT length(vector) FROM records LIMIT 1")
            .fetch_optional(&pool)
            .await
            .map_err(|e| unavailable(&e))?;
        if let Some(bytes) = stored {
            let stored = usize::try_from(bytes).unwrap_or(0) / 4;
            if stored != embedder.dim() {
                return Err(MemoryError::Dimension {
                    at,
                    stored,
                    embedder: embedder.dim(),
                });
            }
        }
        Ok(SqliteMemory {
            pool,
            embedder: Box::new(embedder),
            at,
        })
    }

    fn backend(&self, e: sqlx::Error) -> MemoryError {
        MemoryError::Backend(format!("agent memory `{}`: {e}", self.at))
    }
}

#[async_trait]
impl Memory for SqliteMemory {
    async fn remember(&self, rec: Record) -> Result<String, MemoryError> {
        let rec = rec.identified();
        let pr =
            rec.pr.map(i64::try_from).transpose().map_err(|_| {
                MemoryError::Invalid(format!("`{}`: PR number out of range", rec.id))
            })?;
        let created = i64::try_from(rec.created_unix).map_err(|_| {
            MemoryError::Invalid(format!("`{}`: creation time out of range", rec.id))
        })?;
        let vector = encode(&self.embedder.embed(&rec.text));
        sqlx::query(
            "INSERT INTO records (id, stack, kind, resource_kind, text, outcome, pr, created_unix, vector)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (id) DO UPDATE SET stack = excluded.stack, kind = excluded.kind,
               resource_kind = excluded.resource_kind, text = excluded.text,
               outcome = excluded.outcome, pr = excluded.pr,
               created_unix = excluded.created_unix, vector = excluded.vector",
        )
        .bind(&rec.id)
        .bind(&rec.stack)
        .bind(rec.kind.as_str())
        .bind(&rec.resource_kind)
        .bind(&rec.text)
        .bind(&rec.outcome)
        .bind(pr)
        .bind(created)
        .bind(vector)
        .execute(&self.pool)
        .await
        .map_err(|e| self.backend(e))?;
        Ok(rec.id)
    }

    async fn recall(
        &self,
        query: &str,
        filter: &Filter,
        k: usize,
    ) -> Result<Vec<(Record, f32)>, MemoryError> {
        if k == 0 {
            return Ok(Vec::new());
        }
        let q = self.embedder.embed(query);
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS}, vector FROM records
             WHERE (?1 IS NULL OR stack = ?1) AND (?2 IS NULL OR kind = ?2)
               AND (?3 IS NULL OR resource_kind = ?3)"
        ))
        .bind(&filter.stack)
        .bind(filter.kind.map(|k| k.as_str()))
        .bind(&filter.resource_kind)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.backend(e))?;
        let mut candidates = Vec::with_capacity(rows.len());
        for row in &rows {
            let rec = record(row)?;
            let bytes: Vec<u8> = row.try_get("vector").map_err(corrupt)?;
            let v = decode(&bytes, q.len())
                .ok_or_else(|| MemoryError::Corrupt(format!("`{}`: bad vector", rec.id)))?;
            let sim = cosine(&q, &v);
            candidates.push((rec, sim));
        }
        Ok(rank(candidates, k))
    }

    async fn set_outcome(&self, id: &str, outcome: &str) -> Result<bool, MemoryError> {
        let done = sqlx::query("UPDATE records SET outcome = ? WHERE id = ?")
            .bind(outcome)
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(|e| self.backend(e))?;
        Ok(done.rows_affected() > 0)
    }

    async fn get(&self, id: &str) -> Result<Option<Record>, MemoryError> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM records WHERE id = ?"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| self.backend(e))?;
        row.as_ref().map(record).transpose()
    }
}

fn corrupt(e: sqlx::Error) -> MemoryError {
    MemoryError::Corrupt(e.to_string())
}

fn record(row: &sqlx::sqlite::SqliteRow) -> Result<Record, MemoryError> {
    let id: String = row.try_get("id").map_err(corrupt)?;
    let kind: String = row.try_get("kind").map_err(corrupt)?;
    let pr: Option<i64> = row.try_get("pr").map_err(corrupt)?;
    let created: i64 = row.try_get("created_unix").map_err(corrupt)?;
    let bad = |what: &str| MemoryError::Corrupt(format!("`{id}`: negative {what}"));
    Ok(Record {
        stack: row.try_get("stack").map_err(corrupt)?,
        kind: kind.parse()?,
        resource_kind: row.try_get("resource_kind").map_err(corrupt)?,
        text: row.try_get("text").map_err(corrupt)?,
        outcome: row.try_get("outcome").map_err(corrupt)?,
        pr: pr
            .map(u64::try_from)
            .transpose()
            .map_err(|_| bad("PR number"))?,
        created_unix: u64::try_from(created).map_err(|_| bad("creation time"))?,
        id,
    })
}

fn encode(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// The vector in `bytes`, if it has exactly `dim` coordinates.
fn decode(bytes: &[u8], dim: usize) -> Option<Vec<f32>> {
    if bytes.len() != dim * 4 {
        return None;
    }
    Some(
        bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
    )
}
