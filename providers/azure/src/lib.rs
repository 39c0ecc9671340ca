//! `chimera-azure`: the Azure provider, on Azure Resource Manager's REST API over reqwest (the
//! client the rest of Chimera uses), with `azure_identity` for credentials. Why not the generated
//! `azure_mgmt_*` crates: docs/ARCHITECTURE.md, the decision "the Azure provider calls ARM over
//! reqwest".
//!
//! network → virtual network, subnet → a subnet of it, firewall → network security group with
//! its rules, instance → network interface + Linux VM, volume → managed disk attached through the
//! VM's data disks; one file per kind ([`network`], …) with its create, update, delete, listing
//! and limits; [`arm`] holds the HTTP and the long-running-operation protocol. This file holds
//! settings, naming, tags, and the [`Provider`] impl, which dispatches each verb to the kind.
//!
//! **Naming.** What Chimera creates lives in one resource group per stack and region,
//! `chimera-{stack}-{region}`, created on first use and deleted when its last resource is.
//! Every resource is named `{address name}-{8 hex of its token}`: a create whose response was
//! lost is sent again with the same token, so it PUTs the same name, and ARM's PUT (create or
//! update) converges instead of duplicating. A replacement has a new token, so a new name.
//!
//! **Tags.** Every resource carries the stack, address and token tags, so `find_by_token` and
//! `list_managed` use the subscription's tag filter. Subnets have no tags in ARM: a subnet's
//! tags are kept on its virtual network as `chimera-subnet.{subnet}.{key}` (see
//! [`subnet_tag_key`]), changed with the tags API's Merge and Delete so that concurrent subnets
//! do not overwrite each other.
//!
//! ARM identifiers are global, so reads and deletes need no region: an import by bare id works as
//! is. Refreshes list each kind once per resource group ([`chimera_providers::cloud::batches`]).

mod arm;
mod firewall;
mod instance;
mod network;
mod subnet;
mod volume;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chimera_model::kinds::Spec;
use chimera_model::{Kind, ProviderName};
use futures_util::StreamExt as _;
use reqwest::Method;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};
use tokio::sync::OnceCell;

use arm::Arm;
use chimera_providers::cloud::{self, ConsistencyWindow, with_consistency};
use chimera_providers::{
    CloudRef, Observed, Provider, ProviderError, Request, Result, TAG_ADDRESS, TAG_STACK,
    TAG_TOKEN, Violation, managed_tags,
};

/// The public cloud's ARM.
pub const DEFAULT_ENDPOINT: &str = "https://management.azure.com";
const NETWORK_API: &str = "2024-05-01";
const COMPUTE_API: &str = "2024-07-01";
const DISK_API: &str = "2024-03-02";
const RESOURCES_API: &str = "2021-04-01";
/// Tags ARM allows on one resource, Chimera's three included.
const MAX_TAGS: usize = 50;
/// ARM's longest tag value, in characters.
const MAX_TAG_VALUE: usize = 256;
/// Virtual network and subnet prefix lengths Azure accepts.
const BLOCK_PREFIXES: std::ops::RangeInclusive<u8> = 8..=29;
/// What ARM answers when a delete waits on a dependent still going away.
const DEPENDENCY_CODES: &[&str] = &[
    "InUseSubnetCannotBeDeleted",
    "InUseNetworkSecurityGroupCannotBeDeleted",
    "NicInUse",
];
/// Listings a refresh makes at once.
const LISTINGS_AT_ONCE: usize = 8;
/// The prefix of a subnet's tags kept on its virtual network.
const SUBNET_TAG_PREFIX: &str = "chimera-subnet.";

/// How the provider gets its token.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CredentialKind {
    /// A service principal from AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET when
    /// they are set, else the developer tools (Azure CLI, then Azure Developer CLI).
    #[default]
    Auto,
    /// The Azure CLI or Azure Developer CLI's sign-in.
    Cli,
    /// The managed identity of the machine Chimera runs on.
    ManagedIdentity,
    /// No token: for the in-repo fake of ARM only.
    None,
}

