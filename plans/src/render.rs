//! Plan renderings: text (optionally coloured, with line diffs of multi-line strings through
//! `similar`) and JSON. Sensitive values never reach here: the plan holds `(sensitive)`.

use std::fmt::Write as _;

use serde_json::Value;

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
        Action::NoOp => return,
    };
    let _ = writeln!(
        out,
        "{} {} {verb}",
        st.action(c.action, sym),
        st.paint("1", &c.address.to_string())
    );
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
    out
}

/// `Plan: 3 to create, 1 to update, 0 to replace, 2 to delete.`
pub fn summary_line(plan: &Plan) -> String {
    let counts = plan.counts();
    let n = |a| counts.get(&a).copied().unwrap_or(0);
    format!(
        "Plan: {} to create, {} to update, {} to replace, {} to delete.",
        n(Action::Create),
        n(Action::Update),
        n(Action::Replace),
        n(Action::Delete)
    )
}

/// The plan as a JSON document for machines (docs/json.md): everything but the values to
/// apply, so it can be shared; sensitive values are already redacted in `changes`.
pub fn plan_json(plan: &Plan) -> Value {
    let mut doc = json_head(
        &plan.stack,
        plan.lineage.as_deref(),
        plan.prior_serial,
        plan.desired_hash,
        plan.destroy,
        plan.counts(),
    );
    doc["changes"] = plan
        .changes
        .iter()
        .filter(|c| c.action != Action::NoOp)
        .map(|c| {
            serde_json::json!({
                "address": c.address,
                "action": c.action,
                "create_before_destroy": c.create_before_destroy,
                "reasons": c.reasons,
                "changes": c.changes,
            })
        })
        .collect();
    doc["drift"] = serde_json::to_value(&plan.drift).unwrap_or_default();
    doc
}

/// A memoized no-op plan, as [`plan_json`] shows a plan without changes.
pub fn noop_json(plan: &NoopPlan) -> Value {
    json_head(
        &plan.stack,
        plan.lineage.as_deref(),
        plan.prior_serial,
        plan.desired_hash,
        false,
        plan.counts(),
    )
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
