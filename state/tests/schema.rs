//! The two migration sets (`state/migrations` for SQLite, `state/migrations_pg` for
//! PostgreSQL) must build the same schema, since one algorithm (`state/src/sql.rs`) runs on
//! both. Each database is migrated for real, its catalog read back and normalised, and the two
//! compared; the few differences made on purpose are listed in `on_purpose` and must stay
//! exactly as listed.
//!
//! Normalisation, per column:
//! - type family: SQLite's by its type affinity rules (a declared type containing `INT` is a
//!   64-bit integer, `CHAR`/`CLOB`/`TEXT` text, `BLOB` bytes, `REAL`/`FLOA`/`DOUB` real);
//!   PostgreSQL's by name: `bigint` → `int64`, `integer` → `int32`, `smallint` → `int16`,
//!   `text`/`character varying`/`character` → `text`, `bytea` → `bytes`, `real`/`double
//!   precision` → `real`. So SQLite `INTEGER` and PostgreSQL `BIGINT` agree, and a PostgreSQL
//!   `INTEGER` where SQLite holds 64 bits does not.
//! - nullable: SQLite counts a primary key column as NOT NULL, as PostgreSQL does (SQLite
//!   would let a NULL into a non-integer primary key; the store never writes one).
//! - auto: the database assigns the value and never reuses one: SQLite's `INTEGER PRIMARY KEY
//!   AUTOINCREMENT`, PostgreSQL's `BIGSERIAL` (a `nextval` default) or identity column.
//!
//! Per table, also its primary key, foreign keys, and indexes (name, columns in order,
//! uniqueness, partial-index predicate); the indexes that back primary keys are left to the
//! primary key. `_sqlx_migrations` and SQLite's own `sqlite_*` tables are not the schema.

use std::collections::{BTreeMap, BTreeSet};

use sqlx::{PgPool, SqlitePool};

