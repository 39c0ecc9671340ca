//! A policy's result (JSON, from Rego or Nickel) as [`Finding`]s: one shape for both languages.

use serde_json::Value;

use crate::{Finding, Level};

/// Where a result came from: the file, the rule it was produced by, its line.
pub(crate) struct Origin<'a> {
    pub file: &'a str,
    /// The finding's rule when the result does not name one.
    pub rule: &'a str,
    pub level: Level,
    pub line: Option<usize>,
}

/// A rule's value as findings. `null`, `false`, an empty set or array: none; `true`: one,
/// named after the rule; a string: its message; a record: `msg` or `message`, with optional
/// `address` and `rule`; a set or array: each of its items, where an item may itself be an
/// array (flattened, at any depth) or `null` (skipped). Nested arrays let a Nickel policy map
/// every change to its findings (`[]` for none) without flattening in Nickel, which copies.
pub(crate) fn findings(value: &Value, origin: &Origin) -> Result<Vec<Finding>, String> {
    match value {
        Value::Null | Value::Bool(false) => Ok(Vec::new()),
        Value::Bool(true) => Ok(vec![finding(origin, origin.rule.to_string(), None, None)]),
        Value::String(_) | Value::Object(_) => Ok(vec![item(value, origin)?]),
        Value::Array(items) => {
            let mut out = Vec::new();
            flatten(items, origin, &mut out, 0)?;
            Ok(out)
        }
        Value::Number(n) => Err(format!(
            "the rule's value is the number {n}; a policy rule is a message, a record with `msg`, or a set of them"
        )),
    }
}

fn flatten(
    items: &[Value],
    origin: &Origin,
    out: &mut Vec<Finding>,
    depth: usize,
) -> Result<(), String> {
    if depth > 64 {
        return Err("findings are nested more than 64 arrays deep".into());
    }
    for i in items {
        match i {
            Value::Null => {}
            Value::Array(inner) => flatten(inner, origin, out, depth + 1)?,
            other => out.push(item(other, origin)?),
        }
    }
    Ok(())
}

fn item(value: &Value, origin: &Origin) -> Result<Finding, String> {
    match value {
        Value::String(message) => Ok(finding(origin, message.clone(), None, None)),
        Value::Object(fields) => {
            let message = match fields.get("msg").or_else(|| fields.get("message")) {
                Some(Value::String(s)) => s.clone(),
                Some(other) => {
                    return Err(format!(
                        "a finding's `msg` must be a string, not {}",
                        short(other)
                    ));
                }
                None => {
                    return Err(format!(
                        "a finding is a record without `msg` or `message`: {}; add `msg` (or `message`) with the text to show",
                        short(value)
                    ));
                }
            };
            let address = match fields.get("address") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => Some(s.clone()),
                Some(other) => {
                    return Err(format!(
                        "a finding's `address` must be a string such as `instance.web-0`, not {}",
                        short(other)
                    ));
                }
            };
            let rule = match fields.get("rule") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => Some(s.clone()),
                Some(other) => {
                    return Err(format!(
                        "a finding's `rule` must be a string, not {}",
                        short(other)
                    ));
                }
            };
            Ok(finding(origin, message, address, rule))
        }
        other => Err(format!(
            "a finding must be a message or a record with `msg`, not {}",
            short(other)
        )),
    }
}

fn finding(
    origin: &Origin,
    message: String,
    address: Option<String>,
    rule: Option<String>,
) -> Finding {
    Finding {
        level: origin.level,
        rule: rule.unwrap_or_else(|| origin.rule.to_string()),
        address,
        message,
        file: origin.file.to_string(),
        line: origin.line,
    }
}

/// A value as a short JSON excerpt for a message.
fn short(v: &Value) -> String {
    let s = v.to_string();
    match s.char_indices().nth(80) {
        Some((i, _)) => format!("`{}…`", &s[..i]),
        None => format!("`{s}`"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn origin() -> Origin<'static> {
        Origin {
            file: "p/tags.rego",
            rule: "tags",
            level: Level::Deny,
            line: Some(7),
        }
    }

    #[test]
    fn strings_records_and_booleans_are_findings() {
        let got = findings(
            &json!(["plain", {"msg": "m", "address": "instance.a", "rule": "r"}, {"message": "n"}]),
            &origin(),
        )
        .unwrap();
        let summary: Vec<_> = got
            .iter()
            .map(|f| (f.rule.as_str(), f.address.as_deref(), f.message.as_str()))
            .collect();
        assert_eq!(
            summary,
            [
                ("tags", None, "plain"),
                ("r", Some("instance.a"), "m"),
                ("tags", None, "n")
            ]
        );
        assert!(
            got.iter()
                .all(|f| f.line == Some(7) && f.file == "p/tags.rego")
        );
        assert_eq!(
            findings(&json!(true), &origin()).unwrap()[0].message,
            "tags"
        );
        assert!(findings(&json!(false), &origin()).unwrap().is_empty());
        assert!(findings(&json!(null), &origin()).unwrap().is_empty());
    }

    #[test]
    fn wrong_shapes_say_what_to_write() {
        let e = findings(&json!([{"address": "x"}]), &origin()).unwrap_err();
        assert!(e.contains("add `msg`"), "{e}");
        assert!(findings(&json!([1]), &origin()).is_err());
        assert!(findings(&json!([[[1]]]), &origin()).is_err());
        assert!(findings(&json!({"msg": 3}), &origin()).is_err());
        assert!(findings(&json!({"msg": "m", "address": 3}), &origin()).is_err());
        assert!(findings(&json!(3), &origin()).is_err());
    }
}
