//! instance → a network interface (`{vm}-nic`, in the instance's subnet, with its firewall) and a
//! Linux VM (`Microsoft.Compute/virtualMachines`): size from the catalog, image reference from
//! the catalog (`publisher:offer:sku:version`), user data as `customData`, the managed tags on
//! both. The size changes in place (deallocate → resize → start), as do the firewall and tags;
//! the rest is force-new. A VM whose create is refused takes its new interface with it.

use std::collections::BTreeMap;

use base64::Engine as _;
use chimera_model::Kind;
use chimera_model::kinds::InstanceSpec;
use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::{
    AzureCloud, COMPUTE_API, NETWORK_API, attrs_of, get_live, image_reference, list_type, observed,
    resource_name, tags_of,
};
use chimera_providers::{
    Observed, ProviderError, Request, Result, TAG_TOKEN, Violation, managed_tags,
};

pub(super) const TYPE: &str = "Microsoft.Compute/virtualMachines";
pub(super) const NIC_TYPE: &str = "Microsoft.Network/networkInterfaces";
/// Azure's longest Linux VM name.
const MAX_NAME: usize = 64;
/// Azure's limit on `customData`, base64-encoded.
const MAX_CUSTOM_DATA: usize = 65_535;

/// What an instance is observed as: the attributes drift detection compares with state rows.
#[derive(Debug, Serialize, Deserialize)]
struct Attrs {
    instance_type: Option<String>,
    subnet: Option<String>,
    /// The network security group of its interface (Azure allows one).
    firewalls: Vec<String>,
    public_ip: bool,
    /// `publisher:offer:sku:version`.
    image_reference: Option<String>,
    /// Its network interfaces' ids.
    interfaces: Vec<String>,
}

pub(super) fn validate(az: &AzureCloud, req: &Request<'_>, spec: &InstanceSpec) -> Vec<Violation> {
    let mut out = Vec::new();
    if spec.firewalls.len() > 1 {
        out.push(Violation::new(
            "firewalls",
            format!("an Azure network interface takes one network security group, this instance names {}: merge the firewalls' rules into one", spec.firewalls.len()),
        ));
    }
    if spec.public_ip {
        out.push(Violation::new(
            "public_ip",
            "the azure provider does not make public IP addresses: set public_ip = false and reach the VM through a load balancer or bastion, or place it on another provider",
        ));
    }
    if let Some(ud) = &spec.user_data {
        let encoded = ud.len().div_ceil(3) * 4;
        if encoded > MAX_CUSTOM_DATA {
            out.push(Violation::new(
                "user_data",
                format!("Azure takes at most {MAX_CUSTOM_DATA} characters of base64 customData (about 48 KiB of user data), this is {encoded}: move the script to a file the VM downloads at boot, or compress it (cloud-init reads gzip)"),
            ));
        }
    }
    if let Err(e) = image(az, req, spec) {
        out.push(Violation::new("image", e.to_string()));
    }
    out
}

/// The image reference: the escape hatch's `azure.image`, else the stack's pin for the image
/// family (`providers.azure.images`), else the catalog's.
fn image(az: &AzureCloud, req: &Request<'_>, spec: &InstanceSpec) -> Result<Value> {
    let family = spec.image.as_str();
    let r = req
        .native_str("image")
        .map(str::to_string)
        .or_else(|| az.settings.images.get(family).cloned())
        .or_else(|| spec.image_ref.as_str().map(str::to_string));
    r.as_deref().and_then(image_reference).ok_or_else(|| ProviderError::Failed {
        code: "InvalidImageReference".into(),
        message: format!(
            "image \"{family}\" has no Azure image reference (publisher:offer:sku:version); pin one with `providers.azure.images.\"{family}\"` or `azure.image` on the resource"
        ),
    })
}

/// The VM size: the escape hatch's `azure.vm_size` (a size the catalog does not list), else the
/// catalog's.
fn vm_size<'a>(req: &'a Request<'_>, spec: &'a InstanceSpec) -> &'a str {
    req.native_str("vm_size").unwrap_or(&spec.instance_type)
}

