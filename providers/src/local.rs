//! `local`: a simulated cloud in a SQLite file (`.chimera/local-cloud.db` by default). It assigns
//! ids and addresses, tags what it creates, honours idempotency tokens, and has knobs for
//! latency, injected failures, throttling and eventual consistency. `mutate` and `remove`
//! change resources out of band, to cause drift in tests and demos.

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use chimera_model::{Kind, ProviderName};
use serde_json::{Map, Value};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

use crate::{Observed, Provider, ProviderError, Request, Result, managed_tags};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Behaviour knobs of the simulated cloud.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Knobs {
    /// Added to every call.
    pub latency: Duration,
    /// Probability (0–1) that a mutating call fails with `InjectedFailure`.
    pub failure_rate: f64,
    /// Probability (0–1) that a call is throttled (retryable).
    pub throttle_rate: f64,
    /// How long a new resource stays invisible to `read` and `find_by_token`.
    pub consistency_delay: Duration,
}

impl Knobs {
    /// Knobs from a stack's `providers.local` settings (`latency_ms`, `failure_rate`,
    /// `throttle_rate`, `consistency_ms`), overridden by `CHIMERA_LOCAL_LATENCY_MS`,
    /// `CHIMERA_LOCAL_FAILURE_RATE`, `CHIMERA_LOCAL_THROTTLE_RATE` and
    /// `CHIMERA_LOCAL_CONSISTENCY_MS` (given as a lookup: the caller owns the environment).
    pub fn from_settings(
        settings: &Value,
        env: impl Fn(&str) -> Option<String>,
    ) -> std::result::Result<Knobs, String> {
        let local = settings.get("local");
        if let Some(l) = local
            && let Some(obj) = l.as_object()
        {
            for k in obj.keys() {
                if ![
                    "latency_ms",
                    "failure_rate",
                    "throttle_rate",
                    "consistency_ms",
                ]
                .contains(&k.as_str())
                {
                    return Err(format!(
                        "unknown setting `providers.local.{k}`: the local provider takes latency_ms, failure_rate, throttle_rate, consistency_ms"
                    ));
                }
            }
        }
        Self::from_lookup(|var| {
            env(var).or_else(|| {
                let key = match var {
                    "CHIMERA_LOCAL_LATENCY_MS" => "latency_ms",
                    "CHIMERA_LOCAL_FAILURE_RATE" => "failure_rate",
                    "CHIMERA_LOCAL_THROTTLE_RATE" => "throttle_rate",
                    "CHIMERA_LOCAL_CONSISTENCY_MS" => "consistency_ms",
                    _ => return None,
                };
                local.and_then(|l| l.get(key)).map(|v| v.to_string())
            })
        })
    }

    /// Knobs from environment-style variables, given as a lookup.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> std::result::Result<Knobs, String> {
        let num = |k: &str| -> std::result::Result<Option<f64>, String> {
            match get(k) {
                None => Ok(None),
                Some(v) => v
                    .trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|x| x.is_finite() && *x >= 0.0)
                    .map(Some)
                    .ok_or_else(|| format!("{k}={v} is not a non-negative number")),
            }
        };
        let rate = |k: &str| -> std::result::Result<f64, String> {
            let r = num(k)?.unwrap_or(0.0);
            if r > 1.0 {
                return Err(format!("{k}={r} must be between 0 and 1"));
            }
            Ok(r)
        };
        Ok(Knobs {
            latency: Duration::from_secs_f64(
                num("CHIMERA_LOCAL_LATENCY_MS")?.unwrap_or(0.0) / 1000.0,
            ),
            failure_rate: rate("CHIMERA_LOCAL_FAILURE_RATE")?,
            throttle_rate: rate("CHIMERA_LOCAL_THROTTLE_RATE")?,
            consistency_delay: Duration::from_secs_f64(
                num("CHIMERA_LOCAL_CONSISTENCY_MS")?.unwrap_or(0.0) / 1000.0,
            ),
        })
    }
}

pub struct LocalCloud {
    pool: SqlitePool,
    knobs: Knobs,
}

