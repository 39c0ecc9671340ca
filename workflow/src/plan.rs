//! Planning a stack against its state: what `chimera plan` shows and `apply` applies.

use chimera_compiler::cache::StateStamp;
use chimera_model::{Address, Diagnostic, codes};
use chimera_plans::plan::{self, Action, Plan, Prior};
use chimera_plans::{NoopPlan, PlanFile};
use chimera_providers::{Proposal, Violation};
use chimera_state::StateStore;

use crate::error::{Error, ErrorKind};
use crate::stack::Stack;

/// How to plan.
#[derive(Debug, Clone, Copy, Default)]
pub struct PlanOptions {
    /// Plan the destruction of everything in the stack.
    pub destroy: bool,
    /// An unchanged stack against unchanged state may re-plan from the memo (no evaluation,
    /// no state rows read). Only for showing a plan: a memo holds no values to apply; and
    /// only without `refresh`, since a memo cannot know what changed in the cloud.
    pub memo: bool,
    /// Read every resource from its cloud first (as `terraform plan` does), so the plan heals
    /// drift and shows it.
    pub refresh: bool,
}

/// A plan, and where it was made.
#[derive(Debug)]
pub enum Planned {
    /// A full plan: what `apply` applies, or saves to a file.
    Full(PlanFile),
    /// The memo of a plan that changes nothing (see [`PlanOptions::memo`]).
    Unchanged(NoopPlan),
}

impl Planned {
    pub fn has_changes(&self) -> bool {
        match self {
            Planned::Full(f) => f.plan.has_changes(),
            Planned::Unchanged(_) => false,
        }
    }

    pub fn stack(&self) -> &str {
        match self {
            Planned::Full(f) => &f.plan.stack,
            Planned::Unchanged(n) => &n.stack,
        }
    }
}

/// The state a memoized plan is valid for; `None` while anything is in flight or pending.
pub(crate) async fn state_stamp(
    store: &dyn StateStore,
    url: &str,
    stack: &str,
) -> Option<StateStamp> {
    let info = store.stack(stack).await.ok()?;
    let latest = match store.latest_generation(stack).await.ok()? {
        Some(g) if g.finished_at.is_none() => return None,
        Some(g) => format!("{} {}", g.status, g.finished_at.unwrap_or_default()),
        None => String::new(),
    };
    if !store.pending_intents(stack).await.ok()?.is_empty() {
        return None;
    }
    Some(StateStamp {
        url: url.to_string(),
        lineage: info.as_ref().map(|i| i.lineage.clone()),
        serial: info.map(|i| i.serial).unwrap_or(0),
        latest,
    })
}

impl Stack {
    /// Plans the stack against its current state (compiling it unless destroying).
    pub async fn plan(&mut self, opts: PlanOptions) -> Result<Planned, Error> {
        let url = self.state_url();
        let cache = self
            .eval_cache()
            .filter(|_| opts.memo && !opts.destroy && !opts.refresh);
        if let Some(cache) = &cache
            && let Some(cached) = cache.peek(self.path())
        {
            let store = self.store().await?;
            if let Some(stamp) = state_stamp(store, &url, &cached.stack).await
                && let Some(memo) = cache.memo::<NoopPlan>(self.path(), &cached, &stamp)
                && memo.stack == cached.stack
                && memo.addresses.len() == cached.resources
                && memo.desired_hash.to_hex() == cached.graph_hash
            {
                return Ok(Planned::Unchanged(memo));
            }
        }
        let (plan, stamp) = self
            .plan_full(opts.destroy, opts.refresh, cache.is_some())
            .await?;
        if let (Some(cache), Some(stamp), Some(memo)) = (&cache, &stamp, NoopPlan::of(&plan)) {
            cache.remember(self.path(), &memo.desired_hash.to_hex(), stamp, &memo);
        }
        Ok(Planned::Full(self.plan_file(plan)))
    }

    /// A plan file for `plan` made against this stack's state and local cloud.
    pub fn plan_file(&self, plan: Plan) -> PlanFile {
        PlanFile {
            plan,
            state_url: self.state_url(),
            local_cloud: self.local_cloud_path().display().to_string(),
            policies: self.policy_dir().display().to_string(),
        }
    }

