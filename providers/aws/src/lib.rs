//! `chimera-aws`: the AWS provider, on the native SDK (aws-sdk-ec2).
//!
//! network → VPC, subnet → Subnet, firewall → SecurityGroup with its rules, instance →
//! RunInstances, volume → CreateVolume (+ AttachVolume), one file per kind: its create, update
//! and delete, its Describe calls and their id filter, how what EC2 describes maps to observed
//! attributes, and its limits for [`Provider::validate`]. This file holds what they share and the
//! [`Provider`] impl, which dispatches each verb to the kind once. Plumbing every cloud needs
//! (clients per region, region search, batching, the consistency window) is in [`chimera_providers::cloud`].
//!
//! Every resource is tagged at creation (`TagSpecifications`, atomic with the create) with the
//! stack, address and client token, so `find_by_token` and `list_managed` work by tag for every
//! kind; RunInstances and CreateVolume also get the token as their native `ClientToken`.
//!
//! Reads and deletes go straight to the resource's region; only a resource whose region is
//! unknown (an import by bare id) is looked for in every region: the default first, then those
//! in use, then `providers.aws.regions`.
//!
//! Credentials and the default region come from the standard AWS chain (aws-config), loaded on
//! first use so that stacks without `'aws` never touch it. The endpoint is the SDK's own
//! (`AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_EC2`) or `providers.aws.endpoint`: moto and
//! LocalStack work unchanged. Each request is retried by the SDK's standard retry (jittered
//! exponential backoff on RequestLimitExceeded and other transient errors, 10 attempts); whole
//! operations are retried by the engine ([`chimera_providers::with_retries`]) on what stays retryable:
//! eventual consistency ("not found" right after a create), DependencyViolation while a
//! dependent terminates.

/// Every item of a paged EC2 Describe call (`describe_vpcs`, …) that `filters` select. A macro:
/// each operation's builder and paginator are types of their own.
macro_rules! describe_all {
    ($ec2:expr, $operation:ident, $filters:expr) => {
        $ec2.client
            .$operation()
            .set_filters(Some($filters))
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err($crate::aws_err)
    };
}

mod firewall;
mod instance;
mod network;
mod subnet;
mod volume;

use std::collections::{BTreeMap, HashMap};
use std::ops::RangeInclusive;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_ec2::Client;
use aws_sdk_ec2::config::{Region, retry::RetryConfig};
use aws_sdk_ec2::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_ec2::types::{Filter, ResourceType, Tag, TagSpecification};
use chimera_model::kinds::Spec;
use chimera_model::{Kind, ProviderName};
use futures_util::StreamExt as _;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use tokio::sync::OnceCell;

use chimera_providers::cloud::{self, ConsistencyWindow, RegionClients, with_consistency};
use chimera_providers::{
    CloudRef, Observed, Provider, ProviderError, Request, Result, TAG_ADDRESS, TAG_STACK,
    TAG_TOKEN, Violation, managed_tags,
};

/// The `providers.aws` settings of a stack.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AwsSettings {
    /// EC2 endpoint (moto, LocalStack); otherwise the SDK's (`AWS_ENDPOINT_URL`, …).
    pub endpoint: Option<String>,
    /// Image family → AMI id, ahead of the catalog's DescribeImages filter.
    pub images: BTreeMap<String, String>,
    /// Regions `list_managed` (orphans) scans besides the default region and those in use.
    pub regions: Vec<String>,
}

