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
//! at start. A state file that cannot be used at start never stops the
//! agent: `installed.json` or `envs.json` that fails to parse or holds an
//! invalid name is renamed `NAME.damaged-<UTC time>` (the agent starts
//! without it); a token or fingerprint key shorter than 32 random bytes is
//! replaced. Each is logged with its reason and listed in `/v1/status`
//! (`damaged_state`), never with its content.
//!
//! Mutations (file writes, env var changes, state-file saves) run under one
//! in-process write lock so state files are saved in order and concurrent
//! requests never interleave; file writes also hold the directory flock of
//! `common::apply` against other processes. Nothing here logs a value.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use common::fingerprint::random_hex;
use common::fsutil::{
    atomic_write, atomic_write_if_changed, create_private_dir_all, read_optional, PathError,
};
use common::names::{validate_env_name, validate_env_var_name, validate_secret_name};
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
pub(crate) struct FileInstall {
    pub(crate) paths: Vec<String>,
    pub(crate) values: Values,
}

/// One env var a secret set, with the fingerprint of the value it set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct VarInstall {
    pub(crate) env: String,
    pub(crate) var: String,
    pub(crate) fingerprint: String,
}

/// Everything one secret installed on this node.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
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

/// `installed.json`. Unknown fields are ignored in every part of it (a
/// newer agent may add some); names are checked on load.
#[derive(Clone, Default, Serialize, Deserialize)]
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
    /// State files found damaged at start and moved aside.
    pub(crate) damaged: Vec<Damaged>,
    pub(crate) metrics: Arc<crate::pull::metrics::Metrics>,
    /// The placement policy, built once at start (its reserved dirs
    /// canonicalized then, not on every request).
    pub(crate) policy: common::policy::Policy,
    /// Home as the kernel names it (links above it resolved), for policy
    /// checks on resolved paths; computed once at start.
    pub(crate) canon_home: PathBuf,
    /// Files found unchanged, by secret (`crate::verified`).
    pub(crate) verified: crate::verified::Verified,
    /// Session secrets served on `/v1/credentials` (`crate::credentials`).
    pub(crate) credentials: Arc<crate::credentials::Credentials>,
}

/// A state file that could not be used at start: moved aside (`moved_to`;
/// `None` for the token and fingerprint key, which are replaced and not
/// kept), with why. Shown in `/v1/status`; never holds content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Damaged {
    pub(crate) file: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) moved_to: Option<String>,
    pub(crate) reason: String,
}

/// Why a JSON state file does not parse: the kind of problem and where,
/// never the content (serde's data errors can quote it).
pub(crate) fn json_reason(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let what = match e.classify() {
        Category::Syntax => "not valid JSON",
        Category::Eof => "truncated JSON",
        Category::Data => "valid JSON of the wrong shape (a field has the wrong type)",
        Category::Io => "unreadable",
    };
    format!("{what} at line {} column {}", e.line(), e.column())
}

/// Load a state file with `parse`. A file that cannot be read as text or
/// fails `parse` is renamed `NAME.damaged-<UTC time>`, logged (name and
/// reason, no content) and listed in `damaged`; the agent then starts with
/// `T::default()` for it instead of refusing to start.
fn load_or_move_aside<T: Default>(
    path: &Path,
    parse: impl FnOnce(&str) -> Result<T, String>,
    damaged: &mut Vec<Damaged>,
) -> Result<T, StartError> {
    let reason = match read_optional(path) {
        Ok(None) => return Ok(T::default()),
        Ok(Some(text)) => match parse(text.expose_secret()) {
            Ok(value) => return Ok(value),
            Err(reason) => reason,
        },
        Err(e) => format!("unreadable: {e}"),
    };
    let stamp = crate::audit::rfc3339_now().replace(':', "");
    let aside = path.with_file_name(format!(
        "{}.damaged-{stamp}",
        path.file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
    ));
    std::fs::rename(path, &aside).map_err(|source| StartError::Io {
        what: "move aside damaged state file",
        path: path.display().to_string(),
        source,
    })?;
    tracing::error!(
        file = %path.display(),
        moved_to = %aside.display(),
        %reason,
        "damaged state file moved aside; starting without it"
    );
    damaged.push(Damaged {
        file: path.display().to_string(),
        moved_to: Some(aside.display().to_string()),
        reason,
    });
    Ok(T::default())
}

