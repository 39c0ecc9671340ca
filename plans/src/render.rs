//! Plan renderings: text (optionally coloured, with line diffs of multi-line strings through
//! `similar`) and JSON. Sensitive values never reach here: the plan holds `(sensitive)`.

use std::fmt::Write as _;

use serde_json::Value;

use chimera_model::graph::Placement;

use crate::cost::{self, PlanCost, money, percent, signed_money};
use crate::drift::{Drift, DriftKind};
use crate::noop::NoopPlan;
use crate::plan::{Action, Plan, ResourceChange};

struct Style {
    color: bool,
}

impl Style {
    fn paint(&self, code: &str, s: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }
    fn action(&self, a: Action, s: &str) -> String {
        let code = match a {
            Action::Create => "32",
            Action::Update => "33",
            Action::Replace => "35",
            Action::Delete => "31",
            Action::NoOp => "2",
        };
        self.paint(code, s)
    }
}

fn value_text(v: &Option<Value>) -> String {
    match v {
        None => "null".into(),
        Some(Value::String(s)) => format!("{s:?}"),
        Some(v) => serde_json::to_string(v).unwrap_or_default(),
    }
}

fn is_multiline(v: &Option<Value>) -> bool {
    matches!(v, Some(Value::String(s)) if s.contains('\n'))
}

fn render_change(out: &mut String, c: &ResourceChange, st: &Style) {
    let sym = c.action.symbol(c.create_before_destroy);
    let verb = match c.action {
        Action::Create => "will be created".to_string(),
        Action::Update => "will be updated in place".to_string(),
        Action::Replace if c.create_before_destroy => {
            "will be replaced (create before destroy)".to_string()
        }
        Action::Replace => "will be replaced".to_string(),
        Action::Delete => "will be destroyed".to_string(),
        Action::NoOp => {
            // A move alone, as Terraform shows it: no provider call, state follows.
            if let Some(from) = &c.moved_from {
                let _ = writeln!(
                    out,
                    "{} {} has moved to {}\n",
                    st.paint("36", "#"),
                    st.paint("1", &from.to_string()),
                    st.paint("1", &c.address.to_string())
                );
            }
            return;
        }
    };
    let _ = writeln!(
        out,
        "{} {} {verb}",
        st.action(c.action, sym),
        st.paint("1", &c.address.to_string())
    );
    if let Some(from) = &c.moved_from {
        let _ = writeln!(out, "    # (moved from {from})");
    }
    for r in &c.reasons {
        let _ = writeln!(out, "    # {r}");
    }
    for a in &c.changes {
        let tag = if a.force_new {
            st.paint("31", " # forces replacement")
        } else {
            String::new()
        };
        match (&a.before, &a.after) {
            (None, after) => {
                let _ = writeln!(
                    out,
                    "    {} {} = {}",
                    st.paint("32", "+"),
                    a.attr,
                    value_text(after)
                );
            }
            (before, None) if c.action == Action::Delete || a.after.is_none() => {
                let _ = writeln!(
                    out,
                    "    {} {} = {}{tag}",
                    st.paint("31", "-"),
                    a.attr,
                    value_text(before)
                );
            }
            (before, after) if is_multiline(before) || is_multiline(after) => {
                let _ = writeln!(out, "    {} {} = <<{tag}", st.paint("33", "~"), a.attr);
                let b = before.as_ref().and_then(|v| v.as_str()).unwrap_or("");
                let n = after.as_ref().and_then(|v| v.as_str()).unwrap_or("");
                let diff = similar::TextDiff::from_lines(b, n);
                for change in diff.iter_all_changes() {
                    let (sign, code) = match change.tag() {
                        similar::ChangeTag::Delete => ("-", "31"),
                        similar::ChangeTag::Insert => ("+", "32"),
                        similar::ChangeTag::Equal => (" ", "2"),
                    };
                    let line = change.value().trim_end_matches('\n');
                    let _ = writeln!(out, "        {}", st.paint(code, &format!("{sign} {line}")));
                }
            }
            (before, after) => {
                let _ = writeln!(
                    out,
                    "    {} {} = {} -> {}{tag}",
                    st.paint("33", "~"),
                    a.attr,
                    value_text(before),
                    value_text(after)
                );
            }
        }
    }
    out.push('\n');
}

/// The human-readable plan.
pub fn plan_text(plan: &Plan, color: bool) -> String {
    plan_text_titled(
        plan,
        color,
        &format!(
            "Chimera will perform these actions on stack `{}`:",
            plan.stack
        ),
        &no_changes(&plan.stack, plan.changes.len()),
    )
}

/// "No changes. Stack `web` matches its desired state (5 resources)."
pub fn no_changes(stack: &str, resources: usize) -> String {
    format!("No changes. Stack `{stack}` matches its desired state ({resources} resources).")
}

