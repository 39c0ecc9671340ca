//! firewall → network security group (`Microsoft.Network/networkSecurityGroups`) with its rules
//! inline. Rules are written one per canonical permission ([`firewall::permissions`]: one per
//! CIDR, sorted), priorities 100, 101, … per direction in that order, so the same rules always
//! get the same priorities; an update PUTs the whole set. An NSG belongs to a region, not to a
//! network: `network` is not observed (the NSG applies where an interface or subnet uses it).

use chimera_model::Kind;
use chimera_model::kinds::firewall::{self, Permission};
use chimera_model::kinds::{FirewallSpec, Rule};
use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::{AzureCloud, NETWORK_API, get_live, list_type, observed, resource_name, tags_of};
use chimera_providers::{Observed, Request, Result, TAG_TOKEN, Violation, managed_tags};

pub(super) const TYPE: &str = "Microsoft.Network/networkSecurityGroups";
const MAX_NAME: usize = 80;
/// The first priority Chimera gives a rule, per direction.
const FIRST_PRIORITY: usize = 100;
/// Security rules per NSG (Azure's limit), both directions together.
const MAX_RULES: usize = 1000;

/// What a network security group is observed as: the attributes drift detection compares with
/// state rows.
#[derive(Debug, Serialize, Deserialize)]
struct Attrs {
    ingress: Vec<Rule>,
    egress: Vec<Rule>,
}

/// Azure's limits: 1000 rules per NSG, port ranges from ≤ to.
pub(super) fn validate(spec: &FirewallSpec) -> Vec<Violation> {
    let mut out = Vec::new();
    let n = firewall::permissions(&spec.ingress).len() + firewall::permissions(&spec.egress).len();
    if n > MAX_RULES {
        out.push(Violation::new(
            "ingress",
            format!("an Azure network security group holds at most {MAX_RULES} rules (counted one per CIDR), this one has {n}: merge CIDRs into wider blocks or split the rules across two firewalls"),
        ));
    }
    for (field, rules) in [("ingress", &spec.ingress), ("egress", &spec.egress)] {
        for (i, r) in rules.iter().enumerate() {
            if let (Some(from), Some(to)) = (r.from_port, r.to_port)
                && from > to
            {
                out.push(Violation::new(
                        field,
                        format!("`{field}[{i}]`: the port range goes from {from} down to {to}; Azure needs from ≤ to: write `ports = {{ from = {to}, to = {from} }}`"),
                    ));
            }
        }
    }
    out
}

pub(super) async fn create(
    az: &AzureCloud,
    req: &Request<'_>,
    group: &str,
    spec: &FirewallSpec,
) -> Result<String> {
    let name = resource_name(req.address.name.as_str(), req.token, MAX_NAME);
    let id = az.id_of(group, TYPE, &name)?;
    if let Some(o) = read(az, &id).await?
        && o.tags.get(TAG_TOKEN).map(String::as_str) == Some(req.token)
    {
        return Ok(o.cloud_id);
    }
    let body = json!({
        "location": req.native_region,
        "tags": managed_tags(req),
        "properties": { "securityRules": security_rules(spec) },
    });
    az.arm()
        .await?
        .write(Method::PUT, &id, NETWORK_API, &body, None)
        .await?;
    Ok(id)
}

