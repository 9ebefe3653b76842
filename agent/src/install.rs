//! Installing and revoking secrets on this node: resolves and confines each
//! file path, validates env and var names and values, writes files through
//! `common::apply` (lock, provider merge, atomic 0600 write) and sets env
//! vars, records what was installed (for status and revoke), and removes
//! exactly that again. Every check runs before anything is written, so a bad
//! item changes nothing. Errors and results name secrets, paths, envs and
//! vars, never a value.

use std::collections::BTreeMap;
use std::path::Path;

use axum::http::StatusCode;

use common::apply::{self, secret_env_vars, secret_paths, FileStatus, TargetFile};
use common::fingerprint::{value_fingerprint, values_fingerprint, FingerprintKey};
use common::fsutil::confine;
use common::names::{validate_env_name, validate_env_var_name, validate_secret_name};
use common::policy::{Origin, Policy, PolicyError};
use common::providers::{self, Merge, Provider, ProviderError, Removal};
use common::wire::{
    FileOutcome, InstalledFile, InstalledSecret, InstalledVar, SecretResult, Status,
};
use common::{Secret, SecretValue};

use crate::config::Config;
use crate::error::ApiError;
use crate::state::{AppState, FileInstall, VarInstall};

/// One secret, checked and ready to apply.
pub(crate) struct Planned {
    pub(crate) secret: Secret,
    provider: &'static dyn Provider,
    files: Option<Vec<TargetFile>>,
    env: Option<(String, BTreeMap<String, SecretValue>)>,
}

impl Planned {
    /// Display paths of the files it writes.
    pub(crate) fn paths(&self) -> Vec<String> {
        self.files
            .iter()
            .flatten()
            .map(|f| f.display.clone())
            .collect()
    }

    /// The env and var names it sets.
    pub(crate) fn env_vars(&self) -> Option<(String, Vec<String>)> {
        self.env
            .as_ref()
            .map(|(e, vars)| (e.clone(), vars.keys().cloned().collect()))
    }
}

/// This agent's placement policy: its state dir is reserved (as configured
/// and resolved), its config's `allow_paths` open more places to remote secrets.
fn policy(config: &Config) -> Policy {
    let mut reserved = vec![config.state_dir.clone()];
    reserved.extend(config.state_dir.canonicalize().ok());
    Policy {
        reserved,
        allow: config.allow_paths.clone(),
    }
}

/// A refused placement: 403 with `path_reserved` or `path_not_allowed`.
fn refused(e: PolicyError) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, e.code(), e.to_string())
}

