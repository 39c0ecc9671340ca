//! `chimera-gcp`: the GCP provider, on the native SDK (google-cloud-compute-v1).
//!
//! network → VPC network (custom mode: `autoCreateSubnetworks = false`), subnet → subnetwork in
//! the region, firewall → firewall rules on the network (one per rule, named `{id}-i{n}` /
//! `{id}-e{n}`) applied to instances through the network tag `{id}`, instance → instance in a
//! zone of the region, volume → disk (+ `attachDisk`). One file per kind, as for AWS; this file
//! holds what they share and the [`Provider`] impl. Plumbing every cloud needs (the
//! consistency window, batching, the region search) is in [`chimera_providers::cloud`].
//!
//! **Names and tokens.** A resource's GCP name is `{address name}-{h}`, `h` ten hex digits of
//! the BLAKE3 hash of the creation token: a create whose response was lost is found by name
//! (`name eq ".*-{h}"`) and its token checked. Every insert also carries a `requestId` (a UUID
//! derived from the token), so GCP answers a repeated one with the first one's operation; a
//! retried insert GCP refuses as existing (it forgot the `requestId`) adopts what holds the name.
//! GCP shows an instance or disk as soon as its insert is accepted (PROVISIONING, CREATING): one
//! found so by its token (after a crash) is waited for, never taken half made nor as absent.
//!
//! **Tags.** Instances and disks carry them as labels (GCP's label alphabet is `[a-z0-9_-]`, so
//! other characters are escaped as `_xx`, reversibly); networks, subnetworks and firewall rules
//! have no labels and carry them in their description, as JSON. GCP fixes a network's and a
//! subnetwork's description at creation: their tags cannot change in place, so the planner
//! replaces them (`provider_force_new` in the model's kinds; an update that still asks is
//! refused with what to do).
//!
//! **Operations.** Every mutation returns a global, region or zone operation; it is polled
//! (from `providers.gcp.poll_interval_ms`, doubling up to 5 s) until DONE, and a DONE operation's
//! `error` / `httpErrorStatusCode` are turned into the engine's failure classes.
//!
//! **Credentials.** Application Default Credentials (google-cloud-auth), built on first use, so
//! stacks without `'gcp` never look for them; anonymous when `providers.gcp.endpoint` is plain
//! `http://` (the in-repo fake, or an emulator): no token is ever sent in clear.

/// Every zone's or region's items of an aggregated list (`instances`, `disks`, `subnetworks`:
/// the client's field and the scoped list's have the same name) that `$filter` selects, each
/// observed by `$observe`. A macro: each service's builder and items are types of their own.
macro_rules! list_aggregated {
    ($api:expr, $service:ident, $filter:expr, $observe:expr) => {{
        use google_cloud_gax::paginator::ItemPaginator as _;
        let mut items = $api
            .c
            .$service
            .aggregated_list()
            .set_project($api.project)
            .set_or_clear_filter($filter)
            .by_item();
        let mut out = Vec::new();
        while let Some(scope) = items.next().await {
            let (_, scoped) = scope.map_err($crate::gcp_err)?;
            out.extend(scoped.$service.iter().map($observe));
        }
        Ok(out)
    }};
}

/// The zonal items (`instances`, `disks`) named `$ids` (`zone/name`), one filtered list per
/// zone, each observed by `$observe`.
macro_rules! list_zonal_named {
    ($api:expr, $service:ident, $ids:expr, $observe:expr) => {{
        use google_cloud_gax::paginator::ItemPaginator as _;
        let mut by_zone: std::collections::HashMap<&str, Vec<String>> = Default::default();
        for id in $ids {
            let (zone, name) = $crate::instance::split(id)?;
            by_zone.entry(zone).or_default().push(name.to_string());
        }
        let mut out = Vec::new();
        for (zone, names) in by_zone {
            let mut items = $api
                .c
                .$service
                .list()
                .set_project($api.project)
                .set_zone(zone)
                .set_filter($crate::names_filter(&names, ""))
                .by_item();
            while let Some(item) = items.next().await {
                out.push($observe(&item.map_err($crate::gcp_err)?));
            }
        }
        Ok(out)
    }};
}

mod firewall;
mod instance;
mod network;
mod subnet;
mod volume;

use std::collections::{BTreeMap, HashMap};
use std::ops::RangeInclusive;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chimera_model::kinds::Spec;
use chimera_model::{Kind, ProviderName};
use google_cloud_compute_v1::client::{
    Disks, Firewalls, GlobalOperations, Instances, Networks, RegionOperations, Subnetworks,
    ZoneOperations,
};
use google_cloud_compute_v1::model::Operation;
use google_cloud_compute_v1::model::operation::Status as OpStatus;
use google_cloud_gax::error::Error as GaxError;
use google_cloud_gax::error::rpc::StatusDetails;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::sync::OnceCell;

use chimera_providers::cloud::{self, ConsistencyWindow, with_consistency};
use chimera_providers::{
    CloudRef, Observed, Provider, ProviderError, Request, Result, TAG_ADDRESS, TAG_STACK,
    TAG_TOKEN, Violation, managed_tags,
};