/// The `providers.azure` settings of a stack.
#[derive(Debug, Clone, PartialEq)]
pub struct AzureSettings {
    /// The subscription everything is created in (or AZURE_SUBSCRIPTION_ID).
    pub subscription: Option<String>,
    /// ARM's endpoint: the public cloud's by default, the fake's in tests.
    pub endpoint: String,
    pub credential: CredentialKind,
    /// The longest wait between polls of an operation and after a 429, whatever ARM's
    /// `Retry-After` says (tests make it short).
    pub max_poll_interval: Duration,
    /// The VMs' administrator.
    pub admin_username: String,
    /// The administrator's SSH public key (Azure needs one for a Linux VM without password).
    pub ssh_public_key: Option<String>,
    /// Image family → `publisher:offer:sku:version`, ahead of the catalog's.
    pub images: BTreeMap<String, String>,
}

impl Default for AzureSettings {
    fn default() -> Self {
        AzureSettings {
            subscription: None,
            endpoint: DEFAULT_ENDPOINT.into(),
            credential: CredentialKind::Auto,
            max_poll_interval: Duration::from_secs(60),
            admin_username: "chimera".into(),
            ssh_public_key: None,
            images: BTreeMap::new(),
        }
    }
}

impl AzureSettings {
    /// Reads `providers.azure`; the subscription falls back to AZURE_SUBSCRIPTION_ID in `env`.
    /// Unknown keys are errors.
    pub fn from_settings(
        settings: &Value,
        env: &BTreeMap<String, String>,
    ) -> std::result::Result<AzureSettings, String> {
        let mut out = AzureSettings {
            subscription: env.get("AZURE_SUBSCRIPTION_ID").cloned(),
            ..AzureSettings::default()
        };
        let Some(az) = settings.get("azure") else {
            return Ok(out);
        };
        let obj = az.as_object().ok_or("`providers.azure` must be a record")?;
        let takes = "the azure provider takes subscription (string), endpoint (string), credential (\"auto\", \"cli\", \"managed-identity\" or \"none\"), max_poll_interval_ms (number), admin_username (string), ssh_public_key (string), images (record of publisher:offer:sku:version)";
        for (k, v) in obj {
            match (k.as_str(), v) {
                ("subscription", Value::String(s)) => out.subscription = Some(s.clone()),
                ("endpoint", Value::String(s)) => out.endpoint = s.trim_end_matches('/').into(),
                ("credential", Value::String(s)) => {
                    out.credential = match s.as_str() {
                        "auto" => CredentialKind::Auto,
                        "cli" => CredentialKind::Cli,
                        "managed-identity" => CredentialKind::ManagedIdentity,
                        "none" => CredentialKind::None,
                        other => {
                            return Err(format!(
                                "`providers.azure.credential` is \"{other}\"; {takes}"
                            ));
                        }
                    }
                }
                ("max_poll_interval_ms", Value::Number(n)) => {
                    let ms = n.as_u64().ok_or(
                        "`providers.azure.max_poll_interval_ms` must be a whole number of milliseconds",
                    )?;
                    out.max_poll_interval = Duration::from_millis(ms);
                }
                ("admin_username", Value::String(s)) => out.admin_username = s.clone(),
                ("ssh_public_key", Value::String(s)) => out.ssh_public_key = Some(s.clone()),
                ("images", Value::Object(m)) => {
                    for (family, r) in m {
                        let r = r.as_str().filter(|r| image_reference(r).is_some()).ok_or_else(|| {
                            format!("`providers.azure.images.\"{family}\"` must be \"publisher:offer:sku:version\"")
                        })?;
                        out.images.insert(family.clone(), r.to_string());
                    }
                }
                _ => {
                    return Err(format!(
                        "unknown or mistyped setting `providers.azure.{k}`: {takes}"
                    ));
                }
            }
        }
        Ok(out)
    }
}

pub struct AzureCloud {
    settings: AzureSettings,
    arm: OnceCell<Arm>,
    /// Resource groups known to exist (lowercase names).
    groups: Mutex<HashSet<String>>,
    /// Ids this process created lately: "not found" for them is eventual consistency.
    window: ConsistencyWindow,
}

/// A resource's place in ARM, from its id.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Parsed {
    group: String,
    /// The last name in the id (the subnet's, for a subnet).
    name: String,
}

