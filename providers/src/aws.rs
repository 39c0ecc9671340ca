//! `aws`: the AWS provider, on the native SDK (aws-sdk-ec2).
//!
//! network → VPC, subnet → Subnet, firewall → SecurityGroup with its rules, instance →
//! RunInstances, volume → CreateVolume (+ AttachVolume). Every resource is tagged at creation
//! (`TagSpecifications`, atomic with the create) with the stack, address and client token, so
//! `find_by_token` and `list_managed` work by tag for every kind; RunInstances and CreateVolume
//! also get the token as their native `ClientToken`.
//!
//! Credentials and the default region come from the standard AWS chain (aws-config), loaded on
//! first use so that stacks without `'aws` never touch it. The endpoint is the SDK's own
//! (`AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_EC2`) or `providers.aws.endpoint`: moto and
//! LocalStack work unchanged. Each request is retried by the SDK's standard retry (jittered
//! exponential backoff on RequestLimitExceeded and other transient errors, 10 attempts); whole
//! operations are retried by the engine ([`crate::with_retries`]) on what stays retryable:
//! eventual consistency ("not found" right after a create), DependencyViolation while a
//! dependent terminates.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_ec2::Client;
use aws_sdk_ec2::client::Waiters;
use aws_sdk_ec2::config::{Region, retry::RetryConfig};
use aws_sdk_ec2::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_ec2::types::{
    AttributeBooleanValue, AttributeValue, Filter, InstanceNetworkInterfaceSpecification,
    InstanceStateName, InstanceType, IpPermission, IpRange, ResourceType, Tag, TagSpecification,
    VolumeType,
};
use base64::Engine as _;
use chimera_model::kinds::firewall;
use chimera_model::{Kind, ProviderName};
use serde_json::{Map, Value, json};
use tokio::sync::OnceCell;