/// The `providers.gcp` settings of a stack.
#[derive(Debug, Clone, PartialEq)]
pub struct GcpSettings {
    /// The project resources are made in (`providers.gcp.project`, else
    /// `GOOGLE_CLOUD_PROJECT`).
    pub project: Option<String>,
    /// The Compute endpoint (the fake, an emulator); otherwise Google's.
    pub endpoint: Option<String>,
    /// The first wait between two polls of an operation; it doubles up to 5 s.
    pub poll_interval: Duration,
    /// Image family → image (`projects/…/global/images/…`), ahead of the catalog's.
    pub images: BTreeMap<String, String>,
    /// Regions searched for a resource whose region is unknown (besides those in use).
    pub regions: Vec<String>,
}

impl Default for GcpSettings {
    fn default() -> Self {
        GcpSettings {
            project: None,
            endpoint: None,
            poll_interval: Duration::from_millis(500),
            images: BTreeMap::new(),
            regions: Vec::new(),
        }
    }
}

impl GcpSettings {
    /// Reads `providers.gcp` (`project`, `endpoint`, `poll_interval_ms`, `images`, `regions`);
    /// unknown keys are errors. `env` looks up the environment (`GOOGLE_CLOUD_PROJECT`).
    pub fn from_settings(
        settings: &Value,
        env: impl Fn(&str) -> Option<String>,
    ) -> std::result::Result<GcpSettings, String> {
        let mut out = GcpSettings {
            project: env("GOOGLE_CLOUD_PROJECT").filter(|p| !p.is_empty()),
            ..GcpSettings::default()
        };
        let Some(gcp) = settings.get("gcp") else {
            return Ok(out);
        };
        let obj = gcp.as_object().ok_or("`providers.gcp` must be a record")?;
        for (k, v) in obj {
            match (k.as_str(), v) {
                ("project", Value::String(s)) => out.project = Some(s.clone()),
                ("endpoint", Value::String(s)) => {
                    out.endpoint = Some(s.trim_end_matches('/').to_string())
                }
                ("poll_interval_ms", Value::Number(n)) => {
                    let ms = n.as_u64().filter(|ms| *ms <= 60_000).ok_or(
                        "`providers.gcp.poll_interval_ms` must be a whole number of milliseconds up to 60000",
                    )?;
                    out.poll_interval = Duration::from_millis(ms.max(1));
                }
                ("images", Value::Object(m)) => {
                    for (family, image) in m {
                        let image = image.as_str().ok_or_else(|| {
                            format!(
                                "`providers.gcp.images.\"{family}\"` must be an image path string (projects/…/global/images/…)"
                            )
                        })?;
                        out.images.insert(family.clone(), image.to_string());
                    }
                }
                ("regions", Value::Array(items)) => {
                    for r in items {
                        out.regions.push(
                            r.as_str()
                                .ok_or("`providers.gcp.regions` must be an array of strings")?
                                .to_string(),
                        );
                    }
                }
                _ => {
                    return Err(format!(
                        "unknown or mistyped setting `providers.gcp.{k}`: the gcp provider takes project (string), endpoint (string), poll_interval_ms (number), images (record of image paths), regions (array of strings)"
                    ));
                }
            }
        }
        Ok(out)
    }
}

/// The Compute clients, one per service (each holds a connection pool).
#[derive(Clone)]
struct Clients {
    networks: Networks,
    subnetworks: Subnetworks,
    firewalls: Firewalls,
    instances: Instances,
    disks: Disks,
    global_ops: GlobalOperations,
    region_ops: RegionOperations,
    zone_ops: ZoneOperations,
}

pub struct GcpCloud {
    settings: GcpSettings,
    clients: OnceCell<Clients>,
    /// Ids this process created lately: "not found" for them is eventual consistency.
    window: ConsistencyWindow,
    /// Regions this process has worked in.
    used: std::sync::Mutex<std::collections::BTreeSet<String>>,
}

/// The longest an operation is waited for.
const MAX_WAIT: Duration = Duration::from_secs(900);
/// The longest wait between two polls of an operation.
const MAX_POLL: Duration = Duration::from_secs(5);
/// How many names one list filter carries (`name eq "a|b|…"`).
const NAMES_PER_FILTER: usize = 50;
/// The prefix lengths GCP allocates for subnetwork ranges.
const BLOCK_PREFIXES: RangeInclusive<u8> = 8..=29;
/// Labels GCP allows on one resource.
const MAX_LABELS: usize = 64;
/// GCP's longest label key or value.
const MAX_LABEL: usize = 63;
/// GCP's longest resource description.
const MAX_DESCRIPTION: usize = 2048;
/// The longest address-name part of a GCP name (the rest is `-` and the token hash, and for
/// firewall rules `-i{n}`).
const MAX_NAME_PART: usize = 40;
/// What GCP answers when a delete waits on a dependent still going away.
const DEPENDENCY_CODES: &[&str] = &["resourceInUseByAnotherResource"];

