//! `POST /v1/envs/{env}/_set_env_vars` and `POST /v1/envs/{env}/run`.
//! Setting vars creates the env (and its process) when absent and answers a
//! `SyncResponse` with one result (`written` when a value changed, else
//! `unchanged`); `run` executes argv in the env's process and answers its
//! exit code and capped output (404 for an unknown env). The audit log gets
//! env and var names and the command's argv[0], never values or arguments.

use std::time::Duration;

use axum::extract::State;
use axum::Json;

use common::fingerprint::value_fingerprint;
use common::names::validate_secret_name;
use common::wire::{
    RunRequest, RunResponse, SecretResult, SetEnvVarsRequest, Status, SyncResponse,
};

use crate::audit::AuditEntry;
use crate::error::{ApiError, ApiJson, ApiPath};
use crate::handlers::{detached, outcome, statuses};
use crate::install::{as_text, check_env_vars};
use crate::state::{AppState, VarInstall};

/// Set vars in an env, creating it if absent.
pub(crate) async fn set_env_vars(
    State(state): State<AppState>,
    ApiPath(env): ApiPath<String>,
    ApiJson(req): ApiJson<SetEnvVarsRequest>,
) -> Result<Json<SyncResponse>, ApiError> {
    detached(set_env_vars_work(state, env, req)).await
}

/// Saved before it goes live: `envs.json` (and `installed.json` when a
/// secret is named) first, then the env's vars; a failed save changes nothing.
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
        let status = match (differs, req.dry_run) {
            (false, _) => Status::Unchanged,
            (true, true) => Status::WouldWrite,
            (true, false) => Status::Written,
        };
        if !req.dry_run {
            envs.check_room([env.as_str()])?;
            let nothing_changed = "; nothing changed";
            envs.save_changed(|all| {
                let current = all.entry(env.clone()).or_default();
                current.extend(vars.iter().map(|(k, v)| (k.clone(), v.clone())));
            })
            .await
            .map_err(|e| ApiError::not_saved(&e).and(nothing_changed))?;
            if let Some(secret) = &req.secret {
                let installs: Vec<VarInstall> = vars
                    .iter()
                    .map(|(var, value)| VarInstall {
                        env: env.clone(),
                        var: var.clone(),
                        fingerprint: value_fingerprint(state.fingerprint_key(), value),
                    })
                    .collect();
                let recorded = state
                    .update_installed(|installed| {
                        let record = installed.secrets.entry(secret.clone()).or_default();
                        for var in installs {
                            record
                                .vars
                                .retain(|v| !(v.env == var.env && v.var == var.var));
                            record.vars.push(var);
                        }
                    })
                    .await;
                if let Err(e) = recorded {
                    // Put envs.json back as it is in memory (unchanged).
                    if let Err(undo) = envs.save_changed(|_| {}).await {
                        tracing::error!(error = %undo, "cannot restore envs.json");
                    }
                    return Err(ApiError::not_saved(&e).and(nothing_changed));
                }
            }
            envs.set_vars(&env, vars).await?;
        }
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