fn parse_id(id: &str) -> Option<Parsed> {
    let segs: Vec<&str> = id.split('/').filter(|s| !s.is_empty()).collect();
    let g = segs
        .iter()
        .position(|s| s.eq_ignore_ascii_case("resourceGroups"))?;
    Some(Parsed {
        group: segs.get(g + 1)?.to_string(),
        name: segs.last()?.to_string(),
    })
}

/// The ARM resource type of a kind (subnets are children of virtual networks).
fn arm_type(kind: Kind) -> &'static str {
    match kind {
        Kind::Network | Kind::Subnet => network::TYPE,
        Kind::Firewall => firewall::TYPE,
        Kind::Instance => instance::TYPE,
        Kind::Volume => volume::TYPE,
    }
}

/// The resource group of `stack`'s resources in `region`: `chimera-{stack}-{region}`, with what
/// ARM does not allow in a group name made `-`, at most 90 characters.
pub fn group_name(stack: &str, region: &str) -> String {
    let raw = format!("chimera-{stack}-{region}");
    let clean: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '(' | ')') {
                c
            } else {
                '-'
            }
        })
        .take(90)
        .collect();
    clean.trim_end_matches('.').to_string()
}

/// The name a create with `token` gives the resource at address name `name`: the address name
/// (cut to fit `max`) and 8 hex digits of the token's hash. Deterministic: a create sent again
/// after a lost response names the same resource.
pub fn resource_name(name: &str, token: &str, max: usize) -> String {
    let hash = blake3::hash(token.as_bytes()).to_hex();
    let keep: String = name.chars().take(max.saturating_sub(9)).collect();
    let keep = keep.trim_end_matches(['.', '-']);
    format!("{keep}-{}", &hash[..8])
}

/// The key under which subnet `subnet`'s tag `key` is kept on its virtual network.
pub fn subnet_tag_key(subnet: &str, key: &str) -> String {
    format!("{SUBNET_TAG_PREFIX}{subnet}.{key}")
}

/// `publisher:offer:sku:version` as ARM's image reference.
fn image_reference(r: &str) -> Option<Value> {
    let parts: Vec<&str> = r.split(':').collect();
    match parts.as_slice() {
        [publisher, offer, sku, version] if parts.iter().all(|p| !p.is_empty()) => Some(json!({
            "publisher": publisher, "offer": offer, "sku": sku, "version": version,
        })),
        _ => None,
    }
}

impl AzureCloud {
    /// With `settings`; without a subscription there, AZURE_SUBSCRIPTION_ID (read now, like the
    /// credential chain reads its variables).
    pub fn new(mut settings: AzureSettings) -> Self {
        if settings.subscription.is_none() {
            settings.subscription = std::env::var("AZURE_SUBSCRIPTION_ID")
                .ok()
                .filter(|s| !s.is_empty());
        }
        AzureCloud {
            settings,
            arm: OnceCell::new(),
            groups: Mutex::default(),
            window: ConsistencyWindow::default(),
        }
    }

    /// The ARM client, its credential made on first use (stacks without 'azure never make one).
    async fn arm(&self) -> Result<&Arm> {
        self.arm
            .get_or_try_init(|| async {
                chimera_providers::install_tls_crypto();
                let credential = credential(self.settings.credential)?;
                let http = reqwest::Client::builder()
                    .connect_timeout(Duration::from_secs(10))
                    .timeout(Duration::from_secs(120))
                    .build()
                    .map_err(|e| ProviderError::Failed {
                        code: "ClientError".into(),
                        message: format!("cannot make an HTTP client: {e}"),
                    })?;
                let scope = if self.settings.endpoint == DEFAULT_ENDPOINT {
                    format!("{DEFAULT_ENDPOINT}/.default")
                } else {
                    format!("{}/.default", self.settings.endpoint)
                };
                Ok(Arm {
                    http,
                    endpoint: self.settings.endpoint.clone(),
                    credential,
                    scope,
                    max_poll: self.settings.max_poll_interval,
                })
            })
            .await
    }

    fn subscription(&self) -> Result<&str> {
        self.settings
            .subscription
            .as_deref()
            .ok_or_else(|| ProviderError::Failed {
                code: "NoSubscription".into(),
                message: "no Azure subscription: set `providers.azure.subscription` or AZURE_SUBSCRIPTION_ID".into(),
            })
    }

