//! Installing and revoking secrets on this node: resolves and confines each
//! file path, validates env and var names and values, writes files through
//! `common::apply` (lock, provider merge, atomic 0600 write) and sets env
//! vars, records what was installed (for status and revoke), and removes
//! exactly that again. Every check runs before anything is written, so a bad
//! item changes nothing. Errors and results name secrets, paths, envs and
//! vars, never a value.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use axum::http::StatusCode;

use common::apply::{self, FileStatus, TargetFile};
use common::fingerprint::{value_fingerprint, values_fingerprint, FingerprintKey};
use common::fsutil::{confine, FileSig};
use common::names::{validate_env_name, validate_secret_name};
use common::placement::{place, verify, PlaceError, PlaceOpts, PlacedEnv, Placement};
use common::policy::{Origin, Policy, PolicyError};
use common::providers::{self, Provider, ProviderError};
use common::wire::{
    FileOutcome, InstalledFile, InstalledSecret, InstalledVar, SecretResult, Status, SyncItem,
};
use common::{Secret, SecretValue};

use crate::config::Config;
use crate::error::ApiError;
use crate::state::{AppState, FileInstall, Record, VarInstall};

/// One secret, checked and ready to apply.
pub(crate) struct Planned {
    pub(crate) secret: Secret,
    provider: &'static dyn Provider,
    files: Option<Vec<TargetFile>>,
    env: Option<(String, BTreeMap<String, SecretValue>)>,
    /// Recorded as what `secret` installed (not for vars set without a
    /// secret's name).
    record: bool,
    /// Whether it names the provider of what `secret` installed (not for
    /// vars set by name alone: a secret's files keep their provider).
    sets_provider: bool,
    /// For an item with files: the keyed hash of what decides them
    /// (`crate::verified`), and whether they were found as last verified
    /// (then they are not read again: the item's files are unchanged).
    key: Option<String>,
    verified: bool,
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
/// and resolved), its config's `allow_paths` open more places to remote
/// secrets and its `allow_vars` more env vars. Built once, when the state is
/// opened (the state dir exists then).
pub(crate) fn policy(config: &Config) -> Policy {
    let mut reserved = vec![config.state_dir.clone()];
    reserved.extend(config.state_dir.canonicalize().ok());
    Policy {
        reserved,
        allow: config.allow_paths.clone(),
        allow_vars: config.allow_vars.clone(),
    }
}

/// A refused placement: 403 with `path_reserved`, `path_not_allowed`,
/// `var_not_allowed` or `program_not_allowed`.
fn refused(e: PolicyError) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, e.code(), e.to_string())
}

/// Confine the placed files of `secret` to home, each checked by the
/// placement policy: the path as given, and the target it resolves to (so a
/// symlink in home cannot lead to a denied file).
fn confine_files(
    (home, canon_home, policy): (&Path, &Path, &Policy),
    secret: &Secret,
    placement: &Placement,
    origin: Origin,
) -> Result<Vec<TargetFile>, ApiError> {
    placement
        .files
        .iter()
        .map(|file| {
            let display = file.path.clone();
            let (provider, name) = (secret.provider.as_deref(), secret.name.as_str());
            policy
                .check(home, provider, name, &display, origin)
                .map_err(refused)?;
            let path = confine(home, &display)?;
            policy
                .check_resolved(canon_home, name, &path.resolved())
                .map_err(refused)?;
            Ok(TargetFile { display, path })
        })
        .collect()
}

