//! Chimera's compiler: Nickel stack files → a typed, content-addressed resource graph.

pub mod eval;
pub mod stdlib;
