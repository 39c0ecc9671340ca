//! The dated price catalog (`stdlib/prices.json`: list prices per provider × native region).
//!
//! It lives in `chimera_model::prices`, so that whatever only prices a plan need not link the
//! compiler; the compiler reads it for `monthly_cost`, `'cheapest` placement and
//! `Catalog::fit_instance_type`, and keys its evaluation cache on it (`stdlib::digest`).

pub use chimera_model::prices::*;
