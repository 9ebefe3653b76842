//! `POST /v1/envs/{env}/_set_env_vars` and `POST /v1/envs/{env}/run`.
//! Setting vars creates the env (and its process) when absent and answers a
//! `SyncResponse` with one result (`written` when a value changed, else
//! `unchanged`); `run` executes argv in the env's process and answers its
//! exit code and capped output (404 for an unknown env). The audit log gets
//! env and var names and the command's argv[0], never values or arguments.

use std::time::Duration;

use axum::extract::State;
use axum::Json;

use common::wire::{RunRequest, RunResponse, SetEnvVarsRequest, SyncResponse};

use crate::audit::AuditEntry;
use crate::error::{ApiError, ApiJson, ApiPath};
use crate::handlers::{detached, outcome, statuses};
use crate::install;
use crate::state::AppState;

/// Set vars in an env, creating it if absent.
pub(crate) async fn set_env_vars(
    State(state): State<AppState>,
    ApiPath(env): ApiPath<String>,
    ApiJson(req): ApiJson<SetEnvVarsRequest>,
) -> Result<Json<SyncResponse>, ApiError> {
    detached(set_env_vars_work(state, env, req)).await
}

/// A one-item sync (`install::plan_vars`, then `install::apply`): saved
/// to `envs.json` before it goes live (a failed save of `envs.json` changes
/// nothing), then recorded in `installed.json` under the secret when one is
/// named; if that record cannot be saved the vars are live and the answer
/// says "applied but not recorded" (500 `state_not_saved`), as for `/v1/sync`.
async fn set_env_vars_work(
    state: AppState,
    env: String,
    req: SetEnvVarsRequest,
) -> Result<Json<SyncResponse>, ApiError> {
    let mut audit = AuditEntry {
        route: "/v1/envs/{env}/_set_env_vars",
        secrets: req.secret.iter().cloned().collect(),
        envs: vec![env.clone()],
        vars: req.vars.keys().cloned().collect(),
        dry_run: req.dry_run,
        ..Default::default()
    };
    let result = async {
        let planned = install::plan_vars(&state, &env, req.vars, req.secret)?;
        if !req.dry_run {
            state.inner.envs.check_room([env.as_str()])?;
        }
        let result = install::apply(&state, vec![planned], false, req.dry_run, None)
            .await
            .pop()
            .unwrap_or_else(|| Err(ApiError::internal("no result")))?;
        Ok(Json(SyncResponse {
            results: vec![result],
            dry_run: req.dry_run,
        }))
    }
    .await;
    audit.result = outcome(&result, |Json(r)| statuses(&r.results));
    state.inner.audit.record(&audit);
    result
}

/// Run argv inside an env's process.
pub(crate) async fn run(
    State(state): State<AppState>,
    ApiPath(env): ApiPath<String>,
    ApiJson(req): ApiJson<RunRequest>,
) -> Result<Json<RunResponse>, ApiError> {
    let mut audit = AuditEntry {
        route: "/v1/envs/{env}/run",
        envs: vec![env.clone()],
        argv0: req.argv.first().cloned(),
        ..Default::default()
    };
    let result = async {
        common::names::validate_env_name(&env)?;
        if req.argv.is_empty() || req.argv[0].is_empty() {
            return Err(ApiError::bad_request("empty_command", "argv is empty"));
        }
        if req.argv.iter().any(|a| a.contains('\0')) {
            return Err(ApiError::bad_request(
                "invalid_command",
                "argv contains a NUL byte",
            ));
        }
        if req.timeout_secs == Some(0) {
            return Err(ApiError::bad_request(
                "invalid_timeout",
                "timeout_secs must be at least 1 (0 would kill the command at once)",
            ));
        }
        let config = &state.inner.config;
        let timeout = req
            .timeout_secs
            .map(Duration::from_secs)
            .unwrap_or(config.run_timeout)
            .min(config.max_run_timeout);
        let out = state
            .inner
            .envs
            .run(&env, req.argv, timeout, config.output_cap)
            .await?;
        Ok(Json(out))
    }
    .await;
    audit.result = outcome(&result, |Json(r)| {
        format!(
            "exit={}{}",
            r.exit_code,
            if r.timed_out { ",timed_out" } else { "" }
        )
    });
    state.inner.audit.record(&audit);
    result
}
