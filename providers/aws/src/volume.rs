//! volume → CreateVolume (with the token as its `ClientToken` too), attached with AttachVolume.
//! Size grows in place (ModifyVolume); attachment changes detach and attach, waiting for the
//! volume to be available in between.

use aws_sdk_ec2::client::Waiters;
use aws_sdk_ec2::types::{Filter, ResourceType, Volume, VolumeType};
use chimera_model::Kind;
use chimera_model::kinds::VolumeSpec;
use serde::{Deserialize, Serialize};
use serde_json::Map;

use super::{
    Created, Ec2, MAX_WAIT, attrs_of, aws_err, observed, tagging, wait_err, zone_in, zone_letter,
};
use chimera_providers::{Observed, Request, Result, Violation};

/// The Describe filter that selects volumes by id.
pub(super) const ID_FILTER: &str = "volume-id";

/// The device an attached volume appears as.
const DEVICE: &str = "/dev/sdf";

/// The sizes EBS allows per volume type, in GiB.
const SIZES: &[(&str, u32, u32)] = &[
    ("gp3", 1, 16_384),
    ("gp2", 1, 16_384),
    ("io1", 4, 16_384),
    ("io2", 4, 65_536),
    ("st1", 125, 16_384),
    ("sc1", 125, 16_384),
    ("standard", 1, 1_024),
];

/// What a volume is observed as: the attributes drift detection compares with state rows.
#[derive(Debug, Serialize, Deserialize)]
struct Attrs {
    size_gib: Option<i32>,
    disk_type: Option<String>,
    /// The zone letter (`a`), as specs hold it.
    zone: String,
    encrypted: bool,
    /// The instance it is attached to.
    instance: Option<String>,
}

/// EBS's size range for the volume's type (and that the type is one EBS has).
pub(super) fn validate(spec: &VolumeSpec) -> Vec<Violation> {
    let ty = spec.disk_type.as_str();
    let Some(&(_, min, max)) = SIZES.iter().find(|(t, ..)| *t == ty) else {
        let known: Vec<&str> = SIZES.iter().map(|(t, ..)| *t).collect();
        return vec![Violation::new(
            "type",
            format!(
                "EBS has no volume type `{ty}` (the catalog's disk type for '{}); map it to one of {} in the catalog's volume_types",
                spec.volume_type,
                known.join(", ")
            ),
        )];
    };
    if (min..=max).contains(&spec.size_gib) {
        return Vec::new();
    }
    // Throughput disks start at 125 GiB: a small one is an SSD.
    let hint = if spec.size_gib < min && matches!(ty, "st1" | "sc1") {
        ", or use type 'ssd (gp3, from 1 GiB)"
    } else {
        ""
    };
    vec![Violation::new(
        "size_gib",
        format!(
            "an EBS {ty} volume is {min} to {max} GiB, got {}: set size_gib within that range{hint}",
            spec.size_gib
        ),
    )]
}

pub(super) async fn create(ec2: &Ec2<'_>, req: &Request<'_>, spec: &VolumeSpec) -> Result<Created> {
    let out = ec2
        .client
        .create_volume()
        .availability_zone(zone_in(ec2.region, &spec.zone))
        .size(i32::try_from(spec.size_gib).unwrap_or(i32::MAX))
        .volume_type(VolumeType::from(spec.disk_type.as_str()))
        .encrypted(spec.encrypted)
        .client_token(req.token)
        .tag_specifications(tagging(ResourceType::Volume, req))
        .send()
        .await
        .map_err(aws_err)?;
    // The response predates the attachment: the volume is read again.
    let made = Created::new(out.volume_id(), req, None)?;
    if let Some(instance) = &spec.instance {
        // The volume exists from here on, even if attaching it fails.
        ec2.aws.window.created(&made.id);
        attach(ec2, &made.id, instance).await?;
    }
    Ok(made)
}

pub(super) async fn update(ec2: &Ec2<'_>, spec: &VolumeSpec, current: &Observed) -> Result<()> {
    let have: Attrs = attrs_of(current)?;
    let id = current.cloud_id.as_str();
    let size = i32::try_from(spec.size_gib).unwrap_or(i32::MAX);
    if have.size_gib != Some(size) {
        ec2.client
            .modify_volume()
            .volume_id(id)
            .size(size)
            .send()
            .await
            .map_err(aws_err)?;
    }
    if have.instance != spec.instance {
        if let Some(h) = &have.instance {
            detach(ec2, id, h).await?;
        }
        if let Some(i) = &spec.instance {
            attach(ec2, id, i).await?;
        }
    }
    Ok(())
}

pub(super) async fn describe(ec2: &Ec2<'_>, filters: Vec<Filter>) -> Result<Vec<Observed>> {
    let volumes: Vec<_> = describe_all!(ec2, describe_volumes, filters)?;
    Ok(volumes.iter().map(|v| observe(v, ec2.region)).collect())
}

/// Detaches the volume first if it is attached: EBS deletes only available volumes.
pub(super) async fn delete(ec2: &Ec2<'_>, current: &Observed) -> Result<()> {
    let have: Attrs = attrs_of(current)?;
    let id = current.cloud_id.as_str();
    if let Some(i) = &have.instance {
        detach(ec2, id, i).await?;
    }
    ec2.client
        .delete_volume()
        .volume_id(id)
        .send()
        .await
        .map_err(aws_err)?;
    Ok(())
}

async fn attach(ec2: &Ec2<'_>, volume: &str, instance: &str) -> Result<()> {
    ec2.client
        .wait_until_volume_available()
        .volume_ids(volume)
        .wait(MAX_WAIT)
        .await
        .map_err(|e| wait_err("volume available", e))?;
    ec2.client
        .attach_volume()
        .volume_id(volume)
        .instance_id(instance)
        .device(DEVICE)
        .send()
        .await
        .map_err(aws_err)?;
    Ok(())
}

async fn detach(ec2: &Ec2<'_>, volume: &str, instance: &str) -> Result<()> {
    ec2.client
        .detach_volume()
        .volume_id(volume)
        .instance_id(instance)
        .device(DEVICE)
        .send()
        .await
        .map_err(aws_err)?;
    ec2.client
        .wait_until_volume_available()
        .volume_ids(volume)
        .wait(MAX_WAIT)
        .await
        .map_err(|e| wait_err("volume available", e))?;
    Ok(())
}

fn observe(v: &Volume, region: &str) -> Observed {
    let attrs = Attrs {
        size_gib: v.size(),
        disk_type: v.volume_type().map(|t| t.as_str().to_string()),
        zone: zone_letter(region, v.availability_zone()).to_string(),
        encrypted: v.encrypted().unwrap_or(false),
        instance: v
            .attachments()
            .iter()
            .find_map(|a| a.instance_id().map(str::to_string)),
    };
    observed(
        Kind::Volume,
        v.volume_id(),
        region,
        attrs,
        Map::new(),
        v.tags(),
    )
}
