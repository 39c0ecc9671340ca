//! Applying: a stack (recover → plan → review → apply), a saved plan file exactly, a destroy,
//! or a rollback to an earlier generation.

use std::sync::Arc;

use chimera_engine::{ApplyOptions, ApplyReport, NoProgress, Progress, Providers, Recovery};
use chimera_model::{ContentHash, Diagnostic, SourceMap, codes};
use chimera_plans::PlanFile;
use chimera_plans::plan::{self, Plan, Prior};
use chimera_seal::Keys;
use chimera_state::StateStore;

use chimera_plans::findings::Finding;

use crate::error::{Error, ErrorKind};
use crate::policy;
use crate::settings::Settings;
use crate::stack::{Stack, build_providers};

/// How to apply.
#[derive(Clone)]
pub struct ApplyRequest {
    /// Concurrent provider calls per provider.
    pub parallelism: usize,
    /// Recorded with the new generation.
    pub message: String,
    pub progress: Arc<dyn Progress>,
    /// Refresh from the clouds before planning (not for a saved plan, which is applied as
    /// it was made).
    pub refresh: bool,
}

impl Default for ApplyRequest {
    fn default() -> Self {
        ApplyRequest {
            parallelism: 10,
            message: String::new(),
            progress: Arc::new(NoProgress),
            refresh: true,
        }
    }
}

/// What an apply did.
#[derive(Debug)]
pub struct Applied {
    /// The plan that was reviewed (and applied, if it had changes).
    pub plan: Plan,
    /// What recovering an interrupted apply first did.
    pub recovery: Recovery,
    /// The engine's report; `None` when the plan had no changes.
    pub report: Option<ApplyReport>,
    /// What the policies found (only warnings: a deny refuses the apply).
    pub findings: Vec<Finding>,
}

impl Applied {
    /// Everything succeeded (or there was nothing to do).
    pub fn ok(&self) -> bool {
        self.report.as_ref().is_none_or(ApplyReport::ok)
    }
}

fn not_confirmed() -> Error {
    Error::new(
        ErrorKind::NotConfirmed,
        Diagnostic::error(codes::NOT_CONFIRMED, "apply not confirmed").detail(
            "nothing was changed; answer `yes` at the prompt, pass -y, or save the plan with `chimera plan --out FILE` and apply the file",
        ),
    )
    .hint("confirm, or save the plan and apply the file")
}

/// Shows `plan` to `review`: whether to apply it (a plan without changes is not applied), or
/// the refusal.
fn reviewed(plan: &Plan, review: impl FnOnce(&Plan) -> bool) -> Result<bool, Error> {
    let go = review(plan);
    if !plan.has_changes() {
        return Ok(false);
    }
    if !go {
        return Err(not_confirmed());
    }
    Ok(true)
}

pub(crate) fn engine_options(settings: &Settings, req: &ApplyRequest) -> ApplyOptions {
    ApplyOptions {
        parallelism: req.parallelism.max(1),
        actor: settings.actor.clone(),
        message: req.message.clone(),
        progress: req.progress.clone(),
    }
}

/// Applies `plan` after keeping its sensitive values sealed in state (with a key configured),
/// so a later rollback can restore them. Every apply goes through here: `apply`, `destroy`,
/// `rollback`, a saved plan file, and the daemon's heals and GitOps applies (`reconcile`).
pub(crate) async fn apply_sealed(
    plan: &Plan,
    store: &dyn StateStore,
    providers: &Providers,
    keys: &Keys,
    opts: &ApplyOptions,
) -> Result<ApplyReport, Error> {
    crate::secrets::keep(store, plan, keys, &opts.actor).await?;
    Ok(chimera_engine::apply(plan, store, providers, opts).await?)
}

impl Stack {
    /// Resolves an interrupted apply's pending intents through the providers.
    pub async fn recover(&mut self) -> Result<Recovery, Error> {
        let stack = self.name()?;
        let actor = self.settings.actor.clone();
        let (store, providers) = self.state_and_providers().await?;
        Ok(chimera_engine::recover(store, providers, &stack, &actor).await?)
    }

    /// Recovers, plans, lets `review` see the plan (it returns whether to go on; it is not
    /// asked to approve a plan without changes), and applies. One compile, one state store,
    /// one set of providers for the whole run.
    pub async fn apply(
        &mut self,
        req: &ApplyRequest,
        review: impl FnOnce(&Plan) -> bool,
    ) -> Result<Applied, Error> {
        self.apply_planned(req, false, review).await
    }

    /// As [`Stack::apply`], for a plan that deletes everything the stack manages.
    pub async fn destroy(
        &mut self,
        req: &ApplyRequest,
        review: impl FnOnce(&Plan) -> bool,
    ) -> Result<Applied, Error> {
        self.apply_planned(req, true, review).await
    }

    async fn apply_planned(
        &mut self,
        req: &ApplyRequest,
        destroy: bool,
        review: impl FnOnce(&Plan) -> bool,
    ) -> Result<Applied, Error> {
        // Resolve an interrupted apply before planning, so the plan sees the truth.
        let recovery = self.recover().await?;
        let (plan, _) = self.plan_full(destroy, req.refresh, false).await?;
        self.execute(plan, recovery, req, review).await
    }

