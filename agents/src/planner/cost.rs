//! The intents about money and load: cut the monthly cost by a fraction under constraints (a
//! greedy search over fewer instances, smaller sizes and the cheapest provider, each step
//! priced by evaluating the edited stack), and rightsize instances from their utilisation.

use std::collections::BTreeMap;

use chimera_providers::Utilisation;

use super::edit::{self, Change};
use super::intent::SIZES;
use super::model::{Files, Loc, Snapshot};
use super::ops::{self, Lit, Outcome};
use super::origin;
use super::syntax::Kind;

/// At most this many steps of the search.
const STEPS: usize = 8;

/// Below both: the instance is too big. CPU and memory, percent.
pub const LOW: (f64, f64) = (20.0, 40.0);
/// Above either: the instance is too small.
pub const HIGH: (f64, f64) = (80.0, 85.0);

/// A literal the search may change, and how.
#[derive(Debug, Clone)]
enum Knob {
    /// A generate count.
    Count(Loc),
    /// An instance size class.
    Size(Loc),
    /// A provider.
    Provider(Loc),
    /// An instance given by `cpu` and `memory_gib` (both halved at once).
    Shape(Loc, Loc),
    /// A volume type (`'ssd` → `'standard`).
    VolumeType(Loc),
}

impl Knob {
    fn loc(&self) -> &Loc {
        match self {
            Knob::Count(l)
            | Knob::Size(l)
            | Knob::Provider(l)
            | Knob::Shape(l, _)
            | Knob::VolumeType(l) => l,
        }
    }
}

fn knobs(files: &Files, base: &Snapshot, providers: bool) -> Vec<Knob> {
    let mut out: BTreeMap<Loc, Knob> = BTreeMap::new();
    for r in &base.resources {
        let Some(loc) = &r.span else { continue };
        let Some(tree) = files.tree(&loc.file) else {
            continue;
        };
        if r.kind == "instance"
            && let Some(e) = origin::node_at(tree, loc)
            && let Some((_, n)) = origin::generator(tree, e)
        {
            for l in origin::literals(tree, n) {
                if matches!(tree.kind(l), Kind::Number(_)) {
                    let at = Loc {
                        file: loc.file.clone(),
                        span: tree.span(l),
                    };
                    out.insert(at.clone(), Knob::Count(at));
                }
            }
        }
        let mut field = |f: &str, make: fn(Loc) -> Knob| {
            if let Some(fl) = r.field_spans.get(f)
                && let Some(t) = files.tree(&fl.file)
                && let Some(at) = origin::node_at(t, fl)
            {
                for l in origin::literals(t, at) {
                    if matches!(t.kind(l), Kind::Enum(_)) {
                        let at = Loc {
                            file: fl.file.clone(),
                            span: t.span(l),
                        };
                        out.insert(at.clone(), make(at));
                    }
                }
            }
        };
        if r.kind == "instance" {
            field("size", Knob::Size);
        }
        if r.kind == "volume" {
            field("type", Knob::VolumeType);
        }
        if providers {
            field("provider", Knob::Provider);
        }
        if r.kind == "instance" && !r.fields.contains_key("size") {
            let number = |f: &str| -> Option<Loc> {
                let fl = r.field_spans.get(f)?;
                let t = files.tree(&fl.file)?;
                let lits = origin::literals(t, origin::node_at(t, fl)?);
                match lits.as_slice() {
                    [l] if matches!(t.kind(*l), Kind::Number(_)) => Some(Loc {
                        file: fl.file.clone(),
                        span: t.span(*l),
                    }),
                    _ => None,
                }
            };
            if let (Some(c), Some(m)) = (number("cpu"), number("memory_gib")) {
                out.insert(c.clone(), Knob::Shape(c, m));
            }
        }
    }
    out.into_values().collect()
}

/// The text a knob has in `state`.
fn current<'a>(files: &'a Files, state: &'a BTreeMap<Loc, String>, at: &Loc) -> &'a str {
    state
        .get(at)
        .map(String::as_str)
        .unwrap_or(&files.texts[&at.file][at.span.0..at.span.1])
}

fn enum_name(text: &str) -> String {
    text.trim()
        .trim_start_matches('\'')
        .trim_matches('"')
        .to_string()
}

fn changes(state: &BTreeMap<Loc, String>) -> Vec<Change> {
    state
        .iter()
        .map(|(l, t)| Change {
            file: l.file.clone(),
            span: l.span,
            text: t.clone(),
        })
        .collect()
}

fn price(files: &Files, state: &BTreeMap<Loc, String>) -> Option<(f64, Snapshot)> {
    let texts = edit::apply(&files.texts, &changes(state)).ok()?;
    let snap = files.evaluate(&texts).ok()?;
    Some((snap.monthly?, snap))
}