/// Check one item of a request (`POST /v1/sync`, a pulled secret): its
/// placement as sent (untrusted: verified against the secret), or, in the
/// older form, placed here by [`PlaceOpts::request`]. Secrets pulled from
/// the store pass [`Origin::Remote`]: their paths must also lie in the
/// provider's credential locations or the config's `allow_paths`, their
/// values carry data only (403 `program_not_allowed`: a kube user's `exec`,
/// AWS `credential_process`...; a kubeconfig's `current-context` is dropped),
/// and they set only their provider's env vars or the config's `allow_vars`
/// (403 `var_not_allowed`). A caller holding this agent's token passes
/// [`Origin::Local`], so the deny-list and the state dir apply but not the
/// provider-locations rule (the token already grants the node user's power
/// through `/run`).
pub(crate) fn plan_item(
    state: &AppState,
    item: SyncItem,
    origin: Origin,
) -> Result<Planned, ApiError> {
    validate_secret_name(&item.secret.name)?;
    let placement = match item.placement {
        Some(placement) => {
            if item.path.is_some() || item.env.is_some() {
                return Err(ApiError::bad_request(
                    "invalid_placement",
                    format!(
                        "secret {}: give a placement or path/env, not both",
                        item.secret.name
                    ),
                ));
            }
            if placement.is_empty() || placement.env.as_ref().is_some_and(|e| e.vars.is_empty()) {
                return Err(ApiError::bad_request(
                    "invalid_placement",
                    format!(
                        "secret {}: the placement places nothing (no file, or an env without vars)",
                        item.secret.name
                    ),
                ));
            }
            verify(&item.secret, &placement)?;
            placement
        }
        None => {
            let opts = PlaceOpts::request(item.path.as_deref(), item.env.as_deref(), false);
            let placement = place(&item.secret, &opts)?;
            if placement.is_empty() {
                return Err(PlaceError::NoVars {
                    secret: item.secret.name,
                }
                .into());
            }
            placement
        }
    };
    checked(state, item.secret, &placement, origin)
}

/// Check one secret to write into its file(s) (`_write_to_file`): at `path`
/// when given, else its own or its provider's file.
pub(crate) fn plan_file(
    state: &AppState,
    secret: Secret,
    path: Option<&str>,
) -> Result<Planned, ApiError> {
    validate_secret_name(&secret.name)?;
    let placement = place(&secret, &PlaceOpts::request(path, None, true))?;
    checked(state, secret, &placement, Origin::Local)
}

/// Check vars to set in `env` (`_set_env_vars`), recorded under `secret`
/// when named: the same item as a sync's, a secret whose values are the
/// vars themselves.
pub(crate) fn plan_vars(
    state: &AppState,
    env: &str,
    vars: BTreeMap<String, SecretValue>,
    secret: Option<String>,
) -> Result<Planned, ApiError> {
    let placement = Placement {
        files: vec![],
        env: Some(PlacedEnv {
            env: env.to_owned(),
            vars: vars.keys().map(|k| (k.clone(), k.clone())).collect(),
        }),
    };
    let record = secret.is_some();
    let secret = Secret::base(secret.unwrap_or_default(), vars);
    verify(&secret, &placement)?;
    if record {
        validate_secret_name(&secret.name)?;
    }
    let mut planned = checked(state, secret, &placement, Origin::Local)?;
    planned.record = record;
    planned.sets_provider = false;
    Ok(planned)
}

/// The node's own checks of a placement (`place`d here or `verify`d): values
/// of remote origin data only, files confined to home and allowed by the
/// policy, vars allowed by it. Nothing is written before all of them pass.
fn checked(
    state: &AppState,
    mut secret: Secret,
    placement: &Placement,
    origin: Origin,
) -> Result<Planned, ApiError> {
    let provider = providers::for_secret(secret.provider.as_deref());
    let inner = &state.inner;
    let file = placement.files.first().map(|f| f.path.as_str());
    common::policy::data_only(
        secret.provider.as_deref(),
        &secret.name,
        file,
        &mut secret.values,
        origin,
    )
    .map_err(refused)?;
    if let Some(placed) = &placement.env {
        for var in placed.vars.keys() {
            inner
                .policy
                .check_env_var(secret.provider.as_deref(), &secret.name, var, origin)
                .map_err(refused)?;
        }
    }
    let key = (!placement.files.is_empty())
        .then(|| crate::verified::item_key(state.fingerprint_key(), &secret, placement, origin));
    let hit = key.as_deref().and_then(|key| {
        inner
            .verified
            .hit(&inner.config.home, &secret.name, key, placement)
    });
    let verified = hit.is_some();
    let files = if placement.files.is_empty() {
        None
    } else if hit.is_some() {
        hit
    } else {
        let homes = (
            inner.config.home.as_path(),
            inner.canon_home.as_path(),
            &inner.policy,
        );
        Some(confine_files(homes, &secret, placement, origin)?)
    };
    let env = placement
        .env
        .as_ref()
        .map(|placed| (placed.env.clone(), placement.env_values(&secret)));
    Ok(Planned {
        secret,
        provider,
        files,
        env,
        record: true,
        sets_provider: true,
        key,
        verified,
    })
}

