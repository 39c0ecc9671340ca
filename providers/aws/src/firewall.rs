//! firewall → SecurityGroup with its ingress and egress rules.
//!
//! Rules are compared in canonical form ([`firewall::permissions`]: one per CIDR), since EC2
//! regroups them; an update authorizes and revokes only the difference.

use aws_sdk_ec2::types::{Filter, IpPermission, IpRange, ResourceType, SecurityGroup};
use chimera_model::Kind;
use chimera_model::kinds::firewall::{self, Permission};
use chimera_model::kinds::{FirewallSpec, Rule};
use serde::{Deserialize, Serialize};
use serde_json::Map;

use super::{Created, Ec2, attrs_of, aws_err, observed, tagging};
use chimera_providers::cloud::with_consistency;
use chimera_providers::{Observed, Request, Result, Violation};

/// The Describe filter that selects security groups by id.
pub(super) const ID_FILTER: &str = "group-id";

/// Rules per direction a security group holds: EC2's default quota ("Inbound or outbound rules
/// per security group"), counted one per CIDR.
const MAX_RULES: usize = 60;

/// What a security group is observed as: the attributes drift detection compares with state
/// rows. Rules as Chimera writes them: one per (protocol, ports, description), CIDRs together.
#[derive(Debug, Serialize, Deserialize)]
struct Attrs {
    network: Option<String>,
    ingress: Vec<Rule>,
    egress: Vec<Rule>,
}

/// EC2's limits on a security group: rules per direction (the default quota) and tcp/udp
/// port ranges.
pub(super) fn validate(spec: &FirewallSpec) -> Vec<Violation> {
    let mut out = Vec::new();
    for (field, rules, direction) in [
        ("ingress", &spec.ingress, "inbound"),
        ("egress", &spec.egress, "outbound"),
    ] {
        let n = firewall::permissions(rules).len();
        if n > MAX_RULES {
            out.push(Violation::new(
                field,
                format!(
                    "a security group holds at most {MAX_RULES} {direction} rules (EC2's default quota, counted one per CIDR), this one has {n}: merge CIDRs into wider blocks, split the rules across two firewalls, or raise the quota \"Inbound or outbound rules per security group\" in Service Quotas"
                ),
            ));
        }
        for (i, r) in rules.iter().enumerate() {
            if !matches!(r.protocol.as_str(), "tcp" | "udp") {
                continue;
            }
            match (r.from_port, r.to_port) {
                (Some(from), Some(to)) if from > to => out.push(Violation::new(
                    field,
                    format!(
                        "`{field}[{i}]`: the port range goes from {from} down to {to}; EC2 needs from ≤ to: write `ports = {{ from = {to}, to = {from} }}`"
                    ),
                )),
                (Some(_), None) | (None, Some(_)) => out.push(Violation::new(
                    field,
                    format!(
                        "`{field}[{i}]`: a {} rule needs both ends of its port range (0-65535), or neither for every port",
                        r.protocol
                    ),
                )),
                _ => {}
            }
        }
    }
    out
}

pub(super) async fn create(
    ec2: &Ec2<'_>,
    req: &Request<'_>,
    spec: &FirewallSpec,
) -> Result<Created> {
    let out = ec2
        .client
        .create_security_group()
        .group_name(req.address.name.as_str())
        .description(format!("chimera {} ({})", req.address, req.stack))
        .vpc_id(&spec.network)
        .tag_specifications(tagging(ResourceType::SecurityGroup, req))
        .send()
        .await
        .map_err(aws_err)?;
    let made = Created::new(out.group_id(), req, None)?;
    // The group exists from here on, even if setting its rules fails.
    ec2.aws.window.created(&made.id);
    // A new group comes with EC2's default egress rule: rules are set against what it has.
    let current = with_consistency(|| ec2.read(Kind::Firewall, &made.id)).await?;
    let have = current.as_ref().map(attrs_of::<Attrs>).transpose()?;
    sync_rules(ec2, &made.id, spec, have.as_ref()).await?;
    Ok(made)
}

pub(super) async fn update(ec2: &Ec2<'_>, spec: &FirewallSpec, current: &Observed) -> Result<()> {
    let have: Attrs = attrs_of(current)?;
    sync_rules(ec2, &current.cloud_id, spec, Some(&have)).await
}

pub(super) async fn describe(ec2: &Ec2<'_>, filters: Vec<Filter>) -> Result<Vec<Observed>> {
    let groups: Vec<_> = describe_all!(ec2, describe_security_groups, filters)?;
    Ok(groups.iter().map(|g| observe(g, ec2.region)).collect())
}

pub(super) async fn delete(ec2: &Ec2<'_>, id: &str) -> Result<()> {
    ec2.client
        .delete_security_group()
        .group_id(id)
        .send()
        .await
        .map_err(aws_err)?;
    Ok(())
}

