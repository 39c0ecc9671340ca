//! Moves: the renames a plan makes (`moved` entries), written to state before any step runs.
//!
//! A move is no provider call: it is one state transaction ([`StateStore::record_moves`]) in
//! the apply's generation, committed before the first intent. A crash before it leaves state
//! unmoved (the next plan moves again); after it, the rows are moved and the next plan finds
//! each `from` gone (the move is done). Steps that follow a move (an update or replace the
//! new configuration asks for) act on the row under its new address, with its cloud id.

use std::collections::HashSet;

use chimera_model::{Address, StateResource};
use chimera_plans::plan::{Action, Plan};
use chimera_state::{Lock, StateStore};

use crate::EngineError;

/// What a plan's moves write: each `(from, to)`, and the rows under their new addresses with
/// the rows whose references follow them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Moves {
    pub pairs: Vec<(Address, Address)>,
    pub rows: Vec<StateResource>,
}

/// The moves of `plan`. The planner already renamed the rows (`prior` of each change); a row
/// whose change is a no-op takes the desired hash and protection, so the next plan of the same
/// configuration is a hash comparison again (a moved resource's hash covers its new address).
pub fn of(plan: &Plan) -> Moves {
    let pairs: Vec<(Address, Address)> = plan
        .changes
        .iter()
        .filter_map(|c| Some((c.moved_from.clone()?, c.address.clone())))
        .collect();
    if pairs.is_empty() {
        return Moves::default();
    }
    let targets: HashSet<&Address> = pairs.iter().map(|(_, to)| to).collect();
    let rows = plan
        .changes
        .iter()
        .filter_map(|c| {
            let prior = c.prior.as_ref()?;
            let refers = prior.deps.iter().any(|d| targets.contains(d));
            if c.moved_from.is_none() && !refers {
                return None;
            }
            let mut row = prior.clone();
            if let (Action::NoOp, Some(d)) = (c.action, &c.desired) {
                row.hash = d.hash;
                row.prevent_destroy = d.lifecycle.prevent_destroy;
            }
            Some(row)
        })
        .collect();
    Moves { pairs, rows }
}

/// Writes `plan`'s moves in generation `serial`, in one transaction; returns them.
pub async fn record(
    plan: &Plan,
    store: &dyn StateStore,
    lock: &Lock,
    serial: u64,
) -> Result<Vec<(Address, Address)>, EngineError> {
    let moves = of(plan);
    if moves.pairs.is_empty() {
        return Ok(Vec::new());
    }
    store
        .record_moves(lock, serial, &moves.pairs, &moves.rows)
        .await?;
    Ok(moves.pairs)
}
