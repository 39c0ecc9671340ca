//! The intents' edits: each finds the expressions that produce what the intent is about and
//! returns the smallest changes that do it, judged by evaluating the changed files.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde_json::Value;

use super::edit::{self, Change};
use super::model::{Files, Loc, Res, Snapshot};
use super::origin;
use super::syntax::{Id, Kind, Tree};

/// A value to write.
#[derive(Debug, Clone, PartialEq)]
pub enum Lit {
    Str(String),
    Tag(String),
    Num(u64),
}

impl Lit {
    pub fn text(&self) -> String {
        match self {
            Lit::Str(s) => edit::quote(s),
            Lit::Tag(s) => edit::tag(s),
            Lit::Num(n) => n.to_string(),
        }
    }

    /// As the evaluated resource holds it.
    fn json(&self) -> Value {
        match self {
            Lit::Str(s) | Lit::Tag(s) => Value::String(s.clone()),
            Lit::Num(n) => Value::from(*n),
        }
    }

    fn matches(&self, v: Option<&Value>) -> bool {
        match (self, v) {
            (Lit::Num(n), Some(v)) => v.as_f64() == Some(*n as f64),
            (_, Some(v)) => *v == self.json(),
            _ => false,
        }
    }
}

/// Changes and what they did, for the draft.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub changes: Vec<Change>,
    /// Sentences for the summary.
    pub notes: Vec<String>,
}

/// The line (1-based) of byte `pos` of `loc`'s file.
pub fn line_of(files: &Files, file: &PathBuf, pos: usize) -> usize {
    files
        .texts
        .get(file)
        .map(|t| t[..pos.min(t.len())].matches('\n').count() + 1)
        .unwrap_or(0)
}

fn tree_of<'a>(files: &'a Files, loc: &Loc) -> Result<&'a Tree, String> {
    files
        .tree(&loc.file)
        .ok_or_else(|| format!("`{}` is not a Nickel file of the stack", loc.file.display()))
}

/// A resource's expression node.
fn expr_of<'a>(files: &'a Files, r: &Res) -> Result<(Loc, &'a Tree, Id), String> {
    let loc = r.span.clone().ok_or_else(|| {
        format!(
            "{} is not written in the stack's files (a module or the stdlib builds it)",
            r.address()
        )
    })?;
    let tree = tree_of(files, &loc)?;
    let mut id =
        origin::node_at(tree, &loc).ok_or_else(|| format!("no expression for {}", r.address()))?;
    // The whole merge that builds it (`c.Instance & base & { … }`), not one of its operands.
    while let Some(p) = tree.node(id).parent
        && matches!(tree.kind(p), Kind::Merge(..) | Kind::Annotated(_))
    {
        id = p;
    }
    Ok((loc, tree, id))
}

fn list(names: &[String]) -> String {
    match names.len() {
        0 => String::new(),
        1..=4 => names.join(", "),
        n => format!("{}, … ({n} in all)", names[..3].join(", ")),
    }
}