/// Resolve and confine the files of `secret` (at `path` when given), each
/// checked by the placement policy: the path as given, and the target it
/// resolves to (so a symlink in home cannot lead to a denied file).
fn plan_files(
    config: &Config,
    secret: &Secret,
    path: Option<&str>,
    origin: Origin,
) -> Result<Vec<TargetFile>, ApiError> {
    let provider = providers::for_secret(secret.provider.as_deref());
    let displays = secret_paths(secret, path).map_err(|e| match (&e, &secret.provider) {
        (ProviderError::NoPath { .. }, Some(id)) if providers::lookup(id).is_none() => {
            ApiError::bad_request(
                "unknown_provider",
                format!(
                    "unknown provider {id:?} has no default file: give a path, or use a builtin \
                     provider ({})",
                    providers::builtin_ids().join(", ")
                ),
            )
        }
        _ => e.into(),
    })?;
    let home = &config.home;
    let policy = policy(config);
    let canon_home = home.canonicalize().unwrap_or_else(|_| home.clone());
    let files = displays
        .into_iter()
        .map(|display| {
            let (provider, name) = (secret.provider.as_deref(), secret.name.as_str());
            policy
                .check(home, provider, name, &display, origin)
                .map_err(refused)?;
            let path = confine(home, &display)?;
            policy
                .check_resolved(&canon_home, name, &path)
                .map_err(refused)?;
            Ok(TargetFile { display, path })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    provider.validate(&secret.values)?;
    Ok(files)
}

/// Check an env name and the vars to set in it.
pub(crate) fn check_env_vars(
    env: &str,
    vars: &BTreeMap<String, SecretValue>,
) -> Result<(), ApiError> {
    validate_env_name(env)?;
    for (name, value) in vars {
        validate_env_var_name(name)?;
        let has_nul = match value.expose_str() {
            Some(s) => s.contains('\0'),
            None => value.expose_secret().to_string().contains('\0'),
        };
        if has_nul {
            return Err(ApiError::bad_request(
                "invalid_value",
                format!("value of environment variable {name} contains a NUL byte"),
            ));
        }
    }
    Ok(())
}

/// Env var values as text (strings as they are, other JSON compact).
pub(crate) fn as_text(vars: BTreeMap<String, SecretValue>) -> BTreeMap<String, SecretValue> {
    vars.into_iter()
        .map(|(k, v)| match v.expose_str() {
            Some(_) => (k, v),
            None => {
                let text = v.expose_secret().to_string();
                (k, SecretValue::from_string(text))
            }
        })
        .collect()
}

/// Check one secret sent by a caller holding this agent's token (push
/// mode): [`plan_from`] with [`Origin::Local`], so the deny-list and the
/// state dir apply but not the provider-locations rule (the token already
/// grants the node user's power through `/run`).
pub(crate) fn plan(
    state: &AppState,
    secret: Secret,
    path: Option<&str>,
    env: Option<&str>,
    want_file: bool,
) -> Result<Planned, ApiError> {
    plan_from(state, secret, path, env, want_file, Origin::Local)
}

/// Check one secret: its files when `path` is given (or `want_file`), its
/// env vars when `env` is given. With neither, the secret's own file if it
/// has one, else its vars in `base_env`. Secrets pulled from the store pass
/// [`Origin::Remote`]: their paths must also lie in the provider's
/// credential locations or the config's `allow_paths`.
pub(crate) fn plan_from(
    state: &AppState,
    secret: Secret,
    path: Option<&str>,
    env: Option<&str>,
    want_file: bool,
    origin: Origin,
) -> Result<Planned, ApiError> {
    validate_secret_name(&secret.name)?;
    let provider = providers::for_secret(secret.provider.as_deref());
    let mut files = if want_file || path.is_some() {
        Some(plan_files(&state.inner.config, &secret, path, origin)?)
    } else {
        None
    };
    let mut env = env.map(str::to_owned);
    if files.is_none() && env.is_none() {
        match secret_paths(&secret, None) {
            Ok(_) => files = Some(plan_files(&state.inner.config, &secret, None, origin)?),
            Err(_) => env = Some(common::wire::DEFAULT_ENV.to_owned()),
        }
    }
    let env = match env {
        None => None,
        Some(env) => {
            let vars = as_text(secret_env_vars(&secret));
            if vars.is_empty() {
                return Err(ApiError::bad_request(
                    "no_env_vars",
                    format!(
                        "secret {} maps no value to an environment variable (give env_vars, or \
                         use a provider with default variables)",
                        secret.name
                    ),
                ));
            }
            check_env_vars(&env, &vars)?;
            Some((env, vars))
        }
    };
    Ok(Planned {
        secret,
        provider,
        files,
        env,
    })
}

type FileJob = Option<(&'static dyn Provider, Vec<TargetFile>, common::Values)>;
type FileResult = Option<Result<Vec<FileOutcome>, ApiError>>;

/// Run the file jobs: jobs that share a directory run in request order, one
/// after the other; groups with no directory in common run on parallel
/// threads (their fsyncs overlap). Results come back in job order.
fn write_all(jobs: Vec<FileJob>, overwrite: bool, dry_run: bool) -> Vec<FileResult> {
    let dirs: Vec<Vec<&Path>> = jobs
        .iter()
        .map(|job| {
            job.iter()
                .flat_map(|(_, files, _)| files.iter().filter_map(|f| f.path.parent()))
                .collect()
        })
        .collect();
    // Group jobs transitively sharing a directory (n is small).
    let mut group: Vec<usize> = (0..jobs.len()).collect();
    for i in 0..jobs.len() {
        for j in 0..i {
            if dirs[i].iter().any(|d| dirs[j].contains(d)) {
                let (from, to) = (group[i], group[j]);
                group
                    .iter_mut()
                    .filter(|g| **g == from)
                    .for_each(|g| *g = to);
            }
        }
    }
    let run = |job: &FileJob| -> FileResult {
        job.as_ref().map(|(provider, files, values)| {
            if dry_run {
                preview_files(*provider, files, values, overwrite)
            } else {
                apply::write_files(*provider, files, values, overwrite, false)
            }
            .map_err(ApiError::from)
        })
    };
    let mut groups: Vec<usize> = group.clone();
    groups.sort_unstable();
    groups.dedup();
    let mut results: Vec<FileResult> = (0..jobs.len()).map(|_| None).collect();
    if groups.len() <= 1 {
        for (i, job) in jobs.iter().enumerate() {
            results[i] = run(job);
        }
        return results;
    }
    let done: Vec<Vec<(usize, FileResult)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = groups
            .iter()
            .map(|g| {
                let members: Vec<usize> = (0..jobs.len()).filter(|i| group[*i] == *g).collect();
                let jobs = &jobs;
                let run = &run;
                scope.spawn(move || members.into_iter().map(|i| (i, run(&jobs[i]))).collect())
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });
    for (i, result) in done.into_iter().flatten() {
        results[i] = result;
    }
    results
}

/// What `write_files` would do, without taking its lock: the lock creates
/// missing directories, and a dry run must change nothing at all.
fn preview_files(
    provider: &dyn Provider,
    files: &[TargetFile],
    values: &common::Values,
    overwrite: bool,
) -> Result<Vec<FileOutcome>, ProviderError> {
    provider.validate(values)?;
    files
        .iter()
        .enumerate()
        .map(|(index, file)| {
            let existing = common::fsutil::read_optional(&file.path)?;
            let (status, conflict_keys) =
                match provider.merge(index, &file.display, existing.as_ref(), values, overwrite)? {
                    Merge::Unchanged => (FileStatus::Unchanged, vec![]),
                    Merge::Conflict(keys) => (FileStatus::Conflict, keys),
                    Merge::Write(_) => (FileStatus::WouldWrite, vec![]),
                };
            Ok(FileOutcome {
                path: file.display.clone(),
                status,
                conflict_keys,
            })
        })
        .collect()
}

/// What `remove_files` would do, without its lock (a dry run changes nothing).
fn preview_removal(
    provider: &dyn Provider,
    files: &[TargetFile],
    values: &common::Values,
) -> Result<Vec<FileOutcome>, ProviderError> {
    files
        .iter()
        .enumerate()
        .map(|(index, file)| {
            let status = match common::fsutil::read_optional(&file.path)? {
                None => FileStatus::Unchanged,
                Some(text) => match provider.remove(index, &file.display, &text, values)? {
                    Removal::Unchanged => FileStatus::Unchanged,
                    Removal::Write(_) | Removal::Delete => FileStatus::WouldWrite,
                },
            };
            Ok(FileOutcome {
                path: file.display.clone(),
                status,
                conflict_keys: vec![],
            })
        })
        .collect()
}

fn file_status(outcomes: &[FileOutcome]) -> Status {
    apply::overall(outcomes).into()
}

/// Apply checked secrets in order, under the write lock, and record what was
/// installed. A file conflict leaves that secret's env vars untouched too.
/// `Err` items are failures of that secret alone (I/O, a malformed existing file).
pub(crate) async fn apply(
    state: &AppState,
    items: Vec<Planned>,
    overwrite: bool,
    dry_run: bool,
) -> Vec<Result<SecretResult, ApiError>> {
    let _guard = state.inner.write_lock.lock().await;
    // Every file write in one blocking task.
    let jobs: Vec<FileJob> = items
        .iter()
        .map(|item| {
            item.files
                .clone()
                .map(|files| (item.provider, files, item.secret.values.clone()))
        })
        .collect();
    let file_results =
        match tokio::task::spawn_blocking(move || write_all(jobs, overwrite, dry_run)).await {
            Ok(results) => results,
            Err(e) => {
                let detail = format!("the file writer task failed: {e}");
                return items
                    .iter()
                    .map(|_| Err(ApiError::internal(&detail)))
                    .collect();
            }
        };
    let mut results = Vec::with_capacity(items.len());
    let (mut installed_changed, mut envs_changed) = (false, false);
    for (item, file_result) in items.into_iter().zip(file_results) {
        let name = item.secret.name.clone();
        let mut result = SecretResult {
            name: name.clone(),
            status: Status::Unchanged,
            files: vec![],
            env: None,
            vars: vec![],
            message: None,
        };
        let mut statuses = vec![];
        match file_result {
            Some(Ok(outcomes)) => {
                statuses.push(file_status(&outcomes));
                result.files = outcomes;
            }
            Some(Err(e)) => {
                results.push(Err(e));
                continue;
            }
            None => {}
        }
        let conflict = statuses.contains(&Status::Conflict);
        let mut var_installs = vec![];
        if let Some((env, vars)) = &item.env {
            result.env = Some(env.clone());
            result.vars = vars.keys().cloned().collect();
            if !conflict {
                let envs = &state.inner.envs;
                let differs = !envs.exists(env)
                    || vars
                        .iter()
                        .any(|(k, v)| envs.value(env, k).as_ref() != Some(v));
                if dry_run {
                    statuses.push(if differs {
                        Status::WouldWrite
                    } else {
                        Status::Unchanged
                    });
                } else {
                    match envs.set_vars(env, vars.clone()).await {
                        Ok(changed) => {
                            envs_changed |= !changed.is_empty();
                            statuses.push(if changed.is_empty() && !differs {
                                Status::Unchanged
                            } else {
                                Status::Written
                            });
                        }
                        Err(e) => {
                            results.push(Err(ApiError::from(e)));
                            continue;
                        }
                    }
                }
                var_installs = vars
                    .iter()
                    .map(|(var, value)| VarInstall {
                        env: env.clone(),
                        var: var.clone(),
                        fingerprint: value_fingerprint(state.fingerprint_key(), value),
                    })
                    .collect();
            }
        }
        result.status = combine(&statuses);
        if !dry_run && !conflict {
            let mut installed = state
                .inner
                .installed
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let record = installed.secrets.entry(name).or_default();
            let before = record.clone();
            record.provider = item.secret.provider.clone();
            if let Some(files) = &item.files {
                let paths: Vec<String> = files.iter().map(|f| f.display.clone()).collect();
                record.files.retain(|f| f.paths != paths);
                record.files.push(FileInstall {
                    paths,
                    values: item.secret.values.clone(),
                });
            }
            for var in var_installs {
                record
                    .vars
                    .retain(|v| !(v.env == var.env && v.var == var.var));
                record.vars.push(var);
            }
            installed_changed |= *record != before;
        }
        results.push(Ok(result));
    }
    if installed_changed {
        if let Err(e) = state.save_installed().await {
            tracing::error!(error = %e, "cannot save installed secrets");
        }
    }
    if envs_changed {
        if let Err(e) = state.inner.envs.save().await {
            tracing::error!(error = %e, "cannot save envs");
        }
    }
    results
}

/// Conflict over failed over written over would-write over removed over unchanged.
fn combine(statuses: &[Status]) -> Status {
    for s in [
        Status::Conflict,
        Status::Failed,
        Status::Written,
        Status::WouldWrite,
        Status::Removed,
    ] {
        if statuses.contains(&s) {
            return s;
        }
    }
    Status::Unchanged
}

/// Remove what secret `name` installed (only its vars in `only_env` when given).
pub(crate) async fn revoke(
    state: &AppState,
    name: &str,
    only_env: Option<&str>,
    dry_run: bool,
) -> Result<SecretResult, ApiError> {
    validate_secret_name(name)?;
    if let Some(env) = only_env {
        validate_env_name(env)?;
    }
    let _guard = state.inner.write_lock.lock().await;
    let record = state
        .inner
        .installed
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .secrets
        .get(name)
        .cloned()
        .ok_or_else(|| {
            ApiError::not_found(
                "unknown_secret",
                format!("secret {name} is not installed on this node"),
            )
        })?;
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
                if dry_run {
                    all.extend(preview_removal(provider, &files, &install.values)?);
                } else {
                    all.extend(apply::remove_files(
                        provider,
                        &files,
                        &install.values,
                        false,
                    )?);
                }
            }
            Ok::<_, ProviderError>(all)
        })
        .await
        .map_err(|e| ApiError::internal(format!("revoke {name}: {e}")))??;
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
    let mut envs_changed = false;
    for (env, names) in &by_env {
        if dry_run {
            statuses.push(Status::WouldWrite);
        } else {
            let removed = envs.unset_vars(env, names).await;
            envs_changed |= !removed.is_empty();
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
    result.status = combine(&statuses);
    if !dry_run {
        {
            let mut installed = state
                .inner
                .installed
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            match only_env {
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
            }
        }
        state.save_installed().await.map_err(ApiError::internal)?;
        if envs_changed {
            envs.save().await.map_err(ApiError::internal)?;
        }
    }
    Ok(result)
}

/// What every secret installed, with keyed fingerprints and no values.
///
/// Under the node's key (`key` is `None`) file and var fingerprints are the
/// ones recorded at install time. Under a caller's key, a file's fingerprint
/// is over the values the secret wrote there (as recorded) and a var's is
/// over the value the env holds now (only its fingerprint was recorded);
/// a var no longer set in its env gets an empty fingerprint. Both use the
/// canonical encodings of `common::fingerprint`, so a caller holding the same
/// values computes the same fingerprints.
pub(crate) fn installed_status(
    state: &AppState,
    key: Option<&FingerprintKey>,
) -> Vec<InstalledSecret> {
    let file_key = key.map_or_else(|| state.fingerprint_key(), FingerprintKey::as_bytes);
    let installed = state
        .inner
        .installed
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    installed
        .secrets
        .iter()
        .map(|(name, record)| InstalledSecret {
            name: name.clone(),
            provider: record.provider.clone(),
            files: record
                .files
                .iter()
                .flat_map(|install| {
                    let keys: Vec<String> = install.values.keys().cloned().collect();
                    let fp = values_fingerprint(file_key, &install.values);
                    install.paths.iter().map(move |path| InstalledFile {
                        path: path.clone(),
                        keys: keys.clone(),
                        fingerprint: fp.clone(),
                    })
                })
                .collect(),
            vars: record
                .vars
                .iter()
                .map(|v| InstalledVar {
                    env: v.env.clone(),
                    var: v.var.clone(),
                    fingerprint: match key {
                        None => v.fingerprint.clone(),
                        Some(key) => state
                            .inner
                            .envs
                            .value(&v.env, &v.var)
                            .map(|value| value_fingerprint(key.as_bytes(), &value))
                            .unwrap_or_default(),
                    },
                })
                .collect(),
        })
        .collect()
}

/// The HTTP status of a `_write_to_file` result: 409 on conflict.
pub(crate) fn write_status(result: &SecretResult) -> StatusCode {
    if result.status == Status::Conflict {
        StatusCode::CONFLICT
    } else {
        StatusCode::OK
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::secret_value::values_from;

    /// Secrets pulled from the store (`Origin::Remote`) only go to their
    /// provider's credential locations or the config's `allow_paths`; the
    /// same paths pushed by a token holder (`Origin::Local`) pass unless denied.
    #[test]
    fn remote_paths_need_a_provider_location_or_the_allow_list() {
        let home = tempfile::tempdir().unwrap();
        let mut config = Config::for_home(home.path());
        config.allow_paths = vec!["~/allowed".into()];
        let secret = |provider: &str, path: Option<&str>| {
            let mut s = Secret::base("s", values_from([("access_key", "A"), ("secret_key", "S")]));
            s.provider = Some(provider.into());
            s.path = path.map(Into::into);
            s
        };
        for (provider, path, code) in [
            ("aws", None, None),
            ("aws", Some("~/.aws/other"), None),
            ("aws", Some("~/notes/creds"), Some("path_not_allowed")),
            ("custom", Some("~/app.json"), Some("path_not_allowed")),
            ("custom", Some("~/allowed/app.json"), None),
            ("custom", Some("~/.bashrc"), Some("path_reserved")),
            ("custom", Some("~/.rh/agent/token"), Some("path_reserved")),
        ] {
            let s = secret(provider, path);
            let got = plan_files(&config, &s, None, Origin::Remote)
                .err()
                .map(|e| (e.status, e.code));
            assert_eq!(got, code.map(|c| (StatusCode::FORBIDDEN, c)), "{path:?}");
            let local = plan_files(&config, &s, None, Origin::Local).err();
            assert_eq!(local.is_some(), code == Some("path_reserved"), "{path:?}");
        }
    }
}