/// Regions the provider knows and their zones' letters: the abstract zone `'a` is the first
/// (us-east1 has no `-a`: `'a` is `us-east1-b`). A region missing here has zones `a`, `b`, `c`.
pub const ZONES: &[(&str, &str)] = &[
    ("us-east1", "bcd"),
    ("us-east4", "abc"),
    ("us-central1", "abcf"),
    ("us-west1", "abc"),
    ("europe-west1", "bcd"),
    ("europe-west3", "abc"),
    ("europe-west4", "abc"),
    ("asia-southeast1", "abc"),
    ("asia-northeast1", "abc"),
    ("southamerica-east1", "abc"),
    ("me-central1", "abc"),
];

/// Machine series GCP offers only in some regions (as of the catalog's date); the general
/// purpose series the catalog uses (e2, n1, n2) are offered in every region above.
pub const REGIONAL_SERIES: &[(&str, &[&str])] = &[
    ("t2a", &["us-central1", "europe-west4", "asia-southeast1"]),
    (
        "a2",
        &["us-central1", "us-east1", "europe-west4", "asia-southeast1"],
    ),
    (
        "c4a",
        &[
            "us-central1",
            "us-east1",
            "us-east4",
            "europe-west1",
            "europe-west4",
            "asia-southeast1",
        ],
    ),
];

/// The zone of abstract zone `letter` (`a` by default) in `region`.
fn zone_in(region: &str, letter: &str) -> Option<String> {
    let letters = ZONES
        .iter()
        .find(|(r, _)| *r == region)
        .map_or("abc", |(_, l)| l);
    let idx = match letter {
        "" => 0,
        l if l.len() == 1 => (l.as_bytes()[0]).checked_sub(b'a')? as usize,
        _ => return None,
    };
    letters.chars().nth(idx).map(|z| format!("{region}-{z}"))
}

/// The region and abstract zone letter of a zone (`us-east1-b` → `us-east1`, `a`).
fn zone_letter(zone: &str) -> (String, String) {
    let Some((region, z)) = zone.rsplit_once('-') else {
        return (zone.to_string(), String::new());
    };
    let letters = ZONES
        .iter()
        .find(|(r, _)| *r == region)
        .map_or("abc", |(_, l)| l);
    let letter = letters
        .find(z)
        .and_then(|i| "abcdefgh".chars().nth(i))
        .map(String::from)
        .unwrap_or_default();
    (region.to_string(), letter)
}

/// The last segment of a URL or path (`…/networks/main` → `main`).
fn last(reference: &str) -> &str {
    reference.rsplit('/').next().unwrap_or_default()
}

/// Ten hex digits of the token's hash: the suffix of every name a create with it makes.
fn token_hash(token: &str) -> String {
    blake3::hash(token.as_bytes()).to_hex()[..10].to_string()
}

/// The GCP name of what `req` creates: `{address name}-{token hash}` in GCP's alphabet.
fn name_for(req: &Request<'_>) -> String {
    let mut slug = String::new();
    for c in req.address.name.as_str().chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            slug.push(c);
        } else if !slug.ends_with('-') && !slug.is_empty() {
            slug.push('-');
        }
    }
    if !slug.starts_with(|c: char| c.is_ascii_lowercase()) {
        slug.insert(0, 'c');
    }
    slug.truncate(MAX_NAME_PART);
    let slug = slug.trim_end_matches('-');
    format!("{slug}-{}", token_hash(req.token))
}

/// A `requestId` (a UUID, as GCP wants) for the call `what` made with `token`: the same call
/// retried carries the same id, and GCP does it once.
fn request_id(token: &str, what: &str) -> String {
    let h = blake3::hash(format!("{what}\n{token}").as_bytes());
    let b = h.as_bytes();
    let hex: String = b[..16].iter().map(|x| format!("{x:02x}")).collect();
    // Version 4 and the RFC 4122 variant, so it is a well-formed UUID.
    format!(
        "{}-{}-4{}-{}{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[13..16],
        ["8", "9", "a", "b"][usize::from(b[8] & 3)],
        &hex[17..20],
        &hex[20..32]
    )
}

/// A tag key or value in GCP's label alphabet: `[a-z0-9-]` kept, anything else (`_` included)
/// as `_` and two hex digits per byte, so it decodes exactly.
fn label_enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("_{b:02x}"));
        }
    }
    out
}

fn label_dec(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'_'
            && let Some(x) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(x);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Tags as GCP labels.
fn labels_of(tags: &BTreeMap<String, String>) -> HashMap<String, String> {
    tags.iter()
        .map(|(k, v)| (label_enc(k), label_enc(v)))
        .collect()
}

/// GCP labels as tags.
fn tags_of_labels(labels: &HashMap<String, String>) -> BTreeMap<String, String> {
    labels
        .iter()
        .map(|(k, v)| (label_dec(k), label_dec(v)))
        .collect()
}

/// What Chimera writes in the description of a resource without labels.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Described {
    /// The tags.
    #[serde(rename = "chimera", default)]
    tags: BTreeMap<String, String>,
    /// A network's block (GCP networks have none of their own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cidr: Option<String>,
    /// A firewall rule's own description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rule: Option<String>,
    /// The region a global resource (network, firewall) was placed in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    region: Option<String>,
}