impl AwsSettings {
    /// Reads `providers.aws` (`endpoint`, `images`, `regions`); unknown keys are errors.
    pub fn from_settings(settings: &Value) -> std::result::Result<AwsSettings, String> {
        let mut out = AwsSettings::default();
        let Some(aws) = settings.get("aws") else {
            return Ok(out);
        };
        let obj = aws.as_object().ok_or("`providers.aws` must be a record")?;
        for (k, v) in obj {
            match (k.as_str(), v) {
                ("endpoint", Value::String(s)) => out.endpoint = Some(s.clone()),
                ("images", Value::Object(m)) => {
                    for (family, ami) in m {
                        let ami = ami.as_str().ok_or_else(|| {
                            format!("`providers.aws.images.\"{family}\"` must be an AMI id string")
                        })?;
                        out.images.insert(family.clone(), ami.to_string());
                    }
                }
                ("regions", Value::Array(items)) => {
                    for r in items {
                        out.regions.push(
                            r.as_str()
                                .ok_or("`providers.aws.regions` must be an array of strings")?
                                .to_string(),
                        );
                    }
                }
                _ => {
                    return Err(format!(
                        "unknown or mistyped setting `providers.aws.{k}`: the aws provider takes endpoint (string), images (record of AMI ids), regions (array of strings)"
                    ));
                }
            }
        }
        Ok(out)
    }
}

/// How the SDK configuration is obtained: the standard chain, or given (tests).
enum Source {
    Chain,
    Given(Box<aws_config::SdkConfig>),
}

/// The SDK's HTTPS client on rustls with ring, the process's one TLS crypto provider (the SDK's
/// `default-https-client` would bring aws-lc; see [`chimera_providers::install_tls_crypto`]).
pub fn https_client() -> aws_sdk_ec2::config::SharedHttpClient {
    https_client_with(aws_smithy_http_client::tls::TlsContext::default())
}

/// [`https_client`] with another trust store (the default trusts the platform's roots); the TLS
/// tests trust their own self-signed certificate with it (tests/tls.rs).
pub fn https_client_with(
    tls: aws_smithy_http_client::tls::TlsContext,
) -> aws_sdk_ec2::config::SharedHttpClient {
    use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
    aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .tls_context(tls)
        .build_https()
}

pub struct AwsCloud {
    settings: AwsSettings,
    source: Source,
    config: OnceCell<aws_config::SdkConfig>,
    clients: RegionClients<Client>,
    /// Ids this process created lately: "not found" for them is eventual consistency.
    window: ConsistencyWindow,
}

/// The longest a waiter (instance terminated/stopped, volume available) waits.
const MAX_WAIT: Duration = Duration::from_secs(600);
/// How many ids one Describe filter carries (EC2 accepts up to 200 values per filter).
const IDS_PER_FILTER: usize = 200;
/// Describe calls a refresh makes at once: enough to overlap the round trips of its kinds and
/// regions, few enough that a large fleet's refresh (500 calls for 100,000 instances) stays
/// clear of EC2's request-rate throttling.
const DESCRIBES_AT_ONCE: usize = 8;
/// The prefix lengths EC2 allocates for VPC and subnet blocks.
const BLOCK_PREFIXES: RangeInclusive<u8> = 16..=28;
/// Tags EC2 allows on one resource, Chimera's three included.
const MAX_TAGS: usize = 50;
/// EC2's longest tag value, in characters.
const MAX_TAG_VALUE: usize = 256;
/// What EC2 answers when a delete waits on a dependent still going away.
const DEPENDENCY_CODES: &[&str] = &["DependencyViolation"];

impl AwsCloud {
    /// Credentials and default region from the standard AWS chain, loaded on first use.
    pub fn new(settings: AwsSettings) -> Self {
        Self::with_source(settings, Source::Chain)
    }

    /// With a given SDK configuration (static test credentials, for instance).
    pub fn with_config(settings: AwsSettings, config: aws_config::SdkConfig) -> Self {
        Self::with_source(settings, Source::Given(Box::new(config)))
    }

    fn with_source(settings: AwsSettings, source: Source) -> Self {
        AwsCloud {
            settings,
            source,
            config: OnceCell::new(),
            clients: RegionClients::default(),
            window: ConsistencyWindow::default(),
        }
    }

    async fn config(&self) -> &aws_config::SdkConfig {
        self.config
            .get_or_init(|| async {
                match &self.source {
                    Source::Given(c) => c.as_ref().clone(),
                    Source::Chain => {
                        aws_config::defaults(aws_config::BehaviorVersion::latest())
                            .http_client(https_client())
                            .load()
                            .await
                    }
                }
            })
            .await
    }

