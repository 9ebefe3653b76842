//! Session secrets on the node: minted credentials (`common::session`) held
//! in memory and in `<state-dir>/credentials/sessions.json` (0600, atomic),
//! so a restarted agent keeps serving them until they expire, and never
//! after: a credential past its expiry is answered 503 and wiped from
//! memory and the state file by the sweeper (`spawn_sweeper`). A refresh replaces
//! a session in one swap, so a client sees the old or the new credential,
//! never an error.
//!
//! Who may read them: the ECS route takes the raw token of an env the
//! session is exposed in (`<state-dir>/credentials/tokens/<env>`, 0600,
//! named by `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE` in that env's
//! processes) or the helper token (`credentials/helper.token`, read by
//! `agent credentials aws`). Neither is the agent's API token, and the API
//! token is not accepted here: a job holding its env's token cannot reach
//! `/v1/envs/*/run`. The GCE metadata protocol carries no token: it is
//! answered to the node user's own connections only (`peer`).
//!
//! Module layout: this file owns the store and its lookups (no HTTP types);
//! the install service (`crate::install`, its `session` part) puts
//! sessions in place (env vars, the `~/.aws/config` profile) as it installs
//! every secret, for `/v1/sync` and the pull loop alike; `aws_ecs` and
//! `gce_metadata` shape the answers; [`helper`] is the `agent credentials
//! aws` client. Nothing here logs or echoes a credential.

pub(crate) mod aws_ecs;
pub(crate) mod gce_metadata;
pub mod helper;
pub(crate) mod peer;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::RwLock;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use common::fingerprint::random_hex;
use common::fsutil::{atomic_write, create_private_dir_all, read_optional, PathError};
use common::names::{validate_env_name, validate_secret_name};
use common::secret_value::ct_eq_bytes;
use common::session::{now_secs, Minted, SessionKind, SessionStatus};
use common::time::rfc3339;
use common::{SecretText, SecretValue};

/// Why a credential is not answered. Messages name secrets and times only.
#[derive(Debug, Error)]
pub(crate) enum CredError {
    #[error("missing or wrong credentials token")]
    Unauthorized,
    #[error("no session secret {0} on this node")]
    Unknown(String),
    #[error("session secret {name} is a {kind} session")]
    WrongKind { name: String, kind: &'static str },
    #[error("session secret {name} expired at {expired_at}; it is re-minted by `controller sync` on the user's machine")]
    Expired { name: String, expired_at: String },
    #[error("no gcp session secret on this node")]
    NoGcp,
}

/// One session as held: the minted credential, the envs whose processes
/// reach it, the AWS profile pointed at the helper. Saved as is.
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct Held {
    pub(crate) minted: Minted,
    #[serde(default)]
    pub(crate) envs: BTreeSet<String>,
    #[serde(default)]
    pub(crate) profile: Option<String>,
    /// Unix seconds the agent installed it.
    #[serde(default)]
    pub(crate) installed_at: i64,
}

impl Held {
    fn expired(&self, now: i64) -> bool {
        now >= self.minted.expires_at
    }
}

/// `sessions.json`.
#[derive(Default, Serialize, Deserialize)]
struct Saved {
    #[serde(default)]
    sessions: BTreeMap<String, Held>,
}

/// The session secrets of this agent and the tokens that read them.
pub(crate) struct Credentials {
    dir: PathBuf,
    state_dir: PathBuf,
    home: PathBuf,
    sessions: RwLock<BTreeMap<String, Held>>,
    helper_token: SecretText,
    env_tokens: RwLock<BTreeMap<String, SecretText>>,
    /// The port clients reach the agent on (the bound one once known).
    port: AtomicU16,
    /// Serialises changes and saves of `sessions.json` (an install, a
    /// revoke and the expiry sweep each copy, save and swap the map).
    change: std::sync::Mutex<()>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("dir", &self.dir)
            .field("sessions", &self.names())
            .finish_non_exhaustive()
    }
}

fn read_lock<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}

fn write_lock<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

/// A private random token file: read when it holds 64 hex digits, else
/// (re)created.
fn token_file(path: &Path) -> Result<SecretText, PathError> {
    if let Some(text) = read_optional(path)? {
        let t = text.expose_secret().trim();
        if t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(SecretText::new(t.to_owned()));
        }
    }
    let fresh = SecretText::new(random_hex(32));
    atomic_write(path, fresh.expose_secret().as_bytes())?;
    Ok(fresh)
}

