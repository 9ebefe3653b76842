//! Wire types between the controller and the agent (JSON over HTTP).
//! Requests carry values (the point of the system); responses never do:
//! they carry names, paths, keys, statuses and keyed fingerprints only.
//! Types that hold values implement `Debug` by hand, without them.
//!
//! A `POST /v1/sync` item is `{"secret": {...}, "placement": {"files":
//! [{"path": "~/.aws/credentials"}, ...], "env": {"env": "base_env", "vars":
//! {"VAR": "value_key"}}}}`: the sender decided where the secret goes
//! ([`crate::placement::place`]) and the agent confines, checks
//! ([`crate::placement::verify`]) and applies it. The older item
//! `{"secret", "path", "env"}` (no `placement`) is still accepted: the agent
//! places it itself with [`crate::placement::PlaceOpts::request`]. Published
//! fleet items use that older form, so each node places them under its own
//! policy.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

pub use crate::apply::{FileOutcome, FileStatus};
use crate::model::Secret;
use crate::placement::Placement;
use crate::secret_value::SecretValue;
use crate::session::{SessionItem, SessionStatus};

/// The env that env-var secrets go to when none is named.
pub const DEFAULT_ENV: &str = "base_env";
/// The agent's default port.
pub const DEFAULT_AGENT_PORT: u16 = 32300;
/// Seconds a `run` command may take when the request names no limit.
pub const DEFAULT_RUN_TIMEOUT_SECS: u64 = 600;

/// `POST /v1/secrets/_write_to_file`.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriteToFileRequest {
    pub secret: Secret,
    /// Where to write on the node (`~/...` or relative to home); default: the secret's path,
    /// else the provider's default file.
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub overwrite: bool,
    #[serde(default)]
    pub dry_run: bool,
}

/// `POST /v1/envs/{env}/_set_env_vars`.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetEnvVarsRequest {
    /// Variable name -> value.
    pub vars: BTreeMap<String, SecretValue>,
    /// The secret these vars belong to (recorded for status and revoke).
    #[serde(default)]
    pub secret: Option<String>,
    #[serde(default)]
    pub dry_run: bool,
}

/// One secret in a `POST /v1/sync`: where it goes is its `placement`; or,
/// in the older form, written to `path` when set, its env vars set in `env`
/// when set (both may be set; with neither, its own file if it has one, else
/// its vars in `base_env`). A placement comes without `path` and `env`.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncItem {
    pub secret: Secret,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub env: Option<String>,
    /// Absent from the older form (so a published fleet item, and its
    /// fingerprint, are as they were).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<Placement>,
    /// A session secret's minted credential and where the node exposes it
    /// (`crate::session`); the item then has no values, path or placement.
    /// Sent only to agents announcing [`FEATURE_SESSIONS`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<SessionItem>,
}

impl SyncItem {
    /// An item carrying the placement decided for it.
    pub fn placed(secret: Secret, placement: Placement) -> Self {
        Self {
            secret,
            path: None,
            env: None,
            placement: Some(placement),
            session: None,
        }
    }

    /// A session secret's item: its name and provider, no values.
    pub fn session(name: &str, session: SessionItem) -> Self {
        let mut secret = Secret::base(name, Default::default());
        secret.provider = Some(session.minted.kind.as_str().to_owned());
        Self {
            secret,
            path: None,
            env: None,
            placement: None,
            session: Some(session),
        }
    }

    /// The older form of the same item: the first file's path and the env's
    /// name, placed again by whoever applies it (a fleet node, under its own
    /// policy).
    pub fn as_request(&self) -> Self {
        let (path, env) = match &self.placement {
            Some(p) => p.as_request(),
            None => (self.path.clone(), self.env.clone()),
        };
        Self {
            secret: self.secret.clone(),
            path,
            env,
            placement: None,
            session: self.session.clone(),
        }
    }
}

/// `POST /v1/sync`.
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncRequest {
    pub items: Vec<SyncItem>,
    #[serde(default)]
    pub overwrite: bool,
    #[serde(default)]
    pub dry_run: bool,
}

