//! The agent's shared state ([`AppState`], a `Clone` handle of `Arc`s) and
//! its state directory (`<home>/.rh/agent` by default, mode 0700):
//!
//! - `token` (0600): the bearer token every route but `/healthz` requires.
//! - `fingerprint.key` (0600): the per-node key of the keyed fingerprints in
//!   `/v1/status`.
//! - `installed.json` (0600, atomic): what each secret installed — its
//!   files with the values written there, and its env vars with
//!   fingerprints. It necessarily holds values, because revoke must remove
//!   exactly those values from merged files; that is why it is private to the
//!   node user in a 0700 directory, like the credential files themselves.
//! - `envs.json` (0600, atomic): every env and its vars (see [`crate::envs`]).
//! - `audit.log` (0600): names only (see [`crate::audit`]).
//! - `agent.addr`, `agent.pid`: where the running agent listens, its pid.
//!
//! Temp files (`.rh-tmp-*`) a killed agent left in the state dir are removed
//! at start.
//!
//! Mutations (file writes, env var changes, state-file saves) run under one
//! in-process write lock so state files are saved in order and concurrent
//! requests never interleave; file writes also hold the directory flock of
//! `common::apply` against other processes. Nothing here logs a value.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use common::fingerprint::{fingerprint, random_hex};
use common::fsutil::{atomic_write, create_private_dir_all, read_optional, PathError};
use common::secret_value::ct_eq_bytes;
use common::{SecretText, Values};

use crate::audit::AuditLog;
use crate::config::Config;
use crate::envs::{EnvError, EnvManager};

/// Why the agent cannot start.
#[derive(Debug, Error)]
pub enum StartError {
    #[error("home directory {0} does not exist or is not a directory")]
    NoHome(String),
    #[error(transparent)]
    Path(#[from] PathError),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("state file {path}: {reason}")]
    State { path: String, reason: String },
    #[error(transparent)]
    Env(#[from] EnvError),
}

/// One install of a secret's files: the display paths and the values written.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileInstall {
    pub(crate) paths: Vec<String>,
    pub(crate) values: Values,
}

/// One env var a secret set, with the fingerprint of the value it set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct VarInstall {
    pub(crate) env: String,
    pub(crate) var: String,
    pub(crate) fingerprint: String,
}

/// Everything one secret installed on this node.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Record {
    #[serde(default)]
    pub(crate) provider: Option<String>,
    #[serde(default)]
    pub(crate) files: Vec<FileInstall>,
    #[serde(default)]
    pub(crate) vars: Vec<VarInstall>,
}

impl Record {
    pub(crate) fn is_empty(&self) -> bool {
        self.files.is_empty() && self.vars.is_empty()
    }
}

/// `installed.json`.
#[derive(Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Installed {
    #[serde(default)]
    pub(crate) secrets: BTreeMap<String, Record>,
}

/// The state shared by every handler.
#[derive(Clone)]
pub struct AppState {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) config: Config,
    token: SecretText,
    fingerprint_key: SecretText,
    pub(crate) installed: Mutex<Installed>,
    installed_path: PathBuf,
    pub(crate) write_lock: Arc<tokio::sync::Mutex<()>>,
    pub(crate) envs: Arc<EnvManager>,
    pub(crate) audit: AuditLog,
    pub(crate) metrics: Arc<crate::pull::metrics::Metrics>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("home", &self.inner.config.home)
            .field("state_dir", &self.inner.config.state_dir)
            .field("token", &"<redacted>")
            .finish()
    }
}

/// Read a private file holding a random hex string, creating it (0600) when
/// missing or empty.
fn private_random(path: &Path, bytes: usize) -> Result<SecretText, StartError> {
    if let Some(text) = read_optional(path)? {
        let trimmed = text.expose_secret().trim();
        if !trimmed.is_empty() {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(
                |source| StartError::Io {
                    what: "chmod",
                    path: path.display().to_string(),
                    source,
                },
            )?;
            return Ok(SecretText::new(trimmed.to_owned()));
        }
    }
    let fresh = SecretText::new(random_hex(bytes));
    atomic_write(path, fresh.expose_secret().as_bytes())?;
    Ok(fresh)
}

