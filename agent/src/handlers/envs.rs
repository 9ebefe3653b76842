//! `POST /v1/envs/{env}/_set_env_vars` and `POST /v1/envs/{env}/run`.
//! Setting vars creates the env (and its process) when absent and answers a
//! `SyncResponse` with one result (`written` when a value changed, else
//! `unchanged`); `run` executes argv in the env's process and answers its
//! exit code and capped output (404 for an unknown env). The audit log gets
//! env and var names and the command's argv[0], never values or arguments.

use std::time::Duration;

use axum::extract::State;
use axum::Json;

use common::names::validate_secret_name;
use common::wire::{
    RunRequest, RunResponse, SecretResult, SetEnvVarsRequest, Status, SyncResponse,
};

use crate::audit::AuditEntry;
use crate::error::{ApiError, ApiJson, ApiPath};
use crate::handlers::{outcome, statuses};
use crate::install::{as_text, check_env_vars};
use crate::state::{AppState, VarInstall};

/// Set vars in an env, creating it if absent.
pub(crate) async fn set_env_vars(
    State(state): State<AppState>,
    ApiPath(env): ApiPath<String>,
    ApiJson(req): ApiJson<SetEnvVarsRequest>,
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
        let vars = as_text(req.vars);
        check_env_vars(&env, &vars)?;
        if let Some(secret) = &req.secret {
            validate_secret_name(secret)?;
        }
        let envs = &state.inner.envs;
        let _guard = state.inner.write_lock.lock().await;
        let differs = !envs.exists(&env)
            || vars
                .iter()
                .any(|(k, v)| envs.value(&env, k).as_ref() != Some(v));
        let names: Vec<String> = vars.keys().cloned().collect();
        let status = if req.dry_run {
            if differs {
                Status::WouldWrite
            } else {
                Status::Unchanged
            }
        } else {
            let installs: Vec<VarInstall> = vars
                .iter()
                .map(|(var, value)| VarInstall {
                    env: env.clone(),
                    var: var.clone(),
                    fingerprint: state
                        .fingerprint(value.expose_str().unwrap_or_default().as_bytes()),
                })
                .collect();
            let changed = envs.set_vars(&env, vars).await?;
            envs.save().await?;
            if let Some(secret) = &req.secret {
                {
                    let mut installed = state
                        .inner
                        .installed
                        .lock()
                        .unwrap_or_else(|e| e.into_inner());
                    let record = installed.secrets.entry(secret.clone()).or_default();
                    for var in installs {
                        record
                            .vars
                            .retain(|v| !(v.env == var.env && v.var == var.var));
                        record.vars.push(var);
                    }
                }
                state.save_installed().await.map_err(ApiError::internal)?;
            }
            if differs || !changed.is_empty() {
                Status::Written
            } else {
                Status::Unchanged
            }
        };
        Ok(Json(SyncResponse {
            results: vec![SecretResult {
                name: req.secret.clone().unwrap_or_default(),
                status,
                files: vec![],
                env: Some(env.clone()),
                vars: names,
                message: None,
            }],
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