    /// EC2 in `region`, its client made on first use.
    async fn ec2<'a>(&'a self, region: &'a str) -> Result<Ec2<'a>> {
        let client = self
            .clients
            .get(region, || async {
                let conf = self.config().await;
                let mut b = aws_sdk_ec2::config::Builder::from(conf)
                    .region(Region::new(region.to_string()))
                    // Per request: throttling (RequestLimitExceeded) and transient errors,
                    // jittered exponential backoff. Retrying a whole multi-call operation
                    // instead never gets through steady throttling.
                    .retry_config(
                        RetryConfig::standard()
                            .with_max_attempts(10)
                            .with_initial_backoff(Duration::from_millis(20))
                            .with_max_backoff(Duration::from_secs(5)),
                    );
                if conf.http_client().is_none() {
                    b = b.http_client(https_client());
                }
                if let Some(ep) = &self.settings.endpoint {
                    b = b.endpoint_url(ep);
                }
                Ok(Client::from_conf(b.build()))
            })
            .await?;
        Ok(Ec2 {
            aws: self,
            client,
            region,
        })
    }

    /// The regions to search for a resource whose region is unknown.
    async fn search_order(&self) -> Vec<String> {
        let default = self.config().await.region().map(|r| r.to_string());
        self.clients
            .search_order(default.as_deref(), &self.settings.regions)
    }

    /// Reads the resource `at` points to: straight in its region, or, when that is unknown,
    /// in the first region that has it. Right after this process created it, absence is
    /// eventual consistency, reported as retryable.
    async fn locate(&self, at: &CloudRef) -> Result<Option<Observed>> {
        let found = if at.region.is_empty() {
            cloud::first_hit(self.search_order().await, |region| async move {
                self.ec2(&region).await?.read(at.kind, &at.id).await
            })
            .await?
        } else {
            self.ec2(&at.region).await?.read(at.kind, &at.id).await?
        };
        match found {
            Some(o) => Ok(Some(o)),
            None => self.window.absent(&at.id),
        }
    }

    async fn create_now(&self, req: &Request<'_>) -> Result<Observed> {
        let ec2 = self.ec2(req.native_region).await?;
        let kind = req.spec.kind();
        // Idempotency by tag for every kind (RunInstances and CreateVolume also get ClientToken).
        if let Some(o) = ec2.by_token(kind, req.token).await? {
            return Ok(o);
        }
        let made = match req.spec {
            Spec::Network(s) => network::create(&ec2, req, s).await?,
            Spec::Subnet(s) => subnet::create(&ec2, req, s).await?,
            Spec::Firewall(s) => firewall::create(&ec2, req, s).await?,
            Spec::Instance(s) => instance::create(&ec2, req, s).await?,
            Spec::Volume(s) => volume::create(&ec2, req, s).await?,
        };
        self.window.created(&made.id);
        // What the create's own response describes completely (tags included) needs no read.
        if let Some(o) = made
            .described
            .filter(|o| o.cloud_id == made.id && o.tags.contains_key(TAG_TOKEN))
        {
            return Ok(o);
        }
        with_consistency(|| ec2.read(kind, &made.id))
            .await?
            .ok_or_else(|| ProviderError::Retryable(format!("{} is not visible yet", made.id)))
    }

    async fn update_now(&self, req: &Request<'_>, id: &str) -> Result<Observed> {
        let ec2 = self.ec2(req.native_region).await?;
        let kind = req.spec.kind();
        let current = with_consistency(|| ec2.read(kind, id))
            .await?
            .ok_or_else(|| ProviderError::Failed {
                code: "NotFound".into(),
                message: format!("{} ({id}) does not exist", req.address),
            })?;
        match req.spec {
            // A VPC's block never changes in place (force-new): only its tags do.
            Spec::Network(_) => {}
            Spec::Subnet(s) => subnet::update(&ec2, s, &current).await?,
            Spec::Firewall(s) => firewall::update(&ec2, s, &current).await?,
            Spec::Instance(s) => instance::update(&ec2, req, s, &current).await?,
            Spec::Volume(s) => volume::update(&ec2, s, &current).await?,
        }
        let mut tags = managed_tags(req);
        // The creation token stays: it identifies the create that made this resource.
        if let Some(t) = current.tags.get(TAG_TOKEN) {
            tags.insert(TAG_TOKEN.into(), t.clone());
        }
        ec2.sync_tags(id, &tags, &current.tags).await?;
        with_consistency(|| ec2.read(kind, id))
            .await?
            .ok_or_else(|| ProviderError::Retryable(format!("{id} is not visible")))
    }

