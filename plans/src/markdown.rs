//! The plan as a pull-request comment (GitHub-flavoured Markdown): a summary line, a table of
//! counts per kind and provider, a mermaid graph of the changed resources and their neighbours,
//! and one collapsible section per changed resource with its attribute diff.
//!
//! Sensitive values never reach here (the plan holds `(sensitive)`). The comment is capped at
//! [`DEFAULT_MAX_CHARS`], below GitHub's 65,536-character limit: sections that do not fit are
//! left out and a notice says how many and of what kind.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use chimera_model::{Address, ProviderName};
use serde_json::Value;

use crate::plan::{Action, AttrChange, Plan, ResourceChange};

/// GitHub's limit on a comment's body.
pub const GITHUB_COMMENT_LIMIT: usize = 65_536;
/// What `plan --format markdown` stays under, leaving room for a bot's own wrapping.
pub const DEFAULT_MAX_CHARS: usize = 60_000;
/// A graph is drawn for up to this many resources (changed ones and their neighbours).
pub const GRAPH_MAX_NODES: usize = 60;

/// What the comment is about.
#[derive(Debug, Clone)]
pub struct MarkdownOptions {
    /// The heading, e.g. "Chimera plan for stack `web`".
    pub title: String,
    /// A line under the heading (e.g. the state generation, or the git refs compared).
    pub context: Option<String>,
    /// The cap on the whole comment, in characters.
    pub max_chars: usize,
    /// What the stack's policies found (a section after the cost).
    pub findings: Vec<crate::findings::Finding>,
}

impl MarkdownOptions {
    pub fn for_plan(plan: &Plan) -> Self {
        Self::for_stack(&plan.stack, plan.prior_serial)
    }

    /// The comment on a plan of `stack` against state generation `prior_serial`.
    pub fn for_stack(stack: &str, prior_serial: u64) -> Self {
        let context = if prior_serial == 0 {
            "Against an empty state: the stack is new.".to_string()
        } else {
            format!("Against state generation {prior_serial}.")
        };
        MarkdownOptions {
            title: format!("Chimera plan for stack `{stack}`"),
            context: Some(context),
            max_chars: DEFAULT_MAX_CHARS,
            findings: Vec::new(),
        }
    }
}

/// `+`, `~`, `∓`, `-`: the column symbols of the summary table.
fn column_symbol(a: Action) -> &'static str {
    match a {
        Action::Create => "+",
        Action::Update => "~",
        Action::Replace => "∓",
        Action::Delete => "-",
        Action::NoOp => "",
    }
}

const ACTIONS: [Action; 4] = [
    Action::Create,
    Action::Update,
    Action::Replace,
    Action::Delete,
];

fn provider_of(c: &ResourceChange) -> Option<ProviderName> {
    c.desired
        .as_ref()
        .map(|d| d.provider)
        .or_else(|| c.prior.as_ref().map(|p| p.provider))
}

fn deps_of(c: &ResourceChange) -> Vec<&Address> {
    let mut v: Vec<&Address> = Vec::new();
    if let Some(d) = &c.desired {
        v.extend(d.deps.iter());
    }
    if let Some(p) = &c.prior {
        v.extend(p.deps.iter());
    }
    v.sort();
    v.dedup();
    v
}