/// What happened to one secret on one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Written,
    Unchanged,
    Conflict,
    /// A dry run: it would be written (or removed).
    WouldWrite,
    /// It would be written, but held back by a conflict in another of its
    /// files. (A secret's status is `conflict` then; a file's is `blocked`.)
    Blocked,
    Removed,
    Failed,
}

impl Status {
    /// The word shown to users.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Written => "written",
            Status::Unchanged => "unchanged",
            Status::Conflict => "conflict",
            Status::WouldWrite => "would write",
            Status::Blocked => "blocked",
            Status::Removed => "removed",
            Status::Failed => "failed",
        }
    }

    /// How much a status says about its secret, most first: conflict,
    /// failed, written, removed, would write, blocked, unchanged. A secret's
    /// parts (files, vars) sum to their highest ([`Status::combine`]), and
    /// so do its files ([`crate::apply::overall`]).
    pub fn rank(self) -> u8 {
        match self {
            Status::Conflict => 6,
            Status::Failed => 5,
            Status::Written => 4,
            Status::Removed => 3,
            Status::WouldWrite => 2,
            Status::Blocked => 1,
            Status::Unchanged => 0,
        }
    }

    /// The status of a secret made of these parts (`unchanged` for none).
    pub fn combine(parts: impl IntoIterator<Item = Status>) -> Status {
        parts
            .into_iter()
            .max_by_key(|s| s.rank())
            .unwrap_or(Status::Unchanged)
    }
}

impl From<FileStatus> for Status {
    fn from(s: FileStatus) -> Self {
        match s {
            FileStatus::Written => Status::Written,
            FileStatus::Unchanged => Status::Unchanged,
            FileStatus::Conflict => Status::Conflict,
            FileStatus::WouldWrite => Status::WouldWrite,
            FileStatus::Blocked => Status::Blocked,
            FileStatus::Removed => Status::Removed,
        }
    }
}

/// The result for one secret: its files, its vars, and an error message
/// (names only) when it failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretResult {
    pub name: String,
    pub status: Status,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<FileOutcome>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vars: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Response of `POST /v1/sync` (and of `_write_to_file`/`_set_env_vars`, with one result).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncResponse {
    pub results: Vec<SecretResult>,
    #[serde(default)]
    pub dry_run: bool,
}

impl SyncResponse {
    /// The answer of a route that handles one secret (`_write_to_file`,
    /// `_set_env_vars`, revoke): its one result.
    pub fn one(result: SecretResult, dry_run: bool) -> Self {
        Self {
            results: vec![result],
            dry_run,
        }
    }
}

/// `POST /v1/envs/{env}/run`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunRequest {
    pub argv: Vec<String>,
    /// Seconds before the command is killed (default: the agent's run timeout).
    #[serde(default)]
    pub timeout_secs: Option<u64>,
}

/// The outcome of a command run in an env.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunResponse {
    /// Exit status; 128 + signal number when killed by a signal.
    pub exit_code: i32,
    pub stdout: String,
    pub stderr: String,
    #[serde(default)]
    pub timed_out: bool,
}

/// `GET /healthz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    pub status: String,
    pub version: String,
    /// With `GET /healthz?challenge=HEX`: `common::proof::agent_proof` of the
    /// agent's token and the challenge, so the caller knows it talks to the
    /// token's holder before sending the token. Absent otherwise (and from
    /// older agents).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proof: Option<String>,
    /// What this agent understands beyond the first wire format, e.g.
    /// [`FEATURE_PLACEMENT`]. Absent from older agents: a controller sends
    /// them only what they parse.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub features: Vec<String>,
}

/// In [`Health::features`]: `/v1/sync` items may carry a `placement` (an
/// agent without it refuses the field, so it gets the older item form).
pub const FEATURE_PLACEMENT: &str = "placement";
/// In [`Health::features`]: `/v1/sync` items may carry a `session`
/// (`crate::session`), served on `/v1/credentials/...`.
pub const FEATURE_SESSIONS: &str = "sessions";

impl Health {
    /// Whether the agent announced `feature`.
    pub fn has(&self, feature: &str) -> bool {
        self.features.iter().any(|f| f == feature)
    }
}

