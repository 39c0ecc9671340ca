//! The propose loop: an intent becomes a verified pull request, or a recorded refusal.
//!
//! 1. **Context** ([`crate::context::gather`]): the stack's files, graph, state, cost and
//!    policies, sensitive values hidden, and the memories most like this intent on this stack.
//! 2. **Rounds** (at most [`MAX_ROUNDS`]): the proposer drafts edits; Chimera verifies them
//!    ([`crate::verify::verify`]: compile in memory, plan against current state, price, run the
//!    policies) and feeds what failed back for the next round.
//! 3. **Outcome**: a draft that passed becomes a commit on `chimera/agent/<stack>-<intent>` and
//!    a pull request (the same branch and pull request when the intent is run again) whose body
//!    has the intent, the summary, the Markdown plan with its cost and policy sections and the
//!    verifier's log; a missed numeric target is said in the title. A draft that does not
//!    compile, is denied by a policy or changes nothing opens nothing. Either way the outcome is
//!    remembered.
//!
//! **Architecture Invariant:** nothing here can apply: the stack is seen through
//! [`chimera_workflow::ReadOnlyStack`], whose providers refuse every write, and the count of
//! refused writes is part of the [`Proposal`] (zero, always; tests hold it there).

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use chimera_plans::cost::{money, signed_money};
use chimera_plans::markdown::{MarkdownOptions, plan_markdown};
use chimera_plans::plan::Action;
use chimera_workflow::Settings;
use serde::Serialize;

use crate::context::{Baseline, gather};
use crate::forge::{self, Change, Forge, PrState, Published, Repo};
use crate::memory::{Filter, Memory, Record, RecordKind, outcome, recalled};
use crate::verify::{Verdict, verify, verify_adoption};
use crate::{AgentError, Context, Draft, Proposer, Recalled, Round, Target};

/// Rounds a proposer gets (published results plateau after about five).
pub const MAX_ROUNDS: usize = 5;

/// How many memories come back into the context.
pub const RECALL: usize = 5;

/// Where a verified draft goes.
pub struct Destination<'a> {
    pub repo: &'a Repo,
    pub forge: &'a dyn Forge,
    /// The commit the agent branch starts from (`main`, `origin/main`, `HEAD`).
    pub base_ref: String,
    /// The branch the pull request is proposed for.
    pub base_branch: String,
}

/// One proposal to make.
pub struct Request<'a> {
    /// The stack's directory.
    pub dir: PathBuf,
    pub intent: String,
    pub settings: Settings,
    pub proposer: &'a dyn Proposer,
    pub memory: Option<&'a dyn Memory>,
    /// None: verify only (a dry run), nothing is committed.
    pub destination: Option<Destination<'a>>,
    pub max_rounds: usize,
    /// The draft adopts the drift of these addresses: it passes when the plan against the cloud
    /// as it is shows no changes to them ([`crate::verify::verify_adoption`]).
    pub adopt: Option<BTreeSet<String>>,
}

/// How a proposal ended.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum Outcome {
    /// A pull request was opened.
    Opened { number: u64, url: String },
    /// The pull request already open for this intent was updated.
    Updated { number: u64, url: String },
    /// The branch and commit were made locally (no forge); the body was printed.
    Committed { branch: String, commit: String },
    /// Verified, and left there (no destination: a dry run).
    Verified,
    /// No draft compiled within the rounds.
    NotCompiled,
    /// The last draft was denied by a policy.
    Denied,
    /// The rounds ran out for another reason (an empty plan, edits that did not apply).
    Exhausted,
    /// The proposer cannot do this intent.
    Unsupported { reason: String },
}

impl Outcome {
    /// The word remembered for it (the memory ranks `opened` above `failed`).
    pub fn word(&self) -> &'static str {
        match self {
            Outcome::Opened { .. } | Outcome::Updated { .. } => outcome::OPENED,
            Outcome::Committed { .. } => outcome::COMMITTED,
            Outcome::Verified => outcome::VERIFIED,
            Outcome::NotCompiled => outcome::NOT_COMPILED,
            Outcome::Denied => outcome::DENIED,
            Outcome::Exhausted => outcome::FAILED,
            Outcome::Unsupported { .. } => outcome::UNSUPPORTED,
        }
    }

    /// A pull request (or a local branch) came of it.
    pub fn published(&self) -> bool {
        matches!(
            self,
            Outcome::Opened { .. } | Outcome::Updated { .. } | Outcome::Committed { .. }
        )
    }
}

/// One round, as the log and the pull request tell it.
#[derive(Debug, Clone, Serialize)]
pub struct RoundLog {
    pub round: usize,
    pub edits: usize,
    pub compiled: bool,
    /// Resources the plan would create, update, replace, delete.
    pub changes: Option<[usize; 4]>,
    pub monthly_after: Option<f64>,
    pub denials: usize,
    pub warnings: usize,
    pub feedback: Vec<String>,
}