fn html(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A code fence longer than any run of backticks in `body`.
fn fence(body: &str) -> String {
    let mut longest = 0;
    let mut run = 0;
    for ch in body.chars() {
        if ch == '`' {
            run += 1;
            longest = longest.max(run);
        } else {
            run = 0;
        }
    }
    "`".repeat(longest.max(2) + 1)
}

fn value_text(v: &Option<Value>) -> String {
    match v {
        None => "null".into(),
        Some(Value::String(s)) => format!("{s:?}"),
        Some(v) => serde_json::to_string(v).unwrap_or_default(),
    }
}

fn multiline(v: &Option<Value>) -> Option<&str> {
    match v {
        Some(Value::String(s)) if s.contains('\n') => Some(s),
        _ => None,
    }
}

/// The body of a `diff` block for one resource.
fn diff_lines(c: &ResourceChange) -> String {
    let mut out = String::new();
    for a in &c.changes {
        let tag = if a.force_new {
            "   # forces replacement"
        } else {
            ""
        };
        attr_lines(&mut out, a, tag);
    }
    out
}

fn attr_lines(out: &mut String, a: &AttrChange, tag: &str) {
    match (&a.before, &a.after) {
        (None, after) => {
            let _ = writeln!(out, "+ {} = {}", a.attr, value_text(after));
        }
        (before, None) => {
            let _ = writeln!(out, "- {} = {}", a.attr, value_text(before));
        }
        (before, after) if multiline(before).is_some() || multiline(after).is_some() => {
            let _ = writeln!(out, "~ {} = <<{tag}", a.attr);
            let b = before.as_ref().and_then(Value::as_str).unwrap_or("");
            let n = after.as_ref().and_then(Value::as_str).unwrap_or("");
            for change in similar::TextDiff::from_lines(b, n).iter_all_changes() {
                let sign = match change.tag() {
                    similar::ChangeTag::Delete => "-",
                    similar::ChangeTag::Insert => "+",
                    similar::ChangeTag::Equal => " ",
                };
                let _ = writeln!(out, "{sign}     {}", change.value().trim_end_matches('\n'));
            }
        }
        (before, after) => {
            let _ = writeln!(out, "- {} = {}", a.attr, value_text(before));
            let _ = writeln!(out, "+ {} = {}{tag}", a.attr, value_text(after));
        }
    }
}

fn verb(c: &ResourceChange) -> String {
    if let (Action::NoOp, Some(from)) = (c.action, &c.moved_from) {
        return format!("has moved from {}", html(&from.to_string()));
    }
    let verb = match c.action {
        Action::Create => "will be created",
        Action::Update => "will be updated in place",
        Action::Replace if c.create_before_destroy => "will be replaced (create before destroy)",
        Action::Replace => "will be replaced",
        Action::Delete => "will be destroyed",
        Action::NoOp => "is unchanged",
    };
    match &c.moved_from {
        Some(from) => format!("{verb} (moved from {})", html(&from.to_string())),
        None => verb.to_string(),
    }
}

/// One resource's collapsible section; `compact` leaves the diff out (names the attributes).
fn section(c: &ResourceChange, compact: bool) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "<details><summary><code>{} {}</code> {}</summary>\n",
        c.action.symbol(c.create_before_destroy),
        html(&c.address.to_string()),
        verb(c)
    );
    for r in &c.reasons {
        let _ = writeln!(out, "- {}", html(r));
    }
    if !c.reasons.is_empty() {
        out.push('\n');
    }
    if compact {
        let names: Vec<String> = c.changes.iter().map(|a| format!("`{}`", a.attr)).collect();
        let _ = writeln!(
            out,
            "The diff is too long for a comment; attributes: {}. Run `chimera plan` to see it.\n",
            names.join(", ")
        );
    } else if !c.changes.is_empty() {
        let body = diff_lines(c);
        let f = fence(&body);
        let _ = writeln!(out, "{f}diff\n{body}{f}\n");
    }
    out.push_str("</details>\n\n");
    out
}

fn table(plan: &Plan) -> String {
    let mut rows: BTreeMap<(String, String), BTreeMap<Action, usize>> = BTreeMap::new();
    for c in plan.changes.iter().filter(|c| c.action != Action::NoOp) {
        let provider = provider_of(c).map(|p| p.to_string()).unwrap_or_default();
        *rows
            .entry((c.address.kind.as_str().to_string(), provider))
            .or_default()
            .entry(c.action)
            .or_default() += 1;
    }
    let mut out = String::from("| kind | provider |");
    for a in ACTIONS {
        let _ = write!(out, " {} {} |", column_symbol(a), a.verb());
    }
    out.push_str("\n|---|---|---:|---:|---:|---:|\n");
    for ((kind, provider), counts) in &rows {
        let _ = write!(out, "| {kind} | {provider} |");
        for a in ACTIONS {
            match counts.get(&a) {
                Some(n) => {
                    let _ = write!(out, " {n} |");
                }
                None => out.push_str(" · |"),
            }
        }
        out.push('\n');
    }
    out
}

