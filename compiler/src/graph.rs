//! The resource graph: references become edges, cycles and dangling references become
//! diagnostics, and every resource gets its content hash (Nix-style input addressing).

use chimera_model::codes;
use std::collections::{BTreeMap, BTreeSet, HashMap};

pub use chimera_model::graph::{
    Edge, Graph, GraphDoc, JSON_VERSION, Lifecycle, REDACTED, Resource, to_dot, to_eval_json,
    to_graph_json, to_mermaid,
};
use chimera_model::hash::Hasher;
use chimera_model::{Address, ContentHash, Diagnostic, Piece, Ref, SourceMap};
use petgraph::algo::{tarjan_scc, toposort};
use petgraph::graph::{DiGraph, NodeIndex};
use serde_json::{Map, Value};

use crate::lower::{Lowered, def};

fn collect_refs(v: &Value, path: &str, out: &mut Vec<(String, Result<Ref, String>)>) {
    match v {
        Value::String(s) if Ref::contains_placeholder(s) => match Ref::split(s) {
            Ok(pieces) => out.extend(pieces.into_iter().filter_map(|p| match p {
                Piece::Ref(r) => Some((path.to_string(), Ok(r))),
                Piece::Text(_) => None,
            })),
            Err(e) => out.push((path.to_string(), Err(e))),
        },
        Value::Array(items) => items.iter().for_each(|i| collect_refs(i, path, out)),
        Value::Object(map) => map.values().for_each(|i| collect_refs(i, path, out)),
        _ => {}
    }
}

fn attrs_of(l: &Lowered) -> Map<String, Value> {
    let mut attrs = l.spec.to_attrs();
    attrs.insert(
        "tags".into(),
        Value::Object(
            l.tags
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect(),
        ),
    );
    if !l.native.is_empty() {
        attrs.insert(l.provider.as_str().into(), Value::Object(l.native.clone()));
    }
    attrs
}