    fn group_path(&self, group: &str) -> Result<String> {
        Ok(format!(
            "/subscriptions/{}/resourceGroups/{group}",
            self.subscription()?
        ))
    }

    /// The id of resource `name` of ARM type `ty` in `group`.
    fn id_of(&self, group: &str, ty: &str, name: &str) -> Result<String> {
        Ok(format!("{}/providers/{ty}/{name}", self.group_path(group)?))
    }

    /// Makes sure `group` exists (in `region`, tagged with the stack), once per process.
    async fn ensure_group(&self, group: &str, stack: &str, region: &str) -> Result<()> {
        let key = group.to_ascii_lowercase();
        if self.lock_groups().contains(&key) {
            return Ok(());
        }
        let body = json!({
            "location": region,
            "tags": { TAG_STACK: stack, "chimera-managed": "true" },
        });
        self.arm()
            .await?
            .write(
                Method::PUT,
                &self.group_path(group)?,
                RESOURCES_API,
                &body,
                None,
            )
            .await?;
        self.lock_groups().insert(key);
        Ok(())
    }

    /// Deletes `group` if Chimera made it and nothing is left in it.
    async fn drop_group_if_empty(&self, group: &str) -> Result<()> {
        let arm = self.arm().await?;
        let path = self.group_path(group)?;
        let Some(g) = arm.get(&path, RESOURCES_API).await? else {
            return Ok(());
        };
        if g.pointer("/tags/chimera-managed").and_then(Value::as_str) != Some("true") {
            return Ok(());
        }
        let left = arm
            .list(&format!("{path}/resources"), RESOURCES_API)
            .await?;
        if left.is_empty() {
            self.lock_groups().remove(&group.to_ascii_lowercase());
            // Not waited for: a create meanwhile is refused (ResourceGroupBeingDeleted,
            // retryable) and makes the group again once it is gone.
            arm.call(Method::DELETE, &path, RESOURCES_API, None, None)
                .await?;
        }
        Ok(())
    }

