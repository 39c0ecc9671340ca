//! Plans: the desired [`Graph`](chimera_model::graph::Graph) against prior state becomes a
//! [`Plan`] of create / update / replace / delete; plans render as text, JSON and a Markdown
//! pull-request comment, and are saved to and read from integrity-checked plan files.
//!
//! Pure: no I/O except [`planfile`]'s reading and writing of the one file it is given. This
//! crate does not know Nickel: whatever only plans, prices or applies links it instead of the
//! compiler.

pub mod cost;
pub mod drift;
pub mod findings;
pub mod markdown;
pub mod moves;
pub mod noop;
pub mod plan;
pub mod planfile;
pub mod render;

pub use cost::{PlanCost, ResourceCost, plan_cost};
pub use findings::{Finding, Level};
pub use drift::{Drift, DriftKind};
pub use noop::NoopPlan;
pub use plan::{Action, AttrChange, Desired, Plan, Prior, ResourceChange};
pub use planfile::PlanFile;
