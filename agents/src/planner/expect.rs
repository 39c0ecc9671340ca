//! Machine-checkable expectations of what a proposal's plan must show (`agents/intents.json`),
//! judged against the verifier's plan and a baseline plan of the unedited stack (so the same
//! expectation holds whether the stack was applied or not: creates and deletes are counted as
//! the difference from the baseline).

use std::collections::BTreeMap;

use chimera_plans::Action;
use chimera_plans::plan::{Plan, ResourceChange};
use serde::Deserialize;
use serde_json::Value;

use crate::verify::Verdict;

/// What the plan must show. Kinds not named in `creates` or `deletes` must not gain creates or
/// deletes.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expectation {
    /// More creates than the baseline, per kind.
    #[serde(default)]
    pub creates: BTreeMap<String, i64>,
    /// More deletes than the baseline, per kind.
    #[serde(default)]
    pub deletes: BTreeMap<String, i64>,
    /// Address → attribute (dotted into records; `provider` and `region` too) → value the
    /// resource is created, updated or replaced with; a value `"!x"` means anything but `x`.
    #[serde(default)]
    pub sets: BTreeMap<String, BTreeMap<String, Value>>,
    /// Attribute → value every resource of the plan (but deletes) is created, updated or
    /// replaced with.
    #[serde(default)]
    pub sets_all: BTreeMap<String, Value>,
    /// Address → array attribute → an element with these fields it must contain.
    #[serde(default)]
    pub contains: BTreeMap<String, BTreeMap<String, Value>>,
    /// Address → array attribute → an element with these fields it must no longer contain.
    #[serde(default)]
    pub lacks: BTreeMap<String, BTreeMap<String, Value>>,
    /// Resources whose plan entry must be a no-op or their value as before.
    #[serde(default)]
    pub unchanged: Vec<String>,
    /// The monthly cost goes down by at least this fraction.
    #[serde(default)]
    pub cost_cut: Option<f64>,
    /// Tier → instances the stack keeps at least.
    #[serde(default)]
    pub at_least: BTreeMap<String, usize>,
    /// The planner must refuse the intent (`AgentError::Unsupported`).
    #[serde(default)]
    pub unsupported: bool,
}

fn count(plan: &Plan, action: Action) -> BTreeMap<String, i64> {
    let mut m = BTreeMap::new();
    for c in plan.changes.iter().filter(|c| c.action == action) {
        *m.entry(c.address.kind.as_str().to_string()).or_insert(0) += 1;
    }
    m
}

/// A resource's value after the plan, flattened: `provider`, `region` and its attributes.
fn after(c: &ResourceChange) -> Option<Value> {
    let d = c.desired.as_ref()?;
    let mut m = d.attrs.clone();
    m.insert("provider".into(), Value::String(d.provider.as_str().into()));
    m.insert("region".into(), Value::String(d.region.clone()));
    Some(Value::Object(m))
}

fn get<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(v, |v, k| v.get(k))
}

fn same(got: Option<&Value>, want: &Value) -> bool {
    match want.as_str().and_then(|s| s.strip_prefix('!')) {
        Some(not) => got.is_some_and(|g| g.as_str() != Some(not)),
        None => match (got, want) {
            (Some(g), Value::Number(w)) => g.as_f64() == w.as_f64(),
            (Some(g), w) => g == w,
            (None, _) => false,
        },
    }
}

fn has_element(v: Option<&Value>, pattern: &Value) -> bool {
    let Some(items) = v.and_then(Value::as_array) else {
        return false;
    };
    let Some(p) = pattern.as_object() else {
        return false;
    };
    items
        .iter()
        .any(|i| p.iter().all(|(k, want)| same(i.get(k), want)))
}