/// `cut cost by N% keeping at least K TIER`; `providers`: may move resources to the cheapest
/// provider. Returns the changes, the cost before and the cost the changes reach.
pub fn cut(
    files: &Files,
    base: &Snapshot,
    fraction: f64,
    keep: &[(String, u64)],
    providers: bool,
) -> Result<(Outcome, f64, f64), String> {
    let before = base
        .monthly
        .ok_or("the stack does not compile, so it has no price to cut")?;
    if before <= 0.0 {
        return Err(
            "the stack costs $0.00 a month (it runs on the free local cloud): there is nothing to cut"
                .into(),
        );
    }
    for (tier, _) in keep {
        if base.tier(tier, Some("instance")).is_empty() {
            return Err(format!("no instance tier `{tier}` to keep"));
        }
    }
    let minimum = |s: &Snapshot| {
        keep.iter()
            .all(|(t, k)| s.tier(t, Some("instance")).len() as u64 >= *k)
    };
    let goal = before * (1.0 - fraction);
    let all = knobs(files, base, providers);
    let mut state: BTreeMap<Loc, String> = BTreeMap::new();
    let mut cost = before;
    let mut steps = Vec::new();
    for _ in 0..STEPS {
        if cost <= goal + 1e-9 {
            break;
        }
        let mut options: Vec<(f64, BTreeMap<Loc, String>, String)> = Vec::new();
        for k in &all {
            let at = k.loc();
            let now = current(files, &state, at).to_string();
            let with = |text: String| {
                let mut s = state.clone();
                s.insert(at.clone(), text);
                s
            };
            match k {
                Knob::Count(_) => {
                    let Ok(n) = now.trim().parse::<u64>() else {
                        continue;
                    };
                    if n <= 1 {
                        continue;
                    }
                    let Some(c_min) = lo_bound(files, &state, at, n, &minimum) else {
                        continue;
                    };
                    let s_min = with(c_min.to_string());
                    let Some((cost_min, _)) = price(files, &s_min) else {
                        continue;
                    };
                    if cost_min >= cost || c_min >= n {
                        continue;
                    }
                    // Linear in the count: just enough fewer to reach the goal.
                    let per = (cost - cost_min) / (n - c_min) as f64;
                    let fewer = (((cost - goal) / per).ceil().max(1.0) as u64).min(n - c_min);
                    let c = n - fewer;
                    let s = with(c.to_string());
                    if let Some((p, _)) = price(files, &s) {
                        options.push((p, s, format!("count {n} → {c}")));
                    }
                }
                Knob::Size(_) => {
                    let size = enum_name(&now);
                    let Some(i) = SIZES.iter().position(|s| *s == size) else {
                        continue;
                    };
                    if i == 0 {
                        continue;
                    }
                    let s = with(edit::tag(SIZES[i - 1]));
                    if let Some((p, snap)) = price(files, &s)
                        && minimum(&snap)
                    {
                        options.push((p, s, format!("size {size} → {}", SIZES[i - 1])));
                    }
                }
                Knob::Shape(c, m) => {
                    let cpu: f64 = now.trim().parse().unwrap_or(0.0);
                    let mem: f64 = current(files, &state, m).trim().parse().unwrap_or(0.0);
                    let (c2, m2) = ((cpu / 2.0).floor().max(1.0), (mem / 2.0).max(0.5));
                    if c2 >= cpu && m2 >= mem {
                        continue;
                    }
                    let mut s = with(format!("{c2}"));
                    s.insert(m.clone(), format!("{m2}"));
                    let _ = c;
                    if let Some((p, snap)) = price(files, &s)
                        && minimum(&snap)
                    {
                        options.push((
                            p,
                            s,
                            format!("cpu {cpu} → {c2} and memory {mem} GiB → {m2} GiB"),
                        ));
                    }
                }
                Knob::VolumeType(_) => {
                    if enum_name(&now) != "ssd" {
                        continue;
                    }
                    let s = with(edit::tag("standard"));
                    if let Some((p, snap)) = price(files, &s)
                        && minimum(&snap)
                    {
                        options.push((p, s, "volume type ssd → standard".to_string()));
                    }
                }
                Knob::Provider(_) => {
                    let p0 = enum_name(&now);
                    if matches!(p0.as_str(), "cheapest" | "local") {
                        continue;
                    }
                    let s = with(edit::tag("cheapest"));
                    if let Some((p, snap)) = price(files, &s)
                        && minimum(&snap)
                    {
                        options.push((p, s, format!("provider {p0} → cheapest")));
                    }
                }
            }
        }
        options.retain(|o| o.0 < cost - 1e-9);
        if options.is_empty() {
            break;
        }
        // Enough: the gentlest option that reaches the goal; else the biggest saving.
        let Some(pick) = options
            .iter()
            .filter(|o| o.0 <= goal + 1e-9)
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .or_else(|| options.iter().min_by(|a, b| a.0.total_cmp(&b.0)))
            .cloned()
        else {
            break;
        };
        let at = pick
            .1
            .iter()
            .find(|(l, t)| state.get(*l) != Some(*t))
            .map(|(l, _)| l.clone());
        if let Some(at) = at {
            steps.push(format!(
                "{} at {}:{} (${cost:.2} → ${:.2} a month)",
                pick.2,
                at.file.display(),
                ops::line_of(files, &at.file, at.span.0),
                pick.0
            ));
        }
        cost = pick.0;
        state = pick.1;
    }
    if state.is_empty() {
        return Err(format!(
            "no fewer instances, smaller size or cheaper provider lowers the monthly cost of ${before:.2} under the constraints"
        ));
    }
    let out = Outcome {
        changes: changes(&state)
            .into_iter()
            .filter(|c| files.texts[&c.file][c.span.0..c.span.1] != c.text)
            .collect(),
        notes: steps,
    };
    Ok((out, before, cost))
}