use crate::{
    Observed, Provider, ProviderError, Request, Result, TAG_STACK, TAG_TOKEN, managed_tags,
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

pub struct AwsCloud {
    settings: AwsSettings,
    source: Source,
    config: OnceCell<aws_config::SdkConfig>,
    clients: Mutex<HashMap<String, Client>>,
    /// Ids this process created lately: "not found" for them is eventual consistency.
    recent: Mutex<HashMap<String, Instant>>,
}

/// How long after a create "not found" is taken for eventual consistency, not absence.
const CONSISTENCY_WINDOW: Duration = Duration::from_secs(60);
/// The longest a waiter (instance terminated/stopped, volume available) waits.
const MAX_WAIT: Duration = Duration::from_secs(600);
const DEVICE: &str = "/dev/sdf";

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
            clients: Mutex::default(),
            recent: Mutex::default(),
        }
    }

    async fn config(&self) -> &aws_config::SdkConfig {
        self.config
            .get_or_init(|| async {
                match &self.source {
                    Source::Given(c) => c.as_ref().clone(),
                    Source::Chain => {
                        aws_config::defaults(aws_config::BehaviorVersion::latest())
                            .load()
                            .await
                    }
                }
            })
            .await
    }

    async fn client(&self, region: &str) -> Result<Client> {
        if region.is_empty() {
            return Err(ProviderError::Failed {
                code: "NoRegion".into(),
                message: "the resource has no AWS region".into(),
            });
        }
        if let Some(c) = self.lock_clients().get(region) {
            return Ok(c.clone());
        }
        let conf = self.config().await;
        let mut b = aws_sdk_ec2::config::Builder::from(conf)
            .region(Region::new(region.to_string()))
            // Per request: throttling (RequestLimitExceeded) and transient errors, jittered
            // exponential backoff. Retrying a whole multi-call operation instead never gets
            // through steady throttling.
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(10)
                    .with_initial_backoff(Duration::from_millis(20))
                    .with_max_backoff(Duration::from_secs(5)),
            );
        if let Some(ep) = &self.settings.endpoint {
            b = b.endpoint_url(ep);
        }
        let client = Client::from_conf(b.build());
        self.lock_clients()
            .insert(region.to_string(), client.clone());
        Ok(client)
    }

    fn lock_clients(&self) -> std::sync::MutexGuard<'_, HashMap<String, Client>> {
        self.clients.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn created(&self, id: &str) {
        let mut r = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        r.retain(|_, t| t.elapsed() < CONSISTENCY_WINDOW);
        r.insert(id.to_string(), Instant::now());
    }

    fn forget(&self, id: &str) {
        self.recent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }

    fn is_recent(&self, id: &str) -> bool {
        self.recent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .is_some_and(|t| t.elapsed() < CONSISTENCY_WINDOW)
    }

    /// The region a cloud id lives in: ids carry none, so every region in use is asked, the
    /// default first.
    async fn regions(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        if let Some(r) = self.config().await.region() {
            out.push(r.to_string());
        }
        out.extend(self.lock_clients().keys().cloned());
        out.extend(self.settings.regions.iter().cloned());
        let mut seen = BTreeSet::new();
        out.retain(|r| seen.insert(r.clone()));
        out
    }

    async fn ami(&self, client: &Client, attrs: &Map<String, Value>) -> Result<String> {
        if let Some(ami) = attrs
            .get("aws")
            .and_then(|a| a.get("ami"))
            .and_then(Value::as_str)
        {
            return Ok(ami.to_string());
        }
        let family = str_attr(attrs, "image");
        if let Some(ami) = self.settings.images.get(family) {
            return Ok(ami.clone());
        }
        let image_ref = attrs.get("image_ref").cloned().unwrap_or(Value::Null);
        let (owner, name) = match (&image_ref["owner"], &image_ref["name"]) {
            (Value::String(o), Value::String(n)) => (o.clone(), n.clone()),
            _ => match image_ref.as_str() {
                Some(id) if id.starts_with("ami-") => return Ok(id.to_string()),
                _ => {
                    return Err(ProviderError::Failed {
                        code: "InvalidAMIID.Malformed".into(),
                        message: format!("image \"{family}\" has no AWS image reference"),
                    });
                }
            },
        };
        let out = client
            .describe_images()
            .owners(&owner)
            .filters(Filter::builder().name("name").values(&name).build())
            .filters(Filter::builder().name("state").values("available").build())
            .send()
            .await
            .map_err(aws_err)?;
        out.images()
            .iter()
            .filter(|i| i.image_id().is_some())
            .max_by(|a, b| a.creation_date().cmp(&b.creation_date()))
            .and_then(|i| i.image_id().map(str::to_string))
            .ok_or_else(|| ProviderError::Failed {
                code: "InvalidAMIID.NotFound".into(),
                message: format!(
                    "no AMI of owner {owner} matches \"{name}\" in this region; pin one with `providers.aws.images.\"{family}\" = \"ami-…\"` or `aws.ami` on the resource"
                ),
            })
    }

    /// Looks a resource up by one tag filter; `None` if there is none (terminated instances
    /// count as absent).
    async fn by_filter(
        &self,
        client: &Client,
        kind: Kind,
        region: &str,
        filters: Vec<Filter>,
    ) -> Result<Vec<Observed>> {
        // Every page: EC2 paginates describe calls (moto at 100 instances).
        let mut out = Vec::new();
        match kind {
            Kind::Network => {
                let mut pages = client
                    .describe_vpcs()
                    .set_filters(Some(filters))
                    .into_paginator()
                    .send();
                while let Some(page) = pages.try_next().await.map_err(aws_err)? {
                    out.extend(page.vpcs().iter().map(|v| observe_vpc(v, region)));
                }
            }
            Kind::Subnet => {
                let mut pages = client
                    .describe_subnets()
                    .set_filters(Some(filters))
                    .into_paginator()
                    .send();
                while let Some(page) = pages.try_next().await.map_err(aws_err)? {
                    out.extend(page.subnets().iter().map(|s| observe_subnet(s, region)));
                }
            }
            Kind::Firewall => {
                let mut pages = client
                    .describe_security_groups()
                    .set_filters(Some(filters))
                    .into_paginator()
                    .send();
                while let Some(page) = pages.try_next().await.map_err(aws_err)? {
                    out.extend(page.security_groups().iter().map(|g| observe_sg(g, region)));
                }
            }
            Kind::Instance => {
                let mut pages = client
                    .describe_instances()
                    .set_filters(Some(filters))
                    .into_paginator()
                    .send();
                while let Some(page) = pages.try_next().await.map_err(aws_err)? {
                    for i in page.reservations().iter().flat_map(|r| r.instances()) {
                        if !gone(i) {
                            out.push(observe_instance(i, region));
                        }
                    }
                }
            }
            Kind::Volume => {
                let mut pages = client
                    .describe_volumes()
                    .set_filters(Some(filters))
                    .into_paginator()
                    .send();
                while let Some(page) = pages.try_next().await.map_err(aws_err)? {
                    out.extend(page.volumes().iter().map(|v| observe_volume(v, region)));
                }
            }
        }
        Ok(out)
    }

    async fn read_in(
        &self,
        client: &Client,
        kind: Kind,
        id: &str,
        region: &str,
    ) -> Result<Option<Observed>> {
        let found = match kind {
            Kind::Network => client
                .describe_vpcs()
                .vpc_ids(id)
                .send()
                .await
                .map_err(aws_err)
                .map(|r| r.vpcs().first().map(|v| observe_vpc(v, region))),
            Kind::Subnet => client
                .describe_subnets()
                .subnet_ids(id)
                .send()
                .await
                .map_err(aws_err)
                .map(|r| r.subnets().first().map(|s| observe_subnet(s, region))),
            Kind::Firewall => client
                .describe_security_groups()
                .group_ids(id)
                .send()
                .await
                .map_err(aws_err)
                .map(|r| r.security_groups().first().map(|g| observe_sg(g, region))),
            Kind::Instance => client
                .describe_instances()
                .instance_ids(id)
                .send()
                .await
                .map_err(aws_err)
                .map(|r| {
                    r.reservations()
                        .iter()
                        .flat_map(|r| r.instances())
                        .find(|i| !gone(i))
                        .map(|i| observe_instance(i, region))
                }),
            Kind::Volume => client
                .describe_volumes()
                .volume_ids(id)
                .send()
                .await
                .map_err(aws_err)
                .map(|r| r.volumes().first().map(|v| observe_volume(v, region))),
        };
        match found {
            Ok(Some(o)) => Ok(Some(o)),
            Ok(None) => Ok(None),
            Err(ProviderError::Failed { code, .. })
                if code.ends_with(".NotFound") || code.ends_with(".Malformed") =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Reads `id` wherever it lives. Right after this process created it, absence is eventual
    /// consistency, reported as retryable.
    async fn locate(&self, kind: Kind, id: &str) -> Result<Option<Observed>> {
        for region in self.regions().await {
            let client = self.client(&region).await?;
            if let Some(o) = self.read_in(&client, kind, id, &region).await? {
                return Ok(Some(o));
            }
        }
        if self.is_recent(id) {
            return Err(ProviderError::Retryable(format!(
                "{id} was created moments ago and is not visible yet"
            )));
        }
        Ok(None)
    }

    async fn sync_tags(
        &self,
        client: &Client,
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
            client
                .create_tags()
                .resources(id)
                .set_tags(Some(set))
                .send()
                .await
                .map_err(aws_err)?;
        }
        if !unset.is_empty() {
            client
                .delete_tags()
                .resources(id)
                .set_tags(Some(unset))
                .send()
                .await
                .map_err(aws_err)?;
        }
        Ok(())
    }

    /// Makes a security group's rules exactly `ingress` and `egress`.
    async fn sync_rules(
        &self,
        client: &Client,
        group: &str,
        attrs: &Map<String, Value>,
        current: Option<&Observed>,
    ) -> Result<()> {
        for (attr, egress) in [("ingress", false), ("egress", true)] {
            let want = firewall::canonical_rules(attrs.get(attr).unwrap_or(&Value::Null));
            let have = current
                .map(|c| firewall::canonical_rules(c.attrs.get(attr).unwrap_or(&Value::Null)))
                .unwrap_or_default();
            let add: Vec<IpPermission> = want
                .iter()
                .filter(|r| !have.contains(r))
                .map(permission)
                .collect();
            let remove: Vec<IpPermission> = have
                .iter()
                .filter(|r| !want.contains(r))
                .map(permission)
                .collect();
            if !remove.is_empty() {
                if egress {
                    client
                        .revoke_security_group_egress()
                        .group_id(group)
                        .set_ip_permissions(Some(remove))
                        .send()
                        .await
                        .map_err(aws_err)?;
                } else {
                    client
                        .revoke_security_group_ingress()
                        .group_id(group)
                        .set_ip_permissions(Some(remove))
                        .send()
                        .await
                        .map_err(aws_err)?;
                }
            }
            if !add.is_empty() {
                if egress {
                    client
                        .authorize_security_group_egress()
                        .group_id(group)
                        .set_ip_permissions(Some(add))
                        .send()
                        .await
                        .map_err(aws_err)?;
                } else {
                    client
                        .authorize_security_group_ingress()
                        .group_id(group)
                        .set_ip_permissions(Some(add))
                        .send()
                        .await
                        .map_err(aws_err)?;
                }
            }
        }
        Ok(())
    }

    async fn create_now(&self, req: &Request<'_>) -> Result<Observed> {
        let client = self.client(req.native_region).await?;
        let kind = req.address.kind;
        // Idempotency by tag for every kind (RunInstances and CreateVolume also get ClientToken).
        if let Some(o) = self
            .by_filter(
                &client,
                kind,
                req.native_region,
                vec![tag_filter(TAG_TOKEN, req.token)],
            )
            .await?
            .into_iter()
            .next()
        {
            return Ok(o);
        }
        let tags = managed_tags(req);
        let spec = |rt: ResourceType| {
            TagSpecification::builder()
                .resource_type(rt)
                .set_tags(Some(
                    tags.iter()
                        .map(|(k, v)| Tag::builder().key(k).value(v).build())
                        .collect(),
                ))
                .build()
        };
        let a = req.attrs;
        // What the create's own response describes completely needs no read after it.
        let mut described: Option<Observed> = None;
        let id = match kind {
            Kind::Network => {
                let out = client
                    .create_vpc()
                    .cidr_block(str_attr(a, "cidr"))
                    .tag_specifications(spec(ResourceType::Vpc))
                    .send()
                    .await
                    .map_err(aws_err)?;
                described = out.vpc().map(|v| observe_vpc(v, req.native_region));
                out.vpc().and_then(|v| v.vpc_id()).map(str::to_string)
            }
            Kind::Subnet => {
                let id = client
                    .create_subnet()
                    .vpc_id(str_attr(a, "network"))
                    .cidr_block(str_attr(a, "cidr"))
                    .availability_zone(zone_of(req.native_region, a))
                    .tag_specifications(spec(ResourceType::Subnet))
                    .send()
                    .await
                    .map_err(aws_err)?
                    .subnet()
                    .and_then(|s| s.subnet_id())
                    .map(str::to_string);
                if let (Some(id), true) = (&id, bool_attr(a, "public")) {
                    self.set_public(&client, id, true).await?;
                }
                id
            }
            Kind::Firewall => {
                let id = client
                    .create_security_group()
                    .group_name(req.address.name.as_str())
                    .description(format!("chimera {} ({})", req.address, req.stack))
                    .vpc_id(str_attr(a, "network"))
                    .tag_specifications(spec(ResourceType::SecurityGroup))
                    .send()
                    .await
                    .map_err(aws_err)?
                    .group_id()
                    .map(str::to_string);
                if let Some(id) = &id {
                    self.created(id);
                    let current = with_consistency(|| {
                        self.read_in(&client, Kind::Firewall, id, req.native_region)
                    })
                    .await?;
                    self.sync_rules(&client, id, a, current.as_ref()).await?;
                }
                id
            }
            Kind::Instance => {
                let ami = self.ami(&client, a).await?;
                let firewalls: Vec<String> = str_list(a, "firewalls");
                let mut run = client
                    .run_instances()
                    .image_id(ami)
                    .instance_type(InstanceType::from(instance_type(a)))
                    .min_count(1)
                    .max_count(1)
                    .client_token(req.token)
                    .tag_specifications(spec(ResourceType::Instance));
                if bool_attr(a, "public_ip") {
                    run = run.network_interfaces(
                        InstanceNetworkInterfaceSpecification::builder()
                            .device_index(0)
                            .subnet_id(str_attr(a, "subnet"))
                            .set_groups(Some(firewalls))
                            .associate_public_ip_address(true)
                            .build(),
                    );
                } else {
                    run = run
                        .subnet_id(str_attr(a, "subnet"))
                        .set_security_group_ids(Some(firewalls));
                }
                if let Some(ud) = a.get("user_data").and_then(Value::as_str) {
                    run = run.user_data(base64::engine::general_purpose::STANDARD.encode(ud));
                }
                let out = run.send().await.map_err(aws_err)?;
                let instance = out.instances().first();
                described = instance.map(|i| observe_instance(i, req.native_region));
                instance.and_then(|i| i.instance_id()).map(str::to_string)
            }
            Kind::Volume => {
                let id = client
                    .create_volume()
                    .availability_zone(zone_of(req.native_region, a))
                    .size(a.get("size_gib").and_then(Value::as_i64).unwrap_or(1) as i32)
                    .volume_type(VolumeType::from(str_attr(a, "disk_type")))
                    .encrypted(bool_attr(a, "encrypted"))
                    .client_token(req.token)
                    .tag_specifications(spec(ResourceType::Volume))
                    .send()
                    .await
                    .map_err(aws_err)?
                    .volume_id()
                    .map(str::to_string);
                if let (Some(id), Some(instance)) = (&id, a.get("instance").and_then(Value::as_str))
                {
                    self.created(id);
                    self.attach(&client, id, instance).await?;
                }
                id
            }
        };
        let id = id.ok_or_else(|| ProviderError::Failed {
            code: "EmptyResponse".into(),
            message: format!("EC2 returned no id for {}", req.address),
        })?;
        self.created(&id);
        if let Some(o) = described.filter(|o| o.cloud_id == id && o.tags.contains_key(TAG_TOKEN)) {
            return Ok(o);
        }
        with_consistency(|| self.read_in(&client, kind, &id, req.native_region))
            .await?
            .ok_or_else(|| ProviderError::Retryable(format!("{id} is not visible yet")))
    }

    async fn set_public(&self, client: &Client, subnet: &str, public: bool) -> Result<()> {
        client
            .modify_subnet_attribute()
            .subnet_id(subnet)
            .map_public_ip_on_launch(AttributeBooleanValue::builder().value(public).build())
            .send()
            .await
            .map_err(aws_err)?;
        Ok(())
    }

    async fn attach(&self, client: &Client, volume: &str, instance: &str) -> Result<()> {
        client
            .wait_until_volume_available()
            .volume_ids(volume)
            .wait(MAX_WAIT)
            .await
            .map_err(|e| wait_err("volume available", e))?;
        client
            .attach_volume()
            .volume_id(volume)
            .instance_id(instance)
            .device(DEVICE)
            .send()
            .await
            .map_err(aws_err)?;
        Ok(())
    }

    async fn detach(&self, client: &Client, volume: &str, instance: &str) -> Result<()> {
        client
            .detach_volume()
            .volume_id(volume)
            .instance_id(instance)
            .device(DEVICE)
            .send()
            .await
            .map_err(aws_err)?;
        client
            .wait_until_volume_available()
            .volume_ids(volume)
            .wait(MAX_WAIT)
            .await
            .map_err(|e| wait_err("volume available", e))?;
        Ok(())
    }

    async fn update_now(&self, req: &Request<'_>, id: &str) -> Result<Observed> {
        let client = self.client(req.native_region).await?;
        let kind = req.address.kind;
        let current = with_consistency(|| self.read_in(&client, kind, id, req.native_region))
            .await?
            .ok_or_else(|| ProviderError::Failed {
                code: "NotFound".into(),
                message: format!("{} ({id}) does not exist", req.address),
            })?;
        let a = req.attrs;
        match kind {
            Kind::Network => {}
            Kind::Subnet => {
                if current.attrs.get("public") != a.get("public") {
                    self.set_public(&client, id, bool_attr(a, "public")).await?;
                }
            }
            Kind::Firewall => self.sync_rules(&client, id, a, Some(&current)).await?,
            Kind::Instance => {
                if current.attrs.get("public_ip") != a.get("public_ip") {
                    return Err(ProviderError::Failed {
                        code: "UnsupportedUpdate".into(),
                        message: format!(
                            "EC2 cannot add or remove the public address of a running instance ({}); replace it: destroy it and apply, or rename it",
                            req.address
                        ),
                    });
                }
                let firewalls = str_list(a, "firewalls");
                if current.attrs.get("firewalls") != Some(&json!(sorted(firewalls.clone()))) {
                    client
                        .modify_instance_attribute()
                        .instance_id(id)
                        .set_groups(Some(firewalls))
                        .send()
                        .await
                        .map_err(aws_err)?;
                }
                let want = instance_type(a);
                if current.attrs.get("instance_type").and_then(Value::as_str) != Some(want) {
                    // EC2 changes an instance type only while stopped: stop, modify, start.
                    client
                        .stop_instances()
                        .instance_ids(id)
                        .send()
                        .await
                        .map_err(aws_err)?;
                    client
                        .wait_until_instance_stopped()
                        .instance_ids(id)
                        .wait(MAX_WAIT)
                        .await
                        .map_err(|e| wait_err("instance stopped", e))?;
                    client
                        .modify_instance_attribute()
                        .instance_id(id)
                        .instance_type(AttributeValue::builder().value(want).build())
                        .send()
                        .await
                        .map_err(aws_err)?;
                    client
                        .start_instances()
                        .instance_ids(id)
                        .send()
                        .await
                        .map_err(aws_err)?;
                }
            }
            Kind::Volume => {
                let size = a.get("size_gib").and_then(Value::as_i64).unwrap_or(1);
                if current.attrs.get("size_gib").and_then(Value::as_i64) != Some(size) {
                    client
                        .modify_volume()
                        .volume_id(id)
                        .size(size as i32)
                        .send()
                        .await
                        .map_err(aws_err)?;
                }
                let want = a.get("instance").and_then(Value::as_str);
                let have = current.attrs.get("instance").and_then(Value::as_str);
                if want != have {
                    if let Some(h) = have {
                        self.detach(&client, id, h).await?;
                    }
                    if let Some(i) = want {
                        self.attach(&client, id, i).await?;
                    }
                }
            }
        }
        let mut tags = managed_tags(req);
        // The creation token stays: it identifies the create that made this resource.
        if let Some(t) = current.tags.get(TAG_TOKEN) {
            tags.insert(TAG_TOKEN.into(), t.clone());
        }
        self.sync_tags(&client, id, &tags, &current.tags).await?;
        with_consistency(|| self.read_in(&client, kind, id, req.native_region))
            .await?
            .ok_or_else(|| ProviderError::Retryable(format!("{id} is not visible")))
    }

    async fn delete_now(&self, kind: Kind, id: &str) -> Result<()> {
        // Absent after a delete is absence, however recent the create.
        self.forget(id);
        let Some(current) = self.locate(kind, id).await? else {
            return Ok(());
        };
        let client = self.client(&current.native_region).await?;
        let r = match kind {
            Kind::Network => client
                .delete_vpc()
                .vpc_id(id)
                .send()
                .await
                .map(|_| ())
                .map_err(aws_err),
            Kind::Subnet => client
                .delete_subnet()
                .subnet_id(id)
                .send()
                .await
                .map(|_| ())
                .map_err(aws_err),
            Kind::Firewall => client
                .delete_security_group()
                .group_id(id)
                .send()
                .await
                .map(|_| ())
                .map_err(aws_err),
            Kind::Instance => {
                client
                    .terminate_instances()
                    .instance_ids(id)
                    .send()
                    .await
                    .map_err(aws_err)?;
                client
                    .wait_until_instance_terminated()
                    .instance_ids(id)
                    .wait(MAX_WAIT)
                    .await
                    .map(|_| ())
                    .map_err(|e| wait_err("instance terminated", e))
            }
            Kind::Volume => {
                if let Some(i) = current.attrs.get("instance").and_then(Value::as_str) {
                    self.detach(&client, id, i).await?;
                }
                client
                    .delete_volume()
                    .volume_id(id)
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(aws_err)
            }
        };
        match r {
            Err(ProviderError::Failed { code, .. }) if code.ends_with(".NotFound") => Ok(()),
            // Dependents may still be terminating (an instance's interface in a subnet).
            Err(ProviderError::Failed { code, message }) if code == "DependencyViolation" => Err(
                ProviderError::Retryable(format!("DependencyViolation: {message}")),
            ),
            other => other,
        }
    }
}