/// Sets `field` of the resources `targets` to `lit`: edits the literals that produce it (or
/// adds the field to a resource's own record when it is not written), choosing the literals
/// that change the targets and nothing else; with `collateral`, literals that change other
/// resources too are taken when nothing narrower does it.
pub fn set_field(
    files: &Files,
    base: &Snapshot,
    targets: &[usize],
    field: &str,
    lit: &Lit,
    collateral: bool,
) -> Result<Outcome, String> {
    let want: BTreeSet<String> = targets
        .iter()
        .map(|&i| &base.resources[i])
        .filter(|r| !lit.matches(r.fields.get(field)))
        .map(Res::address)
        .collect();
    if want.is_empty() {
        return Err(format!(
            "every resource asked for already has {field} = {}",
            lit.text()
        ));
    }
    // Candidate changes, each judged alone.
    let mut cands: BTreeSet<Change> = BTreeSet::new();
    let mut stuck = Vec::new();
    for &i in targets {
        let r = &base.resources[i];
        if !want.contains(&r.address()) {
            continue;
        }
        match r.field_spans.get(field) {
            Some(loc) => {
                let tree = tree_of(files, loc)?;
                let Some(at) = origin::node_at(tree, loc) else {
                    stuck.push(r.address());
                    continue;
                };
                let lits = origin::literals(tree, at);
                if lits.is_empty() {
                    stuck.push(r.address());
                }
                for l in lits {
                    cands.insert(Change {
                        file: loc.file.clone(),
                        span: tree.span(l),
                        text: lit.text(),
                    });
                }
            }
            None => {
                let (loc, tree, e) = expr_of(files, r)?;
                match origin::own_record(tree, e)
                    .and_then(|rec| edit::add_field(tree, &loc.file, rec, field, &lit.text()))
                {
                    Some(c) => {
                        cands.insert(c);
                    }
                    None => stuck.push(r.address()),
                }
            }
        }
    }
    let mut judged = Vec::new();
    for c in cands {
        let changed = edit::apply(&files.texts, std::slice::from_ref(&c))?;
        let Ok(snap) = files.evaluate(&changed) else {
            continue;
        };
        let hit: BTreeSet<String> = snap
            .resources
            .iter()
            .filter(|r| lit.matches(r.fields.get(field)))
            .map(Res::address)
            .filter(|a| {
                base.resources
                    .iter()
                    .find(|b| b.address() == *a)
                    .is_none_or(|b| !lit.matches(b.fields.get(field)))
            })
            .collect();
        let good: BTreeSet<String> = hit.intersection(&want).cloned().collect();
        let extra: Vec<String> = hit.difference(&want).cloned().collect();
        if !good.is_empty() {
            judged.push((c, good, extra));
        }
    }
    judged.sort_by(|a, b| {
        (a.2.len(), std::cmp::Reverse(a.1.len()), &a.0).cmp(&(
            b.2.len(),
            std::cmp::Reverse(b.1.len()),
            &b.0,
        ))
    });
    let mut left = want.clone();
    let mut out = Outcome::default();
    let mut extra_all = BTreeSet::new();
    for (c, good, extra) in &judged {
        if left.is_empty() {
            break;
        }
        if good.is_disjoint(&left) || (!extra.is_empty() && !collateral) {
            continue;
        }
        left = left.difference(good).cloned().collect();
        extra_all.extend(extra.iter().cloned());
        out.changes.push(c.clone());
    }
    if !left.is_empty() {
        let left: Vec<String> = left.into_iter().collect();
        let why = if judged.iter().any(|j| !j.2.is_empty()) && !collateral {
            "the only expressions that set it are shared with other resources"
        } else {
            "no literal in the stack's files sets it"
        };
        return Err(format!("cannot set {field} of {}: {why}", list(&left)));
    }
    for c in &out.changes {
        out.notes.push(format!(
            "{}:{} now reads `{}`",
            c.file.display(),
            line_of(files, &c.file, c.span.0),
            c.text
        ));
    }
    if !extra_all.is_empty() {
        let extra: Vec<String> = extra_all.into_iter().collect();
        out.notes.push(format!(
            "{} share that expression and change with them",
            list(&extra)
        ));
    }
    Ok(out)
}

