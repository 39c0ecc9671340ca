//! What a proposer is shown: the stack's Nickel files, its compiled graph, a state summary, its
//! cost and its policies — gathered through the read-only view, with every sensitive value
//! taken out before any of it can reach a prompt or a pull request.
//!
//! **Architecture Invariant:** sensitive values are hidden twice: the source text of every
//! sensitive field is replaced by [`HIDDEN`] in the files (spans from the evaluator), and every
//! sensitive value the graph resolved is scrubbed from all the text ([`Scrubber`]), so a secret
//! bound by a `let` elsewhere in a file is hidden too.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chimera_compiler::eval::{EvalOptions, evaluate};
use chimera_compiler::source::{Disk, Source, entry};
use chimera_model::graph::Graph;
use chimera_plans::cost::money;
use chimera_workflow::{ReadOnlyStack, Settings};
use serde_json::Value;

use crate::{AgentError, Context, Recalled, SourceFile};

/// What a hidden value reads as in the files, the graph and the pull request.
pub const HIDDEN: &str = "\"(sensitive)\"";

/// Caps on what the files section may hold (a stack's configuration, not a data dump).
const FILE_CAP: usize = 64 * 1024;
const FILES_CAP: usize = 256 * 1024;

/// The stack as it is before any draft: what the verifier compares against.
pub struct Baseline {
    pub stack: String,
    /// The stack's monthly cost as configured.
    pub monthly: f64,
    pub graph: Graph,
    pub scrubber: Scrubber,
}

/// Replaces every known sensitive value in a text with `(sensitive)`.
#[derive(Debug, Clone, Default)]
pub struct Scrubber {
    secrets: Vec<String>,
}

impl Scrubber {
    /// The sensitive string values of `graph` (short ones, which would hide ordinary words, are
    /// hidden in the files by span instead).
    pub fn of(graph: &Graph) -> Scrubber {
        let mut secrets = BTreeSet::new();
        for r in &graph.resources {
            for key in &r.sensitive {
                collect(r.attrs.get(key), &mut secrets);
            }
        }
        let mut secrets: Vec<String> = secrets.into_iter().filter(|s| s.len() >= 6).collect();
        // Longest first, so a secret that contains another is hidden whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        Scrubber { secrets }
    }

    /// Also hides `texts` (the source text of sensitive fields, which diagnostics may quote).
    pub fn with(mut self, texts: impl IntoIterator<Item = String>) -> Scrubber {
        self.secrets
            .extend(texts.into_iter().filter(|t| t.trim().len() >= 6));
        self.secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        self.secrets.dedup();
        self
    }

    pub fn scrub(&self, text: &str) -> String {
        let mut out = text.to_string();
        for s in &self.secrets {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), "(sensitive)");
            }
            // The value as it is written in a Nickel string literal.
            let escaped = s
                .replace('\\', "\\\\")
                .replace('\n', "\\n")
                .replace('"', "\\\"");
            if escaped != *s && out.contains(escaped.as_str()) {
                out = out.replace(escaped.as_str(), "(sensitive)");
            }
        }
        out
    }
}

fn collect(v: Option<&Value>, out: &mut BTreeSet<String>) {
    match v {
        Some(Value::String(s)) => {
            out.insert(s.clone());
        }
        Some(Value::Array(a)) => a.iter().for_each(|v| collect(Some(v), out)),
        Some(Value::Object(o)) => o.values().for_each(|v| collect(Some(v), out)),
        _ => {}
    }
}

