//! instance → instance in the region's first zone (`'a`: us-east1-b), machine type from the
//! catalog (or `gcp.machine_type`), boot disk from the image family (or `gcp.image`, or the
//! stack's `providers.gcp.images`), user data as the `startup-script` metadata, tags as labels,
//! firewalls as network tags. In place: labels (`setLabels` with the current fingerprint),
//! firewalls (`setTags`), the machine type (stop → `setMachineType` → start). An external
//! address is not changed in place. TERMINATED instances exist (stopped), STOPPING ones too.

use chimera_model::Kind;
use chimera_model::kinds::InstanceSpec;
use google_cloud_compute_v1::model::{
    AccessConfig, AttachedDisk, AttachedDiskInitializeParams, Instance, InstancesSetLabelsRequest,
    InstancesSetMachineTypeRequest, Metadata, NetworkInterface, Tags, access_config, instance,
    metadata,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, json};

use super::{
    Api, REGIONAL_SERIES, ZONES, attrs_of, gcp_err, kept_tags, labels_of, last, observed,
    request_id, tags_of_labels, zone_in,
};
use chimera_providers::{Observed, ProviderError, Request, Result, Violation, managed_tags};

/// GCP's limit on one metadata value (the startup script), in bytes.
const MAX_USER_DATA: usize = 256 * 1024;

/// What an instance is observed as: the attributes drift detection compares with state rows.
#[derive(Debug, Serialize, Deserialize)]
struct Attrs {
    instance_type: Option<String>,
    subnet: Option<String>,
    /// Firewall ids (network tags), sorted.
    firewalls: Vec<String>,
    public_ip: bool,
}

/// The machine type: the escape hatch's `gcp.machine_type`, else the catalog's.
fn machine_type<'a>(req: &'a Request<'_>, spec: &'a InstanceSpec) -> &'a str {
    req.native_str("machine_type")
        .unwrap_or(&spec.instance_type)
}

/// Whether `region` offers the series of `machine_type`; `Err` names where it is offered.
fn offered(region: &str, machine_type: &str) -> std::result::Result<(), &'static [&'static str]> {
    let series = machine_type.split('-').next().unwrap_or_default();
    match REGIONAL_SERIES.iter().find(|(s, _)| *s == series) {
        Some((_, regions)) if !regions.contains(&region) => Err(*regions),
        _ => Ok(()),
    }
}

pub(super) fn validate(req: &Request<'_>, spec: &InstanceSpec) -> Vec<Violation> {
    let mut out = Vec::new();
    let region = req.native_region;
    let mt = machine_type(req, spec);
    if let Err(regions) = offered(region, mt) {
        out.push(Violation::new(
            if req.native_str("machine_type").is_some() {
                "gcp"
            } else {
                "size"
            },
            format!(
                "GCP does not offer machine type {mt} in {region} (its series is offered in {}); pick another machine type or place the instance in one of those regions",
                regions.join(", ")
            ),
        ));
    }
    if !ZONES.iter().any(|(r, _)| *r == region) {
        out.push(Violation::new(
            "region",
            format!(
                "the gcp provider does not know the zones of {region}; use one of {}",
                ZONES.iter().map(|(r, _)| *r).collect::<Vec<_>>().join(", ")
            ),
        ));
    }
    if let Some(ud) = &spec.user_data
        && ud.len() > MAX_USER_DATA
    {
        out.push(Violation::new(
            "user_data",
            format!(
                "GCP takes at most {MAX_USER_DATA} bytes (256 KiB) in one metadata value, and user data is the `startup-script` value: this is {} bytes; move the script to a file the instance downloads at boot (Cloud Storage, a package)",
                ud.len()
            ),
        ));
    }
    out
}

/// The boot image: `gcp.image` on the resource, the stack's pin for the family
/// (`providers.gcp.images`), else the catalog's family path.
fn image(api: &Api<'_>, req: &Request<'_>, spec: &InstanceSpec) -> Result<String> {
    if let Some(i) = req.native_str("image") {
        return Ok(i.to_string());
    }
    if let Some(i) = api.gcp.settings.images.get(&spec.image) {
        return Ok(i.clone());
    }
    match spec.image_ref.as_str() {
        Some(path) if path.starts_with("projects/") || path.starts_with("https://") => {
            Ok(path.to_string())
        }
        _ => Err(ProviderError::Failed {
            code: "invalid".into(),
            message: format!(
                "image \"{}\" has no GCP image in the catalog; pin one with `providers.gcp.images.\"{}\" = \"projects/…/global/images/family/…\"` or `gcp.image` on the resource",
                spec.image, spec.image
            ),
        }),
    }
}

