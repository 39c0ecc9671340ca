//! `local`: a simulated cloud in a SQLite file (`.chimera/local-cloud.db` by default). It assigns
//! ids and addresses, tags what it creates, honours idempotency tokens, and has knobs for
//! latency, injected failures, throttling and eventual consistency. `mutate` and `remove`
//! change resources out of band, to cause drift in tests and demos.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use chimera_model::kinds::Spec;
use chimera_model::{Kind, ProviderName};
use serde_json::{Map, Value};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};
use tokio::sync::oneshot;

use crate::{
    CloudRef, Observed, Provider, ProviderError, Request, Result, Utilisation, Violation,
    managed_tags,
};

/// The network and subnet sizes the simulated cloud allocates: up to /28, like EC2 (it keeps
/// the first three addresses of a subnet and the last), and no larger than /8.
const BLOCK_PREFIXES: std::ops::RangeInclusive<u8> = 8..=28;

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
    creates: Arc<CreateQueue>,
}

/// Group commit for creates: concurrent creates queue here and one drainer task writes
/// everything queued in one transaction with a fixed number of statements, however many there
/// are. (One transaction per create serialised 100 concurrent creates for ~25 ms.)
struct CreateQueue {
    pool: SqlitePool,
    state: Mutex<QueueState>,
}

#[derive(Default)]
struct QueueState {
    pending: Vec<PendingCreate>,
    draining: bool,
}

struct PendingCreate {
    kind: Kind,
    spec: Spec,
    native_region: String,
    attrs: Map<String, Value>,
    tags: BTreeMap<String, String>,
    token: String,
    reply: oneshot::Sender<Result<Observed>>,
}

/// Resets the queue if the drainer stops early (its runtime shut down): waiting creates get an
/// error instead of hanging, and the next create starts a new drainer.
struct DrainGuard {
    queue: Arc<CreateQueue>,
    finished: bool,
}

impl Drop for DrainGuard {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let mut q = self.queue.state.lock().unwrap_or_else(|e| e.into_inner());
        q.draining = false;
        q.pending.clear();
    }
}

impl CreateQueue {
    fn push(self: &Arc<Self>, p: PendingCreate) {
        let mut q = self.state.lock().unwrap_or_else(|e| e.into_inner());
        q.pending.push(p);
        if !q.draining {
            q.draining = true;
            let me = self.clone();
            tokio::spawn(async move {
                let mut guard = DrainGuard {
                    queue: me.clone(),
                    finished: false,
                };
                loop {
                    let batch = {
                        let mut q = me.state.lock().unwrap_or_else(|e| e.into_inner());
                        if q.pending.is_empty() {
                            q.draining = false;
                            break;
                        }
                        std::mem::take(&mut q.pending)
                    };
                    let results = match me.write(&batch).await {
                        Ok(r) => r,
                        Err(e) => batch.iter().map(|_| Err(e.clone())).collect(),
                    };
                    for (p, r) in batch.into_iter().zip(results) {
                        let _ = p.reply.send(r);
                    }
                }
                guard.finished = true;
            });
        }
    }