fn db_err(e: sqlx::Error) -> ProviderError {
    let msg = e.to_string();
    if msg.contains("locked") || msg.contains("busy") {
        ProviderError::Retryable(format!("local cloud busy: {msg}"))
    } else {
        ProviderError::Failed {
            code: "LocalCloudError".into(),
            message: msg,
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn prefix(kind: Kind) -> &'static str {
    match kind {
        Kind::Network => "net",
        Kind::Subnet => "subnet",
        Kind::Firewall => "fw",
        Kind::Instance => "i",
        Kind::Volume => "vol",
    }
}

impl LocalCloud {
    pub async fn open(path: &Path, knobs: Knobs) -> std::result::Result<Self, String> {
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create `{}`: {e}", dir.display()))?;
        }
        // Two processes creating the cloud at once race on its creation: retry contention.
        let mut attempt = 0;
        let pool = loop {
            match Self::try_open(path).await {
                Ok(pool) => break pool,
                Err((_, true)) if attempt < 50 => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(20 + 10 * attempt)).await;
                }
                Err((m, _)) => return Err(m),
            }
        };
        Ok(LocalCloud { pool, knobs })
    }

    async fn try_open(path: &Path) -> std::result::Result<SqlitePool, (String, bool)> {
        let transient =
            |m: &str| m.contains("locked") || m.contains("busy") || m.contains("already exists");
        let opts = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .busy_timeout(Duration::from_secs(10))
            .journal_mode(SqliteJournalMode::Wal)
            // A killed process never loses a committed WAL transaction whatever this setting;
            // only a power loss would, and this cloud is a simulator. NORMAL saves an fsync per
            // call (1,000 creates: 1.25 s → 0.63 s, docs/benchmarks.md).
            .synchronous(SqliteSynchronous::Normal);
        // One connection: the simulated cloud serialises its own writes, like a control plane.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(opts)
            .await
            .map_err(|e| {
                let m = e.to_string();
                (
                    format!("cannot open the local cloud `{}`: {m}", path.display()),
                    transient(&m),
                )
            })?;
        if let Err(e) = MIGRATOR.run(&pool).await {
            let m = e.to_string();
            return Err((
                format!("`{}` is not a local cloud database: {m}", path.display()),
                transient(&m),
            ));
        }
        Ok(pool)
    }

    async fn weather(&self, mutating: bool) -> Result<()> {
        if !self.knobs.latency.is_zero() {
            tokio::time::sleep(self.knobs.latency).await;
        }
        if self.knobs.throttle_rate > 0.0 && fastrand::f64() < self.knobs.throttle_rate {
            return Err(ProviderError::Retryable(
                "RequestLimitExceeded: request rate exceeded".into(),
            ));
        }
        if mutating && self.knobs.failure_rate > 0.0 && fastrand::f64() < self.knobs.failure_rate {
            return Err(ProviderError::Failed {
                code: "InjectedFailure".into(),
                message: "the local cloud's failure knob failed this call".into(),
            });
        }
        Ok(())
    }

    fn row_to_observed(row: &sqlx::sqlite::SqliteRow) -> Result<Observed> {
        let parse = |col: &str| -> Result<Value> {
            let s: String = row.try_get(col).map_err(db_err)?;
            serde_json::from_str(&s).map_err(|e| ProviderError::Failed {
                code: "Corrupt".into(),
                message: e.to_string(),
            })
        };
        let kind: String = row.try_get("kind").map_err(db_err)?;
        Ok(Observed {
            cloud_id: row.try_get("id").map_err(db_err)?,
            kind: kind.parse().map_err(|e: String| ProviderError::Failed {
                code: "Corrupt".into(),
                message: e,
            })?,
            native_region: row.try_get("native_region").map_err(db_err)?,
            attrs: parse("attrs")?.as_object().cloned().unwrap_or_default(),
            outputs: parse("outputs")?.as_object().cloned().unwrap_or_default(),
            tags: serde_json::from_value(parse("tags")?).unwrap_or_default(),
        })
    }

    fn visible(&self, row: &sqlx::sqlite::SqliteRow) -> bool {
        let created: i64 = row.try_get("created_ms").unwrap_or(0);
        now_ms() - created >= self.knobs.consistency_delay.as_millis() as i64
    }

    async fn next(&self, tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>, name: &str) -> Result<i64> {
        let (v,): (i64,) = sqlx::query_as(
            "INSERT INTO counters (name, value) VALUES (?, 1) ON CONFLICT(name) DO UPDATE SET value = value + 1 RETURNING value",
        )
        .bind(name)
        .fetch_one(&mut **tx)
        .await
        .map_err(db_err)?;
        Ok(v)
    }

    /// Drift: sets attribute `key` of the resource with `cloud_id` out of band.
    pub async fn mutate(
        &self,
        cloud_id: &str,
        key: &str,
        value: Value,
    ) -> std::result::Result<(), String> {
        let row = sqlx::query("SELECT attrs FROM objects WHERE id = ?")
            .bind(cloud_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("no resource `{cloud_id}` in the local cloud"))?;
        let attrs: String = row.try_get("attrs").map_err(|e| e.to_string())?;
        let mut attrs: Map<String, Value> =
            serde_json::from_str(&attrs).map_err(|e| e.to_string())?;
        attrs.insert(key.to_string(), value);
        sqlx::query("UPDATE objects SET attrs = ? WHERE id = ?")
            .bind(Value::Object(attrs).to_string())
            .bind(cloud_id)
            .execute(&self.pool)
            .await
            .map_err(|e| e.to_string())?;
        Ok(())
    }

    /// Drift: deletes a resource out of band. Returns whether it existed.
    pub async fn remove(&self, cloud_id: &str) -> std::result::Result<bool, String> {
        let n = sqlx::query("DELETE FROM objects WHERE id = ?")
            .bind(cloud_id)
            .execute(&self.pool)
            .await
            .map_err(|e| e.to_string())?
            .rows_affected();
        Ok(n > 0)
    }

    /// Every resource in the simulated cloud.
    pub async fn all(&self) -> std::result::Result<Vec<Observed>, String> {
        let rows = sqlx::query("SELECT * FROM objects ORDER BY id")
            .fetch_all(&self.pool)
            .await
            .map_err(|e| e.to_string())?;
        rows.iter()
            .map(|r| Self::row_to_observed(r).map_err(|e| e.to_string()))
            .collect()
    }

    /// Assigns a private address inside the instance's subnet.
    async fn private_ip(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
        subnet_id: &str,
    ) -> Result<String> {
        let row = sqlx::query("SELECT attrs FROM objects WHERE id = ?")
            .bind(subnet_id)
            .fetch_optional(&mut **tx)
            .await
            .map_err(db_err)?
            .ok_or_else(|| ProviderError::Failed {
                code: "InvalidSubnetID.NotFound".into(),
                message: format!("subnet `{subnet_id}` does not exist"),
            })?;
        let attrs: String = row.try_get("attrs").map_err(db_err)?;
        let attrs: Value = serde_json::from_str(&attrs).unwrap_or(Value::Null);
        let cidr = attrs
            .get("cidr")
            .and_then(Value::as_str)
            .unwrap_or("10.0.0.0/24");
        let (base, prefix) = cidr.split_once('/').unwrap_or(("10.0.0.0", "24"));
        let base: Ipv4Addr = base.parse().unwrap_or(Ipv4Addr::new(10, 0, 0, 0));
        let prefix: u32 = prefix.parse().unwrap_or(24).min(30);
        let n = self.next(tx, &format!("ip:{subnet_id}")).await? as u32;
        let size = 1u64 << (32 - prefix);
        if u64::from(n) + 4 >= size {
            return Err(ProviderError::Failed {
                code: "InsufficientFreeAddressesInSubnet".into(),
                message: format!("subnet `{subnet_id}` ({cidr}) has no free addresses"),
            });
        }
        Ok(Ipv4Addr::from(u32::from(base) + 3 + n).to_string())
    }
}