/// The smallest count from 1 to `n` the constraints allow (they hold for more when they hold
/// for fewer), by halving.
fn lo_bound(
    files: &Files,
    state: &BTreeMap<Loc, String>,
    at: &Loc,
    n: u64,
    ok: &dyn Fn(&Snapshot) -> bool,
) -> Option<u64> {
    let allowed = |c: u64| {
        let mut s = state.clone();
        s.insert(at.clone(), c.to_string());
        price(files, &s).is_some_and(|(_, snap)| ok(&snap))
    };
    if allowed(1) {
        return Some(1);
    }
    if !allowed(n) {
        return None;
    }
    let (mut lo, mut hi) = (1u64, n);
    while hi - lo > 1 {
        let mid = (lo + hi) / 2;
        if allowed(mid) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Some(hi)
}

/// `rightsize from utilisation`: one size down for an instance below [`LOW`], one up above
/// [`HIGH`]; instances that share a size expression move only when they agree.
pub fn rightsize(
    files: &Files,
    base: &Snapshot,
    utilisation: &BTreeMap<String, Utilisation>,
) -> Result<Outcome, String> {
    let mut wanted: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    let mut reasons = Vec::new();
    let mut known = 0;
    for (i, r) in base.resources.iter().enumerate() {
        if r.kind != "instance" {
            continue;
        }
        let Some(u) = utilisation.get(&r.address()) else {
            continue;
        };
        known += 1;
        let Some(size) = r.str_field("size") else {
            continue;
        };
        let Some(at) = SIZES.iter().position(|s| *s == size) else {
            continue;
        };
        let to = if u.cpu_percent < LOW.0 && u.memory_percent < LOW.1 && at > 0 {
            SIZES[at - 1]
        } else if (u.cpu_percent > HIGH.0 || u.memory_percent > HIGH.1) && at + 1 < SIZES.len() {
            SIZES[at + 1]
        } else {
            continue;
        };
        reasons.push(format!(
            "{} runs at {:.0}% CPU and {:.0}% memory: {size} → {to}",
            r.address(),
            u.cpu_percent,
            u.memory_percent
        ));
        wanted.entry(to.to_string()).or_default().push(i);
    }
    if known == 0 {
        return Err(
            "no utilisation is known for the stack's instances (apply it on a cloud that reports utilisation, e.g. the local cloud)"
                .into(),
        );
    }
    if wanted.is_empty() {
        return Err(format!(
            "every instance's utilisation is within bounds (below {:.0}% CPU and {:.0}% memory is too big, above {:.0}% CPU or {:.0}% memory too small): nothing to rightsize",
            LOW.0, LOW.1, HIGH.0, HIGH.1
        ));
    }
    let mut out = Outcome {
        notes: reasons,
        ..Outcome::default()
    };
    let mut failed = Vec::new();
    for (size, targets) in &wanted {
        match ops::set_field(files, base, targets, "size", &Lit::Tag(size.clone()), false) {
            Ok(o) => {
                out.changes.extend(o.changes);
                out.notes.extend(o.notes);
            }
            Err(e) => failed.push(e),
        }
    }
    if out.changes.is_empty() {
        return Err(format!("cannot rightsize: {}", failed.join("; ")));
    }
    for f in failed {
        out.notes.push(format!("left as is: {f}"));
    }
    Ok(out)
}