/// What a proposal came to.
#[derive(Debug)]
pub struct Proposal {
    pub intent: String,
    pub stack: String,
    pub proposer: String,
    pub branch: String,
    pub rounds: Vec<RoundLog>,
    /// The last draft and its verdict.
    pub draft: Option<Draft>,
    pub verdict: Option<Verdict>,
    pub monthly_before: f64,
    pub outcome: Outcome,
    pub title: String,
    /// The pull request's body (printed when there is no forge).
    pub body: String,
    pub published: Option<Published>,
    /// Writes the read-only view refused over the whole proposal (always 0).
    pub refused_writes: usize,
    /// The memories the context was given.
    pub recalled: usize,
}

/// Runs the loop for one intent.
pub async fn propose(req: Request<'_>) -> Result<Proposal, AgentError> {
    let dir = req.dir.as_path();
    let (mut ctx, base) = gather(dir, &req.settings, &req.intent, Vec::new()).await?;
    if let Some(m) = req.memory {
        let filter = Filter::stack(base.stack.clone());
        let mut hits = m.recall(&req.intent, &filter, RECALL).await?;
        // Pull requests reviewed since: their records learn how they ended, so a merged fix
        // ranks higher and a closed one lower in this very recall.
        if let Some(to) = req.destination.as_ref().filter(|t| t.forge.is_remote())
            && sync_outcomes(m, to.forge, &hits).await > 0
        {
            hits = m.recall(&req.intent, &filter, RECALL).await?;
        }
        ctx.memories = recalled(&hits)
            .into_iter()
            .map(|r| Recalled {
                text: base.scrubber.scrub(&r.text),
                ..r
            })
            .collect();
    }
    let recalled = ctx.memories.len();
    let branch = forge::branch_for(&format!("{} {}", base.stack, req.intent));
    let mut proposal = Proposal {
        intent: req.intent.clone(),
        stack: base.stack.clone(),
        proposer: req.proposer.name(),
        branch: branch.clone(),
        rounds: Vec::new(),
        draft: None,
        verdict: None,
        monthly_before: base.monthly,
        outcome: Outcome::Exhausted,
        title: String::new(),
        body: String::new(),
        published: None,
        refused_writes: 0,
        recalled,
    };

    let rounds = req.max_rounds.clamp(1, MAX_ROUNDS);
    for n in 1..=rounds {
        let draft = match req.proposer.propose(&ctx).await {
            Ok(d) => d,
            Err(AgentError::Unsupported(reason)) => {
                if n == 1 {
                    proposal.outcome = Outcome::Unsupported { reason };
                }
                break;
            }
            Err(e) => return Err(e),
        };
        let verdict = if let Some(adopted) = &req.adopt {
            verify_adoption(dir, &req.settings, &draft, adopted).await?
        } else {
            verify(dir, &req.settings, &draft, base.monthly).await?
        };
        proposal.refused_writes += verdict.refused_writes;
        let mut log = log_of(n, &draft, &verdict);
        log.feedback = log
            .feedback
            .iter()
            .map(|f| base.scrubber.scrub(f))
            .collect();
        proposal.rounds.push(log);
        let passed = verdict.passed();
        // Diagnostics quote source text: what goes back to a proposer is scrubbed like the
        // context it was given.
        ctx.rounds.push(Round {
            draft: draft.clone(),
            feedback: verdict
                .feedback
                .iter()
                .map(|f| base.scrubber.scrub(f))
                .collect(),
        });
        proposal.outcome = if passed {
            Outcome::Verified
        } else if !verdict.compiled {
            Outcome::NotCompiled
        } else if verdict.denied() {
            Outcome::Denied
        } else {
            Outcome::Exhausted
        };
        proposal.draft = Some(draft);
        proposal.verdict = Some(verdict);
        if passed {
            break;
        }
    }

    proposal.title = title(&proposal);
    proposal.body = base.scrubber.scrub(&body(&proposal, &ctx, &base));

    if proposal.outcome == Outcome::Verified
        && let (Some(to), Some(verdict)) = (&req.destination, &proposal.verdict)
    {
        let prefix = stack_prefix(to.repo.root(), dir)?;
        let files = verdict
            .files
            .iter()
            .map(|(p, t)| (prefix.join(p), t.clone()))
            .collect();
        let change = Change {
            branch: branch.clone(),
            base_ref: to.base_ref.clone(),
            base_branch: to.base_branch.clone(),
            files,
            message: format!(
                "{}\n\n{}\n\nProposed by chimera agent ({}); verified by Chimera, not applied.",
                proposal.title,
                base.scrubber.scrub(
                    &proposal
                        .draft
                        .as_ref()
                        .map(|d| d.summary.clone())
                        .unwrap_or_default()
                ),
                proposal.proposer
            ),
            title: proposal.title.clone(),
            body: proposal.body.clone(),
        };
        let published = forge::publish(to.repo, to.forge, &change).await;
        let published = match published {
            Ok(p) => p,
            Err(e) => {
                remember(&req, &proposal, outcome::FAILED, None, &base.scrubber).await;
                return Err(e);
            }
        };
        proposal.outcome = if !to.forge.is_remote() {
            Outcome::Committed {
                branch: published.branch.clone(),
                commit: published.commit.id.clone(),
            }
        } else if published.pr.created {
            Outcome::Opened {
                number: published.pr.number,
                url: published.pr.url.clone(),
            }
        } else {
            Outcome::Updated {
                number: published.pr.number,
                url: published.pr.url.clone(),
            }
        };
        proposal.published = Some(published);
    }
    let pr = proposal
        .published
        .as_ref()
        .map(|p| p.pr.number)
        .filter(|n| *n > 0);
    remember(&req, &proposal, proposal.outcome.word(), pr, &base.scrubber).await;
    Ok(proposal)
}