    async fn delete_now(&self, at: &CloudRef) -> Result<()> {
        // Absent after a delete is absence, however recent the create.
        self.window.forget(&at.id);
        let Some(current) = self.locate(at).await? else {
            return Ok(());
        };
        let ec2 = self.ec2(&current.native_region).await?;
        let r = match at.kind {
            Kind::Network => network::delete(&ec2, &at.id).await,
            Kind::Subnet => subnet::delete(&ec2, &at.id).await,
            Kind::Firewall => firewall::delete(&ec2, &at.id).await,
            Kind::Instance => instance::delete(&ec2, &at.id).await,
            Kind::Volume => volume::delete(&ec2, &current).await,
        };
        cloud::deleted(r, DEPENDENCY_CODES)
    }

    /// Per kind and region, one Describe call (paged) for up to [`IDS_PER_FILTER`] ids,
    /// filtered by id, a few at once. Only refs whose region is unknown search the regions, in
    /// order, each region asked only for the ids not found yet.
    async fn observe_now(&self, items: &[CloudRef]) -> Result<Vec<Option<Observed>>> {
        let mut found: HashMap<(Kind, String), Observed> = HashMap::new();
        self.describe_batches(cloud::batches(items, IDS_PER_FILTER), &mut found)
            .await?;
        let unknown: Vec<&CloudRef> = items.iter().filter(|at| at.region.is_empty()).collect();
        if !unknown.is_empty() {
            for region in self.search_order().await {
                let missing: Vec<CloudRef> = unknown
                    .iter()
                    .filter(|at| !found.contains_key(&(at.kind, at.id.clone())))
                    .map(|at| CloudRef::new(at.kind, at.id.clone(), region.clone()))
                    .collect();
                if missing.is_empty() {
                    break;
                }
                self.describe_batches(cloud::batches(&missing, IDS_PER_FILTER), &mut found)
                    .await?;
            }
        }
        cloud::in_order(items, &found, &self.window)
    }

    /// Runs the Describe calls of `batches`, [`DESCRIBES_AT_ONCE`] at a time, and adds what
    /// they find to `found`.
    async fn describe_batches(
        &self,
        batches: Vec<cloud::Batch>,
        found: &mut HashMap<(Kind, String), Observed>,
    ) -> Result<()> {
        let calls = batches.into_iter().map(|b| async move {
            let ec2 = self.ec2(&b.region).await?;
            ec2.describe(b.kind, vec![id_filter(b.kind, &b.ids)]).await
        });
        let mut listings = futures_util::stream::iter(calls).buffer_unordered(DESCRIBES_AT_ONCE);
        while let Some(listed) = listings.next().await {
            found.extend(
                listed?
                    .into_iter()
                    .map(|o| ((o.kind, o.cloud_id.clone()), o)),
            );
        }
        Ok(())
    }

    /// The create's own region first: after a crash this process has no client for it, so
    /// the search order alone would miss a resource created outside the default region.
    async fn find_by_token_now(
        &self,
        kind: Kind,
        region: &str,
        token: &str,
    ) -> Result<Option<Observed>> {
        let mut regions = vec![region.to_string()];
        regions.extend(
            self.search_order()
                .await
                .into_iter()
                .filter(|r| r != region),
        );
        regions.retain(|r| !r.is_empty());
        cloud::first_hit(regions, |region| async move {
            self.ec2(&region).await?.by_token(kind, token).await
        })
        .await
    }

