//! Providers: one async trait every cloud implements, a retry policy for the errors clouds
//! throw at you (throttling, eventual consistency), the plumbing every real cloud shares
//! ([`cloud`]), a conformance suite every provider must pass, and `local`, the simulated cloud
//! that is the embedded default. The real clouds are crates of their own, `chimera-aws`,
//! `chimera-gcp` and `chimera-azure` (under `providers/`), built at a lower opt-level than this
//! one (docs/ARCHITECTURE.md, Decisions).
//!
//! **Architecture Invariant:** this crate links no cloud SDK; only the cloud crates do. `local`
//! keeps its simulated cloud in its own SQLite file; that file is a cloud, not Chimera state.

pub mod clock;
pub mod cloud;
pub mod conformance;
pub mod local;

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use backon::{ExponentialBuilder, Retryable};
use chimera_model::kinds::Spec;
use chimera_model::{Address, Kind, ProviderName};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Makes ring the process's TLS crypto provider, once. Every HTTPS client in Chimera is rustls
/// on ring: reqwest (the agents' LLM and forge clients, the Azure provider), Azure's and Google's
/// credential clients, and the AWS SDK's client (told so directly). The crates are built
/// without their own default provider (aws-lc: a second copy of the primitives and a 44 s C
/// build, docs/benchmarks.md), so this runs before any of those clients is made; the CLI calls
/// it first thing, and each client's constructor calls it too, for library users.
pub fn install_tls_crypto() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Err: another provider was installed first (by an embedding program); it is kept.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// Tags every provider puts on what it creates, so `orphans` and crash recovery can find it.
pub const TAG_STACK: &str = "chimera-stack";
pub const TAG_ADDRESS: &str = "chimera-address";
pub const TAG_TOKEN: &str = "chimera-token";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// Throttling or eventual consistency: worth retrying.
    #[error("{0} (retryable)")]
    Retryable(String),
    /// The cloud refused: not worth retrying as is.
    #[error("{code}: {message}")]
    Failed { code: String, message: String },
}

pub type Result<T> = std::result::Result<T, ProviderError>;

/// What kind of failure a provider error is, as the engine, the reconcile loop and the user act
/// on it: wait and retry, fix the configuration, or look at the cloud.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailureClass {
    /// The cloud is rate-limiting us.
    Throttled,
    /// Transient: eventual consistency, a timeout, a server error.
    Retryable,
    /// The resource's current state forbids the call (in use, a dependency, a transition).
    Conflict,
    /// Something the call needs does not exist.
    NotFound,
    /// A quota, a limit or the cloud's capacity.
    Quota,
    /// The request itself is wrong (an invalid or unsupported value, a permission).
    Permanent,
}

impl FailureClass {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureClass::Throttled => "throttled",
            FailureClass::Retryable => "retryable",
            FailureClass::Conflict => "conflict",
            FailureClass::NotFound => "not-found",
            FailureClass::Quota => "quota",
            FailureClass::Permanent => "permanent",
        }
    }

    /// The class of a cloud error code (EC2's vocabulary, which the local cloud shares).
    pub fn of_code(code: &str) -> FailureClass {
        let c = code.to_ascii_lowercase();
        if c.contains("throttl") || c == "requestlimitexceeded" || c.contains("toomanyrequests") {
            FailureClass::Throttled
        } else if c.ends_with("notfound") || c.ends_with(".notfound") || c.contains("notfound.") {
            FailureClass::NotFound
        } else if c.contains("limitexceeded")
            || c.starts_with("insufficient")
            || c.contains("quota")
            || c.contains("capacity")
        {
            FailureClass::Quota
        } else if c.contains("dependencyviolation")
            || c.contains("incorrectstate")
            || c.contains("inuse")
            || c.contains("conflict")
            || c.contains("alreadyexists")
            || c.contains("duplicate")
        {
            FailureClass::Conflict
        } else if c.contains("timeout")
            || c.contains("unavailable")
            || c.contains("internal")
            || c.contains("connection")
        {
            FailureClass::Retryable
        } else {
            FailureClass::Permanent
        }
    }
}