pub(super) async fn create(
    api: &Api<'_>,
    req: &Request<'_>,
    spec: &InstanceSpec,
    name: &str,
) -> Result<String> {
    let zone = zone_in(api.region, "").ok_or_else(|| ProviderError::Failed {
        code: "invalid".into(),
        message: format!("{} has no zones", api.region),
    })?;
    let mut boot_params = AttachedDiskInitializeParams::default();
    boot_params.source_image = Some(image(api, req, spec)?);
    let mut boot = AttachedDisk::default();
    boot.boot = Some(true);
    boot.auto_delete = Some(true);
    boot.initialize_params = Some(boot_params);
    let mut nic = NetworkInterface::default();
    nic.subnetwork = Some(subnet_path(api, &spec.subnet));
    if spec.public_ip {
        let mut ac = AccessConfig::default();
        ac.name = Some("External NAT".into());
        ac.r#type = Some(access_config::Type::OneToOneNat);
        nic.access_configs = vec![ac];
    }
    let mut i = Instance::default();
    i.name = Some(name.to_string());
    i.machine_type = Some(format!(
        "zones/{zone}/machineTypes/{}",
        machine_type(req, spec)
    ));
    i.disks = vec![boot];
    i.network_interfaces = vec![nic];
    i.labels = labels_of(&managed_tags(req));
    let mut tags = Tags::default();
    tags.items = spec.firewalls.clone();
    i.tags = Some(tags);
    if let Some(ud) = &spec.user_data {
        let mut item = metadata::Items::default();
        item.key = Some("startup-script".into());
        item.value = Some(ud.clone());
        let mut md = Metadata::default();
        md.items = vec![item];
        i.metadata = Some(md);
    }
    api.run(
        api.c
            .instances
            .insert()
            .set_project(api.project)
            .set_zone(&zone)
            .set_request_id(request_id(req.token, "instance"))
            .set_body(i)
            .send(),
    )
    .await?;
    Ok(format!("{zone}/{name}"))
}

fn subnet_path(api: &Api<'_>, subnet: &str) -> String {
    if subnet.contains('/') {
        subnet.to_string()
    } else {
        format!(
            "projects/{}/regions/{}/subnetworks/{subnet}",
            api.project, api.region
        )
    }
}

/// `zone/name` of an instance id.
pub(super) fn split(id: &str) -> Result<(&str, &str)> {
    id.split_once('/').ok_or_else(|| ProviderError::Failed {
        code: "notFound".into(),
        message: format!(
            "`{id}` is not a GCP instance or disk id (zone/name, e.g. us-east1-b/web-1a2b3c4d5e)"
        ),
    })
}

pub(super) async fn update(
    api: &Api<'_>,
    req: &Request<'_>,
    spec: &InstanceSpec,
    current: &Observed,
) -> Result<()> {
    let have: Attrs = attrs_of(current)?;
    let (zone, name) = split(&current.cloud_id)?;
    if have.public_ip != spec.public_ip {
        return Err(ProviderError::Failed {
            code: "UnsupportedUpdate".into(),
            message: format!(
                "Chimera does not add or remove the external address of a GCP instance in place ({}); replace it: destroy it and apply, or rename it",
                req.address
            ),
        });
    }
    // Fingerprints are read now: a stale one is a 412, retried with a fresh read.
    let now = get(api, zone, name).await?;
    let labels = labels_of(&kept_tags(req, current));
    if labels != now.labels {
        let mut body = InstancesSetLabelsRequest::default();
        body.labels = labels;
        body.label_fingerprint = now.label_fingerprint.clone();
        api.run(
            api.c
                .instances
                .set_labels()
                .set_project(api.project)
                .set_zone(zone)
                .set_instance(name)
                .set_body(body)
                .send(),
        )
        .await?;
    }
    let mut firewalls = spec.firewalls.clone();
    firewalls.sort();
    if have.firewalls != firewalls {
        let mut tags = Tags::default();
        tags.items = spec.firewalls.clone();
        tags.fingerprint = now.tags.as_ref().and_then(|t| t.fingerprint.clone());
        api.run(
            api.c
                .instances
                .set_tags()
                .set_project(api.project)
                .set_zone(zone)
                .set_instance(name)
                .set_body(tags)
                .send(),
        )
        .await?;
    }
    let want = machine_type(req, spec);
    if have.instance_type.as_deref() != Some(want) {
        // GCP changes a machine type only while the instance is TERMINATED: stop, set, start.
        api.run(
            api.c
                .instances
                .stop()
                .set_project(api.project)
                .set_zone(zone)
                .set_instance(name)
                .send(),
        )
        .await?;
        let mut body = InstancesSetMachineTypeRequest::default();
        body.machine_type = Some(format!("zones/{zone}/machineTypes/{want}"));
        api.run(
            api.c
                .instances
                .set_machine_type()
                .set_project(api.project)
                .set_zone(zone)
                .set_instance(name)
                .set_body(body)
                .send(),
        )
        .await?;
        api.run(
            api.c
                .instances
                .start()
                .set_project(api.project)
                .set_zone(zone)
                .set_instance(name)
                .send(),
        )
        .await?;
    }
    Ok(())
}

