//! firewall → firewall rules on the network, one per rule (`{id}-i{n}` ingress, `{id}-e{n}`
//! egress), each targeting the network tag `{id}`: an instance is behind the firewall when it
//! carries the tag. A firewall without rules keeps one disabled rule (`{id}-n0`) so that it
//! exists. Rules change in place: PATCH where a rule differs, insert and delete for the rest;
//! tags are kept in every rule's description, which a PATCH may change.

use chimera_model::Kind;
use chimera_model::kinds::firewall::{self, Permission};
use chimera_model::kinds::{FirewallSpec, Rule};
use futures_util::future::try_join_all;
use google_cloud_compute_v1::model::Firewall;
use google_cloud_compute_v1::model::firewall::{Allowed, Denied, Direction};
use serde::{Deserialize, Serialize};
use serde_json::Map;
use std::collections::BTreeMap;

use super::{Api, Described, gcp_err, kept_tags, last, observed, request_id};
use chimera_providers::{Observed, Request, Result, Violation, managed_tags};

/// The rule-name suffixes: `-i3`, `-e0`, `-n0`.
const SUFFIX: &str = "-[ien][0-9]+";

/// What a firewall is observed as: the attributes drift detection compares with state rows.
/// Rules as Chimera writes them: one per (protocol, ports, description), CIDRs together.
#[derive(Debug, Serialize, Deserialize)]
struct Attrs {
    network: Option<String>,
    ingress: Vec<Rule>,
    egress: Vec<Rule>,
}

/// GCP's limits on a rule: protocols it knows, ports only for tcp/udp, ranges from ≤ to.
pub(super) fn validate(spec: &FirewallSpec) -> Vec<Violation> {
    let mut out = Vec::new();
    for (field, rules) in [("ingress", &spec.ingress), ("egress", &spec.egress)] {
        for (i, r) in rules.iter().enumerate() {
            let p = r.protocol.as_str();
            if !matches!(
                p,
                "tcp" | "udp" | "icmp" | "esp" | "ah" | "sctp" | "ipip" | "all"
            ) && p.parse::<u8>().is_err()
            {
                out.push(Violation::new(
                    field,
                    format!(
                        "`{field}[{i}]`: GCP firewall rules take tcp, udp, icmp, esp, ah, sctp, ipip, all or a protocol number, not `{p}`"
                    ),
                ));
            }
            match (r.from_port, r.to_port) {
                (Some(from), Some(to)) if from > to => out.push(Violation::new(
                    field,
                    format!(
                        "`{field}[{i}]`: the port range goes from {from} down to {to}; GCP needs from ≤ to: write `ports = {{ from = {to}, to = {from} }}`"
                    ),
                )),
                (Some(_), _) | (_, Some(_)) if !matches!(p, "tcp" | "udp" | "sctp") => {
                    out.push(Violation::new(
                        field,
                        format!(
                            "`{field}[{i}]`: GCP takes ports only for tcp, udp and sctp rules; remove the ports of this {p} rule"
                        ),
                    ))
                }
                _ => {}
            }
        }
    }
    out
}

pub(super) async fn create(
    api: &Api<'_>,
    req: &Request<'_>,
    spec: &FirewallSpec,
    name: &str,
) -> Result<String> {
    sync(api, req, spec, name, None).await?;
    Ok(name.to_string())
}

