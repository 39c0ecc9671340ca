//! network → virtual network (`Microsoft.Network/virtualNetworks`). Its address space is
//! force-new; only its tags change in place (through the tags API, which leaves the tags its
//! subnets keep on it alone).

use chimera_model::Kind;
use chimera_model::kinds::NetworkSpec;
use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::{
    AzureCloud, NETWORK_API, SUBNET_TAG_PREFIX, get_live, list_type, observed, resource_name,
    tags_of,
};
use chimera_providers::{Observed, Request, Result, TAG_TOKEN, managed_tags};

pub(super) const TYPE: &str = "Microsoft.Network/virtualNetworks";
/// Azure's longest virtual network name.
const MAX_NAME: usize = 64;

/// What a virtual network is observed as: the attributes drift detection compares with state
/// rows.
#[derive(Debug, Serialize, Deserialize)]
struct Attrs {
    cidr: Option<String>,
}

pub(super) async fn create(
    az: &AzureCloud,
    req: &Request<'_>,
    group: &str,
    spec: &NetworkSpec,
) -> Result<String> {
    let name = resource_name(req.address.name.as_str(), req.token, MAX_NAME);
    let id = az.id_of(group, TYPE, &name)?;
    // Sent again after a lost response: what the first create made is kept as it is (a PUT
    // without the subnets would delete them).
    if let Some(o) = read(az, &id).await?
        && o.tags.get(TAG_TOKEN).map(String::as_str) == Some(req.token)
    {
        return Ok(o.cloud_id);
    }
    let body = json!({
        "location": req.native_region,
        "tags": managed_tags(req),
        "properties": { "addressSpace": { "addressPrefixes": [spec.cidr] }, "subnets": [] },
    });
    az.arm()
        .await?
        .write(Method::PUT, &id, NETWORK_API, &body, None)
        .await?;
    Ok(id)
}

pub(super) async fn read(az: &AzureCloud, id: &str) -> Result<Option<Observed>> {
    Ok(get_live(az, id, NETWORK_API).await?.map(|v| observe(&v)))
}

pub(super) async fn list(az: &AzureCloud, group: &str) -> Result<Vec<Observed>> {
    Ok(list_type(az, group, TYPE, NETWORK_API)
        .await?
        .iter()
        .map(observe)
        .collect())
}

pub(super) fn observe(v: &Value) -> Observed {
    let attrs = Attrs {
        cidr: v
            .pointer("/properties/addressSpace/addressPrefixes/0")
            .and_then(Value::as_str)
            .map(str::to_string),
    };
    let mut tags = tags_of(v);
    tags.retain(|k, _| !k.starts_with(SUBNET_TAG_PREFIX));
    observed(Kind::Network, v, attrs, Map::new(), tags)
}