impl Described {
    fn text(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// A description Chimera wrote, or (someone else's) none of its fields.
    fn parse(description: Option<&str>) -> Described {
        description
            .and_then(|d| serde_json::from_str(d).ok())
            .unwrap_or_default()
    }
}

/// An observed resource: `attrs` is the kind's observed attributes (a struct whose JSON is the
/// shape drift detection compares with state rows); `id` goes into the outputs too.
fn observed(
    kind: Kind,
    id: &str,
    region: &str,
    attrs: impl Serialize,
    mut outputs: Map<String, Value>,
    tags: BTreeMap<String, String>,
) -> Observed {
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

/// A `name eq` filter selecting any of `names` (GCP names need no escaping).
fn names_filter(names: &[String], suffix: &str) -> String {
    format!("name eq \"({}){suffix}\"", names.join("|"))
}

/// The tags a resource keeps through an update: the request's, with the creation token kept.
fn kept_tags(req: &Request<'_>, current: &Observed) -> BTreeMap<String, String> {
    let mut tags = managed_tags(req);
    if let Some(t) = current.tags.get(TAG_TOKEN) {
        tags.insert(TAG_TOKEN.into(), t.clone());
    }
    tags
}

impl GcpCloud {
    pub fn new(settings: GcpSettings) -> Self {
        GcpCloud {
            settings,
            clients: OnceCell::new(),
            window: ConsistencyWindow::default(),
            used: Default::default(),
        }
    }

    fn project(&self) -> Result<&str> {
        self.settings.project.as_deref().ok_or_else(|| ProviderError::Failed {
            code: "NoProject".into(),
            message: "the gcp provider needs a project: set `providers.gcp = { project = \"my-project\" }` in the stack, or GOOGLE_CLOUD_PROJECT".into(),
        })
    }

    /// The clients, made on first use.
    async fn clients(&self) -> Result<&Clients> {
        self.clients
            .get_or_try_init(|| async {
                chimera_providers::install_tls_crypto();
                let ep = self.settings.endpoint.clone();
                // Plain http is the fake or an emulator: no credentials, never a token in clear.
                let anonymous = ep.as_deref().is_some_and(|e| e.starts_with("http://"));
                macro_rules! build {
                    ($client:ty) => {{
                        let mut b = <$client>::builder();
                        if let Some(ep) = &ep {
                            b = b.with_endpoint(ep.clone());
                        }
                        if anonymous {
                            b = b.with_credentials(
                                google_cloud_auth::credentials::anonymous::Builder::new().build(),
                            );
                        }
                        b.build().await.map_err(|e| ProviderError::Failed {
                            code: "Credentials".into(),
                            message: format!(
                                "cannot set up the GCP client ({e}); give Application Default Credentials (`gcloud auth application-default login`, or GOOGLE_APPLICATION_CREDENTIALS), or point providers.gcp.endpoint at a fake"
                            ),
                        })?
                    }};
                }
                Ok::<_, ProviderError>(Clients {
                    networks: build!(Networks),
                    subnetworks: build!(Subnetworks),
                    firewalls: build!(Firewalls),
                    instances: build!(Instances),
                    disks: build!(Disks),
                    global_ops: build!(GlobalOperations),
                    region_ops: build!(RegionOperations),
                    zone_ops: build!(ZoneOperations),
                })
            })
            .await
    }

    /// The project's Compute API as the kinds use it, in `region`.
    async fn api<'a>(&'a self, region: &'a str) -> Result<Api<'a>> {
        if !region.is_empty() {
            self.used
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(region.to_string());
        }
        Ok(Api {
            gcp: self,
            c: self.clients().await?,
            project: self.project()?,
            region,
        })
    }

    /// Regions to search for a resource whose region is unknown: the configured ones, those
    /// in use, then every region the provider knows.
    fn search_order(&self, first: &str) -> Vec<String> {
        let used = self.used.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut seen = std::collections::BTreeSet::new();
        std::iter::once(first.to_string())
            .chain(self.settings.regions.iter().cloned())
            .chain(used)
            .chain(ZONES.iter().map(|(r, _)| r.to_string()))
            .filter(|r| !r.is_empty() && seen.insert(r.clone()))
            .collect()
    }

    /// Reads the resource `at` points to. Right after this process created it, absence is
    /// eventual consistency, reported as retryable.
    async fn locate(&self, at: &CloudRef) -> Result<Option<Observed>> {
        let found = match at.kind {
            // Global, or zonal with the zone in the id: no search needed.
            Kind::Network | Kind::Firewall | Kind::Instance | Kind::Volume => {
                self.api(&at.region).await?.read(at.kind, &at.id).await?
            }
            Kind::Subnet if !at.region.is_empty() => {
                self.api(&at.region).await?.read(at.kind, &at.id).await?
            }
            Kind::Subnet => {
                cloud::first_hit(self.search_order(""), |region| async move {
                    self.api(&region).await?.read(at.kind, &at.id).await
                })
                .await?
            }
        };
        match found {
            Some(o) => Ok(Some(o)),
            None => self.window.absent(&at.id),
        }
    }

    async fn create_now(&self, req: &Request<'_>) -> Result<Observed> {
        let api = self.api(req.native_region).await?;
        let kind = req.spec.kind();
        let name = name_for(req);
        if let Some(o) = api.by_token(kind, req.token).await? {
            return self.adopt(&api, req, o).await;
        }
        let made = match req.spec {
            Spec::Network(s) => network::create(&api, req, s, &name).await,
            Spec::Subnet(s) => subnet::create(&api, req, s, &name).await,
            Spec::Firewall(s) => firewall::create(&api, req, s, &name).await,
            Spec::Instance(s) => instance::create(&api, req, s, &name).await,
            Spec::Volume(s) => volume::create(&api, req, s, &name).await,
        };
        let id = match made {
            Ok(id) => id,
            // The name carries the token's hash, so what holds it is this create's, made by an
            // earlier try whose `requestId` GCP no longer remembers (it keeps them only for a
            // while), or by a try running at the same time: found by token, it is adopted.
            Err(ProviderError::Failed { code, message }) if code == "alreadyExists" => {
                return match with_consistency(|| api.by_token(kind, req.token)).await? {
                    Some(o) => self.adopt(&api, req, o).await,
                    None => Err(ProviderError::Failed { code, message }),
                };
            }
            Err(e) => return Err(e),
        };
        self.window.created(&id);
        with_consistency(|| api.read(kind, &id))
            .await?
            .ok_or_else(|| ProviderError::Retryable(format!("{id} is not visible yet")))
    }

    /// What an earlier try of the create `req` made, found by its token.
    async fn adopt(&self, api: &Api<'_>, req: &Request<'_>, found: Observed) -> Result<Observed> {
        // A firewall's rules are made one by one: finish what a lost create began.
        if let Spec::Firewall(s) = req.spec {
            firewall::sync(api, req, s, &found.cloud_id, Some(&found)).await?;
            return api
                .read(Kind::Firewall, &found.cloud_id)
                .await?
                .ok_or_else(|| {
                    ProviderError::Retryable(format!("{} is not visible yet", found.cloud_id))
                });
        }
        Ok(found)
    }

    async fn update_now(&self, req: &Request<'_>, id: &str) -> Result<Observed> {
        let api = self.api(req.native_region).await?;
        let kind = req.spec.kind();
        let current = with_consistency(|| api.read(kind, id))
            .await?
            .ok_or_else(|| ProviderError::Failed {
                code: "notFound".into(),
                message: format!("{} ({id}) does not exist", req.address),
            })?;
        match req.spec {
            Spec::Network(_) => network::update(req, &current)?,
            Spec::Subnet(s) => subnet::update(&api, req, s, &current).await?,
            Spec::Firewall(s) => firewall::sync(&api, req, s, id, Some(&current)).await?,
            Spec::Instance(s) => instance::update(&api, req, s, &current).await?,
            Spec::Volume(s) => volume::update(&api, req, s, &current).await?,
        }
        with_consistency(|| api.read(kind, id))
            .await?
            .ok_or_else(|| ProviderError::Retryable(format!("{id} is not visible")))
    }

    async fn delete_now(&self, at: &CloudRef) -> Result<()> {
        // Absent after a delete is absence, however recent the create.
        self.window.forget(&at.id);
        let Some(current) = self.locate(at).await? else {
            return Ok(());
        };
        let api = self.api(&current.native_region).await?;
        let r = match at.kind {
            Kind::Network => network::delete(&api, &at.id).await,
            Kind::Subnet => subnet::delete(&api, &at.id).await,
            Kind::Firewall => firewall::delete(&api, &current).await,
            Kind::Instance => instance::delete(&api, &at.id).await,
            Kind::Volume => volume::delete(&api, &current).await,
        };
        cloud::deleted(r, DEPENDENCY_CODES)
    }

    /// Per kind and region, one filtered list per [`NAMES_PER_FILTER`] ids (per zone for
    /// instances and disks); refs whose region is unknown are read one by one.
    async fn observe_now(&self, items: &[CloudRef]) -> Result<Vec<Option<Observed>>> {
        let mut found: HashMap<(Kind, String), Observed> = HashMap::new();
        for b in cloud::batches(items, NAMES_PER_FILTER) {
            let api = self.api(&b.region).await?;
            for o in api.list_named(b.kind, &b.ids).await? {
                found.insert((o.kind, o.cloud_id.clone()), o);
            }
        }
        for at in items.iter().filter(|at| at.region.is_empty()) {
            if let Some(o) = self.locate(at).await? {
                found.insert((o.kind, at.id.clone()), o);
            }
        }
        cloud::in_order(items, &found, &self.window)
    }

    async fn list_managed_now(&self, stack: &str) -> Result<Vec<Observed>> {
        // No project configured: nothing of any stack can be in GCP (a stack that never uses
        // 'gcp is listed across every provider by `orphans` and drift adoption).
        if self.settings.project.is_none() {
            return Ok(Vec::new());
        }
        let api = self.api("").await?;
        let mut out = Vec::new();
        for kind in Kind::ALL {
            out.extend(
                api.list_all(kind)
                    .await?
                    .into_iter()
                    .filter(|o| o.tags.get(TAG_STACK).map(String::as_str) == Some(stack)),
            );
        }
        out.sort_by(|a, b| a.tags.get(TAG_ADDRESS).cmp(&b.tags.get(TAG_ADDRESS)));
        Ok(out)
    }
}

/// The project's Compute API in one region: what every kind's calls work with.
struct Api<'a> {
    gcp: &'a GcpCloud,
    c: &'a Clients,
    project: &'a str,
    /// The region calls are made in (empty: unknown, or global calls only).
    region: &'a str,
}

impl Api<'_> {
    /// Reads one resource by id; `None` if it does not exist.
    async fn read(&self, kind: Kind, id: &str) -> Result<Option<Observed>> {
        cloud::absent_if_not_found(match kind {
            Kind::Network => network::read(self, id).await,
            Kind::Subnet => subnet::read(self, id).await,
            Kind::Firewall => firewall::read(self, id).await,
            Kind::Instance => instance::read(self, id).await,
            Kind::Volume => volume::read(self, id).await,
        })
    }