impl SyncRequest {
    /// The same request for an agent that knows no placements: every item
    /// in its older form, placed again by the agent.
    pub fn without_placements(&self) -> Self {
        Self {
            items: self.items.iter().map(SyncItem::as_request).collect(),
            overwrite: self.overwrite,
            dry_run: self.dry_run,
        }
    }
}

/// One file a secret installed, with a keyed fingerprint of what it wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstalledFile {
    pub path: String,
    pub keys: Vec<String>,
    pub fingerprint: String,
}

/// One env var a secret set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstalledVar {
    pub env: String,
    pub var: String,
    pub fingerprint: String,
}

/// What one secret installed on a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstalledSecret {
    pub name: String,
    #[serde(default)]
    pub provider: Option<String>,
    #[serde(default)]
    pub files: Vec<InstalledFile>,
    #[serde(default)]
    pub vars: Vec<InstalledVar>,
}

/// One env process on a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvStatus {
    pub name: String,
    pub vars: Vec<String>,
    #[serde(default)]
    pub pid: Option<u32>,
    pub running: bool,
}

/// `GET /v1/status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusResponse {
    pub version: String,
    pub secrets: Vec<InstalledSecret>,
    pub envs: Vec<EnvStatus>,
    /// Which key the fingerprints are under. Absent from agents that
    /// predate `?key=`: read as [`KeyedBy::Node`].
    #[serde(default)]
    pub fingerprints_keyed_by: KeyedBy,
    /// Session secrets served by the agent (absent from older agents).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sessions: Vec<SessionStatus>,
}

/// The key of the fingerprints in a [`StatusResponse`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyedBy {
    /// The node's own key: comparable on that node over time, not across nodes.
    #[default]
    Node,
    /// The key the caller sent (`GET /v1/status?key=HEX`): comparable across
    /// nodes and with the caller's own fingerprints of its local values
    /// (`common::fingerprint::{value_fingerprint, values_fingerprint}`).
    Request,
}

/// Query of `DELETE /v1/secrets/{name}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RevokeQuery {
    /// Only remove its vars from this env (default: everything it installed).
    #[serde(default)]
    pub env: Option<String>,
    #[serde(default)]
    pub dry_run: bool,
}

/// Every error body: `{"error": CODE, "message": TEXT}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    pub message: String,
}

macro_rules! debug_without_values {
    ($ty:ident { $($field:ident),* } hides $hidden:literal) => {
        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($ty))
                    $(.field(stringify!($field), &self.$field))*
                    .field($hidden, &"<redacted>")
                    .finish()
            }
        }
    };
}

debug_without_values!(WriteToFileRequest { secret, path, overwrite, dry_run } hides "values");
debug_without_values!(SyncItem { secret, path, env, placement, session } hides "values");
debug_without_values!(SyncRequest { items, overwrite, dry_run } hides "values");

impl fmt::Debug for SetEnvVarsRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SetEnvVarsRequest")
            .field("vars", &self.vars.keys().collect::<Vec<_>>())
            .field("secret", &self.secret)
            .field("dry_run", &self.dry_run)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret_value::values_from;

    #[test]
    fn requests_debug_without_values() {
        let mut secret = Secret::base("openai", values_from([("api_key", "sk-live-xyz")]));
        secret.provider = Some("openai".into());
        let req = SyncRequest {
            items: vec![SyncItem {
                secret,
                path: None,
                env: Some("base_env".into()),
                placement: None,
                session: None,
            }],
            overwrite: false,
            dry_run: false,
        };
        let set = SetEnvVarsRequest {
            vars: [(
                "OPENAI_API_KEY".to_string(),
                SecretValue::from("sk-live-xyz"),
            )]
            .into(),
            secret: None,
            dry_run: false,
        };
        let out = format!("{req:?} {req:#?} {set:?} {set:#?}");
        assert!(!out.contains("sk-live-xyz"), "{out}");
        assert!(out.contains("OPENAI_API_KEY"));
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err = serde_json::from_str::<RunRequest>(r#"{"argv": ["x"], "bogus": 1}"#);
        assert!(err.is_err());
    }
}
