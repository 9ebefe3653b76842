//! The remote secret store: Vault KV v2 (OpenBao or Vault). Values live at
//! `<mount>/data/<prefix>/<name>`, the provider, path and env var names in
//! the secret's `custom_metadata` (never values). Pushes are check-and-set
//! against the version last pulled or pushed here (kept in
//! `~/.rh/vault-state.json`), so a change made elsewhere is reported, not
//! overwritten; pulls fetch every name before writing anything locally and
//! report local copies that differ instead of replacing them.
//! Nothing here logs or prints a value or the token.

pub mod client;
pub mod config;
pub mod local;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::fsutil::{self, atomic_write, create_private_dir_all, PathError};
use common::Secret;
use serde::{Deserialize, Serialize};
use thiserror::Error;

pub use client::{RemoteRead, RemoteSecret, SecretMeta, VaultClient};
pub use config::{ConfigError, Token, VaultConfig};

/// The configuration and client of the remote store, from `~/.rh/config`
/// and the environment.
pub(crate) fn connect(ctx: &crate::Context) -> anyhow::Result<(VaultConfig, VaultClient)> {
    let env = |k: &str| ctx.var(k).map(str::to_owned);
    let config = VaultConfig::resolve(&ctx.home, &env, &[], None)?;
    let client = VaultClient::new(&config)?;
    Ok((config, client))
}

/// A remote store operation that failed. Messages name URLs, mounts, files
/// and secret names, never a value or the token.
#[derive(Debug, Error)]
pub enum VaultError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(
        "token rejected by {url} (permission denied): check VAULT_TOKEN or run `controller login`"
    )]
    TokenRejected { url: String },
    #[error(
        "no KV v2 secrets engine is mounted at {mount}/ on {url}: check the mount in ~/.rh/config"
    )]
    UnknownMount { mount: String, url: String },
    #[error(
        "no server of the remote store could serve the request (tried {tried} URL(s)): {details}"
    )]
    Unreachable { tried: usize, details: String },
    #[error("TLS handshake with {url} failed ({ca}): {reason}")]
    Tls {
        url: String,
        ca: String,
        reason: String,
    },
    #[error(
        "refusing to send the store token in cleartext to {url}: use https://, or opt in to \
         plain http:// with {env}=1 (saved by `controller login`) or \
         \"allow_insecure_http\": true in the \"vault\" section of ~/.rh/config",
        env = config::ALLOW_HTTP_ENV
    )]
    InsecureHttp { url: String },
    #[error("store answer from {url} exceeds {limit} bytes; refused")]
    TooLarge { url: String, limit: usize },
    #[error("cannot use CA certificate {path}: {reason}")]
    CaFile { path: String, reason: String },
    #[error("cannot build the HTTP client: {reason}")]
    Client { reason: String },
    #[error(
        "{name} changed remotely since version {expected} (now version {current}): \
         pull it first, or push with --overwrite"
    )]
    CasMismatch {
        name: String,
        expected: u64,
        current: u64,
    },
    #[error("{op} on {url}: HTTP {status}{}", if message.is_empty() { String::new() } else { format!(": {message}") })]
    Http {
        op: String,
        url: String,
        status: u16,
        message: String,
    },
    #[error("{op} on {url}: the answer is not the expected JSON")]
    Decode { op: String, url: String },
    #[error("{name} is not in the remote store")]
    NotInStore { name: String },
    #[error("local store: {0}")]
    Local(String),
    #[error("state file {path}: {reason}")]
    State { path: String, reason: String },
    #[error(transparent)]
    Path(#[from] PathError),
}

/// What a `vault push`/`vault pull` (or `login --download`) did to one
/// secret (`common::wire::Status` is what an agent did to one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransferStatus {
    Pushed,
    Pulled,
    Unchanged,
    Conflict,
    Failed,
}

impl TransferStatus {
    /// As shown in tables.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pushed => "pushed",
            Self::Pulled => "pulled",
            Self::Unchanged => "unchanged",
            Self::Conflict => "conflict",
            Self::Failed => "failed",
        }
    }

    /// Whether this counts as a failure for the exit code.
    pub fn is_failure(self) -> bool {
        matches!(self, Self::Conflict | Self::Failed)
    }
}

/// The outcome for one secret: never a value.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Outcome {
    pub name: String,
    pub status: TransferStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl Outcome {
    fn new(
        name: &str,
        status: TransferStatus,
        version: Option<u64>,
        detail: Option<String>,
    ) -> Self {
        Self {
            name: name.to_owned(),
            status,
            version,
            detail,
        }
    }

    /// A secret that failed, with why (never a value).
    fn failed(name: &str, version: Option<u64>, detail: impl std::fmt::Display) -> Self {
        Self::new(
            name,
            TransferStatus::Failed,
            version,
            Some(detail.to_string()),
        )
    }
}

