//! `POST /v1/sync`: many secrets in one request. Every item is checked
//! (names, its placement against its secret, paths confined to home and
//! allowed by the policy, env and var names, provider values) before
//! anything is written; one bad item refuses the whole request with a
//! 4xx and nothing changes (so does a request that would create more envs
//! than the agent's `max_envs`: 409 `too_many_envs`). Then each item is
//! applied in order and gets its own `SecretResult` (`written`, `unchanged`,
//! `conflict`, `failed` with a message naming paths only;
//! `would_write`/`unchanged` in a dry run, which changes nothing; a file held
//! back by another file's conflict is `blocked`). The
//! response is 200 whatever the per-secret results.

use axum::extract::State;
use axum::Json;

use common::wire::{SyncRequest, SyncResponse};

use crate::error::{ApiError, ApiJson};
use crate::handlers::{deadline, detached};
use crate::install;
use crate::state::AppState;

/// Apply many secrets (`install::sync`).
pub(crate) async fn post(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<SyncRequest>,
) -> Result<Json<SyncResponse>, ApiError> {
    let opts = install::ApplyOpts {
        overwrite: req.overwrite,
        dry_run: req.dry_run,
        deadline: Some(deadline(&state)),
    };
    detached(async move {
        let results = install::sync(&state, "/v1/sync", req.items, opts).await?;
        Ok(Json(SyncResponse {
            results,
            dry_run: req.dry_run,
        }))
    })
    .await
}