/// Parse `installed.json` and check its secret, env and var names.
fn parse_installed(text: &str) -> Result<Installed, String> {
    let installed: Installed = serde_json::from_str(text).map_err(|e| json_reason(&e))?;
    for (name, record) in &installed.secrets {
        validate_secret_name(name).map_err(|e| e.to_string())?;
        for var in &record.vars {
            validate_env_name(&var.env).map_err(|e| e.to_string())?;
            validate_env_var_name(&var.var).map_err(|e| e.to_string())?;
        }
    }
    Ok(installed)
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

/// Whether `text` holds at least 32 random bytes: 64+ hex digits, or 43+
/// base64 (standard or URL-safe) characters.
fn strong_enough(text: &str) -> bool {
    let hex = text.len() >= 64 && text.bytes().all(|b| b.is_ascii_hexdigit());
    let b64 = text.trim_end_matches('=');
    let base64 = b64.len() >= 43
        && b64
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'-' | b'_'));
    hex || base64
}

/// Read a private file holding at least 32 random bytes (hex or base64),
/// creating it (0600) when missing; one that is empty, unreadable or too
/// short is replaced with a fresh random value, logged and listed in
/// `damaged` (its content is neither logged nor kept).
fn private_random(path: &Path, damaged: &mut Vec<Damaged>) -> Result<SecretText, StartError> {
    let reason = match read_optional(path) {
        Ok(None) => None,
        Ok(Some(text)) => {
            let trimmed = text.expose_secret().trim();
            if strong_enough(trimmed) {
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
            Some(if trimmed.is_empty() {
                "empty".to_owned()
            } else {
                "shorter than 32 random bytes (64 hex digits or 43 base64 characters)".to_owned()
            })
        }
        Err(e) => Some(format!("unreadable: {e}")),
    };
    if let Some(reason) = reason {
        tracing::warn!(file = %path.display(), %reason, "replacing it with a new random value");
        damaged.push(Damaged {
            file: path.display().to_string(),
            moved_to: None,
            reason: format!("{reason}; replaced with a new random value"),
        });
        // A directory in its place cannot be renamed over.
        if path.is_dir() {
            std::fs::remove_dir_all(path).map_err(|source| StartError::Io {
                what: "remove",
                path: path.display().to_string(),
                source,
            })?;
        }
    }
    let fresh = SecretText::new(random_hex(32));
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
        let mut damaged = vec![];
        let token = private_random(&dir.join("token"), &mut damaged)?;
        let fingerprint_key = private_random(&dir.join("fingerprint.key"), &mut damaged)?;
        let installed_path = dir.join("installed.json");
        let installed = load_or_move_aside(&installed_path, parse_installed, &mut damaged)?;
        let saved_envs = load_or_move_aside(
            &dir.join("envs.json"),
            crate::envs::parse_envs,
            &mut damaged,
        )?;
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
            saved_envs,
            Arc::clone(&write_lock),
            config.max_envs,
        );
        envs.start_all().await?;
        let credentials = Arc::new(crate::credentials::Credentials::open(
            &dir,
            &config.home,
            config.listen.port(),
        )?);
        crate::credentials::spawn_sweeper(Arc::clone(&credentials));
        let policy = crate::install::policy(&config);
        let canon_home = config
            .home
            .canonicalize()
            .unwrap_or_else(|_| config.home.clone());
        Ok(Self {
            inner: Arc::new(Inner {
                policy,
                canon_home,
                verified: Default::default(),
                credentials,
                config,
                token,
                fingerprint_key,
                installed: Mutex::new(installed),
                installed_path,
                write_lock,
                envs,
                audit,
                damaged,
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

    /// This node's fingerprint key, as the HMAC is keyed with it (the bytes
    /// of its hex text, as since the first release).
    pub(crate) fn fingerprint_key(&self) -> &[u8] {
        self.inner.fingerprint_key.expose_secret().as_bytes()
    }

    /// The installed records, locked (a lock poisoned by a panic is taken
    /// as it is: every change to it is made whole or undone).
    pub(crate) fn installed(&self) -> MutexGuard<'_, Installed> {
        self.inner
            .installed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Change the installed records with `f` and save `installed.json`
    /// before anyone is told: when saving fails the change is undone in
    /// memory too, and the error says nothing was recorded. Call with the
    /// write lock held.
    pub(crate) async fn update_installed<R>(
        &self,
        f: impl FnOnce(&mut Installed) -> R,
    ) -> Result<R, StartError> {
        let (before, out) = {
            let mut installed = self.installed();
            let before = installed.clone();
            (before, f(&mut installed))
        };
        match self.save_installed().await {
            Ok(()) => Ok(out),
            Err(e) => {
                *self.installed() = before;
                Err(e)
            }
        }
    }

    /// Write `installed.json` (atomic, 0600). Call with the write lock held.
    async fn save_installed(&self) -> Result<(), StartError> {
        let path = self.inner.installed_path.clone();
        let text = {
            let installed = self.installed();
            serde_json::to_string_pretty(&*installed).map_err(|e| StartError::State {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?
        };
        let text = SecretText::new(text);
        let shown = path.display().to_string();
        tokio::task::spawn_blocking(move || {
            atomic_write_if_changed(&path, text.expose_secret().as_bytes()).map(drop)
        })
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