    /// The resources of `kind` named `ids` in this region.
    async fn list_named(&self, kind: Kind, ids: &[String]) -> Result<Vec<Observed>> {
        match kind {
            Kind::Network => network::list(self, Some(names_filter(ids, ""))).await,
            Kind::Subnet => subnet::list(self, Some(names_filter(ids, ""))).await,
            Kind::Firewall => firewall::list(self, Some(ids)).await,
            Kind::Instance => instance::list_named(self, ids).await,
            Kind::Volume => volume::list_named(self, ids).await,
        }
    }

    /// Every resource of `kind` in the project (one aggregated list for regional and zonal
    /// kinds).
    async fn list_all(&self, kind: Kind) -> Result<Vec<Observed>> {
        match kind {
            Kind::Network => network::list(self, None).await,
            Kind::Subnet => subnet::list_aggregated(self, None).await,
            Kind::Firewall => firewall::list(self, None).await,
            Kind::Instance => instance::list_aggregated(self, None).await,
            Kind::Volume => volume::list_aggregated(self, None).await,
        }
    }

    /// The resource of `kind` that the create with `token` made, if any: found by the token
    /// hash its name ends with, confirmed by its token tag. GCP shows an instance or a disk as
    /// soon as its insert is accepted (PROVISIONING, CREATING): one found so is a create still
    /// running (its caller was interrupted), waited for until it is made, and absent if its
    /// insert fails; never taken half made, nor as missing.
    async fn by_token(&self, kind: Kind, token: &str) -> Result<Option<Observed>> {
        let filter = format!("name eq \".*-{}\"", token_hash(token));
        let candidates = match kind {
            Kind::Network => network::list(self, Some(filter)).await?,
            Kind::Subnet => subnet::list_aggregated(self, Some(filter)).await?,
            Kind::Firewall => firewall::by_hash(self, &token_hash(token)).await?,
            Kind::Instance => instance::list_aggregated(self, Some(filter)).await?,
            Kind::Volume => volume::list_aggregated(self, Some(filter)).await?,
        };
        let Some(found) = candidates
            .into_iter()
            .find(|o| o.tags.get(TAG_TOKEN).map(String::as_str) == Some(token))
        else {
            return Ok(None);
        };
        match kind {
            Kind::Instance => instance::settled(self, &found.cloud_id).await,
            Kind::Volume => volume::settled(self, &found.cloud_id).await,
            // Networks, subnetworks and firewall rules have no status: usable as seen.
            Kind::Network | Kind::Subnet | Kind::Firewall => Ok(Some(found)),
        }
    }