pub(super) async fn update(az: &AzureCloud, spec: &FirewallSpec, current: &Observed) -> Result<()> {
    let id = current.cloud_id.as_str();
    let body = json!({
        "location": current.native_region,
        "tags": current.tags,
        "properties": { "securityRules": security_rules(spec) },
    });
    az.arm()
        .await?
        .write(Method::PUT, id, NETWORK_API, &body, None)
        .await
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

/// The spec's rules as ARM security rules, with deterministic names and priorities.
fn security_rules(spec: &FirewallSpec) -> Vec<Value> {
    let mut out = Vec::new();
    for (rules, inbound) in [(&spec.ingress, true), (&spec.egress, false)] {
        for (i, p) in firewall::permissions(rules).iter().enumerate() {
            let priority = FIRST_PRIORITY + i;
            let ports = match (p.from_port, p.to_port) {
                (Some(f), Some(t)) if f == t => f.to_string(),
                (Some(f), Some(t)) => format!("{f}-{t}"),
                _ => "*".into(),
            };
            let protocol = match p.protocol.as_str() {
                "tcp" => "Tcp",
                "udp" => "Udp",
                "icmp" => "Icmp",
                _ => "*",
            };
            let (source, destination) = if inbound {
                (p.cidr.as_str(), "*")
            } else {
                ("*", p.cidr.as_str())
            };
            let mut props = json!({
                "protocol": protocol,
                "sourcePortRange": "*",
                "destinationPortRange": ports,
                "sourceAddressPrefix": source,
                "destinationAddressPrefix": destination,
                "access": "Allow",
                "priority": priority,
                "direction": if inbound { "Inbound" } else { "Outbound" },
            });
            if let Some(d) = &p.description {
                props["description"] = Value::String(d.clone());
            }
            let dir = if inbound { "in" } else { "out" };
            out.push(json!({ "name": format!("chimera-{dir}-{priority}"), "properties": props }));
        }
    }
    out
}

/// ARM security rules (allow rules; Chimera writes no others) as Chimera writes rules.
fn rules_of(rules: &[Value], inbound: bool) -> Vec<Rule> {
    let direction = if inbound { "Inbound" } else { "Outbound" };
    firewall::rules_of(rules.iter().filter_map(|r| {
        let p = r.get("properties")?;
        let s = |k: &str| p.get(k).and_then(Value::as_str).unwrap_or_default();
        if s("direction") != direction || s("access") != "Allow" {
            return None;
        }
        let protocol = match s("protocol") {
            "Tcp" => "tcp",
            "Udp" => "udp",
            "Icmp" => "icmp",
            _ => "all",
        };
        let ports = s("destinationPortRange");
        let (from, to) = match ports.split_once('-') {
            Some((f, t)) => (f.parse().ok(), t.parse().ok()),
            None => (ports.parse().ok(), ports.parse().ok()),
        };
        let cidr = if inbound {
            s("sourceAddressPrefix")
        } else {
            s("destinationAddressPrefix")
        };
        let cidr = if cidr == "*" { "0.0.0.0/0" } else { cidr };
        Some(Permission {
            protocol: protocol.to_string(),
            from_port: from,
            to_port: to,
            cidr: cidr.to_string(),
            description: p
                .get("description")
                .and_then(Value::as_str)
                .map(str::to_string),
        })
    }))
}

fn observe(v: &Value) -> Observed {
    let rules = v
        .pointer("/properties/securityRules")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let attrs = Attrs {
        ingress: rules_of(&rules, true),
        egress: rules_of(&rules, false),
    };
    observed(Kind::Firewall, v, attrs, Map::new(), tags_of(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_round_trip_with_deterministic_priorities() {
        let spec: FirewallSpec = serde_json::from_value(json!({
            "network": "n",
            "ingress": [
                { "protocol": "tcp", "from_port": 443, "to_port": 443, "cidrs": ["0.0.0.0/0"] },
                { "protocol": "tcp", "from_port": 22, "to_port": 22, "cidrs": ["10.0.0.0/16", "10.1.0.0/16"], "description": "ssh" },
                { "protocol": "udp", "from_port": 1000, "to_port": 2000, "cidrs": ["10.0.0.0/8"] },
            ],
            "egress": [{ "protocol": "all", "from_port": null, "to_port": null, "cidrs": ["0.0.0.0/0"] }],
        }))
        .unwrap();
        let written = security_rules(&spec);
        assert_eq!(
            written,
            security_rules(&spec),
            "the same rules, the same priorities"
        );
        let priorities: Vec<i64> = written
            .iter()
            .map(|r| r["properties"]["priority"].as_i64().unwrap())
            .collect();
        assert_eq!(priorities, [100, 101, 102, 103, 100]);
        assert_eq!(
            firewall::permissions(&rules_of(&written, true)),
            firewall::permissions(&spec.ingress)
        );
        assert_eq!(
            firewall::permissions(&rules_of(&written, false)),
            firewall::permissions(&spec.egress)
        );
    }
}
