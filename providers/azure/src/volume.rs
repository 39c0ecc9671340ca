//! volume → managed disk (`Microsoft.Compute/disks`, an empty disk of the catalog's SKU in the
//! zone `a` → 1, `b` → 2, `c` → 3), attached through the VM's `storageProfile.dataDisks` (a PATCH
//! guarded by the VM's etag, so volumes attached at once do not overwrite each other). Size
//! grows in place (Azure never shrinks a disk); attachment changes detach and attach. Azure
//! encrypts every managed disk at rest, so `encrypted` is always true.

use chimera_model::Kind;
use chimera_model::kinds::VolumeSpec;
use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::{
    AzureCloud, COMPUTE_API, DISK_API, attrs_of, get_live, list_type, observed, resource_name,
    tags_of,
};
use chimera_providers::{
    Observed, ProviderError, Request, Result, TAG_TOKEN, Violation, managed_tags,
};

pub(super) const TYPE: &str = "Microsoft.Compute/disks";
const MAX_NAME: usize = 80;
/// Managed disk SKUs.
const SKUS: &[&str] = &[
    "Standard_LRS",
    "StandardSSD_LRS",
    "Premium_LRS",
    "PremiumV2_LRS",
    "UltraSSD_LRS",
    "StandardSSD_ZRS",
    "Premium_ZRS",
];
/// A managed disk's sizes, in GiB.
const SIZES: std::ops::RangeInclusive<u32> = 4..=32_767;
/// Tries of an attach or detach that lost a race for the VM (a stale etag).
const ETAG_TRIES: usize = 20;

/// What a volume is observed as: the attributes drift detection compares with state rows.
#[derive(Debug, Serialize, Deserialize)]
struct Attrs {
    size_gib: Option<u32>,
    disk_type: Option<String>,
    /// The zone letter (`a`), as specs hold it.
    zone: String,
    encrypted: bool,
    /// The VM it is attached to.
    instance: Option<String>,
}

pub(super) fn validate(spec: &VolumeSpec) -> Vec<Violation> {
    let mut out = Vec::new();
    if !SKUS.contains(&spec.disk_type.as_str()) {
        out.push(Violation::new(
            "type",
            format!(
                "Azure has no managed disk SKU `{}` (the catalog's disk type for '{}); map it to one of {} in the catalog's volume_types",
                spec.disk_type,
                spec.volume_type,
                SKUS.join(", ")
            ),
        ));
    }
    if !SIZES.contains(&spec.size_gib) {
        out.push(Violation::new(
            "size_gib",
            format!("an Azure managed disk is {} to {} GiB here, got {}: set size_gib within that range", SIZES.start(), SIZES.end(), spec.size_gib),
        ));
    }
    if !spec.encrypted {
        out.push(Violation::new(
            "encrypted",
            "Azure encrypts every managed disk at rest and cannot make an unencrypted one: set encrypted = true",
        ));
    }
    if zone_number(&spec.zone).is_none() {
        out.push(Violation::new(
            "zone",
            format!(
                "Azure zones are a, b and c (1, 2 and 3), got `{}`",
                spec.zone
            ),
        ));
    }
    out
}

/// The Azure zone of a zone letter (`None`: not one Azure has); empty means no zone.
fn zone_number(letter: &str) -> Option<Option<&'static str>> {
    match letter {
        "" => Some(None),
        "a" => Some(Some("1")),
        "b" => Some(Some("2")),
        "c" => Some(Some("3")),
        _ => None,
    }
}

pub(super) async fn create(
    az: &AzureCloud,
    req: &Request<'_>,
    group: &str,
    spec: &VolumeSpec,
) -> Result<String> {
    let name = resource_name(req.address.name.as_str(), req.token, MAX_NAME);
    let id = az.id_of(group, TYPE, &name)?;
    let existing = read(az, &id).await?;
    if existing
        .as_ref()
        .and_then(|o| o.tags.get(TAG_TOKEN))
        .map(String::as_str)
        != Some(req.token)
    {
        let mut body = json!({
            "location": req.native_region,
            "tags": managed_tags(req),
            "sku": { "name": spec.disk_type },
            "properties": { "creationData": { "createOption": "Empty" }, "diskSizeGB": spec.size_gib },
        });
        if let Some(Some(z)) = zone_number(&spec.zone) {
            body["zones"] = json!([z]);
        }
        az.arm()
            .await?
            .write(Method::PUT, &id, DISK_API, &body, None)
            .await?;
    }
    if let Some(vm) = &spec.instance {
        // The disk exists from here on, even if attaching it fails.
        az.window.created(&id);
        attach(az, &id, vm).await?;
    }
    Ok(id)
}

