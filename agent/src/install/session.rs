//! Putting session secrets in place, part of the install service: the
//! `session` items of a sync or of a pull (split off by [`super::sync`] and
//! [`super::apply_pulled`]), checked as untrusted input (`common::session::
//! check_minted`), held by `crate::credentials::Credentials`, and exposed
//! through the same install path as any secret:
//!
//! - env `E`: vars set by [`super::apply`] and recorded under the secret's
//!   name (so `status` lists them and revoke removes them). AWS:
//!   `AWS_CONTAINER_CREDENTIALS_FULL_URI`, `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE`
//!   and, so the container provider is the one botocore finds,
//!   `AWS_CONFIG_FILE` (a file with the session's region only) and
//!   `AWS_SHARED_CREDENTIALS_FILE` (an empty file). GCP: `GCE_METADATA_HOST`,
//!   `GCE_METADATA_IP`, `CLOUDSDK_CONFIG` (an empty dir: no ADC file is
//!   found) and `GOOGLE_CLOUD_PROJECT` when known. These values are the
//!   agent's own (paths and its URL), never the store's.
//! - AWS profile `P`: `credential_process` in `~/.aws/config` (see
//!   `crate::credentials::aws_ecs`); static keys of `[default]` this agent installed
//!   for another secret are revoked, others are reported `shadowed`.
//!
//! Nothing here logs or answers a credential.

use std::collections::{BTreeMap, BTreeSet};

use common::apply::{FileStatus, TargetFile};
use common::names::{validate_env_name, validate_secret_name};
use common::policy::Origin;
use common::policy::Reach;
use common::session::{
    check_minted, now_secs, validate_profile, SessionError, SessionItem, SessionKind,
};
use common::wire::{FileOutcome, SecretResult, Status, SyncItem};
use common::{Secret, SecretValue, Values};

use super::error::InstallError;
use super::ApplyOpts;
use crate::credentials::aws_ecs::{process_command, PROFILE_PROCESS};
use crate::credentials::Held;
use crate::state::AppState;

fn io(e: impl std::fmt::Display) -> InstallError {
    InstallError::internal(e)
}

/// A failed save of the held sessions.
fn not_saved(e: &dyn std::fmt::Display) -> InstallError {
    InstallError::not_saved(e, "")
}

/// Vars applied by the agent itself (its own paths and URL): local origin
/// whatever the item's, replacing what the env held for this secret.
async fn apply_vars(
    state: &AppState,
    env: &str,
    name: &str,
    vars: BTreeMap<String, SecretValue>,
    dry_run: bool,
) -> Result<SecretResult, InstallError> {
    let planned = super::plan::plan_vars(state, env, vars, Some(name.to_owned()))?;
    let opts = ApplyOpts {
        overwrite: true,
        dry_run,
        deadline: None,
    };
    super::apply::apply(state, vec![planned], opts)
        .await
        .into_iter()
        .next()
        .unwrap_or_else(|| Err(InstallError::internal("no result")))
}

/// Split the session items off a request: `(sessions, others)`.
pub(crate) fn split(items: Vec<SyncItem>) -> (Vec<SyncItem>, Vec<SyncItem>) {
    items.into_iter().partition(|i| i.session.is_some())
}

/// Check a session item before anything changes.
fn check(state: &AppState, name: &str, s: &SessionItem) -> Result<(), InstallError> {
    validate_secret_name(name)?;
    check_minted(name, &s.minted, now_secs())?;
    if let Some(env) = &s.env {
        validate_env_name(env)?;
    }
    match (s.minted.kind, &s.profile) {
        (SessionKind::Aws, Some(p)) => validate_profile(name, p)?,
        (SessionKind::Gcp, Some(_)) => {
            return Err(InstallError::Session(SessionError::Invalid {
                name: name.to_owned(),
                reason: "a gcp session has no profile".into(),
            }))
        }
        _ => {}
    }
    if s.minted.kind == SessionKind::Gcp {
        let creds = &state.inner.credentials;
        for other in creds.names() {
            let held = creds.get(&other);
            if other != name && held.is_some_and(|h| h.minted.kind == SessionKind::Gcp) {
                return Err(InstallError::GcpSessionHeld(other));
            }
        }
    }
    Ok(())
}

/// The env vars that point env processes at session `name`.
fn env_vars(
    state: &AppState,
    name: &str,
    s: &SessionItem,
    env: &str,
) -> Result<BTreeMap<String, SecretValue>, InstallError> {
    vars_for(state, name, &s.minted, env)
}

