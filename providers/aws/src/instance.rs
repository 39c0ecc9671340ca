//! instance → RunInstances, with the token as its `ClientToken` too. An instance type changes
//! in place (stop, modify, start); its public address cannot. Terminated and shutting-down
//! instances count as absent.

use aws_sdk_ec2::client::Waiters;
use aws_sdk_ec2::types::{
    AttributeValue, Filter, Instance, InstanceNetworkInterfaceSpecification, InstanceStateName,
    InstanceType, ResourceType,
};
use base64::Engine as _;
use chimera_model::Kind;
use chimera_model::kinds::InstanceSpec;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::{Created, Ec2, MAX_WAIT, attrs_of, aws_err, observed, tagging, wait_err};
use chimera_providers::{Observed, ProviderError, Request, Result, Violation};

/// The Describe filter that selects instances by id.
pub(super) const ID_FILTER: &str = "instance-id";

/// EC2's limit on user data, in bytes before base64.
const MAX_USER_DATA: usize = 16 * 1024;

/// What an instance is observed as: the attributes drift detection compares with state rows.
#[derive(Debug, Serialize, Deserialize)]
struct Attrs {
    instance_type: Option<String>,
    subnet: Option<String>,
    /// Security group ids, sorted.
    firewalls: Vec<String>,
    public_ip: bool,
    image_id: Option<String>,
}

pub(super) fn validate(spec: &InstanceSpec) -> Vec<Violation> {
    match &spec.user_data {
        Some(ud) if ud.len() > MAX_USER_DATA => vec![Violation::new(
            "user_data",
            format!(
                "EC2 takes at most {MAX_USER_DATA} bytes (16 KiB) of user data, this is {} bytes: move the script to a file the instance downloads at boot (S3, a package), or compress it (cloud-init reads gzip)",
                ud.len()
            ),
        )],
        _ => Vec::new(),
    }
}

pub(super) async fn create(
    ec2: &Ec2<'_>,
    req: &Request<'_>,
    spec: &InstanceSpec,
) -> Result<Created> {
    let ami = ami(ec2, req, spec).await?;
    let mut run = ec2
        .client
        .run_instances()
        .image_id(ami)
        .instance_type(InstanceType::from(instance_type(req, spec)))
        .min_count(1)
        .max_count(1)
        .client_token(req.token)
        .tag_specifications(tagging(ResourceType::Instance, req));
    // A public address is asked for on the primary interface, which then carries the subnet
    // and groups too.
    if spec.public_ip {
        run = run.network_interfaces(
            InstanceNetworkInterfaceSpecification::builder()
                .device_index(0)
                .subnet_id(&spec.subnet)
                .set_groups(Some(spec.firewalls.clone()))
                .associate_public_ip_address(true)
                .build(),
        );
    } else {
        run = run
            .subnet_id(&spec.subnet)
            .set_security_group_ids(Some(spec.firewalls.clone()));
    }
    if let Some(ud) = &spec.user_data {
        run = run.user_data(base64::engine::general_purpose::STANDARD.encode(ud));
    }
    let out = run.send().await.map_err(aws_err)?;
    let instance = out.instances().first();
    Created::new(
        instance.and_then(|i| i.instance_id()),
        req,
        instance.map(|i| observe(i, ec2.region)),
    )
}

pub(super) async fn update(
    ec2: &Ec2<'_>,
    req: &Request<'_>,
    spec: &InstanceSpec,
    current: &Observed,
) -> Result<()> {
    let have: Attrs = attrs_of(current)?;
    let id = current.cloud_id.as_str();
    if have.public_ip != spec.public_ip {
        return Err(ProviderError::Failed {
            code: "UnsupportedUpdate".into(),
            message: format!(
                "EC2 cannot add or remove the public address of a running instance ({}); replace it: destroy it and apply, or rename it",
                req.address
            ),
        });
    }
    let mut firewalls = spec.firewalls.clone();
    firewalls.sort();
    if have.firewalls != firewalls {
        ec2.client
            .modify_instance_attribute()
            .instance_id(id)
            .set_groups(Some(spec.firewalls.clone()))
            .send()
            .await
            .map_err(aws_err)?;
    }
    let want = instance_type(req, spec);
    if have.instance_type.as_deref() != Some(want) {
        // EC2 changes an instance type only while stopped: stop, modify, start.
        ec2.client
            .stop_instances()
            .instance_ids(id)
            .send()
            .await
            .map_err(aws_err)?;
        ec2.client
            .wait_until_instance_stopped()
            .instance_ids(id)
            .wait(MAX_WAIT)
            .await
            .map_err(|e| wait_err("instance stopped", e))?;
        ec2.client
            .modify_instance_attribute()
            .instance_id(id)
            .instance_type(AttributeValue::builder().value(want).build())
            .send()
            .await
            .map_err(aws_err)?;
        ec2.client
            .start_instances()
            .instance_ids(id)
            .send()
            .await
            .map_err(aws_err)?;
    }
    Ok(())
}

