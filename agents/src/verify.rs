//! The verifier: Chimera checks a draft itself, never trusting what a proposer claims. The edits
//! are applied to the stack's files in memory (an overlay: nothing on disk changes), the result
//! is compiled, planned against the current state, priced and checked against the stack's
//! policies, all through the read-only view of the workflow. What failed comes back as feedback
//! lines for the next round.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use chimera_compiler::source::Overlay;
use chimera_plans::cost::{PlanCost, plan_cost};
use chimera_plans::findings::{Finding, Level};
use chimera_plans::plan::Plan;
use chimera_workflow::{ReadOnlyStack, Settings};

use crate::{AgentError, Draft, Target};

/// What the verifier found of one draft.
#[derive(Debug)]
pub struct Verdict {
    /// The stack's files as the draft leaves them (only the edited ones).
    pub files: BTreeMap<PathBuf, String>,
    /// The draft compiled.
    pub compiled: bool,
    /// The plan of the edited stack against the current state (when it compiled).
    pub plan: Option<Plan>,
    pub cost: Option<PlanCost>,
    /// Policy warnings and denials of the plan.
    pub findings: Vec<Finding>,
    /// The numeric goal, how far the draft got (a fraction), and whether it got there.
    pub target: Option<(Target, f64, bool)>,
    /// Everything that failed, one line each, as the next round's proposer reads it.
    pub feedback: Vec<String>,
    /// Writes the read-only view refused (an agent entry point that tried to change a cloud).
    pub refused_writes: usize,
    /// An adoption ([`verify_adoption`]): it passes when the plan against the cloud as it is
    /// shows no changes to the adopted resources (other drift may still show).
    pub adoption: bool,
}

impl Verdict {
    /// The draft can become a pull request: it compiles, changes something, and no policy
    /// denies it. (A missed numeric target does not block it: the pull request says so.)
    pub fn passed(&self) -> bool {
        self.compiled
            && self
                .plan
                .as_ref()
                .is_some_and(|p| self.adoption || p.has_changes())
            && !self.denied()
            && self.blocking_feedback() == 0
    }

    pub fn denied(&self) -> bool {
        self.findings.iter().any(|f| f.level == Level::Deny)
    }

    fn blocking_feedback(&self) -> usize {
        self.feedback
            .iter()
            .filter(|f| !f.starts_with(TARGET_MISSED))
            .count()
    }
}

/// How a missed target starts its feedback line.
pub const TARGET_MISSED: &str = "target missed:";

/// A path the draft may edit: relative, inside the stack's directory, a Nickel file.
fn safe(file: &Path) -> Result<PathBuf, String> {
    if file.is_absolute()
        || file
            .components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(format!(
            "edit_file: `{}` is not a path inside the stack's directory",
            file.display()
        ));
    }
    if file
        .components()
        .find(|c| matches!(c, Component::Normal(_)))
        .is_some_and(|c| c.as_os_str().eq_ignore_ascii_case(crate::context::POLICIES))
    {
        return Err(format!(
            "edit_file: `{}` is one of the stack's policies; a proposal changes the configuration, never the rules it is checked against",
            file.display()
        ));
    }
    if file.extension().and_then(|e| e.to_str()) != Some("ncl") {
        return Err(format!(
            "edit_file: `{}` is not a Nickel file (.ncl); only the stack's configuration is edited",
            file.display()
        ));
    }
    Ok(file.to_path_buf())
}

/// Applies `draft`'s edits to the files under `dir`: every `old` must occur exactly once in its
/// file as the earlier edits left it.
pub fn apply_edits(dir: &Path, draft: &Draft) -> (BTreeMap<PathBuf, String>, Vec<String>) {
    let mut files: BTreeMap<PathBuf, String> = BTreeMap::new();
    let mut problems = Vec::new();
    for (i, e) in draft.edits.iter().enumerate() {
        let file = match safe(&e.file) {
            Ok(f) => f,
            Err(m) => {
                problems.push(m);
                continue;
            }
        };
        let text = match files.get(&file) {
            Some(t) => t.clone(),
            None => match std::fs::read_to_string(dir.join(&file)) {
                Ok(t) => t,
                // A new file: `old` must be empty.
                Err(_) if e.old.is_empty() => String::new(),
                Err(err) => {
                    problems.push(format!(
                        "edit {} of `{}`: cannot read it ({err})",
                        i + 1,
                        file.display()
                    ));
                    continue;
                }
            },
        };
        let patched = if e.old.is_empty() {
            if text.is_empty() {
                e.new.clone()
            } else {
                problems.push(format!(
                    "edit {} of `{}`: old_text is empty but the file exists; quote the text to replace",
                    i + 1,
                    file.display()
                ));
                continue;
            }
        } else {
            match text.matches(e.old.as_str()).count() {
                1 => text.replacen(e.old.as_str(), &e.new, 1),
                0 => {
                    problems.push(format!(
                        "edit {} of `{}`: old_text does not occur in the file; copy it exactly from the file as shown",
                        i + 1,
                        file.display()
                    ));
                    continue;
                }
                n => {
                    problems.push(format!(
                        "edit {} of `{}`: old_text occurs {n} times; include more surrounding text so it occurs once",
                        i + 1,
                        file.display()
                    ));
                    continue;
                }
            }
        };
        files.insert(file, patched);
    }
    (files, problems)
}

/// Verifies `draft` on the stack at `dir`; `before` is the stack's monthly cost as it is.
pub async fn verify(
    dir: &Path,
    settings: &Settings,
    draft: &Draft,
    before: f64,
) -> Result<Verdict, AgentError> {
    check(dir, settings, draft, before, None).await
}