    fn lock_groups(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.groups.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A create, where the resource group may have gone meanwhile: the cache is forgotten and
    /// the error is retryable.
    fn forget_group_on(&self, group: &str, e: ProviderError) -> ProviderError {
        match &e {
            ProviderError::Failed { code, message } if code == "ResourceGroupNotFound" => {
                self.lock_groups().remove(&group.to_ascii_lowercase());
                ProviderError::Retryable(format!("{code}: {message}"))
            }
            ProviderError::Retryable(m) if m.starts_with("ResourceGroupBeingDeleted") => {
                self.lock_groups().remove(&group.to_ascii_lowercase());
                e
            }
            _ => e,
        }
    }

    /// Reads one resource by id; `None` if it does not exist.
    async fn read_id(&self, kind: Kind, id: &str) -> Result<Option<Observed>> {
        match kind {
            Kind::Network => network::read(self, id).await,
            Kind::Subnet => subnet::read(self, id).await,
            Kind::Firewall => firewall::read(self, id).await,
            Kind::Instance => instance::read(self, id).await,
            Kind::Volume => volume::read(self, id).await,
        }
    }

    async fn locate(&self, at: &CloudRef) -> Result<Option<Observed>> {
        match self.read_id(at.kind, &at.id).await? {
            Some(o) => Ok(Some(o)),
            None => self.window.absent(&at.id),
        }
    }

    async fn create_now(&self, req: &Request<'_>) -> Result<Observed> {
        let kind = req.spec.kind();
        let id = match req.spec {
            Spec::Subnet(s) => subnet::create(self, req, s).await?,
            spec => {
                let group = group_name(req.stack, req.native_region);
                self.ensure_group(&group, req.stack, req.native_region)
                    .await?;
                let made = match spec {
                    Spec::Network(s) => network::create(self, req, &group, s).await,
                    Spec::Firewall(s) => firewall::create(self, req, &group, s).await,
                    Spec::Instance(s) => instance::create(self, req, &group, s).await,
                    Spec::Volume(s) => volume::create(self, req, &group, s).await,
                    Spec::Subnet(_) => unreachable!("subnets are created in their network"),
                };
                made.map_err(|e| self.forget_group_on(&group, e))?
            }
        };
        self.window.created(&id);
        with_consistency(|| self.read_id(kind, &id))
            .await?
            .ok_or_else(|| ProviderError::Retryable(format!("{id} is not visible yet")))
    }

    async fn update_now(&self, req: &Request<'_>, id: &str) -> Result<Observed> {
        let kind = req.spec.kind();
        let current = with_consistency(|| self.read_id(kind, id))
            .await?
            .ok_or_else(|| ProviderError::Failed {
                code: "ResourceNotFound".into(),
                message: format!("{} ({id}) does not exist", req.address),
            })?;
        match req.spec {
            // A virtual network's block is force-new: only its tags change.
            Spec::Network(_) => {}
            Spec::Subnet(s) => subnet::update(self, s, &current).await?,
            Spec::Firewall(s) => firewall::update(self, s, &current).await?,
            Spec::Instance(s) => instance::update(self, req, s, &current).await?,
            Spec::Volume(s) => volume::update(self, s, &current).await?,
        }
        let mut tags = managed_tags(req);
        // The creation token stays: it identifies the create that made this resource.
        if let Some(t) = current.tags.get(TAG_TOKEN) {
            tags.insert(TAG_TOKEN.into(), t.clone());
        }
        match kind {
            Kind::Subnet => subnet::sync_tags(self, id, &tags, &current.tags).await?,
            Kind::Instance => instance::sync_tags(self, id, &tags, &current.tags).await?,
            _ => self.sync_tags(id, &tags, &current.tags).await?,
        }
        with_consistency(|| self.read_id(kind, id))
            .await?
            .ok_or_else(|| ProviderError::Retryable(format!("{id} is not visible")))
    }

    async fn delete_now(&self, at: &CloudRef) -> Result<()> {
        // Absent after a delete is absence, however recent the create.
        self.window.forget(&at.id);
        let Some(current) = self.read_id(at.kind, &at.id).await? else {
            return Ok(());
        };
        let r = match at.kind {
            Kind::Network => self.delete_id(&at.id, NETWORK_API).await,
            Kind::Subnet => subnet::delete(self, &current).await,
            Kind::Firewall => self.delete_id(&at.id, NETWORK_API).await,
            Kind::Instance => instance::delete(self, &current).await,
            Kind::Volume => volume::delete(self, &current).await,
        };
        cloud::deleted(r, DEPENDENCY_CODES)?;
        if at.kind != Kind::Subnet
            && let Some(p) = parse_id(&at.id)
        {
            self.drop_group_if_empty(&p.group).await?;
        }
        Ok(())
    }

    async fn delete_id(&self, id: &str, api: &str) -> Result<()> {
        self.arm().await?.delete(id, api).await
    }

    /// Per kind and resource group, one listing, a few at once; answers in the order asked.
    async fn observe_now(&self, items: &[CloudRef]) -> Result<Vec<Option<Observed>>> {
        // Batched by resource group: it stands in the region's place.
        let by_group: Vec<CloudRef> = items
            .iter()
            .filter_map(|at| {
                parse_id(&at.id).map(|p| {
                    CloudRef::new(
                        at.kind,
                        at.id.to_ascii_lowercase(),
                        p.group.to_ascii_lowercase(),
                    )
                })
            })
            .collect();
        let calls = cloud::batches(&by_group, usize::MAX)
            .into_iter()
            .map(|b| async move { self.list_in_group(b.kind, &b.region).await });
        let mut listings = futures_util::stream::iter(calls).buffer_unordered(LISTINGS_AT_ONCE);
        let mut found: HashMap<(Kind, String), Observed> = HashMap::new();
        while let Some(listed) = listings.next().await {
            for o in listed? {
                found.insert((o.kind, o.cloud_id.to_ascii_lowercase()), o);
            }
        }
        // Ids are case-insensitive in ARM: matched as such, answered under the id asked.
        let asked: HashMap<(Kind, String), Observed> = items
            .iter()
            .filter_map(|at| {
                let o = found.get(&(at.kind, at.id.to_ascii_lowercase()))?;
                Some(((at.kind, at.id.clone()), o.clone()))
            })
            .collect();
        cloud::in_order(items, &asked, &self.window)
    }

    /// Every resource of `kind` in `group` (none when the group is gone).
    async fn list_in_group(&self, kind: Kind, group: &str) -> Result<Vec<Observed>> {
        match kind {
            Kind::Network => network::list(self, group).await,
            Kind::Subnet => subnet::list(self, group).await,
            Kind::Firewall => firewall::list(self, group).await,
            Kind::Instance => instance::list(self, group).await,
            Kind::Volume => volume::list(self, group).await,
        }
    }

    /// The subscription's resources tagged `key = value` (top-level resources only).
    async fn tagged(&self, key: &str, value: &str) -> Result<Vec<Value>> {
        let filter = format!(
            "tagName eq '{key}' and tagValue eq '{}'",
            value.replace('\'', "''")
        );
        let path = format!(
            "/subscriptions/{}/resources?$filter={}",
            self.subscription()?,
            encode(&filter)
        );
        self.arm().await?.list(&path, RESOURCES_API).await
    }

    async fn find_by_token_now(&self, kind: Kind, token: &str) -> Result<Option<Observed>> {
        if kind == Kind::Subnet {
            return subnet::by_token(self, token).await;
        }
        let ty = arm_type(kind);
        let tagged = self.tagged(TAG_TOKEN, token).await?;
        let of_type = |t: &'static str| {
            tagged.iter().filter(move |r| {
                r.get("type")
                    .and_then(Value::as_str)
                    .is_some_and(|x| x.eq_ignore_ascii_case(t))
            })
        };
        for r in of_type(ty) {
            if let Some(id) = r.get("id").and_then(Value::as_str)
                && let Some(o) = self.read_id(kind, id).await?
            {
                return Ok(Some(o));
            }
        }
        if kind == Kind::Instance {
            // The create stopped between its interface and its VM: the interface goes, and the
            // instance provably does not exist.
            for nic in of_type(instance::NIC_TYPE) {
                if let Some(id) = nic.get("id").and_then(Value::as_str) {
                    self.delete_id(id, NETWORK_API).await?;
                }
            }
        }
        Ok(None)
    }

