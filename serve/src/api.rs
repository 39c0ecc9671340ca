//! The JSON API beyond the stack list (being written).

use std::sync::Arc;

use axum::Router;

use crate::Shared;

pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
}