/// Verifies a draft that adopts drift: the edited configuration, planned against the cloud as
/// it is now (a refresh through the read-only providers), must show no changes.
pub async fn verify_adoption(
    dir: &Path,
    settings: &Settings,
    draft: &Draft,
    adopted: &BTreeSet<String>,
) -> Result<Verdict, AgentError> {
    check(dir, settings, draft, 0.0, Some(adopted)).await
}

async fn check(
    dir: &Path,
    settings: &Settings,
    draft: &Draft,
    before: f64,
    adopted: Option<&BTreeSet<String>>,
) -> Result<Verdict, AgentError> {
    let adoption = adopted.is_some();
    let (files, mut feedback) = apply_edits(dir, draft);
    let mut verdict = Verdict {
        files: files.clone(),
        compiled: false,
        plan: None,
        cost: None,
        findings: Vec::new(),
        target: None,
        feedback: Vec::new(),
        refused_writes: 0,
        adoption,
    };
    if draft.edits.is_empty() {
        feedback.push("the draft has no edits: call edit_file with the change".into());
    }
    if !feedback.is_empty() {
        verdict.feedback = feedback;
        return Ok(verdict);
    }
    let overlay = Overlay::new(dir, files.iter().map(|(p, t)| (p.clone(), t.clone())));
    let mut stack = ReadOnlyStack::open_in(Arc::new(overlay), dir, settings.clone());
    if let Err(e) = stack.compile() {
        verdict.feedback = e.diagnostics.iter().map(|d| line_of(d, dir)).collect();
        verdict.refused_writes = stack.refused_writes();
        return Ok(verdict);
    }
    verdict.compiled = true;
    let plan = match stack.plan(adoption).await {
        Ok(p) => p,
        Err(e) => {
            verdict.feedback = e.diagnostics.iter().map(|d| line_of(d, dir)).collect();
            verdict.refused_writes = stack.refused_writes();
            return Ok(verdict);
        }
    };
    if let Some(adopted) = adopted {
        let changed = |p: &Plan| -> BTreeMap<String, String> {
            p.changes
                .iter()
                .filter(|c| c.action != chimera_plans::plan::Action::NoOp)
                .map(|c| (c.address.to_string(), c.action.verb().to_string()))
                .collect()
        };
        let edited = changed(&plan);
        let still: Vec<String> = edited
            .iter()
            .filter(|(a, _)| adopted.contains(*a))
            .map(|(a, verb)| format!("{verb} {a}"))
            .collect();
        if !still.is_empty() {
            feedback.push(format!(
                "the edited configuration still differs from the cloud as it is: {}",
                still.join(", ")
            ));
        }
        // What the unedited configuration already changes against the cloud (other drift) may
        // still show; anything more is a value the edit shares with resources that did not
        // drift.
        let before = ReadOnlyStack::open(dir, settings.clone())
            .plan(true)
            .await?;
        let before = changed(&before);
        let more: Vec<String> = edited
            .iter()
            .filter(|(a, _)| !before.contains_key(*a))
            .map(|(a, verb)| format!("{verb} {a}"))
            .collect();
        if !more.is_empty() {
            feedback.push(format!(
                "the edit also changes resources that did not drift (the value is shared with them): {}; adopt it by hand",
                more.join(", ")
            ));
        }
    } else if !plan.has_changes() {
        feedback.push(
            "the edits change nothing Chimera manages: the plan is empty; change the resources the intent is about".into(),
        );
    }
    let cost = plan_cost(&plan);
    let findings = stack.check_policies(&plan)?;
    for f in findings.iter().filter(|f| f.level == Level::Deny) {
        feedback.push(format!(
            "policy denies it: {} ({}): {}",
            f.rule,
            f.address.as_deref().unwrap_or("the plan"),
            f.message
        ));
    }
    if let Some(Target::CostCut(goal)) = draft.target {
        let reached = if before > 0.0 {
            1.0 - cost.monthly_after / before
        } else {
            0.0
        };
        let met = reached + 1e-9 >= goal;
        if !met {
            feedback.push(format!(
                "{TARGET_MISSED} the monthly cost goes from ${before:.2} to ${:.2}, a {:.0}% cut; {:.0}% was asked",
                cost.monthly_after,
                reached * 100.0,
                goal * 100.0
            ));
        }
        verdict.target = Some((Target::CostCut(goal), reached, met));
    }
    verdict.plan = Some(plan);
    verdict.cost = Some(cost);
    verdict.findings = findings;
    verdict.feedback = feedback;
    verdict.refused_writes = stack.refused_writes();
    Ok(verdict)
}

fn line_of(d: &chimera_model::Diagnostic, dir: &Path) -> String {
    let at = d
        .location
        .as_ref()
        .map(|l| format!("{}:{}:{}: ", relative(&l.file, dir), l.line, l.column))
        .unwrap_or_default();
    let detail = if d.detail.is_empty() {
        String::new()
    } else {
        format!(": {}", d.detail)
    };
    format!("{at}{} {}{detail}", d.code.0, d.summary.replace('\n', " "))
}

/// A diagnostic's file name as the proposer knows it (relative to the stack).
fn relative(file: &str, dir: &Path) -> String {
    let abs = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    Path::new(file)
        .strip_prefix(&abs)
        .or_else(|_| Path::new(file).strip_prefix(dir))
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| file.to_string())
}
