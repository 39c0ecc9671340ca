//! A plan that changes nothing, as the plan memo keeps it: the stack, the state it was made
//! against and the addresses it covers, but no values (nothing to apply). Rendered like a full
//! plan with no changes; never applied.

use chimera_model::{Address, ContentHash};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::plan::{Action, Plan};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NoopPlan {
    pub stack: String,
    pub lineage: Option<String>,
    pub prior_serial: u64,
    pub desired_hash: ContentHash,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub provider_settings: Value,
    /// Every resource of the stack, in address order.
    pub addresses: Vec<Address>,
    /// What the stack costs (the plan JSON's `cost`), priced when the memo was made.
    #[serde(default)]
    pub cost: Value,
    /// How `'cheapest` placed the stack's groups.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub placements: Vec<chimera_model::graph::Placement>,
}

impl NoopPlan {
    /// The memo of `plan`, when it is a plan (not a destroy) that changes nothing.
    pub fn of(plan: &Plan) -> Option<NoopPlan> {
        if plan.has_changes() || plan.destroy {
            return None;
        }
        Some(NoopPlan {
            stack: plan.stack.clone(),
            lineage: plan.lineage.clone(),
            prior_serial: plan.prior_serial,
            desired_hash: plan.desired_hash,
            provider_settings: plan.provider_settings.clone(),
            addresses: plan.changes.iter().map(|c| c.address.clone()).collect(),
            cost: crate::cost::plan_cost(plan).to_json(),
            placements: plan.placements.clone(),
        })
    }

    /// The summary counts, as a full plan's JSON gives them.
    pub fn counts(&self) -> Vec<(Action, usize)> {
        vec![(Action::NoOp, self.addresses.len())]
    }
}
