//! `GET /healthz[?challenge=HEX]`: liveness and version, no auth, no
//! secrets. With `challenge` (32 to 128 hex digits; anything else is a 400
//! `bad_challenge`) the answer also carries `proof`, the HMAC of the
//! challenge under the agent's token (`common::proof`): the controller checks
//! it before it sends the token, so a process that took this port while the
//! agent was down cannot collect it. The token never appears in an answer;
//! the challenge is not logged or echoed.

use axum::extract::State;
use axum::Json;

use common::proof::parse_challenge;
use common::wire::Health;

use crate::error::{ApiError, ApiQuery};
use crate::state::AppState;

/// Liveness and version, plus the token proof when challenged.
pub(crate) async fn get(
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<Vec<(String, String)>>,
) -> Result<Json<Health>, ApiError> {
    let proof = challenge(&params)?.map(|nonce| state.token_proof(&nonce));
    Ok(Json(Health {
        status: "ok".to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        // Announced with the proof only: the plain body stays as it was,
        // and the controller (which always challenges) is who needs them.
        features: if proof.is_some() {
            vec![
                common::wire::FEATURE_PLACEMENT.to_owned(),
                common::wire::FEATURE_SESSIONS.to_owned(),
            ]
        } else {
            vec![]
        },
        proof,
    }))
}

/// The `challenge` query parameter, decoded; other parameters are ignored.
fn challenge(params: &[(String, String)]) -> Result<Option<Vec<u8>>, ApiError> {
    let mut given = params.iter().filter(|(name, _)| name == "challenge");
    let Some((_, hex)) = given.next() else {
        return Ok(None);
    };
    if given.next().is_some() {
        return Err(ApiError::bad_request(
            "bad_challenge",
            "give the challenge once",
        ));
    }
    parse_challenge(hex)
        .map(Some)
        .map_err(|e| ApiError::bad_request("bad_challenge", e.to_string()))
}
