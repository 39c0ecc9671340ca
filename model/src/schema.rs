//! Per-kind attribute schema shared by the planner and every provider: which attributes force
//! a replacement when they change. Providers may be stricter, never looser.

use crate::Kind;

/// Attributes whose change cannot be applied in place.
pub fn force_new(kind: Kind) -> &'static [&'static str] {
    match kind {
        Kind::Network => &["cidr"],
        Kind::Subnet => &["network", "cidr", "zone"],
        Kind::Firewall => &["network"],
        Kind::Instance => &["image", "image_ref", "subnet", "user_data"],
        Kind::Volume => &["zone", "encrypted", "type", "disk_type"],
    }
}

/// Whether changing `attr` of `kind` forces a replacement. The provider escape hatch and the
/// region are always force-new (they may name anything).
pub fn is_force_new(kind: Kind, attr: &str) -> bool {
    force_new(kind).contains(&attr) || matches!(attr, "local" | "aws" | "gcp" | "azure")
}

/// Firewall rules (`ingress`, `egress`) in canonical form: one entry per (protocol, ports,
/// CIDR, description), sorted and deduplicated, ports dropped for `all`. Two rule lists that
/// allow the same traffic are equal in this form, however they were grouped or ordered; clouds
/// regroup them.
pub fn canonical_rules(v: &serde_json::Value) -> Vec<serde_json::Value> {
    use serde_json::{Value, json};
    let mut out = std::collections::BTreeSet::new();
    for r in v.as_array().into_iter().flatten() {
        let protocol = r["protocol"].as_str().unwrap_or("all");
        let all = protocol == "all";
        let port = |k: &str| if all { Value::Null } else { r[k].clone() };
        for c in r["cidrs"].as_array().into_iter().flatten() {
            // Serialised with sorted keys, so the set orders by protocol first.
            let mut e = json!({
                "protocol": protocol,
                "from_port": port("from_port"),
                "to_port": port("to_port"),
                "cidr": c,
            });
            if let Some(d) = r["description"].as_str() {
                e["description"] = json!(d);
            }
            out.insert(e.to_string());
        }
    }
    out.iter()
        .filter_map(|s| serde_json::from_str(s).ok())
        .collect()
}

/// Whether an attribute of `kind` holds firewall rules.
pub fn is_rules(kind: Kind, attr: &str) -> bool {
    kind == Kind::Firewall && matches!(attr, "ingress" | "egress")
}
