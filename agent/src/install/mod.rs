//! The install service of this node, called by `POST /v1/sync`,
//! `_write_to_file`, `_set_env_vars` and `DELETE /v1/secrets/{name}` (the
//! handlers) and by the fleet pull loop alike. It checks every item before
//! anything is written (`plan`: placement, data-only values, allowed vars,
//! each file asked of the placement policy), applies them under the write
//! lock (`apply`, through the parallel writer `write`: lock, provider merge,
//! atomic 0600 write, env vars, `installed.json`), removes exactly what a
//! secret installed (`revoke`), tells what is installed (`status`), and
//! records one audit entry per call (names only). It knows no transport:
//! its errors are [`InstallError`]s, which the handlers answer as HTTP and
//! the pull loop reports. Errors, results and the audit log name secrets,
//! paths, envs and vars, never a value.

mod apply;
mod error;
mod plan;
mod revoke;
mod session;
mod status;
mod write;

use std::collections::BTreeMap;
use std::time::Instant;

use common::policy::Origin;
use common::wire::{SecretResult, Status, SyncItem};
use common::{Secret, SecretValue};

use crate::audit::AuditEntry;
use crate::state::AppState;

pub(crate) use error::{InstallError, Kind, INTERNAL};
#[cfg(test)]
pub(crate) use plan::plan_item;
pub(crate) use plan::{policy, Planned};
pub(crate) use session::rebind;
pub(crate) use status::installed_status;

/// How a call applies its items.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ApplyOpts {
    /// Replace differing values of a secret's keys in its files (else the
    /// file is a conflict and left as it is).
    pub(crate) overwrite: bool,
    /// Say what would change, change nothing.
    pub(crate) dry_run: bool,
    /// No item is started after it: such an item is answered
    /// `deadline_exceeded`, nothing of it written.
    pub(crate) deadline: Option<Instant>,
}

/// Install many secrets for a caller holding this agent's token
/// ([`Origin::Local`]; the audit entry names `route`). Every item is
/// checked first: one bad item fails the call and nothing changes (so does
/// a call that would create more envs than `max_envs`). Then each is
/// applied in order, with its own result; an item that fails alone is
/// answered `failed` with a message naming paths only.
pub(crate) async fn sync(
    state: &AppState,
    route: &'static str,
    items: Vec<SyncItem>,
    opts: ApplyOpts,
) -> Result<Vec<SecretResult>, InstallError> {
    let names = items.iter().map(|i| i.secret.name.clone()).collect();
    let mut audit = Audit::new(route, names, opts.dry_run);
    let (sessions, items) = session::split(items);
    let result = async {
        let mut planned = Vec::with_capacity(items.len());
        for item in items {
            let p = plan::plan_item(state, item, Origin::Local)?;
            audit.planned(&p);
            planned.push(p);
        }
        // Envs the call would create must fit under the cap (checked
        // again under the write lock when they are created).
        let envs = audit.0.envs.iter().map(String::as_str);
        state.inner.envs.check_room(envs)?;
        let names: Vec<String> = planned.iter().map(|p| p.secret.name.clone()).collect();
        let results = apply::apply(state, planned, opts).await;
        // Session secrets after the others.
        let sessions = session::apply_items(state, sessions, Origin::Local, opts.dry_run).await;
        let results = names.into_iter().zip(results).chain(sessions);
        Ok(results
            .map(|(name, r)| r.unwrap_or_else(|e| failed(name, &e)))
            .collect())
    }
    .await;
    audit.record(state, outcome(&result, |r: &Vec<_>| statuses(r)));
    result
}

/// Write one secret into its file(s), merging: at `path` when given, else
/// its own or its provider's file (a conflict writes nothing).
pub(crate) async fn write_file(
    state: &AppState,
    route: &'static str,
    secret: Secret,
    path: Option<String>,
    opts: ApplyOpts,
) -> Result<SecretResult, InstallError> {
    let mut audit = Audit::new(route, vec![secret.name.clone()], opts.dry_run);
    audit.0.paths = path.iter().cloned().collect();
    let planned = plan::plan_file(state, secret, path.as_deref());
    if let Ok(p) = &planned {
        audit.0.paths = p.paths();
    }
    apply_one(state, audit, planned, opts).await
}

/// Set vars in `env`, creating it when absent, recorded under `secret`
/// when named: saved to `envs.json` before they go live (a failed save
/// changes nothing), then recorded in `installed.json`; when that record
/// cannot be saved the vars are live and the error says "applied but not
/// recorded", as for [`sync`].
pub(crate) async fn set_vars(
    state: &AppState,
    route: &'static str,
    env: String,
    vars: BTreeMap<String, SecretValue>,
    secret: Option<String>,
    dry_run: bool,
) -> Result<SecretResult, InstallError> {
    let mut audit = Audit::new(route, secret.iter().cloned().collect(), dry_run);
    audit.0.envs = vec![env.clone()];
    audit.0.vars = vars.keys().cloned().collect();
    let planned = plan::plan_vars(state, &env, vars, secret).and_then(|p| {
        if !dry_run {
            state.inner.envs.check_room([env.as_str()])?;
        }
        Ok(p)
    });
    let opts = ApplyOpts {
        overwrite: false,
        dry_run,
        deadline: None,
    };
    apply_one(state, audit, planned, opts).await
}

