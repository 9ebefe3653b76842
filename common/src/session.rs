//! Session secrets: credentials that expire. A session secret is saved on
//! the user's machine as a [`SessionSpec`] (how to mint: profile, role,
//! lifetime; never a credential), minted there by the controller into a
//! [`Minted`] credential, and sent to the agents as the `session` of a
//! `POST /v1/sync` item ([`SessionItem`]), where the agent serves it until
//! [`Minted::expires_at`] and never after. Nodes never get the user's
//! refresh tokens, SSO cache or static keys: only what was minted.
//!
//! [`check_minted`] is the node's check of a minted credential that came
//! over the network or from the store (untrusted): kind, key set, lengths,
//! printable ASCII, an expiry in the future and at most
//! [`MAX_LIFETIME_SECS`] away. Nothing here logs; `Debug` of every type that
//! holds a credential prints `<redacted>`.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::secret_value::SecretValue;

/// What a session secret mints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionKind {
    /// STS credentials (access key id, secret access key, session token).
    Aws,
    /// A Google OAuth2 access token.
    Gcp,
}

impl SessionKind {
    /// `aws` or `gcp`: the provider id of its secrets.
    pub fn as_str(self) -> &'static str {
        match self {
            SessionKind::Aws => "aws",
            SessionKind::Gcp => "gcp",
        }
    }

    /// The kind for a provider id (`aws`, `gcp`), if it has sessions.
    pub fn of_provider(provider: &str) -> Option<Self> {
        match provider {
            "aws" => Some(SessionKind::Aws),
            "gcp" => Some(SessionKind::Gcp),
            _ => None,
        }
    }

    /// The keys a credential of this kind carries, all required.
    pub fn credential_keys(self) -> &'static [&'static str] {
        match self {
            SessionKind::Aws => &["access_key_id", "secret_access_key", "session_token"],
            SessionKind::Gcp => &["access_token"],
        }
    }
}

/// How to mint a session secret (saved in `~/.rh/secrets/NAME.json` as
/// `"session"`). Holds names and settings, never a credential.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionSpec {
    /// AWS: the profile of `~/.aws/config` to resolve (default: `AWS_PROFILE`, else `default`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// AWS: a role to assume with the profile's credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_arn: Option<String>,
    /// Requested lifetime in seconds (AWS GetSessionToken / AssumeRole).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_secs: Option<u64>,
    /// GCP: a service account to impersonate (IAM Credentials `generateAccessToken`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub impersonate: Option<String>,
    /// GCP: OAuth scopes of the minted token (default: cloud-platform).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    /// GCP: the ADC file to mint from (default: gcloud's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// How it was found: `sso`, `role`, `process`, `static` (detected
    /// profiles), absent for one created by hand.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detected: Option<String>,
}

/// A minted credential, as sent to the agents. `credential` holds the
/// secret part (see [`SessionKind::credential_keys`]); the rest is metadata.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Minted {
    pub kind: SessionKind,
    pub credential: SecretValue,
    /// Unix seconds: the agent serves it until then, never after.
    pub expires_at: i64,
    /// Unix seconds, on the minting machine.
    pub minted_at: i64,
    /// How it was minted: `get_session_token`, `assume_role`, `sso`,
    /// `role_profile`, `credential_process`, `refresh_token`, `impersonate`.
    pub source: String,
    /// AWS: the region of the profile (given to clients on the node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// GCP: the project (`project/project-id` on the metadata server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_id: Option<String>,
    /// GCP: the service account email (`default` for user credentials).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// GCP: the token's scopes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
}

impl fmt::Debug for Minted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Minted")
            .field("kind", &self.kind)
            .field("credential", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .field("minted_at", &self.minted_at)
            .field("source", &self.source)
            .field("region", &self.region)
            .field("project_id", &self.project_id)
            .field("account", &self.account)
            .field("scopes", &self.scopes)
            .finish()
    }
}

impl Minted {
    /// One string of the credential (`access_key_id`, `access_token`, ...).
    pub fn part(&self, key: &str) -> Option<&str> {
        self.credential.expose_secret().get(key)?.as_str()
    }

    /// Seconds it was minted for.
    pub fn lifetime_secs(&self) -> i64 {
        (self.expires_at - self.minted_at).max(0)
    }
}

/// The `session` of a `POST /v1/sync` item: a minted credential and where
/// the node exposes it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionItem {
    pub minted: Minted,
    /// The env whose processes get the container / metadata variables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
    /// AWS: the profile of the node's `~/.aws/config` that gets
    /// `credential_process = <agent> credentials aws --secret NAME`
    /// (none on the `local` cluster: the user's own files stay as they are).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
}