    async fn list_managed_now(&self, stack: &str) -> Result<Vec<Observed>> {
        // No subscription configured: nothing of any stack can be in Azure (a stack that never
        // uses 'azure is listed across every provider by `orphans` and drift adoption).
        if self.settings.subscription.is_none() {
            return Ok(Vec::new());
        }
        let mut refs = Vec::new();
        for r in self.tagged(TAG_STACK, stack).await? {
            let (Some(id), Some(ty)) = (
                r.get("id").and_then(Value::as_str),
                r.get("type").and_then(Value::as_str),
            ) else {
                continue;
            };
            let kind = [Kind::Network, Kind::Firewall, Kind::Instance, Kind::Volume]
                .into_iter()
                .find(|k| arm_type(*k).eq_ignore_ascii_case(ty));
            if let Some(kind) = kind {
                refs.push(CloudRef::new(kind, id, ""));
            }
        }
        let mut out: Vec<Observed> = self
            .observe_now(&refs)
            .await?
            .into_iter()
            .flatten()
            .collect();
        out.extend(subnet::managed(self, stack).await?);
        out.retain(|o| o.tags.get(TAG_STACK).map(String::as_str) == Some(stack));
        out.sort_by(|a, b| a.tags.get(TAG_ADDRESS).cmp(&b.tags.get(TAG_ADDRESS)));
        Ok(out)
    }

    /// Makes resource `id`'s tags exactly `want`, given that they are `have`: the tags API's
    /// Merge and Delete, which leave other keys alone.
    async fn sync_tags(
        &self,
        id: &str,
        want: &BTreeMap<String, String>,
        have: &BTreeMap<String, String>,
    ) -> Result<()> {
        let set: Map<String, Value> = want
            .iter()
            .filter(|(k, v)| have.get(*k) != Some(v))
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        let unset: Map<String, Value> = have
            .iter()
            .filter(|(k, _)| !want.contains_key(*k))
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        self.change_tags(id, set, unset).await
    }

