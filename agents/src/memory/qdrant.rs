//! The memory on a Qdrant server, over gRPC (qdrant-client). One collection per
//! [`RecordKind`] (`chimera_proposals`, `chimera_incidents`, `chimera_outcomes`), cosine
//! distance, created on connect when missing; every record field is a payload field, and
//! `stack` and `resource_kind` are indexed keywords that recalls filter on.
//!
//! RPCs used: `Collections/{CollectionExists, Get, Create}`, `Points/{CreateFieldIndex,
//! Upsert, Delete, Get, Query, SetPayload}` (the test suite's fake serves exactly these).

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use qdrant_client::qdrant::{
    Condition, CreateCollectionBuilder, CreateFieldIndexCollectionBuilder, DeletePointsBuilder,
    Distance, FieldType, GetPointsBuilder, PointId, PointStruct, PointsIdsList, QueryPointsBuilder,
    SetPayloadPointsBuilder, UpsertPointsBuilder, Value, VectorParamsBuilder, value::Kind,
    vectors_config,
};
use qdrant_client::{Qdrant, QdrantError};

use super::{
    Embedder, Filter, HashingEmbedder, Memory, MemoryError, Record, RecordKind, best_possible, rank,
};

/// What an unreachable or misnamed server's error ends with.
const HINT: &str = "QDRANT_URL must be Qdrant's gRPC endpoint, such as http://localhost:6334 (6333 is its REST port), and the server must be running";

pub struct QdrantMemory {
    client: Qdrant,
    embedder: Box<dyn Embedder>,
    /// The server's URL as errors show it (without any user or password in it).
    url: String,
    timeout: Duration,
}

/// How to reach a Qdrant server beyond its URL.
#[derive(Clone)]
pub struct QdrantOptions {
    /// Sent as the `api-key` header; never shown in errors or logs.
    pub api_key: Option<String>,
    /// How long one request may take before it fails as unavailable.
    pub timeout: Duration,
    /// How long opening the connection may take.
    pub connect_timeout: Duration,
}

impl Default for QdrantOptions {
    fn default() -> Self {
        QdrantOptions {
            api_key: None,
            timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
        }
    }
}

impl std::fmt::Debug for QdrantOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QdrantOptions")
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

/// The fields of a record's payload, beside its vector.
const ID: &str = "id";
const STACK: &str = "stack";
const RESOURCE_KIND: &str = "resource_kind";
const TEXT: &str = "text";
const OUTCOME: &str = "outcome";
const PR: &str = "pr";
const CREATED_UNIX: &str = "created_unix";

/// How many candidates a recall asks each collection for at first, as a multiple of `k`; it
/// asks again for more while an unseen record could still outrank the k-th (see
/// [`best_possible`]).
const OVERFETCH: usize = 4;
/// Above this many candidates per collection, a recall takes what it has.
const MAX_CANDIDATES: usize = 10_000;

impl QdrantMemory {
    /// Connects to the Qdrant gRPC endpoint at `url` (`http://localhost:6334`) without an API
    /// key, with the default [`HashingEmbedder`] and [`QdrantOptions`].
    pub async fn connect(url: &str) -> Result<QdrantMemory, MemoryError> {
        QdrantMemory::connect_with(url, QdrantOptions::default(), HashingEmbedder::default()).await
    }