/// [`env_vars`] for a held session.
fn vars_for(
    state: &AppState,
    name: &str,
    minted: &common::session::Minted,
    env: &str,
) -> Result<BTreeMap<String, SecretValue>, InstallError> {
    let creds = &state.inner.credentials;
    let dir = creds.dir().to_path_buf();
    let port = creds.port();
    let mut vars = BTreeMap::new();
    let mut set = |k: &str, v: String| {
        vars.insert(k.to_owned(), SecretValue::from_string(v));
    };
    match minted.kind {
        SessionKind::Aws => {
            let token = creds.env_token_path(env).map_err(io)?;
            let aws = dir.join("aws");
            common::fsutil::create_private_dir_all(&aws).map_err(io)?;
            let config = aws.join(format!("{name}.config"));
            let text = match &minted.region {
                Some(r) => format!("[default]\nregion = {r}\n"),
                None => String::new(),
            };
            common::fsutil::atomic_write_if_changed(&config, text.as_bytes()).map_err(io)?;
            let empty = aws.join("credentials.empty");
            common::fsutil::atomic_write_if_changed(&empty, b"").map_err(io)?;
            set(
                "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                format!("http://127.0.0.1:{port}/v1/credentials/aws/{name}"),
            );
            set(
                "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
                token.display().to_string(),
            );
            set("AWS_CONFIG_FILE", config.display().to_string());
            set("AWS_SHARED_CREDENTIALS_FILE", empty.display().to_string());
        }
        SessionKind::Gcp => {
            let gcloud = dir.join("gcloud");
            common::fsutil::create_private_dir_all(&gcloud).map_err(io)?;
            set("GCE_METADATA_HOST", format!("127.0.0.1:{port}"));
            set("GCE_METADATA_IP", format!("127.0.0.1:{port}"));
            set("CLOUDSDK_CONFIG", gcloud.display().to_string());
            if let Some(p) = &minted.project_id {
                set("GOOGLE_CLOUD_PROJECT", p.clone());
            }
        }
    }
    Ok(vars)
}

/// The values of the `~/.aws/config` line of session `name` in `profile`.
fn profile_values(state: &AppState, name: &str, profile: &str) -> Values {
    // The agent binary (env hosts are started from it too).
    let exe = &state.inner.config.env_host_exe;
    let line = process_command(exe, name, state.inner.credentials.state_dir());
    [
        ("profile".to_owned(), SecretValue::from(profile)),
        (
            "credential_process".to_owned(),
            SecretValue::from_string(line),
        ),
    ]
    .into()
}

/// `~/.aws/config`, as the placement policy allows it to be written
/// (`Policy::may_write`, as every file of the install service).
fn aws_config(state: &AppState, name: &str, origin: Origin) -> Result<TargetFile, InstallError> {
    let inner = &state.inner;
    let mut secret = Secret::base(name, Values::new());
    secret.provider = Some("aws".into());
    Ok(inner.policy.may_write(
        &inner.config.home,
        &inner.canon_home,
        &secret,
        "~/.aws/config",
        origin,
        Reach::Home,
    )?)
}

/// Static keys this agent installed into `[default]` of
/// `~/.aws/credentials` for other secrets: their names.
fn own_static_keys(state: &AppState, except: &str) -> Vec<String> {
    let installed = state.installed();
    installed
        .secrets
        .iter()
        .filter(|(n, r)| {
            n.as_str() != except
                && r.provider.as_deref() == Some("aws")
                && r.files
                    .iter()
                    .any(|f| f.paths.iter().any(|p| p == "~/.aws/credentials"))
        })
        .map(|(n, _)| n.clone())
        .collect()
}

/// Apply session items; one result per item, in order.
pub(crate) async fn apply_items(
    state: &AppState,
    items: Vec<SyncItem>,
    origin: Origin,
    dry_run: bool,
) -> Vec<(String, Result<SecretResult, InstallError>)> {
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let name = item.secret.name.clone();
        let Some(session) = item.session else {
            continue;
        };
        let result = apply_one(state, &name, session, origin, dry_run).await;
        out.push((name, result));
    }
    out
}