/// Asks the forge how the open pull requests among `hits` ended and records `merged` or
/// `closed` on them; returns how many changed. A forge that cannot answer changes nothing.
pub async fn sync_outcomes(
    memory: &dyn Memory,
    forge: &dyn Forge,
    hits: &[(Record, f32)],
) -> usize {
    let mut changed = 0;
    for (rec, _) in hits {
        let Some(number) = rec.pr.filter(|_| rec.outcome == outcome::OPENED) else {
            continue;
        };
        let word = match forge.state(number).await {
            Ok(PrState::Merged) => outcome::MERGED,
            Ok(PrState::Closed) => outcome::CLOSED,
            Ok(PrState::Open) => continue,
            Err(e) => {
                tracing::warn!(pr = number, error = %e, "cannot read the pull request's state");
                continue;
            }
        };
        if matches!(memory.set_outcome(&rec.id, word).await, Ok(true)) {
            changed += 1;
        }
    }
    changed
}

/// The id a proposal is remembered under: one record per stack and intent, so a re-run
/// updates it.
pub fn record_id(stack: &str, intent: &str) -> String {
    let h = blake3::hash(format!("proposal\0{stack}\0{}", intent.trim()).as_bytes());
    format!("proposal-{}", &h.to_hex()[..24])
}

async fn remember(
    req: &Request<'_>,
    p: &Proposal,
    outcome: &str,
    pr: Option<u64>,
    scrubber: &crate::context::Scrubber,
) {
    let Some(memory) = req.memory else {
        return;
    };
    let mut text = format!("intent: {}", p.intent);
    if let Some(d) = &p.draft
        && !d.summary.is_empty()
    {
        let _ = write!(text, "\nsummary: {}", d.summary);
    }
    if let Some(last) = p.rounds.last()
        && !last.feedback.is_empty()
    {
        let _ = write!(text, "\nverifier: {}", last.feedback.join("; "));
    }
    if let Outcome::Unsupported { reason } = &p.outcome {
        let _ = write!(text, "\nproposer: {reason}");
    }
    let record = Record {
        id: record_id(&p.stack, &p.intent),
        stack: p.stack.clone(),
        kind: RecordKind::Proposal,
        resource_kind: None,
        text: scrubber.scrub(&text),
        outcome: outcome.to_string(),
        pr,
        created_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    };
    // The memory is an aid: a store that cannot be written does not undo the proposal.
    if let Err(e) = memory.remember(record).await {
        tracing::warn!(error = %e, "could not remember the proposal");
    }
}

/// The stack directory relative to the repository root (files are committed under it).
fn stack_prefix(root: &Path, dir: &Path) -> Result<PathBuf, AgentError> {
    let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    canon(dir)
        .strip_prefix(canon(root))
        .map(Path::to_path_buf)
        .map_err(|_| {
            AgentError::Git(format!(
                "the stack {} is not inside the repository {}",
                dir.display(),
                root.display()
            ))
        })
}

fn log_of(n: usize, draft: &Draft, v: &Verdict) -> RoundLog {
    let changes = v.plan.as_ref().map(|p| {
        let counts = p.counts();
        let n = |a| counts.get(&a).copied().unwrap_or(0);
        [
            n(Action::Create),
            n(Action::Update),
            n(Action::Replace),
            n(Action::Delete),
        ]
    });
    RoundLog {
        round: n,
        edits: draft.edits.len(),
        compiled: v.compiled,
        changes,
        monthly_after: v.cost.as_ref().map(|c| c.monthly_after),
        denials: v
            .findings
            .iter()
            .filter(|f| f.level == chimera_plans::findings::Level::Deny)
            .count(),
        warnings: v
            .findings
            .iter()
            .filter(|f| f.level == chimera_plans::findings::Level::Warn)
            .count(),
        feedback: v.feedback.clone(),
    }
}