async fn get(api: &Api<'_>, zone: &str, name: &str) -> Result<Instance> {
    api.c
        .instances
        .get()
        .set_project(api.project)
        .set_zone(zone)
        .set_instance(name)
        .send()
        .await
        .map_err(gcp_err)
}

pub(super) async fn read(api: &Api<'_>, id: &str) -> Result<Option<Observed>> {
    let (zone, name) = split(id)?;
    Ok(Some(observe(&get(api, zone, name).await?)))
}

/// Instance `id` once its insert is done (see [`Api::settled`]).
pub(super) async fn settled(api: &Api<'_>, id: &str) -> Result<Option<Observed>> {
    let (zone, name) = split(id)?;
    let made = api.settled(id, || get(api, zone, name), making).await?;
    Ok(made.as_ref().map(observe))
}

/// The status of an instance whose insert is still running: PROVISIONING, STAGING.
fn making(i: &Instance) -> Option<String> {
    match &i.status {
        Some(s @ (instance::Status::Provisioning | instance::Status::Staging)) => {
            s.name().map(str::to_string)
        }
        _ => None,
    }
}

/// The instances named `ids` (`zone/name`), one filtered list per zone.
pub(super) async fn list_named(api: &Api<'_>, ids: &[String]) -> Result<Vec<Observed>> {
    list_zonal_named!(api, instances, ids, observe)
}

/// The instances of every zone that `filter` selects (one aggregated list).
pub(super) async fn list_aggregated(
    api: &Api<'_>,
    filter: Option<String>,
) -> Result<Vec<Observed>> {
    list_aggregated!(api, instances, filter, observe)
}

pub(super) async fn delete(api: &Api<'_>, id: &str) -> Result<()> {
    let (zone, name) = split(id)?;
    api.run(
        api.c
            .instances
            .delete()
            .set_project(api.project)
            .set_zone(zone)
            .set_instance(name)
            .send(),
    )
    .await
}

fn observe(i: &Instance) -> Observed {
    let zone = i.zone.as_deref().map(last).unwrap_or_default();
    let (region, _) = super::zone_letter(zone);
    let nic = i.network_interfaces.first();
    let nat = nic.and_then(|n| n.access_configs.iter().find_map(|a| a.nat_ip.clone()));
    let mut outputs = Map::new();
    outputs.insert(
        "private_ip".into(),
        json!(nic.and_then(|n| n.network_ip.clone())),
    );
    outputs.insert("public_ip".into(), json!(nat));
    let mut firewalls = i.tags.as_ref().map(|t| t.items.clone()).unwrap_or_default();
    firewalls.sort();
    let attrs = Attrs {
        instance_type: i.machine_type.as_deref().map(|m| last(m).to_string()),
        subnet: nic.and_then(|n| n.subnetwork.as_deref().map(|s| last(s).to_string())),
        firewalls,
        public_ip: nic.is_some_and(|n| !n.access_configs.is_empty()),
    };
    let id = format!("{zone}/{}", i.name.as_deref().unwrap_or_default());
    observed(
        Kind::Instance,
        &id,
        &region,
        attrs,
        outputs,
        tags_of_labels(&i.labels),
    )
}
