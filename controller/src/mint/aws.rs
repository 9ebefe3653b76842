//! AWS sessions, resolved and minted on the user's machine with the AWS SDK
//! for Rust: `aws-config` resolves the profile exactly as the AWS CLI does
//! (SSO, role chains, `credential_process`, env, static keys; endpoints
//! from `AWS_ENDPOINT_URL_STS` / `_SSO` and the profile), then
//! `--role-arn` is assumed with those credentials (AssumeRole), long-lived
//! keys become a GetSessionToken session, and credentials that already
//! expire (SSO, role profiles, a process) are taken as they are. The HTTPS
//! client is rustls + ring (no aws-lc). [`detect`] lists the profiles of
//! `~/.aws/config` that have no static keys. Nothing here prints or logs a
//! credential; errors carry the SDK's code and message only.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use anyhow::{anyhow, bail, Context as _, Result};
use aws_config::{BehaviorVersion, Region};
use aws_credential_types::provider::ProvideCredentials;
use aws_sdk_sts::error::DisplayErrorContext;
use common::session::{aws_credential, now_secs, Minted, SessionKind, SessionSpec};
use common::SecretValue;

use crate::Context;

/// The lifetime asked of STS when none is given.
pub const DEFAULT_DURATION_SECS: u64 = 3600;

/// The profile a spec resolves: its own, else `AWS_PROFILE`, else `default`.
pub fn profile_of(ctx: &Context, spec: &SessionSpec) -> String {
    spec.profile
        .clone()
        .or_else(|| ctx.var("AWS_PROFILE").map(str::to_owned))
        .unwrap_or_else(|| "default".to_owned())
}

fn https_client() -> aws_sdk_sts::config::SharedHttpClient {
    use aws_smithy_http_client::tls;
    aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https()
}

fn unix(t: std::time::SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Mint an AWS session for `spec`.
/// The session an STS call `op` answered with `credentials`: the
/// credential, its expiry (unix seconds) and `source`, the minting's name.
fn sts_session(
    op: &str,
    credentials: Option<&aws_sdk_sts::types::Credentials>,
    source: &str,
) -> Result<(SecretValue, i64, String)> {
    let c = credentials.with_context(|| format!("{op} answered no credentials"))?;
    Ok((
        aws_credential(c.access_key_id(), c.secret_access_key(), c.session_token()),
        c.expiration().secs(),
        source.to_owned(),
    ))
}

pub async fn mint(ctx: &Context, spec: &SessionSpec) -> Result<Minted> {
    let profile = profile_of(ctx, spec);
    let duration = spec.duration_secs.unwrap_or(DEFAULT_DURATION_SECS);
    let duration = i32::try_from(duration).context("--duration is too long")?;
    let loaded = aws_config::defaults(BehaviorVersion::latest())
        .http_client(https_client())
        .profile_name(&profile)
        .load()
        .await;
    let region = loaded.region().map(|r| r.to_string());
    // STS needs a region; the global endpoint's when the profile has none.
    let conf = match loaded.region() {
        Some(_) => loaded,
        None => loaded
            .into_builder()
            .region(Region::new("us-east-1"))
            .build(),
    };
    let provider = conf
        .credentials_provider()
        .ok_or_else(|| anyhow!("no credentials provider for AWS profile {profile}"))?;
    let creds = provider
        .provide_credentials()
        .await
        .map_err(|e| anyhow!("resolve AWS profile {profile}: {}", DisplayErrorContext(&e)))?;
    let sts = aws_sdk_sts::Client::new(&conf);
    let minted_at = now_secs();
    let (cred, expires_at, source) = if let Some(role) = &spec.role_arn {
        let out = sts
            .assume_role()
            .role_arn(role)
            .role_session_name("rh-secrets")
            .duration_seconds(duration)
            .send()
            .await
            .map_err(|e| {
                anyhow!(
                    "AssumeRole {role} with profile {profile}: {}",
                    DisplayErrorContext(&e)
                )
            })?;
        sts_session("AssumeRole", out.credentials(), "assume_role")?
    } else if creds.session_token().is_none() {
        let out = sts
            .get_session_token()
            .duration_seconds(duration)
            .send()
            .await
            .map_err(|e| {
                anyhow!(
                    "GetSessionToken with profile {profile}: {}",
                    DisplayErrorContext(&e)
                )
            })?;
        sts_session("GetSessionToken", out.credentials(), "get_session_token")?
    } else {
        let Some(expiry) = creds.expiry() else {
            bail!(
                "AWS profile {profile} gives temporary credentials without an expiry; \
                 give --role-arn to mint a session from them"
            );
        };
        (
            aws_credential(
                creds.access_key_id(),
                creds.secret_access_key(),
                creds.session_token().unwrap_or_default(),
            ),
            unix(expiry),
            spec.detected
                .clone()
                .unwrap_or_else(|| "profile".to_owned()),
        )
    };
    Ok(Minted {
        kind: SessionKind::Aws,
        credential: cred,
        expires_at,
        minted_at,
        source,
        region,
        project_id: None,
        account: None,
        scopes: vec![],
    })
}

/// `~/.aws/config` (or `AWS_CONFIG_FILE`) and `~/.aws/credentials` (or
/// `AWS_SHARED_CREDENTIALS_FILE`).
fn files(ctx: &Context) -> (PathBuf, PathBuf) {
    let pick = |var: &str, default: &str| {
        ctx.var(var)
            .filter(|v| !v.is_empty())
            .map(|v| common::fsutil::expand_home(&ctx.home, v))
            .unwrap_or_else(|| ctx.home.join(default))
    };
    (
        pick("AWS_CONFIG_FILE", ".aws/config"),
        pick("AWS_SHARED_CREDENTIALS_FILE", ".aws/credentials"),
    )
}

/// Section name -> its keys (lowercased), in a tiny read of an INI file.
fn sections(path: &Path) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let Ok(Some(text)) = common::fsutil::read_optional(path) else {
        return out;
    };
    let mut current: Option<String> = None;
    for line in text.expose_secret().lines() {
        let line = line.trim();
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let name = name.trim();
            current = Some(name.to_owned());
            out.entry(name.to_owned()).or_default();
        } else if let (Some(sec), Some((key, _))) = (&current, line.split_once('=')) {
            if !line.starts_with(['#', ';']) {
                out.entry(sec.clone())
                    .or_default()
                    .push(key.trim().to_ascii_lowercase());
            }
        }
    }
    out
}

