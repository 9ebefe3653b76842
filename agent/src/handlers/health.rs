//! `GET /healthz`: liveness and version. No auth, no secrets, no state.

use axum::Json;

use common::wire::Health;

/// Liveness and version.
pub(crate) async fn get() -> Json<Health> {
    Json(Health {
        status: "ok".to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
    })
}