/// Gathers the context of `intent` on the stack at `dir`. `memories` come from the caller
/// (who owns the memory store).
pub async fn gather(
    dir: &Path,
    settings: &Settings,
    intent: &str,
    memories: Vec<Recalled>,
) -> Result<(Context, Baseline), AgentError> {
    let mut stack = ReadOnlyStack::open(dir, settings.clone());
    let graph = stack.compile()?.clone();
    let read = read_stack(dir, &graph);
    let scrubber = Scrubber::of(&graph).with(hidden_texts(dir, &read.hidden));
    let cost = stack.cost()?;
    let files = files(dir, &read, &scrubber);
    let rows = stack.state_rows().await?;
    let history = stack.history().await?;

    let mut state = String::new();
    match history.last() {
        Some(g) => {
            let _ = writeln!(
                state,
                "generation {} ({} resources in state)",
                g.serial,
                rows.len()
            );
        }
        None => state.push_str("empty: nothing has been applied yet\n"),
    }
    let mut per_kind: BTreeMap<String, usize> = BTreeMap::new();
    for r in &rows {
        *per_kind.entry(r.address.kind.to_string()).or_default() += 1;
    }
    for (k, n) in per_kind {
        let _ = writeln!(state, "  {k}: {n}");
    }

    let mut money_text = format!("monthly {} in all\n", money(cost.cost.monthly_after));
    for (kind, sub) in cost
        .cost
        .breakdown(|r| r.address.kind.to_string())
        .into_iter()
    {
        let _ = writeln!(
            money_text,
            "  {kind}: {} resources, {}",
            sub.resources,
            money(sub.monthly_after)
        );
    }
    for r in &cost.cost.resources {
        if let Some(m) = r.monthly_after.filter(|m| *m > 0.0) {
            let _ = writeln!(
                money_text,
                "  {} {}: {}",
                r.address,
                r.native_type.as_deref().unwrap_or(""),
                money(m)
            );
        }
    }

    let ctx = Context {
        intent: intent.to_string(),
        stack: graph.stack.clone(),
        files,
        graph: scrubber.scrub(&graph_lines(&graph)),
        state: scrubber.scrub(&state),
        cost: money_text,
        policies: policies(&stack.policy_dir()),
        memories: memories
            .into_iter()
            .map(|m| Recalled {
                text: scrubber.scrub(&m.text),
                ..m
            })
            .collect(),
        rounds: Vec::new(),
    };
    Ok((
        ctx,
        Baseline {
            stack: graph.stack.clone(),
            monthly: cost.cost.monthly_after,
            graph,
            scrubber,
        },
    ))
}

/// One line per resource: address, provider, region, then its attributes with sensitive ones
/// shown as hidden.
pub fn graph_lines(graph: &Graph) -> String {
    let mut out = String::new();
    for r in &graph.resources {
        let attrs = r.redacted_attrs();
        let shown: Vec<String> = attrs
            .iter()
            .filter(|(k, v)| !v.is_null() && k.as_str() != "name")
            .map(|(k, v)| format!("{k}={}", compact(v)))
            .collect();
        let _ = writeln!(
            out,
            "{} [{} {}] {}",
            r.address,
            r.provider,
            r.region,
            shown.join(" ")
        );
    }
    out
}

fn compact(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 160 {
        let cut: String = s.chars().take(157).collect();
        format!("{cut}...")
    } else {
        s
    }
}

/// The stack's Nickel files under `dir`, with sensitive fields' source text hidden.
fn files(dir: &Path, read: &Read, scrubber: &Scrubber) -> Vec<SourceFile> {
    let hidden = &read.hidden;
    let paths = read.files.clone();
    let mut total = 0;
    let mut out = Vec::new();
    for rel in paths {
        let Ok(mut text) = std::fs::read_to_string(dir.join(&rel)) else {
            continue;
        };
        if let Some(spans) = hidden.get(&rel) {
            // Last first, so earlier offsets stay valid.
            for &(start, end) in spans.iter().rev() {
                if end <= text.len() && text.is_char_boundary(start) && text.is_char_boundary(end) {
                    text.replace_range(start..end, HIDDEN);
                }
            }
        }
        let mut text = scrubber.scrub(&text);
        if text.len() > FILE_CAP || total + text.len() > FILES_CAP {
            let mut cut = FILE_CAP.min(FILES_CAP.saturating_sub(total));
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
            text.push_str("\n# (the rest of this file is not shown: the context is capped)\n");
        }
        total += text.len();
        out.push(SourceFile { path: rel, text });
        if total >= FILES_CAP {
            break;
        }
    }
    out
}

/// The source text under `hidden`'s spans.
fn hidden_texts(dir: &Path, hidden: &BTreeMap<PathBuf, Vec<(usize, usize)>>) -> Vec<String> {
    let mut out = Vec::new();
    for (rel, spans) in hidden {
        let Ok(text) = std::fs::read_to_string(dir.join(rel)) else {
            continue;
        };
        out.extend(
            spans
                .iter()
                .filter_map(|&(a, b)| text.get(a..b))
                .map(str::to_string),
        );
    }
    out
}

