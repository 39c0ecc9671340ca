//! The desired-state graph as every later stage sees it: resources with canonical attributes,
//! dependencies and content hashes. The compiler builds it; the planner, the caches and the
//! renderers read it. Pure data: no I/O.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;

use petgraph::graph::{DiGraph, NodeIndex};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{Address, ContentHash, Kind, ProviderName};

/// Lifecycle rules of a resource.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lifecycle {
    pub prevent_destroy: bool,
    pub create_before_destroy: bool,
    pub ignore_changes: Vec<String>,
}

/// Shown instead of a sensitive value, everywhere.
pub const REDACTED: &str = "(sensitive)";

/// A node of the graph: a fully lowered resource.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Resource {
    pub address: Address,
    pub provider: ProviderName,
    pub region: String,
    pub native_region: String,
    /// Canonical attributes (kind-specific spec, tags, provider escape hatch); references as
    /// placeholder strings.
    pub attrs: Map<String, Value>,
    pub lifecycle: Lifecycle,
    pub sensitive: BTreeSet<String>,
    pub monthly_cost: f64,
    /// The provider-native type the catalog resolved (an instance type, a disk type).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub native_type: Option<String>,
    pub deps: BTreeSet<Address>,
    pub hash: ContentHash,
}

impl Resource {
    /// Attributes with sensitive values replaced by [`REDACTED`].
    pub fn redacted_attrs(&self) -> Map<String, Value> {
        let mut out = self.attrs.clone();
        for key in &self.sensitive {
            if let Some(v) = out.get_mut(key)
                && !v.is_null()
            {
                *v = Value::String(REDACTED.into());
            }
        }
        out
    }
}

/// An edge: `from` must exist before `to`; `attr` is the attribute of `to` that refers to it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Edge {
    pub from: Address,
    pub to: Address,
    pub attr: String,
}

/// How `provider = 'cheapest` placed one group of connected resources (resources joined by
/// references share a provider): every cloud considered and why the winner won.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Placement {
    /// The group's resources, in address order.
    pub resources: Vec<Address>,
    /// The cloud chosen; `None` when no cloud offers everything the group needs.
    pub chosen: Option<ProviderName>,
    /// The clouds considered: those able to host the group cheapest first, then the others
    /// with what they lack.
    pub candidates: Vec<Candidate>,
    /// Why the winner won, in a sentence.
    pub reason: String,
}

/// One cloud `'cheapest` considered for a group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    pub provider: ProviderName,
    /// The group's monthly list price (USD) on this cloud; `None` when it cannot host it.
    pub monthly: Option<f64>,
    /// What this cloud lacks (a region, size or image), when it cannot host the group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unavailable: Option<String>,
}

/// A `moved` entry as compiled: what state knows as `from` is now the resource `to`. Chains
/// are resolved (a to b, b to c gives a to c and b to c), so `to` is always a resource of the
/// graph and never another entry's `from`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Moved {
    pub from: Address,
    pub to: Address,
}

/// The compiled stack.
#[derive(Debug, Clone)]
pub struct Graph {
    pub stack: String,
    /// Sorted by address.
    pub resources: Vec<Resource>,
    pub edges: Vec<Edge>,
    pub graph: DiGraph<usize, ()>,
    /// Hash of the whole desired state: every resource hash in address order.
    pub hash: ContentHash,
    /// The stack's `providers` settings (JSON; null when absent).
    pub provider_settings: Value,
    /// The stack's `reconcile` settings (JSON; null when absent): how `chimera serve` heals
    /// its drift.
    pub reconcile: Value,
    /// How `'cheapest` placed each group that asked for it (not part of the hash: the
    /// placement itself is, through each resource's provider).
    pub placements: Vec<Placement>,
    /// The stack's `moved` entries, chains resolved, sorted by `from` (part of the hash when
    /// there are any: a plan memo must not hide a move).
    pub moved: Vec<Moved>,
}

/// A graph without its petgraph index: what the evaluation cache stores.
#[derive(Serialize, Deserialize)]
pub struct GraphDoc {
    pub stack: String,
    pub resources: Vec<Resource>,
    pub edges: Vec<Edge>,
    pub hash: ContentHash,
    pub provider_settings: Value,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub reconcile: Value,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub placements: Vec<Placement>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub moved: Vec<Moved>,
}

/// A [`GraphDoc`] of a graph, borrowed: what [`Graph::to_doc_json`] writes.
#[derive(Serialize)]
struct GraphDocRef<'a> {
    stack: &'a str,
    resources: &'a [Resource],
    edges: &'a [Edge],
    hash: ContentHash,
    provider_settings: &'a Value,
    #[serde(skip_serializing_if = "Value::is_null")]
    reconcile: &'a Value,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    placements: &'a [Placement],
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    moved: &'a [Moved],
}

impl From<GraphDoc> for Graph {
    /// Rebuilds the dependency index from each resource's `deps`.
    fn from(d: GraphDoc) -> Graph {
        let mut graph = DiGraph::with_capacity(d.resources.len(), d.edges.len());
        let nodes: Vec<NodeIndex> = (0..d.resources.len()).map(|i| graph.add_node(i)).collect();
        let index: HashMap<&Address, usize> = d
            .resources
            .iter()
            .enumerate()
            .map(|(i, r)| (&r.address, i))
            .collect();
        for (i, r) in d.resources.iter().enumerate() {
            for dep in &r.deps {
                if let Some(&j) = index.get(dep) {
                    graph.add_edge(nodes[j], nodes[i], ());
                }
            }
        }
        Graph {
            stack: d.stack,
            resources: d.resources,
            edges: d.edges,
            graph,
            hash: d.hash,
            provider_settings: d.provider_settings,
            reconcile: d.reconcile,
            placements: d.placements,
            moved: d.moved,
        }
    }
}

