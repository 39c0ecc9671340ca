//! The planner: desired graph + prior state → a plan of create / update / replace / delete.
//!
//! Pure: no I/O. A resource whose content hash equals the stored one is a no-op without any
//! attribute diff (the fast path that keeps no-op plans of big fleets a hash comparison).

use chimera_model::codes;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use chimera_model::hash::Hasher;
use chimera_model::kinds::force_new_reason;
use chimera_model::{Address, ContentHash, Diagnostic, ProviderName, Ref, StateResource};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use chimera_model::graph::{Graph, Lifecycle, REDACTED, Resource};

/// Version of the plan document (docs/json.md).
pub const PLAN_FORMAT: u32 = 2;

/// Shown for a value that only exists once a dependency has been applied.
pub const KNOWN_AFTER_APPLY: &str = "(known after apply)";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    Create,
    Update,
    Replace,
    Delete,
    NoOp,
}

impl Action {
    pub fn symbol(self, create_before_destroy: bool) -> &'static str {
        match self {
            Action::Create => "+",
            Action::Update => "~",
            Action::Replace if create_before_destroy => "+/-",
            Action::Replace => "-/+",
            Action::Delete => "-",
            Action::NoOp => " ",
        }
    }

    pub fn verb(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Update => "update",
            Action::Replace => "replace",
            Action::Delete => "delete",
            Action::NoOp => "no-op",
        }
    }
}

/// What a create or update sends to the provider.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Desired {
    pub provider: ProviderName,
    pub region: String,
    pub native_region: String,
    pub attrs: Map<String, Value>,
    pub sensitive: Vec<String>,
    pub lifecycle: Lifecycle,
    pub deps: Vec<Address>,
    pub hash: ContentHash,
    /// The catalog's monthly list price (USD) when it was compiled, so a plan can be priced
    /// without recompiling (0 for rows restored from state, which do not record it).
    #[serde(default)]
    pub monthly_cost: f64,
    /// The provider-native type the catalog resolved (instance or disk type), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub native_type: Option<String>,
}

/// One attribute's change. Sensitive values are never stored here: `before`/`after` hold
/// [`REDACTED`] instead.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttrChange {
    pub attr: String,
    pub before: Option<Value>,
    pub after: Option<Value>,
    pub force_new: bool,
    pub sensitive: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResourceChange {
    pub address: Address,
    pub action: Action,
    pub create_before_destroy: bool,
    pub changes: Vec<AttrChange>,
    /// Why this action (e.g. "`cidr` forces replacement").
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
    /// For create, update and replace: what to apply.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub desired: Option<Desired>,
    /// For update, replace and delete: what state held.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prior: Option<StateResource>,
    /// The address state knew this resource by, when a `moved` entry renames it: `prior` is
    /// that row under the new address, and applying the plan renames it in state (with no
    /// provider call unless `action` asks for one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moved_from: Option<Address>,
}

impl ResourceChange {
    /// Whether applying this change does anything: an action, or a move.
    pub fn is_change(&self) -> bool {
        self.action != Action::NoOp || self.moved_from.is_some()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub format_version: u32,
    pub stack: String,
    /// The stack's lineage in state, if it exists yet.
    pub lineage: Option<String>,
    /// The state generation this plan was made against (0: none yet).
    pub prior_serial: u64,
    pub desired_hash: ContentHash,
    /// A destroy plan deletes everything.
    pub destroy: bool,
    /// Every resource in desired or prior state, by address (no-ops included).
    pub changes: Vec<ResourceChange>,
    /// The stack's `providers` settings at plan time (applied with the plan).
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub provider_settings: Value,
    /// What the refresh before planning found changed outside Chimera (shown apart from the
    /// changes; the changes already account for it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drift: Vec<crate::drift::Drift>,
    /// How `'cheapest` placed each group that asked for it, with the candidates' prices.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub placements: Vec<chimera_model::graph::Placement>,
}

impl Plan {
    pub fn counts(&self) -> BTreeMap<Action, usize> {
        let mut m = BTreeMap::new();
        for c in &self.changes {
            *m.entry(c.action).or_insert(0) += 1;
        }
        m
    }