type FileJob = Option<(&'static dyn Provider, Vec<TargetFile>, common::Values)>;

/// Per file of an item: its outcome, and the signature of a file found
/// unchanged and private (`common::apply::write_files_noting`).
type Outcomes = (Vec<FileOutcome>, Vec<Option<FileSig>>);

/// What became of one item's files in the blocking work.
enum FileResult {
    /// The item has no files (or they were verified unchanged beforehand).
    None,
    Done(Result<Outcomes, ApiError>),
    /// Not started: the deadline had passed (nothing of it was written).
    Skipped,
}

/// Most threads the file jobs of one request run on.
const WRITER_THREADS: usize = 8;

/// Whether a job only compared files (all unchanged, or no files): it wrote
/// nothing, so no fsync.
fn only_compared(result: &FileResult) -> bool {
    match result {
        FileResult::None => true,
        FileResult::Done(Ok((outcomes, _))) => outcomes.iter().all(|o| {
            matches!(
                o.status,
                FileStatus::Unchanged
                    | FileStatus::WouldWrite
                    | FileStatus::Conflict
                    | FileStatus::Blocked
            )
        }),
        FileResult::Done(Err(_)) | FileResult::Skipped => false,
    }
}

/// Group jobs that share a directory, transitively (union-find over a map
/// from directory to the first job writing there: linear in the number of
/// files). Each group lists its jobs in request order; groups are ordered by
/// their first job.
fn group_by_dir(jobs: &[FileJob]) -> Vec<Vec<usize>> {
    fn root(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    let mut parent: Vec<usize> = (0..jobs.len()).collect();
    let mut first: HashMap<PathBuf, usize> = HashMap::new();
    for (i, job) in jobs.iter().enumerate() {
        let dirs = job.iter().flat_map(|(_, files, _)| {
            files
                .iter()
                .filter_map(|f| f.path.path().parent().map(Path::to_path_buf))
        });
        for dir in dirs {
            let j = *first.entry(dir).or_insert(i);
            let (a, b) = (root(&mut parent, i), root(&mut parent, j));
            if a != b {
                // The smaller index stays the root: groups keep request order.
                parent[a.max(b)] = a.min(b);
            }
        }
    }
    let mut index_of_root: HashMap<usize, usize> = HashMap::new();
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for i in 0..jobs.len() {
        let r = root(&mut parent, i);
        let g = *index_of_root.entry(r).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[g].push(i);
    }
    groups
}

/// Run the file jobs: jobs that share a directory run in request order, one
/// after the other; groups with no directory in common run on up to
/// [`WRITER_THREADS`] threads (their fsyncs overlap) once a group wrote:
/// files that are all unchanged (no write, no fsync) are compared on this
/// thread, without starting threads that would cost more than the work
/// (and, on a loaded node, without a clock deciding it). A job not started by
/// `deadline` is skipped, and so is every later job of its group. Results
/// come back in job order.
fn write_all(
    jobs: Vec<FileJob>,
    overwrite: bool,
    dry_run: bool,
    deadline: Option<Instant>,
    item_delay: Option<std::time::Duration>,
) -> Vec<FileResult> {
    let run = |job: &FileJob| -> FileResult {
        let Some((provider, files, values)) = job.as_ref() else {
            return FileResult::None;
        };
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return FileResult::Skipped;
        }
        if let Some(delay) = item_delay {
            std::thread::sleep(delay);
        }
        let done = if dry_run {
            apply::write_files(*provider, files, values, overwrite, true)
                .map(|outcomes| (outcomes, vec![]))
        } else {
            apply::write_files_noting(*provider, files, values, overwrite)
        };
        FileResult::Done(done.map_err(ApiError::from))
    };
    let groups = group_by_dir(&jobs);
    let run_group = |group: &[usize]| -> Vec<(usize, FileResult)> {
        let mut skipping = false;
        group
            .iter()
            .map(|&i| {
                let result = if skipping && jobs[i].is_some() {
                    FileResult::Skipped
                } else {
                    run(&jobs[i])
                };
                skipping |= matches!(result, FileResult::Skipped);
                (i, result)
            })
            .collect()
    };
    let mut results: Vec<Option<FileResult>> = (0..jobs.len()).map(|_| None).collect();
    // On this thread while nothing is written (no fsync to overlap); the
    // groups after the first that wrote (or failed, or was skipped) go to
    // the threads.
    let mut done: Vec<(usize, FileResult)> = vec![];
    let mut first = 0;
    let mut wrote = false;
    while first < groups.len() && !wrote {
        let ran = run_group(&groups[first]);
        wrote = !ran.iter().all(|(_, r)| only_compared(r));
        done.extend(ran);
        first += 1;
    }
    let threads = WRITER_THREADS.min(groups.len() - first);
    if threads > 0 {
        let next = AtomicUsize::new(first);
        done.extend(std::thread::scope(|scope| {
            let handles: Vec<_> = (0..threads)
                .map(|_| {
                    scope.spawn(|| {
                        let mut out = vec![];
                        loop {
                            let g = next.fetch_add(1, Ordering::Relaxed);
                            let Some(group) = groups.get(g) else {
                                break out;
                            };
                            out.extend(run_group(group));
                        }
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap_or_default())
                .collect::<Vec<_>>()
        }));
    }
    for (i, result) in done {
        results[i] = Some(result);
    }
    results
        .into_iter()
        .zip(&jobs)
        .map(|(result, job)| match (result, job) {
            (Some(result), _) => result,
            (None, None) => FileResult::None,
            (None, Some(_)) => {
                FileResult::Done(Err(ApiError::internal("a file writer thread panicked")))
            }
        })
        .collect()
}

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
/// this in a task of its own ([`crate::handlers::detached`]) so a request
/// timeout cannot cut it short between writing and recording.
pub(crate) async fn apply(
    state: &AppState,
    items: Vec<Planned>,
    overwrite: bool,
    dry_run: bool,
    deadline: Option<Instant>,
) -> Vec<Result<SecretResult, ApiError>> {
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
                    .map(|_| Err(ApiError::internal(&detail)))
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
        result: Result<SecretResult, ApiError>,
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
                result: Err(not_applied(&item.secret.name)),
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
            Err(e) => Err(ApiError::from(e)),
            Ok(()) => envs
                .save_changed(|all| {
                    for (env, vars) in &var_changes {
                        let current = all.entry(env.clone()).or_default();
                        current.extend(vars.iter().map(|(k, v)| (k.clone(), v.clone())));
                    }
                })
                .await
                .map_err(|e| ApiError::not_saved(&e).and("; no var was changed")),
        };
        let mut failed = saved.err();
        for p in &mut pending {
            let Some((env, vars)) = &p.vars else { continue };
            if failed.is_none() {
                if let Err(e) = envs.set_vars(env, vars.clone()).await {
                    failed = Some(ApiError::from(e));
                }
            }
            if let Some(e) = &failed {
                p.result = Err(vars_not_set(e, p.result.as_ref().ok()));
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
            let e = ApiError::not_saved(&e).and(
                "; applied but not recorded, so status and revoke do not know of it: retry the \
                 request",
            );
            for p in pending.iter_mut().filter(|p| p.record) {
                p.result = Err(ApiError::new(e.status, e.code, e.message.clone()));
            }
        }
    }
    pending.into_iter().map(|p| p.result).collect()
}

/// The answer for an item the deadline kept from being started.
fn not_applied(name: &str) -> ApiError {
    ApiError::new(
        StatusCode::GATEWAY_TIMEOUT,
        "deadline_exceeded",
        format!(
            "secret {name} was not applied: the request's deadline passed before it was \
             reached; nothing of it was written"
        ),
    )
}

/// The answer for an item whose vars could not be set (`e`); its files,
/// when it has some, were written.
fn vars_not_set(e: &ApiError, result: Option<&SecretResult>) -> ApiError {
    let files = result.map_or(0, |r| r.files.len());
    let written = if files == 0 {
        ", nothing changed".to_owned()
    } else {
        format!(" (its {files} file(s) were written)")
    };
    ApiError::new(
        e.status,
        e.code,
        format!("its vars were not set{written}: {}", e.message),
    )
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
    if !dry_run {
        // Its files are about to change: the next sync reads them again.
        state.inner.verified.forget(name);
    }
    // A session secret (`crate::credentials`): the session and its profile
    // line go; its env vars go with its record below.
    let session_files = match only_env {
        None => crate::credentials::install::forget(state, name, dry_run).await?,
        Some(_) => None,
    };
    let record = state
        .inner
        .installed
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .secrets
        .get(name)
        .cloned();
    let record = match (record, &session_files) {
        (Some(record), _) => record,
        (None, Some(files)) => {
            return Ok(SecretResult {
                name: name.to_owned(),
                status: if dry_run {
                    Status::WouldWrite
                } else {
                    Status::Removed
                },
                files: files.clone(),
                env: None,
                vars: vec![],
                message: None,
            })
        }
        (None, None) => {
            return Err(ApiError::not_found(
                "unknown_secret",
                format!("secret {name} is not installed on this node"),
            ))
        }
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
            ApiError::not_saved(&e).and(&format!("; its vars were not removed{files}"))
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
        statuses.push(if dry_run {
            Status::WouldWrite
        } else {
            Status::Removed
        });
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
                ApiError::not_saved(&e).and(
                    "; what it installed was removed, but it is still recorded as installed: \
                     retry the revoke",
                )
            })?;
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

    fn job(paths: &[&str]) -> FileJob {
        let files = paths
            .iter()
            .map(|p| TargetFile {
                display: (*p).to_owned(),
                path: common::fsutil::FileRef::anywhere(Path::new(p)).unwrap(),
            })
            .collect();
        Some((providers::for_secret(None), files, common::Values::new()))
    }

    #[test]
    fn jobs_sharing_a_directory_are_grouped_transitively_in_request_order() {
        let jobs = vec![
            job(&["/h/a/1"]),
            job(&["/h/b/1"]),
            None,
            job(&["/h/c/1", "/h/a/2"]),
            job(&["/h/b/2"]),
            job(&["/h/d/1"]),
            job(&["/h/d/2", "/h/c/3"]),
        ];
        // a-c-d are one group through jobs 3 and 6; b is another.
        assert_eq!(
            group_by_dir(&jobs),
            vec![vec![0, 3, 5, 6], vec![1, 4], vec![2]]
        );
    }

    #[test]
    fn grouping_many_jobs_in_many_directories() {
        let paths: Vec<String> = (0..20_000).map(|i| format!("/h/d{i}/f")).collect();
        let jobs: Vec<FileJob> = paths.iter().map(|p| job(&[p.as_str()])).collect();
        let groups = group_by_dir(&jobs);
        assert_eq!(groups.len(), 20_000);
        assert!(groups.iter().enumerate().all(|(i, g)| g == &vec![i]));
    }

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
            let placed = place(&s, &PlaceOpts::request(None, None, true)).unwrap();
            let (canon, policy) = (home.path().canonicalize().unwrap(), policy(&config));
            let homes = (home.path(), canon.as_path(), &policy);
            let got = confine_files(homes, &s, &placed, Origin::Remote)
                .err()
                .map(|e| (e.status, e.code));
            assert_eq!(got, code.map(|c| (StatusCode::FORBIDDEN, c)), "{path:?}");
            let local = confine_files(homes, &s, &placed, Origin::Local).err();
            assert_eq!(local.is_some(), code == Some("path_reserved"), "{path:?}");
        }
    }

    /// A placement sent with an item gets the node's own checks on every
    /// origin: for a pulled item (`Origin::Remote`) a placement naming a
    /// deny-listed or reserved file, a file outside the provider's locations,
    /// a var neither the provider's nor in `allow_vars`, a field that is not
    /// data (a kube user's `exec`), or an env without vars is refused.
    #[tokio::test]
    async fn a_sent_placement_gets_the_nodes_checks_for_remote_items() {
        let home = tempfile::tempdir().unwrap();
        let mut config = Config::for_home(home.path());
        // The env host would be this test binary (current_exe), which exits
        // at once on `env-host` arguments; a stand-in that reads its stdin
        // and stays up keeps `open` from racing that exit.
        let host = home.path().join("env-host.sh");
        std::fs::write(&host, "#!/bin/sh\nexec cat >/dev/null\n").unwrap();
        std::fs::set_permissions(&host, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .unwrap();
        config.env_host_exe = host;
        config.allow_vars = vec!["MY_TOKEN".into()];
        let state = AppState::open(config).await.unwrap();
        let custom = |path: &str| {
            let mut s = Secret::base("s", values_from([("token", "T")]));
            s.provider = Some("custom".into());
            s.path = Some(path.into());
            s
        };
        let file_item = |path: &str| {
            let s = custom(path);
            let placed = place(&s, &PlaceOpts::request(None, None, true)).unwrap();
            SyncItem::placed(s, placed)
        };
        for path in ["~/.bashrc", "~/.rh/agent/token", "~/notes/app.json"] {
            let err = plan_item(&state, file_item(path), Origin::Remote).err();
            let code = err.map(|e| (e.status, e.code));
            assert!(
                matches!(code, Some((StatusCode::FORBIDDEN, _))),
                "{path}: {code:?}"
            );
        }
        let var_item = |var: &str| {
            let s = Secret::base("s", values_from([("v", "x")]));
            let mut vars = BTreeMap::new();
            vars.insert(var.to_owned(), "v".to_owned());
            let placed = Placement {
                files: vec![],
                env: Some(PlacedEnv {
                    env: "base_env".into(),
                    vars,
                }),
            };
            SyncItem::placed(s, placed)
        };
        for var in [
            "LD_PRELOAD",
            "PATH",
            "BASH_ENV",
            "GIT_SSH_COMMAND",
            "SSH_ASKPASS",
            "DOCKER_HOST",
            "OTHER_TOKEN",
        ] {
            let err = plan_item(&state, var_item(var), Origin::Remote)
                .err()
                .map(|e| (e.status, e.code));
            assert_eq!(
                err,
                Some((StatusCode::FORBIDDEN, "var_not_allowed")),
                "{var}"
            );
            assert!(plan_item(&state, var_item(var), Origin::Local).is_ok());
        }
        assert!(plan_item(&state, var_item("MY_TOKEN"), Origin::Remote).is_ok());
        let kube = |user: serde_json::Value| {
            let mut s = Secret::base("k", BTreeMap::new());
            s.provider = Some("kubernetes".into());
            for (key, value) in [
                (
                    "clusters",
                    serde_json::json!([{"name": "c", "cluster": {"server": "https://c"}}]),
                ),
                ("users", serde_json::json!([{"name": "u", "user": user}])),
                ("current-context", serde_json::json!("c")),
            ] {
                s.values.insert(key.into(), SecretValue::new(value));
            }
            let placed = place(&s, &PlaceOpts::request(None, None, true)).unwrap();
            SyncItem::placed(s, placed)
        };
        let exec = serde_json::json!({"exec": {"command": "/bin/sh"}});
        let err = plan_item(&state, kube(exec.clone()), Origin::Remote).err();
        let err = err.map(|e| (e.status, e.code, e.message));
        assert!(
            matches!(&err, Some((StatusCode::FORBIDDEN, "program_not_allowed", m)) if m.contains("exec")),
            "{err:?}"
        );
        assert!(plan_item(&state, kube(exec), Origin::Local).is_ok());
        let data = plan_item(
            &state,
            kube(serde_json::json!({"token": "t"})),
            Origin::Remote,
        );
        let planned = data.ok().unwrap();
        assert!(!planned.secret.values.contains_key("current-context"));
        let empty_env = SyncItem::placed(
            Secret::base("s", values_from([("v", "x")])),
            Placement {
                files: vec![],
                env: Some(PlacedEnv {
                    env: "other".into(),
                    vars: BTreeMap::new(),
                }),
            },
        );
        let err = plan_item(&state, empty_env, Origin::Local)
            .err()
            .map(|e| (e.status, e.code));
        assert_eq!(err, Some((StatusCode::BAD_REQUEST, "invalid_placement")));
    }
}