pub(super) async fn describe(ec2: &Ec2<'_>, filters: Vec<Filter>) -> Result<Vec<Observed>> {
    let reservations: Vec<_> = describe_all!(ec2, describe_instances, filters)?;
    Ok(reservations
        .iter()
        .flat_map(|r| r.instances())
        .filter(|i| !gone(i))
        .map(|i| observe(i, ec2.region))
        .collect())
}

pub(super) async fn delete(ec2: &Ec2<'_>, id: &str) -> Result<()> {
    ec2.client
        .terminate_instances()
        .instance_ids(id)
        .send()
        .await
        .map_err(aws_err)?;
    // Until it is terminated, its interface keeps the subnet and groups from being deleted.
    ec2.client
        .wait_until_instance_terminated()
        .instance_ids(id)
        .wait(MAX_WAIT)
        .await
        .map_err(|e| wait_err("instance terminated", e))?;
    Ok(())
}

/// The instance type: the escape hatch's `aws.instance_type` (a type the catalog does not
/// list), else the catalog's.
fn instance_type<'a>(req: &'a Request<'_>, spec: &'a InstanceSpec) -> &'a str {
    req.native_str("instance_type")
        .unwrap_or(&spec.instance_type)
}

/// The AMI to launch: the escape hatch's `aws.ami`, else the stack's pin for the image family
/// (`providers.aws.images`), else the newest image the catalog's owner/name filter finds in
/// this region.
async fn ami(ec2: &Ec2<'_>, req: &Request<'_>, spec: &InstanceSpec) -> Result<String> {
    if let Some(ami) = req.native_str("ami") {
        return Ok(ami.to_string());
    }
    let family = spec.image.as_str();
    if let Some(ami) = ec2.aws.settings.images.get(family) {
        return Ok(ami.clone());
    }
    let (owner, name) = match (&spec.image_ref["owner"], &spec.image_ref["name"]) {
        (Value::String(o), Value::String(n)) => (o, n),
        _ => match spec.image_ref.as_str() {
            Some(id) if id.starts_with("ami-") => return Ok(id.to_string()),
            _ => {
                return Err(ProviderError::Failed {
                    code: "InvalidAMIID.Malformed".into(),
                    message: format!("image \"{family}\" has no AWS image reference"),
                });
            }
        },
    };
    let out = ec2
        .client
        .describe_images()
        .owners(owner)
        .filters(Filter::builder().name("name").values(name).build())
        .filters(Filter::builder().name("state").values("available").build())
        .send()
        .await
        .map_err(aws_err)?;
    out.images()
        .iter()
        .filter(|i| i.image_id().is_some())
        .max_by(|a, b| a.creation_date().cmp(&b.creation_date()))
        .and_then(|i| i.image_id().map(str::to_string))
        .ok_or_else(|| ProviderError::Failed {
            code: "InvalidAMIID.NotFound".into(),
            message: format!(
                "no AMI of owner {owner} matches \"{name}\" in this region; pin one with `providers.aws.images.\"{family}\" = \"ami-…\"` or `aws.ami` on the resource"
            ),
        })
}

fn gone(i: &Instance) -> bool {
    matches!(
        i.state().and_then(|s| s.name()),
        Some(InstanceStateName::Terminated | InstanceStateName::ShuttingDown)
    )
}

fn observe(i: &Instance, region: &str) -> Observed {
    let mut outputs = Map::new();
    outputs.insert("private_ip".into(), json!(i.private_ip_address()));
    outputs.insert("public_ip".into(), json!(i.public_ip_address()));
    let mut firewalls: Vec<String> = i
        .security_groups()
        .iter()
        .filter_map(|g| g.group_id().map(str::to_string))
        .collect();
    firewalls.sort();
    let attrs = Attrs {
        instance_type: i.instance_type().map(|t| t.as_str().to_string()),
        subnet: i.subnet_id().map(str::to_string),
        firewalls,
        public_ip: i.public_ip_address().is_some(),
        image_id: i.image_id().map(str::to_string),
    };
    observed(
        Kind::Instance,
        i.instance_id(),
        region,
        attrs,
        outputs,
        i.tags(),
    )
}
