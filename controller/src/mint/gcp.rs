//! GCP sessions, minted on the user's machine from the ADC file
//! (`GOOGLE_APPLICATION_CREDENTIALS`, else gcloud's
//! `application_default_credentials.json`): user credentials exchange
//! their refresh token at the file's own `token_uri` for a 1 h access
//! token; with `--impersonate SA` that token then asks IAM Credentials
//! `generateAccessToken` for the service account's (endpoint:
//! `CLOUDSDK_API_ENDPOINT_OVERRIDES_IAMCREDENTIALS`, as gcloud). Two small
//! POSTs over the workspace's reqwest (rustls): the `google-auth`-style
//! crates (yup-oauth2, gcp_auth) bring a second HTTP stack and their own
//! token caches for what is one form post and one JSON post here. The
//! refresh token goes only to `token_uri` over https (plain http only to
//! loopback, for tests) and never leaves this machine otherwise.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _, Result};
use common::session::{gcp_credential, now_secs, Minted, SessionKind, SessionSpec};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::Context;

/// gcloud's ADC file.
pub const DEFAULT_ADC: &str = "~/.config/gcloud/application_default_credentials.json";
const DEFAULT_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";
const DEFAULT_IAM: &str = "https://iamcredentials.googleapis.com/";
const CLOUD_PLATFORM: &str = "https://www.googleapis.com/auth/cloud-platform";

/// The ADC file a spec mints from.
fn adc_path(ctx: &Context, spec: &SessionSpec) -> PathBuf {
    if let Some(p) = &spec.path {
        return common::fsutil::expand_home(&ctx.home, p);
    }
    if let Some(p) = ctx
        .var("GOOGLE_APPLICATION_CREDENTIALS")
        .filter(|p| !p.is_empty())
    {
        return PathBuf::from(p);
    }
    if let Some(dir) = ctx.var("CLOUDSDK_CONFIG").filter(|p| !p.is_empty()) {
        return PathBuf::from(dir).join("application_default_credentials.json");
    }
    common::fsutil::expand_home(&ctx.home, DEFAULT_ADC)
}

/// Only https, or http to a loopback host.
fn check_url(url: &str) -> Result<reqwest::Url> {
    let parsed = reqwest::Url::parse(url).with_context(|| format!("invalid URL {url}"))?;
    let host = parsed
        .host_str()
        .unwrap_or_default()
        .trim_matches(['[', ']']);
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    match parsed.scheme() {
        "https" => Ok(parsed),
        "http" if loopback => Ok(parsed),
        _ => bail!("refusing to send a credential to {url}: https only (http to loopback)"),
    }
}

fn client() -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .context("build the HTTPS client")
}

/// What a token endpoint answers.
#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default)]
    expires_in: Option<i64>,
    #[serde(default)]
    scope: Option<String>,
}

/// A short reason from an error answer (its `error` code only: bodies may
/// echo what was sent).
async fn refused(resp: reqwest::Response) -> String {
    let status = resp.status();
    let code = resp
        .json::<Value>()
        .await
        .ok()
        .and_then(|v| {
            v.get("error")
                .map(|e| e.get("status").unwrap_or(e).to_string())
        })
        .unwrap_or_default();
    format!("{status} {}", common::fsutil::cut(&code))
}

/// The token an endpoint answered to `request`, read as `T`. Each failure
/// (not sent, refused, not a token) is an error naming `what` (`token
/// exchange at URL`), never the answer's text beyond its error code.
async fn token_answer<T: DeserializeOwned>(
    what: &str,
    request: reqwest::RequestBuilder,
) -> Result<T> {
    let resp = request
        .send()
        .await
        .map_err(|e| anyhow!("{what}: {}", e.without_url()))?;
    if !resp.status().is_success() {
        bail!("{what} refused: {}", refused(resp).await);
    }
    resp.json()
        .await
        .map_err(|_| anyhow!("{what}: the answer is not a token"))
}