/// One session secret on a node, as `GET /v1/status` lists it. No credential.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionStatus {
    pub name: String,
    pub kind: SessionKind,
    pub source: String,
    /// RFC 3339.
    pub minted_at: String,
    /// RFC 3339.
    pub expires_at: String,
    pub expired: bool,
    #[serde(default)]
    pub envs: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// Static keys of its profile the agent did not install (they win over
    /// `credential_process` in botocore): `~/.aws/credentials [profile]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shadowed: Vec<String>,
}

/// The longest lifetime a node accepts (AWS GetSessionToken's maximum, 36 h).
pub const MAX_LIFETIME_SECS: i64 = 129_600;
/// The longest credential string a node accepts (STS session tokens run to
/// a few KiB; OAuth access tokens are shorter).
const MAX_PART_LEN: usize = 16 * 1024;

/// A minted credential a node refuses. Names keys, never values.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SessionError {
    #[error("session secret {name}: credential {reason}")]
    Credential { name: String, reason: String },
    #[error("session secret {name} expired at {expired_at}: mint it again (controller sync)")]
    Expired { name: String, expired_at: String },
    #[error("session secret {name}: {reason}")]
    Invalid { name: String, reason: String },
}

/// Whether `s` is printable ASCII without spaces (credentials, names).
fn printable(s: &str) -> bool {
    s.bytes().all(|b| (0x21..0x7f).contains(&b))
}

/// The node's check of a minted credential (untrusted input): the kind's
/// keys and nothing else, each a non-empty printable string of at most
/// 16 KiB; an expiry after `now` and at most [`MAX_LIFETIME_SECS`] (plus a
/// minute of clock skew) away; metadata printable and short.
pub fn check_minted(name: &str, minted: &Minted, now: i64) -> Result<(), SessionError> {
    let bad = |reason: String| SessionError::Credential {
        name: name.to_owned(),
        reason,
    };
    let Some(map) = minted.credential.expose_secret().as_object() else {
        return Err(bad("is not an object".into()));
    };
    let keys = minted.kind.credential_keys();
    for key in map.keys() {
        if !keys.contains(&key.as_str()) {
            return Err(bad(format!(
                "has an unknown key {:?}",
                crate::fsutil::cut(key)
            )));
        }
    }
    for key in keys {
        match map.get(*key).and_then(|v| v.as_str()) {
            None => return Err(bad(format!("is missing {key}"))),
            Some(v) if v.is_empty() || v.len() > MAX_PART_LEN || !printable(v) => {
                return Err(bad(format!(
                    "{key} is empty, longer than 16 KiB or not printable ASCII"
                )))
            }
            Some(_) => {}
        }
    }
    if minted.expires_at <= now {
        return Err(SessionError::Expired {
            name: name.to_owned(),
            expired_at: crate::time::rfc3339(minted.expires_at, None),
        });
    }
    let invalid = |reason: &str| SessionError::Invalid {
        name: name.to_owned(),
        reason: reason.to_owned(),
    };
    if minted.expires_at > now + MAX_LIFETIME_SECS + 60 {
        return Err(invalid("expires more than 36 hours from now"));
    }
    let meta = [
        Some(minted.source.as_str()),
        minted.region.as_deref(),
        minted.project_id.as_deref(),
        minted.account.as_deref(),
    ];
    let scopes = minted.scopes.iter().map(|s| Some(s.as_str()));
    for v in meta.into_iter().chain(scopes).flatten() {
        if v.is_empty() || v.len() > 256 || !printable(v) {
            return Err(invalid(
                "a source, region, project, account or scope is empty, long or not printable",
            ));
        }
    }
    if minted.scopes.len() > 32 {
        return Err(invalid("more than 32 scopes"));
    }
    Ok(())
}

/// Check an AWS profile name for the node's `~/.aws/config`: letters,
/// digits and `-_.@+`, at most 64 characters.
pub fn validate_profile(name: &str, profile: &str) -> Result<(), SessionError> {
    let ok = !profile.is_empty()
        && profile.len() <= 64
        && profile
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.@+".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(SessionError::Invalid {
            name: name.to_owned(),
            reason: "profile names are letters, digits and -_.@+ (at most 64)".into(),
        })
    }
}

/// An AWS credential as `credential` of a [`Minted`].
pub fn aws_credential(
    access_key_id: &str,
    secret_access_key: &str,
    session_token: &str,
) -> SecretValue {
    let mut map = BTreeMap::new();
    map.insert("access_key_id", access_key_id);
    map.insert("secret_access_key", secret_access_key);
    map.insert("session_token", session_token);
    SecretValue::new(serde_json::json!(map))
}

/// A GCP access token as `credential` of a [`Minted`].
pub fn gcp_credential(access_token: &str) -> SecretValue {
    SecretValue::new(serde_json::json!({ "access_token": access_token }))
}