/// What the target came to, when one was set and missed.
fn missed(p: &Proposal) -> Option<(f64, f64)> {
    match p.verdict.as_ref()?.target? {
        (Target::CostCut(goal), reached, false) => Some((goal, reached)),
        _ => None,
    }
}

fn title(p: &Proposal) -> String {
    let intent: String = p.intent.split_whitespace().collect::<Vec<_>>().join(" ");
    let intent = if intent.chars().count() > 72 {
        format!("{}…", intent.chars().take(71).collect::<String>())
    } else {
        intent
    };
    match missed(p) {
        Some((goal, reached)) => format!(
            "[{}] {intent} (target missed: {:.0}% of {:.0}%)",
            p.stack,
            reached * 100.0,
            goal * 100.0
        ),
        None => format!("[{}] {intent}", p.stack),
    }
}

fn body(p: &Proposal, ctx: &Context, base: &Baseline) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "## Intent\n");
    for line in p.intent.lines() {
        let _ = writeln!(out, "> {line}");
    }
    let _ = writeln!(out, "\n## Summary\n");
    match &p.draft {
        Some(d) if !d.summary.trim().is_empty() => {
            let _ = writeln!(out, "{}\n", d.summary.trim());
        }
        _ => out.push_str("(no summary)\n\n"),
    }
    if let Some((goal, reached)) = missed(p) {
        let _ = writeln!(
            out,
            "**Target missed.** {:.0}% was asked; this change reaches {:.0}%. It is proposed anyway, as the closest the proposer found under the stack's constraints.\n",
            goal * 100.0,
            reached * 100.0
        );
    }
    if !p.outcome.published() && p.outcome != Outcome::Verified {
        let _ = writeln!(
            out,
            "**Not proposed:** {}.\n",
            match &p.outcome {
                Outcome::NotCompiled => "no draft compiled".to_string(),
                Outcome::Denied => "a policy denies the last draft".to_string(),
                Outcome::Unsupported { reason } => reason.clone(),
                _ => format!("no draft passed within {} rounds", p.rounds.len()),
            }
        );
    }
    if let Some(v) = &p.verdict
        && let (Some(plan), Some(cost)) = (&v.plan, &v.cost)
    {
        let _ = writeln!(
            out,
            "## Cost\n\nMonthly: {} → {} ({}).\n",
            money(p.monthly_before),
            money(cost.monthly_after),
            signed_money(cost.monthly_after - p.monthly_before)
        );
        let mut opts = MarkdownOptions::for_plan(plan);
        opts.title = format!("Plan for stack `{}`", p.stack);
        opts.findings = v.findings.clone();
        opts.max_chars = 40_000;
        out.push_str(&plan_markdown(plan, &opts));
        out.push('\n');
        if v.findings.is_empty() {
            out.push_str("Policies: no findings.\n\n");
        }
    }
    let _ = writeln!(
        out,
        "<details><summary>Verifier log ({} round{})</summary>\n",
        p.rounds.len(),
        if p.rounds.len() == 1 { "" } else { "s" }
    );
    for r in &p.rounds {
        let plan = match r.changes {
            Some([c, u, rp, d]) => format!("plan +{c} ~{u} ±{rp} -{d}"),
            None => "no plan".into(),
        };
        let _ = writeln!(
            out,
            "- round {}: {} edit(s), {}, {plan}, {} denial(s), {} warning(s){}",
            r.round,
            r.edits,
            if r.compiled {
                "compiled"
            } else {
                "did not compile"
            },
            r.denials,
            r.warnings,
            r.monthly_after
                .map(|m| format!(", monthly {}", money(m)))
                .unwrap_or_default()
        );
        for f in &r.feedback {
            let _ = writeln!(out, "  - {}", f.replace('\n', " "));
        }
    }
    let _ = writeln!(out, "\n</details>\n");
    if !ctx.memories.is_empty() {
        let _ = writeln!(
            out,
            "<details><summary>Memories consulted ({})</summary>\n",
            ctx.memories.len()
        );
        for m in &ctx.memories {
            let first = m.text.lines().next().unwrap_or("");
            let _ = writeln!(out, "- [{}] {first}", m.outcome);
        }
        let _ = writeln!(out, "\n</details>\n");
    }
    let _ = writeln!(
        out,
        "---\nProposed by `chimera agent` ({}); compiled, planned, priced and policy-checked by Chimera against the current state of `{}`. Nothing was applied: merge, then apply the saved plan.",
        p.proposer, base.stack
    );
    out
}