    async fn list_managed_now(&self, stack: &str) -> Result<Vec<Observed>> {
        let mut out = Vec::new();
        for region in self.search_order().await {
            let ec2 = self.ec2(&region).await?;
            for kind in Kind::ALL {
                out.extend(
                    ec2.describe(kind, vec![tag_filter(TAG_STACK, stack)])
                        .await?,
                );
            }
        }
        out.sort_by(|a, b| a.tags.get(TAG_ADDRESS).cmp(&b.tags.get(TAG_ADDRESS)));
        Ok(out)
    }
}

/// One region's EC2: what every kind's calls work with.
struct Ec2<'a> {
    /// The provider: its settings (image pins) and its consistency window.
    aws: &'a AwsCloud,
    client: Client,
    /// The region the client answers for, which what it describes reports as its own.
    region: &'a str,
}

impl Ec2<'_> {
    /// Reads one resource by id; `None` if it does not exist (terminated instances count as
    /// absent). Filtered by id rather than asked by id: an unknown or malformed id is then an
    /// empty answer, not an error per kind to translate.
    async fn read(&self, kind: Kind, id: &str) -> Result<Option<Observed>> {
        let found = self
            .describe(kind, vec![id_filter(kind, &[id.to_string()])])
            .await?;
        Ok(found.into_iter().next())
    }

    /// Every resource of `kind` that `filters` select, every page (EC2 pages Describe calls;
    /// moto at 100 instances). Terminated instances are left out.
    async fn describe(&self, kind: Kind, filters: Vec<Filter>) -> Result<Vec<Observed>> {
        match kind {
            Kind::Network => network::describe(self, filters).await,
            Kind::Subnet => subnet::describe(self, filters).await,
            Kind::Firewall => firewall::describe(self, filters).await,
            Kind::Instance => instance::describe(self, filters).await,
            Kind::Volume => volume::describe(self, filters).await,
        }
    }

    /// The resource of `kind` that the create with `token` made, if any.
    async fn by_token(&self, kind: Kind, token: &str) -> Result<Option<Observed>> {
        Ok(self
            .describe(kind, vec![tag_filter(TAG_TOKEN, token)])
            .await?
            .into_iter()
            .next())
    }

    /// Makes resource `id`'s tags exactly `want`, given that they are `have`.
    async fn sync_tags(
        &self,
        id: &str,
        want: &BTreeMap<String, String>,
        have: &BTreeMap<String, String>,
    ) -> Result<()> {
        let set: Vec<Tag> = want
            .iter()
            .filter(|(k, v)| have.get(*k) != Some(v))
            .map(|(k, v)| Tag::builder().key(k).value(v).build())
            .collect();
        let unset: Vec<Tag> = have
            .keys()
            .filter(|k| !want.contains_key(*k))
            .map(|k| Tag::builder().key(k).build())
            .collect();
        if !set.is_empty() {
            self.client
                .create_tags()
                .resources(id)
                .set_tags(Some(set))
                .send()
                .await
                .map_err(aws_err)?;
        }
        if !unset.is_empty() {
            self.client
                .delete_tags()
                .resources(id)
                .set_tags(Some(unset))
                .send()
                .await
                .map_err(aws_err)?;
        }
        Ok(())
    }
}

/// What a kind's create made: its id, and what the create's response said about it, if it
/// describes the resource (used only when complete, tags included).
struct Created {
    id: String,
    described: Option<Observed>,
}

impl Created {
    /// From the id in a create's response; a response without one is an error.
    fn new(id: Option<&str>, req: &Request<'_>, described: Option<Observed>) -> Result<Created> {
        let id = id.ok_or_else(|| ProviderError::Failed {
            code: "EmptyResponse".into(),
            message: format!("EC2 returned no id for {}", req.address),
        })?;
        Ok(Created {
            id: id.to_string(),
            described,
        })
    }
}

#[async_trait]
impl Provider for AwsCloud {
    fn name(&self) -> ProviderName {
        ProviderName::Aws
    }

