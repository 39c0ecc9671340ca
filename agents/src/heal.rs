//! Drift, classified and routed: each difference between the cloud and the last applied
//! generation is an attribute changed, a resource deleted, a firewall rule added, or an
//! unmanaged resource tagged for the stack; by the stack's heal policy (its `reconcile`
//! settings) it is either put back by the daemon's gated re-apply (`auto`), turned into a pull
//! request that adopts the live value into the configuration (`propose`), or only reported.
//!
//! An adopting draft is verified the other way round from an intent's: the edited
//! configuration, planned against the cloud as it is now, must show **no changes** — the pull
//! request makes the configuration say what the cloud already holds.
//!
//! **Architecture Invariant:** nothing here applies; `auto` only asks the daemon, whose heal
//! goes through its own policy gate, lease and backoff.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use chimera_compiler::eval::{EvalOptions, RawResource, evaluate};
use chimera_compiler::source::{Disk, Source, entry};
use chimera_model::{Address, Kind};
use chimera_plans::drift::{Drift, DriftKind};
use chimera_workflow::{HealMode, HealPolicy, ReadOnlyStack, Settings};
use serde::Serialize;
use serde_json::Value;

use crate::{AgentError, Context, Draft, Edit, Proposer};

/// What kind of drift it is.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "class", rename_all = "kebab-case")]
pub enum Class {
    /// Attributes changed out of band.
    Changed { attrs: Vec<String> },
    /// Firewall rules added out of band (and nothing else of the rules changed).
    RuleAdded { rules: usize },
    /// Gone from the cloud.
    Deleted,
    /// In the cloud, tagged for this stack, but not in its state.
    Unmanaged { kind: Kind, cloud_id: String },
}

/// What is done about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// The daemon puts the cloud back (its gated heal).
    ReApply,
    /// A pull request adopts the live value into the configuration.
    Adopt,
    /// Recorded and shown only.
    Report,
}

/// One drifted resource, classified.
#[derive(Debug, Clone, Serialize)]
pub struct Item {
    /// None for an unmanaged resource (it has no address in this stack).
    pub address: Option<Address>,
    pub class: Class,
    #[serde(serialize_with = "mode_name")]
    pub mode: HealMode,
    pub action: Action,
    /// Why the action is what it is, when it is not the mode's usual one.
    pub note: Option<String>,
}

fn mode_name<S: serde::Serializer>(m: &HealMode, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(m.as_str())
}

/// The stack's drift, classified, and the adopting draft for the items to adopt.
pub struct Assessment {
    pub stack: String,
    pub items: Vec<Item>,
    pub drift: Vec<Drift>,
    /// Edits adopting the live values (empty when nothing is adopted).
    pub adopt: Draft,
}

/// Reads the clouds (never writing), classifies what differs and drafts the adoption.
/// `default` is the heal mode where the stack's `reconcile` settings say none (as the
/// daemon's `--heal`).
pub async fn assess(
    dir: &Path,
    settings: &Settings,
    default: HealMode,
) -> Result<Assessment, AgentError> {
    let mut stack = ReadOnlyStack::open(dir, settings.clone());
    let graph = stack.compile()?.clone();
    let policy = HealPolicy::from_settings(default, &graph.reconcile)
        .map_err(|m| AgentError::Unsupported(format!("the stack's reconcile settings: {m}")))?;
    let drift = stack.drift().await?;
    let rows = stack.state_rows().await?;
    let known: BTreeSet<String> = rows.iter().map(|r| r.cloud_id.clone()).collect();
    let unmanaged: Vec<_> = stack
        .managed_in_cloud()
        .await?
        .into_iter()
        .filter(|o| !known.contains(&o.cloud_id))
        .collect();

    let sources = Sources::load(dir);
    let mut items = Vec::new();
    let mut edits = Vec::new();
    let mut adopted = Vec::new();
    for d in &drift {
        let mode = policy.mode_of(&d.address);
        let class = classify(d);
        let (mut action, mut note) = match mode {
            HealMode::Auto => (Action::ReApply, None),
            HealMode::Propose => (Action::Adopt, None),
            HealMode::Report => (Action::Report, None),
        };
        if action == Action::Adopt {
            match &d.kind {
                DriftKind::Deleted => {
                    action = Action::Report;
                    note = Some(format!(
                        "adopting a deletion means removing {} from the configuration: do it by hand, or set its heal mode to auto to re-create it",
                        d.address
                    ));
                }
                DriftKind::Changed { attrs } => match sources.adopt(&d.address, attrs) {
                    Ok(mut e) => {
                        edits.append(&mut e);
                        adopted.push(d.address.to_string());
                    }
                    Err(why) => {
                        action = Action::Report;
                        note = Some(why);
                    }
                },
            }
        }
        items.push(Item {
            address: Some(d.address.clone()),
            class,
            mode,
            action,
            note,
        });
    }
    for o in unmanaged {
        items.push(Item {
            address: None,
            class: Class::Unmanaged {
                kind: o.kind,
                cloud_id: o.cloud_id.clone(),
            },
            mode: policy.mode,
            action: Action::Report,
            note: Some(format!(
                "`chimera import {} {} --address {}.NAME` adopts it into state once it is in the configuration",
                o.kind, o.cloud_id, o.kind
            )),
        });
    }
    let summary = if adopted.is_empty() {
        String::new()
    } else {
        format!(
            "Adopts what changed in the cloud outside Chimera into the configuration, so the configuration says what the cloud holds: {}. Planned against the cloud as it is, the result shows no changes.",
            adopted.join(", ")
        )
    };
    Ok(Assessment {
        stack: graph.stack.clone(),
        items,
        drift,
        adopt: Draft {
            edits,
            summary,
            target: None,
        },
    })
}

