//! Chimera's shared domain types.
//!
//! Everything else depends on this crate and it depends on nothing of ours: resource addresses,
//! kinds and providers, each kind's definition (`kinds`), reference placeholders, source spans and diagnostics, and the content
//! hash. It does no I/O.

pub mod address;
pub mod codes;
pub mod diagnostic;
pub mod graph;
pub mod hash;
pub mod kinds;
pub mod prices;
pub mod reference;
pub mod state;

pub use address::{Address, Kind, ProviderName};
pub use diagnostic::{Code, Diagnostic, Label, Location, Severity, SourceFile, SourceMap, Span};
pub use hash::ContentHash;
pub use reference::{Piece, Ref};
pub use state::StateResource;