    /// The waits between two polls of something GCP is still doing.
    fn polls(&self) -> Polls {
        Polls {
            delay: self.gcp.settings.poll_interval,
            started: Instant::now(),
        }
    }

    /// What `get` reads, once GCP has finished making it: while `making` names a transitional
    /// status (its insert's operation is not DONE), it is read again; `None` if it is gone (the
    /// insert failed and GCP removed it).
    async fn settled<T, Fut>(
        &self,
        id: &str,
        get: impl Fn() -> Fut,
        making: impl Fn(&T) -> Option<String>,
    ) -> Result<Option<T>>
    where
        Fut: Future<Output = Result<T>>,
    {
        let mut polls = self.polls();
        loop {
            let Some(r) = cloud::absent_if_not_found(get().await.map(Some))? else {
                return Ok(None);
            };
            match making(&r) {
                None => return Ok(Some(r)),
                Some(status) => polls.next(|| format!("{id} is still {status}")).await?,
            }
        }
    }

    /// Waits for `op` to be DONE and turns its error, if any, into a provider error.
    async fn wait(&self, op: Operation) -> Result<()> {
        let mut op = op;
        let mut polls = self.polls();
        loop {
            if op.status == Some(OpStatus::Done) {
                return op_outcome(&op);
            }
            polls
                .next(|| {
                    format!(
                        "operation {} on {} is still running",
                        op.name.as_deref().unwrap_or_default(),
                        op.target_link.as_deref().unwrap_or_default(),
                    )
                })
                .await?;
            let name = op.name.clone().unwrap_or_default();
            op = if let Some(zone) = op.zone.as_deref() {
                self.c
                    .zone_ops
                    .get()
                    .set_project(self.project)
                    .set_zone(last(zone))
                    .set_operation(name)
                    .send()
                    .await
            } else if let Some(region) = op.region.as_deref() {
                self.c
                    .region_ops
                    .get()
                    .set_project(self.project)
                    .set_region(last(region))
                    .set_operation(name)
                    .send()
                    .await
            } else {
                self.c
                    .global_ops
                    .get()
                    .set_project(self.project)
                    .set_operation(name)
                    .send()
                    .await
            }
            .map_err(gcp_err)?;
        }
    }

