//! `GET /v1/status[?key=HEX]`: what this node holds — installed secrets with
//! their paths, keys and var names under keyed fingerprints, and every env
//! with its var names, and the state files found damaged at start
//! (`damaged_state`: file, where it was moved, why). Never a value.
//!
//! Without `key` the fingerprints are under this node's own random key
//! (`<state-dir>/fingerprint.key`): they show whether a value changed on this
//! node, but cannot be compared with another node or with the caller's copy.
//! With `key` (32 to 128 hex digits, i.e. 16 to 64 bytes; anything else is a
//! 400 `bad_fingerprint_key`) every fingerprint is an HMAC under the caller's
//! key of the canonical encoding in `common::fingerprint`, so the controller
//! can fingerprint its local copy the same way and tell which nodes hold
//! stale or changed values.
//!
//! Why a caller-chosen key reveals nothing new: the route sits behind the
//! bearer token like every other, so without the token nothing is answered;
//! and whoever holds the token can already run any command in an env
//! (`POST /v1/envs/{env}/run`) and read its variables and the credential files
//! outright, so an HMAC under a key of their choosing is no new capability.
//! The answer holds fingerprints, never a value, either way. The key itself
//! is never logged, echoed in an error or stored.

use axum::extract::State;
use axum::Json;
use serde::Serialize;

use common::fingerprint::FingerprintKey;
use common::wire::{KeyedBy, StatusResponse};

use crate::error::{ApiError, ApiQuery};
use crate::install::installed_status;
use crate::state::{AppState, Damaged};

/// What this node holds, fingerprinted under the node's key or the caller's.
pub(crate) async fn get(
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<Vec<(String, String)>>,
) -> Result<Json<AgentStatus>, ApiError> {
    let key = caller_key(&params)?;
    Ok(Json(AgentStatus {
        status: StatusResponse {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            secrets: installed_status(&state, key.as_ref()),
            envs: state.inner.envs.status(),
            fingerprints_keyed_by: if key.is_some() {
                KeyedBy::Request
            } else {
                KeyedBy::Node
            },
            sessions: state.inner.credentials.status(),
        },
        damaged_state: state.inner.damaged.clone(),
    }))
}

/// The wire [`StatusResponse`] plus the state files found damaged at start
/// (`damaged_state`, absent when none; readers of the wire type ignore it).
#[derive(Serialize)]
pub(crate) struct AgentStatus {
    #[serde(flatten)]
    status: StatusResponse,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    damaged_state: Vec<Damaged>,
}

/// The `key` query parameter, checked; other parameters are ignored.
fn caller_key(params: &[(String, String)]) -> Result<Option<FingerprintKey>, ApiError> {
    let mut keys = params.iter().filter(|(name, _)| name == "key");
    let Some((_, hex)) = keys.next() else {
        return Ok(None);
    };
    if keys.next().is_some() {
        return Err(ApiError::bad_request(
            "bad_fingerprint_key",
            "give the fingerprint key once",
        ));
    }
    FingerprintKey::from_hex(hex)
        .map(Some)
        .map_err(|e| ApiError::bad_request("bad_fingerprint_key", e.to_string()))
}