#[async_trait]
impl Provider for LocalCloud {
    fn name(&self) -> ProviderName {
        ProviderName::Local
    }

    async fn create(&self, req: &Request<'_>) -> Result<Observed> {
        self.weather(true).await?;
        let kind = req.address.kind;
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        if let Some(row) = sqlx::query("SELECT * FROM objects WHERE token = ?")
            .bind(req.token)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err)?
        {
            // Idempotent: the same token returns what it created.
            return Self::row_to_observed(&row);
        }
        let n = self.next(&mut tx, prefix(kind)).await?;
        let id = format!("{}-{n:08x}", prefix(kind));
        let mut outputs = Map::new();
        outputs.insert("id".into(), Value::String(id.clone()));
        if kind == Kind::Instance {
            let subnet = req
                .attrs
                .get("subnet")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let ip = self.private_ip(&mut tx, &subnet).await?;
            outputs.insert("private_ip".into(), Value::String(ip));
            let public = if req
                .attrs
                .get("public_ip")
                .and_then(Value::as_bool)
                .unwrap_or(false)
            {
                let k = self.next(&mut tx, "public-ip").await?;
                Value::String(format!("198.51.{}.{}", 100 + (k / 250) % 100, 1 + k % 250))
            } else {
                Value::Null
            };
            outputs.insert("public_ip".into(), public);
        }
        for (k, v) in req.attrs {
            if let Some(s) = v.as_str()
                && matches!(k.as_str(), "network" | "subnet" | "instance")
                && sqlx::query("SELECT 1 FROM objects WHERE id = ?")
                    .bind(s)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(db_err)?
                    .is_none()
            {
                return Err(ProviderError::Failed {
                    code: "InvalidParameterValue".into(),
                    message: format!("`{k}` refers to `{s}`, which does not exist"),
                });
            }
        }
        let tags = managed_tags(req);
        let mut attrs = req.attrs.clone();
        attrs.remove("tags");
        sqlx::query("INSERT INTO objects (id, kind, native_region, attrs, outputs, tags, token, created_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?)")
            .bind(&id)
            .bind(kind.as_str())
            .bind(req.native_region)
            .bind(Value::Object(attrs.clone()).to_string())
            .bind(Value::Object(outputs.clone()).to_string())
            .bind(serde_json::to_string(&tags).unwrap_or_default())
            .bind(req.token)
            .bind(now_ms())
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        Ok(Observed {
            cloud_id: id,
            kind,
            native_region: req.native_region.into(),
            attrs,
            outputs,
            tags,
        })
    }

    async fn read(&self, _kind: Kind, cloud_id: &str) -> Result<Option<Observed>> {
        self.weather(false).await?;
        let row = sqlx::query("SELECT * FROM objects WHERE id = ?")
            .bind(cloud_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        match row {
            Some(r) if self.visible(&r) => Self::row_to_observed(&r).map(Some),
            _ => Ok(None),
        }
    }

    async fn update(&self, req: &Request<'_>, cloud_id: &str) -> Result<Observed> {
        self.weather(true).await?;
        let mut attrs = req.attrs.clone();
        attrs.remove("tags");
        let mut tags = managed_tags(req);
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        let row = sqlx::query("SELECT * FROM objects WHERE id = ?")
            .bind(cloud_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err)?
            .ok_or_else(|| ProviderError::Failed {
                code: "NotFound".into(),
                message: format!("`{cloud_id}` does not exist"),
            })?;
        let old = Self::row_to_observed(&row)?;
        // The creation token stays: it identifies the create that made this resource.
        if let Some(t) = old.tags.get(crate::TAG_TOKEN) {
            tags.insert(crate::TAG_TOKEN.into(), t.clone());
        }
        sqlx::query("UPDATE objects SET attrs = ?, tags = ? WHERE id = ?")
            .bind(Value::Object(attrs.clone()).to_string())
            .bind(serde_json::to_string(&tags).unwrap_or_default())
            .bind(cloud_id)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        Ok(Observed { attrs, tags, ..old })
    }

    async fn delete(&self, _kind: Kind, cloud_id: &str) -> Result<()> {
        self.weather(true).await?;
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        let users: Vec<(String,)> = sqlx::query_as(
            "SELECT id FROM objects WHERE id != ? AND (json_extract(attrs, '$.network') = ? OR json_extract(attrs, '$.subnet') = ?)",
        )
        .bind(cloud_id)
        .bind(cloud_id)
        .bind(cloud_id)
        .fetch_all(&mut *tx)
        .await
        .map_err(db_err)?;
        if let Some((user,)) = users.first() {
            return Err(ProviderError::Failed {
                code: "DependencyViolation".into(),
                message: format!("`{cloud_id}` is still in use by `{user}`"),
            });
        }
        sqlx::query("DELETE FROM objects WHERE id = ?")
            .bind(cloud_id)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        Ok(())
    }

    async fn find_by_token(&self, _kind: Kind, token: &str) -> Result<Option<Observed>> {
        self.weather(false).await?;
        let row = sqlx::query("SELECT * FROM objects WHERE token = ?")
            .bind(token)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        match row {
            Some(r) if self.visible(&r) => Self::row_to_observed(&r).map(Some),
            Some(_) => Err(ProviderError::Retryable(
                "the token's resource is not consistent yet".into(),
            )),
            None => Ok(None),
        }
    }

    async fn list_managed(&self, stack: &str) -> Result<Vec<Observed>> {
        self.weather(false).await?;
        let rows = sqlx::query(
            "SELECT * FROM objects WHERE json_extract(tags, '$.\"chimera-stack\"') = ? ORDER BY id",
        )
        .bind(stack)
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        let mut out: Vec<Observed> = rows
            .iter()
            .map(Self::row_to_observed)
            .collect::<Result<_>>()?;
        out.sort_by(|a, b| {
            a.tags
                .get(crate::TAG_ADDRESS)
                .cmp(&b.tags.get(crate::TAG_ADDRESS))
        });
        Ok(out)
    }
}