/// `scale TIER to N`: the count of the `std.array.generate` that builds the tier.
pub fn scale(files: &Files, base: &Snapshot, tier: &str, count: u64) -> Result<Outcome, String> {
    let targets = base.tier(tier, Some("instance"));
    if targets.is_empty() {
        return Err(no_tier(base, tier, "instance"));
    }
    let mut counts: BTreeMap<Loc, Id> = BTreeMap::new();
    for &i in &targets {
        let r = &base.resources[i];
        let (loc, tree, e) = expr_of(files, r)?;
        let Some((_, n)) = origin::generator(tree, e) else {
            return Err(format!(
                "{} is written once, not generated with `std.array.generate`: to scale it, generate it (`std.array.generate (fun i => …) N`)",
                r.address()
            ));
        };
        for l in origin::literals(tree, n) {
            if matches!(tree.kind(l), Kind::Number(_)) {
                counts.insert(
                    Loc {
                        file: loc.file.clone(),
                        span: tree.span(l),
                    },
                    l,
                );
            }
        }
    }
    if counts.is_empty() {
        return Err(format!(
            "the count of tier `{tier}` is computed, not a number written in the stack"
        ));
    }
    let mut out = Outcome::default();
    for (loc, _) in &counts {
        let old = &files.texts[&loc.file][loc.span.0..loc.span.1];
        if old.trim().parse::<u64>().ok() == Some(count) {
            continue;
        }
        out.changes.push(Change {
            file: loc.file.clone(),
            span: loc.span,
            text: count.to_string(),
        });
        out.notes.push(format!(
            "the count at {}:{} goes from {old} to {count}",
            loc.file.display(),
            line_of(files, &loc.file, loc.span.0)
        ));
    }
    if out.changes.is_empty() {
        return Err(format!("tier `{tier}` already has {count} per group"));
    }
    let names: Vec<String> = targets
        .iter()
        .map(|&i| base.resources[i].name.clone())
        .collect();
    out.notes.insert(
        0,
        format!(
            "tier `{tier}` ({}) is generated with `std.array.generate`",
            list(&names)
        ),
    );
    Ok(out)
}

fn no_tier(base: &Snapshot, tier: &str, kind: &str) -> String {
    let mut names: Vec<String> = base
        .resources
        .iter()
        .filter(|r| r.kind == kind)
        .map(|r| r.name.clone())
        .collect();
    names.truncate(8);
    format!(
        "no {kind} of the stack is named `{tier}` or `{tier}-N` (its {kind}s: {})",
        if names.is_empty() {
            "none".to_string()
        } else {
            names.join(", ")
        }
    )
}

/// `resize TIER to SIZE`.
pub fn resize(files: &Files, base: &Snapshot, tier: &str, size: &str) -> Result<Outcome, String> {
    let targets = base.tier(tier, Some("instance"));
    if targets.is_empty() {
        return Err(no_tier(base, tier, "instance"));
    }
    if let Some(r) = targets
        .iter()
        .map(|&i| &base.resources[i])
        .find(|r| !r.fields.contains_key("size"))
    {
        return Err(format!(
            "{} is sized by `cpu` and `memory_gib`, not by a size class",
            r.address()
        ));
    }
    set_field(
        files,
        base,
        &targets,
        "size",
        &Lit::Tag(size.to_string()),
        false,
    )
}

/// `add a N GiB volume to INSTANCE`: a new `c.Volume` next to the instance, in the same scope.
pub fn add_volume(
    files: &Files,
    base: &Snapshot,
    instance: &str,
    size_gib: u64,
    kind: Option<&str>,
) -> Result<Outcome, String> {
    let r = base
        .find("instance", instance)
        .ok_or_else(|| no_tier(base, instance, "instance"))?;
    let (loc, tree, e) = expr_of(files, r)?;
    // How the instance is named where the volume goes: its `let`, or an element of the
    // generated array its `let` holds.
    let (holder, reference) = match origin::generator(tree, e) {
        Some((app, _)) => {
            let (let_node, name) = origin::binding_of(tree, app).ok_or_else(|| {
                format!(
                    "the array that generates {} is not bound by a `let`",
                    r.address()
                )
            })?;
            let index = base
                .resources
                .iter()
                .filter(|x| x.span == r.span)
                .position(|x| x.name == r.name)
                .unwrap_or(0);
            (let_node, format!("std.array.at {index} {name}"))
        }
        None => {
            let (let_node, name) = origin::binding_of(tree, e).ok_or_else(|| {
                format!(
                    "{} is not bound by a `let`, so a volume cannot refer to it",
                    r.address()
                )
            })?;
            (let_node, name)
        }
    };
    let body = tree.let_body(holder);
    // The merge operands between the schema and the record (`defaults`, `base`) carry the
    // provider, region and tags: the volume takes the same, when they mean the same here.
    let ops = tree.merge_operands(tree.let_body(e));
    let schema = ops
        .first()
        .and_then(|o| tree.path(*o))
        .filter(|p| p.len() == 2 && p[1] == "Instance")
        .ok_or_else(|| format!("{} is not built as `c.Instance & …`", r.address()))?;
    let mut parts = vec![format!("{}.Volume", schema[0])];
    for o in &ops[1..] {
        let o = tree.peel(*o);
        if let Kind::Var(v) = tree.kind(o)
            && tree.resolve(o, v).is_some()
            && tree.resolve(o, v) == tree.resolve(body, v)
        {
            parts.push(v.clone());
        }
    }
    let mut name = format!("{instance}-data");
    let mut n = 2;
    while base.find("volume", &name).is_some() {
        name = format!("{instance}-data-{n}");
        n += 1;
    }
    let mut fields = vec![
        format!("name = {}", edit::quote(&name)),
        format!("size_gib = {size_gib}"),
    ];
    if let Some(k) = kind {
        fields.push(format!("type = {}", edit::tag(k)));
    }
    fields.push(format!("instance = {reference}"));
    let volume = format!("{} & {{ {} }}", parts.join(" & "), fields.join(", "));
    let change = append_to_list(tree, &loc.file, body, &volume).ok_or_else(|| {
        "the resources are not an array literal or a concatenation ending with one".to_string()
    })?;
    Ok(Outcome {
        notes: vec![format!(
            "a new volume `{name}` of {size_gib} GiB is attached to {} ({}:{})",
            r.address(),
            loc.file.display(),
            line_of(files, &loc.file, change.span.0)
        )],
        changes: vec![change],
    })
}