#[async_trait]
impl Provider for AwsCloud {
    fn name(&self) -> ProviderName {
        ProviderName::Aws
    }

    async fn create(&self, req: &Request<'_>) -> Result<Observed> {
        self.create_now(req).await
    }

    async fn read(&self, kind: Kind, cloud_id: &str) -> Result<Option<Observed>> {
        self.locate(kind, cloud_id).await
    }

    /// Batched: per kind and region, one Describe call (paged) for up to
    /// [`IDS_PER_FILTER`] ids, filtered by id; ids found in one region are not asked of the
    /// next.
    async fn observe(&self, items: &[(Kind, String)]) -> Result<Vec<Option<Observed>>> {
        let mut found: HashMap<String, Observed> = HashMap::new();
        let regions = self.regions().await;
        for kind in Kind::ALL {
            for region in &regions {
                let missing: Vec<String> = items
                    .iter()
                    .filter(|(k, id)| *k == kind && !found.contains_key(id))
                    .map(|(_, id)| id.clone())
                    .collect();
                if missing.is_empty() {
                    break;
                }
                let client = self.client(region).await?;
                for chunk in missing.chunks(IDS_PER_FILTER) {
                    let by_id = Filter::builder()
                        .name(id_filter(kind))
                        .set_values(Some(chunk.to_vec()))
                        .build();
                    for o in self.by_filter(&client, kind, region, vec![by_id]).await? {
                        found.insert(o.cloud_id.clone(), o);
                    }
                }
            }
        }
        items
            .iter()
            .map(|(_, id)| match found.get(id) {
                Some(o) => Ok(Some(o.clone())),
                // Created moments ago by this process: not visible yet, not gone.
                None if self.is_recent(id) => Err(ProviderError::Retryable(format!(
                    "{id} was created moments ago and is not visible yet"
                ))),
                None => Ok(None),
            })
            .collect()
    }

