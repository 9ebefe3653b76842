//! `GET /v1/status`: what this node holds — installed secrets with their
//! paths, keys and var names under keyed fingerprints, and every env with its
//! var names. Never a value.

use axum::extract::State;
use axum::Json;

use common::wire::StatusResponse;

use crate::install::installed_status;
use crate::state::AppState;

/// What this node holds.
pub(crate) async fn get(State(state): State<AppState>) -> Json<StatusResponse> {
    Json(StatusResponse {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        secrets: installed_status(&state),
        envs: state.inner.envs.status(),
    })
}
