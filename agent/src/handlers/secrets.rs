//! `POST /v1/secrets/_write_to_file` and `DELETE /v1/secrets/{name}`.
//!
//! `_write_to_file` answers a `SyncResponse` with one result: 200 when the
//! file was written or unchanged (or would be, in a dry run), **409 with the
//! same body when it conflicts** (the file holds other values for the
//! secret's keys and `overwrite` is off; nothing was written; the result
//! lists the conflicting keys). Revoke answers 200 with one result, 404 when
//! the secret is not installed here. No value is logged or echoed.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;

use common::wire::{RevokeQuery, Status, SyncResponse, WriteToFileRequest};

use crate::error::{ApiError, ApiJson, ApiPath, ApiQuery};
use crate::handlers::{deadline, detached};
use crate::install;
use crate::state::AppState;

/// Write one secret into its file(s), merging (`install::write_file`):
/// 409 with the same body on conflict.
pub(crate) async fn write_to_file(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<WriteToFileRequest>,
) -> Result<(StatusCode, Json<SyncResponse>), ApiError> {
    let opts = install::ApplyOpts {
        overwrite: req.overwrite,
        dry_run: req.dry_run,
        deadline: Some(deadline(&state)),
    };
    detached(async move {
        let route = "/v1/secrets/_write_to_file";
        let result = install::write_file(&state, route, req.secret, req.path, opts).await?;
        let status = if result.status == Status::Conflict {
            StatusCode::CONFLICT
        } else {
            StatusCode::OK
        };
        Ok((status, Json(SyncResponse::one(result, req.dry_run))))
    })
    .await
}

/// Revoke: remove what the secret installed (`install::revoke`).
pub(crate) async fn revoke(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
    ApiQuery(query): ApiQuery<RevokeQuery>,
) -> Result<Json<SyncResponse>, ApiError> {
    detached(async move {
        let (env, dry_run) = (query.env.as_deref(), query.dry_run);
        let result = install::revoke(&state, "/v1/secrets/{name}", &name, env, dry_run).await?;
        Ok(Json(SyncResponse::one(result, dry_run)))
    })
    .await
}
