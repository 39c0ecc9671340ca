//! firewall: stateful rules on a network (AWS security group, GCP firewall rules, Azure network
//! security group).

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{Field, KindDef, NameRule, name_rules};
use crate::{Kind, ProviderName};

/// One rule: a protocol, a port range (`None`: all ports) and the CIDRs it admits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    pub protocol: String,
    pub from_port: Option<u16>,
    pub to_port: Option<u16>,
    pub cidrs: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FirewallSpec {
    pub network: String,
    pub ingress: Vec<Rule>,
    pub egress: Vec<Rule>,
}

/// Azure network security groups: 1-80; AWS: the security group's name, 255, and `sg-`
/// is EC2's id prefix.
const NAMES: [(ProviderName, NameRule); 3] = name_rules((1, 80), 255, Some("sg-"));

pub static DEF: KindDef = KindDef {
    kind: Kind::Firewall,
    schema: "Firewall",
    fields: &[
        Field {
            name: "network",
            required: true,
            doc: "The network: a Network resource or its `outputs.id`.",
        },
        Field {
            name: "ingress",
            required: false,
            doc: "Inbound rules (default none).",
        },
        Field {
            name: "egress",
            required: false,
            doc: "Outbound rules (default: everything to 0.0.0.0/0).",
        },
    ],
    outputs: &["id"],
    force_new: &["network"],
    sensitive: &[],
    names: &NAMES,
    provider_force_new: &[],
};

/// Whether an attribute of `kind` holds firewall rules.
pub fn is_rules(kind: Kind, attr: &str) -> bool {
    kind == Kind::Firewall && matches!(attr, "ingress" | "egress")
}

/// One entry of the canonical form of a rule list: one CIDR, ports dropped for `all`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Permission {
    pub protocol: String,
    pub from_port: Option<u16>,
    pub to_port: Option<u16>,
    pub cidr: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// Rules in canonical form: one entry per (protocol, ports, CIDR, description), sorted and
/// deduplicated; ports dropped for `all`, and spelt out (0-65535) for a tcp or udp rule that
/// gives none. Two rule lists that allow the same traffic are equal in this form, however
/// they were grouped or ordered; clouds regroup them.
pub fn permissions(rules: &[Rule]) -> Vec<Permission> {
    let mut out = std::collections::BTreeSet::new();
    for r in rules {
        // A tcp or udp rule without ports admits every port: written out, as clouds report it.
        let (from_port, to_port) = match (r.protocol.as_str(), r.from_port, r.to_port) {
            ("all", _, _) => (None, None),
            ("tcp" | "udp", None, None) => (Some(0), Some(65535)),
            (_, from, to) => (from, to),
        };
        for c in &r.cidrs {
            out.insert(Permission {
                protocol: r.protocol.clone(),
                from_port,
                to_port,
                cidr: c.clone(),
                description: r.description.clone(),
            });
        }
    }
    out.into_iter().collect()
}

/// Rules as Chimera writes them, from canonical permissions: one rule per (protocol, ports,
/// description), CIDRs together.
pub fn rules_of(perms: impl IntoIterator<Item = Permission>) -> Vec<Rule> {
    type Key = (String, Option<u16>, Option<u16>, Option<String>);
    let mut grouped: std::collections::BTreeMap<Key, Vec<String>> = Default::default();
    for p in perms {
        grouped
            .entry((p.protocol, p.from_port, p.to_port, p.description))
            .or_default()
            .push(p.cidr);
    }
    grouped
        .into_iter()
        .map(|((protocol, from_port, to_port, description), mut cidrs)| {
            cidrs.sort();
            Rule {
                protocol,
                from_port,
                to_port,
                cidrs,
                description,
            }
        })
        .collect()
}

/// [`permissions`] of a JSON rule list (a state row's or a cloud's attribute), as JSON. Entries
/// that are not rules are skipped.
pub fn canonical_rules(v: &Value) -> Vec<Value> {
    let rules: Vec<Rule> = v
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| serde_json::from_value(r.clone()).ok())
        .collect();
    permissions(&rules)
        .into_iter()
        .map(|p| {
            let mut e = json!({
                "protocol": p.protocol,
                "from_port": p.from_port,
                "to_port": p.to_port,
                "cidr": p.cidr,
            });
            if let Some(d) = p.description {
                e["description"] = json!(d);
            }
            e
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_form_ignores_grouping_and_order() {
        let a = json!([
            { "protocol": "tcp", "from_port": 22, "to_port": 22, "cidrs": ["10.1.0.0/16", "10.0.0.0/16"] },
            { "protocol": "all", "from_port": 1, "to_port": 2, "cidrs": ["0.0.0.0/0"] },
        ]);
        let b = json!([
            { "protocol": "all", "from_port": null, "to_port": null, "cidrs": ["0.0.0.0/0"] },
            { "protocol": "tcp", "from_port": 22, "to_port": 22, "cidrs": ["10.0.0.0/16"] },
            { "protocol": "tcp", "from_port": 22, "to_port": 22, "cidrs": ["10.1.0.0/16"] },
        ]);
        assert_eq!(canonical_rules(&a), canonical_rules(&b));
        assert_eq!(canonical_rules(&a).len(), 3);
    }

    #[test]
    fn a_rule_without_ports_admits_them_all() {
        let unspecified = json!([{ "protocol": "tcp", "from_port": null, "to_port": null, "cidrs": ["0.0.0.0/0"] }]);
        let spelt_out = json!([{ "protocol": "tcp", "from_port": 0, "to_port": 65535, "cidrs": ["0.0.0.0/0"] }]);
        assert_eq!(canonical_rules(&unspecified), canonical_rules(&spelt_out));
        // ICMP has no ports: without a type it stays "any".
        let icmp = json!([{ "protocol": "icmp", "from_port": null, "to_port": null, "cidrs": ["0.0.0.0/0"] }]);
        assert_eq!(canonical_rules(&icmp)[0]["from_port"], Value::Null);
    }

    #[test]
    fn rules_round_trip_through_permissions() {
        let rules: Vec<Rule> = serde_json::from_value(json!([
            { "protocol": "tcp", "from_port": 443, "to_port": 443, "cidrs": ["0.0.0.0/0"] },
            { "protocol": "tcp", "from_port": 22, "to_port": 22, "cidrs": ["10.0.0.0/16", "10.1.0.0/16"], "description": "ssh" },
        ]))
        .unwrap();
        assert_eq!(
            permissions(&rules_of(permissions(&rules))),
            permissions(&rules)
        );
    }
}