    /// Connects to the Qdrant gRPC endpoint at `url` and creates the collections that are
    /// missing with the embedder's dimension. Refused when a collection exists with another
    /// dimension; a server that does not answer within the options' timeouts is
    /// [`MemoryError::Unavailable`].
    pub async fn connect_with(
        url: &str,
        options: QdrantOptions,
        embedder: impl Embedder + 'static,
    ) -> Result<QdrantMemory, MemoryError> {
        let shown = redacted(url);
        let uri: tonic::codegen::http::Uri = url.trim().parse().map_err(|e| {
            MemoryError::Unavailable(format!("Qdrant URL `{shown}` is not a URL ({e}); {HINT}"))
        })?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
            return Err(MemoryError::Unavailable(format!(
                "Qdrant URL `{shown}` has no http:// or https:// scheme and host; {HINT}"
            )));
        }
        if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
            return Err(MemoryError::Unavailable(format!(
                "Qdrant URL `{shown}` carries a user or password; pass the API key as QDRANT_API_KEY instead ({HINT})"
            )));
        }
        let client = Qdrant::from_url(url.trim())
            .api_key(options.api_key)
            .timeout(options.timeout)
            .connect_timeout(options.connect_timeout)
            // The check prints to stdout; a library does not.
            .skip_compatibility_check()
            .build()
            .map_err(|e| MemoryError::Unavailable(format!("Qdrant at `{shown}`: {e}; {HINT}")))?;
        let memory = QdrantMemory {
            client,
            embedder: Box::new(embedder),
            url: shown,
            timeout: options.timeout,
        };
        for kind in RecordKind::ALL {
            memory.ensure_collection(kind).await?;
        }
        Ok(memory)
    }

    /// The collection holding records of `kind`.
    pub fn collection(kind: RecordKind) -> &'static str {
        match kind {
            RecordKind::Proposal => "chimera_proposals",
            RecordKind::Incident => "chimera_incidents",
            RecordKind::Outcome => "chimera_outcomes",
        }
    }

    /// The point id of a record: a UUID (version 5 layout) made of the blake3 hash of the
    /// record's id, so the same record always lands on the same point.
    pub fn point_id(record_id: &str) -> String {
        let h = blake3::hash(format!("chimera-agent-memory:{record_id}").as_bytes());
        let mut b = [0u8; 16];
        b.copy_from_slice(&h.as_bytes()[..16]);
        b[6] = (b[6] & 0x0f) | 0x50;
        b[8] = (b[8] & 0x3f) | 0x80;
        let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
        format!(
            "{}-{}-{}-{}-{}",
            &hex[0..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..32]
        )
    }

    /// A failed request as an error naming the server and what was asked; a server that
    /// cannot be reached or does not answer in time is [`MemoryError::Unavailable`].
    fn failed(&self, what: &str, e: QdrantError) -> MemoryError {
        let url = &self.url;
        match &e {
            QdrantError::ResponseError { status } => {
                let code = status.code();
                let message = status.message();
                let timed_out = code == tonic::Code::DeadlineExceeded
                    || (code == tonic::Code::Cancelled && message.contains("Timeout"));
                let unreachable = code == tonic::Code::Unavailable
                    || (code == tonic::Code::Internal && message.starts_with("Failed to connect"));
                // What the transport says when the other end is not a gRPC server (an HTTP/1
                // port, a proxy) or hangs up: no Qdrant answered.
                let not_grpc = matches!(code, tonic::Code::Unknown | tonic::Code::Cancelled)
                    || (code == tonic::Code::Internal
                        && (message.contains("h2 protocol error")
                            || message.contains("transport error")
                            || message.contains("content-type")
                            || message.contains("HTTP status")));
                if timed_out {
                    MemoryError::Unavailable(format!(
                        "Qdrant at `{url}` did not answer within {:?} ({what}); {HINT}",
                        self.timeout
                    ))
                } else if unreachable {
                    let why = if message.contains("Connection refused")
                        || message.contains("ConnectionRefused")
                    {
                        "connection refused".to_string()
                    } else if message.contains("timed out") || message.contains("TimedOut") {
                        "no connection within the connect timeout".to_string()
                    } else {
                        one_line(message)
                    };
                    MemoryError::Unavailable(format!(
                        "cannot reach Qdrant at `{url}` ({what}): {why}; {HINT}"
                    ))
                } else if not_grpc {
                    MemoryError::Unavailable(format!(
                        "the server at `{url}` does not speak Qdrant's gRPC or dropped the connection ({what}: {}); {HINT}",
                        one_line(message)
                    ))
                } else {
                    MemoryError::Backend(format!(
                        "Qdrant at `{url}`: {what}: {code:?}: {}",
                        one_line(message)
                    ))
                }
            }
            QdrantError::InvalidUri(_) | QdrantError::Io(_) => {
                MemoryError::Unavailable(format!("Qdrant at `{url}` ({what}): {e}; {HINT}"))
            }
            _ => MemoryError::Backend(format!("Qdrant at `{url}`: {what}: {e}")),
        }
    }

    async fn ensure_collection(&self, kind: RecordKind) -> Result<(), MemoryError> {
        let name = Self::collection(kind);
        let dim = self.embedder.dim();
        let exists = self
            .client
            .collection_exists(name)
            .await
            .map_err(|e| self.failed(&format!("does `{name}` exist"), e))?;
        if !exists {
            let created = self
                .client
                .create_collection(
                    CreateCollectionBuilder::new(name)
                        .vectors_config(VectorParamsBuilder::new(dim as u64, Distance::Cosine)),
                )
                .await;
            match created {
                Ok(_) => {
                    for field in [STACK, RESOURCE_KIND] {
                        self.client
                            .create_field_index(
                                CreateFieldIndexCollectionBuilder::new(
                                    name,
                                    field,
                                    FieldType::Keyword,
                                )
                                .wait(true),
                            )
                            .await
                            .map_err(|e| self.failed(&format!("index `{name}.{field}`"), e))?;
                    }
                    return Ok(());
                }
                // Someone else created it meanwhile: check its dimension below.
                Err(e) => {
                    let now = self.client.collection_exists(name).await.unwrap_or(false);
                    if !now {
                        return Err(self.failed(&format!("create `{name}`"), e));
                    }
                }
            }
        }
        let info = self
            .client
            .collection_info(name)
            .await
            .map_err(|e| self.failed(&format!("read `{name}`"), e))?;
        let stored = info
            .result
            .and_then(|i| i.config)
            .and_then(|c| c.params)
            .and_then(|p| p.vectors_config)
            .and_then(|v| v.config);
        match stored {
            Some(vectors_config::Config::Params(p)) if p.size as usize == dim => Ok(()),
            Some(vectors_config::Config::Params(p)) => Err(MemoryError::Dimension {
                at: format!("{} collection `{name}`", self.url),
                stored: p.size as usize,
                embedder: dim,
            }),
            _ => Err(MemoryError::Backend(format!(
                "Qdrant at `{}`: collection `{name}` has no single unnamed vector; it was not made by Chimera, use another server or delete it",
                self.url
            ))),
        }
    }

    /// The record with this id and the collection holding it.
    async fn find(&self, id: &str) -> Result<Option<(RecordKind, Record)>, MemoryError> {
        let pid: PointId = Self::point_id(id).into();
        for kind in RecordKind::ALL {
            let name = Self::collection(kind);
            let got = self
                .client
                .get_points(GetPointsBuilder::new(name, vec![pid.clone()]).with_payload(true))
                .await
                .map_err(|e| self.failed(&format!("get `{id}` from `{name}`"), e))?;
            if let Some(p) = got.result.into_iter().next() {
                return Ok(Some((kind, record(kind, &p.payload)?)));
            }
        }
        Ok(None)
    }

    /// Up to `limit` candidates of one collection with their raw similarity.
    async fn candidates(
        &self,
        kind: RecordKind,
        vector: &[f32],
        filter: &Filter,
        limit: usize,
    ) -> Result<Vec<(Record, f32)>, MemoryError> {
        let name = Self::collection(kind);
        let mut must = Vec::new();
        if let Some(s) = &filter.stack {
            must.push(Condition::matches(STACK, s.clone()));
        }
        if let Some(rk) = &filter.resource_kind {
            must.push(Condition::matches(RESOURCE_KIND, rk.clone()));
        }
        let mut q = QueryPointsBuilder::new(name)
            .query(vector.to_vec())
            .limit(limit as u64)
            .with_payload(true);
        if !must.is_empty() {
            q = q.filter(qdrant_client::qdrant::Filter::must(must));
        }
        let got = self
            .client
            .query(q)
            .await
            .map_err(|e| self.failed(&format!("query `{name}`"), e))?;
        got.result
            .into_iter()
            .map(|p| Ok((record(kind, &p.payload)?, p.score)))
            .collect()
    }
}

