//! Where a value comes from: from the span the compiler recorded for a resource's field to the
//! literal in the source that produces it — through a variable to its `let`, a record field
//! (a `| default` at the top level), a function parameter to the arguments of its calls, a
//! field access to the record it reads — and the `std.array.generate … N` that repeats a
//! resource.

use super::model::Loc;
use super::syntax::{Binding, Id, Kind, Tree};

/// How deep a chain of variables is followed.
const DEPTH: usize = 12;

/// The literal nodes (numbers, strings, enum tags, booleans) the value at `at` may come from,
/// in source order.
pub fn literals(tree: &Tree, at: Id) -> Vec<Id> {
    let mut out = Vec::new();
    walk(tree, at, &mut out, 0);
    out.sort_by_key(|&i| tree.span(i));
    out.dedup();
    out
}

fn walk(tree: &Tree, id: Id, out: &mut Vec<Id>, depth: usize) {
    if depth > DEPTH {
        return;
    }
    let id = tree.peel(id);
    match tree.kind(id) {
        Kind::Number(_) | Kind::Str(_) | Kind::Enum(_) | Kind::Bool(_) => out.push(id),
        Kind::Var(name) => {
            if let Some(b) = tree.resolve(id, name) {
                follow(tree, b, out, depth + 1);
            }
        }
        Kind::Access { .. } => {
            let Some(path) = tree.path(id) else { return };
            if let Some(v) = access(tree, id, &path) {
                walk(tree, v, out, depth + 1);
            }
        }
        Kind::Let { body, .. } => walk(tree, *body, out, depth + 1),
        _ => {}
    }
}

/// What a binding's value comes from; a parameter's is each call's argument.
fn follow(tree: &Tree, b: Binding, out: &mut Vec<Id>, depth: usize) {
    match b {
        Binding::Param { node, index } => {
            for arg in call_args(tree, node, index) {
                walk(tree, arg, out, depth + 1);
            }
        }
        _ => {
            if let Some(v) = tree.bound_value(b) {
                walk(tree, v, out, depth + 1);
            }
        }
    }
}

/// The node `a.b.c` (used at `at`) reads, when `a` is bound to record literals.
pub fn access(tree: &Tree, at: Id, path: &[String]) -> Option<Id> {
    let (head, rest) = path.split_first()?;
    let b = tree.resolve(at, head)?;
    let mut cur = tree.bound_value(b)?;
    for f in rest {
        cur = field_of(tree, cur, f)?;
    }
    Some(cur)
}

/// Field `name` of the record (or merge of records) `id`, the last one when several define it.
pub fn field_of(tree: &Tree, id: Id, name: &str) -> Option<Id> {
    let id = tree.let_body(id);
    tree.merge_operands(id).into_iter().rev().find_map(|op| {
        let op = tree.peel(op);
        match tree.kind(op) {
            Kind::Record(_) => tree.field(op, name).and_then(|(_, f)| f.value),
            Kind::Var(v) => {
                let b = tree.resolve(op, v)?;
                let val = tree.bound_value(b)?;
                field_of(tree, val, name)
            }
            _ => None,
        }
    })
}

/// The `index`th argument of every call of the function `fun` (a `let f = fun … in` binding,
/// called by name).
pub fn call_args(tree: &Tree, fun: Id, index: usize) -> Vec<Id> {
    let Some((let_node, name)) = binding_of(tree, fun) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (id, n) in tree.nodes.iter().enumerate() {
        let Kind::App { head, args } = &n.kind else {
            continue;
        };
        let Kind::Var(h) = tree.kind(*head) else {
            continue;
        };
        if *h != name {
            continue;
        }
        if let Some(Binding::Let { node, .. }) = tree.resolve(*head, h)
            && node == let_node
            && let Some(a) = args.get(index)
        {
            out.push(*a);
        }
        let _ = id;
    }
    out
}

/// The `let` node and name that bind `value` (looking through annotations).
pub fn binding_of(tree: &Tree, value: Id) -> Option<(Id, String)> {
    let mut v = value;
    loop {
        let parent = tree.node(v).parent?;
        match tree.kind(parent) {
            Kind::Annotated(_) => v = parent,
            Kind::Let { bindings, .. } => {
                return bindings
                    .iter()
                    .find(|(_, b)| *b == v)
                    .and_then(|(n, _)| n.clone().map(|n| (parent, n)));
            }
            _ => return None,
        }
    }
}

/// The `std.array.generate f N` whose function builds the node `at`: the call and its count.
pub fn generator(tree: &Tree, at: Id) -> Option<(Id, Id)> {
    for anc in tree.ancestors(at) {
        if let Kind::Fun { .. } = tree.kind(anc)
            && let Some(p) = tree.node(anc).parent
            && let Kind::App { head, args } = tree.kind(p)
            && args.first() == Some(&anc)
            && tree
                .path(*head)
                .is_some_and(|h| h == ["std", "array", "generate"])
            && let Some(count) = args.get(1)
        {
            return Some((p, *count));
        }
    }
    None
}

/// The node at `loc` in `tree`: the innermost node with exactly that span, else the innermost
/// containing it.
pub fn node_at(tree: &Tree, loc: &Loc) -> Option<Id> {
    tree.at(loc.span).or_else(|| tree.containing(loc.span))
}

/// The record literal a resource expression ends with (`c.Instance & base & { … }` → the
/// `{ … }`), where a field of this resource alone can be added.
pub fn own_record(tree: &Tree, expr: Id) -> Option<Id> {
    let e = tree.let_body(expr);
    tree.merge_operands(e)
        .into_iter()
        .rev()
        .map(|o| tree.peel(o))
        .find(|o| matches!(tree.kind(*o), Kind::Record(_)))
}