    /// Creates a batch in one transaction: returns each create's result, in order.
    async fn write(&self, batch: &[PendingCreate]) -> Result<Vec<Result<Observed>>> {
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        // Idempotency: a token seen before returns what it created.
        let tokens: Vec<&str> = batch.iter().map(|p| p.token.as_str()).collect();
        let mut by_token: HashMap<String, Observed> = HashMap::new();
        for row in
            sqlx::query("SELECT * FROM objects WHERE token IN (SELECT value FROM json_each(?))")
                .bind(json_list(&tokens))
                .fetch_all(&mut *tx)
                .await
                .map_err(db_err)?
        {
            let token: String = row.try_get("token").map_err(db_err)?;
            by_token.insert(token, LocalCloud::row_to_observed(&row)?);
        }
        // Everything the batch refers to, with its attributes (a subnet's CIDR).
        let refs: Vec<&str> = batch
            .iter()
            .flat_map(|p| referenced(&p.spec).map(|(_, id)| id))
            .collect();
        let mut known: HashMap<String, Value> = HashMap::new();
        for row in sqlx::query(
            "SELECT id, attrs FROM objects WHERE id IN (SELECT value FROM json_each(?))",
        )
        .bind(json_list(&refs))
        .fetch_all(&mut *tx)
        .await
        .map_err(db_err)?
        {
            let id: String = row.try_get("id").map_err(db_err)?;
            let attrs: String = row.try_get("attrs").map_err(db_err)?;
            known.insert(id, serde_json::from_str(&attrs).unwrap_or(Value::Null));
        }
        // Which creates go ahead, and how many ids and addresses they need.
        let mut out: Vec<Option<Result<Observed>>> = Vec::with_capacity(batch.len());
        let mut seen = HashMap::new();
        let mut need: BTreeMap<String, i64> = BTreeMap::new();
        for (i, p) in batch.iter().enumerate() {
            if by_token.contains_key(&p.token) || seen.contains_key(p.token.as_str()) {
                out.push(None);
                continue;
            }
            if let Some((k, id)) = referenced(&p.spec).find(|(_, id)| !known.contains_key(*id)) {
                out.push(Some(Err(ProviderError::Failed {
                    code: "InvalidParameterValue".into(),
                    message: format!("`{k}` refers to `{id}`, which does not exist"),
                })));
                continue;
            }
            seen.insert(p.token.as_str(), i);
            *need.entry(prefix(p.kind).to_string()).or_default() += 1;
            if let Spec::Instance(i) = &p.spec {
                *need.entry(format!("ip:{}", i.subnet)).or_default() += 1;
                if i.public_ip {
                    *need.entry("public-ip".into()).or_default() += 1;
                }
            }
            out.push(None);
        }
        // One counter bump per counter: `next[name]` is the first value this batch may use.
        let mut next: HashMap<String, i64> = HashMap::new();
        for (name, n) in &need {
            let (last,): (i64,) = sqlx::query_as(
                "INSERT INTO counters (name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = value + excluded.value RETURNING value",
            )
            .bind(name)
            .bind(n)
            .fetch_one(&mut *tx)
            .await
            .map_err(db_err)?;
            next.insert(name.clone(), last - n + 1);
        }
        let mut take = |name: &str| -> i64 {
            let v = next.get_mut(name).expect("counted above");
            *v += 1;
            *v - 1
        };
        let mut rows = Vec::new();
        let created_ms = now_ms();
        for (i, p) in batch.iter().enumerate() {
            if out[i].is_some() || seen.get(p.token.as_str()) != Some(&i) {
                continue;
            }
            let id = format!("{}-{:08x}", prefix(p.kind), take(prefix(p.kind)));
            let mut outputs = Map::new();
            outputs.insert("id".into(), Value::String(id.clone()));
            if let Spec::Instance(instance) = &p.spec {
                let subnet = instance.subnet.as_str();
                let n = take(&format!("ip:{subnet}"));
                let cidr = known
                    .get(subnet)
                    .and_then(|a| a.get("cidr"))
                    .and_then(Value::as_str)
                    .unwrap_or("10.0.0.0/24");
                match address_in(cidr, n) {
                    Some(ip) => outputs.insert("private_ip".into(), Value::String(ip)),
                    None => {
                        out[i] = Some(Err(ProviderError::Failed {
                            code: "InsufficientFreeAddressesInSubnet".into(),
                            message: format!("subnet `{subnet}` ({cidr}) has no free addresses"),
                        }));
                        continue;
                    }
                };
                let public = if instance.public_ip {
                    let k = take("public-ip");
                    Value::String(format!("198.51.{}.{}", 100 + (k / 250) % 100, 1 + k % 250))
                } else {
                    Value::Null
                };
                outputs.insert("public_ip".into(), public);
            }
            let attrs = p.attrs.clone();
            rows.push(serde_json::json!({
                "id": id,
                "kind": p.kind.as_str(),
                "region": p.native_region,
                "attrs": Value::Object(attrs.clone()).to_string(),
                "outputs": Value::Object(outputs.clone()).to_string(),
                "tags": serde_json::to_string(&p.tags).unwrap_or_default(),
                "token": p.token,
            }));
            let obs = Observed {
                cloud_id: id,
                kind: p.kind,
                native_region: p.native_region.clone(),
                attrs,
                outputs,
                tags: p.tags.clone(),
            };
            by_token.insert(p.token.clone(), obs.clone());
            out[i] = Some(Ok(obs));
        }
        if !rows.is_empty() {
            sqlx::query(
                "INSERT INTO objects (id, kind, native_region, attrs, outputs, tags, token, created_ms) \
                 SELECT json_extract(value, '$.id'), json_extract(value, '$.kind'), json_extract(value, '$.region'), \
                 json_extract(value, '$.attrs'), json_extract(value, '$.outputs'), json_extract(value, '$.tags'), \
                 json_extract(value, '$.token'), ? FROM json_each(?)",
            )
            .bind(created_ms)
            .bind(Value::Array(rows).to_string())
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        }
        tx.commit().await.map_err(db_err)?;
        Ok(batch
            .iter()
            .zip(out)
            .map(|(p, r)| match r {
                Some(r) => r,
                None => Ok(by_token[&p.token].clone()),
            })
            .collect())
    }
}

