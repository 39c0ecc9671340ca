//! subnet → Subnet; `public` is the subnet's MapPublicIpOnLaunch.

use aws_sdk_ec2::types::{AttributeBooleanValue, Filter, ResourceType, Subnet};
use chimera_model::Kind;
use chimera_model::kinds::SubnetSpec;
use serde::{Deserialize, Serialize};
use serde_json::Map;

use super::{Created, Ec2, attrs_of, aws_err, observed, tagging, zone_in, zone_letter};
use chimera_providers::{Observed, Request, Result};

/// The Describe filter that selects subnets by id.
pub(super) const ID_FILTER: &str = "subnet-id";

/// What a subnet is observed as: the attributes drift detection compares with state rows.
#[derive(Debug, Serialize, Deserialize)]
struct Attrs {
    network: Option<String>,
    cidr: Option<String>,
    /// The zone letter (`a`), as specs hold it.
    zone: String,
    public: bool,
}

pub(super) async fn create(ec2: &Ec2<'_>, req: &Request<'_>, spec: &SubnetSpec) -> Result<Created> {
    let out = ec2
        .client
        .create_subnet()
        .vpc_id(&spec.network)
        .cidr_block(&spec.cidr)
        .availability_zone(zone_in(ec2.region, &spec.zone))
        .tag_specifications(tagging(ResourceType::Subnet, req))
        .send()
        .await
        .map_err(aws_err)?;
    let made = Created::new(out.subnet().and_then(|s| s.subnet_id()), req, None)?;
    // Made private; `public` is an attribute set afterwards, so the response is not the subnet
    // as it ends up: it is read again.
    if spec.public {
        set_public(ec2, &made.id, true).await?;
    }
    Ok(made)
}

pub(super) async fn update(ec2: &Ec2<'_>, spec: &SubnetSpec, current: &Observed) -> Result<()> {
    let have: Attrs = attrs_of(current)?;
    if have.public != spec.public {
        set_public(ec2, &current.cloud_id, spec.public).await?;
    }
    Ok(())
}

pub(super) async fn describe(ec2: &Ec2<'_>, filters: Vec<Filter>) -> Result<Vec<Observed>> {
    let subnets: Vec<_> = describe_all!(ec2, describe_subnets, filters)?;
    Ok(subnets.iter().map(|s| observe(s, ec2.region)).collect())
}

pub(super) async fn delete(ec2: &Ec2<'_>, id: &str) -> Result<()> {
    ec2.client
        .delete_subnet()
        .subnet_id(id)
        .send()
        .await
        .map_err(aws_err)?;
    Ok(())
}

async fn set_public(ec2: &Ec2<'_>, subnet: &str, public: bool) -> Result<()> {
    ec2.client
        .modify_subnet_attribute()
        .subnet_id(subnet)
        .map_public_ip_on_launch(AttributeBooleanValue::builder().value(public).build())
        .send()
        .await
        .map_err(aws_err)?;
    Ok(())
}

fn observe(s: &Subnet, region: &str) -> Observed {
    let attrs = Attrs {
        network: s.vpc_id().map(str::to_string),
        cidr: s.cidr_block().map(str::to_string),
        zone: zone_letter(region, s.availability_zone()).to_string(),
        public: s.map_public_ip_on_launch().unwrap_or(false),
    };
    observed(
        Kind::Subnet,
        s.subnet_id(),
        region,
        attrs,
        Map::new(),
        s.tags(),
    )
}
