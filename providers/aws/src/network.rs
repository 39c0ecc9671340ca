//! network → VPC.

use aws_sdk_ec2::types::{Filter, ResourceType, Vpc};
use chimera_model::Kind;
use chimera_model::kinds::NetworkSpec;
use serde::{Deserialize, Serialize};
use serde_json::Map;

use super::{Created, Ec2, aws_err, observed, tagging};
use chimera_providers::{Observed, Request, Result};

/// The Describe filter that selects VPCs by id.
pub(super) const ID_FILTER: &str = "vpc-id";

/// What a VPC is observed as: the attributes drift detection compares with state rows.
#[derive(Debug, Serialize, Deserialize)]
struct Attrs {
    cidr: Option<String>,
}

pub(super) async fn create(
    ec2: &Ec2<'_>,
    req: &Request<'_>,
    spec: &NetworkSpec,
) -> Result<Created> {
    let out = ec2
        .client
        .create_vpc()
        .cidr_block(&spec.cidr)
        .tag_specifications(tagging(ResourceType::Vpc, req))
        .send()
        .await
        .map_err(aws_err)?;
    let vpc = out.vpc();
    Created::new(
        vpc.and_then(|v| v.vpc_id()),
        req,
        vpc.map(|v| observe(v, ec2.region)),
    )
}

pub(super) async fn describe(ec2: &Ec2<'_>, filters: Vec<Filter>) -> Result<Vec<Observed>> {
    let vpcs: Vec<_> = describe_all!(ec2, describe_vpcs, filters)?;
    Ok(vpcs.iter().map(|v| observe(v, ec2.region)).collect())
}

pub(super) async fn delete(ec2: &Ec2<'_>, id: &str) -> Result<()> {
    ec2.client
        .delete_vpc()
        .vpc_id(id)
        .send()
        .await
        .map_err(aws_err)?;
    Ok(())
}

fn observe(v: &Vpc, region: &str) -> Observed {
    let attrs = Attrs {
        cidr: v.cidr_block().map(str::to_string),
    };
    observed(
        Kind::Network,
        v.vpc_id(),
        region,
        attrs,
        Map::new(),
        v.tags(),
    )
}