    /// Merges `set` into and deletes `unset` from resource `id`'s tags.
    async fn change_tags(
        &self,
        id: &str,
        set: Map<String, Value>,
        unset: Map<String, Value>,
    ) -> Result<()> {
        let arm = self.arm().await?;
        let path = format!("{id}/providers/Microsoft.Resources/tags/default");
        for (operation, tags) in [("Merge", set), ("Delete", unset)] {
            if tags.is_empty() {
                continue;
            }
            let body = json!({ "operation": operation, "properties": { "tags": tags } });
            arm.write(Method::PATCH, &path, RESOURCES_API, &body, None)
                .await?;
        }
        Ok(())
    }
}

/// Percent-encoding of a query value.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            b => format!("%{b:02X}"),
        })
        .collect()
}

fn credential(
    kind: CredentialKind,
) -> Result<Option<Arc<dyn azure_core::credentials::TokenCredential>>> {
    use azure_core::credentials::TokenCredential;
    use azure_identity::{
        ClientSecretCredential, DeveloperToolsCredential, ManagedIdentityCredential,
    };
    let failed = |e: azure_core::Error| ProviderError::Failed {
        code: "AuthenticationFailed".into(),
        message: format!("cannot set up the Azure credential: {e}"),
    };
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let made: Arc<dyn TokenCredential> = match kind {
        CredentialKind::None => return Ok(None),
        CredentialKind::ManagedIdentity => ManagedIdentityCredential::new(None).map_err(failed)?,
        CredentialKind::Cli => DeveloperToolsCredential::new(None).map_err(failed)?,
        CredentialKind::Auto => match (
            env("AZURE_TENANT_ID"),
            env("AZURE_CLIENT_ID"),
            env("AZURE_CLIENT_SECRET"),
        ) {
            (Some(tenant), Some(client), Some(secret)) => {
                ClientSecretCredential::new(&tenant, client, secret.into(), None).map_err(failed)?
            }
            _ => DeveloperToolsCredential::new(None).map_err(failed)?,
        },
    };
    Ok(Some(made))
}

#[async_trait]
impl Provider for AzureCloud {
    fn name(&self) -> ProviderName {
        ProviderName::Azure
    }

    fn validate(&self, req: &Request<'_>) -> Vec<Violation> {
        let mut out = tag_limits(req);
        out.extend(match req.spec {
            Spec::Network(_) | Spec::Subnet(_) => cloud::block_sizes(req.spec, BLOCK_PREFIXES),
            Spec::Firewall(s) => firewall::validate(s),
            Spec::Instance(s) => instance::validate(self, req, s),
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
        _region: &str,
        token: &str,
    ) -> Result<Option<Observed>> {
        // ARM's tag filter covers the whole subscription: no region to search.
        self.find_by_token_now(kind, token).await
    }

    async fn list_managed(&self, stack: &str) -> Result<Vec<Observed>> {
        self.list_managed_now(stack).await
    }
}

/// ARM's tag limits: 50 per resource (Chimera adds three), values of at most 256 characters,
/// names without `<>%&\?/`.
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
                "Azure allows {MAX_TAGS} tags per resource and Chimera adds {}, so at most {allowed} of yours; this resource has {yours}: remove {}",
                ours.len(),
                yours - allowed
            ),
        ));
    }
    for (k, v) in req.tags {
        if k.chars().any(|c| "<>%&\\?/".contains(c)) {
            out.push(Violation::new(
                "tags",
                format!(
                    "tag key \"{k}\": Azure tag names cannot contain < > % & \\ ? /; rename the tag"
                ),
            ));
        }
        let n = v.chars().count();
        if n > MAX_TAG_VALUE {
            out.push(Violation::new(
                "tags",
                format!("tag \"{k}\" has a value of {n} characters; Azure allows at most {MAX_TAG_VALUE}: shorten it"),
            ));
        }
    }
    out
}

