//! volume → zonal persistent disk (`pd-ssd`, `pd-standard`, … from the catalog), attached with
//! `attachDisk`. In place: size grows (`resize`; GCP never shrinks a disk), labels
//! (`setLabels` with the current fingerprint), the attachment (detach, attach). GCP encrypts
//! every disk: `encrypted = false` is refused at plan time.

use chimera_model::Kind;
use chimera_model::kinds::VolumeSpec;
use google_cloud_compute_v1::model::{
    AttachedDisk, Disk, DisksResizeRequest, ZoneSetLabelsRequest, disk,
};
use serde::{Deserialize, Serialize};
use serde_json::Map;

use super::instance::split;
use super::{
    Api, attrs_of, gcp_err, kept_tags, labels_of, last, observed, request_id, tags_of_labels,
    zone_in, zone_letter, zone_violation,
};
use chimera_providers::{Observed, ProviderError, Request, Result, Violation, managed_tags};

/// The sizes GCP allows per disk type, in GB.
const SIZES: &[(&str, u32, u32)] = &[
    ("pd-standard", 10, 65_536),
    ("pd-balanced", 10, 65_536),
    ("pd-ssd", 10, 65_536),
    ("pd-extreme", 500, 65_536),
];

/// What a disk is observed as: the attributes drift detection compares with state rows.
#[derive(Debug, Serialize, Deserialize)]
struct Attrs {
    size_gib: Option<i64>,
    disk_type: Option<String>,
    /// The zone letter (`a`), as specs hold it.
    zone: String,
    encrypted: bool,
    /// The instance it is attached to (`zone/name`).
    instance: Option<String>,
}

pub(super) fn validate(req: &Request<'_>, spec: &VolumeSpec) -> Vec<Violation> {
    let mut out = Vec::new();
    if zone_in(req.native_region, &spec.zone).is_none() {
        out.push(zone_violation(req.native_region, &spec.zone));
    }
    if !spec.encrypted {
        out.push(Violation::new(
            "encrypted",
            "GCP encrypts every disk at rest and cannot make an unencrypted one: set `encrypted = true`",
        ));
    }
    let ty = spec.disk_type.as_str();
    match SIZES.iter().find(|(t, ..)| *t == ty) {
        None => {
            let known: Vec<&str> = SIZES.iter().map(|(t, ..)| *t).collect();
            out.push(Violation::new(
                "type",
                format!(
                    "GCP has no disk type `{ty}` (the catalog's disk type for '{}); map it to one of {} in the catalog's volume_types",
                    spec.volume_type,
                    known.join(", ")
                ),
            ));
        }
        Some(&(_, min, max)) if !(min..=max).contains(&spec.size_gib) => {
            out.push(Violation::new(
                "size_gib",
                format!(
                    "a GCP {ty} disk is {min} to {max} GB, got {}: set size_gib within that range",
                    spec.size_gib
                ),
            ));
        }
        Some(_) => {}
    }
    out
}

pub(super) async fn create(
    api: &Api<'_>,
    req: &Request<'_>,
    spec: &VolumeSpec,
    name: &str,
) -> Result<String> {
    let zone = zone_in(api.region, &spec.zone).ok_or_else(|| ProviderError::Failed {
        code: "invalid".into(),
        message: zone_violation(api.region, &spec.zone).message,
    })?;
    let mut d = Disk::default();
    d.name = Some(name.to_string());
    d.size_gb = Some(i64::from(spec.size_gib));
    d.r#type = Some(format!("zones/{zone}/diskTypes/{}", spec.disk_type));
    d.labels = labels_of(&managed_tags(req));
    api.run(
        api.c
            .disks
            .insert()
            .set_project(api.project)
            .set_zone(&zone)
            .set_request_id(request_id(req.token, "disk"))
            .set_body(d)
            .send(),
    )
    .await?;
    let id = format!("{zone}/{name}");
    if let Some(instance) = &spec.instance {
        // The disk exists from here on, even if attaching it fails.
        api.gcp.window.created(&id);
        attach(api, &zone, name, instance).await?;
    }
    Ok(id)
}

pub(super) async fn update(
    api: &Api<'_>,
    req: &Request<'_>,
    spec: &VolumeSpec,
    current: &Observed,
) -> Result<()> {
    let have: Attrs = attrs_of(current)?;
    let (zone, name) = split(&current.cloud_id)?;
    let want = i64::from(spec.size_gib);
    match have.size_gib {
        Some(size) if size > want => {
            return Err(ProviderError::Failed {
                code: "UnsupportedUpdate".into(),
                message: format!(
                    "GCP disks only grow: {} is {size} GB and cannot become {want} GB; keep the size, or replace the volume (destroy it and apply, or rename it)",
                    req.address
                ),
            });
        }
        Some(size) if size < want => {
            let mut body = DisksResizeRequest::default();
            body.size_gb = Some(want);
            api.run(
                api.c
                    .disks
                    .resize()
                    .set_project(api.project)
                    .set_zone(zone)
                    .set_disk(name)
                    .set_body(body)
                    .send(),
            )
            .await?;
        }
        _ => {}
    }
    let now = get(api, zone, name).await?;
    let labels = labels_of(&kept_tags(req, current));
    if labels != now.labels {
        let mut body = ZoneSetLabelsRequest::default();
        body.labels = labels;
        body.label_fingerprint = now.label_fingerprint.clone();
        api.run(
            api.c
                .disks
                .set_labels()
                .set_project(api.project)
                .set_zone(zone)
                .set_resource(name)
                .set_body(body)
                .send(),
        )
        .await?;
    }
    if have.instance != spec.instance {
        if let Some(h) = &have.instance {
            detach(api, name, h).await?;
        }
        if let Some(i) = &spec.instance {
            attach(api, zone, name, i).await?;
        }
    }
    Ok(())
}