pub(super) async fn create(
    az: &AzureCloud,
    req: &Request<'_>,
    group: &str,
    spec: &InstanceSpec,
) -> Result<String> {
    let name = resource_name(req.address.name.as_str(), req.token, MAX_NAME);
    let vm_id = az.id_of(group, TYPE, &name)?;
    if let Some(o) = read(az, &vm_id).await?
        && o.tags.get(TAG_TOKEN).map(String::as_str) == Some(req.token)
    {
        return Ok(o.cloud_id);
    }
    let image = image(az, req, spec)?;
    let tags = managed_tags(req);
    let arm = az.arm().await?;
    let nic_id = az.id_of(group, NIC_TYPE, &format!("{name}-nic"))?;
    let mut nic = json!({
        "location": req.native_region,
        "tags": tags,
        "properties": { "ipConfigurations": [{
            "name": "ipconfig1",
            "properties": { "subnet": { "id": spec.subnet }, "privateIPAllocationMethod": "Dynamic" },
        }] },
    });
    if let Some(fw) = spec.firewalls.first() {
        nic["properties"]["networkSecurityGroup"] = json!({ "id": fw });
    }
    arm.write(Method::PUT, &nic_id, NETWORK_API, &nic, None)
        .await?;
    let mut os = json!({
        "computerName": name,
        "adminUsername": az.settings.admin_username,
        "linuxConfiguration": { "disablePasswordAuthentication": true },
    });
    if let Some(key) = &az.settings.ssh_public_key {
        os["linuxConfiguration"]["ssh"] = json!({ "publicKeys": [{
            "path": format!("/home/{}/.ssh/authorized_keys", az.settings.admin_username),
            "keyData": key,
        }] });
    }
    if let Some(ud) = &spec.user_data {
        os["customData"] = base64::engine::general_purpose::STANDARD.encode(ud).into();
    }
    let vm = json!({
        "location": req.native_region,
        "tags": tags,
        "properties": {
            "hardwareProfile": { "vmSize": vm_size(req, spec) },
            "storageProfile": {
                "imageReference": image,
                "osDisk": { "createOption": "FromImage", "deleteOption": "Delete", "managedDisk": { "storageAccountType": "StandardSSD_LRS" } },
                "dataDisks": [],
            },
            "osProfile": os,
            "networkProfile": { "networkInterfaces": [{ "id": nic_id, "properties": { "primary": true } }] },
        },
    });
    if let Err(e) = arm.write(Method::PUT, &vm_id, COMPUTE_API, &vm, None).await {
        if matches!(e, ProviderError::Failed { .. }) {
            // Refused (a size the region lacks, a quota): the interface goes too. A retryable
            // error keeps it: the retried create uses it.
            let _ = arm.delete(&nic_id, NETWORK_API).await;
        }
        return Err(e);
    }
    Ok(vm_id)
}

pub(super) async fn update(
    az: &AzureCloud,
    req: &Request<'_>,
    spec: &InstanceSpec,
    current: &Observed,
) -> Result<()> {
    let have: Attrs = attrs_of(current)?;
    let id = current.cloud_id.as_str();
    let arm = az.arm().await?;
    if have.public_ip != spec.public_ip {
        return Err(ProviderError::Failed {
            code: "UnsupportedUpdate".into(),
            message: format!(
                "the azure provider makes no public addresses ({}); set public_ip = false",
                req.address
            ),
        });
    }
    if have.firewalls.first() != spec.firewalls.first() {
        for nic_id in &have.interfaces {
            let Some(mut nic) = get_live(az, nic_id, NETWORK_API).await? else {
                continue;
            };
            match spec.firewalls.first() {
                Some(fw) => nic["properties"]["networkSecurityGroup"] = json!({ "id": fw }),
                None => {
                    if let Some(p) = nic["properties"].as_object_mut() {
                        p.remove("networkSecurityGroup");
                    }
                }
            }
            if let Some(p) = nic["properties"].as_object_mut() {
                p.remove("provisioningState");
            }
            arm.write(Method::PUT, nic_id, NETWORK_API, &nic, None)
                .await?;
        }
    }
    let want = vm_size(req, spec);
    if have.instance_type.as_deref() != Some(want) {
        // Azure resizes to any size only while deallocated: deallocate, resize, start.
        arm.action(&format!("{id}/deallocate"), COMPUTE_API).await?;
        let resized = arm
            .write(
                Method::PATCH,
                id,
                COMPUTE_API,
                &json!({ "properties": { "hardwareProfile": { "vmSize": want } } }),
                None,
            )
            .await;
        // Started again either way: a refused size leaves the VM as it was, running.
        arm.action(&format!("{id}/start"), COMPUTE_API).await?;
        resized?;
    }
    Ok(())
}