/// A resource's string tags.
fn tags_of(body: &Value) -> BTreeMap<String, String> {
    body.get("tags")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// An observed resource: `attrs` is the kind's observed attributes (a struct whose JSON is the
/// shape drift detection compares with state rows); `id` goes into the outputs too.
fn observed(
    kind: Kind,
    body: &Value,
    attrs: impl Serialize,
    mut outputs: Map<String, Value>,
    tags: BTreeMap<String, String>,
) -> Observed {
    let id = body.get("id").and_then(Value::as_str).unwrap_or_default();
    outputs.insert("id".into(), Value::String(id.to_string()));
    Observed {
        cloud_id: id.to_string(),
        kind,
        native_region: body
            .get("location")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        attrs: match serde_json::to_value(attrs) {
            Ok(Value::Object(m)) => m,
            _ => Map::new(),
        },
        outputs,
        tags,
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

/// `resources` of `kind` read from a listing, those still being deleted left out.
fn live(items: Vec<Value>) -> impl Iterator<Item = Value> {
    items
        .into_iter()
        .filter(|r| arm::provisioning_state(r) != "Deleting")
}

/// Lists `ty` in `group`; a group that is gone has nothing.
async fn list_type(az: &AzureCloud, group: &str, ty: &str, api: &str) -> Result<Vec<Value>> {
    let path = format!("{}/providers/{ty}", az.group_path(group)?);
    match az.arm().await?.list(&path, api).await {
        Err(e) if e.class() == chimera_providers::FailureClass::NotFound => Ok(Vec::new()),
        other => Ok(live(other?).collect()),
    }
}

/// GET of `id`, `None` when it is absent or being deleted.
async fn get_live(az: &AzureCloud, id: &str, api: &str) -> Result<Option<Value>> {
    Ok(az
        .arm()
        .await?
        .get(id, api)
        .await?
        .filter(|r| arm::provisioning_state(r) != "Deleting"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// reqwest is built without its own crypto provider: a client made after
    /// [`chimera_providers::install_tls_crypto`] is on ring (before it, building one panics).
    #[test]
    fn clients_are_made_on_the_process_crypto_provider() {
        chimera_providers::install_tls_crypto();
        assert!(reqwest::Client::builder().build().is_ok());
    }

    #[test]
    fn names_are_deterministic_per_token_and_fit() {
        let a = resource_name("web-0", "tok-1", 64);
        assert_eq!(a, resource_name("web-0", "tok-1", 64));
        assert_ne!(a, resource_name("web-0", "tok-2", 64));
        assert!(a.starts_with("web-0-") && a.len() == "web-0-".len() + 8);
        let long = resource_name(&"x".repeat(80), "t", 64);
        assert_eq!(long.len(), 64);
        assert_eq!(group_name("my stack", "eastus"), "chimera-my-stack-eastus");
    }

    #[test]
    fn ids_parse_to_their_group_and_name() {
        let p = parse_id("/subscriptions/s/resourceGroups/rg-1/providers/Microsoft.Network/virtualNetworks/n/subnets/a").unwrap();
        assert_eq!(p.group, "rg-1");
        assert_eq!(p.name, "a");
        assert!(parse_id("vnet-1").is_none());
    }

    #[test]
    fn settings_are_read_and_unknown_keys_refused() {
        let env = BTreeMap::from([("AZURE_SUBSCRIPTION_ID".to_string(), "sub-env".to_string())]);
        let s = AzureSettings::from_settings(&json!({}), &env).unwrap();
        assert_eq!(s.subscription.as_deref(), Some("sub-env"));
        let s = AzureSettings::from_settings(
            &json!({ "azure": { "subscription": "s", "endpoint": "http://127.0.0.1:1/", "credential": "none", "max_poll_interval_ms": 20 } }),
            &env,
        )
        .unwrap();
        assert_eq!(s.subscription.as_deref(), Some("s"));
        assert_eq!(s.endpoint, "http://127.0.0.1:1");
        assert_eq!(s.credential, CredentialKind::None);
        assert_eq!(s.max_poll_interval, Duration::from_millis(20));
        let e =
            AzureSettings::from_settings(&json!({ "azure": { "region": "x" } }), &env).unwrap_err();
        assert!(e.contains("providers.azure.region"), "{e}");
        let e = AzureSettings::from_settings(&json!({ "azure": { "credential": "magic" } }), &env)
            .unwrap_err();
        assert!(e.contains("magic"), "{e}");
        assert!(image_reference("Canonical:ubuntu-24_04-lts:server:latest").is_some());
        assert!(image_reference("Canonical:ubuntu").is_none());
    }
}