/// The version of a secret last pulled or pushed here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Known {
    pub version: u64,
    /// `pushed` or `pulled`.
    pub how: String,
    /// When (UTC, RFC 3339).
    pub at: String,
}

/// `~/.rh/vault-state.json`: per store (`mount/prefix`), per name, the
/// version last seen here. No values.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct State {
    #[serde(default)]
    pub stores: BTreeMap<String, BTreeMap<String, Known>>,
}

/// `~/.rh/vault-state.json`.
pub fn state_path(home: &Path) -> PathBuf {
    home.join(".rh").join("vault-state.json")
}

impl State {
    /// Load the state file (empty when absent).
    pub fn load(home: &Path) -> Result<Self, VaultError> {
        let path = state_path(home);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| VaultError::State {
                path: fsutil::tilde_path(home, &path),
                reason: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(PathError::io("read", &path, e).into()),
        }
    }

    /// Save it (atomic, 0600).
    pub fn save(&self, home: &Path) -> Result<(), VaultError> {
        create_private_dir_all(&home.join(".rh"))?;
        let mut text = serde_json::to_string_pretty(self).expect("state serializes");
        text.push('\n');
        atomic_write(&state_path(home), text.as_bytes())?;
        Ok(())
    }

    /// The version of `name` last seen here, in store `key`.
    pub fn known(&self, key: &str, name: &str) -> Option<&Known> {
        self.stores.get(key).and_then(|s| s.get(name))
    }

    /// Remember a version.
    pub fn remember(&mut self, key: &str, name: &str, version: u64, how: &str) {
        self.stores.entry(key.to_owned()).or_default().insert(
            name.to_owned(),
            Known {
                version,
                how: how.to_owned(),
                at: now_rfc3339(),
            },
        );
    }
}

/// The current UTC time as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn now_rfc3339() -> String {
    common::time::now_rfc3339(false)
}

/// A secret's metadata as kept in the store.
pub fn meta_of(secret: &Secret) -> SecretMeta {
    SecretMeta {
        provider: secret.provider.clone(),
        path: secret.path.clone(),
        env_vars: secret.env_vars.clone(),
    }
}

/// A secret rebuilt from the store.
pub fn secret_of(name: &str, remote: &RemoteSecret) -> Secret {
    Secret {
        name: name.to_owned(),
        provider: remote.meta.provider.clone(),
        path: remote.meta.path.clone(),
        env_vars: remote.meta.env_vars.clone(),
        values: remote.values.clone(),
    }
}

fn describe_known(known: &Known) -> String {
    format!(
        "version {} ({} here at {})",
        known.version, known.how, known.at
    )
}

/// Push each secret with check-and-set; one outcome per secret, in order.
/// A remote version other than the one last seen here is a conflict unless
/// `overwrite`; identical remote values are left alone.
pub async fn push(
    client: &VaultClient,
    config: &VaultConfig,
    home: &Path,
    secrets: &[Secret],
    overwrite: bool,
) -> Result<Vec<Outcome>, VaultError> {
    let key = config.store_key();
    let mut state = State::load(home)?;
    let mut outcomes = Vec::with_capacity(secrets.len());
    for secret in secrets {
        let name = secret.name.as_str();
        let meta = meta_of(secret);
        let remote = match client.read(name).await {
            Ok(r) => r,
            Err(e) => {
                // Token and mount problems concern every name: stop here.
                if matches!(
                    e,
                    VaultError::TokenRejected { .. }
                        | VaultError::UnknownMount { .. }
                        | VaultError::Unreachable { .. }
                        | VaultError::Tls { .. }
                ) {
                    state.save(home)?;
                    return Err(e);
                }
                outcomes.push(Outcome::failed(name, None, &e));
                continue;
            }
        };
        let known = state.known(&key, name).cloned();
        let cas = match &remote {
            RemoteRead::Present(r) if r.values == secret.values => {
                if r.meta != meta {
                    if let Err(e) = client.write_metadata(name, &meta).await {
                        outcomes.push(Outcome::failed(name, Some(r.version), &e));
                        continue;
                    }
                }
                state.remember(&key, name, r.version, "pushed");
                outcomes.push(Outcome::new(
                    name,
                    TransferStatus::Unchanged,
                    Some(r.version),
                    None,
                ));
                continue;
            }
            RemoteRead::Present(r) => match &known {
                Some(k) if k.version == r.version => r.version,
                _ if overwrite => r.version,
                Some(k) => {
                    outcomes.push(Outcome::new(
                        name,
                        TransferStatus::Conflict,
                        Some(r.version),
                        Some(format!(
                            "changed remotely since {}; it is now version {}: pull it first, or push with --overwrite",
                            describe_known(k),
                            r.version
                        )),
                    ));
                    continue;
                }
                None => {
                    outcomes.push(Outcome::new(
                        name,
                        TransferStatus::Conflict,
                        Some(r.version),
                        Some(format!(
                            "differs from remote version {} that was never pulled here: pull it first, or push with --overwrite",
                            r.version
                        )),
                    ));
                    continue;
                }
            },
            RemoteRead::Absent { current_version } => *current_version,
        };
        match client.write(name, &secret.values, &meta, cas).await {
            Ok(version) => {
                state.remember(&key, name, version, "pushed");
                outcomes.push(Outcome::new(
                    name,
                    TransferStatus::Pushed,
                    Some(version),
                    None,
                ));
            }
            Err(VaultError::CasMismatch { current, .. }) => {
                let since = known
                    .as_ref()
                    .map(describe_known)
                    .unwrap_or_else(|| format!("version {cas}"));
                outcomes.push(Outcome::new(
                    name,
                    TransferStatus::Conflict,
                    Some(current),
                    Some(format!(
                        "changed remotely since {since}; it is now version {current}: pull it first, or push with --overwrite"
                    )),
                ));
            }
            Err(e) => {
                outcomes.push(Outcome::failed(name, None, &e));
            }
        }
    }
    state.save(home)?;
    Ok(outcomes)
}