    async fn update(&self, req: &Request<'_>, cloud_id: &str) -> Result<Observed> {
        self.update_now(req, cloud_id).await
    }

    async fn delete(&self, kind: Kind, cloud_id: &str) -> Result<()> {
        self.delete_now(kind, cloud_id).await
    }

    async fn find_by_token(&self, kind: Kind, token: &str) -> Result<Option<Observed>> {
        for region in self.regions().await {
            let client = self.client(&region).await?;
            if let Some(o) = self
                .by_filter(&client, kind, &region, vec![tag_filter(TAG_TOKEN, token)])
                .await?
                .into_iter()
                .next()
            {
                return Ok(Some(o));
            }
        }
        Ok(None)
    }

    async fn list_managed(&self, stack: &str) -> Result<Vec<Observed>> {
        let mut out = Vec::new();
        for region in self.regions().await {
            let client = self.client(&region).await?;
            for kind in Kind::ALL {
                out.extend(
                    self.by_filter(&client, kind, &region, vec![tag_filter(TAG_STACK, stack)])
                        .await?,
                );
            }
        }
        out.sort_by(|a, b| {
            a.tags
                .get(crate::TAG_ADDRESS)
                .cmp(&b.tags.get(crate::TAG_ADDRESS))
        });
        Ok(out)
    }
}

