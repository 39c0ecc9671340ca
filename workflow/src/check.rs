//! `check`: compile the stack and say what it holds.

use crate::error::Error;
use crate::stack::Stack;

/// A stack that compiles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    pub stack: String,
    pub resources: usize,
    pub references: usize,
}

impl Stack {
    /// Evaluates, validates and builds the graph (warnings stay in [`Stack::take_warnings`]).
    pub fn check(&mut self) -> Result<Checked, Error> {
        let g = self.compile()?;
        Ok(Checked {
            stack: g.stack.clone(),
            resources: g.resources.len(),
            references: g.edges.len(),
        })
    }

    /// The compiled graph, for renderings (`graph`, `eval`).
    pub fn graph(&mut self) -> Result<&chimera_compiler::graph::Graph, Error> {
        self.compile()
    }
}