/// Tags of the VM and of its interfaces.
pub(super) async fn sync_tags(
    az: &AzureCloud,
    id: &str,
    want: &BTreeMap<String, String>,
    have: &BTreeMap<String, String>,
) -> Result<()> {
    az.sync_tags(id, want, have).await?;
    if let Some(o) = read(az, id).await? {
        let attrs: Attrs = attrs_of(&o)?;
        for nic in attrs.interfaces {
            if let Some(n) = get_live(az, &nic, NETWORK_API).await? {
                az.sync_tags(&nic, want, &tags_of(&n)).await?;
            }
        }
    }
    Ok(())
}

/// The VM, then its interfaces (once the VM is gone they are free).
pub(super) async fn delete(az: &AzureCloud, current: &Observed) -> Result<()> {
    let have: Attrs = attrs_of(current)?;
    let arm = az.arm().await?;
    arm.delete(&current.cloud_id, COMPUTE_API).await?;
    for nic in &have.interfaces {
        arm.delete(nic, NETWORK_API).await?;
    }
    Ok(())
}

pub(super) async fn read(az: &AzureCloud, id: &str) -> Result<Option<Observed>> {
    let Some(vm) = get_live(az, id, COMPUTE_API).await? else {
        return Ok(None);
    };
    let nic = match nic_ids(&vm).first() {
        Some(n) => get_live(az, n, NETWORK_API).await?,
        None => None,
    };
    Ok(Some(observe(&vm, nic.as_ref())))
}

/// The VMs of `group`, with their interfaces: two listings.
pub(super) async fn list(az: &AzureCloud, group: &str) -> Result<Vec<Observed>> {
    let vms = list_type(az, group, TYPE, COMPUTE_API).await?;
    if vms.is_empty() {
        return Ok(Vec::new());
    }
    let nics: std::collections::HashMap<String, Value> =
        list_type(az, group, NIC_TYPE, NETWORK_API)
            .await?
            .into_iter()
            .filter_map(|n| Some((n.get("id")?.as_str()?.to_ascii_lowercase(), n)))
            .collect();
    Ok(vms
        .iter()
        .map(|vm| {
            let nic = nic_ids(vm)
                .first()
                .and_then(|n| nics.get(&n.to_ascii_lowercase()));
            observe(vm, nic)
        })
        .collect())
}

fn nic_ids(vm: &Value) -> Vec<String> {
    vm.pointer("/properties/networkProfile/networkInterfaces")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|n| n.get("id").and_then(Value::as_str).map(str::to_string))
        .collect()
}

fn observe(vm: &Value, nic: Option<&Value>) -> Observed {
    let ip = |p: &str| {
        nic.and_then(|n| n.pointer(p))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let mut outputs = Map::new();
    outputs.insert(
        "private_ip".into(),
        json!(ip(
            "/properties/ipConfigurations/0/properties/privateIPAddress"
        )),
    );
    outputs.insert("public_ip".into(), Value::Null);
    let image_reference = vm
        .pointer("/properties/storageProfile/imageReference")
        .and_then(|r| {
            let s = |k: &str| {
                r.get(k)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            Some(format!(
                "{}:{}:{}:{}",
                s("publisher"),
                s("offer"),
                s("sku"),
                s("version")
            ))
            .filter(|_| r.is_object())
        });
    let attrs = Attrs {
        instance_type: vm
            .pointer("/properties/hardwareProfile/vmSize")
            .and_then(Value::as_str)
            .map(str::to_string),
        subnet: ip("/properties/ipConfigurations/0/properties/subnet/id"),
        firewalls: ip("/properties/networkSecurityGroup/id")
            .into_iter()
            .collect(),
        public_ip: false,
        image_reference,
        interfaces: nic_ids(vm),
    };
    observed(Kind::Instance, vm, attrs, outputs, tags_of(vm))
}