/// Pull `names` into the local store. Every name is fetched before anything
/// is written: a name missing remotely or a fetch error fails the whole pull
/// and leaves the local store as it was. A differing local copy is a
/// conflict (kept) unless `overwrite`. A secret that fails
/// [`local::check_remote`] (a path outside its provider's locations, a var
/// that is not its provider's nor allowed, a field that is not data...) is
/// refused: reported as failed and not saved; what it keeps is saved as
/// checked (a kubeconfig without its `current-context`). Returns
/// the outcomes and the pulled secrets (those now equal to the remote copy).
pub async fn pull(
    client: &VaultClient,
    config: &VaultConfig,
    home: &Path,
    names: &[String],
    overwrite: bool,
) -> Result<(Vec<Outcome>, Vec<Secret>), VaultError> {
    let mut fetched = Vec::with_capacity(names.len());
    for name in names {
        match client.read(name).await? {
            RemoteRead::Present(remote) => fetched.push((name.clone(), remote)),
            RemoteRead::Absent { .. } => return Err(VaultError::NotInStore { name: name.clone() }),
        }
    }
    let key = config.store_key();
    let mut state = State::load(home)?;
    let mut outcomes = Vec::with_capacity(fetched.len());
    let mut secrets = Vec::with_capacity(fetched.len());
    let policy = local::policy(home)?;
    for (name, remote) in &fetched {
        let mut secret = secret_of(name, remote);
        if let Err(reason) = local::check_remote(home, &policy, &mut secret) {
            outcomes.push(Outcome::failed(
                name,
                Some(remote.version),
                format!("refused, not saved: {reason}"),
            ));
            continue;
        }
        let local = match local::load(home, name) {
            Ok(l) => l,
            Err(e) => {
                outcomes.push(Outcome::failed(name, Some(remote.version), &e));
                continue;
            }
        };
        match local {
            Some(local) if local == secret => {
                state.remember(&key, name, remote.version, "pulled");
                outcomes.push(Outcome::new(
                    name,
                    TransferStatus::Unchanged,
                    Some(remote.version),
                    None,
                ));
                secrets.push(secret);
            }
            Some(_) if !overwrite => {
                outcomes.push(Outcome::new(
                    name,
                    TransferStatus::Conflict,
                    Some(remote.version),
                    Some(format!(
                        "the local copy differs from remote version {}: push it, or pull with --overwrite",
                        remote.version
                    )),
                ));
            }
            _ => match local::save(home, &secret) {
                Ok(()) => {
                    state.remember(&key, name, remote.version, "pulled");
                    outcomes.push(Outcome::new(
                        name,
                        TransferStatus::Pulled,
                        Some(remote.version),
                        None,
                    ));
                    secrets.push(secret);
                }
                Err(e) => outcomes.push(Outcome::failed(name, Some(remote.version), &e)),
            },
        }
    }
    state.save(home)?;
    Ok((outcomes, secrets))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips() {
        let home = tempfile::tempdir().unwrap();
        let mut state = State::load(home.path()).unwrap();
        assert!(state.known("secret/rh/a", "x").is_none());
        state.remember("secret/rh/a", "x", 3, "pushed");
        state.save(home.path()).unwrap();
        let back = State::load(home.path()).unwrap();
        assert_eq!(back.known("secret/rh/a", "x").unwrap().version, 3);
    }

    #[test]
    fn cas_mismatch_names_the_version() {
        let e = VaultError::CasMismatch {
            name: "aws".into(),
            expected: 1,
            current: 2,
        };
        assert!(e.to_string().contains("changed remotely since version 1"));
    }
}