/// What the verdict's plan misses of `e` (empty: it does what was asked).
pub fn check(e: &Expectation, baseline: &Plan, verdict: &Verdict) -> Vec<String> {
    let mut out = Vec::new();
    let Some(plan) = &verdict.plan else {
        return vec!["no plan (the draft did not compile)".into()];
    };
    for (action, want, what) in [
        (Action::Create, &e.creates, "creates"),
        (Action::Delete, &e.deletes, "deletes"),
    ] {
        let now = count(plan, action);
        let was = count(baseline, action);
        let kinds: std::collections::BTreeSet<&String> =
            now.keys().chain(was.keys()).chain(want.keys()).collect();
        for k in kinds {
            let d = now.get(k).copied().unwrap_or(0) - was.get(k).copied().unwrap_or(0);
            let w = want.get(k).copied().unwrap_or(0);
            if d != w {
                out.push(format!("{what} {d} more {k} than before, {w} expected"));
            }
        }
    }
    let find = |a: &str| plan.changes.iter().find(|c| c.address.to_string() == a);
    for (addr, attrs) in &e.sets {
        let Some(c) = find(addr) else {
            out.push(format!("{addr} is not in the plan"));
            continue;
        };
        let v = after(c);
        for (k, want) in attrs {
            if c.action == Action::NoOp || !same(v.as_ref().and_then(|v| get(v, k)), want) {
                out.push(format!(
                    "{addr}: {k} is {:?} ({}), {want} expected",
                    v.as_ref().and_then(|v| get(v, k)),
                    c.action.verb()
                ));
            }
        }
    }
    for (k, want) in &e.sets_all {
        for c in plan.changes.iter().filter(|c| c.action != Action::Delete) {
            let v = after(c);
            if c.action == Action::NoOp || !same(v.as_ref().and_then(|v| get(v, k)), want) {
                out.push(format!("{}: {k} is not {want}", c.address));
            }
        }
    }
    for (map, must) in [(&e.contains, true), (&e.lacks, false)] {
        for (addr, attrs) in map {
            let Some(c) = find(addr) else {
                out.push(format!("{addr} is not in the plan"));
                continue;
            };
            let v = after(c);
            for (k, pattern) in attrs {
                let has = has_element(v.as_ref().and_then(|v| get(v, k)), pattern);
                if c.action == Action::NoOp || has != must {
                    out.push(format!(
                        "{addr}: {k} {} {pattern}",
                        if must { "lacks" } else { "still has" }
                    ));
                }
            }
        }
    }
    for addr in &e.unchanged {
        let now = find(addr).and_then(after);
        let was = baseline
            .changes
            .iter()
            .find(|c| c.address.to_string() == *addr)
            .and_then(after);
        if let Some(c) = find(addr)
            && c.action != Action::NoOp
            && now != was
        {
            out.push(format!("{addr} changes ({})", c.action.verb()));
        }
    }
    if let Some(goal) = e.cost_cut {
        match verdict.target {
            Some((_, reached, _)) if reached + 1e-9 >= goal => {}
            Some((_, reached, _)) => out.push(format!(
                "the cost goes down {:.1}%, {:.0}% expected",
                reached * 100.0,
                goal * 100.0
            )),
            None => out.push("the draft has no cost target".into()),
        }
    }
    for (tier, n) in &e.at_least {
        let kept = plan
            .changes
            .iter()
            .filter(|c| {
                c.address.kind == chimera_model::Kind::Instance
                    && c.action != Action::Delete
                    && super::model::in_tier(&c.address.name, tier)
            })
            .count();
        if kept < *n {
            out.push(format!(
                "{kept} `{tier}` instances are left, at least {n} expected"
            ));
        }
    }
    out
}

/// One entry of the intent set.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    pub id: String,
    /// A directory of `examples/`.
    pub example: String,
    pub intent: String,
    /// Policies of `examples/policies/rego/` the stack gets (file names without `.rego`).
    #[serde(default)]
    pub policies: Vec<String>,
    /// Apply the example on the local cloud first (so the plan is against real state).
    #[serde(default)]
    pub apply: bool,
    /// Why the planner is known not to do this one yet (the benchmark counts it as it comes;
    /// the tests check it still fails, so a fix updates the set).
    #[serde(default)]
    pub known_gap: Option<String>,
    /// Simulated utilisation to set after applying: address → [cpu %, memory %].
    #[serde(default)]
    pub utilisation: BTreeMap<String, (f64, f64)>,
    pub expect: Expectation,
}