#[async_trait]
impl Memory for QdrantMemory {
    async fn remember(&self, rec: Record) -> Result<String, MemoryError> {
        let rec = rec.identified();
        let pid = Self::point_id(&rec.id);
        let pr =
            rec.pr.map(i64::try_from).transpose().map_err(|_| {
                MemoryError::Invalid(format!("`{}`: PR number out of range", rec.id))
            })?;
        let created = i64::try_from(rec.created_unix).map_err(|_| {
            MemoryError::Invalid(format!("`{}`: creation time out of range", rec.id))
        })?;
        let mut payload: HashMap<String, Value> = HashMap::new();
        payload.insert(ID.into(), rec.id.clone().into());
        payload.insert(STACK.into(), rec.stack.clone().into());
        if let Some(rk) = &rec.resource_kind {
            payload.insert(RESOURCE_KIND.into(), rk.clone().into());
        }
        payload.insert(TEXT.into(), rec.text.clone().into());
        payload.insert(OUTCOME.into(), rec.outcome.clone().into());
        if let Some(pr) = pr {
            payload.insert(PR.into(), pr.into());
        }
        payload.insert(CREATED_UNIX.into(), created.into());
        let name = Self::collection(rec.kind);
        let point = PointStruct::new(pid.clone(), self.embedder.embed(&rec.text), payload);
        self.client
            .upsert_points(UpsertPointsBuilder::new(name, vec![point]).wait(true))
            .await
            .map_err(|e| self.failed(&format!("upsert `{}` into `{name}`", rec.id), e))?;
        // A record whose kind changed leaves its old collection.
        for other in RecordKind::ALL.into_iter().filter(|k| *k != rec.kind) {
            let name = Self::collection(other);
            self.client
                .delete_points(
                    DeletePointsBuilder::new(name)
                        .points(PointsIdsList {
                            ids: vec![pid.clone().into()],
                        })
                        .wait(true),
                )
                .await
                .map_err(|e| self.failed(&format!("delete `{}` from `{name}`", rec.id), e))?;
        }
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
        let vector = self.embedder.embed(query);
        let kinds: Vec<RecordKind> = match filter.kind {
            Some(kind) => vec![kind],
            None => RecordKind::ALL.to_vec(),
        };
        let mut limit = k.saturating_mul(OVERFETCH).clamp(16, MAX_CANDIDATES);
        loop {
            let mut all = Vec::new();
            // The lowest similarity of each collection that may hold more candidates.
            let mut cut: Vec<f32> = Vec::new();
            for kind in &kinds {
                let got = self.candidates(*kind, &vector, filter, limit).await?;
                if got.len() >= limit
                    && let Some(low) = got.iter().map(|(_, s)| *s).reduce(f32::min)
                {
                    cut.push(low);
                }
                all.extend(got);
            }
            let ranked = rank(all, k);
            let settled = cut.is_empty()
                || limit >= MAX_CANDIDATES
                || (ranked.len() >= k
                    && ranked
                        .last()
                        .is_some_and(|(_, kth)| cut.iter().all(|c| *kth >= best_possible(*c))));
            if settled {
                return Ok(ranked);
            }
            limit = limit.saturating_mul(OVERFETCH).min(MAX_CANDIDATES);
        }
    }

