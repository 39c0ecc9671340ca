//! Drift: how the cloud differs from what state recorded, found by reading it (a refresh), and
//! the state a plan is made against once drift is taken into account.

use chimera_model::{Address, ContentHash, StateResource};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// How a resource differs from what state recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum DriftKind {
    /// Gone from the cloud.
    Deleted,
    /// Attributes changed out of band: (attribute, recorded, observed).
    Changed { attrs: Vec<(String, Value, Value)> },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Drift {
    pub address: Address,
    pub cloud_id: String,
    #[serde(flatten)]
    pub kind: DriftKind,
}

/// `row` as the cloud holds it: the observed attributes, and no hash, so the planner diffs it
/// instead of taking the unchanged-hash fast path.
pub fn observed_row(row: &StateResource, attrs: &[(String, Value, Value)]) -> StateResource {
    let mut row = row.clone();
    for (k, _, observed) in attrs {
        row.attrs.insert(k.clone(), observed.clone());
    }
    row.hash = ContentHash([0; 32]);
    row
}

/// The rows a plan is made against after a refresh found `drift`. A changed resource takes
/// its observed values. A deleted one leaves the rows when `desired` still wants it (the plan
/// creates it again); otherwise it stays, so the plan deletes it (deleting what is gone
/// succeeds) and its row leaves state.
pub fn refreshed_rows(
    rows: Vec<StateResource>,
    drift: &[Drift],
    desired: impl Fn(&Address) -> bool,
) -> Vec<StateResource> {
    if drift.is_empty() {
        return rows;
    }
    let by_address: std::collections::HashMap<&Address, &Drift> =
        drift.iter().map(|d| (&d.address, d)).collect();
    rows.into_iter()
        .filter_map(|row| match by_address.get(&row.address).map(|d| &d.kind) {
            None => Some(row),
            Some(DriftKind::Deleted) if desired(&row.address) => None,
            Some(DriftKind::Deleted) => Some(row),
            Some(DriftKind::Changed { attrs }) => Some(observed_row(&row, attrs)),
        })
        .collect()
}