    fn validate(&self, req: &Request<'_>) -> Vec<Violation> {
        let mut out = tag_limits(req);
        out.extend(match req.spec {
            Spec::Network(_) | Spec::Subnet(_) => cloud::block_sizes(req.spec, BLOCK_PREFIXES),
            Spec::Firewall(s) => firewall::validate(s),
            Spec::Instance(s) => instance::validate(s),
            Spec::Volume(s) => volume::validate(s),
        });
        out
    }

    async fn create(&self, req: &Request<'_>) -> Result<Observed> {
        self.create_now(req).await
    }

    async fn read(&self, at: &CloudRef) -> Result<Option<Observed>> {
        self.locate(at).await
    }

    async fn observe(&self, items: &[CloudRef]) -> Result<Vec<Option<Observed>>> {
        self.observe_now(items).await
    }

    async fn update(&self, req: &Request<'_>, cloud_id: &str) -> Result<Observed> {
        self.update_now(req, cloud_id).await
    }

    async fn delete(&self, at: &CloudRef) -> Result<()> {
        self.delete_now(at).await
    }

    async fn find_by_token(
        &self,
        kind: Kind,
        region: &str,
        token: &str,
    ) -> Result<Option<Observed>> {
        self.find_by_token_now(kind, region, token).await
    }

    async fn list_managed(&self, stack: &str) -> Result<Vec<Observed>> {
        self.list_managed_now(stack).await
    }
}

/// EC2's tag limits: at most 50 tags per resource (Chimera adds three), keys not in AWS's
/// reserved `aws:` namespace, values at most 256 characters. (Key lengths and the `chimera-`
/// prefix are the compiler's checks.)
fn tag_limits(req: &Request<'_>) -> Vec<Violation> {
    let mut out = Vec::new();
    let ours = [TAG_STACK, TAG_ADDRESS, TAG_TOKEN];
    let yours = req
        .tags
        .keys()
        .filter(|k| !ours.contains(&k.as_str()))
        .count();
    let allowed = MAX_TAGS - ours.len();
    if yours > allowed {
        out.push(Violation::new(
            "tags",
            format!(
                "EC2 allows {MAX_TAGS} tags per resource and Chimera adds {} ({}), so at most {allowed} of yours; this resource has {yours}: remove {}",
                ours.len(),
                ours.join(", "),
                yours - allowed
            ),
        ));
    }
    for (k, v) in req.tags {
        if k.to_ascii_lowercase().starts_with("aws:") {
            out.push(Violation::new(
                "tags",
                format!("tag key \"{k}\": the `aws:` prefix is reserved for AWS; rename the tag"),
            ));
        }
        let n = v.chars().count();
        if n > MAX_TAG_VALUE {
            out.push(Violation::new(
                "tags",
                format!(
                    "tag \"{k}\" has a value of {n} characters; EC2 allows at most {MAX_TAG_VALUE}: shorten it"
                ),
            ));
        }
    }
    out
}

/// A `TagSpecification` that tags a `resource` at creation with `req`'s tags and Chimera's.
fn tagging(resource: ResourceType, req: &Request<'_>) -> TagSpecification {
    TagSpecification::builder()
        .resource_type(resource)
        .set_tags(Some(
            managed_tags(req)
                .iter()
                .map(|(k, v)| Tag::builder().key(k).value(v).build())
                .collect(),
        ))
        .build()
}

/// The Describe filter that selects resources of `kind` by id.
fn id_filter(kind: Kind, ids: &[String]) -> Filter {
    let name = match kind {
        Kind::Network => network::ID_FILTER,
        Kind::Subnet => subnet::ID_FILTER,
        Kind::Firewall => firewall::ID_FILTER,
        Kind::Instance => instance::ID_FILTER,
        Kind::Volume => volume::ID_FILTER,
    };
    Filter::builder()
        .name(name)
        .set_values(Some(ids.to_vec()))
        .build()
}

fn tag_filter(key: &str, value: &str) -> Filter {
    Filter::builder()
        .name(format!("tag:{key}"))
        .values(value)
        .build()
}

/// The availability zone of a zone letter (`a` by default) in `region`.
fn zone_in(region: &str, zone: &str) -> String {
    format!("{region}{}", if zone.is_empty() { "a" } else { zone })
}