/// Remove what secret `name` installed (only its vars in `only_env` when
/// given): its keys from its files, when they still hold its values, and
/// its vars, when they still hold the values it set.
/// [`InstallError::NotInstalled`] when it installed nothing here.
pub(crate) async fn revoke(
    state: &AppState,
    route: &'static str,
    name: &str,
    only_env: Option<&str>,
    dry_run: bool,
) -> Result<SecretResult, InstallError> {
    let result = revoke::revoke(state, name, only_env, dry_run).await;
    let mut audit = Audit::new(route, vec![name.to_owned()], dry_run);
    audit.0.envs = only_env.map(str::to_owned).into_iter().collect();
    if let Ok(r) = &result {
        audit.0.paths.extend(r.files.iter().map(|f| f.path.clone()));
        audit.0.vars.extend(r.vars.iter().cloned());
    }
    audit.record_one(state, &result);
    result
}

/// Install secrets pulled from the store ([`Origin::Remote`]: placed by
/// this node's policy, never by the store; provider locations or
/// `allow_paths` only, data-only values, allowed vars) through the same
/// path as [`sync`], each on its own: one bad or conflicting secret does
/// not hold back the others. A secret this node already installed from the
/// store (`known`) replaces its own earlier values (overwrite); a new one
/// does not clobber differing values already in a file (conflict). One
/// audit entry, naming `route`.
pub(crate) async fn apply_pulled(
    state: &AppState,
    route: &'static str,
    items: Vec<SyncItem>,
    known: impl Fn(&str) -> bool,
) -> Vec<(String, Result<SecretResult, InstallError>)> {
    let names = items.iter().map(|i| i.secret.name.clone()).collect();
    let mut audit = Audit::new(route, names, false);
    let mut out = Vec::with_capacity(items.len());
    let (mut again, mut new) = (Vec::new(), Vec::new());
    // Session secrets: checked as the store's input.
    let (sessions, items) = session::split(items);
    out.extend(session::apply_items(state, sessions, Origin::Remote, false).await);
    for item in items {
        let name = item.secret.name.clone();
        let planned = plan::plan_item(state, item, Origin::Remote).and_then(|p| {
            let env = p.env_vars().map(|(env, _)| env);
            state
                .inner
                .envs
                .check_room(env.iter().map(String::as_str))?;
            Ok(p)
        });
        match planned {
            Err(e) => out.push((name, Err(e))),
            Ok(p) => {
                audit.planned(&p);
                if known(&name) {
                    again.push(p);
                } else {
                    new.push(p);
                }
            }
        }
    }
    for (batch, overwrite) in [(again, true), (new, false)] {
        if batch.is_empty() {
            continue;
        }
        let names: Vec<String> = batch.iter().map(|p| p.secret.name.clone()).collect();
        let opts = ApplyOpts {
            overwrite,
            dry_run: false,
            deadline: None,
        };
        let results = apply::apply(state, batch, opts).await;
        out.extend(names.into_iter().zip(results));
    }
    let ok: Vec<SecretResult> = out
        .iter()
        .filter_map(|(_, r)| r.as_ref().ok().cloned())
        .collect();
    audit.record(state, statuses(&ok));
    out
}

/// Apply one checked item (or pass on why it could not be checked) and
/// record the call's audit entry.
async fn apply_one(
    state: &AppState,
    audit: Audit,
    planned: Result<Planned, InstallError>,
    opts: ApplyOpts,
) -> Result<SecretResult, InstallError> {
    let result = match planned {
        Ok(p) => apply::apply(state, vec![p], opts)
            .await
            .into_iter()
            .next()
            .unwrap_or_else(|| Err(InstallError::internal("no result"))),
        Err(e) => Err(e),
    };
    audit.record_one(state, &result);
    result
}

/// The result of an item that failed alone.
fn failed(name: String, e: &InstallError) -> SecretResult {
    SecretResult {
        name,
        status: Status::Failed,
        files: vec![],
        env: None,
        vars: vec![],
        message: Some(e.message()),
    }
}

/// The audit entry of one call: names only, filled in as the call goes,
/// recorded once at its end. The one place install audit entries are built.
struct Audit(AuditEntry);

impl Audit {
    fn new(route: &'static str, secrets: Vec<String>, dry_run: bool) -> Self {
        Self(AuditEntry {
            route,
            secrets,
            dry_run,
            ..Default::default()
        })
    }

    /// What a checked item will write and set.
    fn planned(&mut self, p: &Planned) {
        self.0.paths.extend(p.paths());
        if let Some((env, vars)) = p.env_vars() {
            if !self.0.envs.contains(&env) {
                self.0.envs.push(env);
            }
            self.0.vars.extend(vars);
        }
    }

    /// Append it to the audit log with the call's `result`.
    fn record(mut self, state: &AppState, result: String) {
        self.0.result = result;
        state.inner.audit.record(&self.0);
    }

    /// [`Audit::record`] with the outcome of a one-secret call.
    fn record_one(self, state: &AppState, result: &Result<SecretResult, InstallError>) {
        self.record(
            state,
            outcome(result, |r| statuses(std::slice::from_ref(r))),
        );
    }
}

/// The audit word for a call's outcome: `ok` of its value, or the error's
/// code.
fn outcome<T>(result: &Result<T, InstallError>, ok: impl FnOnce(&T) -> String) -> String {
    match result {
        Ok(value) => ok(value),
        Err(e) => format!("error:{}", e.code()),
    }
}

/// `name=written,name=unchanged,...` for a list of results.
fn statuses(results: &[SecretResult]) -> String {
    results
        .iter()
        .map(|r| format!("{}={}", r.name, r.status.as_str()))
        .collect::<Vec<_>>()
        .join(",")
}