    /// Whether applying the plan does anything: an action, or a move.
    pub fn has_changes(&self) -> bool {
        self.changes.iter().any(ResourceChange::is_change)
    }

    /// How many resources the plan moves to a new address.
    pub fn moves(&self) -> usize {
        self.changes
            .iter()
            .filter(|c| c.moved_from.is_some())
            .count()
    }

    /// Integrity hash over the canonical plan, stored in plan files.
    pub fn digest(&self) -> ContentHash {
        // Plan holds no HashMap, so its JSON is canonical as serialised.
        let mut h = Hasher::new();
        h.part(b"chimera-plan-v2").serialized(self);
        h.finish()
    }
}

/// Prior state as the planner sees it.
pub struct Prior<'a> {
    pub lineage: Option<String>,
    pub serial: u64,
    pub resources: &'a [StateResource],
}

fn desired_of(r: &Resource) -> Desired {
    Desired {
        provider: r.provider,
        region: r.region.clone(),
        native_region: r.native_region.clone(),
        attrs: r.attrs.clone(),
        sensitive: r.sensitive.iter().cloned().collect(),
        lifecycle: r.lifecycle.clone(),
        deps: r.deps.iter().cloned().collect(),
        hash: r.hash,
        monthly_cost: r.monthly_cost,
        native_type: r.native_type.clone(),
    }
}

/// Hash of a sensitive value, as state stores it instead of the value.
pub fn sensitive_digest(v: &Value) -> Value {
    let mut h = Hasher::new();
    h.part(b"chimera-sensitive-v1").value(v);
    serde_json::json!({ "$sensitive": h.finish().to_hex() })
}

/// The attributes as state stores them: sensitive values replaced by their digest.
pub fn attrs_for_state(attrs: &Map<String, Value>, sensitive: &[String]) -> Map<String, Value> {
    let mut out = attrs.clone();
    for k in sensitive {
        if let Some(v) = out.get_mut(k)
            && !v.is_null()
        {
            *v = sensitive_digest(v);
        }
    }
    out
}

fn shown(v: Option<&Value>, sensitive: bool) -> Option<Value> {
    match v {
        None | Some(Value::Null) => None,
        Some(_) if sensitive => Some(Value::String(REDACTED.into())),
        Some(v) => Some(v.clone()),
    }
}

