//! Reconciling: one tick of what `chimera serve` does for a stack. Read every resource from its
//! cloud, compare with the last applied generation, and by the heal mode either put back what
//! drifted (`auto`) or only report it (`propose`, `report`).
//!
//! A heal puts the cloud back to the **last applied generation**, not to the configuration as
//! it is now: configuration changes go through the reviewed plan of a pull request. The heal
//! plan is the current generation's rows planned against the refreshed rows (so only what
//! drifted changes: a changed attribute is set back, a deleted resource is created again), then
//! goes through the same policy gate and locked engine path as every apply.

use chimera_engine::{ApplyReport, Drift, Recovery};
use chimera_model::{ContentHash, SourceMap};
use chimera_plans::findings::{Finding, Level};
use chimera_plans::plan::{self, Plan, Prior};

use crate::apply::{ApplyRequest, engine_options};
use crate::error::{Error, ErrorKind};
use crate::stack::Stack;

/// What to do about drift.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HealMode {
    /// Put back what drifted, through the normal engine path, gated by policy.
    Auto,
    /// Record the drift for the agent layer to turn into a pull request.
    Propose,
    /// Record and expose the drift only.
    #[default]
    Report,
}

impl HealMode {
    pub fn as_str(self) -> &'static str {
        match self {
            HealMode::Auto => "auto",
            HealMode::Propose => "propose",
            HealMode::Report => "report",
        }
    }
}

impl std::str::FromStr for HealMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(HealMode::Auto),
            "propose" => Ok(HealMode::Propose),
            "report" => Ok(HealMode::Report),
            other => Err(format!(
                "unknown heal mode `{other}`: use auto, propose or report"
            )),
        }
    }
}

/// What one reconcile of a stack found and did.
#[derive(Debug)]
pub struct Reconciled {
    pub stack: String,
    pub mode: HealMode,
    /// What resolving an interrupted apply first did.
    pub recovery: Recovery,
    /// What the cloud changed outside Chimera since the last applied generation.
    pub drift: Vec<Drift>,
    /// The heal plan (auto mode, with drift).
    pub plan: Option<Plan>,
    /// The engine's report of the heal; `None` when nothing was applied.
    pub report: Option<ApplyReport>,
    /// Policy warnings about the heal (a deny refuses it: see `denied`).
    pub findings: Vec<Finding>,
    /// The policy denials that kept the heal from being applied.
    pub denied: Vec<Finding>,
}

impl Reconciled {
    /// The heal ran and every step succeeded.
    pub fn healed(&self) -> bool {
        self.report.as_ref().is_some_and(ApplyReport::ok)
    }
}

impl Stack {
    /// One reconcile of the stack: recover an interrupted apply, read the clouds, and by
    /// `mode` heal the drift back to the last applied generation or only report it.
    pub async fn reconcile(
        &mut self,
        mode: HealMode,
        req: &ApplyRequest,
    ) -> Result<Reconciled, Error> {
        let recovery = self.recover().await?;
        let stack = self.name()?;
        let (store, providers) = self.state_and_providers().await?;
        let info = store.stack(&stack).await?;
        let current = store.current(&stack).await?;
        let drift = if current.is_empty() {
            Vec::new()
        } else {
            chimera_engine::drift_of(providers, &current).await?
        };
        let mut done = Reconciled {
            stack: stack.clone(),
            mode,
            recovery,
            drift,
            plan: None,
            report: None,
            findings: Vec::new(),
            denied: Vec::new(),
        };
        let Some(info) = info.filter(|_| mode == HealMode::Auto && !done.drift.is_empty()) else {
            return Ok(done);
        };
        // The last generation's rows are the target; the refreshed rows are where the cloud is.
        let refreshed = chimera_plans::drift::refreshed_rows(current.clone(), &done.drift, |_| true);
        let prior = Prior {
            lineage: Some(info.lineage.clone()),
            serial: info.serial,
            resources: &refreshed,
        };
        // The configuration supplies what state keeps only as a digest (sensitive values), for
        // the resources it still describes exactly as applied. (A stack that does not compile
        // never gets here: `name` compiles it, and its error ends the reconcile with nothing
        // applied; one opened `named` heals from state alone.)
        let config = self.compile().ok();
        let mut heal = plan::plan_targets(
            plan::heal_targets(&current, config),
            &stack,
            &prior,
            ContentHash([0; 32]),
            false,
        )
        .map_err(|d| Error::many(ErrorKind::Plan, d, SourceMap::default()))?;
        heal.drift = done.drift.clone();
        let lost = plan::unrestorable(&heal);
        if !lost.is_empty() {
            return Err(Error::many(ErrorKind::Plan, lost, SourceMap::default()).hint(
                "a drifted resource holds a sensitive value state keeps only as a digest; run `chimera apply` with the configuration to heal it",
            ));
        }
        // A deny is a decision, not a failure: the drift stays, and the denial says why.
        let found = if heal.has_changes() {
            crate::policy::evaluate(&self.policy_dir(), &heal, &self.settings.policy)?
        } else {
            Vec::new()
        };
        let (denied, warned): (Vec<Finding>, Vec<Finding>) =
            found.into_iter().partition(|f| f.level == Level::Deny);
        done.findings = warned;
        if !denied.is_empty() {
            done.denied = denied;
            done.plan = Some(heal);
            return Ok(done);
        }
        if heal.has_changes() {
            let opts = engine_options(&self.settings, req);
            let (store, providers) = self.state_and_providers().await?;
            done.report = Some(chimera_engine::apply(&heal, store, providers, &opts).await?);
        }
        done.plan = Some(heal);
        Ok(done)
    }
}