/// A memoized no-op plan, as [`plan_text`] shows a plan without changes.
pub fn noop_text(plan: &NoopPlan) -> String {
    format!("{}\n", no_changes(&plan.stack, plan.addresses.len()))
}

/// Drift as text: one line per resource, one per changed attribute.
pub fn drift_text(drift: &[Drift]) -> String {
    let mut out = String::new();
    for d in drift {
        match &d.kind {
            DriftKind::Deleted => {
                let _ = writeln!(
                    out,
                    "- {} ({}) was deleted outside Chimera",
                    d.address, d.cloud_id
                );
            }
            DriftKind::Changed { attrs } => {
                let _ = writeln!(
                    out,
                    "~ {} ({}) changed outside Chimera",
                    d.address, d.cloud_id
                );
                for (k, recorded, observed) in attrs {
                    let _ = writeln!(out, "    ~ {k} = {recorded} -> {observed}");
                }
            }
        }
    }
    out
}

/// The human-readable plan under `title`, or `unchanged` when there is nothing to do; drift
/// the refresh found comes first.
pub fn plan_text_titled(plan: &Plan, color: bool, title: &str, unchanged: &str) -> String {
    let st = Style { color };
    let mut out = String::new();
    if !plan.drift.is_empty() {
        let _ = writeln!(
            out,
            "{}\n",
            st.paint(
                "1",
                "Chimera found changes made outside it (the plan below accounts for them):"
            )
        );
        out.push_str(&drift_text(&plan.drift));
        out.push('\n');
    }
    if !plan.has_changes() {
        let _ = writeln!(out, "{unchanged}");
        return out;
    }
    let _ = writeln!(out, "{title}\n");
    for c in &plan.changes {
        render_change(&mut out, c, &st);
    }
    out.push_str(&summary_line(plan));
    out.push('\n');
    let priced = cost::plan_cost(plan);
    out.push('\n');
    out.push_str(&cost_text(&priced, &st));
    if !plan.placements.is_empty() {
        out.push('\n');
        out.push_str(&placements_text(&plan.placements));
    }
    out
}

/// The monthly cost lines that end a text plan: the totals and delta, a line per provider when
/// there is more than one (so `local`'s free prices never hide a cloud's), and what could not
/// be priced.
pub fn cost_text(c: &PlanCost, st_color: &impl CostStyle) -> String {
    let mut out = String::new();
    let only_local = c.by_provider.keys().all(|p| *p == chimera_model::ProviderName::Local);
    let line = if only_local {
        format!(
            "Monthly cost: {} (everything is on `local`, the free simulator)",
            money(c.monthly_after)
        )
    } else if c.delta.abs() < 0.005 {
        format!("Monthly cost: {} (unchanged by this plan)", money(c.monthly_after))
    } else {
        format!(
            "Monthly cost: {} -> {} ({}{})",
            money(c.monthly_before),
            money(c.monthly_after),
            signed_money(c.delta),
            percent(c.delta_percent).replace(" (", ", ").replace(')', "")
        )
    };
    let _ = writeln!(out, "{}", st_color.bold(&line));
    if c.by_provider.len() > 1 {
        let width = c.by_provider.keys().map(|p| p.as_str().len()).max().unwrap_or(0);
        for (p, s) in &c.by_provider {
            let free = if *p == chimera_model::ProviderName::Local {
                " (simulated: free)"
            } else {
                ""
            };
            let _ = writeln!(
                out,
                "  {:<width$}  {:>5} resources  {} -> {}{free}",
                p.as_str(),
                s.resources,
                money(s.monthly_before),
                money(s.monthly_after),
            );
        }
    }
    for r in c.resources.iter().filter(|r| c.unpriced.contains(&r.address)) {
        let _ = writeln!(
            out,
            "  Not priced: {} ({}: not in the price catalog; left out of the totals)",
            r.address,
            r.unpriced_type()
        );
    }
    out
}

/// Anything that can make a line bold (the text plan's style, or nothing).
pub trait CostStyle {
    fn bold(&self, s: &str) -> String;
}

impl CostStyle for Style {
    fn bold(&self, s: &str) -> String {
        self.paint("1", s)
    }
}

/// No styling.
pub struct Plain;

impl CostStyle for Plain {
    fn bold(&self, s: &str) -> String {
        s.to_string()
    }
}