/// Retries a read that may not see a fresh resource yet (a few short tries).
async fn with_consistency<T, F, Fut>(mut read: F) -> Result<Option<T>>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    let mut delay = Duration::from_millis(50);
    for _ in 0..8 {
        if let Some(v) = read().await? {
            return Ok(Some(v));
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
    read().await
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

/// How many ids one Describe filter carries (EC2 accepts up to 200 values per filter).
const IDS_PER_FILTER: usize = 200;

/// The Describe filter that selects resources of `kind` by id.
fn id_filter(kind: Kind) -> &'static str {
    match kind {
        Kind::Network => "vpc-id",
        Kind::Subnet => "subnet-id",
        Kind::Firewall => "group-id",
        Kind::Instance => "instance-id",
        Kind::Volume => "volume-id",
    }
}

fn tag_filter(key: &str, value: &str) -> Filter {
    Filter::builder()
        .name(format!("tag:{key}"))
        .values(value)
        .build()
}

fn str_attr<'a>(a: &'a Map<String, Value>, k: &str) -> &'a str {
    a.get(k).and_then(Value::as_str).unwrap_or_default()
}

/// The instance type: the escape hatch's `aws.instance_type` (a type the catalog does not list),
/// else the catalog's.
fn instance_type(a: &Map<String, Value>) -> &str {
    a.get("aws")
        .and_then(|x| x.get("instance_type"))
        .and_then(Value::as_str)
        .unwrap_or_else(|| str_attr(a, "instance_type"))
}

