//! Secret zero and tokens of a pulling agent, kept in `<state-dir>/pull/`
//! (dir 0700, files 0600, atomic):
//!
//! - `secret_id`: the AppRole secret_id, unwrapped ONCE from the bundle's
//!   wrapping token at first start; `bundle.id` names which bundle it came
//!   from (an HMAC of the wrapping token) so a new bundle is unwrapped again.
//!   A wrapping token already used (by anyone) is refused with an error that
//!   says so: that is the point of wrapping.
//! - `token.json`: the current batch token and when it expires; a new one is
//!   obtained by logging in again with the kept secret_id well before then
//!   (batch tokens are not renewable, and logins of batch tokens write nothing
//!   on the store).
//!
//! - logins: a login answered busy (a conflicting write on the active
//!   node) is retried with the client's full-jitter exponential backoff;
//!   one that timed out fails the poll, which backs off.
//!
//! Nothing here logs a secret_id or a token; errors name files and URLs.

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::fingerprint::fingerprint;
use common::fleet::Bundle;
use common::fsutil::{atomic_write, read_optional};
use common::openbao::{Client, Retry};
use common::SecretText;
use serde::{Deserialize, Serialize};

use super::{now_unix, PullError};

/// A batch token and its expiry.
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct Token {
    pub(crate) token: common::SecretValue,
    /// Seconds since the epoch.
    pub(crate) expires_at: u64,
    /// Its TTL when issued, seconds.
    pub(crate) ttl: u64,
}

impl Token {
    /// Whether it should be replaced now (a third of its life left, or less).
    pub(crate) fn is_due(&self, now: u64) -> bool {
        now + self.ttl / 3 >= self.expires_at
    }

    /// The token text, for the `X-Vault-Token` header.
    pub(crate) fn expose_secret(&self) -> &str {
        self.token.expose_str().unwrap_or_default()
    }
}

/// Files under `<state-dir>/pull`.
#[derive(Debug, Clone)]
pub(crate) struct CredFiles {
    pub(crate) dir: PathBuf,
}

impl CredFiles {
    fn secret_id(&self) -> PathBuf {
        self.dir.join("secret_id")
    }
    fn bundle_id(&self) -> PathBuf {
        self.dir.join("bundle.id")
    }
    fn token(&self) -> PathBuf {
        self.dir.join("token.json")
    }

    /// The kept token, when one is there and readable.
    pub(crate) fn load_token(&self) -> Option<Token> {
        let text = read_optional(&self.token()).ok()??;
        serde_json::from_str(text.expose_secret()).ok()
    }

    /// Keep a token (0600).
    pub(crate) fn save_token(&self, token: &Token) -> Result<(), PullError> {
        let text = SecretText::new(serde_json::to_string(token).expect("token serializes"));
        atomic_write(&self.token(), text.expose_secret().as_bytes())?;
        Ok(())
    }

    /// Forget the kept token (it was refused).
    pub(crate) fn drop_token(&self) {
        let _ = std::fs::remove_file(self.token());
    }
}

/// The secret_id for `bundle`: the reusable one it carries, the one kept
/// from an earlier unwrap of this same bundle, or unwrapped now (once).
pub(crate) async fn secret_id(
    bundle: &Bundle,
    bundle_path: &Path,
    files: Option<&CredFiles>,
    client: &Client,
) -> Result<SecretText, PullError> {
    if let Some(sid) = &bundle.secret_id {
        return Ok(SecretText::new(
            sid.expose_str().unwrap_or_default().to_owned(),
        ));
    }
    let Some(wrapped) = &bundle.wrapped_secret_id else {
        return Err(PullError::Bundle {
            path: bundle_path.display().to_string(),
            reason: "it holds neither wrapped_secret_id nor secret_id".into(),
        });
    };
    let Some(files) = files else {
        return Err(PullError::Bundle {
            path: bundle_path.display().to_string(),
            reason: "a wrapped bundle needs a state dir to keep its secret_id".into(),
        });
    };
    let wrapped = wrapped.expose_str().unwrap_or_default();
    let id = fingerprint(b"rh-fleet-bundle-id", wrapped.as_bytes());
    let kept_id = read_optional(&files.bundle_id())?;
    if kept_id.as_ref().map(|t| t.expose_secret().trim()) == Some(id.as_str()) {
        if let Some(sid) = read_optional(&files.secret_id())? {
            let sid = sid.expose_secret().trim().to_owned();
            if !sid.is_empty() {
                return Ok(SecretText::new(sid));
            }
        }
    }
    let Some(data) = client
        .unwrap("unwrap the bundle's secret_id", wrapped)
        .await?
    else {
        let name = bundle.name.clone();
        return Err(PullError::AlreadyUnwrapped {
            path: bundle_path.display().to_string(),
            cluster: bundle.cluster.clone(),
            revoke: name
                .clone()
                .unwrap_or_else(|| "--bundle <your copy of this bundle>".into()),
            name: name.unwrap_or_else(|| "NAME".into()),
        });
    };
    let sid = match data.expose_secret()["secret_id"].as_str() {
        Some(s) => SecretText::new(s.to_owned()),
        None => {
            return Err(PullError::Bundle {
                path: bundle_path.display().to_string(),
                reason: "its wrapping token does not wrap an AppRole secret_id".into(),
            })
        }
    };
    // Keep it before anything else: the wrapping token is spent now.
    atomic_write(&files.secret_id(), sid.expose_secret().as_bytes())?;
    atomic_write(&files.bundle_id(), id.as_bytes())?;
    tracing::info!(cluster = %bundle.cluster, "bundle unwrapped; secret_id kept in the state dir");
    Ok(sid)
}

/// How a login the store answered busy is retried: up to 8 attempts,
/// "full jitter" from 200 ms doubling up to 20 s, none started later than
/// 30 s after the first (each attempt may itself wait out the 10 s request
/// timeout, and a booting node must still answer its boot unit in time:
/// boot spread <= 50 s, unit limit 120 s).
const LOGIN_RETRY: Retry = Retry {
    tries: 8,
    budget: Duration::from_secs(30),
    base: Duration::from_millis(200),
    cap: Duration::from_secs(20),
};

/// Log in with the AppRole: a fresh batch token. A login the store answered
/// busy is retried ([`LOGIN_RETRY`]): a login with a use-limited secret_id
/// (a launch bundle) is a read-modify-write of that one secret_id entry on
/// the active node, inside a storage transaction, so logins of nodes
/// booting together conflict and OpenBao answers `500 transaction commit
/// failed` to all but one of them. Refusals (4xx) and unreachable nodes
/// are not retried here (the poll backoff handles them).
pub(crate) async fn login(
    bundle: &Bundle,
    secret_id: &SecretText,
    client: &Client,
) -> Result<Token, PullError> {
    let login = client
        .approle_login(
            &bundle.auth_mount,
            &bundle.role_id,
            secret_id.expose_secret(),
            &LOGIN_RETRY,
        )
        .await
        .map_err(|e| match e {
            e if e.is_transport() => PullError::Store(e),
            e => PullError::LoginRefused(e.to_string()),
        })?;
    Ok(Token {
        token: common::SecretValue::from_string(login.token.expose_secret().to_owned()),
        expires_at: now_unix() + login.ttl,
        ttl: login.ttl,
    })
}