/// Appends `element` to the list expression `list`: its last array literal, or `list @ [x]`.
fn append_to_list(tree: &Tree, file: &PathBuf, list: Id, element: &str) -> Option<Change> {
    let id = tree.peel(list);
    match tree.kind(id) {
        Kind::Array(_) => edit::push_element(tree, file, id, element),
        Kind::Concat(_, r) => {
            let r = tree.peel(*r);
            if matches!(tree.kind(r), Kind::Array(_)) {
                edit::push_element(tree, file, r, element)
            } else {
                Some(Change {
                    file: file.clone(),
                    span: (tree.span(id).1, tree.span(id).1),
                    text: format!(" @ [{element}]"),
                })
            }
        }
        Kind::App { .. } | Kind::Var(_) => Some(Change {
            file: file.clone(),
            span: (tree.span(id).1, tree.span(id).1),
            text: format!(" @ [{element}]"),
        }),
        _ => None,
    }
}

/// The firewalls of tier `tier`: firewalls by that name, else the firewalls its instances use.
fn firewalls_of(files: &Files, base: &Snapshot, tier: &str) -> Result<Vec<usize>, String> {
    let fws = base.tier(tier, Some("firewall"));
    if !fws.is_empty() {
        return Ok(fws);
    }
    let instances = base.tier(tier, Some("instance"));
    if instances.is_empty() {
        return Err(format!(
            "no firewall or instance of the stack is named `{tier}` or `{tier}-N`"
        ));
    }
    let mut out = BTreeSet::new();
    for &i in &instances {
        let r = &base.resources[i];
        let Some(loc) = r.field_spans.get("firewalls") else {
            continue;
        };
        let tree = tree_of(files, loc)?;
        let Some(at) = origin::node_at(tree, loc) else {
            continue;
        };
        let Kind::Array(items) = tree.kind(tree.peel(at)) else {
            continue;
        };
        for item in items {
            let Some(path) = tree.path(*item) else {
                continue;
            };
            let Some(v) = origin::access(tree, *item, &path[..1]) else {
                continue;
            };
            let span = tree.span(tree.peel(v));
            if let Some(j) = base.resources.iter().position(|f| {
                f.kind == "firewall"
                    && f.span.as_ref().is_some_and(|s| {
                        s.file == loc.file && s.span.0 >= span.0 && s.span.1 <= span.1
                    })
            }) {
                out.insert(j);
            }
        }
    }
    if out.is_empty() {
        return Err(format!(
            "the instances of tier `{tier}` have no firewall written in the stack: add a `c.Firewall` and list it in their `firewalls`"
        ));
    }
    Ok(out.into_iter().collect())
}

