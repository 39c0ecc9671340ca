//! subnet → subnetwork in the region. GCP subnetworks are regional (the spec's zone is checked,
//! not used) and have no public/private switch: `public = false` is Private Google Access on
//! (instances without an external address reach Google's APIs), `public = true` is it off; it
//! changes in place (PATCH with the current fingerprint). Tags are kept in the description,
//! which GCP fixes at creation.

use chimera_model::Kind;
use chimera_model::kinds::SubnetSpec;
use google_cloud_compute_v1::model::Subnetwork;
use serde::{Deserialize, Serialize};
use serde_json::Map;

use super::{Api, Described, attrs_of, gcp_err, kept_tags, last, observed, request_id};
use chimera_providers::{Observed, ProviderError, Request, Result, managed_tags};

/// What a subnetwork is observed as: the attributes drift detection compares with state rows.
#[derive(Debug, Serialize, Deserialize)]
struct Attrs {
    network: Option<String>,
    cidr: Option<String>,
    public: bool,
}

pub(super) async fn create(
    api: &Api<'_>,
    req: &Request<'_>,
    spec: &SubnetSpec,
    name: &str,
) -> Result<String> {
    let mut s = Subnetwork::default();
    s.name = Some(name.to_string());
    s.network = Some(api.network_path(&spec.network));
    s.ip_cidr_range = Some(spec.cidr.clone());
    s.private_ip_google_access = Some(!spec.public);
    s.description = Some(
        Described {
            tags: managed_tags(req),
            ..Described::default()
        }
        .text(),
    );
    api.run(
        api.c
            .subnetworks
            .insert()
            .set_project(api.project)
            .set_region(api.region)
            .set_request_id(request_id(req.token, "subnetwork"))
            .set_body(s)
            .send(),
    )
    .await?;
    Ok(name.to_string())
}

pub(super) async fn update(
    api: &Api<'_>,
    req: &Request<'_>,
    spec: &SubnetSpec,
    current: &Observed,
) -> Result<()> {
    if kept_tags(req, current) != current.tags {
        return Err(ProviderError::Failed {
            code: "UnsupportedUpdate".into(),
            message: format!(
                "GCP fixes a subnetwork's description, where Chimera keeps its tags, at creation: the tags of {} ({}) cannot change in place. Keep the tags as they were, or replace the subnet (destroy it and apply, or rename it)",
                req.address, current.cloud_id
            ),
        });
    }
    let have: Attrs = attrs_of(current)?;
    if have.public == spec.public {
        return Ok(());
    }
    // PATCH needs the current fingerprint: read it now (a stale one is a 412, retried).
    let now = api
        .c
        .subnetworks
        .get()
        .set_project(api.project)
        .set_region(api.region)
        .set_subnetwork(&current.cloud_id)
        .send()
        .await
        .map_err(gcp_err)?;
    let mut patch = Subnetwork::default();
    patch.fingerprint = now.fingerprint;
    patch.private_ip_google_access = Some(!spec.public);
    api.run(
        api.c
            .subnetworks
            .patch()
            .set_project(api.project)
            .set_region(api.region)
            .set_subnetwork(&current.cloud_id)
            .set_body(patch)
            .send(),
    )
    .await
}

pub(super) async fn read(api: &Api<'_>, id: &str) -> Result<Option<Observed>> {
    let s = api
        .c
        .subnetworks
        .get()
        .set_project(api.project)
        .set_region(api.region)
        .set_subnetwork(id)
        .send()
        .await
        .map_err(gcp_err)?;
    Ok(Some(observe(&s)))
}

/// The subnetworks of this region that `filter` selects.
pub(super) async fn list(api: &Api<'_>, filter: Option<String>) -> Result<Vec<Observed>> {
    use google_cloud_gax::paginator::ItemPaginator as _;
    let mut items = api
        .c
        .subnetworks
        .list()
        .set_project(api.project)
        .set_region(api.region)
        .set_or_clear_filter(filter)
        .by_item();
    let mut out = Vec::new();
    while let Some(s) = items.next().await {
        out.push(observe(&s.map_err(gcp_err)?));
    }
    Ok(out)
}

/// The subnetworks of every region that `filter` selects (one aggregated list).
pub(super) async fn list_aggregated(
    api: &Api<'_>,
    filter: Option<String>,
) -> Result<Vec<Observed>> {
    list_aggregated!(api, subnetworks, filter, observe)
}

pub(super) async fn delete(api: &Api<'_>, id: &str) -> Result<()> {
    api.run(
        api.c
            .subnetworks
            .delete()
            .set_project(api.project)
            .set_region(api.region)
            .set_subnetwork(id)
            .send(),
    )
    .await
}

fn observe(s: &Subnetwork) -> Observed {
    let d = Described::parse(s.description.as_deref());
    let attrs = Attrs {
        network: s.network.as_deref().map(|n| last(n).to_string()),
        cidr: s.ip_cidr_range.clone(),
        public: !s.private_ip_google_access.unwrap_or(false),
    };
    observed(
        Kind::Subnet,
        s.name.as_deref().unwrap_or_default(),
        s.region.as_deref().map(last).unwrap_or_default(),
        attrs,
        Map::new(),
        d.tags,
    )
}