/// Mint a GCP access token for `spec`.
pub async fn mint(ctx: &Context, spec: &SessionSpec) -> Result<Minted> {
    let path = adc_path(ctx, spec);
    let shown = common::fsutil::tilde_path(&ctx.home, &path);
    let text = common::fsutil::read_optional(&path)?
        .ok_or_else(|| anyhow!("no ADC file at {shown} (gcloud auth application-default login)"))?;
    let adc: Value = serde_json::from_str(text.expose_secret())
        .map_err(|e| anyhow!("{shown}: not valid JSON (line {})", e.line()))?;
    let field = |k: &str| adc.get(k).and_then(Value::as_str);
    if field("type") != Some("authorized_user") {
        bail!(
            "{shown}: type {:?} is not supported; session secrets mint from user credentials \
             (gcloud auth application-default login), with --impersonate for a service account",
            field("type").unwrap_or("none")
        );
    }
    let (Some(client_id), Some(client_secret), Some(refresh)) = (
        field("client_id"),
        field("client_secret"),
        field("refresh_token"),
    ) else {
        bail!("{shown}: client_id, client_secret or refresh_token is missing");
    };
    let token_uri = check_url(field("token_uri").unwrap_or(DEFAULT_TOKEN_URI))?;
    let http = client()?;
    let minted_at = now_secs();
    let user: TokenAnswer = token_answer(
        &format!("token exchange at {token_uri}"),
        http.post(token_uri).form(&[
            ("grant_type", "refresh_token"),
            ("client_id", client_id),
            ("client_secret", client_secret),
            ("refresh_token", refresh),
        ]),
    )
    .await?;
    let project = field("quota_project_id")
        .map(str::to_owned)
        .or_else(|| ctx.var("GOOGLE_CLOUD_PROJECT").map(str::to_owned))
        .or_else(|| ctx.var("CLOUDSDK_CORE_PROJECT").map(str::to_owned));
    let Some(sa) = &spec.impersonate else {
        return Ok(Minted {
            kind: SessionKind::Gcp,
            credential: gcp_credential(&user.access_token),
            expires_at: minted_at + user.expires_in.unwrap_or(3600),
            minted_at,
            source: "refresh_token".into(),
            region: None,
            project_id: project,
            account: None,
            scopes: user
                .scope
                .map(|s| s.split_whitespace().map(str::to_owned).collect())
                .unwrap_or_default(),
        });
    };
    let scopes = if spec.scopes.is_empty() {
        vec![CLOUD_PLATFORM.to_owned()]
    } else {
        spec.scopes.clone()
    };
    let base = ctx
        .var("CLOUDSDK_API_ENDPOINT_OVERRIDES_IAMCREDENTIALS")
        .filter(|v| !v.is_empty())
        .unwrap_or(DEFAULT_IAM);
    let url = check_url(&format!(
        "{}/v1/projects/-/serviceAccounts/{sa}:generateAccessToken",
        base.trim_end_matches('/')
    ))?;
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Generated {
        access_token: String,
        expire_time: String,
    }
    let got: Generated = token_answer(
        &format!("generateAccessToken for {sa}"),
        http.post(url)
            .bearer_auth(&user.access_token)
            .json(&json!({"scope": scopes, "lifetime": "3600s"})),
    )
    .await?;
    let expires_at = common::session::parse_rfc3339(&got.expire_time)
        .ok_or_else(|| anyhow!("generateAccessToken for {sa}: unreadable expireTime"))?;
    let project = project.or_else(|| {
        sa.split_once('@')
            .and_then(|(_, d)| d.strip_suffix(".iam.gserviceaccount.com"))
            .map(str::to_owned)
    });
    Ok(Minted {
        kind: SessionKind::Gcp,
        credential: gcp_credential(&got.access_token),
        expires_at,
        minted_at,
        source: "impersonate".into(),
        region: None,
        project_id: project,
        account: Some(sa.clone()),
        scopes,
    })
}