/// Whether the evaluated rule admits `port`.
fn admits(rule: &Value, port: u16, protocol: &str) -> bool {
    let proto = rule
        .get("protocol")
        .and_then(Value::as_str)
        .unwrap_or("tcp");
    if proto != protocol && proto != "all" {
        return false;
    }
    match rule.get("ports") {
        Some(Value::Number(n)) => n.as_u64() == Some(u64::from(port)),
        Some(Value::Object(r)) => {
            let from = r.get("from").and_then(Value::as_u64).unwrap_or(0);
            let to = r.get("to").and_then(Value::as_u64).unwrap_or(0);
            (from..=to).contains(&u64::from(port))
        }
        None => proto == "all",
        _ => false,
    }
}

/// `open port P on TIER`: a rule appended to its firewalls' `ingress`.
pub fn open_port(
    files: &Files,
    base: &Snapshot,
    tier: &str,
    port: u16,
    protocol: &str,
    cidr: Option<&str>,
) -> Result<Outcome, String> {
    let fws = firewalls_of(files, base, tier)?;
    let mut out = Outcome::default();
    let mut seen = BTreeSet::new();
    let mut rule = format!("{{ protocol = {}, ports = {port}", edit::tag(protocol));
    if let Some(c) = cidr {
        rule.push_str(&format!(", cidrs = [{}]", edit::quote(c)));
    }
    rule.push_str(" }");
    for &i in &fws {
        let f = &base.resources[i];
        let rules = f.fields.get("ingress").and_then(Value::as_array);
        if rules.is_some_and(|rs| rs.iter().any(|r| admits(r, port, protocol))) {
            continue;
        }
        let change = match f.field_spans.get("ingress") {
            Some(loc) => {
                let tree = tree_of(files, loc)?;
                let at = origin::node_at(tree, loc).map(|a| tree.peel(a));
                match at.filter(|a| matches!(tree.kind(*a), Kind::Array(_))) {
                    Some(a) => edit::push_element(tree, &loc.file, a, &rule),
                    None => None,
                }
            }
            None => {
                let (loc, tree, e) = expr_of(files, f)?;
                origin::own_record(tree, e).and_then(|rec| {
                    edit::add_field(tree, &loc.file, rec, "ingress", &format!("[{rule}]"))
                })
            }
        }
        .ok_or_else(|| {
            format!(
                "the `ingress` of {} is not an array literal in the stack",
                f.address()
            )
        })?;
        if seen.insert((change.file.clone(), change.span)) {
            out.notes.push(format!(
                "{} admits {protocol} port {port}{} ({}:{})",
                f.address(),
                cidr.map(|c| format!(" from {c}")).unwrap_or_default(),
                change.file.display(),
                line_of(files, &change.file, change.span.0)
            ));
            out.changes.push(change);
        }
    }
    if out.changes.is_empty() {
        return Err(format!("port {port} is already open on tier `{tier}`"));
    }
    Ok(out)
}

