//! Reconciling: one tick of what `chimera serve` does for a stack. Read every resource from its
//! cloud, compare with the last applied generation, and by the heal mode either put back what
//! drifted (`auto`) or only report it (`propose`, `report`).
//!
//! A heal puts the cloud back to the **last applied generation**, not to the configuration as
//! it is now: configuration changes go through the reviewed plan of a pull request. The heal
//! plan is the current generation's rows planned against the refreshed rows (so only what
//! drifted changes: a changed attribute is set back, a deleted resource is created again), then
//! goes through the same policy gate and locked engine path as every apply.
//!
//! The mode is the stack's (`reconcile.heal` in its settings, else the caller's), narrowed per
//! kind or address by `reconcile.overrides`. In GitOps mode (opt-in) the target is the
//! configuration instead: what was merged is applied together with the heal.

use std::collections::{BTreeMap, BTreeSet};

use chimera_engine::{ApplyReport, Drift, Recovery};
use chimera_model::{Address, ContentHash, Diagnostic, Kind, SourceMap, codes};
use chimera_plans::findings::{Finding, Level};
use chimera_plans::plan::{self, Plan, Prior};
use serde_json::Value;

use crate::apply::{ApplyRequest, apply_sealed, engine_options};
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

/// How a stack's drift is treated: its mode, and modes per kind or address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HealPolicy {
    pub mode: HealMode,
    /// A kind (`instance`) or an address (`instance.web`) → its mode; the address wins.
    pub overrides: BTreeMap<String, HealMode>,
}

impl HealPolicy {
    pub fn new(mode: HealMode) -> Self {
        HealPolicy {
            mode,
            overrides: BTreeMap::new(),
        }
    }

    pub fn mode_of(&self, address: &Address) -> HealMode {
        self.overrides
            .get(&address.to_string())
            .or_else(|| self.overrides.get(address.kind.as_str()))
            .copied()
            .unwrap_or(self.mode)
    }

    /// The stack's `reconcile` settings (as the compiler exported them) over `default`, the
    /// caller's mode.
    pub fn from_settings(default: HealMode, settings: &Value) -> Result<HealPolicy, String> {
        let mut policy = HealPolicy::new(default);
        if settings.is_null() {
            return Ok(policy);
        }
        if let Some(m) = settings.get("heal").and_then(Value::as_str) {
            policy.mode = m.parse()?;
        }
        if let Some(o) = settings.get("overrides").and_then(Value::as_object) {
            for (key, mode) in o {
                let mode: HealMode = mode
                    .as_str()
                    .ok_or_else(|| format!("reconcile.overrides.{key}: not a heal mode"))?
                    .parse()?;
                let known = key.parse::<Kind>().is_ok() || key.parse::<Address>().is_ok();
                if !known {
                    return Err(format!(
                        "reconcile.overrides: `{key}` is neither a kind (network, subnet, firewall, instance, volume) nor an address such as `instance.web`"
                    ));
                }
                policy.overrides.insert(key.clone(), mode);
            }
        }
        Ok(policy)
    }
}

/// What the caller decides for one reconcile.
#[derive(Debug, Clone, Default)]
pub struct ReconcileOptions {
    /// The mode of a stack whose settings name none.
    pub mode: HealMode,
    /// Drifted resources not to heal this time (backing off after failures, or parked).
    pub hold: BTreeSet<Address>,
    /// Apply the configuration as it is now (what was merged), not only put drift back.
    pub gitops: bool,
}

/// What one reconcile of a stack found and did.
#[derive(Debug)]
pub struct Reconciled {
    pub stack: String,
    /// The stack's heal policy as this reconcile used it.
    pub policy: HealPolicy,
    /// What resolving an interrupted apply first did.
    pub recovery: Recovery,
    /// What the cloud changed outside Chimera since the last applied generation.
    pub drift: Vec<Drift>,
    /// The drift this reconcile put back (mode `auto`, not held).
    pub healing: Vec<Address>,
    /// The drift left for the agent layer (mode `propose`).
    pub proposed: Vec<Address>,
    /// Drift in mode `auto` held back by the caller.
    pub held: Vec<Address>,
    /// The plan applied (a heal, or in GitOps mode the configuration's).
    pub plan: Option<Plan>,
    /// The engine's report; `None` when nothing was applied.
    pub report: Option<ApplyReport>,
    /// Policy warnings about the plan (a deny refuses it: see `denied`).
    pub findings: Vec<Finding>,
    /// The policy denials that kept the plan from being applied.
    pub denied: Vec<Finding>,
}

impl Reconciled {
    /// The plan ran and every step succeeded.
    pub fn healed(&self) -> bool {
        self.report.as_ref().is_some_and(ApplyReport::ok)
    }
}

