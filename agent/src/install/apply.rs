//! The apply transaction: checked items written (through the parallel
//! writer, `write`), their env vars saved to `envs.json` and then set live,
//! and what each installed saved to `installed.json` before success is
//! answered, all under the write lock. Work is done and recorded, or not
//! done: a failed save undoes the change in memory and fails the items
//! concerned. Never logs a value.

use std::collections::BTreeMap;
use std::time::Instant;

use common::apply::{self, FileOutcome, FileStatus};
use common::fingerprint::value_fingerprint;
use common::wire::{SecretResult, Status};
use common::SecretValue;

use super::error::InstallError;
use super::plan::Planned;
use super::write::{write_all, FileJob, FileResult};
use super::ApplyOpts;
use crate::state::{AppState, FileInstall, Record, VarInstall};

fn file_status(outcomes: &[FileOutcome]) -> Status {
    apply::overall(outcomes).into()
}

/// Apply checked secrets in order, under the write lock, and record what was
/// applied. A file conflict leaves that secret's env vars untouched too.
/// `Err` items are failures of that secret alone (I/O, a malformed existing
/// file, state that could not be saved).
///
/// Work is either done and recorded or not done: an item not started by
/// `deadline` is answered `failed` ("not applied") with nothing of it
/// written; var changes are saved to `envs.json` before they go live, and
/// `installed.json` is saved before success is answered (a failed save
/// undoes the change in memory and fails the items concerned). Callers run
/// this in a task of its own (the handlers' `detached`) so a request
/// timeout cannot cut it short between writing and recording.
pub(super) async fn apply(
    state: &AppState,
    items: Vec<Planned>,
    opts: ApplyOpts,
) -> Vec<Result<SecretResult, InstallError>> {
    let ApplyOpts {
        overwrite,
        dry_run,
        deadline,
    } = opts;
    let _guard = state.inner.write_lock.lock().await;
    // Files that changed since this second may change again unseen within
    // it: only those settled before are recorded as verified.
    let settled_before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64 - 1);
    // Every file write in one blocking task (none when every item with
    // files was verified unchanged: nothing to read).
    let jobs: Vec<FileJob> = items
        .iter()
        .map(|item| {
            item.files
                .clone()
                .filter(|_| !item.verified)
                .map(|files| (item.provider, files, item.secret.values.clone()))
        })
        .collect();
    let delay = state.inner.config.test_item_delay;
    let file_results = if jobs.iter().all(Option::is_none) {
        jobs.iter().map(|_| FileResult::None).collect()
    } else {
        match tokio::task::spawn_blocking(move || {
            write_all(jobs, overwrite, dry_run, deadline, delay)
        })
        .await
        {
            Ok(results) => results,
            Err(e) => {
                let detail = format!("the file writer task failed: {e}");
                return items
                    .iter()
                    .map(|_| Err(InstallError::internal(&detail)))
                    .collect();
            }
        }
    };
    // What the verified items' files are, and what the others' were found.
    let file_results: Vec<FileResult> = items
        .iter()
        .zip(file_results)
        .map(|(item, result)| match (&item.files, item.verified) {
            (Some(files), true) => FileResult::Done(Ok((
                files
                    .iter()
                    .map(|f| FileOutcome {
                        path: f.display.clone(),
                        status: FileStatus::Unchanged,
                        conflict_keys: vec![],
                    })
                    .collect(),
                vec![],
            ))),
            _ => {
                if let (Some(files), Some(key), false) = (&item.files, &item.key, dry_run) {
                    let verified = &state.inner.verified;
                    match &result {
                        FileResult::Done(Ok((_, sigs))) => verified.note(
                            &item.secret.name,
                            key.clone(),
                            files,
                            sigs,
                            settled_before,
                        ),
                        _ => verified.forget(&item.secret.name),
                    }
                }
                result
            }
        })
        .collect();
    let past = |d: Option<Instant>| d.is_some_and(|d| Instant::now() >= d);
    // Per item: its result so far, and what to set and record when saved.
    struct Pending {
        result: Result<SecretResult, InstallError>,
        vars: Option<(String, BTreeMap<String, SecretValue>)>,
        record: bool,
    }
    let mut pending = Vec::with_capacity(items.len());
    let mut skipping = false;
    for (item, file_result) in items.iter().zip(file_results) {
        let mut result = SecretResult {
            name: item.secret.name.clone(),
            status: Status::Unchanged,
            files: vec![],
            env: None,
            vars: vec![],
            message: None,
        };
        let mut statuses = vec![];
        let skipped = match file_result {
            FileResult::Done(Ok((outcomes, _))) => {
                statuses.push(file_status(&outcomes));
                result.files = outcomes;
                false
            }
            FileResult::Done(Err(e)) => {
                pending.push(Pending {
                    result: Err(e),
                    vars: None,
                    record: false,
                });
                continue;
            }
            FileResult::Skipped => true,
            // A var-only item is reached in order, like the files.
            FileResult::None => item.env.is_some() && (skipping || past(deadline)),
        };
        if skipped {
            skipping = true;
            pending.push(Pending {
                result: Err(InstallError::NotApplied(item.secret.name.clone())),
                vars: None,
                record: false,
            });
            continue;
        }
        let conflict = statuses.contains(&Status::Conflict);
        let mut vars_to_set = None;
        if let Some((env, vars)) = &item.env {
            result.env = Some(env.clone());
            result.vars = vars.keys().cloned().collect();
            if !conflict {
                let envs = &state.inner.envs;
                let differs = !envs.exists(env)
                    || vars
                        .iter()
                        .any(|(k, v)| envs.value(env, k).as_ref() != Some(v));
                statuses.push(match (differs, dry_run) {
                    (false, _) => Status::Unchanged,
                    (true, true) => Status::WouldWrite,
                    (true, false) => Status::Written,
                });
                // Unchanged vars need no save and no update of the env.
                if differs && !dry_run {
                    vars_to_set = Some((env.clone(), vars.clone()));
                }
            }
        }
        result.status = Status::combine(statuses.iter().copied());
        pending.push(Pending {
            result: Ok(result),
            vars: vars_to_set,
            record: !dry_run && !conflict && item.record,
        });
    }
    if dry_run {
        return pending.into_iter().map(|p| p.result).collect();
    }
    // 1. The var changes: saved first, then made live.
    let var_changes: Vec<(String, BTreeMap<String, SecretValue>)> =
        pending.iter().filter_map(|p| p.vars.clone()).collect();
    if !var_changes.is_empty() {
        let envs = &state.inner.envs;
        let saved = match envs.check_room(var_changes.iter().map(|(e, _)| e.as_str())) {
            Err(e) => Err(InstallError::from(e)),
            Ok(()) => envs
                .save_changed(|all| {
                    for (env, vars) in &var_changes {
                        let current = all.entry(env.clone()).or_default();
                        current.extend(vars.iter().map(|(k, v)| (k.clone(), v.clone())));
                    }
                })
                .await
                .map_err(|e| InstallError::not_saved(&e, "; no var was changed")),
        };
        let mut failed = saved.err();
        for p in &mut pending {
            let Some((env, vars)) = &p.vars else { continue };
            if failed.is_none() {
                if let Err(e) = envs.set_vars(env, vars.clone()).await {
                    failed = Some(InstallError::from(e));
                }
            }
            if let Some(e) = &failed {
                let files = p.result.as_ref().map_or(0, |r| r.files.len());
                p.result = Err(e.vars_not_set(files));
                p.record = false;
                p.vars = None;
            }
        }
    }
    // 2. What each applied item installed, saved before success is answered.
    // Per applied item: its name and what it installed now.
    let records: Vec<(String, Record, bool)> = items
        .iter()
        .zip(&pending)
        .filter(|(_, p)| p.record)
        .map(|(item, p)| {
            let files = item.files.as_ref().map(|files| FileInstall {
                paths: files.iter().map(|f| f.display.clone()).collect(),
                values: item.secret.values.clone(),
            });
            let vars = p
                .vars
                .iter()
                .flat_map(|(env, vars)| {
                    vars.iter().map(|(var, value)| VarInstall {
                        env: env.clone(),
                        var: var.clone(),
                        fingerprint: value_fingerprint(state.fingerprint_key(), value),
                    })
                })
                .collect();
            let now = Record {
                provider: item.secret.provider.clone(),
                files: files.into_iter().collect(),
                vars,
            };
            (item.secret.name.clone(), now, item.sets_provider)
        })
        .collect();
    if !records.is_empty() {
        let saved = state
            .update_installed(|installed| {
                let mut changed = false;
                for (name, now, sets_provider) in records {
                    let record = installed.secrets.entry(name).or_default();
                    let before = record.clone();
                    if sets_provider {
                        record.provider = now.provider;
                    }
                    for files in now.files {
                        record.files.retain(|f| f.paths != files.paths);
                        record.files.push(files);
                    }
                    for var in now.vars {
                        record
                            .vars
                            .retain(|v| !(v.env == var.env && v.var == var.var));
                        record.vars.push(var);
                    }
                    changed |= *record != before;
                }
                changed
            })
            .await;
        if let Err(e) = saved {
            let unchanged = "; applied but not recorded, so status and revoke do not know of it: \
                             retry the request";
            let not_saved = InstallError::not_saved_each(&e, unchanged);
            for p in pending.iter_mut().filter(|p| p.record) {
                p.result = Err(not_saved());
            }
        }
    }
    pending.into_iter().map(|p| p.result).collect()
}