/// The mermaid graph of the changed resources and their direct neighbours, or why there is none.
fn graph(plan: &Plan) -> String {
    let changed: BTreeSet<&Address> = plan
        .changes
        .iter()
        .filter(|c| c.action != Action::NoOp)
        .map(|c| &c.address)
        .collect();
    let mut edges: BTreeSet<(&Address, &Address)> = BTreeSet::new();
    for c in &plan.changes {
        for d in deps_of(c) {
            if changed.contains(d) || changed.contains(&c.address) {
                edges.insert((d, &c.address));
            }
        }
    }
    let mut nodes: BTreeSet<&Address> = changed.clone();
    for (a, b) in &edges {
        nodes.insert(a);
        nodes.insert(b);
    }
    if nodes.len() > GRAPH_MAX_NODES {
        return format!(
            "_The graph is left out: {} resources change or neighbour a change (it is drawn for up to {GRAPH_MAX_NODES}); `chimera graph --format mermaid` draws the whole stack._\n\n",
            nodes.len()
        );
    }
    let by: BTreeMap<&Address, &ResourceChange> =
        plan.changes.iter().map(|c| (&c.address, c)).collect();
    let id: BTreeMap<&Address, usize> = nodes.iter().enumerate().map(|(i, a)| (*a, i)).collect();
    let mut out = String::from("flowchart LR\n");
    let mut classes: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (a, i) in &id {
        let (sym, class) = match by.get(a) {
            Some(c) if c.action != Action::NoOp => (
                format!("{} ", c.action.symbol(c.create_before_destroy)),
                c.action.verb(),
            ),
            _ => (String::new(), "unchanged"),
        };
        let label = format!("{sym}{a}").replace('"', "#quot;");
        let _ = writeln!(out, "  n{i}[\"{label}\"]");
        classes.entry(class).or_default().push(format!("n{i}"));
    }
    for (a, b) in &edges {
        let _ = writeln!(out, "  n{} --> n{}", id[a], id[b]);
    }
    for (class, style) in [
        ("create", "fill:#e6ffed,stroke:#22863a"),
        ("update", "fill:#fff5b1,stroke:#b08800"),
        ("replace", "fill:#f5f0ff,stroke:#6f42c1"),
        ("delete", "fill:#ffeef0,stroke:#cb2431"),
        ("unchanged", "fill:#f6f8fa,stroke:#d1d5da,color:#6a737d"),
    ] {
        if let Some(ids) = classes.get(class) {
            let _ = writeln!(out, "  classDef {class} {style}");
            let _ = writeln!(out, "  class {} {class}", ids.join(","));
        }
    }
    let neighbours = nodes.len() - changed.len();
    format!(
        "<details><summary>Graph: {} changed, {neighbours} unchanged neighbours</summary>\n\n```mermaid\n{out}```\n\n</details>\n\n",
        changed.len()
    )
}

