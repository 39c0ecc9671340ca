//! The offline planner: the default, deterministic proposer. It parses an intent in a small
//! grammar ([`intent`], docs/agents-planner.md), evaluates the stack's files in memory to learn
//! which expression produces each resource's fields (spans from the compiler, followed through
//! the syntax tree to the literal that matters), and drafts the smallest edits that do what
//! was asked: a literal replaced, a field or an array element added or removed. Comments and
//! layout outside the edited spans are kept byte for byte.
//!
//! **Architecture Invariant:** the planner reads only what it is given (the context's files,
//! and utilisation handed to it by its caller); it never touches the disk, the state or a
//! cloud. Every candidate edit is judged by evaluating the edited files; the verifier then
//! judges the draft again, against state and policies.

pub mod cost;
pub mod edit;
pub mod expect;
pub mod intent;
pub mod model;
pub mod ops;
pub mod origin;
pub mod syntax;

use std::collections::BTreeMap;
use std::path::PathBuf;

use async_trait::async_trait;
use chimera_providers::Utilisation;
use chimera_workflow::ReadOnlyStack;

use crate::{AgentError, Context, Draft, Proposer, Target};
use intent::Intent;
use model::Files;
use ops::{Lit, Outcome};

/// The offline planner.
#[derive(Debug, Clone, Default)]
pub struct OfflinePlanner {
    /// CPU and memory utilisation per instance address (`instance.web-0`), for `rightsize`.
    utilisation: BTreeMap<String, Utilisation>,
}

impl OfflinePlanner {
    pub fn new() -> Self {
        Self::default()
    }

    /// A planner that rightsizes from `utilisation` (per address, `instance.web-0`).
    pub fn with_utilisation(utilisation: BTreeMap<String, Utilisation>) -> Self {
        OfflinePlanner { utilisation }
    }

    /// A planner with the utilisation the clouds report for the stack's instances (read
    /// through the read-only view).
    pub async fn for_stack(stack: &mut ReadOnlyStack) -> Result<Self, AgentError> {
        let u = stack.utilisation().await?;
        Ok(Self::with_utilisation(
            u.into_iter().map(|(a, u)| (a.to_string(), u)).collect(),
        ))
    }

