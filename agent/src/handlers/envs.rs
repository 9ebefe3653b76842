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
use crate::handlers::detached;
use crate::install;
use crate::state::AppState;

/// Set vars in an env, creating it if absent (`install::set_vars`).
pub(crate) async fn set_env_vars(
    State(state): State<AppState>,
    ApiPath(env): ApiPath<String>,
    ApiJson(req): ApiJson<SetEnvVarsRequest>,
) -> Result<Json<SyncResponse>, ApiError> {
    detached(async move {
        let route = "/v1/envs/{env}/_set_env_vars";
        let (secret, dry_run) = (req.secret, req.dry_run);
        let result = install::set_vars(&state, route, env, req.vars, secret, dry_run).await?;
        Ok(Json(SyncResponse::one(result, dry_run)))
    })
    .await
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
    audit.result = match &result {
        Ok(Json(r)) => format!(
            "exit={}{}",
            r.exit_code,
            if r.timed_out { ",timed_out" } else { "" }
        ),
        Err(e) => format!("error:{}", e.code),
    };
    state.inner.audit.record(&audit);
    result
}