/// Unix seconds now.
pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Parse an RFC 3339 UTC time (`2024-01-02T03:04:05Z`, fractions and a
/// `+00:00` offset accepted; other offsets applied) to Unix seconds.
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    let t = text.trim();
    let (date, rest) = t.split_once(['T', 't', ' '])?;
    let mut d = date.splitn(3, '-');
    let (y, m, day): (i64, i64, i64) = (
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
    );
    let (clock, offset) = if let Some(c) = rest.strip_suffix(['Z', 'z']) {
        (c, 0)
    } else {
        let at = rest.rfind(['+', '-'])?;
        let (c, off) = rest.split_at(at);
        let sign = if off.starts_with('-') { -1 } else { 1 };
        let (oh, om) = off[1..]
            .split_once(':')
            .unwrap_or((&off[1..3.min(off.len())], "0"));
        (
            c,
            sign * (oh.parse::<i64>().ok()? * 3600 + om.parse::<i64>().ok()? * 60),
        )
    };
    let clock = clock.split('.').next()?;
    let mut c = clock.splitn(3, ':');
    let (hh, mm, ss): (i64, i64, i64) = (
        c.next()?.parse().ok()?,
        c.next()?.parse().ok()?,
        c.next()?.parse().ok()?,
    );
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    // Howard Hinnant's days_from_civil.
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hh * 3600 + mm * 60 + ss - offset)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::rfc3339;

    fn minted(cred: SecretValue, expires_in: i64) -> Minted {
        Minted {
            kind: SessionKind::Aws,
            credential: cred,
            expires_at: 1_000 + expires_in,
            minted_at: 1_000,
            source: "assume_role".into(),
            region: Some("eu-west-3".into()),
            project_id: None,
            account: None,
            scopes: vec![],
        }
    }

    #[test]
    fn debug_hides_the_credential() {
        let m = minted(aws_credential("ASIAKEY", "very-secret-key", "tok-en"), 60);
        let item = SessionItem {
            minted: m,
            env: Some("base_env".into()),
            profile: None,
        };
        let out = format!("{item:?} {item:#?}");
        assert!(
            !out.contains("very-secret-key") && !out.contains("ASIAKEY"),
            "{out}"
        );
        assert!(out.contains("assume_role"), "{out}");
    }

    #[test]
    fn a_node_refuses_bad_or_expired_credentials_naming_no_value() {
        let good = minted(aws_credential("ASIAKEY", "s3cr3t", "tok"), 60);
        check_minted("a", &good, 1_000).unwrap();
        let expired = check_minted("a", &good, 1_060).unwrap_err();
        assert!(matches!(expired, SessionError::Expired { .. }), "{expired}");
        let long = minted(aws_credential("A", "s", "t"), MAX_LIFETIME_SECS + 3_600);
        assert!(check_minted("a", &long, 1_000).is_err());
        let spaced = minted(aws_credential("A", "s3cr3t with space", "t"), 60);
        let err = check_minted("a", &spaced, 1_000).unwrap_err().to_string();
        assert!(
            err.contains("secret_access_key") && !err.contains("s3cr3t"),
            "{err}"
        );
        let mut extra = good.clone();
        extra.credential = SecretValue::new(serde_json::json!({
            "access_key_id": "A", "secret_access_key": "s", "session_token": "t", "x": "y"}));
        assert!(check_minted("a", &extra, 1_000).is_err());
        let mut missing = good.clone();
        missing.credential = SecretValue::new(serde_json::json!({"access_key_id": "A"}));
        assert!(check_minted("a", &missing, 1_000).is_err());
        let mut gcp = good;
        gcp.kind = SessionKind::Gcp;
        assert!(check_minted("a", &gcp, 1_000).is_err());
        gcp.credential = gcp_credential("ya29.token");
        check_minted("a", &gcp, 1_000).unwrap();
    }

    #[test]
    fn profiles_are_plain_names() {
        validate_profile("a", "default").unwrap();
        validate_profile("a", "dev-team_1.x").unwrap();
        for bad in ["", "a b", "x]\n[evil", "a/b", &"p".repeat(65)] {
            assert!(validate_profile("a", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn rfc3339_round_trips() {
        for secs in [0, 951_782_400, 1_700_000_000, 1_700_000_059] {
            assert_eq!(parse_rfc3339(&rfc3339(secs, None)), Some(secs));
            assert_eq!(parse_rfc3339(&rfc3339(secs, Some(123))), Some(secs));
        }
        assert_eq!(
            parse_rfc3339("2023-11-14T23:13:20+01:00"),
            Some(1_700_000_000)
        );
        assert_eq!(
            parse_rfc3339("2023-11-14 22:13:20+00:00"),
            Some(1_700_000_000)
        );
        assert_eq!(parse_rfc3339("nonsense"), None);
        assert_eq!(parse_rfc3339("2023-13-14T22:13:20Z"), None);
    }
}