impl Stack {
    /// One reconcile of the stack: recover an interrupted apply, read the clouds, and by the
    /// stack's heal policy put drift back to the last applied generation or only record it
    /// (in GitOps mode: apply the configuration).
    pub async fn reconcile(
        &mut self,
        opts: &ReconcileOptions,
        req: &ApplyRequest,
    ) -> Result<Reconciled, Error> {
        let recovery = self.recover().await?;
        let stack = self.name()?;
        let policy = match self.compile().ok() {
            Some(g) => HealPolicy::from_settings(opts.mode, &g.reconcile).map_err(|m| {
                Error::new(
                    ErrorKind::Input,
                    Diagnostic::error(codes::RECONCILE_SETTING, "invalid reconcile setting")
                        .detail(m),
                )
            })?,
            None => HealPolicy::new(opts.mode),
        };
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
            policy,
            recovery,
            drift,
            healing: Vec::new(),
            proposed: Vec::new(),
            held: Vec::new(),
            plan: None,
            report: None,
            findings: Vec::new(),
            denied: Vec::new(),
        };
        for d in &done.drift {
            match done.policy.mode_of(&d.address) {
                HealMode::Auto if opts.hold.contains(&d.address) => {
                    done.held.push(d.address.clone())
                }
                HealMode::Auto => done.healing.push(d.address.clone()),
                HealMode::Propose => done.proposed.push(d.address.clone()),
                HealMode::Report => {}
            }
        }
        // Only the drift being healed is taken as where the cloud is; the rest stays as
        // recorded, so the plan leaves it alone.
        let healing: BTreeSet<&Address> = done.healing.iter().collect();
        let heal_drift: Vec<Drift> = done
            .drift
            .iter()
            .filter(|d| healing.contains(&d.address))
            .cloned()
            .collect();
        let mut plan = if opts.gitops {
            // The configuration is the target; drift not being healed stays as recorded.
            let Ok(config) = self.compile() else {
                return Ok(done);
            };
            let refreshed = chimera_plans::drift::refreshed_rows(current, &heal_drift, |a| {
                config.get(a).is_some()
            });
            let prior = Prior {
                lineage: info.as_ref().map(|i| i.lineage.clone()),
                serial: info.as_ref().map(|i| i.serial).unwrap_or(0),
                resources: &refreshed,
            };
            let mut p = plan::plan(Some(config), &stack, &prior)
                .map_err(|d| Error::many(ErrorKind::Plan, d, SourceMap::default()))?;
            p.provider_settings = config.provider_settings.clone();
            self.validate(&p).await?;
            p
        } else {
            let Some(info) = info.filter(|_| !healing.is_empty()) else {
                return Ok(done);
            };
            // The last generation's rows are the target; the refreshed rows are where the
            // cloud is.
            let refreshed =
                chimera_plans::drift::refreshed_rows(current.clone(), &heal_drift, |_| true);
            let prior = Prior {
                lineage: Some(info.lineage.clone()),
                serial: info.serial,
                resources: &refreshed,
            };
            // The configuration supplies what state keeps only as a digest (sensitive values),
            // for the resources it still describes exactly as applied. (A stack that does not
            // compile never gets here: `name` compiles it, and its error ends the reconcile
            // with nothing applied; one opened `named` heals from state alone.)
            let config = self.compile().ok();
            let heal = plan::plan_targets(
                plan::heal_targets(&current, config),
                &stack,
                &prior,
                ContentHash([0; 32]),
                false,
            )
            .map_err(|d| Error::many(ErrorKind::Plan, d, SourceMap::default()))?;
            let lost = plan::unrestorable(&heal);
            if !lost.is_empty() {
                return Err(Error::many(ErrorKind::Plan, lost, SourceMap::default()).hint(
                    "a drifted resource holds a sensitive value state keeps only as a digest; run `chimera apply` with the configuration to heal it",
                ));
            }
            heal
        };
        plan.drift = done.drift.clone();
        // A deny is a decision, not a failure: the drift stays, and the denial says why.
        let found = if plan.has_changes() {
            crate::policy::evaluate(&self.policy_dir(), &plan, &self.settings.policy)?
        } else {
            Vec::new()
        };
        let (denied, warned): (Vec<Finding>, Vec<Finding>) =
            found.into_iter().partition(|f| f.level == Level::Deny);
        done.findings = warned;
        if !denied.is_empty() {
            done.denied = denied;
            done.plan = Some(plan);
            return Ok(done);
        }
        if plan.has_changes() {
            let opts = engine_options(&self.settings, req);
            let keys = self.settings.keys.clone();
            let (store, providers) = self.state_and_providers().await?;
            // Sealed in state as an apply's are: a rollback past this heal can restore them.
            done.report = Some(apply_sealed(&plan, store, providers, &keys, &opts).await?);
        }
        done.plan = Some(plan);
        Ok(done)
    }
}
