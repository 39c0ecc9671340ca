//! Plan → steps: the provider calls an apply makes, and which must finish before which.

use std::collections::HashMap;

use chimera_model::Address;
use chimera_plans::plan::{Action, Plan};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StepKind {
    Create,
    Update,
    Delete,
}

impl StepKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StepKind::Create => "create",
            StepKind::Update => "update",
            StepKind::Delete => "delete",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// Index into `plan.changes`.
    pub change: usize,
    pub address: Address,
    pub kind: StepKind,
    /// Steps (indices) that must finish first.
    pub after: Vec<usize>,
}

/// The steps of a plan. Creates and updates follow the resources they reference; deletes go
/// before the deletes of what the deleted resource referenced (dependents first); a replace is
/// delete-then-create, or create-then-delete with `create_before_destroy`.
pub fn steps(plan: &Plan) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    let mut up: HashMap<&Address, usize> = HashMap::new();
    let mut del: HashMap<&Address, usize> = HashMap::new();
    let push = |steps: &mut Vec<Step>, change: usize, address: &Address, kind| {
        steps.push(Step {
            change,
            address: address.clone(),
            kind,
            after: Vec::new(),
        });
        steps.len() - 1
    };
    for (ci, c) in plan.changes.iter().enumerate() {
        match c.action {
            Action::NoOp => {}
            Action::Create => {
                up.insert(
                    &c.address,
                    push(&mut steps, ci, &c.address, StepKind::Create),
                );
            }
            Action::Update => {
                up.insert(
                    &c.address,
                    push(&mut steps, ci, &c.address, StepKind::Update),
                );
            }
            Action::Delete => {
                del.insert(
                    &c.address,
                    push(&mut steps, ci, &c.address, StepKind::Delete),
                );
            }
            Action::Replace => {
                let d = push(&mut steps, ci, &c.address, StepKind::Delete);
                let k = push(&mut steps, ci, &c.address, StepKind::Create);
                if c.create_before_destroy {
                    steps[d].after.push(k);
                } else {
                    steps[k].after.push(d);
                }
                del.insert(&c.address, d);
                up.insert(&c.address, k);
            }
        }
    }
    for c in &plan.changes {
        if let (Some(&i), Some(d)) = (up.get(&c.address), &c.desired) {
            for dep in &d.deps {
                if let Some(&j) = up.get(dep) {
                    steps[i].after.push(j);
                }
            }
        }
        if let (Some(&i), Some(p)) = (del.get(&c.address), &c.prior) {
            for dep in &p.deps {
                if let Some(&j) = del.get(dep) {
                    steps[j].after.push(i);
                }
            }
        }
    }
    for s in &mut steps {
        s.after.sort_unstable();
        s.after.dedup();
    }
    steps
}