impl ProviderError {
    /// What kind of failure this is.
    pub fn class(&self) -> FailureClass {
        match self {
            ProviderError::Retryable(m) => {
                let code = m.split(':').next().unwrap_or_default();
                match FailureClass::of_code(code) {
                    FailureClass::Throttled => FailureClass::Throttled,
                    _ if m.to_ascii_lowercase().contains("throttl") => FailureClass::Throttled,
                    _ => FailureClass::Retryable,
                }
            }
            ProviderError::Failed { code, .. } => FailureClass::of_code(code),
        }
    }
}

/// A create or update (or, at plan time, a proposal to [`Provider::validate`]): the resource's
/// typed spec with every reference resolved (at plan time, references are placeholders).
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub stack: &'a str,
    pub address: &'a Address,
    pub native_region: &'a str,
    pub spec: &'a Spec,
    /// The user's tags (Chimera's own are added by [`managed_tags`]).
    pub tags: &'a BTreeMap<String, String>,
    /// The provider escape hatch (`aws = { ami = "…" }` on the resource), passed through.
    pub native: &'a Map<String, Value>,
    /// Idempotency token: the same token never creates twice.
    pub token: &'a str,
}

impl Request<'_> {
    /// A string from the provider escape hatch.
    pub fn native_str(&self, key: &str) -> Option<&str> {
        self.native.get(key).and_then(Value::as_str)
    }
}

/// The typed parts of a request, owned: what a resource's canonical attributes (with
/// references resolved, or placeholders at plan time) say to its provider.
#[derive(Debug, Clone, PartialEq)]
pub struct Proposal {
    pub spec: Spec,
    pub tags: BTreeMap<String, String>,
    pub native: Map<String, Value>,
}

impl Proposal {
    /// Splits a resource's attributes into its spec, its tags and `provider`'s escape hatch.
    /// Fails when they do not make a spec of `kind` (an attribute missing or mistyped).
    pub fn from_attrs(
        provider: ProviderName,
        kind: Kind,
        attrs: &Map<String, Value>,
    ) -> std::result::Result<Proposal, String> {
        let tags = match attrs.get("tags") {
            None | Some(Value::Null) => BTreeMap::new(),
            Some(Value::Object(m)) => m
                .iter()
                .map(|(k, v)| match v {
                    Value::String(s) => Ok((k.clone(), s.clone())),
                    other => Err(format!("tag `{k}` is not a string: {other}")),
                })
                .collect::<std::result::Result<_, _>>()?,
            Some(other) => return Err(format!("`tags` is not a record: {other}")),
        };
        Ok(Proposal {
            spec: Spec::from_attrs(kind, attrs)?,
            tags,
            native: attrs
                .get(provider.as_str())
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default(),
        })
    }

    /// The request that makes this proposal real.
    pub fn request<'a>(
        &'a self,
        stack: &'a str,
        address: &'a Address,
        native_region: &'a str,
        token: &'a str,
    ) -> Request<'a> {
        Request {
            stack,
            address,
            native_region,
            spec: &self.spec,
            tags: &self.tags,
            native: &self.native,
            token,
        }
    }
}

/// Where a cloud resource lives: what reads and deletes need to go straight to it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CloudRef {
    pub kind: Kind,
    pub id: String,
    /// The provider's region (`us-east-1`); empty when unknown (an import by bare id), and
    /// then the provider looks in every region it knows.
    pub region: String,
}

impl CloudRef {
    pub fn new(kind: Kind, id: impl Into<String>, region: impl Into<String>) -> Self {
        CloudRef {
            kind,
            id: id.into(),
            region: region.into(),
        }
    }
}

/// A provider-specific limit a resource breaks, found before anything is created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    /// The attribute at fault (`name` for the resource's name).
    pub field: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl Violation {
    pub fn new(field: &str, message: impl Into<String>) -> Self {
        Violation {
            field: field.to_string(),
            message: message.into(),
        }
    }
}

/// What the cloud reports about a resource.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Observed {
    pub cloud_id: String,
    pub kind: Kind,
    pub native_region: String,
    /// The attributes as the cloud holds them (resolved values).
    pub attrs: Map<String, Value>,
    /// Outputs other resources may reference (`id`, `private_ip`, …).
    pub outputs: Map<String, Value>,
    pub tags: BTreeMap<String, String>,
}

impl Observed {
    /// Where this resource lives.
    pub fn at(&self) -> CloudRef {
        CloudRef::new(self.kind, self.cloud_id.clone(), self.native_region.clone())
    }
}

