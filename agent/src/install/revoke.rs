//! Revoking a secret: exactly what it installed is removed again (its
//! values from its files, through the provider, and its vars when they
//! still hold the values it set), saved before it is answered. Never logs a
//! value.

use std::collections::BTreeMap;

use common::apply::{self, FileStatus, TargetFile};
use common::fingerprint::value_fingerprint;
use common::fsutil::confine;
use common::names::{validate_env_name, validate_secret_name};
use common::providers::{self, ProviderError};
use common::wire::{SecretResult, Status};

use super::error::InstallError;
use crate::state::{AppState, VarInstall};

/// Remove what secret `name` installed (only its vars in `only_env` when given).
pub(super) async fn revoke(
    state: &AppState,
    name: &str,
    only_env: Option<&str>,
    dry_run: bool,
) -> Result<SecretResult, InstallError> {
    validate_secret_name(name)?;
    if let Some(env) = only_env {
        validate_env_name(env)?;
    }
    let _guard = state.inner.write_lock.lock().await;
    if !dry_run {
        // Its files are about to change: the next sync reads them again.
        state.inner.verified.forget(name);
    }
    // A session secret (`super::session`): the session and its profile
    // line go; its env vars go with its record below.
    let session_files = match only_env {
        None => super::session::forget(state, name, dry_run).await?,
        Some(_) => None,
    };
    let done = if dry_run {
        Status::WouldWrite
    } else {
        Status::Removed
    };
    let record = state.installed().secrets.get(name).cloned();
    let record = match (record, &session_files) {
        (Some(record), _) => record,
        (None, Some(files)) => {
            return Ok(SecretResult {
                name: name.to_owned(),
                status: done,
                files: files.clone(),
                env: None,
                vars: vec![],
                message: None,
            })
        }
        (None, None) => return Err(InstallError::NotInstalled(name.to_owned())),
    };
    let provider = providers::for_secret(record.provider.as_deref());
    let home = state.inner.config.home.clone();
    let mut result = SecretResult {
        name: name.to_owned(),
        status: Status::Unchanged,
        files: vec![],
        env: only_env.map(str::to_owned),
        vars: vec![],
        message: None,
    };
    let mut statuses = vec![];
    if only_env.is_none() {
        let installs = record.files.clone();
        let outcomes = tokio::task::spawn_blocking(move || {
            let mut all = vec![];
            for install in &installs {
                let files = install
                    .paths
                    .iter()
                    .map(|display| {
                        Ok(TargetFile {
                            display: display.clone(),
                            path: confine(&home, display)?,
                        })
                    })
                    .collect::<Result<Vec<_>, ProviderError>>()?;
                all.extend(apply::remove_files(
                    provider,
                    &files,
                    &install.values,
                    dry_run,
                )?);
            }
            Ok::<_, ProviderError>(all)
        })
        .await
        .map_err(|e| InstallError::internal(format!("revoke {name}: {e}")))??;
        statuses.push(match apply::overall(&outcomes) {
            FileStatus::Removed => Status::Removed,
            other => other.into(),
        });
        result.files = outcomes;
    }
    let envs = &state.inner.envs;
    let targets: Vec<&VarInstall> = record
        .vars
        .iter()
        .filter(|v| only_env.is_none_or(|e| e == v.env))
        .collect();
    let mut by_env: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for var in &targets {
        // Only a var still holding the value this secret set is removed.
        let current = envs.value(&var.env, &var.var);
        if current
            .is_some_and(|v| value_fingerprint(state.fingerprint_key(), &v) == var.fingerprint)
        {
            by_env
                .entry(var.env.clone())
                .or_default()
                .push(var.var.clone());
        }
    }
    if !dry_run && !by_env.is_empty() {
        // Saved first, then made live: a failed save changes no var.
        envs.save_changed(|all| {
            for (env, names) in &by_env {
                if let Some(vars) = all.get_mut(env) {
                    names.iter().for_each(|n| {
                        vars.remove(n);
                    });
                }
            }
        })
        .await
        .map_err(|e| {
            let files = if result.files.is_empty() {
                ""
            } else {
                " (its files were removed)"
            };
            InstallError::not_saved(&e, &format!("; its vars were not removed{files}"))
        })?;
    }
    for (env, names) in &by_env {
        if dry_run {
            statuses.push(Status::WouldWrite);
        } else {
            envs.unset_vars(env, names).await;
            statuses.push(Status::Removed);
        }
    }
    let single_env = by_env.len() == 1;
    for (env, names) in by_env {
        if single_env {
            result.env = Some(env);
            result.vars.extend(names);
        } else {
            result
                .vars
                .extend(names.into_iter().map(|n| format!("{env}/{n}")));
        }
    }
    if let Some(files) = session_files {
        statuses.push(done);
        result.files.extend(files);
    }
    result.status = Status::combine(statuses.iter().copied());
    if !dry_run {
        state
            .update_installed(|installed| match only_env {
                None => {
                    installed.secrets.remove(name);
                }
                Some(env) => {
                    if let Some(rec) = installed.secrets.get_mut(name) {
                        rec.vars.retain(|v| v.env != env);
                        if rec.is_empty() {
                            installed.secrets.remove(name);
                        }
                    }
                }
            })
            .await
            .map_err(|e| {
                InstallError::not_saved(
                    &e,
                    "; what it installed was removed, but it is still recorded as installed: \
                     retry the revoke",
                )
            })?;
    }
    Ok(result)
}