    /// Sends a mutation and waits for its operation.
    async fn run(
        &self,
        call: impl Future<Output = std::result::Result<Operation, GaxError>>,
    ) -> Result<()> {
        let op = call.await.map_err(gcp_err)?;
        self.wait(op).await
    }

    fn network_path(&self, network: &str) -> String {
        if network.contains('/') {
            network.to_string()
        } else {
            format!("projects/{}/global/networks/{network}", self.project)
        }
    }
}

/// The waits between two polls: from `providers.gcp.poll_interval_ms`, doubling up to
/// [`MAX_POLL`], for at most [`MAX_WAIT`] in all.
struct Polls {
    delay: Duration,
    started: Instant,
}

impl Polls {
    /// Sleeps until the next poll; retryable once [`MAX_WAIT`] has passed, saying what is
    /// still going on.
    async fn next(&mut self, what: impl FnOnce() -> String) -> Result<()> {
        if self.started.elapsed() > MAX_WAIT {
            return Err(ProviderError::Retryable(format!(
                "{} after {} s",
                what(),
                MAX_WAIT.as_secs()
            )));
        }
        tokio::time::sleep(self.delay).await;
        self.delay = (self.delay * 2).min(MAX_POLL);
        Ok(())
    }
}

/// The outcome of a DONE operation: `until_done()` would say Ok even when it failed, so its
/// `error` and `httpErrorStatusCode` are read here.
fn op_outcome(op: &Operation) -> Result<()> {
    let first = op.error.as_ref().and_then(|e| e.errors.first());
    let http = op.http_error_status_code.unwrap_or(0);
    if first.is_none() && !(op.http_error_status_code.is_some() && http >= 400) {
        return Ok(());
    }
    let code = first.and_then(|e| e.code.clone()).unwrap_or_default();
    let message = first
        .and_then(|e| e.message.clone())
        .or_else(|| op.http_error_message.clone())
        .unwrap_or_default();
    let target = op.target_link.as_deref().map(last).unwrap_or_default();
    Err(classify(
        &code,
        u16::try_from(http).unwrap_or(0),
        format!(
            "{code}: {message} (operation {} on {target})",
            op.name.as_deref().unwrap_or_default()
        ),
    ))
}

/// A GCP error (an HTTP error's `reason`, or an operation error's code, with the HTTP status) as
/// a provider error whose code the engine's classes understand.
fn classify(code: &str, http: u16, message: String) -> ProviderError {
    let failed = |c: &str| ProviderError::Failed {
        code: c.to_string(),
        message: message.clone(),
    };
    match (code, http) {
        ("rateLimitExceeded" | "userRateLimitExceeded" | "RATE_LIMIT_EXCEEDED", _) | (_, 429) => {
            ProviderError::Retryable(format!("TooManyRequests: {message}"))
        }
        ("conditionNotMet", _) | (_, 412) => {
            // A stale fingerprint: the next try reads the current one.
            ProviderError::Retryable(format!("conditionNotMet: {message}"))
        }
        ("resourceNotReady" | "RESOURCE_NOT_READY" | "backendError" | "internalError", _)
        | (_, 500 | 502 | 503 | 504)
            if !code.contains("EXHAUSTED") =>
        {
            ProviderError::Retryable(format!("ServiceUnavailable: {message}"))
        }
        ("ZONE_RESOURCE_POOL_EXHAUSTED" | "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS", _) => {
            failed("InsufficientCapacity")
        }
        ("QUOTA_EXCEEDED" | "quotaExceeded", _) => failed("quotaExceeded"),
        ("RESOURCE_NOT_FOUND" | "notFound", _) | ("", 404) => failed("notFound"),
        ("RESOURCE_ALREADY_EXISTS" | "alreadyExists", _) | ("", 409) => failed("alreadyExists"),
        ("RESOURCE_IN_USE_BY_ANOTHER_RESOURCE" | "resourceInUseByAnotherResource", _) => {
            failed("resourceInUseByAnotherResource")
        }
        ("forbidden" | "PERMISSION_DENIED", _) | ("", 403) => failed("permissionDenied"),
        ("", _) => failed("gcpError"),
        (other, _) => failed(other),
    }
}