    /// Plans the way back to generation `generation`'s resources, lets `review` see it, and
    /// applies it.
    pub async fn rollback(
        &mut self,
        generation: u64,
        req: &ApplyRequest,
        review: impl FnOnce(&Plan) -> bool,
    ) -> Result<Applied, Error> {
        let stack = self.name()?;
        let recovery = self.recover().await?;
        let keys = self.settings.keys.clone();
        let store = self.store().await?;
        let info = store.stack(&stack).await?;
        let current = store.current(&stack).await?;
        let target = store.resources_at(&stack, generation).await?;
        let Some(info) = info.filter(|i| generation >= 1 && generation <= i.serial) else {
            return Err(Error::new(
                ErrorKind::Input,
                Diagnostic::error(codes::NO_GENERATION, "no such generation").detail(format!(
                    "stack `{stack}` has no generation {generation}; `chimera history` lists them"
                )),
            ));
        };
        // Sensitive values state keeps as digests: from the configuration when it still has
        // them, else sealed in state (with a key).
        let mut targets = plan::rollback_targets(&target);
        let config = self
            .compile()
            .map(crate::secrets::sensitive_values)
            .unwrap_or_default();
        let store = self.store().await?;
        crate::secrets::restore(&mut targets, &current, config, store, &stack, &keys).await?;
        let prior = Prior {
            lineage: Some(info.lineage.clone()),
            serial: info.serial,
            resources: &current,
        };
        let plan = plan::plan_targets(targets, &stack, &prior, ContentHash([0; 32]), false)
            .map_err(|d| Error::many(ErrorKind::Plan, d, SourceMap::default()))?;
        let lost = plan::unrestorable(&plan);
        if !lost.is_empty() {
            return Err(Error::many(ErrorKind::Plan, lost, SourceMap::default()));
        }
        self.execute(plan, recovery, req, review).await
    }

    async fn execute(
        &mut self,
        plan: Plan,
        recovery: Recovery,
        req: &ApplyRequest,
        review: impl FnOnce(&Plan) -> bool,
    ) -> Result<Applied, Error> {
        let findings = policy_gate(&plan, &self.policy_dir(), &self.settings)?;
        if !reviewed(&plan, review)? {
            return Ok(Applied {
                plan,
                recovery,
                report: None,
                findings,
            });
        }
        let opts = engine_options(&self.settings, req);
        let keys = self.settings.keys.clone();
        let (store, providers) = self.state_and_providers().await?;
        let report = apply_sealed(&plan, store, providers, &keys, &opts).await?;
        Ok(Applied {
            plan,
            recovery,
            report: Some(report),
            findings,
        })
    }
}

/// Evaluates the policies of `dir` over a plan about to be applied: a deny refuses it (before
/// it is shown for review, so nothing is changed and no generation is opened); warnings are
/// returned.
fn policy_gate(
    plan: &Plan,
    dir: &std::path::Path,
    settings: &Settings,
) -> Result<Vec<Finding>, Error> {
    if !plan.has_changes() {
        return Ok(Vec::new());
    }
    let findings = policy::evaluate(dir, plan, &settings.policy)?;
    match policy::refusal(&findings) {
        Some(e) => Err(e),
        None => Ok(findings),
    }
}

/// Applies a saved plan file exactly, against the state and local cloud it was made for
/// (`state_url` overrides the file's). It is shown to `review` first.
pub async fn apply_file(
    file: PlanFile,
    settings: &Settings,
    req: &ApplyRequest,
    review: impl FnOnce(&Plan) -> bool,
) -> Result<Applied, Error> {
    let PlanFile {
        plan,
        state_url,
        local_cloud,
        policies,
    } = file;
    let recovery = Recovery::default();
    // The policies as they are now, not as they were when the plan was made: a plan saved
    // before a rule was added must pass it too.
    let findings = if policies.is_empty() {
        Vec::new()
    } else {
        policy_gate(&plan, std::path::Path::new(&policies), settings)?
    };
    if !reviewed(&plan, review)? {
        return Ok(Applied {
            plan,
            recovery,
            report: None,
            findings,
        });
    }
    let url = settings.state_url.clone().unwrap_or(state_url);
    let store = chimera_state::open(&url).await?;
    let providers = build_providers(
        std::path::Path::new(&local_cloud),
        &plan.provider_settings,
        &settings.provider_env,
        settings.provider_layer.as_ref(),
    )
    .await?;
    let opts = engine_options(settings, req);
    let report = apply_sealed(&plan, store.as_ref(), &providers, &settings.keys, &opts).await?;
    Ok(Applied {
        plan,
        recovery,
        report: Some(report),
        findings,
    })
}

/// Reads a plan file (opening it with `settings.keys` when it is sealed): a diagnostic when it
/// is missing, damaged, edited, or sealed with a key that is not configured.
pub fn read_plan_file(path: &std::path::Path, settings: &Settings) -> Result<PlanFile, Error> {
    PlanFile::read(path, &settings.keys).map_err(|d| Error::new(ErrorKind::Input, *d))
}

/// Saves a plan file: sealed with `settings.keys` when configured; refused when it would hold
/// a sensitive value and no key is.
pub fn write_plan_file(
    path: &std::path::Path,
    file: &PlanFile,
    settings: &Settings,
) -> Result<(), Error> {
    file.write(path, &settings.keys).map_err(|d| {
        let kind = if d.code == codes::PLAN_NOT_SAVED {
            ErrorKind::Io
        } else {
            ErrorKind::Input
        };
        Error::new(kind, *d)
    })
}
