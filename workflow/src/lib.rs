//! Chimera's workflows as a library: the CLI, the reconcile daemon and the agents are its
//! clients, and none of them re-implements a flow.
//!
//! Open a [`Stack`] (a path and the caller's [`Settings`]); every flow is a method on it and
//! compiles the stack, opens its state store and builds its providers at most once, however
//! many steps it takes (`apply` = recover → plan → review → apply). Flows that need no stack
//! are free functions ([`apply_file`], [`preview::preview`], [`test::run`],
//! [`migrate::migrate`]).
//!
//! **Architecture Invariant:** this crate never prints, never reads the terminal, and never
//! reads the environment: what a run depends on comes in through [`Settings`] and arguments;
//! what it finds goes out as typed values, warnings ([`Stack::take_warnings`]) and [`Error`]s
//! (a kind, hints and diagnostics). Asking a person is the caller's business: flows that
//! change infrastructure take a `review` callback that sees the plan first.

mod apply;
mod check;
mod cost;
mod error;
mod inspect;
mod local;
pub mod migrate;
mod observe;
mod plan;
pub mod policy;
pub mod preview;
mod reconcile;
pub mod readonly;
mod secrets;
mod settings;
mod stack;
pub mod test;

pub use apply::{Applied, ApplyRequest, apply_file, read_plan_file, write_plan_file};
pub use check::Checked;
pub use cost::StackCost;
pub use error::{Error, ErrorKind};
pub use inspect::Pulled;
pub use local::LocalChange;
pub use observe::Refreshed;
pub use plan::{PlanOptions, Planned};
pub use readonly::ReadOnlyStack;
pub use secrets::Rotated;
pub use reconcile::{HealMode, HealPolicy, ReconcileOptions, Reconciled};
pub use settings::{LOCAL_KNOBS, ProviderLayer, Settings};
pub use stack::{Compilation, Stack, stack_dir};

pub use chimera_compiler::cache::CacheUse;
pub use chimera_engine::{
    ApplyReport, CallFailure, Drift, DriftKind, FailureClass, Progress, Recovery, Step, StepKind,
};