/// How `'cheapest` placed each group: the candidates with their monthly totals, and why the
/// winner won.
pub fn placements_text(placements: &[Placement]) -> String {
    let mut out = String::new();
    for p in placements {
        let names: Vec<String> = p.resources.iter().take(3).map(|a| a.to_string()).collect();
        let more = p.resources.len().saturating_sub(names.len());
        let members = if more > 0 {
            format!("{}, +{more} more", names.join(", "))
        } else {
            names.join(", ")
        };
        let target = p
            .chosen
            .map(|c| format!("on {c}"))
            .unwrap_or_else(|| "nowhere".into());
        let _ = writeln!(
            out,
            "'cheapest placed {} resources ({members}) {target}:",
            p.resources.len()
        );
        let width = p
            .candidates
            .iter()
            .map(|c| c.provider.as_str().len())
            .max()
            .unwrap_or(0);
        for c in &p.candidates {
            let mark = if Some(c.provider) == p.chosen { "*" } else { " " };
            match (&c.monthly, &c.unavailable) {
                (Some(m), _) => {
                    let _ = writeln!(out, "  {mark} {:<width$}  {}/month", c.provider.as_str(), money(*m));
                }
                (None, why) => {
                    let _ = writeln!(
                        out,
                        "  {mark} {:<width$}  cannot host it ({})",
                        c.provider.as_str(),
                        why.as_deref().unwrap_or("unknown")
                    );
                }
            }
        }
        let _ = writeln!(out, "  {}", p.reason);
    }
    out
}

/// `Plan: 3 to create, 1 to update, 0 to replace, 2 to delete.`, and `, 1 to move` before
/// the period when the plan moves anything.
pub fn summary_line(plan: &Plan) -> String {
    let counts = plan.counts();
    let n = |a| counts.get(&a).copied().unwrap_or(0);
    let moves = match plan.moves() {
        0 => String::new(),
        m => format!(", {m} to move"),
    };
    format!(
        "Plan: {} to create, {} to update, {} to replace, {} to delete{moves}.",
        n(Action::Create),
        n(Action::Update),
        n(Action::Replace),
        n(Action::Delete)
    )
}

/// The plan as a JSON document for machines (docs/json.md): everything but the values to
/// apply, so it can be shared; sensitive values are already redacted in `changes`.
pub fn plan_json(plan: &Plan) -> Value {
    let priced = cost::plan_cost(plan);
    let costs: std::collections::HashMap<&chimera_model::Address, &cost::ResourceCost> =
        priced.resources.iter().map(|r| (&r.address, r)).collect();
    let mut doc = json_head(
        &plan.stack,
        plan.lineage.as_deref(),
        plan.prior_serial,
        plan.desired_hash,
        plan.destroy,
        plan.counts(),
    );
    if plan.moves() > 0 {
        doc["summary"]["move"] = plan.moves().into();
    }
    doc["changes"] = plan
        .changes
        .iter()
        .filter(|c| c.is_change())
        .map(|c| change_json(c, costs.get(&c.address)))
        .collect();
    doc["drift"] = serde_json::to_value(&plan.drift).unwrap_or_default();
    doc["cost"] = priced.to_json();
    doc["placements"] = serde_json::to_value(&plan.placements).unwrap_or_default();
    doc
}

/// One change as the plan JSON shows it: what it is, where, the attribute diff, the attributes
/// before and after (sensitive values redacted) and its monthly price.
fn change_json(c: &ResourceChange, cost: Option<&&cost::ResourceCost>) -> Value {
    use chimera_model::graph::REDACTED;
    let redact = |attrs: &serde_json::Map<String, Value>, sensitive: &[String]| {
        let mut out = attrs.clone();
        for k in sensitive {
            if let Some(v) = out.get_mut(k)
                && !v.is_null()
            {
                *v = Value::String(REDACTED.into());
            }
        }
        Value::Object(out)
    };
    let before = c
        .prior
        .as_ref()
        .filter(|_| c.action != Action::Create)
        .map(|p| redact(&p.attrs, &p.sensitive));
    let after = c
        .desired
        .as_ref()
        .filter(|_| c.action != Action::Delete)
        .map(|d| redact(&d.attrs, &d.sensitive));
    let (provider, region, native_region) = match (&c.desired, &c.prior) {
        (Some(d), _) => (Some(d.provider), Some(&d.region), Some(&d.native_region)),
        (None, Some(p)) => (Some(p.provider), Some(&p.region), Some(&p.native_region)),
        _ => (None, None, None),
    };
    let mut doc = serde_json::json!({
        "address": c.address,
        "kind": c.address.kind,
        "name": c.address.name,
        "action": c.action,
        "provider": provider,
        "region": region,
        "native_region": native_region,
        "create_before_destroy": c.create_before_destroy,
        "reasons": c.reasons,
        "changes": c.changes,
        "before": before,
        "after": after,
        "cost": cost.map(|r| serde_json::json!({
            "monthly_before": r.monthly_before.map(cost::cents),
            "monthly_after": r.monthly_after.map(cost::cents),
        })),
    });
    if let Some(from) = &c.moved_from {
        doc["moved_from"] = serde_json::json!(from);
    }
    doc
}