/// How busy an instance is (a recent average, percent of what its size offers), as the
/// rightsizing intent reads it. A read: nothing is changed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Utilisation {
    pub cpu_percent: f64,
    pub memory_percent: f64,
}

#[async_trait]
pub trait Provider: Send + Sync {
    fn name(&self) -> ProviderName;
    /// Provider-specific limits `req` breaks (name length, sizes a region lacks, ports). Pure
    /// and offline: called at plan time, before anything is created.
    fn validate(&self, _req: &Request<'_>) -> Vec<Violation> {
        Vec::new()
    }
    async fn create(&self, req: &Request<'_>) -> Result<Observed>;
    /// `None`: the resource does not exist.
    async fn read(&self, at: &CloudRef) -> Result<Option<Observed>>;
    async fn update(&self, req: &Request<'_>, cloud_id: &str) -> Result<Observed>;
    /// Deleting what is already gone succeeds.
    async fn delete(&self, at: &CloudRef) -> Result<()>;
    /// The resource created with `token`, if any: looked for in `region` (where the create was
    /// sent) first, then wherever else the provider knows. `Ok(None)` means provably absent; an
    /// error means the answer is unknown.
    async fn find_by_token(
        &self,
        kind: Kind,
        region: &str,
        token: &str,
    ) -> Result<Option<Observed>>;
    /// Everything tagged as managed by `stack`.
    async fn list_managed(&self, stack: &str) -> Result<Vec<Observed>>;
    /// Reads many resources at once, in order (`None`: gone). A cloud answers it in a few
    /// batched calls (a filtered list per kind and region); this default reads one resource at
    /// a time, [`OBSERVE_CONCURRENCY`] at once, each retried on retryable errors.
    async fn observe(&self, items: &[CloudRef]) -> Result<Vec<Option<Observed>>> {
        let mut out = Vec::with_capacity(items.len());
        for chunk in items.chunks(OBSERVE_CONCURRENCY) {
            let reads: Vec<_> = chunk
                .iter()
                .map(|at| with_retries(|| self.read(at)))
                .collect();
            for r in futures_util::future::join_all(reads).await {
                out.push(r?);
            }
        }
        Ok(out)
    }
    /// The CPU and memory utilisation of the instance at `at`; `None` when the cloud does not
    /// report it (the default) or `at` is not an instance.
    async fn utilisation(&self, _at: &CloudRef) -> Result<Option<Utilisation>> {
        Ok(None)
    }
}

/// How many reads [`Provider::observe`]'s default makes at once.
pub const OBSERVE_CONCURRENCY: usize = 16;

/// Retries `call` on [`ProviderError::Retryable`] with jittered exponential backoff.
pub async fn with_retries<T, F, Fut>(call: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    call.retry(
        ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(5))
            .with_max_delay(Duration::from_secs(5))
            .with_max_times(12)
            .with_jitter(),
    )
    .when(|e| matches!(e, ProviderError::Retryable(_)))
    .await
}

/// The tags a managed resource carries: the user's plus Chimera's.
pub fn managed_tags(req: &Request<'_>) -> BTreeMap<String, String> {
    let mut tags = req.tags.clone();
    tags.insert(TAG_STACK.into(), req.stack.into());
    tags.insert(TAG_ADDRESS.into(), req.address.to_string());
    tags.insert(TAG_TOKEN.into(), req.token.into());
    tags
}

/// A provider whose every call is retried on retryable errors (see [`with_retries`]).
pub struct Retrying<P>(pub P);

#[async_trait]
impl<P: Provider> Provider for Retrying<P> {
    fn name(&self) -> ProviderName {
        self.0.name()
    }
    async fn create(&self, req: &Request<'_>) -> Result<Observed> {
        with_retries(|| self.0.create(req)).await
    }
    fn validate(&self, req: &Request<'_>) -> Vec<Violation> {
        self.0.validate(req)
    }
    async fn read(&self, at: &CloudRef) -> Result<Option<Observed>> {
        with_retries(|| self.0.read(at)).await
    }
    async fn update(&self, req: &Request<'_>, cloud_id: &str) -> Result<Observed> {
        with_retries(|| self.0.update(req, cloud_id)).await
    }
    async fn delete(&self, at: &CloudRef) -> Result<()> {
        with_retries(|| self.0.delete(at)).await
    }
    async fn find_by_token(
        &self,
        kind: Kind,
        region: &str,
        token: &str,
    ) -> Result<Option<Observed>> {
        with_retries(|| self.0.find_by_token(kind, region, token)).await
    }
    async fn list_managed(&self, stack: &str) -> Result<Vec<Observed>> {
        with_retries(|| self.0.list_managed(stack)).await
    }
    async fn observe(&self, items: &[CloudRef]) -> Result<Vec<Option<Observed>>> {
        with_retries(|| self.0.observe(items)).await
    }
    async fn utilisation(&self, at: &CloudRef) -> Result<Option<Utilisation>> {
        with_retries(|| self.0.utilisation(at)).await
    }
}

/// Serves a provider under another provider's name: lets tests and demos run a multi-cloud
/// stack against simulated clouds (`Alias(ProviderName::Aws, local)`).
pub struct Alias<P>(pub ProviderName, pub P);

#[async_trait]
impl<P: Provider> Provider for Alias<P> {
    fn name(&self) -> ProviderName {
        self.0
    }
    async fn create(&self, req: &Request<'_>) -> Result<Observed> {
        self.1.create(req).await
    }
    fn validate(&self, req: &Request<'_>) -> Vec<Violation> {
        self.1.validate(req)
    }
    async fn read(&self, at: &CloudRef) -> Result<Option<Observed>> {
        self.1.read(at).await
    }
    async fn update(&self, req: &Request<'_>, cloud_id: &str) -> Result<Observed> {
        self.1.update(req, cloud_id).await
    }
    async fn delete(&self, at: &CloudRef) -> Result<()> {
        self.1.delete(at).await
    }
    async fn find_by_token(
        &self,
        kind: Kind,
        region: &str,
        token: &str,
    ) -> Result<Option<Observed>> {
        self.1.find_by_token(kind, region, token).await
    }
    async fn list_managed(&self, stack: &str) -> Result<Vec<Observed>> {
        self.1.list_managed(stack).await
    }
    async fn observe(&self, items: &[CloudRef]) -> Result<Vec<Option<Observed>>> {
        self.1.observe(items).await
    }
    async fn utilisation(&self, at: &CloudRef) -> Result<Option<Utilisation>> {
        self.1.utilisation(at).await
    }
}

#[async_trait]
impl<P: Provider + ?Sized> Provider for std::sync::Arc<P> {
    fn name(&self) -> ProviderName {
        (**self).name()
    }
    async fn create(&self, req: &Request<'_>) -> Result<Observed> {
        (**self).create(req).await
    }
    fn validate(&self, req: &Request<'_>) -> Vec<Violation> {
        (**self).validate(req)
    }
    async fn read(&self, at: &CloudRef) -> Result<Option<Observed>> {
        (**self).read(at).await
    }
    async fn update(&self, req: &Request<'_>, cloud_id: &str) -> Result<Observed> {
        (**self).update(req, cloud_id).await
    }
    async fn delete(&self, at: &CloudRef) -> Result<()> {
        (**self).delete(at).await
    }
    async fn find_by_token(
        &self,
        kind: Kind,
        region: &str,
        token: &str,
    ) -> Result<Option<Observed>> {
        (**self).find_by_token(kind, region, token).await
    }
    async fn list_managed(&self, stack: &str) -> Result<Vec<Observed>> {
        (**self).list_managed(stack).await
    }
    async fn observe(&self, items: &[CloudRef]) -> Result<Vec<Option<Observed>>> {
        (**self).observe(items).await
    }
    async fn utilisation(&self, at: &CloudRef) -> Result<Option<Utilisation>> {
        (**self).utilisation(at).await
    }
}

#[cfg(test)]
mod tests {
    /// Built without reqwest's own provider, a client made before [`super::install_tls_crypto`]
    /// panics ("No rustls crypto provider is configured"); after it, clients are made on ring
    /// (chimera-aws and chimera-azure check their clients).
    #[test]
    fn the_process_tls_crypto_provider_is_ring() {
        super::install_tls_crypto();
        super::install_tls_crypto();
        let installed = rustls::crypto::CryptoProvider::get_default().expect("installed");
        let ring = rustls::crypto::ring::default_provider();
        let names = |p: &rustls::crypto::CryptoProvider| {
            p.cipher_suites
                .iter()
                .map(|s| format!("{:?}", s.suite()))
                .collect::<Vec<_>>()
        };
        assert_eq!(names(installed), names(&ring));
    }
}