fn classify(d: &Drift) -> Class {
    match &d.kind {
        DriftKind::Deleted => Class::Deleted,
        DriftKind::Changed { attrs } => {
            let rules_only = d.address.kind == Kind::Firewall
                && attrs
                    .iter()
                    .all(|(k, _, _)| matches!(k.as_str(), "ingress" | "egress"));
            if rules_only {
                let mut added = 0;
                let mut only_added = true;
                for (_, before, after) in attrs {
                    let before = before.as_array().cloned().unwrap_or_default();
                    let after = after.as_array().cloned().unwrap_or_default();
                    only_added &= before.iter().all(|r| after.contains(r));
                    added += after.iter().filter(|r| !before.contains(r)).count();
                }
                if only_added && added > 0 {
                    return Class::RuleAdded { rules: added };
                }
            }
            Class::Changed {
                attrs: attrs.iter().map(|(k, _, _)| k.clone()).collect(),
            }
        }
    }
}

/// The stack's evaluated resources with their spans, and its files' text.
struct Sources {
    root: std::path::PathBuf,
    resources: Vec<RawResource>,
    /// File index → (path relative to the stack, text), for the stack's own files.
    files: BTreeMap<u32, (std::path::PathBuf, String)>,
}

impl Sources {
    fn load(dir: &Path) -> Sources {
        let root = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
        let disk: Arc<dyn Source> = Arc::new(Disk::new());
        let file = entry(disk.as_ref(), dir);
        let out = evaluate(&disk, &file, &EvalOptions::default());
        let mut files = BTreeMap::new();
        for (i, f) in out.sources.files().iter().enumerate() {
            if let Some(rel) = crate::context::within(dir, &f.name) {
                files.insert(i as u32, (rel, f.text.to_string()));
            }
        }
        Sources {
            root,
            resources: out.result.map(|e| e.resources).unwrap_or_default(),
            files,
        }
    }

    fn resource(&self, address: &Address) -> Option<&RawResource> {
        self.resources.iter().find(|r| {
            r.fields.get("kind").and_then(Value::as_str) == Some(address.kind.as_str())
                && r.fields.get("name").and_then(Value::as_str) == Some(address.name.as_str())
        })
    }

    /// Edits setting each changed attribute of `address` to what the cloud holds.
    fn adopt(
        &self,
        address: &Address,
        attrs: &[(String, Value, Value)],
    ) -> Result<Vec<Edit>, String> {
        let r = self.resource(address).ok_or_else(|| {
            format!(
                "{address} is not found in the stack's files as evaluated under {}",
                self.root.display()
            )
        })?;
        let mut edits = Vec::new();
        for (attr, _, live) in attrs {
            let Some(span) = r.field_span(attr) else {
                return Err(format!(
                    "`{attr}` of {address} is not written in the configuration (a default or a derived value): adopt it by hand"
                ));
            };
            let Some((path, text)) = self.files.get(&span.file) else {
                return Err(format!(
                    "`{attr}` of {address} is set outside the stack's own files: adopt it by hand"
                ));
            };
            let (start, end) = (span.start as usize, span.end as usize);
            let Some(current) = text.get(start..end) else {
                return Err(format!(
                    "`{attr}` of {address}: its source position is stale"
                ));
            };
            let value = nickel_value(address.kind, attr, live, current);
            // The smallest unique snippet: the field's value with enough of its line around it.
            let (old, new) = unique_snippet(text, start, end, &value).ok_or_else(|| {
                format!(
                    "`{attr}` of {address}: its value is not unique in {}",
                    path.display()
                )
            })?;
            edits.push(Edit {
                file: path.clone(),
                old,
                new,
            });
        }
        Ok(edits)
    }
}