impl AppState {
    /// Open the state dir (creating it 0700 with a token and a fingerprint
    /// key on first start), load the installed secrets and envs, and start
    /// every env's host process (`base_env` always exists).
    pub async fn open(config: Config) -> Result<Self, StartError> {
        if !config.home.is_dir() {
            return Err(StartError::NoHome(config.home.display().to_string()));
        }
        let dir = config.state_dir.clone();
        create_private_dir_all(&dir)?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).map_err(
                |source| StartError::Io {
                    what: "chmod",
                    path: dir.display().to_string(),
                    source,
                },
            )?;
        }
        // A kill -9 between creating and renaming a state file's temp file
        // leaves it behind, values included: nobody else writes here, so
        // every one is stale.
        let stale = common::fsutil::remove_stale_temp_files(&dir)?;
        if stale > 0 {
            tracing::info!(count = stale, "removed temp files left by an earlier run");
        }
        let token = private_random(&dir.join("token"), 32)?;
        let fingerprint_key = private_random(&dir.join("fingerprint.key"), 32)?;
        let installed_path = dir.join("installed.json");
        let installed = match read_optional(&installed_path)? {
            None => Installed::default(),
            Some(text) => {
                serde_json::from_str(text.expose_secret()).map_err(|e| StartError::State {
                    path: installed_path.display().to_string(),
                    reason: format!("invalid JSON at line {} column {}", e.line(), e.column()),
                })?
            }
        };
        let audit_path = dir.join("audit.log");
        let audit = AuditLog::open(&audit_path).map_err(|source| StartError::Io {
            what: "open audit log",
            path: audit_path.display().to_string(),
            source,
        })?;
        let write_lock = Arc::new(tokio::sync::Mutex::new(()));
        let envs = EnvManager::open(
            config.env_host_exe.clone(),
            config.home.clone(),
            &dir,
            Arc::clone(&write_lock),
            config.max_envs,
        )?;
        envs.start_all().await?;
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                token,
                fingerprint_key,
                installed: Mutex::new(installed),
                installed_path,
                write_lock,
                envs,
                audit,
                metrics: Arc::default(),
            }),
        })
    }

    /// The counters served by `GET /metrics`.
    pub fn metrics(&self) -> Arc<crate::pull::metrics::Metrics> {
        Arc::clone(&self.inner.metrics)
    }

    /// The configuration the agent runs with.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// Whether `presented` is the agent's token (constant time).
    pub(crate) fn token_matches(&self, presented: &[u8]) -> bool {
        ct_eq_bytes(presented, self.inner.token.expose_secret().as_bytes())
    }

    /// The proof of holding the token for a `/healthz` challenge
    /// (`common::proof::agent_proof`); the token itself never leaves.
    pub(crate) fn token_proof(&self, nonce: &[u8]) -> String {
        common::proof::agent_proof(self.inner.token.expose_secret().as_bytes(), nonce)
    }

    /// A keyed fingerprint under this node's key.
    pub(crate) fn fingerprint(&self, data: &[u8]) -> String {
        fingerprint(self.fingerprint_key(), data)
    }

    /// This node's fingerprint key, as the HMAC is keyed with it (the bytes
    /// of its hex text, as since the first release).
    pub(crate) fn fingerprint_key(&self) -> &[u8] {
        self.inner.fingerprint_key.expose_secret().as_bytes()
    }

    /// Write `installed.json` (atomic, 0600). Call with the write lock held.
    pub(crate) async fn save_installed(&self) -> Result<(), StartError> {
        let path = self.inner.installed_path.clone();
        let text = {
            let installed = self
                .inner
                .installed
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            serde_json::to_string_pretty(&*installed).map_err(|e| StartError::State {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?
        };
        let text = SecretText::new(text);
        let shown = path.display().to_string();
        tokio::task::spawn_blocking(move || atomic_write(&path, text.expose_secret().as_bytes()))
            .await
            .map_err(|e| StartError::State {
                path: shown,
                reason: e.to_string(),
            })??;
        Ok(())
    }

    /// Stop every env process (their commands are killed).
    pub async fn shutdown(&self) {
        self.inner.envs.shutdown(Duration::from_secs(3)).await;
    }
}
