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

use std::time::Instant;

use axum::extract::State;
use axum::Json;

use common::policy::Origin;
use common::wire::{SecretResult, Status, SyncRequest, SyncResponse};

use crate::audit::AuditEntry;
use crate::error::{ApiError, ApiJson};
use crate::handlers::{deadline, detached, outcome, statuses};
use crate::install;
use crate::state::AppState;

/// Apply many secrets.
pub(crate) async fn post(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<SyncRequest>,
) -> Result<Json<SyncResponse>, ApiError> {
    let deadline = deadline(&state);
    detached(work(state, req, deadline)).await
}

async fn work(
    state: AppState,
    req: SyncRequest,
    deadline: Instant,
) -> Result<Json<SyncResponse>, ApiError> {
    let mut audit = AuditEntry {
        route: "/v1/sync",
        secrets: req.items.iter().map(|i| i.secret.name.clone()).collect(),
        dry_run: req.dry_run,
        ..Default::default()
    };
    let result = async {
        let (sessions, items) = crate::credentials::install::split(req.items);
        let mut planned = Vec::with_capacity(items.len());
        for item in items {
            let p = install::plan_item(&state, item, Origin::Local)?;
            audit.paths.extend(p.paths());
            if let Some((env, vars)) = p.env_vars() {
                if !audit.envs.contains(&env) {
                    audit.envs.push(env);
                }
                audit.vars.extend(vars);
            }
            planned.push(p);
        }
        // Envs the request would create must fit under the cap (checked
        // again under the write lock when they are created).
        state
            .inner
            .envs
            .check_room(audit.envs.iter().map(String::as_str))?;
        let names: Vec<String> = planned.iter().map(|p| p.secret.name.clone()).collect();
        let results =
            install::apply(&state, planned, req.overwrite, req.dry_run, Some(deadline)).await;
        // Session secrets (`crate::credentials`) after the others.
        let sessions =
            crate::credentials::install::apply_items(&state, sessions, Origin::Local, req.dry_run)
                .await;
        let results = names
            .into_iter()
            .zip(results)
            .chain(sessions)
            .map(|(name, r)| {
                r.unwrap_or_else(|e: ApiError| SecretResult {
                    name,
                    status: Status::Failed,
                    files: vec![],
                    env: None,
                    vars: vec![],
                    message: Some(e.message),
                })
            })
            .collect();
        Ok(Json(SyncResponse {
            results,
            dry_run: req.dry_run,
        }))
    }
    .await;
    audit.result = outcome(&result, |Json(r)| statuses(&r.results));
    state.inner.audit.record(&audit);
    result
}