    /// Drafts the intent of `ctx` (synchronous: it evaluates the stack in memory). `variant` 0
    /// is the first choice; 1 an alternative (wider or different edits), when there is one.
    pub fn draft(&self, ctx: &Context, variant: usize) -> Result<Draft, AgentError> {
        let unsupported = AgentError::Unsupported;
        let intent = intent::parse(&ctx.intent).map_err(unsupported)?;
        let texts: BTreeMap<PathBuf, String> = ctx
            .files
            .iter()
            .map(|f| (f.path.clone(), f.text.clone()))
            .collect();
        let files = Files::new(texts).map_err(unsupported)?;
        let base = files.evaluate(&BTreeMap::new()).map_err(unsupported)?;
        let mut target = None;
        let (lead, out): (String, Result<Outcome, String>) = match &intent {
            Intent::Scale { tier, count } => (
                format!("Scale tier `{tier}` to {count} instances"),
                ops::scale(&files, &base, tier, *count),
            ),
            Intent::Resize { tier, size } => (
                format!("Resize tier `{tier}` to `{size}`"),
                ops::resize(&files, &base, tier, size),
            ),
            Intent::AddVolume {
                instance,
                size_gib,
                kind,
            } => (
                format!("Add a {size_gib} GiB volume to `{instance}`"),
                ops::add_volume(&files, &base, instance, *size_gib, kind.as_deref()),
            ),
            Intent::OpenPort {
                tier,
                port,
                protocol,
                cidr,
            } => (
                format!("Open {protocol} port {port} on `{tier}`"),
                ops::open_port(&files, &base, tier, *port, protocol, cidr.as_deref()),
            ),
            Intent::ClosePort { tier, port } => (
                format!("Close port {port} on `{tier}`"),
                ops::close_port(&files, &base, tier, *port),
            ),
            Intent::Tag { key, value } => (
                format!("Tag every resource with {key}={value}"),
                ops::tag_all(&files, &base, key, value),
            ),
            Intent::Region { tier, region } => {
                if !base.regions.is_empty() && !base.regions.contains(region) {
                    return Err(unsupported(format!(
                        "`{region}` is not a region of the catalog (known: {})",
                        base.regions.join(", ")
                    )));
                }
                let targets = whole_or_tier(&base, tier.as_deref())?;
                (
                    format!("Move {} to region `{region}`", what(tier.as_deref())),
                    ops::set_field(
                        &files,
                        &base,
                        &targets,
                        "region",
                        &Lit::Str(region.clone()),
                        variant > 0,
                    ),
                )
            }
            Intent::Cheapest { tier } => {
                let targets = whole_or_tier(&base, tier.as_deref())?;
                (
                    format!(
                        "Put {} on the cheapest provider (`'cheapest`: each group of connected resources goes where its list price is lowest)",
                        what(tier.as_deref())
                    ),
                    ops::set_field(
                        &files,
                        &base,
                        &targets,
                        "provider",
                        &Lit::Tag("cheapest".into()),
                        true,
                    ),
                )
            }
            Intent::CostCut { fraction, keep } => {
                target = Some(Target::CostCut(*fraction));
                let keeping = if keep.is_empty() {
                    String::new()
                } else {
                    format!(
                        ", keeping at least {}",
                        keep.iter()
                            .map(|(t, k)| format!("{k} `{t}`"))
                            .collect::<Vec<_>>()
                            .join(" and ")
                    )
                };
                // The alternative leaves providers alone (a policy may pin them).
                match cost::cut(&files, &base, *fraction, keep, variant == 0) {
                    Ok((out, before, after)) => (
                        format!(
                            "Cut the monthly cost by {:.0}%{keeping}: ${before:.2} → ${after:.2} ({:.1}% less) by",
                            fraction * 100.0,
                            (1.0 - after / before) * 100.0
                        ),
                        Ok(out),
                    ),
                    Err(e) => (String::new(), Err(e)),
                }
            }
            Intent::Rightsize => (
                "Rightsize instances from their CPU and memory utilisation".to_string(),
                cost::rightsize(&files, &base, &self.utilisation),
            ),
        };
        let out = out.map_err(unsupported)?;
        let edits = edit::to_edits(&files.texts, &out.changes).map_err(unsupported)?;
        let summary = if out.notes.is_empty() {
            format!("{lead}.")
        } else if lead.ends_with(" by") {
            format!("{lead} {}.", out.notes.join("; "))
        } else {
            format!("{lead}: {}.", out.notes.join("; "))
        };
        Ok(Draft {
            edits,
            summary: format!("{summary} (Drafted by the offline planner.)"),
            target,
        })
    }
}

fn what(tier: Option<&str>) -> String {
    match tier {
        None => "the stack".to_string(),
        Some(t) => format!("`{t}`"),
    }
}

fn whole_or_tier(base: &model::Snapshot, tier: Option<&str>) -> Result<Vec<usize>, AgentError> {
    match tier {
        None => Ok((0..base.resources.len()).collect()),
        Some(t) => {
            let v = base.tier(t, None);
            if v.is_empty() {
                Err(AgentError::Unsupported(format!(
                    "no resource of the stack is named `{t}` or has `{t}` in its name"
                )))
            } else {
                Ok(v)
            }
        }
    }
}

#[async_trait]
impl Proposer for OfflinePlanner {
    fn name(&self) -> String {
        "offline".into()
    }

    /// The first draft; after a rejected round, an alternative that differs from every draft
    /// already tried, or `Unsupported` (never the same draft twice).
    async fn propose(&self, ctx: &Context) -> Result<Draft, AgentError> {
        let tried = |d: &Draft| ctx.rounds.iter().any(|r| r.draft.edits == d.edits);
        for variant in 0..2 {
            let d = match self.draft(ctx, variant) {
                Ok(d) => d,
                Err(e) if variant == 0 => return Err(e),
                Err(_) => break,
            };
            if !tried(&d) {
                return Ok(d);
            }
        }
        let said = ctx
            .rounds
            .last()
            .map(|r| r.feedback.join("; "))
            .unwrap_or_default();
        Err(AgentError::Unsupported(format!(
            "the offline planner has no other draft for `{}`; the verifier said: {said}",
            ctx.intent
        )))
    }
}