impl Credentials {
    /// Open `<state-dir>/credentials` (0700): the helper token, the env
    /// tokens and the saved sessions (a damaged file is set aside by the
    /// caller's rules: here, one that does not parse starts empty and is
    /// overwritten by the next install; expired ones are wiped at once).
    pub(crate) fn open(state_dir: &Path, home: &Path, port: u16) -> Result<Self, PathError> {
        let dir = state_dir.join("credentials");
        create_private_dir_all(&dir.join("tokens"))?;
        let helper_token = token_file(&dir.join("helper.token"))?;
        let mut env_tokens = BTreeMap::new();
        if let Ok(entries) = std::fs::read_dir(dir.join("tokens")) {
            for entry in entries.flatten() {
                let Some(env) = entry.file_name().to_str().map(str::to_owned) else {
                    continue;
                };
                if validate_env_name(&env).is_ok() {
                    env_tokens.insert(env, token_file(&entry.path())?);
                }
            }
        }
        let saved: Saved = match read_optional(&dir.join("sessions.json"))? {
            Some(text) => serde_json::from_str(text.expose_secret()).unwrap_or_else(|e| {
                tracing::error!(reason = %crate::state::json_reason(&e), "credentials/sessions.json is damaged; starting without its sessions");
                Saved::default()
            }),
            None => Saved::default(),
        };
        let sessions = saved
            .sessions
            .into_iter()
            .filter(|(name, _)| validate_secret_name(name).is_ok())
            .collect();
        let creds = Self {
            dir,
            state_dir: state_dir.to_path_buf(),
            home: home.to_path_buf(),
            sessions: RwLock::new(sessions),
            helper_token,
            env_tokens: RwLock::new(env_tokens),
            port: AtomicU16::new(port),
            change: std::sync::Mutex::new(()),
        };
        creds.wipe_expired(now_secs())?;
        Ok(creds)
    }

    /// `<state-dir>/credentials`.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// The agent's state dir (for the helper's command line).
    pub(crate) fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// The port clients reach the agent on.
    pub(crate) fn port(&self) -> u16 {
        self.port.load(Ordering::Acquire)
    }

    /// The agent now listens on `port` (known only after bind).
    pub(crate) fn set_port(&self, port: u16) {
        self.port.store(port, Ordering::Release);
    }

    /// Session names.
    pub(crate) fn names(&self) -> Vec<String> {
        read_lock(&self.sessions).keys().cloned().collect()
    }

    /// A copy of one session.
    pub(crate) fn get(&self, name: &str) -> Option<Held> {
        read_lock(&self.sessions).get(name).cloned()
    }

    /// The path of env `env`'s token file, creating the token when new.
    pub(crate) fn env_token_path(&self, env: &str) -> Result<PathBuf, PathError> {
        let path = self.dir.join("tokens").join(env);
        if !read_lock(&self.env_tokens).contains_key(env) {
            let token = token_file(&path)?;
            write_lock(&self.env_tokens).insert(env.to_owned(), token);
        }
        Ok(path)
    }

    /// Whether `presented` may read session `name` (held as `held`): the
    /// helper token, or the token of an env it is exposed in. Constant time
    /// per candidate.
    fn may_read(&self, presented: &[u8], held: &Held) -> bool {
        if presented.is_empty() {
            return false;
        }
        let mut ok = ct_eq_bytes(presented, self.helper_token.expose_secret().as_bytes());
        let tokens = read_lock(&self.env_tokens);
        for env in &held.envs {
            if let Some(t) = tokens.get(env) {
                ok |= ct_eq_bytes(presented, t.expose_secret().as_bytes());
            }
        }
        ok
    }

    /// The credential of AWS session `name` for a caller presenting
    /// `token`: 401 before anything about the session is told, then
    /// unknown, wrong kind or expired.
    pub(crate) fn aws(&self, name: &str, token: &[u8]) -> Result<Minted, CredError> {
        let sessions = read_lock(&self.sessions);
        let held = match sessions.get(name) {
            Some(h) if self.may_read(token, h) => h,
            Some(_) => return Err(CredError::Unauthorized),
            None if ct_eq_bytes(token, self.helper_token.expose_secret().as_bytes()) => {
                return Err(CredError::Unknown(name.to_owned()))
            }
            None => return Err(CredError::Unauthorized),
        };
        if held.minted.kind != SessionKind::Aws {
            return Err(CredError::WrongKind {
                name: name.to_owned(),
                kind: held.minted.kind.as_str(),
            });
        }
        if held.expired(now_secs()) {
            return Err(CredError::Expired {
                name: name.to_owned(),
                expired_at: rfc3339(held.minted.expires_at, None),
            });
        }
        Ok(held.minted.clone())
    }