impl Graph {
    /// The graph as a [`GraphDoc`] in JSON (the evaluation cache's file; what a child process
    /// that compiled a stack hands back), without copying it.
    pub fn to_doc_json(&self) -> serde_json::Result<Vec<u8>> {
        serde_json::to_vec(&GraphDocRef {
            stack: &self.stack,
            resources: &self.resources,
            edges: &self.edges,
            hash: self.hash,
            provider_settings: &self.provider_settings,
            reconcile: &self.reconcile,
            placements: &self.placements,
            moved: &self.moved,
        })
    }

    /// A graph from [`Graph::to_doc_json`]'s bytes.
    pub fn from_doc_json(bytes: &[u8]) -> serde_json::Result<Graph> {
        serde_json::from_slice::<GraphDoc>(bytes).map(Graph::from)
    }

    pub fn get(&self, address: &Address) -> Option<&Resource> {
        self.resources
            .binary_search_by(|r| r.address.cmp(address))
            .ok()
            .map(|i| &self.resources[i])
    }
}

// ---- renderings -------------------------------------------------------------------------

#[derive(Serialize)]
struct JsonResource<'a> {
    address: String,
    kind: Kind,
    name: &'a str,
    provider: ProviderName,
    region: &'a str,
    native_region: &'a str,
    attrs: Map<String, Value>,
    lifecycle: &'a Lifecycle,
    #[serde(skip_serializing_if = "BTreeSet::is_empty")]
    sensitive: &'a BTreeSet<String>,
    deps: Vec<String>,
    monthly_cost: f64,
    hash: String,
}

fn json_resource(r: &Resource) -> JsonResource<'_> {
    JsonResource {
        address: r.address.to_string(),
        kind: r.address.kind,
        name: &r.address.name,
        provider: r.provider,
        region: &r.region,
        native_region: &r.native_region,
        attrs: r.redacted_attrs(),
        lifecycle: &r.lifecycle,
        sensitive: &r.sensitive,
        deps: r.deps.iter().map(|d| d.to_string()).collect(),
        monthly_cost: (r.monthly_cost * 100.0).round() / 100.0,
        hash: r.hash.to_hex(),
    }
}

/// Version of the JSON documents below (docs/json.md).
pub const JSON_VERSION: u32 = 1;

/// `chimera eval --json`: the lowered resources, and the `moved` entries when there are any.
pub fn to_eval_json(g: &Graph) -> Value {
    let mut doc = serde_json::json!({
        "format_version": JSON_VERSION,
        "stack": g.stack,
        "hash": g.hash.to_hex(),
        "resources": g.resources.iter().map(json_resource).collect::<Vec<_>>(),
    });
    if !g.moved.is_empty() {
        doc["moved"] = serde_json::to_value(&g.moved).unwrap_or_default();
    }
    doc
}

/// `chimera graph --format json`: nodes and edges.
pub fn to_graph_json(g: &Graph) -> Value {
    serde_json::json!({
        "format_version": JSON_VERSION,
        "stack": g.stack,
        "hash": g.hash.to_hex(),
        "nodes": g.resources.iter().map(|r| serde_json::json!({
            "address": r.address.to_string(),
            "provider": r.provider,
            "hash": r.hash.to_hex(),
        })).collect::<Vec<_>>(),
        "edges": g.edges,
    })
}

fn quote_dot(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

pub fn to_dot(g: &Graph) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "digraph {} {{", quote_dot(&g.stack));
    let _ = writeln!(out, "  rankdir=LR;");
    let _ = writeln!(out, "  node [shape=box, fontname=\"monospace\"];");
    for r in &g.resources {
        let _ = writeln!(
            out,
            "  {} [label={}];",
            quote_dot(&r.address.to_string()),
            quote_dot(&format!("{}\\n{}", r.address, r.provider))
        );
    }
    for e in &g.edges {
        let _ = writeln!(
            out,
            "  {} -> {} [label={}];",
            quote_dot(&e.from.to_string()),
            quote_dot(&e.to.to_string()),
            quote_dot(&e.attr)
        );
    }
    out.push_str("}\n");
    out
}

/// Mermaid ids must be simple; addresses are mapped to n0, n1, …
pub fn to_mermaid(g: &Graph) -> String {
    let mut out = String::from("flowchart LR\n");
    let id: HashMap<&Address, usize> = g
        .resources
        .iter()
        .enumerate()
        .map(|(i, r)| (&r.address, i))
        .collect();
    for (i, r) in g.resources.iter().enumerate() {
        let label = format!("{} ({})", r.address, r.provider).replace('"', "#quot;");
        let _ = writeln!(out, "  n{i}[\"{label}\"]");
    }
    for e in &g.edges {
        let _ = writeln!(out, "  n{} -->|{}| n{}", id[&e.from], e.attr, id[&e.to]);
    }
    out
}