fn json_list(items: &[&str]) -> String {
    serde_json::to_string(items).unwrap_or_else(|_| "[]".into())
}

/// The ids a create must find in this cloud: its network, subnet or instance. (Firewalls are
/// attached by id without a check, like EC2's security groups in another account's VPC.)
fn referenced(spec: &Spec) -> impl Iterator<Item = (&'static str, &str)> {
    spec.references()
        .into_iter()
        .filter(|(attr, _)| *attr != "firewalls")
}

/// What the simulated cloud stores for a request: the spec's attributes and the escape hatch.
fn stored_attrs(req: &Request<'_>) -> Map<String, Value> {
    let mut attrs = req.spec.to_attrs();
    if !req.native.is_empty() {
        attrs.insert("local".into(), Value::Object(req.native.clone()));
    }
    attrs
}

/// The `n`th assignable address of `cidr` (the first three are the cloud's, like AWS's), or
/// `None` once the subnet is full.
fn address_in(cidr: &str, n: i64) -> Option<String> {
    let (base, prefix) = cidr.split_once('/').unwrap_or(("10.0.0.0", "24"));
    let base: Ipv4Addr = base.parse().unwrap_or(Ipv4Addr::new(10, 0, 0, 0));
    let prefix: u32 = prefix.parse().unwrap_or(24).min(30);
    let size = 1i64 << (32 - prefix);
    if n < 1 || n + 4 >= size {
        return None;
    }
    Some(Ipv4Addr::from(u32::from(base).wrapping_add(3 + n as u32)).to_string())
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
        Ok(LocalCloud {
            creates: Arc::new(CreateQueue {
                pool: pool.clone(),
                state: Mutex::default(),
            }),
            pool,
            knobs,
        })
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

    /// Runs one call: throttling and injected failures first, then the work, and the answer
    /// once the call's latency has passed.
    async fn call<T>(&self, mutating: bool, work: impl Future<Output = Result<T>>) -> Result<T> {
        let deadline = Instant::now() + self.knobs.latency;
        let r = match self.weather(mutating) {
            Ok(()) => work.await,
            Err(e) => Err(e),
        };
        crate::clock::sleep_until(deadline).await;
        r
    }

    fn weather(&self, mutating: bool) -> Result<()> {
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

    /// Drift: sets tag `key` of the resource with `cloud_id` out of band.
    pub async fn set_tag(
        &self,
        cloud_id: &str,
        key: &str,
        value: &str,
    ) -> std::result::Result<(), String> {
        let n = sqlx::query(
            "UPDATE objects SET tags = json_set(tags, '$.\"' || ? || '\"', ?) WHERE id = ?",
        )
        .bind(key)
        .bind(value)
        .bind(cloud_id)
        .execute(&self.pool)
        .await
        .map_err(|e| e.to_string())?
        .rows_affected();
        if n == 0 {
            return Err(format!("no resource `{cloud_id}` in the local cloud"));
        }
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

    /// Sets the simulated utilisation of the instance `cloud_id` (a field left `None` keeps its
    /// current value). Percentages are between 0 and 100. It is a reading, not an attribute:
    /// it never shows as drift.
    pub async fn set_utilisation(
        &self,
        cloud_id: &str,
        cpu_percent: Option<f64>,
        memory_percent: Option<f64>,
    ) -> std::result::Result<(), String> {
        for (what, v) in [("cpu", cpu_percent), ("memory", memory_percent)] {
            if let Some(v) = v
                && !(0.0..=100.0).contains(&v)
            {
                return Err(format!(
                    "{what} utilisation {v} is not a percentage between 0 and 100"
                ));
            }
        }
        let at = CloudRef::new(Kind::Instance, cloud_id, "");
        let current = self
            .utilisation_now(&at)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("no instance `{cloud_id}` in the local cloud"))?;
        sqlx::query(
            "INSERT INTO utilisation (id, cpu_percent, memory_percent) VALUES (?, ?, ?) \
             ON CONFLICT (id) DO UPDATE SET cpu_percent = excluded.cpu_percent, memory_percent = excluded.memory_percent",
        )
        .bind(cloud_id)
        .bind(cpu_percent.unwrap_or(current.cpu_percent))
        .bind(memory_percent.unwrap_or(current.memory_percent))
        .execute(&self.pool)
        .await
        .map_err(|e| e.to_string())?;
        Ok(())
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
}

/// The calls themselves, without latency or injected failures.
impl LocalCloud {
    async fn create_now(&self, req: &Request<'_>) -> Result<Observed> {
        let (reply, answer) = oneshot::channel();
        self.creates.push(PendingCreate {
            kind: req.spec.kind(),
            spec: req.spec.clone(),
            native_region: req.native_region.into(),
            attrs: stored_attrs(req),
            tags: managed_tags(req),
            token: req.token.into(),
            reply,
        });
        answer.await.unwrap_or_else(|_| {
            Err(ProviderError::Retryable(
                "the local cloud stopped before answering".into(),
            ))
        })
    }

    async fn read_now(&self, at: &CloudRef) -> Result<Option<Observed>> {
        let row = sqlx::query("SELECT * FROM objects WHERE id = ?")
            .bind(&at.id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        match row {
            Some(r) if self.visible(&r) => Self::row_to_observed(&r).map(Some),
            _ => Ok(None),
        }
    }

    async fn observe_now(&self, items: &[CloudRef]) -> Result<Vec<Option<Observed>>> {
        let ids = serde_json::to_string(&items.iter().map(|at| &at.id).collect::<Vec<_>>())
            .map_err(|e| ProviderError::Failed {
                code: "InvalidParameterValue".into(),
                message: e.to_string(),
            })?;
        let rows =
            sqlx::query("SELECT * FROM objects WHERE id IN (SELECT value FROM json_each(?))")
                .bind(ids)
                .fetch_all(&self.pool)
                .await
                .map_err(db_err)?;
        let mut found = std::collections::HashMap::with_capacity(rows.len());
        for r in &rows {
            if self.visible(r) {
                let o = Self::row_to_observed(r)?;
                found.insert(o.cloud_id.clone(), o);
            }
        }
        Ok(items.iter().map(|at| found.get(&at.id).cloned()).collect())
    }

    async fn update_now(&self, req: &Request<'_>, cloud_id: &str) -> Result<Observed> {
        let attrs = stored_attrs(req);
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

    async fn delete_now(&self, at: &CloudRef) -> Result<()> {
        let cloud_id = at.id.as_str();
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

    async fn find_by_token_now(&self, _kind: Kind, token: &str) -> Result<Option<Observed>> {
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

    /// What was set for the instance, or a value derived from its id (stable across calls and
    /// runs) when nothing was.
    async fn utilisation_now(&self, at: &CloudRef) -> Result<Option<Utilisation>> {
        let row = sqlx::query(
            "SELECT o.kind, u.cpu_percent, u.memory_percent FROM objects o \
             LEFT JOIN utilisation u ON u.id = o.id WHERE o.id = ?",
        )
        .bind(&at.id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_err)?;
        let Some(row) = row else { return Ok(None) };
        let kind: String = row.try_get("kind").map_err(db_err)?;
        if kind != Kind::Instance.as_str() {
            return Ok(None);
        }
        let cpu: Option<f64> = row.try_get("cpu_percent").map_err(db_err)?;
        let memory: Option<f64> = row.try_get("memory_percent").map_err(db_err)?;
        let (dc, dm) = default_utilisation(&at.id);
        Ok(Some(Utilisation {
            cpu_percent: cpu.unwrap_or(dc),
            memory_percent: memory.unwrap_or(dm),
        }))
    }

    async fn list_managed_now(&self, stack: &str) -> Result<Vec<Observed>> {
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

/// A simulated instance's utilisation when none was set: derived from its id (FNV-1a), CPU
/// between 20% and 79%, memory between 30% and 89%, so fresh instances look moderately busy.
fn default_utilisation(id: &str) -> (f64, f64) {
    let h = id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    (20.0 + (h % 60) as f64, 30.0 + ((h >> 32) % 60) as f64)
}

/// Every call takes the configured latency in all, including the simulated control plane's own
/// work (done first, like a real API's server side), and may be throttled or fail.
#[async_trait]
impl Provider for LocalCloud {
    fn name(&self) -> ProviderName {
        ProviderName::Local
    }
    async fn create(&self, req: &Request<'_>) -> Result<Observed> {
        self.call(true, self.create_now(req)).await
    }
    fn validate(&self, req: &Request<'_>) -> Vec<Violation> {
        crate::cloud::block_sizes(req.spec, BLOCK_PREFIXES)
    }
    async fn read(&self, at: &CloudRef) -> Result<Option<Observed>> {
        self.call(false, self.read_now(at)).await
    }
    async fn update(&self, req: &Request<'_>, cloud_id: &str) -> Result<Observed> {
        self.call(true, self.update_now(req, cloud_id)).await
    }
    async fn delete(&self, at: &CloudRef) -> Result<()> {
        self.call(true, self.delete_now(at)).await
    }
    /// One cloud: every region is here.
    async fn find_by_token(
        &self,
        kind: Kind,
        _region: &str,
        token: &str,
    ) -> Result<Option<Observed>> {
        self.call(false, self.find_by_token_now(kind, token)).await
    }
    async fn list_managed(&self, stack: &str) -> Result<Vec<Observed>> {
        self.call(false, self.list_managed_now(stack)).await
    }
    /// One query for the whole batch.
    async fn observe(&self, items: &[CloudRef]) -> Result<Vec<Option<Observed>>> {
        self.call(false, self.observe_now(items)).await
    }
    /// Simulated: set with [`LocalCloud::set_utilisation`], else derived from the id.
    async fn utilisation(&self, at: &CloudRef) -> Result<Option<Utilisation>> {
        self.call(false, self.utilisation_now(at)).await
    }
}