/// The plan as a Markdown comment, at most `opts.max_chars` characters long.
pub fn plan_markdown(plan: &Plan, opts: &MarkdownOptions) -> String {
    if !plan.has_changes() && plan.drift.is_empty() {
        return unchanged(&plan.stack, plan.changes.len(), opts);
    }
    let mut head = heading(opts);
    if !plan.drift.is_empty() {
        let body = crate::render::drift_text(&plan.drift);
        let f = fence(&body);
        let _ = writeln!(
            head,
            "<details><summary>{} resources changed outside Chimera (the plan accounts for them)</summary>\n\n{f}diff\n{body}{f}\n\n</details>\n",
            plan.drift.len(),
        );
    }
    if !plan.has_changes() {
        let _ = writeln!(
            head,
            "**No changes.** Stack `{}` matches its desired state ({} resources).",
            plan.stack,
            plan.changes.len()
        );
        return cap(head, opts.max_chars);
    }
    let priced = crate::cost::plan_cost(plan);
    head.push_str(&cost_section(&priced));
    if !plan.placements.is_empty() {
        let body = crate::render::placements_text(&plan.placements);
        let f = fence(&body);
        let _ = writeln!(
            head,
            "<details><summary>How <code>'cheapest</code> placed {} groups</summary>\n\n{f}text\n{body}{f}\n\n</details>\n",
            plan.placements.len()
        );
    }
    head.push_str(&policy_section(&opts.findings));
    let _ = writeln!(head, "**{}**\n", crate::render::summary_line(plan));
    head.push_str(&table(plan));
    head.push('\n');
    head.push_str(&graph(plan));

    // Sections in the plan's order (by address) until the budget is spent.
    const NOTICE_RESERVE: usize = 700;
    let budget = opts.max_chars.saturating_sub(NOTICE_RESERVE);
    let mut out = head;
    let changed: Vec<&ResourceChange> = plan.changes.iter().filter(|c| c.is_change()).collect();
    let mut shown = 0;
    for c in &changed {
        let mut s = section(c, false);
        let used = out.chars().count();
        if used + s.chars().count() > budget && s.chars().count() > opts.max_chars / 8 {
            // One huge diff (e.g. a long user_data): name its attributes instead.
            s = section(c, true);
        }
        if used + s.chars().count() > budget {
            break;
        }
        out.push_str(&s);
        shown += 1;
    }
    if shown < changed.len() {
        let mut left: BTreeMap<Action, usize> = BTreeMap::new();
        for c in &changed[shown..] {
            *left.entry(c.action).or_default() += 1;
        }
        let parts: Vec<String> = left
            .iter()
            .map(|(a, n)| match a {
                // A change without an action is a move.
                Action::NoOp => format!("{n} to move"),
                a => format!("{n} to {}", a.verb()),
            })
            .collect();
        let _ = writeln!(
            out,
            "> [!WARNING]\n> **Truncated:** {} of {} changed resources are not shown ({}), to keep this comment under GitHub's 65,536-character limit. The summary and table above count them all; `chimera plan` shows every change.",
            changed.len() - shown,
            changed.len(),
            parts.join(", ")
        );
    }
    cap(out, opts.max_chars)
}

/// Cost rows shown in the comment's table; the rest are counted.
pub const COST_ROWS: usize = 40;

/// "Monthly cost will increase by $X (+Y%)", as Infracost's comment starts, then the price of
/// each resource the plan changes.
fn cost_section(c: &crate::cost::PlanCost) -> String {
    use crate::cost::{money, percent, price_text, signed_money};
    let mut out = String::new();
    if c.by_provider.keys().all(|p| *p == ProviderName::Local) {
        let _ = writeln!(
            out,
            "**Monthly cost: $0.00**: everything is on `local`, the free simulator.\n"
        );
        return out;
    }
    let headline = if c.delta > 0.004 {
        format!(
            "Monthly cost will increase by {}{}",
            money(c.delta),
            percent(c.delta_percent)
        )
    } else if c.delta < -0.004 {
        format!(
            "Monthly cost will decrease by {}{}",
            money(-c.delta),
            percent(c.delta_percent)
        )
    } else {
        "Monthly cost will not change".to_string()
    };
    let _ = writeln!(
        out,
        "**{headline}**: {} → {} per month.\n",
        money(c.monthly_before),
        money(c.monthly_after)
    );
    let rows: Vec<&crate::cost::ResourceCost> = c.changed().collect();
    if !rows.is_empty() {
        out.push_str("| resource | action | provider | type | region | before | after | change |\n|---|---|---|---|---|---:|---:|---:|\n");
        for r in rows.iter().take(COST_ROWS) {
            let _ = writeln!(
                out,
                "| `{}` | {} | {} | {} | {} | {} | {} | {} |",
                html(&r.address.to_string()),
                r.action.verb(),
                r.provider,
                r.native_type.as_deref().map(html).unwrap_or_else(|| "·".into()),
                html(&r.native_region),
                price_text(r.monthly_before),
                price_text(r.monthly_after),
                r.delta().map(signed_money).unwrap_or_else(|| "?".into()),
            );
        }
        if rows.len() > COST_ROWS {
            let _ = writeln!(
                out,
                "\n_{} more resources change in price; `chimera plan` lists them all._",
                rows.len() - COST_ROWS
            );
        }
        out.push('\n');
    }
    if c.by_provider.len() > 1 {
        let parts: Vec<String> = c
            .by_provider
            .iter()
            .map(|(p, s)| {
                let free = if *p == ProviderName::Local { " (simulated, free)" } else { "" };
                format!("{p} {}{free}", money(s.monthly_after))
            })
            .collect();
        let _ = writeln!(out, "By provider after the plan: {}.\n", parts.join(" · "));
    }
    if !c.unpriced.is_empty() {
        let names: Vec<String> = c.unpriced.iter().take(10).map(|a| format!("`{a}`")).collect();
        let _ = writeln!(
            out,
            "_Not priced (not in the price catalog, left out of the totals): {}{}._\n",
            names.join(", "),
            if c.unpriced.len() > 10 { ", …" } else { "" }
        );
    }
    out
}