/// Builds the graph; reports dangling references, references to unknown outputs, duplicate
/// addresses and cycles.
pub fn build(
    stack: &str,
    mut lowered: Vec<Lowered>,
    sources: &SourceMap,
    diags: &mut Vec<Diagnostic>,
) -> Option<Graph> {
    let before = diags.len();
    let loc = |l: &Lowered, field: &str| l.location(field, sources);
    // Duplicates, reported at every later definition with the first as a label.
    lowered.sort_by(|a, b| a.address.cmp(&b.address));
    let mut first: Option<&Lowered> = None;
    let mut dups = Vec::new();
    for l in &lowered {
        match first {
            Some(f) if f.address == l.address => dups.push(
                Diagnostic::error(codes::DUPLICATE_ADDRESS, "duplicate resource address")
                    .detail(format!(
                        "{} is defined more than once; names must be unique per kind within a stack. Rename one of them",
                        l.address
                    ))
                    .address(&l.address)
                    .at(loc(l, "name"))
                    .label(loc(f, "name"), "first defined here"),
            ),
            _ => first = Some(l),
        }
    }
    diags.extend(dups);
    lowered.dedup_by(|a, b| a.address == b.address);

    let index: HashMap<Address, usize> = lowered
        .iter()
        .enumerate()
        .map(|(i, l)| (l.address.clone(), i))
        .collect();
    let mut graph = DiGraph::<usize, ()>::with_capacity(lowered.len(), lowered.len());
    let nodes: Vec<NodeIndex> = (0..lowered.len()).map(|i| graph.add_node(i)).collect();
    let mut edges = Vec::new();
    let mut deps: Vec<BTreeSet<Address>> = vec![BTreeSet::new(); lowered.len()];
    let attrs: Vec<Map<String, Value>> = lowered.iter().map(attrs_of).collect();
    for (i, l) in lowered.iter().enumerate() {
        let mut refs = Vec::new();
        for (k, v) in &attrs[i] {
            collect_refs(v, k, &mut refs);
        }
        for (field, r) in refs {
            let r = match r {
                Ok(r) => r,
                Err(e) => {
                    diags.push(
                        Diagnostic::error(codes::BAD_REFERENCE, "malformed reference")
                            .detail(e)
                            .address(&l.address)
                            .at(loc(l, &field)),
                    );
                    continue;
                }
            };
            let target = r.address();
            let Some(&j) = index.get(&target) else {
                let similar = lowered
                    .iter()
                    .filter(|o| o.address.kind == r.kind)
                    .map(|o| {
                        (
                            strsim::jaro_winkler(&o.address.name, &r.name),
                            o.address.to_string(),
                        )
                    })
                    .filter(|(s, _)| *s > 0.8)
                    .max_by(|a, b| a.0.total_cmp(&b.0))
                    .map(|(_, a)| format!(" Did you mean {a}?"))
                    .unwrap_or_default();
                diags.push(
                    Diagnostic::error(codes::MISSING_RESOURCE, "reference to a missing resource")
                        .detail(format!(
                            "`{field}` of {} refers to {target}, which is not in the stack's resources; add it to `resources` or fix the name.{similar}",
                            l.address
                        ))
                        .address(&l.address)
                        .at(loc(l, &field)),
                );
                continue;
            };
            if !def(r.kind).outputs.contains(&r.attr.as_str()) {
                diags.push(
                    Diagnostic::error(codes::BAD_REFERENCE, "reference to an unknown output")
                        .detail(format!(
                            "{} has no output `{}`; a {} offers {}",
                            target,
                            r.attr,
                            r.kind,
                            def(r.kind).outputs.join(", ")
                        ))
                        .address(&l.address)
                        .at(loc(l, &field)),
                );
                continue;
            }
            if deps[i].insert(target.clone()) {
                graph.add_edge(nodes[j], nodes[i], ());
            }
            edges.push(Edge {
                from: target,
                to: l.address.clone(),
                attr: field,
            });
        }
    }
    edges.sort();
    edges.dedup();

    // Cycles: every strongly connected component with more than one node, or a self-loop.
    for scc in tarjan_scc(&graph) {
        let cyclic = scc.len() > 1 || graph.contains_edge(scc[0], scc[0]);
        if !cyclic {
            continue;
        }
        let members: BTreeSet<usize> = scc.iter().map(|n| graph[*n]).collect();
        // Edges run dependency → dependent; show "depends on" order: a → b means a needs b.
        let mut path = cycle_path(&graph, &nodes, &members);
        path[1..].reverse();
        let names: Vec<String> = path
            .iter()
            .map(|&i| lowered[i].address.to_string())
            .collect();
        let start = path[0];
        let mut d = Diagnostic::error(codes::CYCLE, "dependency cycle")
            .detail(format!(
                "these resources refer to each other in a cycle: {} → {}; break the cycle by removing one of these references",
                names.join(" → "),
                names[0]
            ))
            .address(&lowered[start].address)
            .at(loc(&lowered[start], "name"));
        for &i in &path[1..] {
            d = d.label(
                loc(&lowered[i], "name"),
                format!("{} is on the cycle", lowered[i].address),
            );
        }
        diags.push(d);
    }
    if diags.len() > before {
        return None;
    }

    // Hashes in dependency order.
    let order = toposort(&graph, None).ok()?;
    let mut hashes: Vec<Option<ContentHash>> = vec![None; lowered.len()];
    for n in order {
        let i = graph[n];
        let l = &lowered[i];
        let mut h = Hasher::new();
        h.part(b"chimera-resource-v1")
            .part(l.address.to_string().as_bytes())
            .part(l.provider.as_str().as_bytes())
            .part(l.native_region.as_bytes())
            .object(&attrs[i]);
        for dep in &deps[i] {
            let j = index[dep];
            h.part(dep.to_string().as_bytes());
            h.part(&hashes[j].map(|x| x.0).unwrap_or_default());
        }
        hashes[i] = Some(h.finish());
    }
    let mut whole = Hasher::new();
    whole.part(b"chimera-graph-v1").part(stack.as_bytes());
    let resources: Vec<Resource> = lowered
        .into_iter()
        .zip(attrs)
        .zip(deps)
        .zip(hashes)
        .map(|(((l, attrs), deps), hash)| {
            let hash = hash.unwrap_or(ContentHash([0; 32]));
            whole.part(&hash.0);
            let native_type = l.spec.native_type().map(str::to_string);
            Resource {
                address: l.address,
                provider: l.provider,
                region: l.region,
                native_region: l.native_region,
                attrs,
                lifecycle: l.lifecycle,
                sensitive: l.sensitive,
                monthly_cost: l.monthly_cost,
                native_type,
                deps,
                hash,
            }
        })
        .collect();
    Some(Graph {
        stack: stack.to_string(),
        resources,
        edges,
        graph,
        hash: whole.finish(),
        provider_settings: Value::Null,
        reconcile: Value::Null,
        placements: Vec::new(),
        moved: Vec::new(),
    })
}

/// One concrete cycle through the members of a strongly connected component, found by DFS.
fn cycle_path(
    graph: &DiGraph<usize, ()>,
    nodes: &[NodeIndex],
    members: &BTreeSet<usize>,
) -> Vec<usize> {
    let start = *members.iter().next().unwrap_or(&0);
    // BFS from start's successors back to start, within the component.
    let mut prev: BTreeMap<usize, usize> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    let mut seen = BTreeSet::from([start]);
    while let Some(u) = queue.pop_front() {
        let mut succ: Vec<usize> = graph
            .neighbors(nodes[u])
            .map(|n| graph[n])
            .filter(|v| members.contains(v))
            .collect();
        succ.sort();
        for v in succ {
            if v == start {
                let mut path = vec![u];
                let mut cur = u;
                while cur != start {
                    cur = prev[&cur];
                    path.push(cur);
                }
                path.reverse();
                return path;
            }
            if seen.insert(v) {
                prev.insert(v, u);
                queue.push_back(v);
            }
        }
    }
    members.iter().copied().collect()
}