/// The zone letter of an availability zone in `region` (what specs and state rows hold).
fn zone_letter<'z>(region: &str, zone: Option<&'z str>) -> &'z str {
    zone.and_then(|z| z.strip_prefix(region))
        .unwrap_or_default()
}

fn tags_of(tags: &[Tag]) -> BTreeMap<String, String> {
    tags.iter()
        .filter_map(|t| {
            Some((
                t.key()?.to_string(),
                t.value().unwrap_or_default().to_string(),
            ))
        })
        .collect()
}

/// An observed resource: `attrs` is the kind's observed attributes (a struct whose JSON is the
/// shape drift detection compares with state rows); `id` goes into the outputs too.
fn observed(
    kind: Kind,
    id: Option<&str>,
    region: &str,
    attrs: impl Serialize,
    mut outputs: Map<String, Value>,
    tags: &[Tag],
) -> Observed {
    let id = id.unwrap_or_default();
    outputs.insert("id".into(), Value::String(id.to_string()));
    Observed {
        cloud_id: id.to_string(),
        kind,
        native_region: region.to_string(),
        attrs: match serde_json::to_value(attrs) {
            Ok(Value::Object(m)) => m,
            _ => Map::new(),
        },
        outputs,
        tags: tags_of(tags),
    }
}

/// The observed attributes of `current` as its kind's typed struct (they were made from one).
fn attrs_of<T: DeserializeOwned>(current: &Observed) -> Result<T> {
    T::deserialize(&current.attrs).map_err(|e| ProviderError::Failed {
        code: "UnreadableObservation".into(),
        message: format!(
            "{} {}: observed attributes do not match their shape: {e}",
            current.kind, current.cloud_id
        ),
    })
}

/// AWS errors as provider errors: the AWS error code stays visible; throttling, server-side
/// trouble and timeouts are retryable.
pub fn aws_err<E>(e: SdkError<E, aws_sdk_ec2::config::http::HttpResponse>) -> ProviderError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let code = e.code().map(str::to_string);
    let server_error = e
        .raw_response()
        .is_some_and(|r| r.status().is_server_error());
    let message = e
        .message()
        .map(str::to_string)
        .unwrap_or_else(|| DisplayErrorContext(&e).to_string());
    match (&e, code) {
        (SdkError::TimeoutError(_), _) => {
            ProviderError::Retryable(format!("EC2 timed out: {message}"))
        }
        (SdkError::DispatchFailure(d), _) if d.is_timeout() => {
            ProviderError::Retryable(format!("EC2 timed out: {message}"))
        }
        (SdkError::DispatchFailure(_), _) => ProviderError::Failed {
            code: "ConnectionError".into(),
            message: format!(
                "cannot reach EC2 ({message}); check the endpoint (AWS_ENDPOINT_URL or providers.aws.endpoint) and the network"
            ),
        },
        (_, Some(code)) if retryable_code(&code) => {
            ProviderError::Retryable(format!("{code}: {message}"))
        }
        (_, None) if server_error => {
            ProviderError::Retryable(format!("EC2 server error: {message}"))
        }
        (SdkError::ResponseError(_), None) => {
            ProviderError::Retryable(format!("unreadable EC2 response: {message}"))
        }
        (_, Some(code)) => ProviderError::Failed { code, message },
        (_, None) => ProviderError::Failed {
            code: "AwsError".into(),
            message,
        },
    }
}

fn retryable_code(code: &str) -> bool {
    matches!(
        code,
        "RequestLimitExceeded"
            | "Throttling"
            | "ThrottlingException"
            | "RequestThrottled"
            | "InternalError"
            | "InternalFailure"
            | "ServiceUnavailable"
            | "Unavailable"
            | "IncorrectState"
            | "IncorrectInstanceState"
    )
}

fn wait_err<E: std::fmt::Debug>(what: &str, e: E) -> ProviderError {
    ProviderError::Retryable(format!("waiting for {what} failed: {e:?}"))
}

#[cfg(test)]
mod tests;
