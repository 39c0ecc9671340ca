//! subnet → a subnet of its virtual network (`…/virtualNetworks/{n}/subnets/{s}`). `public` is
//! the subnet's `defaultOutboundAccess` (whether its VMs reach the internet without a NAT gateway
//! or public address); Azure subnets span a region's zones, so `zone` is not sent or observed.
//!
//! ARM gives subnets no tags: a subnet's tags are kept on its virtual network under
//! [`subnet_tag_key`], merged and deleted key by key (the tags API), so subnets of one network
//! created at once do not overwrite each other's.

use std::collections::BTreeMap;

use chimera_model::Kind;
use chimera_model::kinds::SubnetSpec;
use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::{
    AzureCloud, NETWORK_API, SUBNET_TAG_PREFIX, attrs_of, get_live, list_type, observed,
    resource_name, subnet_tag_key, tags_of,
};
use chimera_providers::{
    Observed, ProviderError, Request, Result, TAG_STACK, TAG_TOKEN, managed_tags,
};

const MAX_NAME: usize = 80;

/// What a subnet is observed as: the attributes drift detection compares with state rows.
#[derive(Debug, Serialize, Deserialize)]
struct Attrs {
    network: String,
    cidr: Option<String>,
    public: bool,
}

/// The virtual network a subnet id is in.
fn network_of(id: &str) -> Result<&str> {
    id.rsplit_once("/subnets/")
        .map(|(n, _)| n)
        .ok_or_else(|| ProviderError::Failed {
            code: "InvalidResourceId".into(),
            message: format!("{id} is not a subnet id (…/virtualNetworks/NAME/subnets/NAME)"),
        })
}

pub(super) async fn create(
    az: &AzureCloud,
    req: &Request<'_>,
    spec: &SubnetSpec,
) -> Result<String> {
    let name = resource_name(req.address.name.as_str(), req.token, MAX_NAME);
    let id = format!("{}/subnets/{name}", spec.network);
    // The tags first: a subnet never exists without them, so a crash in between leaves tags
    // that `by_token` finds without a subnet, and clears.
    let set = managed_tags(req)
        .iter()
        .map(|(k, v)| (subnet_tag_key(&name, k), Value::String(v.clone())))
        .collect();
    az.change_tags(&spec.network, set, Map::new()).await?;
    // Sent again after a lost response: the subnet is there already.
    if read(az, &id).await?.is_none() {
        let body = json!({
            "properties": { "addressPrefix": spec.cidr, "defaultOutboundAccess": spec.public },
        });
        az.arm()
            .await?
            .write(Method::PUT, &id, NETWORK_API, &body, None)
            .await?;
    }
    Ok(id)
}

pub(super) async fn update(az: &AzureCloud, spec: &SubnetSpec, current: &Observed) -> Result<()> {
    let have: Attrs = attrs_of(current)?;
    if have.public == spec.public {
        return Ok(());
    }
    let id = current.cloud_id.as_str();
    let Some(mut body) = get_live(az, id, NETWORK_API).await? else {
        return Err(ProviderError::Retryable(format!("{id} is not visible")));
    };
    body["properties"]["defaultOutboundAccess"] = Value::Bool(spec.public);
    if let Some(p) = body.get_mut("properties").and_then(Value::as_object_mut) {
        p.remove("provisioningState");
        p.remove("ipConfigurations");
    }
    az.arm()
        .await?
        .write(
            Method::PUT,
            id,
            NETWORK_API,
            &json!({ "properties": body["properties"] }),
            None,
        )
        .await
}

/// Makes the subnet's tags (kept on its network) exactly `want`, given that they are `have`.
pub(super) async fn sync_tags(
    az: &AzureCloud,
    id: &str,
    want: &BTreeMap<String, String>,
    have: &BTreeMap<String, String>,
) -> Result<()> {
    let name = id.rsplit('/').next().unwrap_or_default();
    let set = want
        .iter()
        .filter(|(k, v)| have.get(*k) != Some(v))
        .map(|(k, v)| (subnet_tag_key(name, k), Value::String(v.clone())))
        .collect();
    let unset = have
        .iter()
        .filter(|(k, _)| !want.contains_key(*k))
        .map(|(k, v)| (subnet_tag_key(name, k), Value::String(v.clone())))
        .collect();
    az.change_tags(network_of(id)?, set, unset).await
}

pub(super) async fn delete(az: &AzureCloud, current: &Observed) -> Result<()> {
    let id = current.cloud_id.as_str();
    az.delete_id(id, NETWORK_API).await?;
    let name = id.rsplit('/').next().unwrap_or_default();
    let unset = current
        .tags
        .iter()
        .map(|(k, v)| (subnet_tag_key(name, k), Value::String(v.clone())))
        .collect();
    // The network may be going too: its tags then go with it.
    match az.change_tags(network_of(id)?, Map::new(), unset).await {
        Err(e) if e.class() == chimera_providers::FailureClass::NotFound => Ok(()),
        other => other,
    }
}