    /// A full plan against current state — refreshed from the clouds first when `refresh` —
    /// with the graph moved into the plan (one copy of the desired state, not two). With
    /// `stamp`, also the state the plan was made against, for the memo.
    pub(crate) async fn plan_full(
        &mut self,
        destroy: bool,
        refresh: bool,
        stamp: bool,
    ) -> Result<(Plan, Option<StateStamp>), Error> {
        let graph = self.compile()?;
        let (stack, settings) = (graph.stack.clone(), graph.provider_settings.clone());
        let url = self.state_url();
        let store = self.store().await?;
        // Taken before the rows are read: if state moves in between, the memo is keyed by the
        // older stamp and simply never found again.
        let stamp = if stamp {
            state_stamp(store, &url, &stack).await
        } else {
            None
        };
        let info = store.stack(&stack).await?;
        let mut current = store.current(&stack).await?;
        let pending = store.pending_intents(&stack).await?;
        if !pending.is_empty() {
            self.warn(
                Diagnostic::warning(codes::INTERRUPTED, "an earlier apply was interrupted").detail(
                    format!(
                        "{} provider calls were in flight; `chimera apply` resolves them before it changes anything, and this plan may change once it has",
                        pending.len()
                    ),
                ),
            );
        }
        let mut drift = Vec::new();
        if refresh && !current.is_empty() {
            drift = chimera_engine::drift_of(self.providers().await?, &current).await?;
            let graph = self.compile()?;
            current = chimera_plans::drift::refreshed_rows(current, &drift, |a| {
                !destroy && graph.get(a).is_some()
            });
        }
        let prior = Prior {
            lineage: info.as_ref().map(|i| i.lineage.clone()),
            serial: info.as_ref().map(|i| i.serial).unwrap_or(0),
            resources: &current,
        };
        let planned = if destroy {
            plan::plan(None, &stack, &prior)
        } else {
            let graph = self.take_graph()?;
            plan::plan_owned(graph, &prior)
        };
        let mut plan = planned.map_err(|diags| {
            Error::many(ErrorKind::Plan, diags, chimera_model::SourceMap::default())
        })?;
        plan.provider_settings = settings;
        plan.drift = drift;
        self.validate(&plan).await?;
        Ok((plan, stamp))
    }

    /// Asks each provider whether what the plan creates or changes stays within its limits;
    /// every violation becomes a diagnostic at the attribute's place in the stack's files.
    pub(crate) async fn validate(&mut self, plan: &Plan) -> Result<(), Error> {
        let proposed: Vec<_> = plan
            .changes
            .iter()
            .filter(|c| matches!(c.action, Action::Create | Action::Update | Action::Replace))
            .filter_map(|c| Some((c, c.desired.as_ref()?)))
            .collect();
        if proposed.is_empty() {
            return Ok(());
        }
        let providers = self.providers().await?;
        let mut found: Vec<(Address, Violation)> = Vec::new();
        for (change, d) in proposed {
            // A rollback's sensitive digests make no spec; what they stand for was valid.
            let (Ok(provider), Ok(proposal)) = (
                providers.get(d.provider),
                Proposal::from_attrs(d.provider, change.address.kind, &d.attrs),
            ) else {
                continue;
            };
            let req = proposal.request(&plan.stack, &change.address, &d.native_region, "");
            found.extend(
                provider
                    .validate(&req)
                    .into_iter()
                    .map(|v| (change.address.clone(), v)),
            );
        }
        if found.is_empty() {
            return Ok(());
        }
        let wanted: Vec<(Address, String)> = found
            .iter()
            .map(|(a, v)| (a.clone(), v.field.clone()))
            .collect();
        let (locations, sources) =
            chimera_compiler::locate(&self.source, &self.path, &self.settings.eval, &wanted);
        let diagnostics = found
            .into_iter()
            .zip(locations)
            .map(|((address, v), at)| {
                let provider = plan
                    .changes
                    .iter()
                    .find(|c| c.address == address)
                    .and_then(|c| c.desired.as_ref())
                    .map(|d| d.provider.as_str())
                    .unwrap_or("the provider");
                Diagnostic::error(codes::PROVIDER_LIMIT, format!("beyond {provider}'s limits"))
                    .detail(format!("`{}`: {}", v.field, v.message))
                    .address(&address)
                    .at(at)
            })
            .collect();
        Err(Error::many(ErrorKind::Plan, diagnostics, sources))
    }
}