async fn apply_one(
    state: &AppState,
    name: &str,
    s: SessionItem,
    origin: Origin,
    dry_run: bool,
) -> Result<SecretResult, InstallError> {
    check(state, name, &s)?;
    let creds = &state.inner.credentials;
    let old = creds.get(name);
    let same = old.as_ref().is_some_and(|o| {
        o.minted.credential == s.minted.credential
            && o.minted.expires_at == s.minted.expires_at
            && s.env.as_ref().is_none_or(|e| o.envs.contains(e))
            && o.profile == s.profile
    });
    let mut result = SecretResult {
        name: name.to_owned(),
        status: Status::Unchanged,
        files: vec![],
        env: s.env.clone(),
        vars: vec![],
        message: None,
    };
    let mut statuses = vec![if same {
        Status::Unchanged
    } else if dry_run {
        Status::WouldWrite
    } else {
        Status::Written
    }];
    // A dry run writes nothing (the vars' files and tokens included).
    let vars = match (&s.env, dry_run) {
        (Some(env), false) => Some((env.clone(), env_vars(state, name, &s, env)?)),
        _ => None,
    };
    if !dry_run && !same {
        let mut envs: BTreeSet<String> = old.map(|o| o.envs).unwrap_or_default();
        envs.extend(s.env.iter().cloned());
        let held = Held {
            minted: s.minted.clone(),
            envs,
            profile: s
                .profile
                .clone()
                .or_else(|| creds.get(name).and_then(|h| h.profile)),
            installed_at: now_secs(),
        };
        creds.put(name, held).map_err(|e| not_saved(&e))?;
        tracing::info!(secret = %name, kind = s.minted.kind.as_str(), expires_at = s.minted.expires_at, "session secret installed");
    }
    if let Some((env, vars)) = vars {
        result.vars = vars.keys().cloned().collect();
        // The agent's own values: local origin whatever the item's.
        statuses.push(apply_vars(state, &env, name, vars, dry_run).await?.status);
    }
    if let (SessionKind::Aws, Some(profile)) = (s.minted.kind, &s.profile) {
        let file = aws_config(state, name, origin)?;
        let values = profile_values(state, name, profile);
        let outcomes = tokio::task::spawn_blocking(move || {
            common::apply::write_files(&PROFILE_PROCESS, &[file], &values, true, dry_run)
        })
        .await
        .map_err(io)??;
        statuses.extend(outcomes.iter().map(|o| Status::from(o.status)));
        result.files = outcomes;
        if profile == "default" && !dry_run {
            for other in own_static_keys(state, name) {
                let r = super::revoke(state, "session", &other, None, false).await?;
                result.files.extend(r.files);
                result.message = Some(format!(
                    "removed the static keys secret {other} had installed in ~/.aws/credentials [default]"
                ));
            }
        }
        let shadowed = crate::credentials::aws_ecs::shadowed(&state.inner.config.home, profile);
        if !shadowed.is_empty() {
            result.message = Some(format!(
                "shadowed: static keys in {} win over credential_process in botocore; remove them",
                shadowed.join(", ")
            ));
        }
    }
    result.status = Status::combine(statuses);
    Ok(result)
}

/// Point the envs of every held session at the port the agent now listens
/// on: sessions applied before the port was known (a pull at boot with
/// `--listen` port 0) named port 0 in their URLs.
pub(crate) async fn rebind(state: &AppState) {
    let creds = &state.inner.credentials;
    for name in creds.names() {
        let Some(held) = creds.get(&name) else {
            continue;
        };
        for env in &held.envs {
            let applied = match vars_for(state, &name, &held.minted, env) {
                Ok(vars) => apply_vars(state, env, &name, vars, false).await.err(),
                Err(e) => Some(e),
            };
            if let Some(e) = applied {
                tracing::warn!(secret = %name, %env, error = %e.message(), "could not point the env at the agent's port");
            }
        }
    }
}

/// Drop session `name` (revoke): the session and its `~/.aws/config` line.
/// `None` when it holds no session of that name; its env vars go with the
/// secret's installed record.
pub(crate) async fn forget(
    state: &AppState,
    name: &str,
    dry_run: bool,
) -> Result<Option<Vec<FileOutcome>>, InstallError> {
    let creds = &state.inner.credentials;
    let Some(held) = creds.get(name) else {
        return Ok(None);
    };
    let mut files = vec![];
    if let Some(profile) = &held.profile {
        let file = aws_config(state, name, Origin::Local)?;
        let values = profile_values(state, name, profile);
        files = tokio::task::spawn_blocking(move || {
            common::apply::remove_files(&PROFILE_PROCESS, &[file], &values, dry_run)
        })
        .await
        .map_err(io)??;
    }
    if !dry_run {
        creds.remove(name).map_err(|e| not_saved(&e))?;
        let _ = std::fs::remove_file(creds.dir().join("aws").join(format!("{name}.config")));
    }
    Ok(Some(
        files
            .into_iter()
            .filter(|f| f.status != FileStatus::Unchanged)
            .collect(),
    ))
}
