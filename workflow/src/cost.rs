//! `cost`: what a stack costs per month once applied, priced from the dated catalog.

use chimera_model::graph::Placement;
use chimera_plans::cost::{PlanCost, graph_cost};

use crate::error::Error;
use crate::stack::Stack;

/// A stack's monthly price and how `'cheapest` placed its groups.
#[derive(Debug, Clone)]
pub struct StackCost {
    pub stack: String,
    pub cost: PlanCost,
    pub placements: Vec<Placement>,
}

impl Stack {
    /// Compiles the stack and prices every resource in its provider's native region (no state
    /// is read: this is what the desired state costs, as `infracost breakdown` shows).
    pub fn cost(&mut self) -> Result<StackCost, Error> {
        let g = self.compile()?;
        Ok(StackCost {
            stack: g.stack.clone(),
            cost: graph_cost(g),
            placements: g.placements.clone(),
        })
    }
}
