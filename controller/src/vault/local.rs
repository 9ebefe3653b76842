//! The remote store's view of this machine: the saved secrets of the local
//! store (`common::store`, `~/.rh/secrets`), behind one small interface so
//! the push/pull logic does not depend on how they are kept (gathering saved
//! and detected secrets is `crate::local_secrets`); and the check that a
//! secret coming from the store is one this machine may keep
//! ([`check_remote`]). Errors name secrets and paths, never values.

use std::path::Path;

use common::names::{validate_env_var_name, validate_provider_id, validate_secret_name};
use common::placement::files_of;
use common::policy::{Origin, Policy};
use common::providers;
use common::store::{self, StoreError};
use common::Secret;

use super::config::{config_path, read_document, ConfigError};

/// The placement policy for secrets downloaded to this machine: the
/// top-level `"allow_paths"` of `~/.rh/config` (`~/...` prefixes where
/// secrets from the store may be written besides their provider's own
/// credential locations) and `"allow_vars"` (env var names they may set
/// besides their provider's own); nothing reserved beyond the policy's
/// deny-list.
pub fn policy(home: &Path) -> Result<Policy, ConfigError> {
    let doc = read_document(home)?;
    let list = |key: &str, what: &str, ok: &dyn Fn(&str) -> bool| {
        let bad = || ConfigError::Parse {
            path: common::fsutil::tilde_path(home, &config_path(home)),
            reason: format!("{key} must be a list of {what}"),
        };
        match doc.get(key) {
            None => Ok(Vec::new()),
            Some(serde_json::Value::Array(items)) => items
                .iter()
                .map(|i| {
                    i.as_str()
                        .filter(|s| ok(s))
                        .map(str::to_owned)
                        .ok_or_else(bad)
                })
                .collect(),
            Some(_) => Err(bad()),
        }
    };
    Ok(Policy {
        reserved: Vec::new(),
        allow: list("allow_paths", "paths starting with ~/", &|s| {
            s.starts_with("~/")
        })?,
        allow_vars: list("allow_vars", "environment variable names", &|s| {
            validate_env_var_name(s).is_ok()
        })?,
    })
}

/// Check a secret read from the remote store as strictly as local input
/// (`secret create`), and as a node checks what it pulls: its name, provider
/// id, environment variable names (only its provider's own or the policy's
/// `allow_vars`: [`Policy::check_env_var`]), its values (the provider's
/// checks, and data only: [`common::policy::data_only`], which also drops
/// what is never taken from the store, a kubeconfig's `current-context`, so
/// the copy saved here and written later by `secret write` or `sync` is data
/// only too); and every file it would be written to against the placement
/// policy as a [`Origin::Remote`] path (the provider's own credential
/// locations or the policy's allow-list, never a denied file). The reason
/// names the secret, keys, fields and paths, never a value.
pub fn check_remote(home: &Path, policy: &Policy, secret: &mut Secret) -> Result<(), String> {
    validate_secret_name(&secret.name).map_err(|e| e.to_string())?;
    if let Some(id) = &secret.provider {
        validate_provider_id(id).map_err(|e| e.to_string())?;
    }
    let provider = providers::for_secret(secret.provider.as_deref());
    // Every var it names, with a value here or not (a value may come from
    // this machine's environment later: `secret` references).
    let vars = match &secret.env_vars {
        Some(map) => map.values().cloned().collect(),
        None => providers::env_var_map(provider)
            .into_values()
            .collect::<Vec<_>>(),
    };
    for var in &vars {
        validate_env_var_name(var).map_err(|e| e.to_string())?;
        policy
            .check_env_var(
                secret.provider.as_deref(),
                &secret.name,
                var,
                Origin::Remote,
            )
            .map_err(|e| e.to_string())?;
    }
    if let Some(p) = secret.provider.as_deref().and_then(providers::lookup) {
        p.validate(&secret.values).map_err(|e| e.to_string())?;
    }
    let paths = files_of(secret, None)
        .map_err(|e| e.to_string())?
        .unwrap_or_default();
    common::policy::data_only(
        secret.provider.as_deref(),
        &secret.name,
        paths.first().map(String::as_str),
        &mut secret.values,
        Origin::Remote,
    )
    .map_err(|e| e.to_string())?;
    for path in paths {
        policy
            .check(
                home,
                secret.provider.as_deref(),
                &secret.name,
                &path,
                Origin::Remote,
            )
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// The saved secret `name`, if any.
pub fn load(home: &Path, name: &str) -> Result<Option<Secret>, StoreError> {
    match store::load(home, name) {
        Ok(secret) => Ok(Some(secret)),
        Err(StoreError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Save a secret (0600).
pub fn save(home: &Path, secret: &Secret) -> Result<(), StoreError> {
    store::save(home, secret)
}

/// Whether `name` is saved.
pub fn exists(home: &Path, name: &str) -> bool {
    store::exists(home, name)
}

/// The saved secrets, in the store's order.
pub fn list(home: &Path) -> Result<Vec<Secret>, StoreError> {
    store::list(home)
}

/// Delete the saved secret `name` (its files are left alone); absent is fine.
pub fn delete(home: &Path, name: &str) -> Result<(), StoreError> {
    match store::delete(home, name) {
        Err(StoreError::NotFound { .. }) => Ok(()),
        other => other,
    }
}