/// A memoized no-op plan, as [`plan_json`] shows a plan without changes.
pub fn noop_json(plan: &NoopPlan) -> Value {
    let mut doc = json_head(
        &plan.stack,
        plan.lineage.as_deref(),
        plan.prior_serial,
        plan.desired_hash,
        false,
        plan.counts(),
    );
    doc["cost"] = plan.cost.clone();
    doc["placements"] = serde_json::to_value(&plan.placements).unwrap_or_default();
    doc
}

fn json_head(
    stack: &str,
    lineage: Option<&str>,
    prior_serial: u64,
    desired_hash: chimera_model::ContentHash,
    destroy: bool,
    counts: impl IntoIterator<Item = (Action, usize)>,
) -> Value {
    serde_json::json!({
        "format_version": crate::plan::PLAN_FORMAT,
        "stack": stack,
        "lineage": lineage,
        "prior_serial": prior_serial,
        "desired_hash": desired_hash,
        "destroy": destroy,
        "summary": counts.into_iter().map(|(a, n)| (a.verb().to_string(), Value::from(n))).collect::<serde_json::Map<_, _>>(),
        "changes": [],
        "drift": [],
    })
}

/// `chimera cost`: what a stack costs per month once applied, by provider, kind and region,
/// what could not be priced, how `'cheapest` placed its groups, and where the prices come from.
pub fn breakdown_text(stack: &str, c: &PlanCost, placements: &[Placement]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Stack `{stack}`: {} per month ({} resources; list prices, on-demand)\n",
        money(c.monthly_after),
        c.resources.len()
    );
    for (title, key) in [
        ("provider", (|r: &cost::ResourceCost| r.provider.to_string()) as fn(&cost::ResourceCost) -> String),
        ("kind", |r| r.address.kind.as_str().to_string()),
        ("region", |r| format!("{} ({})", r.region, r.provider)),
    ] {
        let rows = c.breakdown(key);
        let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0).max(title.len());
        let _ = writeln!(out, "By {title}:");
        for (k, s) in rows {
            let free = if k == "local" { "  (simulated: free)" } else { "" };
            let _ = writeln!(
                out,
                "  {k:<width$}  {:>5} resources  {:>12}{free}",
                s.resources,
                money(s.monthly_after)
            );
        }
        out.push('\n');
    }
    let unpriced: Vec<&cost::ResourceCost> = c
        .resources
        .iter()
        .filter(|r| c.unpriced.contains(&r.address))
        .collect();
    if !unpriced.is_empty() {
        let _ = writeln!(out, "Not priced (left out of the totals):");
        for r in unpriced {
            let _ = writeln!(out, "  {} ({})", r.address, r.unpriced_type());
        }
        out.push('\n');
    }
    if !placements.is_empty() {
        out.push_str(&placements_text(placements));
        out.push('\n');
    }
    out.push_str(&sources_text(c));
    out
}

/// Where the prices of the providers in `c` come from.
pub fn sources_text(c: &PlanCost) -> String {
    let mut out = String::new();
    for p in c.by_provider.keys() {
        if let Some(s) = chimera_model::prices::prices().source(*p) {
            let _ = writeln!(out, "{p} prices: {} (as of {})", s.source, s.retrieved);
        }
    }
    out
}

/// `chimera cost --format json` (docs/json.md).
pub fn breakdown_json(stack: &str, c: &PlanCost, placements: &[Placement]) -> Value {
    let group = |key: fn(&cost::ResourceCost) -> String| -> Value {
        c.breakdown(key)
            .into_iter()
            .map(|(k, s)| {
                (
                    k,
                    serde_json::json!({ "resources": s.resources, "monthly": cost::cents(s.monthly_after) }),
                )
            })
            .collect::<serde_json::Map<String, Value>>()
            .into()
    };
    let p = chimera_model::prices::prices();
    serde_json::json!({
        "format_version": 1,
        "stack": stack,
        "currency": c.currency,
        "monthly": cost::cents(c.monthly_after),
        "by_provider": group(|r| r.provider.to_string()),
        "by_kind": group(|r| r.address.kind.as_str().to_string()),
        "by_region": group(|r| format!("{}/{}", r.provider, r.native_region)),
        "unpriced": c.unpriced,
        "resources": c.resources.iter().map(|r| serde_json::json!({
            "address": r.address,
            "provider": r.provider,
            "region": r.region,
            "native_region": r.native_region,
            "native_type": r.native_type,
            "monthly": r.monthly_after.map(cost::cents),
        })).collect::<Vec<_>>(),
        "placements": placements,
        "sources": c.by_provider.keys().filter_map(|k| p.source(*k)).map(|s| serde_json::json!({
            "provider": s.provider, "source": s.source, "url": s.url, "retrieved": s.retrieved,
        })).collect::<Vec<_>>(),
    })
}
