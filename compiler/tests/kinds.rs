//! The stdlib's resource schemas (`stdlib/chimera.ncl`) and the kind definitions
//! (`chimera_model::kinds`) describe the same kinds: each schema declares exactly its kind's
//! required fields, with the same documentation, and exactly its outputs.

use std::collections::BTreeSet;

use chimera_compiler::stdlib::FILES;
use chimera_model::Kind;
use chimera_model::kinds::def;

/// The text of `  NAME = Common & { … },` in chimera.ncl.
fn schema_block<'a>(stdlib: &'a str, name: &str) -> &'a str {
    let start = stdlib
        .find(&format!("\n  {name} = Common & {{\n"))
        .unwrap_or_else(|| panic!("chimera.ncl has no `{name} = Common & {{` schema"));
    let body = &stdlib[start..];
    &body[..body.find("\n  },").expect("schema block ends with `  },`")]
}

/// Top-level fields of a schema block (indented four spaces) with their `doc`, and the names
/// in its `outputs` record (indented six).
fn declared(block: &str) -> (Vec<(String, Option<String>)>, BTreeSet<String>) {
    let mut fields = Vec::new();
    let mut outputs = BTreeSet::new();
    let mut in_outputs = false;
    for line in block.lines().skip(1) {
        let indent = line.len() - line.trim_start().len();
        let name: String = line
            .trim_start()
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if name.is_empty() {
            if line.trim() == "}," {
                in_outputs = false;
            }
            continue;
        }
        match indent {
            4 if name == "outputs" => in_outputs = true,
            4 => {
                let doc = line
                    .split_once("doc \"")
                    .map(|(_, rest)| rest.rsplit_once("\",").map_or(rest, |(d, _)| d))
                    .map(|d| d.replace("\\\"", "\""));
                fields.push((name, doc));
            }
            6 if in_outputs => {
                outputs.insert(name);
            }
            _ => {}
        }
    }
    (fields, outputs)
}

#[test]
fn stdlib_schemas_match_the_kind_definitions() {
    let stdlib = FILES
        .iter()
        .find(|(n, _)| *n == "chimera.ncl")
        .map(|(_, t)| *t)
        .expect("the stdlib has chimera.ncl");
    let mut problems = Vec::new();
    for kind in Kind::ALL {
        let d = def(kind);
        let (fields, mut outputs) = declared(schema_block(stdlib, d.schema));
        // `Common` gives every kind its `id` output; `kind` and `name` are common fields.
        outputs.insert("id".into());
        let schema_fields: BTreeSet<&str> = fields
            .iter()
            .map(|(n, _)| n.as_str())
            .filter(|n| !matches!(*n, "kind" | "name"))
            .collect();
        let required: BTreeSet<&str> = d
            .fields
            .iter()
            .filter(|f| f.required)
            .map(|f| f.name)
            .collect();
        if schema_fields != required {
            problems.push(format!(
                "{kind}: the stdlib schema `{}` declares {schema_fields:?}, the kind requires {required:?}",
                d.schema
            ));
        }
        for (name, doc) in &fields {
            if let (Some(doc), Some(f)) = (doc, d.fields.iter().find(|f| f.name == name))
                && doc != f.doc
            {
                problems.push(format!(
                    "{kind}.{name}: stdlib doc {doc:?} differs from the kind's {:?}",
                    f.doc
                ));
            }
        }
        let want: BTreeSet<String> = d.outputs.iter().map(|s| s.to_string()).collect();
        if outputs != want {
            problems.push(format!(
                "{kind}: the stdlib schema offers outputs {outputs:?}, the kind {want:?}"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