#[derive(Debug, Clone, PartialEq, Eq)]
struct Column {
    name: String,
    ty: String,
    nullable: bool,
    auto: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Index {
    name: String,
    columns: Vec<String>,
    unique: bool,
    predicate: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct ForeignKey {
    columns: Vec<String>,
    table: String,
    to: Vec<String>,
}

#[derive(Debug, Default, PartialEq, Eq)]
struct Table {
    columns: Vec<Column>,
    primary_key: Vec<String>,
    foreign_keys: BTreeSet<ForeignKey>,
    indexes: BTreeSet<Index>,
}

type Schema = BTreeMap<String, Table>;

fn sqlite_type(declared: &str) -> String {
    let t = declared.to_ascii_uppercase();
    let family = if t.contains("INT") {
        "int64"
    } else if t.contains("CHAR") || t.contains("CLOB") || t.contains("TEXT") {
        "text"
    } else if t.contains("BLOB") || t.is_empty() {
        "bytes"
    } else if t.contains("REAL") || t.contains("FLOA") || t.contains("DOUB") {
        "real"
    } else {
        "numeric"
    };
    family.to_string()
}

fn pg_type(name: &str) -> String {
    match name {
        "bigint" => "int64",
        "integer" => "int32",
        "smallint" => "int16",
        "text" | "character varying" | "character" => "text",
        "bytea" => "bytes",
        "real" | "double precision" => "real",
        // Anything else is compared by its own name, and differs from every SQLite family.
        other => other,
    }
    .to_string()
}

/// `(status = 'pending'::text)` → `status = 'pending'`, as SQLite keeps it.
fn predicate(p: &str) -> String {
    let p = p.replace("::text", "");
    let p = p.trim();
    p.strip_prefix('(')
        .and_then(|p| p.strip_suffix(')'))
        .unwrap_or(p)
        .to_string()
}

async fn sqlite_schema(pool: &SqlitePool) -> Schema {
    let tables: Vec<(String, String)> = sqlx::query_as(
        "SELECT name, sql FROM sqlite_master WHERE type = 'table' \
         AND name NOT LIKE 'sqlite_%' AND name <> '_sqlx_migrations'",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let mut schema = Schema::new();
    for (table, sql) in tables {
        let mut t = Table::default();
        let columns: Vec<(String, String, bool, i64)> = sqlx::query_as(
            "SELECT name, type, \"notnull\", pk FROM pragma_table_info($1) ORDER BY cid",
        )
        .bind(&table)
        .fetch_all(pool)
        .await
        .unwrap();
        let mut pk: Vec<(i64, String)> = columns
            .iter()
            .filter(|c| c.3 > 0)
            .map(|c| (c.3, c.0.clone()))
            .collect();
        pk.sort();
        t.primary_key = pk.into_iter().map(|(_, name)| name).collect();
        // A lone `INTEGER PRIMARY KEY` is the rowid; with AUTOINCREMENT it is never reused.
        let rowid_auto = t.primary_key.len() == 1 && sql.to_uppercase().contains("AUTOINCREMENT");
        for (name, declared, not_null, pk) in columns {
            t.columns.push(Column {
                auto: rowid_auto && pk > 0 && declared.eq_ignore_ascii_case("INTEGER"),
                name,
                ty: sqlite_type(&declared),
                nullable: !not_null && pk == 0,
            });
        }
        let fks: Vec<(i64, String, String, String)> = sqlx::query_as(
            "SELECT id, \"table\", \"from\", \"to\" FROM pragma_foreign_key_list($1) ORDER BY id, seq",
        )
        .bind(&table)
        .fetch_all(pool)
        .await
        .unwrap();
        let mut by_id: BTreeMap<i64, ForeignKey> = BTreeMap::new();
        for (id, to_table, from, to) in fks {
            let fk = by_id.entry(id).or_insert_with(|| ForeignKey {
                columns: vec![],
                table: to_table,
                to: vec![],
            });
            fk.columns.push(from);
            fk.to.push(to);
        }
        t.foreign_keys = by_id.into_values().collect();
        let indexes: Vec<(String, bool, String)> =
            sqlx::query_as("SELECT name, \"unique\", origin FROM pragma_index_list($1)")
                .bind(&table)
                .fetch_all(pool)
                .await
                .unwrap();
        for (name, unique, origin) in indexes {
            if origin == "pk" {
                continue;
            }
            let columns: Vec<(String,)> =
                sqlx::query_as("SELECT name FROM pragma_index_info($1) ORDER BY seqno")
                    .bind(&name)
                    .fetch_all(pool)
                    .await
                    .unwrap();
            let (sql,): (Option<String>,) =
                sqlx::query_as("SELECT sql FROM sqlite_master WHERE type = 'index' AND name = $1")
                    .bind(&name)
                    .fetch_one(pool)
                    .await
                    .unwrap();
            let predicate = sql.and_then(|s| {
                let upper = s.to_uppercase();
                upper
                    .rfind(" WHERE ")
                    .map(|at| self::predicate(&s[at + 7..]))
            });
            t.indexes.insert(Index {
                name,
                columns: columns.into_iter().map(|(c,)| c).collect(),
                unique,
                predicate,
            });
        }
        schema.insert(table, t);
    }
    schema
}

#[derive(sqlx::FromRow)]
struct PgIndex {
    table: String,
    name: String,
    unique: bool,
    primary: bool,
    columns: Vec<String>,
    predicate: Option<String>,
}

async fn pg_schema(pool: &PgPool) -> Schema {
    let columns: Vec<(String, String, String, bool, bool)> = sqlx::query_as(
        "SELECT c.table_name::text, c.column_name::text, c.data_type::text, c.is_nullable::text = 'YES', \
         COALESCE(c.column_default::text LIKE 'nextval(%', false) OR c.is_identity::text = 'YES' \
         FROM information_schema.columns c JOIN information_schema.tables t \
         ON t.table_schema = c.table_schema AND t.table_name = c.table_name \
         WHERE c.table_schema = 'public' AND t.table_type = 'BASE TABLE' AND c.table_name <> '_sqlx_migrations' \
         ORDER BY c.table_name, c.ordinal_position",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let mut schema = Schema::new();
    for (table, name, ty, nullable, auto) in columns {
        schema.entry(table).or_default().columns.push(Column {
            name,
            ty: pg_type(&ty),
            nullable,
            auto,
        });
    }
    // The columns of an attribute-number array, in its order.
    let names = |rel: &str, nums: &str| {
        format!(
            "ARRAY(SELECT a.attname::text FROM unnest({nums}::int2[]) WITH ORDINALITY AS k(num, n) \
             JOIN pg_attribute a ON a.attrelid = {rel} AND a.attnum = k.num ORDER BY k.n)"
        )
    };
    let indexes: Vec<PgIndex> = sqlx::query_as(&format!(
        "SELECT t.relname::text AS table, i.relname::text AS name, ix.indisunique AS unique, \
         ix.indisprimary AS primary, {} AS columns, pg_get_expr(ix.indpred, ix.indrelid) AS predicate \
         FROM pg_index ix JOIN pg_class t ON t.oid = ix.indrelid JOIN pg_class i ON i.oid = ix.indexrelid \
         JOIN pg_namespace ns ON ns.oid = t.relnamespace \
         WHERE ns.nspname = 'public' AND t.relname <> '_sqlx_migrations'",
        names("t.oid", "ix.indkey")
    ))
    .fetch_all(pool)
    .await
    .unwrap();
    for i in indexes {
        let t = schema.get_mut(&i.table).expect("an index of a known table");
        if i.primary {
            t.primary_key = i.columns;
        } else {
            t.indexes.insert(Index {
                name: i.name,
                columns: i.columns,
                unique: i.unique,
                predicate: i.predicate.as_deref().map(predicate),
            });
        }
    }
    let fks: Vec<(String, Vec<String>, String, Vec<String>)> = sqlx::query_as(&format!(
        "SELECT t.relname::text, {}, r.relname::text, {} \
         FROM pg_constraint c JOIN pg_class t ON t.oid = c.conrelid JOIN pg_class r ON r.oid = c.confrelid \
         JOIN pg_namespace ns ON ns.oid = t.relnamespace WHERE c.contype = 'f' AND ns.nspname = 'public'",
        names("c.conrelid", "c.conkey"),
        names("c.confrelid", "c.confkey"),
    ))
    .fetch_all(pool)
    .await
    .unwrap();
    for (table, columns, to_table, to) in fks {
        schema
            .get_mut(&table)
            .expect("a foreign key of a known table")
            .foreign_keys
            .insert(ForeignKey {
                columns,
                table: to_table,
                to,
            });
    }
    schema
}

/// Takes out of both schemas what differs on purpose, checking that it is still exactly so.
fn on_purpose(sqlite: &mut Schema, pg: &mut Schema) {
    // PostgreSQL's lock is a session advisory lock; its row names the session that holds it.
    let locks = &mut pg.get_mut("locks").expect("locks").columns;
    let at = locks
        .iter()
        .position(|c| c.name == "backend_pid")
        .expect("locks.backend_pid in PostgreSQL");
    assert_eq!(
        locks.remove(at),
        Column {
            name: "backend_pid".into(),
            ty: "int32".into(),
            nullable: false,
            auto: false,
        }
    );
    // The index that finds a stack's pending intents: PostgreSQL indexes only the pending
    // ones (a partial index); SQLite indexes every status.
    let pending = |schema: &mut Schema| {
        let intents = &mut schema.get_mut("intents").expect("intents").indexes;
        let index = intents
            .iter()
            .find(|i| i.name == "intents_pending")
            .cloned()
            .expect("intents_pending");
        intents.remove(&index);
        (index.columns, index.predicate)
    };
    assert_eq!(
        pending(sqlite),
        (vec!["stack".to_string(), "status".to_string()], None)
    );
    assert_eq!(
        pending(pg),
        (
            vec!["stack".to_string()],
            Some("status = 'pending'".to_string())
        )
    );
}

#[tokio::test]
async fn sqlite_and_postgres_migrations_build_the_same_schema() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    chimera_state::SqliteStore::open(&path).await.unwrap();
    let sqlite = SqlitePool::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    let mut sqlite = sqlite_schema(&sqlite).await;

    // A real server, started for this test on 127.0.0.1 and stopped at the end.
    let server = chimera_testkit::Postgres::start(false);
    chimera_state::open(&server.url).await.unwrap();
    let pg = PgPool::connect(&server.url).await.unwrap();
    let mut pg = pg_schema(&pg).await;

    // The comparison below must have something to compare.
    assert!(
        [
            "stacks",
            "generations",
            "resources",
            "intents",
            "audit",
            "locks"
        ]
        .iter()
        .all(|t| sqlite.contains_key(*t)),
        "{sqlite:#?}"
    );
    on_purpose(&mut sqlite, &mut pg);
    let tables: BTreeSet<&String> = sqlite.keys().chain(pg.keys()).collect();
    for table in tables {
        assert_eq!(
            sqlite.get(table),
            pg.get(table),
            "table `{table}`: SQLite (left) and PostgreSQL (right) differ"
        );
    }
}