/// A value as a plan shows it: references to resources being (re)created become "(known after
/// apply)", references to existing resources their recorded output, the rest as is.
fn display(
    v: &Value,
    pending: &BTreeSet<Address>,
    known: &HashMap<&Address, &StateResource>,
) -> Value {
    match v {
        Value::String(s) if Ref::contains_placeholder(s) => {
            let Ok(pieces) = Ref::split(s) else {
                return v.clone();
            };
            let mut out = String::new();
            for p in &pieces {
                match p {
                    chimera_model::Piece::Text(t) => out.push_str(t),
                    chimera_model::Piece::Ref(r) => {
                        if pending.contains(&r.address()) {
                            return Value::String(KNOWN_AFTER_APPLY.into());
                        }
                        let Some(value) = known
                            .get(&r.address())
                            .and_then(|row| row.outputs.get(&r.attr))
                        else {
                            return v.clone();
                        };
                        if pieces.len() == 1 {
                            return value.clone();
                        }
                        match value {
                            Value::String(x) => out.push_str(x),
                            Value::Null => {}
                            other => out.push_str(&other.to_string()),
                        }
                    }
                }
            }
            Value::String(out)
        }
        Value::Array(items) => {
            Value::Array(items.iter().map(|i| display(i, pending, known)).collect())
        }
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, i)| (k.clone(), display(i, pending, known)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Another compiled version of the stack as if it were state: what `preview` diffs against.
/// Nothing is applied, so every output another resource refers to is shown as the reference
/// itself, e.g. `(network.main.id)`.
pub fn prior_from_graph(base: &Graph, referenced_by: &[&Graph]) -> Vec<StateResource> {
    let mut outputs: HashMap<Address, Map<String, Value>> = HashMap::new();
    for g in referenced_by.iter().copied().chain([base]) {
        for r in &g.resources {
            for v in r.attrs.values() {
                collect_refs(v, &mut |addr, attr| {
                    outputs
                        .entry(addr)
                        .or_default()
                        .entry(attr.to_string())
                        .or_insert(Value::Null);
                });
            }
        }
    }
    base.resources
        .iter()
        .map(|r| {
            let sensitive: Vec<String> = r.sensitive.iter().cloned().collect();
            let mut out = outputs.remove(&r.address).unwrap_or_default();
            for (attr, v) in out.iter_mut() {
                *v = Value::String(format!("({}.{attr})", r.address));
            }
            StateResource {
                address: r.address.clone(),
                provider: r.provider,
                region: r.region.clone(),
                native_region: r.native_region.clone(),
                attrs: attrs_for_state(&r.attrs, &sensitive),
                sensitive,
                hash: r.hash,
                cloud_id: String::new(),
                outputs: out,
                deps: r.deps.iter().cloned().collect(),
                prevent_destroy: r.lifecycle.prevent_destroy,
            }
        })
        .collect()
}

fn collect_refs(v: &Value, f: &mut impl FnMut(Address, &str)) {
    match v {
        Value::String(s) if Ref::contains_placeholder(s) => {
            if let Ok(pieces) = Ref::split(s) {
                for p in pieces {
                    if let chimera_model::Piece::Ref(r) = p {
                        f(r.address(), &r.attr);
                    }
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|i| collect_refs(i, f)),
        Value::Object(m) => m.values().for_each(|i| collect_refs(i, f)),
        _ => {}
    }
}

fn refs_in(v: &Value, out: &mut BTreeSet<Address>) {
    collect_refs(v, &mut |a, _| {
        out.insert(a);
    });
}

/// A resource as a plan wants it.
#[derive(Debug, Clone)]
pub struct Target {
    pub address: Address,
    pub desired: Desired,
}

/// Plans `desired` against `prior`. `desired = None` plans a destroy of everything.
pub fn plan(desired: Option<&Graph>, stack: &str, prior: &Prior) -> Result<Plan, Vec<Diagnostic>> {
    // Desired resources in dependency order, so a dependency's replacement is known before its
    // dependents are planned.
    let order: Vec<Target> = match desired {
        Some(g) => {
            let order: Vec<&Resource> = petgraph::algo::toposort(&g.graph, None)
                .map(|o| o.into_iter().map(|n| &g.resources[g.graph[n]]).collect())
                .unwrap_or_else(|_| g.resources.iter().collect());
            order
                .into_iter()
                .map(|r| Target {
                    address: r.address.clone(),
                    desired: desired_of(r),
                })
                .collect()
        }
        None => Vec::new(),
    };
    let hash = desired.map(|g| g.hash).unwrap_or(ContentHash([0; 32]));
    let moved = desired.map(|g| g.moved.as_slice()).unwrap_or_default();
    let mut plan = plan_moved(order, stack, prior, hash, desired.is_none(), moved)?;
    plan.provider_settings = desired
        .map(|g| g.provider_settings.clone())
        .unwrap_or(Value::Null);
    plan.placements = desired.map(|g| g.placements.clone()).unwrap_or_default();
    Ok(plan)
}

fn desired_from(r: Resource) -> Desired {
    Desired {
        provider: r.provider,
        region: r.region,
        native_region: r.native_region,
        attrs: r.attrs,
        sensitive: r.sensitive.into_iter().collect(),
        lifecycle: r.lifecycle,
        deps: r.deps.into_iter().collect(),
        hash: r.hash,
        monthly_cost: r.monthly_cost,
        native_type: r.native_type,
    }
}

/// As [`plan`] for a desired graph that is not needed afterwards: its resources move into the
/// plan instead of being copied (a 100k-resource plan holds one copy of the desired state, not
/// two).
pub fn plan_owned(desired: Graph, prior: &Prior) -> Result<Plan, Vec<Diagnostic>> {
    let order: Vec<usize> = petgraph::algo::toposort(&desired.graph, None)
        .map(|o| o.into_iter().map(|n| desired.graph[n]).collect())
        .unwrap_or_else(|_| (0..desired.resources.len()).collect());
    let Graph {
        stack,
        resources,
        hash,
        provider_settings,
        placements,
        moved,
        ..
    } = desired;
    let mut slots: Vec<Option<Resource>> = resources.into_iter().map(Some).collect();
    let targets: Vec<Target> = order
        .into_iter()
        .filter_map(|i| slots.get_mut(i).and_then(Option::take))
        .map(|r| Target {
            address: r.address.clone(),
            desired: desired_from(r),
        })
        .collect();
    drop(slots);
    let mut plan = plan_moved(targets, &stack, prior, hash, false, &moved)?;
    plan.provider_settings = provider_settings;
    plan.placements = placements;
    Ok(plan)
}

/// As [`plan_targets`], after applying the stack's `moved` entries to the prior rows
/// ([`crate::moves`]): each moved resource's change says where it moved from.
pub fn plan_moved(
    order: Vec<Target>,
    stack: &str,
    prior: &Prior,
    desired_hash: ContentHash,
    destroy: bool,
    moved: &[chimera_model::graph::Moved],
) -> Result<Plan, Vec<Diagnostic>> {
    let Some(m) = crate::moves::apply(prior.resources, moved)? else {
        return plan_targets(order, stack, prior, desired_hash, destroy);
    };
    let renamed = Prior {
        lineage: prior.lineage.clone(),
        serial: prior.serial,
        resources: &m.rows,
    };
    let mut plan = plan_targets(order, stack, &renamed, desired_hash, destroy)?;
    for c in &mut plan.changes {
        c.moved_from = m.moved_from.get(&c.address).cloned();
    }
    Ok(plan)
}

/// Plans a set of targets, given in dependency order (dependencies first).
pub fn plan_targets(
    order: Vec<Target>,
    stack: &str,
    prior: &Prior,
    desired_hash: ContentHash,
    destroy: bool,
) -> Result<Plan, Vec<Diagnostic>> {
    let prior_by: HashMap<&Address, &StateResource> =
        prior.resources.iter().map(|r| (&r.address, r)).collect();
    let mut changes: BTreeMap<Address, ResourceChange> = BTreeMap::new();
    let mut diags = Vec::new();

    // Addresses whose outputs will change (created or replaced).
    let mut pending: BTreeSet<Address> = BTreeSet::new();
    // Targets are consumed: each change takes its target's desired value (no copy).
    for r in order {
        let sensitive: BTreeSet<&str> = r.desired.sensitive.iter().map(String::as_str).collect();
        let Some(old) = prior_by.get(&r.address) else {
            pending.insert(r.address.clone());
            let changes_list = r
                .desired
                .attrs
                .iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| AttrChange {
                    attr: k.clone(),
                    before: None,
                    after: shown(
                        Some(&display(v, &pending, &prior_by)),
                        sensitive.contains(k.as_str()),
                    ),
                    force_new: false,
                    sensitive: sensitive.contains(k.as_str()),
                })
                .collect();
            changes.insert(
                r.address.clone(),
                ResourceChange {
                    address: r.address.clone(),
                    action: Action::Create,
                    create_before_destroy: r.desired.lifecycle.create_before_destroy,
                    changes: changes_list,
                    reasons: Vec::new(),
                    desired: Some(r.desired),
                    prior: None,
                    moved_from: None,
                },
            );
            continue;
        };
        // Fast path: same content hash and no dependency being recreated.
        let mut deps_pending = BTreeSet::new();
        for dep in &r.desired.deps {
            if pending.contains(dep) {
                deps_pending.insert(dep.clone());
            }
        }
        if old.hash == r.desired.hash
            && deps_pending.is_empty()
            && old.provider == r.desired.provider
        {
            changes.insert(
                r.address.clone(),
                ResourceChange {
                    address: r.address.clone(),
                    action: Action::NoOp,
                    create_before_destroy: r.desired.lifecycle.create_before_destroy,
                    changes: Vec::new(),
                    reasons: Vec::new(),
                    desired: Some(r.desired),
                    prior: Some((*old).clone()),
                    moved_from: None,
                },
            );
            continue;
        }
        let stored_new = attrs_for_state(&r.desired.attrs, &r.desired.sensitive.to_vec());
        let mut keys: BTreeSet<&String> = stored_new.keys().collect();
        keys.extend(old.attrs.keys());
        let mut list = Vec::new();
        let mut reasons = Vec::new();
        let mut replace = false;
        if old.provider != r.desired.provider || old.native_region != r.desired.native_region {
            replace = true;
            reasons.push(format!(
                "moving from {} {} to {} {} forces replacement",
                old.provider, old.native_region, r.desired.provider, r.desired.native_region
            ));
        }
        for k in keys {
            if r.desired.lifecycle.ignore_changes.iter().any(|i| i == k) {
                continue;
            }
            let before = old.attrs.get(k).filter(|v| !v.is_null());
            let after = stored_new.get(k).filter(|v| !v.is_null());
            let mut refs = BTreeSet::new();
            if let Some(a) = after {
                refs_in(a, &mut refs);
            }
            let dep_recreated = refs.iter().any(|a| deps_pending.contains(a));
            if before == after && !dep_recreated {
                continue;
            }
            let why = force_new_reason(r.address.kind, r.desired.provider, k, before, after);
            let fnew = why.is_some();
            if let Some(why) = why {
                replace = true;
                reasons.push(why);
            }
            let is_sensitive =
                sensitive.contains(k.as_str()) || old.sensitive.iter().any(|s| s == k);
            list.push(AttrChange {
                attr: k.clone(),
                before: shown(
                    before
                        .map(|b| display(b, &BTreeSet::new(), &prior_by))
                        .as_ref(),
                    is_sensitive,
                ),
                after: shown(
                    r.desired
                        .attrs
                        .get(k)
                        .map(|v| display(v, &pending, &prior_by))
                        .as_ref(),
                    is_sensitive,
                ),
                force_new: fnew,
                sensitive: is_sensitive,
            });
        }
        let action = if replace {
            if r.desired.lifecycle.prevent_destroy {
                diags.push(prevent_destroy_diag(&r.address, "replace"));
            }
            pending.insert(r.address.clone());
            Action::Replace
        } else if list.is_empty() {
            Action::NoOp
        } else {
            Action::Update
        };
        changes.insert(
            r.address.clone(),
            ResourceChange {
                address: r.address.clone(),
                action,
                create_before_destroy: r.desired.lifecycle.create_before_destroy,
                changes: list,
                reasons,
                desired: Some(r.desired),
                prior: Some((*old).clone()),
                moved_from: None,
            },
        );
    }
    // Deletions: in prior state, not desired.
    for old in prior.resources {
        if changes.contains_key(&old.address) {
            continue;
        }
        if old.prevent_destroy {
            diags.push(prevent_destroy_diag(&old.address, "delete"));
        }
        let changes_list = old
            .attrs
            .iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| {
                let s = old.sensitive.iter().any(|x| x == k);
                AttrChange {
                    attr: k.clone(),
                    before: shown(Some(&display(v, &BTreeSet::new(), &prior_by)), s),
                    after: None,
                    force_new: false,
                    sensitive: s,
                }
            })
            .collect();
        changes.insert(
            old.address.clone(),
            ResourceChange {
                address: old.address.clone(),
                action: Action::Delete,
                create_before_destroy: false,
                changes: changes_list,
                reasons: Vec::new(),
                desired: None,
                prior: Some(old.clone()),
                moved_from: None,
            },
        );
    }
    if !diags.is_empty() {
        return Err(diags);
    }
    Ok(Plan {
        format_version: PLAN_FORMAT,
        stack: stack.to_string(),
        lineage: prior.lineage.clone(),
        prior_serial: prior.serial,
        desired_hash,
        destroy,
        changes: changes.into_values().collect(),
        provider_settings: Value::Null,
        drift: Vec::new(),
        placements: Vec::new(),
    })
}

fn prevent_destroy_diag(address: &Address, what: &str) -> Diagnostic {
    Diagnostic::error(codes::PREVENT_DESTROY, "plan would destroy a protected resource")
        .detail(format!(
            "{address} has `lifecycle.prevent_destroy = true`, and this plan would {what} it; remove the protection first if that is really intended, or undo the change that requires it"
        ))
        .address(address)
}

/// The targets that bring a stack back to the resources it had at some generation, in
/// dependency order. [`unrestorable`] then says which changes would need a sensitive value that
/// state keeps only as a digest.
pub fn rollback_targets(rows: &[StateResource]) -> Vec<Target> {
    let by: BTreeMap<&Address, &StateResource> = rows.iter().map(|r| (&r.address, r)).collect();
    let mut done: BTreeSet<&Address> = BTreeSet::new();
    let mut order = Vec::with_capacity(rows.len());
    // Kahn's algorithm over recorded dependencies, in address order for determinism. Over the
    // distinct addresses: rows that repeat one (a damaged fixture) must not keep it looping.
    while order.len() < by.len() {
        let before = order.len();
        for (addr, row) in &by {
            if done.contains(addr) {
                continue;
            }
            if row
                .deps
                .iter()
                .all(|d| done.contains(d) || !by.contains_key(d))
            {
                done.insert(addr);
                order.push(target_of(row));
            }
        }
        if order.len() == before {
            // A cycle cannot be recorded; take the rest in address order rather than loop.
            for (addr, row) in &by {
                if done.insert(addr) {
                    order.push(target_of(row));
                }
            }
        }
    }
    order
}

/// The targets that heal drift: the current generation's resources, each taken from the
/// compiled configuration when the configuration still says exactly what was applied (same
/// content hash: its sensitive values are at hand), and from the state row otherwise (a
/// configuration change not applied yet is not the daemon's to apply).
pub fn heal_targets(rows: &[StateResource], config: Option<&Graph>) -> Vec<Target> {
    let mut targets = rollback_targets(rows);
    if let Some(g) = config {
        for t in &mut targets {
            if let Some(r) = g.get(&t.address).filter(|r| r.hash == t.desired.hash) {
                t.desired = desired_of(r);
            }
        }
    }
    targets
}

fn target_of(row: &StateResource) -> Target {
    Target {
        address: row.address.clone(),
        desired: Desired {
            provider: row.provider,
            region: row.region.clone(),
            native_region: row.native_region.clone(),
            attrs: row.attrs.clone(),
            sensitive: row.sensitive.clone(),
            lifecycle: Lifecycle {
                prevent_destroy: row.prevent_destroy,
                ..Default::default()
            },
            deps: row.deps.clone(),
            hash: row.hash,
            monthly_cost: 0.0,
            native_type: None,
        },
    }
}

/// Changes of a rollback plan that would need a sensitive value state only has a digest of.
pub fn unrestorable(plan: &Plan) -> Vec<Diagnostic> {
    plan.changes
        .iter()
        .filter(|c| matches!(c.action, Action::Create | Action::Update | Action::Replace))
        .filter_map(|c| {
            let d = c.desired.as_ref()?;
            let lost: Vec<&String> = d
                .sensitive
                .iter()
                .filter(|k| d.attrs.get(*k).and_then(|v| v.get("$sensitive")).is_some())
                .collect();
            (!lost.is_empty()).then(|| {
                Diagnostic::error(codes::UNRESTORABLE, "cannot restore a sensitive value")
                    .detail(format!(
                        "rolling back {} needs `{}`, which state keeps only as a digest; check out that generation's configuration and apply it instead",
                        c.address,
                        lost.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("`, `")
                    ))
                    .address(&c.address)
            })
        })
        .collect()
}