/// The policy section: denies block the apply, warnings do not.
fn policy_section(findings: &[crate::findings::Finding]) -> String {
    use crate::findings::{Level, counts, sorted};
    if findings.is_empty() {
        return String::new();
    }
    let (deny, warn) = counts(findings);
    let mut out = String::new();
    if deny > 0 {
        let _ = writeln!(
            out,
            "> [!CAUTION]\n> **Policy: {deny} denied** ({warn} warnings). `chimera apply` will refuse this plan until they are fixed.\n"
        );
    } else {
        let _ = writeln!(out, "**Policy: {warn} warnings** (nothing denied).\n");
    }
    out.push_str("| | resource | rule | message | policy |\n|---|---|---|---|---|\n");
    for f in sorted(findings).into_iter().take(COST_ROWS) {
        let _ = writeln!(
            out,
            "| {} | {} | `{}` | {} | `{}` |",
            if f.level == Level::Deny { "❌ deny" } else { "⚠️ warn" },
            f.address.as_deref().map(|a| format!("`{}`", html(a))).unwrap_or_else(|| "plan".into()),
            html(&f.rule),
            html(&f.message).replace('|', "\\|").replace('\n', " "),
            html(&f.location()),
        );
    }
    if findings.len() > COST_ROWS {
        let _ = writeln!(out, "\n_{} more findings; `chimera plan` lists them all._", findings.len() - COST_ROWS);
    }
    out.push('\n');
    out
}

/// A memoized no-op plan, as [`plan_markdown`] shows a plan without changes.
pub fn noop_markdown(plan: &crate::NoopPlan, opts: &MarkdownOptions) -> String {
    unchanged(&plan.stack, plan.addresses.len(), opts)
}

fn heading(opts: &MarkdownOptions) -> String {
    let mut head = format!("### {}\n\n", opts.title);
    if let Some(c) = &opts.context {
        let _ = writeln!(head, "{c}\n");
    }
    head
}

fn unchanged(stack: &str, resources: usize, opts: &MarkdownOptions) -> String {
    let mut head = heading(opts);
    let _ = writeln!(
        head,
        "**No changes.** Stack `{stack}` matches its desired state ({resources} resources)."
    );
    cap(head, opts.max_chars)
}

/// The last resort: a hard cut at a character boundary, said so.
fn cap(s: String, max: usize) -> String {
    if s.chars().count() <= max {
        return s;
    }
    let notice = "\n\n> **Truncated** here to stay under GitHub's comment limit; `chimera plan` shows everything.\n";
    let keep = max.saturating_sub(notice.chars().count());
    let mut out: String = s.chars().take(keep).collect();
    out.push_str(notice);
    out
}