/// `text[start..end]` widened to whole lines until it occurs once, and the same with the value
/// replaced.
fn unique_snippet(text: &str, start: usize, end: usize, value: &str) -> Option<(String, String)> {
    let mut from = start;
    let mut to = end;
    loop {
        let old = &text[from..to];
        if text.matches(old).count() == 1 {
            let new = format!("{}{value}{}", &text[from..start], &text[end..to]);
            return Some((old.to_string(), new));
        }
        if from == 0 && to == text.len() {
            return None;
        }
        // One more line each way (`from` and `to` stay on char boundaries: they are span
        // ends or next to a `\n`).
        let back = if from > 0 && text.as_bytes()[from - 1] == b'\n' {
            from - 1
        } else {
            from
        };
        from = text[..back].rfind('\n').map_or(0, |i| i + 1);
        let ahead = if text.as_bytes().get(to) == Some(&b'\n') {
            to + 1
        } else {
            to
        };
        to = text[ahead..].find('\n').map_or(text.len(), |i| ahead + i);
    }
}

/// `v` written in Nickel, shaped like the field's current source (an enum tag stays a tag;
/// firewall rules take the stdlib's `{ protocol, ports, cidrs, description }` form).
pub fn nickel_value(kind: Kind, attr: &str, v: &Value, current: &str) -> String {
    if chimera_model::kinds::firewall::is_rules(kind, attr)
        && let Some(rules) = v.as_array()
    {
        let rules: Vec<String> = rules.iter().map(nickel_rule).collect();
        return format!("[{}]", rules.join(", "));
    }
    if let Value::String(s) = v
        && current.trim_start().starts_with('\'')
    {
        return tag(s);
    }
    literal(v)
}

fn nickel_rule(r: &Value) -> String {
    let mut parts = Vec::new();
    if let Some(p) = r.get("protocol").and_then(Value::as_str) {
        parts.push(format!("protocol = {}", tag(p)));
    }
    let from = r.get("from_port").and_then(Value::as_u64);
    let to = r.get("to_port").and_then(Value::as_u64);
    match (from, to) {
        (Some(a), Some(b)) if a == b => parts.push(format!("ports = {a}")),
        (Some(a), Some(b)) => parts.push(format!("ports = {{ from = {a}, to = {b} }}")),
        _ => {}
    }
    if let Some(c) = r.get("cidrs") {
        parts.push(format!("cidrs = {}", literal(c)));
    }
    if let Some(d) = r.get("description").filter(|d| !d.is_null()) {
        parts.push(format!("description = {}", literal(d)));
    }
    format!("{{ {} }}", parts.join(", "))
}

fn is_ident(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '\'')
}

fn tag(s: &str) -> String {
    if is_ident(s) {
        format!("'{s}")
    } else {
        format!("'{}", literal(&Value::String(s.to_string())))
    }
}

/// A JSON value as a Nickel literal.
pub fn literal(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => {
            let mut out = String::from("\"");
            for c in s.chars() {
                match c {
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    '\n' => out.push_str("\\n"),
                    '\t' => out.push_str("\\t"),
                    '\r' => out.push_str("\\r"),
                    '%' => out.push_str("\\%"),
                    c => out.push(c),
                }
            }
            out.push('"');
            out
        }
        Value::Array(a) => format!("[{}]", a.iter().map(literal).collect::<Vec<_>>().join(", ")),
        Value::Object(o) => {
            let fields: Vec<String> = o
                .iter()
                .map(|(k, v)| {
                    let key = if is_ident(k) {
                        k.clone()
                    } else {
                        literal(&Value::String(k.clone()))
                    };
                    format!("{key} = {}", literal(v))
                })
                .collect();
            if fields.is_empty() {
                "{}".into()
            } else {
                format!("{{ {} }}", fields.join(", "))
            }
        }
    }
}

/// A proposer that offers one prepared draft (the adoption), and gives up if it is refused.
pub struct Prepared {
    pub draft: Draft,
    pub name: String,
}

#[async_trait]
impl Proposer for Prepared {
    fn name(&self) -> String {
        self.name.clone()
    }

    async fn propose(&self, ctx: &Context) -> Result<Draft, AgentError> {
        if ctx.rounds.is_empty() {
            Ok(self.draft.clone())
        } else {
            Err(AgentError::Unsupported(
                "the adopting edits did not verify; the drift is reported instead".into(),
            ))
        }
    }
}
