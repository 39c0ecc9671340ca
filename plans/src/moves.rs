//! Moves: a stack's `moved` entries applied to the prior state before planning.
//!
//! A row at `from` (with none at `to`) is planned as the resource `to`: it is renamed, and
//! every other row's references to it (dependencies, `${chimera:…}` placeholders) follow, so
//! the plan diffs it against `to`'s configuration (no-op, update or replace) and never deletes
//! and creates it. A `from` that is not in state is a move that already happened, as in
//! Terraform; state holding both `from` and `to` is a conflict (E0202).

use std::collections::BTreeMap;

use chimera_model::graph::Moved;
use chimera_model::{Address, Diagnostic, Piece, Ref, StateResource, codes};
use serde_json::Value;

/// Prior rows with the moves that apply done, and which address each moved row had.
#[derive(Debug, Clone, PartialEq)]
pub struct MovedRows {
    pub rows: Vec<StateResource>,
    /// `to` → `from`, for each move that applies.
    pub moved_from: BTreeMap<Address, Address>,
}

/// The prior `rows` with `moved` applied; `None` when no move applies (nothing is copied).
pub fn apply(
    rows: &[StateResource],
    moved: &[Moved],
) -> Result<Option<MovedRows>, Vec<Diagnostic>> {
    if moved.is_empty() {
        return Ok(None);
    }
    let present: std::collections::HashSet<&Address> = rows.iter().map(|r| &r.address).collect();
    let mut renames: BTreeMap<&Address, &Address> = BTreeMap::new();
    let mut diags = Vec::new();
    for m in moved {
        if !present.contains(&m.from) {
            continue;
        }
        if present.contains(&m.to) {
            diags.push(
                Diagnostic::error(codes::MOVE_CONFLICT, "a move's target already exists in state")
                    .detail(format!(
                        "{} is moved to {}, but state holds both; if {} is the resource you want, remove the `moved` entry (the plan then deletes {}); otherwise rename the new resource and keep the entry",
                        m.from, m.to, m.to, m.from
                    ))
                    .address(&m.to),
            );
            continue;
        }
        renames.insert(&m.from, &m.to);
    }
    if !diags.is_empty() {
        return Err(diags);
    }
    if renames.is_empty() {
        return Ok(None);
    }
    let rows = rows
        .iter()
        .map(|r| {
            let mut row = r.clone();
            if let Some(to) = renames.get(&row.address) {
                row.address = (*to).clone();
            }
            rename_refs(&mut row, &|a| renames.get(a).map(|t| (*t).clone()));
            row
        })
        .collect();
    Ok(Some(MovedRows {
        rows,
        moved_from: renames
            .into_iter()
            .map(|(from, to)| (to.clone(), from.clone()))
            .collect(),
    }))
}

/// Points a row's dependencies and `${chimera:…}` references at the new addresses `rename`
/// gives. Returns whether anything changed.
pub fn rename_refs(row: &mut StateResource, rename: &dyn Fn(&Address) -> Option<Address>) -> bool {
    let mut changed = false;
    for d in &mut row.deps {
        if let Some(to) = rename(d) {
            *d = to;
            changed = true;
        }
    }
    for v in row.attrs.values_mut() {
        changed |= rename_in(v, rename);
    }
    changed
}

fn rename_in(v: &mut Value, rename: &dyn Fn(&Address) -> Option<Address>) -> bool {
    match v {
        Value::String(s) if Ref::contains_placeholder(s) => {
            let Ok(pieces) = Ref::split(s) else {
                return false;
            };
            let mut changed = false;
            let mut out = String::with_capacity(s.len());
            for p in pieces {
                match p {
                    Piece::Text(t) => out.push_str(t),
                    Piece::Ref(r) => match rename(&r.address()) {
                        Some(to) => {
                            changed = true;
                            out.push_str(&Ref::new(to.kind, to.name, r.attr).placeholder());
                        }
                        None => out.push_str(&r.placeholder()),
                    },
                }
            }
            if changed {
                *s = out;
            }
            changed
        }
        Value::Array(items) => items
            .iter_mut()
            .fold(false, |c, i| rename_in(i, rename) | c),
        Value::Object(m) => m.values_mut().fold(false, |c, i| rename_in(i, rename) | c),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chimera_model::{ContentHash, ProviderName};
    use serde_json::json;

    fn row(address: &str, attrs: Value, deps: &[&str]) -> StateResource {
        StateResource {
            address: address.parse().unwrap(),
            provider: ProviderName::Local,
            region: "us-east".into(),
            native_region: "local-us-east".into(),
            attrs: attrs.as_object().cloned().unwrap_or_default(),
            sensitive: Vec::new(),
            hash: ContentHash([1; 32]),
            cloud_id: format!("id-{address}"),
            outputs: Default::default(),
            deps: deps.iter().map(|d| d.parse().unwrap()).collect(),
            prevent_destroy: false,
        }
    }

    fn mv(from: &str, to: &str) -> Moved {
        Moved {
            from: from.parse().unwrap(),
            to: to.parse().unwrap(),
        }
    }

    #[test]
    fn a_row_and_the_references_to_it_follow_the_move() {
        let rows = vec![
            row(
                "instance.web-0",
                json!({ "subnet": "${chimera:subnet.a.id}" }),
                &["subnet.a"],
            ),
            row(
                "volume.data",
                json!({ "instance": "${chimera:instance.web-0.id}", "tags": { "x": "at ${chimera:instance.web-0.private_ip}:80" } }),
                &["instance.web-0"],
            ),
        ];
        let out = apply(&rows, &[mv("instance.web-0", "instance.front-0")])
            .unwrap()
            .expect("a move applies");
        assert_eq!(out.rows[0].address.to_string(), "instance.front-0");
        assert_eq!(out.rows[0].cloud_id, "id-instance.web-0");
        assert_eq!(out.rows[1].deps, vec!["instance.front-0".parse().unwrap()]);
        assert_eq!(
            out.rows[1].attrs["instance"],
            "${chimera:instance.front-0.id}"
        );
        assert_eq!(
            out.rows[1].attrs["tags"]["x"],
            "at ${chimera:instance.front-0.private_ip}:80"
        );
        assert_eq!(
            out.moved_from.get(&"instance.front-0".parse().unwrap()),
            Some(&"instance.web-0".parse().unwrap())
        );
    }

    #[test]
    fn a_move_already_done_is_nothing_and_a_conflict_is_an_error() {
        let rows = vec![row("instance.front-0", json!({}), &[])];
        assert_eq!(
            apply(&rows, &[mv("instance.web-0", "instance.front-0")]),
            Ok(None)
        );
        let both = vec![
            row("instance.web-0", json!({}), &[]),
            row("instance.front-0", json!({}), &[]),
        ];
        let diags = apply(&both, &[mv("instance.web-0", "instance.front-0")]).unwrap_err();
        assert_eq!(diags.len(), 1);
        assert_eq!(diags[0].code, codes::MOVE_CONFLICT);
        assert_eq!(diags[0].address.as_deref(), Some("instance.front-0"));
    }
}
