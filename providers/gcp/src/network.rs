//! network → VPC network in custom mode (`autoCreateSubnetworks = false`). GCP networks have no
//! block and no labels: the block and the tags are kept in the description, which GCP fixes at
//! creation, so only a change that keeps them is in place.

use chimera_model::Kind;
use chimera_model::kinds::NetworkSpec;
use google_cloud_compute_v1::model::{Network, NetworkRoutingConfig, network_routing_config};
use serde::{Deserialize, Serialize};
use serde_json::Map;

use super::{Api, Described, gcp_err, kept_tags, observed, request_id};
use chimera_providers::{Observed, ProviderError, Request, Result, managed_tags};

/// What a network is observed as: the attributes drift detection compares with state rows.
#[derive(Debug, Serialize, Deserialize)]
struct Attrs {
    cidr: Option<String>,
}

pub(super) async fn create(
    api: &Api<'_>,
    req: &Request<'_>,
    spec: &NetworkSpec,
    name: &str,
) -> Result<String> {
    let described = Described {
        tags: managed_tags(req),
        cidr: Some(spec.cidr.clone()),
        rule: None,
        region: Some(api.region.to_string()),
    };
    let mut n = Network::default();
    n.name = Some(name.to_string());
    n.auto_create_subnetworks = Some(false);
    n.description = Some(described.text());
    let mut routing = NetworkRoutingConfig::default();
    routing.routing_mode = Some(network_routing_config::RoutingMode::Regional);
    n.routing_config = Some(routing);
    api.run(
        api.c
            .networks
            .insert()
            .set_project(api.project)
            .set_request_id(request_id(req.token, "network"))
            .set_body(n)
            .send(),
    )
    .await?;
    Ok(name.to_string())
}

/// GCP changes nothing of a network that Chimera holds but its routing: tags (kept in the
/// description) are refused with what to do.
pub(super) fn update(req: &Request<'_>, current: &Observed) -> Result<()> {
    let want = kept_tags(req, current);
    if want != current.tags {
        return Err(ProviderError::Failed {
            code: "UnsupportedUpdate".into(),
            message: format!(
                "GCP fixes a network's description, where Chimera keeps its tags, at creation: the tags of {} ({}) cannot change in place. Keep the tags as they were, or replace the network (destroy it and apply, or rename it)",
                req.address, current.cloud_id
            ),
        });
    }
    Ok(())
}

pub(super) async fn read(api: &Api<'_>, id: &str) -> Result<Option<Observed>> {
    let n = api
        .c
        .networks
        .get()
        .set_project(api.project)
        .set_network(id)
        .send()
        .await
        .map_err(gcp_err)?;
    Ok(Some(observe(&n, api.region)))
}

pub(super) async fn list(api: &Api<'_>, filter: Option<String>) -> Result<Vec<Observed>> {
    use google_cloud_gax::paginator::ItemPaginator as _;
    let mut items = api
        .c
        .networks
        .list()
        .set_project(api.project)
        .set_or_clear_filter(filter)
        .by_item();
    let mut out = Vec::new();
    while let Some(n) = items.next().await {
        out.push(observe(&n.map_err(gcp_err)?, api.region));
    }
    Ok(out)
}

pub(super) async fn delete(api: &Api<'_>, id: &str) -> Result<()> {
    api.run(
        api.c
            .networks
            .delete()
            .set_project(api.project)
            .set_network(id)
            .send(),
    )
    .await
}

/// A network is global: it is reported in the region it was placed in (kept in its
/// description), else the one it was asked about.
fn observe(n: &Network, region: &str) -> Observed {
    let d = Described::parse(n.description.as_deref());
    let region = d.region.as_deref().unwrap_or(region);
    observed(
        Kind::Network,
        n.name.as_deref().unwrap_or_default(),
        region,
        Attrs { cidr: d.cidr },
        Map::new(),
        d.tags,
    )
}