    async fn set_outcome(&self, id: &str, outcome: &str) -> Result<bool, MemoryError> {
        let Some((kind, _)) = self.find(id).await? else {
            return Ok(false);
        };
        let name = Self::collection(kind);
        let mut payload: HashMap<String, Value> = HashMap::new();
        payload.insert(OUTCOME.into(), outcome.into());
        self.client
            .set_payload(
                SetPayloadPointsBuilder::new(name, payload)
                    .points_selector(PointsIdsList {
                        ids: vec![Self::point_id(id).into()],
                    })
                    .wait(true),
            )
            .await
            .map_err(|e| self.failed(&format!("set the outcome of `{id}` in `{name}`"), e))?;
        Ok(true)
    }

    async fn get(&self, id: &str) -> Result<Option<Record>, MemoryError> {
        Ok(self.find(id).await?.map(|(_, r)| r))
    }
}

/// A record read back from a point of the collection of `kind`.
fn record(kind: RecordKind, payload: &HashMap<String, Value>) -> Result<Record, MemoryError> {
    let field = |k: &str| payload.get(k).and_then(|v| v.kind.as_ref());
    let string = |k: &str| match field(k) {
        Some(Kind::StringValue(s)) => Some(s.clone()),
        _ => None,
    };
    let number = |k: &str| match field(k) {
        Some(Kind::IntegerValue(i)) => u64::try_from(*i).ok(),
        Some(Kind::DoubleValue(d)) if *d >= 0.0 && d.fract() == 0.0 => Some(*d as u64),
        _ => None,
    };
    let id = string(ID).ok_or_else(|| {
        MemoryError::Corrupt(format!(
            "a point of `{}` has no `id` payload; was it written by Chimera?",
            QdrantMemory::collection(kind)
        ))
    })?;
    let required = |k: &str| {
        string(k).ok_or_else(|| MemoryError::Corrupt(format!("`{id}` has no `{k}` payload")))
    };
    Ok(Record {
        stack: required(STACK)?,
        kind,
        resource_kind: string(RESOURCE_KIND),
        text: required(TEXT)?,
        outcome: required(OUTCOME)?,
        pr: number(PR),
        created_unix: number(CREATED_UNIX).ok_or_else(|| {
            MemoryError::Corrupt(format!("`{id}` has no `{CREATED_UNIX}` payload"))
        })?,
        id,
    })
}

/// `url` without any `user:password@` in it.
fn redacted(url: &str) -> String {
    let url = url.trim();
    let Some(s) = url.find("://").map(|s| s + 3) else {
        return url.to_string();
    };
    let authority_end = url[s..].find(['/', '?', '#']).map_or(url.len(), |e| s + e);
    match url[s..authority_end].rfind('@') {
        Some(at) => format!("{}<redacted>@{}", &url[..s], &url[s + at + 1..]),
        None => url.to_string(),
    }
}

/// A server's message on one line, without the transport's nested debug output.
fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}