async fn get(api: &Api<'_>, zone: &str, name: &str) -> Result<Disk> {
    api.c
        .disks
        .get()
        .set_project(api.project)
        .set_zone(zone)
        .set_disk(name)
        .send()
        .await
        .map_err(gcp_err)
}

pub(super) async fn read(api: &Api<'_>, id: &str) -> Result<Option<Observed>> {
    let (zone, name) = split(id)?;
    Ok(Some(observe(&get(api, zone, name).await?)))
}

/// Disk `id` once its insert is done (see [`Api::settled`]).
pub(super) async fn settled(api: &Api<'_>, id: &str) -> Result<Option<Observed>> {
    let (zone, name) = split(id)?;
    let made = api.settled(id, || get(api, zone, name), making).await?;
    Ok(made.as_ref().map(observe))
}

/// The status of a disk whose insert is still running: CREATING, RESTORING.
fn making(d: &Disk) -> Option<String> {
    match &d.status {
        Some(s @ (disk::Status::Creating | disk::Status::Restoring)) => {
            s.name().map(str::to_string)
        }
        _ => None,
    }
}

/// The disks named `ids` (`zone/name`), one filtered list per zone.
pub(super) async fn list_named(api: &Api<'_>, ids: &[String]) -> Result<Vec<Observed>> {
    list_zonal_named!(api, disks, ids, observe)
}

/// The disks of every zone that `filter` selects (one aggregated list).
pub(super) async fn list_aggregated(
    api: &Api<'_>,
    filter: Option<String>,
) -> Result<Vec<Observed>> {
    list_aggregated!(api, disks, filter, observe)
}

/// Detaches the disk first if it is attached: GCP deletes only disks no instance uses.
pub(super) async fn delete(api: &Api<'_>, current: &Observed) -> Result<()> {
    let have: Attrs = attrs_of(current)?;
    let (zone, name) = split(&current.cloud_id)?;
    if let Some(i) = &have.instance {
        detach(api, name, i).await?;
    }
    api.run(
        api.c
            .disks
            .delete()
            .set_project(api.project)
            .set_zone(zone)
            .set_disk(name)
            .send(),
    )
    .await
}

async fn attach(api: &Api<'_>, zone: &str, disk: &str, instance: &str) -> Result<()> {
    let (i_zone, i_name) = split(instance)?;
    let mut a = AttachedDisk::default();
    a.source = Some(format!(
        "projects/{}/zones/{zone}/disks/{disk}",
        api.project
    ));
    a.device_name = Some(disk.to_string());
    a.auto_delete = Some(false);
    api.run(
        api.c
            .instances
            .attach_disk()
            .set_project(api.project)
            .set_zone(i_zone)
            .set_instance(i_name)
            .set_body(a)
            .send(),
    )
    .await
}

async fn detach(api: &Api<'_>, disk: &str, instance: &str) -> Result<()> {
    let (i_zone, i_name) = split(instance)?;
    let r = api
        .run(
            api.c
                .instances
                .detach_disk()
                .set_project(api.project)
                .set_zone(i_zone)
                .set_instance(i_name)
                .set_device_name(disk)
                .send(),
        )
        .await;
    // The instance is gone, or the disk is no longer attached: nothing to detach.
    match r {
        Err(e @ ProviderError::Failed { .. })
            if matches!(e.class(), chimera_providers::FailureClass::NotFound) =>
        {
            Ok(())
        }
        other => other,
    }
}

fn observe(d: &Disk) -> Observed {
    let zone = d.zone.as_deref().map(last).unwrap_or_default();
    let (region, letter) = zone_letter(zone);
    let attrs = Attrs {
        size_gib: d.size_gb,
        disk_type: d.r#type.as_deref().map(|t| last(t).to_string()),
        zone: letter,
        encrypted: true,
        instance: d.users.first().map(|u| {
            let name = last(u);
            let zone = u.split("/zones/").nth(1).and_then(|z| z.split('/').next());
            format!("{}/{name}", zone.unwrap_or_default())
        }),
    };
    let id = format!("{zone}/{}", d.name.as_deref().unwrap_or_default());
    observed(
        Kind::Volume,
        &id,
        &region,
        attrs,
        Map::new(),
        tags_of_labels(&d.labels),
    )
}