/// `name` (a source file as the evaluator named it) relative to the stack directory `dir`, when
/// it is inside it.
pub fn within(dir: &Path, name: &str) -> Option<PathBuf> {
    let canon = |p: &Path| std::fs::canonicalize(p).ok();
    let root = canon(dir)?;
    let file = canon(Path::new(name)).or_else(|| canon(&dir.join(name)))?;
    file.strip_prefix(&root).ok().map(Path::to_path_buf)
}

/// What the evaluator read of the stack: its own files (relative to `dir`, the ones the stack
/// actually uses — an unused `.ncl` lying beside it is never shown), and per file the byte
/// ranges of the values of sensitive fields.
struct Read {
    files: Vec<PathBuf>,
    hidden: BTreeMap<PathBuf, Vec<(usize, usize)>>,
}

fn read_stack(dir: &Path, graph: &Graph) -> Read {
    let names: BTreeSet<&str> = graph
        .resources
        .iter()
        .flat_map(|r| r.sensitive.iter().map(String::as_str))
        .collect();
    let mut hidden: BTreeMap<PathBuf, Vec<(usize, usize)>> = BTreeMap::new();
    let disk: Arc<dyn Source> = Arc::new(Disk::new());
    let file = entry(disk.as_ref(), dir);
    let evaluated = evaluate(&disk, &file, &EvalOptions::default());
    let mut files: Vec<PathBuf> = evaluated
        .sources
        .files()
        .iter()
        .filter_map(|f| within(dir, &f.name))
        .filter(|rel| {
            rel.extension().and_then(|e| e.to_str()) == Some("ncl")
                && rel
                    .components()
                    .next()
                    .is_none_or(|c| !c.as_os_str().eq_ignore_ascii_case(POLICIES))
        })
        .collect();
    files.sort();
    files.dedup();
    if let Ok(ev) = &evaluated.result {
        for r in &ev.resources {
            for (field, span) in r.field_spans.iter() {
                if !names.contains(field.as_str()) {
                    continue;
                }
                let Some(src) = evaluated.sources.get(span.file) else {
                    continue;
                };
                let Some(rel) = within(dir, &src.name) else {
                    continue;
                };
                hidden
                    .entry(rel)
                    .or_default()
                    .push((span.start as usize, span.end as usize));
            }
        }
    }
    for spans in hidden.values_mut() {
        // Outer spans first at one start, then overlaps merged: a secret is hidden whole.
        spans.sort_by_key(|&(a, b)| (a, std::cmp::Reverse(b)));
        let mut kept: Vec<(usize, usize)> = Vec::new();
        for (a, b) in spans.drain(..) {
            match kept.last_mut() {
                Some(last) if a < last.1 => last.1 = last.1.max(b),
                _ => kept.push((a, b)),
            }
        }
        *spans = kept;
    }
    Read { files, hidden }
}

/// The stack's policy directory, which drafts may not edit.
pub const POLICIES: &str = "policies";

/// The policy files of the stack and the rules they hold, by name.
fn policies(dir: &Path) -> String {
    let mut out = String::new();
    let mut paths = Vec::new();
    walk_all(dir, &mut paths);
    paths.retain(|p| {
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default();
        (name.ends_with(".rego") || name.ends_with(".ncl")) && !name.contains("_test.")
    });
    paths.sort();
    for p in paths {
        let text = std::fs::read_to_string(&p).unwrap_or_default();
        let rules: Vec<&str> = text
            .lines()
            .filter_map(|l| {
                let l = l.trim_start();
                (l.starts_with("deny") || l.starts_with("warn"))
                    .then(|| l.split([' ', '[', '{', '=']).next().unwrap_or(l))
            })
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let _ = writeln!(
            out,
            "{}: {}",
            p.strip_prefix(dir).unwrap_or(&p).display(),
            if rules.is_empty() {
                "(rules)".to_string()
            } else {
                rules.join(", ")
            }
        );
    }
    if out.is_empty() {
        out.push_str("none\n");
    }
    out
}

fn walk_all(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let Ok(kind) = e.file_type() else { continue };
        if kind.is_dir() {
            walk_all(&e.path(), out);
        } else if kind.is_file() {
            out.push(e.path());
        }
    }
}