    /// The GCP session the metadata server answers for (at most one is
    /// held; the install service refuses a second one).
    pub(crate) fn gcp(&self) -> Result<(String, Minted), CredError> {
        let sessions = read_lock(&self.sessions);
        let (name, held) = sessions
            .iter()
            .find(|(_, h)| h.minted.kind == SessionKind::Gcp)
            .ok_or(CredError::NoGcp)?;
        if held.expired(now_secs()) {
            return Err(CredError::Expired {
                name: name.clone(),
                expired_at: rfc3339(held.minted.expires_at, None),
            });
        }
        Ok((name.clone(), held.minted.clone()))
    }

    /// Put `held` in place of `name` (saved first, then swapped in).
    pub(crate) fn put(&self, name: &str, held: Held) -> Result<(), PathError> {
        let _change = self.change.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = read_lock(&self.sessions).clone();
        next.insert(name.to_owned(), held);
        self.save(&next)?;
        *write_lock(&self.sessions) = next;
        Ok(())
    }

    /// Drop session `name`; what it was, if held.
    pub(crate) fn remove(&self, name: &str) -> Result<Option<Held>, PathError> {
        let _change = self.change.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = read_lock(&self.sessions).clone();
        let Some(old) = next.remove(name) else {
            return Ok(None);
        };
        self.save(&next)?;
        *write_lock(&self.sessions) = next;
        Ok(Some(old))
    }

    fn save(&self, sessions: &BTreeMap<String, Held>) -> Result<(), PathError> {
        #[derive(Serialize)]
        struct SavedRef<'a> {
            sessions: &'a BTreeMap<String, Held>,
        }
        let text =
            SecretText::new(serde_json::to_string(&SavedRef { sessions }).unwrap_or_default());
        atomic_write(
            &self.dir.join("sessions.json"),
            text.expose_secret().as_bytes(),
        )?;
        let index: BTreeMap<&String, (&str, i64)> = sessions
            .iter()
            .map(|(n, h)| (n, (h.minted.kind.as_str(), h.minted.expires_at)))
            .collect();
        let index = serde_json::to_string(&index).unwrap_or_default();
        common::fsutil::atomic_write_if_changed(&self.dir.join("index.json"), index.as_bytes())?;
        Ok(())
    }

    /// Wipe the credential of every session past its expiry, in memory and
    /// in `sessions.json` (its name, kind and times stay for the 503 and
    /// `status`). Returns how many were wiped.
    pub(crate) fn wipe_expired(&self, now: i64) -> Result<usize, PathError> {
        let _change = self.change.lock().unwrap_or_else(|e| e.into_inner());
        let wiped: Vec<String> = read_lock(&self.sessions)
            .iter()
            .filter(|(_, h)| h.expired(now) && !h.minted.credential.expose_secret().is_null())
            .map(|(n, _)| n.clone())
            .collect();
        if wiped.is_empty() {
            return Ok(0);
        }
        let mut next = read_lock(&self.sessions).clone();
        for name in &wiped {
            if let Some(h) = next.get_mut(name) {
                h.minted.credential = SecretValue::new(serde_json::Value::Null);
            }
        }
        self.save(&next)?;
        *write_lock(&self.sessions) = next;
        for name in &wiped {
            tracing::info!(secret = %name, "session secret expired: its credential is wiped");
        }
        Ok(wiped.len())
    }

    /// `GET /v1/status`'s `sessions`.
    pub(crate) fn status(&self) -> Vec<SessionStatus> {
        let now = now_secs();
        read_lock(&self.sessions)
            .iter()
            .map(|(name, h)| SessionStatus {
                name: name.clone(),
                kind: h.minted.kind,
                source: h.minted.source.clone(),
                minted_at: rfc3339(h.minted.minted_at, None),
                expires_at: rfc3339(h.minted.expires_at, None),
                expired: h.expired(now),
                envs: h.envs.iter().cloned().collect(),
                profile: h.profile.clone(),
                shadowed: h
                    .profile
                    .as_deref()
                    .map(|p| aws_ecs::shadowed(&self.home, p))
                    .unwrap_or_default(),
            })
            .collect()
    }
}

/// Wipe expired credentials every 15 s until the agent stops (a task of
/// the runtime; the answers never depend on it: each lookup checks expiry).
pub(crate) fn spawn_sweeper(creds: std::sync::Arc<Credentials>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(15));
        loop {
            tick.tick().await;
            if let Err(e) = creds.wipe_expired(now_secs()) {
                tracing::warn!(error = %e, "could not wipe expired session credentials");
            }
        }
    });
}
