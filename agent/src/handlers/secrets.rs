//! `POST /v1/secrets/_write_to_file` and `DELETE /v1/secrets/{name}`.
//!
//! `_write_to_file` answers a `SyncResponse` with one result: 200 when the
//! file was written or unchanged (or would be, in a dry run), **409 with the
//! same body when it conflicts** (the file holds other values for the
//! secret's keys and `overwrite` is off; nothing was written; the result
//! lists the conflicting keys). Revoke answers 200 with one result, 404 when
//! the secret is not installed here. No value is logged or echoed.

use std::time::Instant;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;

use common::wire::{RevokeQuery, SyncResponse, WriteToFileRequest};

use crate::audit::AuditEntry;
use crate::error::{ApiError, ApiJson, ApiPath, ApiQuery};
use crate::handlers::{deadline, detached, outcome, statuses};
use crate::install;
use crate::state::AppState;

/// Write one secret into its file(s), merging.
pub(crate) async fn write_to_file(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<WriteToFileRequest>,
) -> Result<(StatusCode, Json<SyncResponse>), ApiError> {
    let deadline = deadline(&state);
    detached(write_to_file_work(state, req, deadline)).await
}

async fn write_to_file_work(
    state: AppState,
    req: WriteToFileRequest,
    deadline: Instant,
) -> Result<(StatusCode, Json<SyncResponse>), ApiError> {
    let mut audit = AuditEntry {
        route: "/v1/secrets/_write_to_file",
        secrets: vec![req.secret.name.clone()],
        paths: req.path.iter().cloned().collect(),
        dry_run: req.dry_run,
        ..Default::default()
    };
    let result = async {
        let planned = install::plan_file(&state, req.secret, req.path.as_deref())?;
        audit.paths = planned.paths();
        let mut results = install::apply(
            &state,
            vec![planned],
            req.overwrite,
            req.dry_run,
            Some(deadline),
        )
        .await;
        let result = results
            .pop()
            .unwrap_or_else(|| Err(ApiError::internal("no result")))?;
        Ok((
            install::write_status(&result),
            Json(SyncResponse {
                results: vec![result],
                dry_run: req.dry_run,
            }),
        ))
    }
    .await;
    audit.result = outcome(&result, |(_, r)| statuses(&r.results));
    state.inner.audit.record(&audit);
    result
}

/// Revoke: remove what the secret installed.
pub(crate) async fn revoke(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
    ApiQuery(query): ApiQuery<RevokeQuery>,
) -> Result<Json<SyncResponse>, ApiError> {
    detached(revoke_work(state, name, query)).await
}

async fn revoke_work(
    state: AppState,
    name: String,
    query: RevokeQuery,
) -> Result<Json<SyncResponse>, ApiError> {
    let result = install::revoke(&state, &name, query.env.as_deref(), query.dry_run)
        .await
        .map(|r| {
            Json(SyncResponse {
                results: vec![r],
                dry_run: query.dry_run,
            })
        });
    let mut audit = AuditEntry {
        route: "/v1/secrets/{name}",
        secrets: vec![name],
        envs: query.env.iter().cloned().collect(),
        dry_run: query.dry_run,
        ..Default::default()
    };
    if let Ok(Json(resp)) = &result {
        for r in &resp.results {
            audit.paths.extend(r.files.iter().map(|f| f.path.clone()));
            audit.vars.extend(r.vars.iter().cloned());
        }
    }
    audit.result = outcome(&result, |Json(r)| statuses(&r.results));
    state.inner.audit.record(&audit);
    result
}