/// A profile of `~/.aws/config` without static keys, and how it gets
/// credentials: `sso`, `role` or `process`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detected {
    pub profile: String,
    pub kind: &'static str,
}

/// Every profile of `~/.aws/config` that has no static keys (there or in
/// `~/.aws/credentials`) but an SSO session, a role or a
/// `credential_process`.
pub fn detect(ctx: &Context) -> Vec<Detected> {
    let (config, credentials) = files(ctx);
    let static_keys: Vec<String> = sections(&credentials)
        .into_iter()
        .filter(|(_, keys)| keys.iter().any(|k| k == "aws_access_key_id"))
        .map(|(s, _)| s)
        .collect();
    let mut out = vec![];
    for (section, keys) in sections(&config) {
        let profile = match section.strip_prefix("profile ") {
            Some(p) => p.trim().to_owned(),
            None if section == "default" => section.clone(),
            None => continue,
        };
        let has = |k: &str| keys.iter().any(|x| x == k);
        if has("aws_access_key_id") || static_keys.contains(&profile) {
            continue;
        }
        let kind = if has("sso_session") || has("sso_start_url") || has("sso_account_id") {
            "sso"
        } else if has("role_arn") {
            "role"
        } else if has("credential_process") {
            "process"
        } else {
            continue;
        };
        out.push(Detected { profile, kind });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_without_static_keys_are_detected_with_their_kind() {
        let home = tempfile::tempdir().unwrap();
        let aws = home.path().join(".aws");
        std::fs::create_dir_all(&aws).unwrap();
        std::fs::write(
            aws.join("config"),
            "[default]\nsso_session = corp\nsso_account_id = 1\nsso_role_name = r\n\n[profile ci]\nrole_arn = arn:aws:iam::1:role/ci\nsource_profile = keys\n\n[profile tool]\ncredential_process = /bin/tool\n\n[profile keys]\nregion = eu-west-1\n\n[profile inline]\naws_access_key_id = AKIA\nrole_arn = x\n\n[profile shadowed]\nrole_arn = arn:aws:iam::1:role/x\n\n[sso-session corp]\nsso_start_url = https://x\n",
        )
        .unwrap();
        std::fs::write(
            aws.join("credentials"),
            "[keys]\naws_access_key_id = AKIA\naws_secret_access_key = s\n[shadowed]\naws_access_key_id = AKIA\n",
        )
        .unwrap();
        let ctx = Context::for_home(home.path(), Default::default());
        let found: Vec<(String, &str)> = detect(&ctx)
            .into_iter()
            .map(|d| (d.profile, d.kind))
            .collect();
        assert_eq!(
            found,
            vec![
                ("default".to_owned(), "sso"),
                ("ci".to_owned(), "role"),
                ("tool".to_owned(), "process"),
            ]
        );
    }
}
