//! `moved` entries: renames of resources, as Terraform's `moved` blocks.
//!
//! Each entry is checked where it was written: both addresses well formed, the kind kept, no
//! address moved from or to twice, no cycle, `from` no longer declared and the chain's last
//! `to` declared. Chains (a to b, b to c) are resolved as Terraform does (a and b both move to
//! c) and reported as a warning naming the chain. Whether `from` is in state is the planner's
//! question: an entry whose move already happened stays in the file as history.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chimera_model::graph::{Graph, Moved};
use chimera_model::hash::Hasher;
use chimera_model::{Address, ContentHash, Diagnostic, SourceMap, Span, codes};

use crate::eval::RawMove;

const FIX: &str =
    "write `moved = [{ from = \"instance.web-0\", to = \"instance.front-0\" }]` (KIND.NAME)";

/// One entry whose addresses parsed.
struct Entry<'a> {
    from: Address,
    to: Address,
    raw: &'a RawMove,
}

/// The stack's moves with chains resolved, sorted by `from`; problems are appended to
/// `diags` (nothing is returned when one is an error).
pub fn lower(
    raw: &[RawMove],
    graph: &Graph,
    sources: &SourceMap,
    diags: &mut Vec<Diagnostic>,
) -> Vec<Moved> {
    let loc = |s: Option<Span>| s.and_then(|s| sources.locate(s));
    let mut errors = 0;
    let mut error = |d: Diagnostic, diags: &mut Vec<Diagnostic>| {
        errors += 1;
        diags.push(d);
    };

    // Each entry on its own: addresses, a move to itself, a change of kind.
    let mut entries: Vec<Entry> = Vec::new();
    for r in raw {
        let parse = |text: &Option<String>, field: &str| -> Result<Address, String> {
            let text = text
                .as_deref()
                .ok_or_else(|| format!("the entry has no `{field}`"))?;
            text.parse::<Address>()
                .map_err(|e| format!("`{field}`: {e}"))
        };
        let (from, to) = match (parse(&r.from, "from"), parse(&r.to, "to")) {
            (Ok(f), Ok(t)) => (f, t),
            (Err(e), _) | (_, Err(e)) => {
                let at = if r
                    .from
                    .as_deref()
                    .is_some_and(|f| f.parse::<Address>().is_err())
                {
                    r.from_span
                } else {
                    r.to_span
                };
                error(
                    Diagnostic::error(codes::MOVED_INVALID, "invalid `moved` entry")
                        .detail(format!("{e}; {FIX}"))
                        .at(loc(at.or(r.span))),
                    diags,
                );
                continue;
            }
        };
        if from == to {
            error(
                Diagnostic::error(codes::MOVED_INVALID, "a resource is moved to itself")
                    .detail(format!(
                        "this entry moves {from} to {to}, which changes nothing; remove it"
                    ))
                    .address(&to)
                    .at(loc(r.span)),
                diags,
            );
            continue;
        }
        if from.kind != to.kind {
            error(
                Diagnostic::error(codes::MOVED_KIND_CHANGE, "a move cannot change a resource's kind")
                    .detail(format!(
                        "{from} is a {} and {to} a {}: a move renames a resource and keeps its kind; to replace one with the other, remove this entry (the plan then deletes {from} and creates {to})",
                        from.kind, to.kind
                    ))
                    .address(&to)
                    .at(loc(r.span)),
                diags,
            );
            continue;
        }
        entries.push(Entry { from, to, raw: r });
    }

    // The same `from` or `to` twice: the first entry stands, each later one is reported.
    let mut by_from: HashMap<&Address, usize> = HashMap::new();
    let mut by_to: HashMap<&Address, usize> = HashMap::new();
    let mut kept: Vec<usize> = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        if let Some(&first) = by_from.get(&e.from) {
            error(
                Diagnostic::error(codes::MOVED_DUPLICATE, "an address is moved twice")
                    .detail(format!(
                        "{} is moved by two entries (to {} and to {}); a resource can move to one address only: remove one of them",
                        e.from, entries[first].to, e.to
                    ))
                    .address(&e.from)
                    .at(loc(e.raw.from_span.or(e.raw.span)))
                    .label(
                        loc(entries[first].raw.from_span.or(entries[first].raw.span)),
                        "first moved here",
                    ),
                diags,
            );
            continue;
        }
        if let Some(&first) = by_to.get(&e.to) {
            error(
                Diagnostic::error(codes::MOVED_DUPLICATE, "two resources are moved to one address")
                    .detail(format!(
                        "{} and {} are both moved to {}; only one resource can have that address: remove one of the entries, or move the other elsewhere",
                        entries[first].from, e.from, e.to
                    ))
                    .address(&e.to)
                    .at(loc(e.raw.to_span.or(e.raw.span)))
                    .label(
                        loc(entries[first].raw.to_span.or(entries[first].raw.span)),
                        "first moved here",
                    ),
                diags,
            );
            continue;
        }
        by_from.insert(&e.from, i);
        by_to.insert(&e.to, i);
        kept.push(i);
    }

    // `from` must be gone from the stack: a declared address is a resource, not a rename.
    for &i in &kept {
        let e = &entries[i];
        if graph.get(&e.from).is_some() {
            error(
                Diagnostic::error(codes::MOVED_FROM_DECLARED, "a moved address is still declared")
                    .detail(format!(
                        "{} is moved to {}, but the stack still declares {}; rename the resource to {} in `resources`, or remove this entry",
                        e.from, e.to, e.from, e.to
                    ))
                    .address(&e.from)
                    .at(loc(e.raw.from_span.or(e.raw.span))),
                diags,
            );
        }
    }

    // Cycles: with every `from` and `to` unique, entries form paths and cycles.
    let next = |a: &Address| by_from.get(a).copied();
    let mut in_cycle: BTreeSet<usize> = BTreeSet::new();
    for &i in &kept {
        if in_cycle.contains(&i) {
            continue;
        }
        let mut path = vec![i];
        let mut cur = i;
        while let Some(j) = next(&entries[cur].to) {
            if j == i {
                break;
            }
            if path.len() > kept.len() {
                break;
            }
            path.push(j);
            cur = j;
        }
        if next(&entries[cur].to) != Some(i) {
            continue;
        }
        in_cycle.extend(path.iter().copied());
        let first = *path.iter().min().unwrap_or(&i);
        let start = path.iter().position(|&p| p == first).unwrap_or(0);
        path.rotate_left(start);
        let mut names: Vec<String> = path.iter().map(|&p| entries[p].from.to_string()).collect();
        names.push(entries[first].from.to_string());
        let mut d = Diagnostic::error(codes::MOVED_CYCLE, "`moved` entries form a cycle")
            .detail(format!(
                "{}: no address is the end of these moves; remove the entry that closes the cycle",
                names.join(" → ")
            ))
            .address(&entries[first].from)
            .at(loc(entries[first].raw.span));
        for &p in &path[1..] {
            d = d.label(loc(entries[p].raw.span), "part of the cycle");
        }
        error(d, diags);
    }

    // Chains, resolved to their last address, which must be a resource of the stack. Each
    // chain starts at an entry whose `from` is no entry's `to`.
    let mut resolved: BTreeMap<Address, Address> = BTreeMap::new();
    for &i in &kept {
        if in_cycle.contains(&i) || by_to.contains_key(&entries[i].from) {
            continue;
        }
        let mut chain = vec![i];
        let mut cur = i;
        while let Some(j) = next(&entries[cur].to) {
            chain.push(j);
            cur = j;
        }
        let last = &entries[cur];
        if graph.get(&last.to).is_none() {
            let similar = graph
                .resources
                .iter()
                .filter(|r| r.address.kind == last.to.kind)
                .map(|r| {
                    (
                        strsim::jaro_winkler(&r.address.name, &last.to.name),
                        r.address.to_string(),
                    )
                })
                .filter(|(score, _)| *score > 0.8)
                .max_by(|a, b| a.0.total_cmp(&b.0))
                .map(|(_, a)| format!(" (did you mean {a}?)"))
                .unwrap_or_default();
            error(
                Diagnostic::error(codes::MOVED_TARGET_MISSING, "a move's target is not in the stack")
                    .detail(format!(
                        "{} is moved to {}, which the stack does not declare{similar}; declare it in `resources`, or correct `to`",
                        last.from, last.to
                    ))
                    .address(&last.to)
                    .at(loc(last.raw.to_span.or(last.raw.span))),
                diags,
            );
            continue;
        }
        if chain.len() > 1 {
            let mut names: Vec<String> =
                chain.iter().map(|&p| entries[p].from.to_string()).collect();
            names.push(last.to.to_string());
            let mut d = Diagnostic::warning(codes::MOVED_CHAIN, "`moved` entries chain")
                .detail(format!(
                    "{}: each of these addresses found in state moves to {}, as in Terraform; nothing to fix unless that is not what you meant",
                    names.join(" → "),
                    last.to
                ))
                .address(&last.to)
                .at(loc(entries[i].raw.span));
            for &p in &chain[1..] {
                d = d.label(loc(entries[p].raw.span), "continues here");
            }
            diags.push(d);
        }
        for &p in &chain {
            resolved.insert(entries[p].from.clone(), last.to.clone());
        }
    }
    if errors > 0 {
        return Vec::new();
    }
    resolved
        .into_iter()
        .map(|(from, to)| Moved { from, to })
        .collect()
}

/// The graph's hash with its moves: unchanged without any, so a stack that never used `moved`
/// keeps its hashes; with some, adding or removing an entry changes the hash (and with it the
/// evaluation cache's plan memo).
pub fn graph_hash(base: ContentHash, moved: &[Moved]) -> ContentHash {
    if moved.is_empty() {
        return base;
    }
    let mut h = Hasher::new();
    h.part(b"chimera-graph-moved-v1").part(&base.0);
    for m in moved {
        h.part(m.from.to_string().as_bytes())
            .part(m.to.to_string().as_bytes());
    }
    h.finish()
}