pub(super) async fn update(az: &AzureCloud, spec: &VolumeSpec, current: &Observed) -> Result<()> {
    let have: Attrs = attrs_of(current)?;
    let id = current.cloud_id.as_str();
    if have.size_gib != Some(spec.size_gib) {
        az.arm()
            .await?
            .write(
                Method::PATCH,
                id,
                DISK_API,
                &json!({ "properties": { "diskSizeGB": spec.size_gib } }),
                None,
            )
            .await?;
    }
    let attached = have.instance.as_deref().map(str::to_ascii_lowercase);
    if attached != spec.instance.as_deref().map(str::to_ascii_lowercase) {
        if let Some(vm) = &have.instance {
            detach(az, id, vm).await?;
        }
        if let Some(vm) = &spec.instance {
            attach(az, id, vm).await?;
        }
    }
    Ok(())
}

/// Detaches the disk first if it is attached: Azure deletes only unattached disks.
pub(super) async fn delete(az: &AzureCloud, current: &Observed) -> Result<()> {
    let have: Attrs = attrs_of(current)?;
    if let Some(vm) = &have.instance {
        detach(az, &current.cloud_id, vm).await?;
    }
    az.delete_id(&current.cloud_id, DISK_API).await
}

pub(super) async fn read(az: &AzureCloud, id: &str) -> Result<Option<Observed>> {
    Ok(get_live(az, id, DISK_API).await?.map(|v| observe(&v)))
}

pub(super) async fn list(az: &AzureCloud, group: &str) -> Result<Vec<Observed>> {
    Ok(list_type(az, group, TYPE, DISK_API)
        .await?
        .iter()
        .map(observe)
        .collect())
}

/// Adds (`Some(disk)`) or removes the disk in VM `vm`'s data disks, with the VM's etag; a lost
/// race is tried again.
async fn change_data_disks(az: &AzureCloud, vm: &str, disk: &str, attach: bool) -> Result<()> {
    let arm = az.arm().await?;
    for _ in 0..ETAG_TRIES {
        let Some(v) = get_live(az, vm, COMPUTE_API).await? else {
            return Err(ProviderError::Failed {
                code: "ResourceNotFound".into(),
                message: format!("the VM {vm} does not exist"),
            });
        };
        let etag = v.get("etag").and_then(Value::as_str).map(str::to_string);
        let mut disks: Vec<Value> = v
            .pointer("/properties/storageProfile/dataDisks")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|d| json!({ "lun": d["lun"], "createOption": "Attach", "managedDisk": { "id": d["managedDisk"]["id"] } }))
            .collect();
        let is_it = |d: &Value| {
            d.pointer("/managedDisk/id")
                .and_then(Value::as_str)
                .is_some_and(|i| i.eq_ignore_ascii_case(disk))
        };
        let there = disks.iter().any(is_it);
        if there == attach {
            return Ok(());
        }
        if attach {
            let used: Vec<i64> = disks.iter().filter_map(|d| d["lun"].as_i64()).collect();
            let lun = (0..).find(|l| !used.contains(l)).unwrap_or(0);
            disks.push(
                json!({ "lun": lun, "createOption": "Attach", "managedDisk": { "id": disk } }),
            );
        } else {
            disks.retain(|d| !is_it(d));
        }
        let body = json!({ "properties": { "storageProfile": { "dataDisks": disks } } });
        match arm
            .write(Method::PATCH, vm, COMPUTE_API, &body, etag.as_deref())
            .await
        {
            Err(ProviderError::Retryable(m)) if m.starts_with("PreconditionFailed") => continue,
            other => return other,
        }
    }
    Err(ProviderError::Retryable(format!(
        "the VM {vm} kept changing while its data disks were being changed"
    )))
}

async fn attach(az: &AzureCloud, disk: &str, vm: &str) -> Result<()> {
    change_data_disks(az, vm, disk, true).await
}

async fn detach(az: &AzureCloud, disk: &str, vm: &str) -> Result<()> {
    change_data_disks(az, vm, disk, false).await
}

fn observe(v: &Value) -> Observed {
    let zone = v
        .pointer("/zones/0")
        .and_then(Value::as_str)
        .map(|z| match z {
            "1" => "a",
            "2" => "b",
            "3" => "c",
            other => other,
        })
        .unwrap_or_default();
    let attrs = Attrs {
        size_gib: v
            .pointer("/properties/diskSizeGB")
            .and_then(Value::as_u64)
            .and_then(|n| u32::try_from(n).ok()),
        disk_type: v
            .pointer("/sku/name")
            .and_then(Value::as_str)
            .map(str::to_string),
        zone: zone.to_string(),
        encrypted: true,
        instance: v
            .get("managedBy")
            .and_then(Value::as_str)
            .map(str::to_string),
    };
    observed(Kind::Volume, v, attrs, Map::new(), tags_of(v))
}