/// SDK errors as provider errors: Google's `reason` stays visible as the code.
fn gcp_err(e: GaxError) -> ProviderError {
    if e.is_timeout() {
        return ProviderError::Retryable(format!("GCP timed out: {e}"));
    }
    if e.is_authentication() {
        return ProviderError::Failed {
            code: "Credentials".into(),
            message: format!(
                "GCP refused the credentials ({e}); check Application Default Credentials (`gcloud auth application-default login`)"
            ),
        };
    }
    if e.is_connect() || e.is_io() {
        return ProviderError::Failed {
            code: "ConnectionError".into(),
            message: format!(
                "cannot reach the Compute API ({e}); check providers.gcp.endpoint and the network"
            ),
        };
    }
    let http = e.http_status_code().unwrap_or(0);
    match e.status() {
        Some(status) => {
            let reason = status
                .details
                .iter()
                .find_map(|d| match d {
                    StatusDetails::ErrorInfo(i) if !i.reason.is_empty() => Some(i.reason.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            classify(&reason, http, status.message.clone())
        }
        None if http > 0 => classify("", http, e.to_string()),
        None => ProviderError::Retryable(format!("unreadable Compute response: {e}")),
    }
}

#[async_trait]
impl Provider for GcpCloud {
    fn name(&self) -> ProviderName {
        ProviderName::Gcp
    }

    fn validate(&self, req: &Request<'_>) -> Vec<Violation> {
        let mut out = tag_limits(req);
        out.extend(match req.spec {
            Spec::Network(_) | Spec::Subnet(_) => cloud::block_sizes(req.spec, BLOCK_PREFIXES),
            Spec::Firewall(s) => firewall::validate(s),
            Spec::Instance(s) => instance::validate(req, s),
            Spec::Volume(s) => volume::validate(req, s),
        });
        if let Spec::Subnet(s) = req.spec
            && zone_in(req.native_region, &s.zone).is_none()
        {
            out.push(zone_violation(req.native_region, &s.zone));
        }
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
        // Names carry the token's hash and the zonal and regional lists are aggregated: one
        // call finds it wherever it is.
        self.api(region).await?.by_token(kind, token).await
    }

    async fn list_managed(&self, stack: &str) -> Result<Vec<Observed>> {
        self.list_managed_now(stack).await
    }
}

fn zone_violation(region: &str, letter: &str) -> Violation {
    let letters = ZONES
        .iter()
        .find(|(r, _)| *r == region)
        .map_or("abc", |(_, l)| l);
    let offered: Vec<String> = (0..letters.len())
        .filter_map(|i| "abcdefgh".chars().nth(i).map(|c| format!("'{c}")))
        .collect();
    Violation::new(
        "zone",
        format!(
            "{region} has {} zones ({}), so zone '{letter} does not exist there; use one of {}",
            letters.len(),
            letters
                .chars()
                .map(|z| format!("{region}-{z}"))
                .collect::<Vec<_>>()
                .join(", "),
            offered.join(", ")
        ),
    )
}

/// GCP's limits on what Chimera's tags become: labels on instances and disks (at most 64, keys
/// starting with a letter, at most 63 characters once escaped), a description of at most 2048
/// characters elsewhere.
fn tag_limits(req: &Request<'_>) -> Vec<Violation> {
    let tags = managed_tags(req);
    let mut out = Vec::new();
    match req.spec.kind() {
        Kind::Instance | Kind::Volume => {
            if tags.len() > MAX_LABELS {
                out.push(Violation::new(
                    "tags",
                    format!(
                        "GCP allows {MAX_LABELS} labels per resource and Chimera adds 3, so at most {} of yours; this resource has {}: remove {}",
                        MAX_LABELS - 3,
                        req.tags.len(),
                        tags.len() - MAX_LABELS
                    ),
                ));
            }
            for (k, v) in req.tags {
                let (ek, ev) = (label_enc(k), label_enc(v));
                if !ek.starts_with(|c: char| c.is_ascii_lowercase()) {
                    out.push(Violation::new(
                        "tags",
                        format!(
                            "tag key \"{k}\": GCP label keys start with a lowercase letter; rename the tag"
                        ),
                    ));
                }
                if ek.len() > MAX_LABEL || ev.len() > MAX_LABEL {
                    out.push(Violation::new(
                        "tags",
                        format!(
                            "tag \"{k}\" is too long for a GCP label: keys and values hold at most {MAX_LABEL} characters, and characters other than a-z, 0-9 and - take three; shorten it"
                        ),
                    ));
                }
            }
        }
        _ => {
            let text = Described {
                tags,
                region: Some(req.native_region.to_string()),
                ..Described::default()
            }
            .text();
            if text.len() > MAX_DESCRIPTION - 200 {
                out.push(Violation::new(
                    "tags",
                    format!(
                        "GCP keeps this resource's tags in its description, which holds {MAX_DESCRIPTION} characters; these take {}: remove or shorten some",
                        text.len()
                    ),
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