/// `close port P on TIER`: the rules for exactly that port leave its firewalls' `ingress`.
pub fn close_port(
    files: &Files,
    base: &Snapshot,
    tier: &str,
    port: u16,
) -> Result<Outcome, String> {
    let fws = firewalls_of(files, base, tier)?;
    let mut out = Outcome::default();
    let mut seen = BTreeSet::new();
    for &i in &fws {
        let f = &base.resources[i];
        let rules = f
            .fields
            .get("ingress")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if !rules
            .iter()
            .any(|r| admits(r, port, "tcp") || admits(r, port, "udp"))
        {
            continue;
        }
        let loc = f.field_spans.get("ingress").ok_or_else(|| {
            format!(
                "the `ingress` of {} is not written in the stack",
                f.address()
            )
        })?;
        let tree = tree_of(files, loc)?;
        let a = origin::node_at(tree, loc)
            .map(|a| tree.peel(a))
            .filter(|a| matches!(tree.kind(*a), Kind::Array(_)))
            .ok_or_else(|| {
                format!(
                    "the `ingress` of {} is not an array literal in the stack",
                    f.address()
                )
            })?;
        let Kind::Array(items) = tree.kind(a) else {
            continue;
        };
        let mut found = false;
        for (k, item) in items.iter().enumerate() {
            let item = tree.peel(*item);
            let Some(p) = origin::field_of(tree, item, "ports") else {
                continue;
            };
            let p = tree.peel(p);
            if let Kind::Number(n) = tree.kind(p)
                && n.trim().parse::<u16>().ok() == Some(port)
            {
                found = true;
                if seen.insert((loc.file.clone(), tree.span(item))) {
                    let c = edit::remove_element(tree, &loc.file, a, k).ok_or("cannot remove")?;
                    out.notes.push(format!(
                        "{} no longer admits port {port} ({}:{})",
                        f.address(),
                        loc.file.display(),
                        line_of(files, &loc.file, tree.span(item).0)
                    ));
                    out.changes.push(c);
                }
            }
        }
        if !found {
            return Err(format!(
                "port {port} of {} is opened by a port range or a computed rule; narrow it by hand",
                f.address()
            ));
        }
    }
    if out.changes.is_empty() {
        return Err(format!("no firewall of tier `{tier}` admits port {port}"));
    }
    Ok(out)
}

/// `tag everything with KEY=VALUE`: the tag goes into each record of tags the resources get
/// their tags from, or a `tags` field is added to the resources that have none.
pub fn tag_all(files: &Files, base: &Snapshot, key: &str, value: &str) -> Result<Outcome, String> {
    let mut out = Outcome::default();
    let mut seen: BTreeSet<(PathBuf, (usize, usize))> = BTreeSet::new();
    let lit = edit::quote(value);
    let mut skipped = Vec::new();
    for r in &base.resources {
        if r.fields
            .get("tags")
            .and_then(|t| t.get(key))
            .and_then(Value::as_str)
            == Some(value)
        {
            continue;
        }
        let change = match r.field_spans.get("tags") {
            Some(loc) => {
                let tree = tree_of(files, loc)?;
                let Some(at) = origin::node_at(tree, loc) else {
                    skipped.push(r.address());
                    continue;
                };
                let mut rec = tree.peel(at);
                if let Kind::Var(v) = tree.kind(rec)
                    && let Some(b) = tree.resolve(rec, v)
                    && let Some(val) = tree.bound_value(b)
                {
                    rec = tree.peel(val);
                }
                if !matches!(tree.kind(rec), Kind::Record(_)) {
                    skipped.push(r.address());
                    continue;
                }
                if !seen.insert((loc.file.clone(), tree.span(rec))) {
                    continue;
                }
                match tree.field(rec, key) {
                    Some((_, f)) => f.value.map(|v| Change {
                        file: loc.file.clone(),
                        span: tree.span(v),
                        text: lit.clone(),
                    }),
                    None => edit::add_field(tree, &loc.file, rec, key, &lit),
                }
            }
            None => {
                let (loc, tree, e) = expr_of(files, r)?;
                let Some(rec) = origin::own_record(tree, e) else {
                    skipped.push(r.address());
                    continue;
                };
                if !seen.insert((loc.file.clone(), tree.span(rec))) {
                    continue;
                }
                edit::add_field(
                    tree,
                    &loc.file,
                    rec,
                    "tags",
                    &format!("{{ {} = {lit} }}", edit::field_name(key)),
                )
            }
        };
        match change {
            Some(c) => out.changes.push(c),
            None => skipped.push(r.address()),
        }
    }
    if !skipped.is_empty() {
        return Err(format!(
            "cannot find where the tags of {} are written",
            list(&skipped)
        ));
    }
    if out.changes.is_empty() {
        return Err(format!("every resource already has the tag {key}={value}"));
    }
    out.notes.push(format!(
        "the tag {key}={value} is written in {} place{}",
        out.changes.len(),
        if out.changes.len() == 1 { "" } else { "s" }
    ));
    Ok(out)
}