/// Makes a security group's rules exactly the spec's, given that they are `have`'s.
async fn sync_rules(
    ec2: &Ec2<'_>,
    group: &str,
    spec: &FirewallSpec,
    have: Option<&Attrs>,
) -> Result<()> {
    let directions = [
        (&spec.ingress, have.map(|h| &h.ingress), false),
        (&spec.egress, have.map(|h| &h.egress), true),
    ];
    for (want, have, egress) in directions {
        let want = firewall::permissions(want);
        let have = have.map(|h| firewall::permissions(h)).unwrap_or_default();
        let add: Vec<IpPermission> = want
            .iter()
            .filter(|p| !have.contains(p))
            .map(permission)
            .collect();
        let remove: Vec<IpPermission> = have
            .iter()
            .filter(|p| !want.contains(p))
            .map(permission)
            .collect();
        let c = &ec2.client;
        if !remove.is_empty() {
            if egress {
                c.revoke_security_group_egress()
                    .group_id(group)
                    .set_ip_permissions(Some(remove))
                    .send()
                    .await
                    .map_err(aws_err)?;
            } else {
                c.revoke_security_group_ingress()
                    .group_id(group)
                    .set_ip_permissions(Some(remove))
                    .send()
                    .await
                    .map_err(aws_err)?;
            }
        }
        if !add.is_empty() {
            if egress {
                c.authorize_security_group_egress()
                    .group_id(group)
                    .set_ip_permissions(Some(add))
                    .send()
                    .await
                    .map_err(aws_err)?;
            } else {
                c.authorize_security_group_ingress()
                    .group_id(group)
                    .set_ip_permissions(Some(add))
                    .send()
                    .await
                    .map_err(aws_err)?;
            }
        }
    }
    Ok(())
}

/// One canonical rule as an EC2 permission. `all` is EC2's protocol `-1`, without ports.
fn permission(p: &Permission) -> IpPermission {
    let mut range = IpRange::builder().cidr_ip(&p.cidr);
    if let Some(d) = &p.description {
        range = range.description(d);
    }
    let all = p.protocol == "all";
    let mut out = IpPermission::builder()
        .ip_protocol(if all { "-1" } else { p.protocol.as_str() })
        .ip_ranges(range.build());
    if !all {
        // Canonical tcp/udp rules always carry ports; ICMP without them is EC2's "any" (-1).
        out = out
            .from_port(p.from_port.map_or(-1, i32::from))
            .to_port(p.to_port.map_or(-1, i32::from));
    }
    out.build()
}

/// EC2 permissions as Chimera writes rules (IPv4 ranges; Chimera writes no others).
fn rules_of(perms: &[IpPermission]) -> Vec<Rule> {
    firewall::rules_of(perms.iter().flat_map(|p| {
        let protocol = match p.ip_protocol().unwrap_or("-1") {
            "-1" | "all" => "all",
            other => other,
        };
        let all = protocol == "all";
        // ICMP's "any type" is -1: no port, as Chimera writes it.
        let port = move |x: Option<i32>| x.filter(|_| !all).and_then(|x| u16::try_from(x).ok());
        p.ip_ranges().iter().map(move |r| Permission {
            protocol: protocol.to_string(),
            from_port: port(p.from_port()),
            to_port: port(p.to_port()),
            cidr: r.cidr_ip().unwrap_or_default().to_string(),
            description: r.description().map(str::to_string),
        })
    }))
}

fn observe(g: &SecurityGroup, region: &str) -> Observed {
    let attrs = Attrs {
        network: g.vpc_id().map(str::to_string),
        ingress: rules_of(g.ip_permissions()),
        egress: rules_of(g.ip_permissions_egress()),
    };
    observed(
        Kind::Firewall,
        g.group_id(),
        region,
        attrs,
        Map::new(),
        g.tags(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_round_trip_through_permissions() {
        let rules: Vec<Rule> = serde_json::from_value(serde_json::json!([
            { "protocol": "tcp", "from_port": 443, "to_port": 443, "cidrs": ["0.0.0.0/0"] },
            { "protocol": "tcp", "from_port": 22, "to_port": 22, "cidrs": ["10.0.0.0/16", "10.1.0.0/16"], "description": "ssh" },
            { "protocol": "all", "from_port": null, "to_port": null, "cidrs": ["0.0.0.0/0"] },
        ]))
        .unwrap();
        let perms: Vec<IpPermission> = firewall::permissions(&rules)
            .iter()
            .map(permission)
            .collect();
        assert_eq!(
            firewall::permissions(&rules_of(&perms)),
            firewall::permissions(&rules)
        );
    }

    #[test]
    fn observed_rules_keep_their_json_shape() {
        let perms = [permission(&Permission {
            protocol: "tcp".into(),
            from_port: Some(22),
            to_port: Some(22),
            cidr: "10.0.0.0/16".into(),
            description: None,
        })];
        assert_eq!(
            serde_json::to_value(rules_of(&perms)).unwrap(),
            serde_json::json!([{ "protocol": "tcp", "from_port": 22, "to_port": 22, "cidrs": ["10.0.0.0/16"] }])
        );
    }
}