fn bool_attr(a: &Map<String, Value>, k: &str) -> bool {
    a.get(k).and_then(Value::as_bool).unwrap_or(false)
}

fn str_list(a: &Map<String, Value>, k: &str) -> Vec<String> {
    a.get(k)
        .and_then(Value::as_array)
        .map(|v| {
            v.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

fn zone_of(region: &str, a: &Map<String, Value>) -> String {
    let z = str_attr(a, "zone");
    format!("{region}{}", if z.is_empty() { "a" } else { z })
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

fn gone(i: &aws_sdk_ec2::types::Instance) -> bool {
    matches!(
        i.state().and_then(|s| s.name()),
        Some(InstanceStateName::Terminated | InstanceStateName::ShuttingDown)
    )
}

fn observed(
    kind: Kind,
    id: &str,
    region: &str,
    attrs: Value,
    mut outputs: Map<String, Value>,
    tags: BTreeMap<String, String>,
) -> Observed {
    outputs.insert("id".into(), Value::String(id.to_string()));
    Observed {
        cloud_id: id.to_string(),
        kind,
        native_region: region.to_string(),
        attrs: attrs.as_object().cloned().unwrap_or_default(),
        outputs,
        tags,
    }
}

fn observe_vpc(v: &aws_sdk_ec2::types::Vpc, region: &str) -> Observed {
    observed(
        Kind::Network,
        v.vpc_id().unwrap_or_default(),
        region,
        json!({ "cidr": v.cidr_block() }),
        Map::new(),
        tags_of(v.tags()),
    )
}

fn observe_subnet(s: &aws_sdk_ec2::types::Subnet, region: &str) -> Observed {
    let zone = s
        .availability_zone()
        .and_then(|z| z.strip_prefix(region))
        .unwrap_or_default();
    observed(
        Kind::Subnet,
        s.subnet_id().unwrap_or_default(),
        region,
        json!({
            "network": s.vpc_id(),
            "cidr": s.cidr_block(),
            "zone": zone,
            "public": s.map_public_ip_on_launch().unwrap_or(false),
        }),
        Map::new(),
        tags_of(s.tags()),
    )
}

fn observe_sg(g: &aws_sdk_ec2::types::SecurityGroup, region: &str) -> Observed {
    observed(
        Kind::Firewall,
        g.group_id().unwrap_or_default(),
        region,
        json!({
            "network": g.vpc_id(),
            "ingress": rules_of(g.ip_permissions()),
            "egress": rules_of(g.ip_permissions_egress()),
        }),
        Map::new(),
        tags_of(g.tags()),
    )
}

fn observe_instance(i: &aws_sdk_ec2::types::Instance, region: &str) -> Observed {
    let mut outputs = Map::new();
    outputs.insert("private_ip".into(), json!(i.private_ip_address()));
    outputs.insert("public_ip".into(), json!(i.public_ip_address()));
    let firewalls = sorted(
        i.security_groups()
            .iter()
            .filter_map(|g| g.group_id().map(str::to_string))
            .collect(),
    );
    observed(
        Kind::Instance,
        i.instance_id().unwrap_or_default(),
        region,
        json!({
            "instance_type": i.instance_type().map(|t| t.as_str()),
            "subnet": i.subnet_id(),
            "firewalls": firewalls,
            "public_ip": i.public_ip_address().is_some(),
            "image_id": i.image_id(),
        }),
        outputs,
        tags_of(i.tags()),
    )
}

fn observe_volume(v: &aws_sdk_ec2::types::Volume, region: &str) -> Observed {
    let zone = v
        .availability_zone()
        .and_then(|z| z.strip_prefix(region))
        .unwrap_or_default();
    let instance = v
        .attachments()
        .iter()
        .find_map(|a| a.instance_id().map(str::to_string));
    observed(
        Kind::Volume,
        v.volume_id().unwrap_or_default(),
        region,
        json!({
            "size_gib": v.size(),
            "disk_type": v.volume_type().map(|t| t.as_str()),
            "zone": zone,
            "encrypted": v.encrypted().unwrap_or(false),
            "instance": instance,
        }),
        Map::new(),
        tags_of(v.tags()),
    )
}

/// One canonical rule (see [`firewall::canonical_rules`]) as an EC2 permission.
fn permission(r: &Value) -> IpPermission {
    let protocol = r["protocol"].as_str().unwrap_or("all");
    let mut range = IpRange::builder().cidr_ip(r["cidr"].as_str().unwrap_or_default());
    if let Some(d) = r["description"].as_str() {
        range = range.description(d);
    }
    let mut p = IpPermission::builder()
        .ip_protocol(if protocol == "all" { "-1" } else { protocol })
        .ip_ranges(range.build());
    if protocol != "all" {
        p = p
            .from_port(r["from_port"].as_i64().unwrap_or(0) as i32)
            .to_port(r["to_port"].as_i64().unwrap_or(65535) as i32);
    }
    p.build()
}

/// Rules as Chimera writes them: one per (protocol, ports, description), CIDRs together.
fn rules_of(perms: &[IpPermission]) -> Value {
    // (protocol, from, to, description) → CIDRs
    type Key = (String, Option<i64>, Option<i64>, Option<String>);
    let mut grouped: BTreeMap<Key, Vec<String>> = BTreeMap::new();
    for p in perms {
        let protocol = match p.ip_protocol().unwrap_or("-1") {
            "-1" | "all" => "all".to_string(),
            other => other.to_string(),
        };
        let all = protocol == "all";
        let from = if all {
            None
        } else {
            p.from_port().map(i64::from)
        };
        let to = if all {
            None
        } else {
            p.to_port().map(i64::from)
        };
        for r in p.ip_ranges() {
            grouped
                .entry((
                    protocol.clone(),
                    from,
                    to,
                    r.description().map(str::to_string),
                ))
                .or_default()
                .push(r.cidr_ip().unwrap_or_default().to_string());
        }
    }
    Value::Array(
        grouped
            .into_iter()
            .map(|((protocol, from, to, description), mut cidrs)| {
                cidrs.sort();
                let mut m = Map::new();
                m.insert("protocol".into(), json!(protocol));
                m.insert("from_port".into(), json!(from));
                m.insert("to_port".into(), json!(to));
                m.insert("cidrs".into(), json!(cidrs));
                if let Some(d) = description {
                    m.insert("description".into(), json!(d));
                }
                Value::Object(m)
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_round_trip_through_permissions() {
        let rules = json!([
            { "protocol": "tcp", "from_port": 443, "to_port": 443, "cidrs": ["0.0.0.0/0"] },
            { "protocol": "tcp", "from_port": 22, "to_port": 22, "cidrs": ["10.0.0.0/16", "10.1.0.0/16"], "description": "ssh" },
            { "protocol": "all", "from_port": null, "to_port": null, "cidrs": ["0.0.0.0/0"] },
        ]);
        let perms: Vec<IpPermission> = firewall::canonical_rules(&rules)
            .iter()
            .map(permission)
            .collect();
        assert_eq!(
            firewall::canonical_rules(&rules_of(&perms)),
            firewall::canonical_rules(&rules)
        );
    }

    #[test]
    fn settings_are_checked() {
        let s = AwsSettings::from_settings(&json!({ "aws": { "endpoint": "http://127.0.0.1:1", "images": { "ubuntu-24.04": "ami-1" }, "regions": ["eu-west-1"] } })).unwrap();
        assert_eq!(s.endpoint.as_deref(), Some("http://127.0.0.1:1"));
        assert_eq!(s.images["ubuntu-24.04"], "ami-1");
        let e = AwsSettings::from_settings(&json!({ "aws": { "endpont": "x" } })).unwrap_err();
        assert!(e.contains("providers.aws.endpont"), "{e}");
    }
}
