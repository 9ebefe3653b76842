//! The remote store's view of this machine: the saved secrets of the local
//! store (`common::store`, `~/.rh/secrets`), behind one small interface so
//! the push/pull logic does not depend on how they are kept (gathering saved
//! and detected secrets is `crate::local_secrets`); and the check that a
//! secret coming from the store is one this machine may keep
//! ([`check_remote`]). Errors name secrets and paths, never values.

use std::path::Path;

use common::apply::secret_paths;
use common::names::{validate_env_var_name, validate_provider_id, validate_secret_name};
use common::policy::{Origin, Policy};
use common::providers::{self, ProviderError};
use common::store::{self, StoreError};
use common::Secret;

use super::config::{config_path, read_document, ConfigError};

/// The placement policy for secrets downloaded to this machine: the
/// top-level `"allow_paths"` of `~/.rh/config` (`~/...` prefixes where
/// secrets from the store may be written besides their provider's own
/// credential locations); nothing reserved beyond the policy's deny-list.
pub fn policy(home: &Path) -> Result<Policy, ConfigError> {
    let doc = read_document(home)?;
    let bad = || ConfigError::Parse {
        path: common::fsutil::tilde_path(home, &config_path(home)),
        reason: "allow_paths must be a list of paths starting with ~/".into(),
    };
    let allow = match doc.get("allow_paths") {
        None => Vec::new(),
        Some(serde_json::Value::Array(items)) => items
            .iter()
            .map(|i| {
                i.as_str()
                    .filter(|s| s.starts_with("~/"))
                    .map(str::to_owned)
                    .ok_or_else(bad)
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(bad()),
    };
    Ok(Policy {
        reserved: Vec::new(),
        allow,
    })
}

/// Check a secret read from the remote store as strictly as local input
/// (`secret create`): its name, provider id, environment variable names (and
/// none that changes how programs run: `common::policy::check_env_var`) and,
/// for a builtin provider, its values; and every file it would be written to
/// against the placement policy as a [`Origin::Remote`] path (the provider's
/// own credential locations or the policy's allow-list, never a denied
/// file). The reason names the secret, keys and paths, never a value.
pub fn check_remote(home: &Path, policy: &Policy, secret: &Secret) -> Result<(), String> {
    validate_secret_name(&secret.name).map_err(|e| e.to_string())?;
    if let Some(id) = &secret.provider {
        validate_provider_id(id).map_err(|e| e.to_string())?;
    }
    for var in secret.env_vars.iter().flat_map(|m| m.values()) {
        validate_env_var_name(var).map_err(|e| e.to_string())?;
        common::policy::check_env_var(&secret.name, var, Origin::Remote)
            .map_err(|e| e.to_string())?;
    }
    if let Some(p) = secret.provider.as_deref().and_then(providers::lookup) {
        p.validate(&secret.values).map_err(|e| e.to_string())?;
    }
    let paths = match secret_paths(secret, None) {
        Ok(paths) => paths,
        Err(ProviderError::NoPath { .. }) => return Ok(()),
        Err(e) => return Err(e.to_string()),
    };
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