/// Makes the rules of firewall `id` exactly the spec's: inserts what is missing, patches what
/// differs, deletes what is left over.
pub(super) async fn sync(
    api: &Api<'_>,
    req: &Request<'_>,
    spec: &FirewallSpec,
    id: &str,
    current: Option<&Observed>,
) -> Result<()> {
    let tags = match current {
        Some(c) => kept_tags(req, c),
        None => managed_tags(req),
    };
    let want = desired(api, spec, id, &tags);
    let have: BTreeMap<String, Firewall> = rules(api, Some(format!("name eq \"{id}{SUFFIX}\"")))
        .await?
        .into_iter()
        .map(|f| (f.name.clone().unwrap_or_default(), f))
        .collect();
    let mut calls = Vec::new();
    for w in &want {
        let name = w.name.clone().unwrap_or_default();
        match have.get(&name) {
            None => {
                let rid = request_id(req.token, &format!("firewall {name}"));
                calls.push(Box::pin(
                    api.run(
                        api.c
                            .firewalls
                            .insert()
                            .set_project(api.project)
                            .set_request_id(rid)
                            .set_body(w.clone())
                            .send(),
                    ),
                )
                    as std::pin::Pin<Box<dyn Future<Output = Result<()>> + Send + '_>>);
            }
            Some(h) if shape(h) != shape(w) => {
                calls.push(Box::pin(
                    api.run(
                        api.c
                            .firewalls
                            .patch()
                            .set_project(api.project)
                            .set_firewall(name)
                            .set_body(w.clone())
                            .send(),
                    ),
                ));
            }
            Some(_) => {}
        }
    }
    for name in have.keys() {
        if !want.iter().any(|w| w.name.as_deref() == Some(name)) {
            calls.push(Box::pin(
                api.run(
                    api.c
                        .firewalls
                        .delete()
                        .set_project(api.project)
                        .set_firewall(name)
                        .send(),
                ),
            ));
        }
    }
    try_join_all(calls).await?;
    Ok(())
}

pub(super) async fn read(api: &Api<'_>, id: &str) -> Result<Option<Observed>> {
    Ok(list(api, Some(&[id.to_string()])).await?.into_iter().next())
}

/// The firewalls named `ids` (every firewall Chimera's naming recognises when `None`).
pub(super) async fn list(api: &Api<'_>, ids: Option<&[String]>) -> Result<Vec<Observed>> {
    let filter = ids.map(|ids| super::names_filter(ids, SUFFIX));
    Ok(group(api, rules(api, filter).await?))
}

/// The firewalls whose names end in the token hash `h`.
pub(super) async fn by_hash(api: &Api<'_>, h: &str) -> Result<Vec<Observed>> {
    let rules = rules(api, Some(format!("name eq \".*-{h}{SUFFIX}\""))).await?;
    Ok(group(api, rules))
}

pub(super) async fn delete(api: &Api<'_>, current: &Observed) -> Result<()> {
    let id = &current.cloud_id;
    let names: Vec<String> = rules(api, Some(format!("name eq \"{id}{SUFFIX}\"")))
        .await?
        .into_iter()
        .filter_map(|f| f.name)
        .collect();
    try_join_all(names.into_iter().map(|name| {
        api.run(
            api.c
                .firewalls
                .delete()
                .set_project(api.project)
                .set_firewall(name)
                .send(),
        )
    }))
    .await?;
    Ok(())
}

async fn rules(api: &Api<'_>, filter: Option<String>) -> Result<Vec<Firewall>> {
    use google_cloud_gax::paginator::ItemPaginator as _;
    let mut items = api
        .c
        .firewalls
        .list()
        .set_project(api.project)
        .set_or_clear_filter(filter)
        .by_item();
    let mut out = Vec::new();
    while let Some(f) = items.next().await {
        out.push(f.map_err(gcp_err)?);
    }
    Ok(out)
}

/// The firewall id a rule belongs to (`web-1a2b-i0` → `web-1a2b`), if it is named as Chimera
/// names them.
fn owner(rule: &str) -> Option<&str> {
    let (id, suffix) = rule.rsplit_once('-')?;
    let mut chars = suffix.chars();
    let kind = chars.next()?;
    let n = chars.as_str();
    (matches!(kind, 'i' | 'e' | 'n') && !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        .then_some(id)
}

/// Rules grouped into the firewalls they belong to.
fn group(api: &Api<'_>, rules: Vec<Firewall>) -> Vec<Observed> {
    let mut by_id: BTreeMap<String, Vec<Firewall>> = BTreeMap::new();
    for r in rules {
        if let Some(id) = r.name.as_deref().and_then(owner) {
            by_id.entry(id.to_string()).or_default().push(r);
        }
    }
    by_id
        .into_iter()
        .map(|(id, mut rules)| {
            rules.sort_by(|a, b| a.name.cmp(&b.name));
            observe(&id, &rules, api.region)
        })
        .collect()
}

/// The GCP rules the spec asks for, tagged with `tags`.
fn desired(
    api: &Api<'_>,
    spec: &FirewallSpec,
    id: &str,
    tags: &BTreeMap<String, String>,
) -> Vec<Firewall> {
    let base = |name: String, direction: Direction, description: Option<String>| {
        let mut f = Firewall::default();
        f.name = Some(name);
        f.network = Some(api.network_path(&spec.network));
        f.direction = Some(direction);
        f.priority = Some(1000);
        f.target_tags = vec![id.to_string()];
        f.description = Some(
            Described {
                tags: tags.clone(),
                cidr: None,
                rule: description,
                region: Some(api.region.to_string()),
            }
            .text(),
        );
        f.disabled = Some(false);
        f
    };
    let mut out = Vec::new();
    for (direction, letter, rules) in [
        (Direction::Ingress, 'i', &spec.ingress),
        (Direction::Egress, 'e', &spec.egress),
    ] {
        for (n, r) in rules.iter().enumerate() {
            let mut f = base(
                format!("{id}-{letter}{n}"),
                direction.clone(),
                r.description.clone(),
            );
            let mut allowed = Allowed::default();
            allowed.ip_protocol = Some(r.protocol.clone());
            allowed.ports = match (r.from_port, r.to_port) {
                (Some(a), Some(b)) if a == b => vec![a.to_string()],
                (Some(a), Some(b)) => vec![format!("{a}-{b}")],
                _ => Vec::new(),
            };
            f.allowed = vec![allowed];
            if letter == 'i' {
                f.source_ranges = r.cidrs.clone();
            } else {
                f.destination_ranges = r.cidrs.clone();
            }
            out.push(f);
        }
    }
    if out.is_empty() {
        // A firewall with no rules still exists: one disabled rule that would deny nothing more
        // than GCP's implied rules do.
        let mut f = base(format!("{id}-n0"), Direction::Ingress, None);
        let mut denied = Denied::default();
        denied.ip_protocol = Some("all".into());
        f.denied = vec![denied];
        f.source_ranges = vec!["0.0.0.0/0".into()];
        f.priority = Some(65535);
        f.disabled = Some(true);
        out.push(f);
    }
    out
}

/// What Chimera sets on a rule, to tell whether one needs a PATCH.
fn shape(f: &Firewall) -> impl PartialEq + use<> {
    let allowed: Vec<(Option<String>, Vec<String>)> = f
        .allowed
        .iter()
        .map(|a| (a.ip_protocol.clone(), a.ports.clone()))
        .collect();
    (
        allowed,
        f.denied.len(),
        f.source_ranges.clone(),
        f.destination_ranges.clone(),
        f.target_tags.clone(),
        Described::parse(f.description.as_deref()),
        f.disabled.unwrap_or(false),
        f.priority,
    )
}

/// A firewall from its rules (sorted by name; the first one's description holds the tags).
fn observe(id: &str, rules: &[Firewall], region: &str) -> Observed {
    let mut ingress = Vec::new();
    let mut egress = Vec::new();
    for r in rules.iter().filter(|r| !r.disabled.unwrap_or(false)) {
        let egress_rule = r.direction == Some(Direction::Egress);
        let ranges = if egress_rule {
            &r.destination_ranges
        } else {
            &r.source_ranges
        };
        let description = Described::parse(r.description.as_deref()).rule;
        for a in &r.allowed {
            let protocol = a.ip_protocol.clone().unwrap_or_else(|| "all".into());
            let ports: Vec<(Option<u16>, Option<u16>)> = if a.ports.is_empty() {
                vec![(None, None)]
            } else {
                a.ports
                    .iter()
                    .map(|p| match p.split_once('-') {
                        Some((x, y)) => (x.parse().ok(), y.parse().ok()),
                        None => (p.parse().ok(), p.parse().ok()),
                    })
                    .collect()
            };
            for (from_port, to_port) in ports {
                for cidr in ranges {
                    let p = Permission {
                        protocol: protocol.clone(),
                        from_port,
                        to_port,
                        cidr: cidr.clone(),
                        description: description.clone(),
                    };
                    if egress_rule {
                        egress.push(p);
                    } else {
                        ingress.push(p);
                    }
                }
            }
        }
    }
    let first = rules.first();
    let attrs = Attrs {
        network: first.and_then(|r| r.network.as_deref().map(|n| last(n).to_string())),
        ingress: firewall::rules_of(ingress),
        egress: firewall::rules_of(egress),
    };
    let d = first
        .map(|r| Described::parse(r.description.as_deref()))
        .unwrap_or_default();
    // Firewall rules are global: reported in the region the firewall was placed in.
    let region = d.region.as_deref().unwrap_or(region);
    observed(Kind::Firewall, id, region, attrs, Map::new(), d.tags)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_names_belong_to_their_firewall() {
        assert_eq!(owner("web-1a2b3c4d5e-i0"), Some("web-1a2b3c4d5e"));
        assert_eq!(owner("web-1a2b3c4d5e-e12"), Some("web-1a2b3c4d5e"));
        assert_eq!(owner("default-allow-ssh"), None);
        assert_eq!(owner("web-i"), None);
    }
}