pub(super) async fn read(az: &AzureCloud, id: &str) -> Result<Option<Observed>> {
    let Some(s) = get_live(az, id, NETWORK_API).await? else {
        return Ok(None);
    };
    let Some(net) = get_live(az, network_of(id)?, NETWORK_API).await? else {
        return Ok(None);
    };
    Ok(Some(observe(&net, &s)))
}

/// The subnets of every virtual network in `group`.
pub(super) async fn list(az: &AzureCloud, group: &str) -> Result<Vec<Observed>> {
    let nets = list_type(az, group, super::network::TYPE, NETWORK_API).await?;
    Ok(nets.iter().flat_map(subnets_of).collect())
}

fn subnets_of(net: &Value) -> Vec<Observed> {
    net.pointer("/properties/subnets")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|s| super::arm::provisioning_state(s) != "Deleting")
        .map(|s| observe(net, s))
        .collect()
}

/// Every network of the subscription, for the subnets' tags kept on them.
async fn all_networks(az: &AzureCloud) -> Result<Vec<Value>> {
    let path = format!(
        "/subscriptions/{}/providers/{}",
        az.subscription()?,
        super::network::TYPE
    );
    az.arm().await?.list(&path, NETWORK_API).await
}

/// The subnet the create with `token` made: the network holding its token tag.
pub(super) async fn by_token(az: &AzureCloud, token: &str) -> Result<Option<Observed>> {
    let suffix = format!(".{TAG_TOKEN}");
    for net in all_networks(az).await? {
        let holds = tags_of(&net).into_iter().find_map(|(k, v)| {
            let name = k.strip_prefix(SUBNET_TAG_PREFIX)?.strip_suffix(&suffix)?;
            (v == token).then(|| name.to_string())
        });
        if let Some(name) = holds {
            if let Some(o) = subnets_of(&net)
                .into_iter()
                .find(|o| o.cloud_id.rsplit('/').next() == Some(name.as_str()))
            {
                return Ok(Some(o));
            }
            // The create stopped between its tags and its subnet: the tags go, and the subnet
            // provably does not exist.
            let prefix = subnet_tag_key(&name, "");
            let unset = tags_of(&net)
                .into_iter()
                .filter(|(k, _)| k.starts_with(&prefix))
                .map(|(k, v)| (k, Value::String(v)))
                .collect();
            if let Some(id) = net.get("id").and_then(Value::as_str) {
                az.change_tags(id, Map::new(), unset).await?;
            }
        }
    }
    Ok(None)
}

/// The subnets tagged as `stack`'s, in any network of the subscription.
pub(super) async fn managed(az: &AzureCloud, stack: &str) -> Result<Vec<Observed>> {
    Ok(all_networks(az)
        .await?
        .iter()
        .flat_map(subnets_of)
        .filter(|o| o.tags.get(TAG_STACK).map(String::as_str) == Some(stack))
        .collect())
}

fn observe(net: &Value, s: &Value) -> Observed {
    let name = s.get("name").and_then(Value::as_str).unwrap_or_default();
    let prefix = subnet_tag_key(name, "");
    let tags = tags_of(net)
        .into_iter()
        .filter_map(|(k, v)| Some((k.strip_prefix(&prefix)?.to_string(), v)))
        .collect();
    let attrs = Attrs {
        network: net
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        cidr: s
            .pointer("/properties/addressPrefix")
            .and_then(Value::as_str)
            .map(str::to_string),
        public: s
            .pointer("/properties/defaultOutboundAccess")
            .and_then(Value::as_bool)
            .unwrap_or(true),
    };
    let mut o = observed(Kind::Subnet, s, attrs, Map::new(), tags);
    o.native_region = net
        .get("location")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subnet_reads_its_tags_from_its_network() {
        let net = json!({
            "id": "/subscriptions/s/resourceGroups/g/providers/Microsoft.Network/virtualNetworks/n",
            "location": "eastus",
            "tags": { "chimera-subnet.a.chimera-token": "t", "chimera-subnet.a.env": "prod", "chimera-subnet.ab.env": "dev", "env": "net" },
            "properties": { "subnets": [
                { "id": "/subscriptions/s/resourceGroups/g/providers/Microsoft.Network/virtualNetworks/n/subnets/a", "name": "a", "properties": { "addressPrefix": "10.0.1.0/24", "defaultOutboundAccess": false } },
            ] },
        });
        let subs = subnets_of(&net);
        assert_eq!(subs.len(), 1);
        let a = &subs[0];
        assert_eq!(a.tags.len(), 2, "{:?}", a.tags);
        assert_eq!(a.tags["env"], "prod");
        assert_eq!(a.native_region, "eastus");
        assert_eq!(a.attrs["public"], false);
        assert!(a.cloud_id.ends_with("/subnets/a"));
        assert_eq!(
            network_of(&a.cloud_id).unwrap(),
            net["id"].as_str().unwrap()
        );
    }
}
