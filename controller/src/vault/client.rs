//! The HTTP client of the remote store: the Vault KV v2 API (OpenBao or
//! Vault), over one reqwest client (rustls, connect and request timeouts,
//! no redirects, the configured CA added to the roots; verification is never
//! turned off). Tries the server URLs in order: a connection error or a
//! non-leader answer (standby, sealed, 307, 503, "no active node", a new
//! leader's KV mount still "waiting for the primary to upgrade") moves on
//! to the next URL, and rounds are retried for a while when some node says
//! an election is under way.
//! It sends the token only in `X-Vault-Token`, never logs it or a value, and
//! its errors name URLs, mounts and secret names only. It refuses to send
//! the token over plain `http://` to a host that is not loopback unless the
//! user opted in (`RH_VAULT_ALLOW_HTTP=1` or `"allow_insecure_http": true`),
//! reads every answer chunk by chunk up to a cap (a huge or endless answer
//! is an error, not an allocation), and passes every piece of text the
//! server chose (error messages, versions, token names) through
//! [`escape_text`] before it can reach a terminal.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::Values;
use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};

use super::config::{Token, VaultConfig};
use super::VaultError;
use crate::output::{error_chain, escape_text, FOREIGN_TEXT_MAX};

/// Time allowed to connect to one server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Time allowed to connect to a server when others are left to try: a
/// store node that is down (its packets dropped) costs every command this
/// long until it is back, and a healthy one on a LAN or a region answers a
/// connect in well under it (one lost SYN is retried by the kernel at 1 s:
/// then the next server is asked).
const FAILOVER_CONNECT_TIMEOUT: Duration = Duration::from_millis(1000);
/// Time allowed for one request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
/// How long to keep retrying while nodes answer "not the active node".
const DEFAULT_FAILOVER_WAIT: Duration = Duration::from_secs(40);
/// The largest answer read from the store (a KV read, a list, an error).
pub const MAX_ANSWER_BYTES: usize = 32 << 20;
/// The largest `sys/health` answer read (a few hundred bytes in practice).
const MAX_HEALTH_BYTES: usize = 64 << 10;

/// A client bound to one store (URLs, mount, prefix, token).
pub struct VaultClient {
    http: reqwest::Client,
    /// The same with [`FAILOVER_CONNECT_TIMEOUT`]: for every server but the
    /// last one tried.
    http_failover: reqwest::Client,
    urls: Vec<String>,
    mount: String,
    prefix: String,
    token: Token,
    ca_cert: Option<PathBuf>,
    preferred: AtomicUsize,
    failover_wait: Duration,
}

impl fmt::Debug for VaultClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VaultClient")
            .field("urls", &self.urls)
            .field("mount", &self.mount)
            .field("prefix", &self.prefix)
            .field("token", &self.token)
            .field("ca_cert", &self.ca_cert)
            .finish()
    }
}

/// Metadata kept next to a secret (`custom_metadata`): never values.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretMeta {
    pub provider: Option<String>,
    pub path: Option<String>,
    pub env_vars: Option<BTreeMap<String, String>>,
}

impl SecretMeta {
    /// As KV v2 `custom_metadata` (string values only).
    fn to_custom(&self) -> BTreeMap<String, String> {
        let mut map = BTreeMap::new();
        map.insert("managed_by".into(), "rh-controller".into());
        if let Some(p) = &self.provider {
            map.insert("provider".into(), p.clone());
        }
        if let Some(p) = &self.path {
            map.insert("path".into(), p.clone());
        }
        if let Some(vars) = &self.env_vars {
            map.insert(
                "env_vars".into(),
                serde_json::to_string(vars).expect("map serializes"),
            );
        }
        map
    }

    fn from_custom(custom: &BTreeMap<String, String>) -> Self {
        Self {
            provider: custom.get("provider").cloned(),
            path: custom.get("path").cloned(),
            env_vars: custom
                .get("env_vars")
                .and_then(|s| serde_json::from_str(s).ok()),
        }
    }
}

/// One secret as read from the store.
pub struct RemoteSecret {
    pub version: u64,
    pub values: Values,
    pub meta: SecretMeta,
    /// When this version was written (RFC 3339, as the server says).
    pub created_time: Option<String>,
}

impl fmt::Debug for RemoteSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteSecret")
            .field("version", &self.version)
            .field("keys", &self.values.keys().collect::<Vec<_>>())
            .field("meta", &self.meta)
            .finish()
    }
}

/// What a read found.
#[derive(Debug)]
pub enum RemoteRead {
    /// No such secret (`current_version` is 0, or the last version's number
    /// when it was deleted).
    Absent { current_version: u64 },
    /// The current version.
    Present(RemoteSecret),
}

impl RemoteRead {
    /// The version a check-and-set write must name.
    pub fn current_version(&self) -> u64 {
        match self {
            Self::Absent { current_version } => *current_version,
            Self::Present(s) => s.version,
        }
    }
}

/// One server's answer to `GET /v1/sys/health`.
#[derive(Debug, Clone, Serialize)]
pub struct Health {
    pub url: String,
    /// active | standby | perf-standby | sealed | uninitialized | unreachable | ...
    pub state: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// What the server says about the token (no token material).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TokenInfo {
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default)]
    pub policies: Vec<String>,
    #[serde(default)]
    pub ttl: Option<u64>,
}

/// A server's answer to one request. The body may hold values: no `Debug`.
pub(crate) struct Reply {
    pub(crate) url: String,
    pub(crate) status: StatusCode,
    pub(crate) body: Vec<u8>,
}

#[derive(Deserialize)]
struct KvReadBody {
    data: Option<KvReadData>,
}

#[derive(Deserialize)]
struct KvReadData {
    #[serde(default)]
    data: Option<Values>,
    #[serde(default)]
    metadata: Option<KvVersionMeta>,
}

#[derive(Deserialize, Default)]
struct KvVersionMeta {
    #[serde(default)]
    version: u64,
    #[serde(default)]
    created_time: Option<String>,
    #[serde(default)]
    custom_metadata: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
struct KvWriteBody {
    data: KvVersionMeta,
}

#[derive(Deserialize)]
struct KvMetadataBody {
    data: KvMetadata,
}

#[derive(Deserialize)]
struct KvMetadata {
    #[serde(default)]
    current_version: u64,
    #[serde(default)]
    custom_metadata: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
struct ListBody {
    data: ListData,
}

#[derive(Deserialize)]
struct ListData {
    #[serde(default)]
    keys: Vec<String>,
}

#[derive(Deserialize)]
struct LookupBody {
    data: TokenInfo,
}

#[derive(Serialize)]
struct WriteBody<'a> {
    data: &'a Values,
    options: WriteOptions,
}

#[derive(Serialize)]
struct WriteOptions {
    cas: u64,
}

/// The server's error messages, escaped and cut: they reach the terminal.
fn errors_of(body: &[u8]) -> String {
    escape_text(&common::fleet::store_errors(body), FOREIGN_TEXT_MAX)
}

/// Read an answer's body chunk by chunk; `Ok(None)` as soon as it would
/// exceed `cap` bytes (a declared length over the cap is refused unread).
async fn read_capped(
    mut response: reqwest::Response,
    cap: usize,
) -> Result<Option<Vec<u8>>, reqwest::Error> {
    if response
        .content_length()
        .is_some_and(|len| len > cap as u64)
    {
        return Ok(None);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > cap {
            return Ok(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(body))
}

/// Whether an answer means "this node cannot serve that now, try another".
fn is_not_leader(status: StatusCode, body: &[u8]) -> bool {
    match status.as_u16() {
        307 | 308 | 429 | 472 | 473 | 502 | 503 | 504 => true,
        500 => {
            let text = errors_of(body).to_lowercase();
            ["active", "leader", "standby", "sealed", "election"]
                .iter()
                .any(|w| text.contains(w))
        }
        // Right after a leader change, the new active node's KV v2 mount
        // answers 400 "Waiting for the primary to upgrade from non-versioned
        // to versioned data..." until it has set itself up: transient.
        400 => errors_of(body)
            .to_lowercase()
            .contains("waiting for the primary to upgrade"),
        _ => false,
    }
}

/// A short reason for a transport error: what failed and its root cause;
/// a TLS failure is named as such (a refused certificate is no "cannot
/// connect").
fn describe_transport(err: &reqwest::Error) -> String {
    if let Some(tls) = common::store_tls::tls_failure(err) {
        return tls;
    }
    let mut root: &(dyn std::error::Error + 'static) = err;
    while let Some(next) = root.source() {
        root = next;
    }
    let what = if err.is_timeout() {
        "timed out"
    } else if err.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    if std::ptr::addr_eq(root, err as &(dyn std::error::Error + 'static)) {
        what.to_owned()
    } else {
        format!("{what} ({root})")
    }
}

/// Whether a transport error is a TLS failure (certificate, handshake).
fn is_tls_error(err: &(dyn std::error::Error + 'static)) -> bool {
    common::store_tls::tls_failure(err).is_some()
}

impl VaultClient {
    /// Build the client for a resolved configuration (reads the CA file).
    /// Refuses `http://` to a host that is not loopback unless
    /// `config.allow_insecure_http`, and then warns on stderr.
    pub fn new(config: &VaultConfig) -> Result<Self, VaultError> {
        for url in &config.urls {
            // Decided on the URL as the client reads it; one that reads
            // otherwise than written is refused outright.
            if !super::config::parse_url(url)?.is_cleartext_to_network() {
                continue;
            }
            if !config.allow_insecure_http {
                return Err(VaultError::InsecureHttp { url: url.clone() });
            }
            eprintln!(
                "warning: the store token goes to {url} in cleartext (plain http:// to a host \
                 that is not loopback); allowed by {}",
                super::config::ALLOW_HTTP_ENV
            );
        }
        let mut pinned = vec![];
        if let Some(ca) = &config.ca_cert {
            let shown = ca.display().to_string();
            let pem = std::fs::read(ca).map_err(|e| VaultError::CaFile {
                path: shown.clone(),
                reason: e.to_string(),
            })?;
            pinned = common::store_tls::pem_certs(&pem).map_err(|reason| VaultError::CaFile {
                path: shown.clone(),
                reason,
            })?;
        }
        // The CA file's certificates are roots, and one of them used as the
        // server's own certificate is trusted as itself (a self-signed
        // store certificate), name and validity checked.
        let tls =
            common::store_tls::client_config(&pinned).map_err(|reason| VaultError::CaFile {
                path: config
                    .ca_cert
                    .as_ref()
                    .map_or_else(|| "(none)".into(), |p| p.display().to_string()),
                reason,
            })?;
        let build = |connect: Duration| {
            reqwest::Client::builder()
                .use_preconfigured_tls(tls.clone())
                .connect_timeout(connect)
                .timeout(REQUEST_TIMEOUT)
                .redirect(reqwest::redirect::Policy::none())
                .user_agent(concat!("rh-controller/", env!("CARGO_PKG_VERSION")))
                .build()
                .map_err(|e| VaultError::Client {
                    reason: error_chain(&e),
                })
        };
        let http = build(CONNECT_TIMEOUT)?;
        let http_failover = if config.urls.len() > 1 {
            build(FAILOVER_CONNECT_TIMEOUT)?
        } else {
            http.clone()
        };
        Ok(Self {
            http,
            http_failover,
            urls: config.urls.clone(),
            mount: config.mount.clone(),
            prefix: config.prefix.clone(),
            token: config.token.clone(),
            ca_cert: config.ca_cert.clone(),
            preferred: AtomicUsize::new(0),
            failover_wait: DEFAULT_FAILOVER_WAIT,
        })
    }

    /// How long to keep retrying while nodes answer "not the active node".
    pub fn with_failover_wait(mut self, wait: Duration) -> Self {
        self.failover_wait = wait;
        self
    }

    /// The server URLs, in order.
    pub fn urls(&self) -> &[String] {
        &self.urls
    }

    /// The URL that answered last (the first one before any request).
    pub fn current_url(&self) -> &str {
        &self.urls[self.preferred.load(Ordering::Relaxed) % self.urls.len()]
    }

    fn data_path(&self, name: &str) -> String {
        format!("{}/data/{}/{}", self.mount, self.prefix, name)
    }

    fn metadata_path(&self, name: &str) -> String {
        format!("{}/metadata/{}/{}", self.mount, self.prefix, name)
    }

    fn tls_error(&self, url: &str, reason: String) -> VaultError {
        let hint = if reason.contains("CaUsedAsEndEntity") {
            "; the server's certificate is a CA certificate (basicConstraints CA:TRUE, typical \
             of a self-signed one) and not one of the pinned certificates: a pinned \
             certificate is trusted as the server's own only when it is that very \
             certificate, so point VAULT_CACERT (or ca_cert in ~/.rh/config) at the \
             server's certificate file, or give the server a certificate signed by a CA you \
             pin"
        } else {
            ""
        };
        VaultError::Tls {
            url: url.to_owned(),
            ca: match &self.ca_cert {
                Some(p) => format!("CA file {}", p.display()),
                None => "no CA file: the system roots only; set VAULT_CACERT or \
                         login with VAULT_CACERT set"
                    .into(),
            },
            reason: format!("{reason}{hint}"),
        }
    }

    /// Send one request to the first server that can serve it.
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Reply, VaultError> {
        self.send_with(method, path, body, &[]).await
    }

    /// [`Self::send`] with extra headers (`X-Vault-Wrap-TTL`); fleet admin calls.
    pub(crate) async fn send_with(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        headers: &[(&'static str, String)],
    ) -> Result<Reply, VaultError> {
        let n = self.urls.len();
        let deadline = Instant::now() + self.failover_wait;
        let mut backoff = Duration::from_millis(200);
        loop {
            let start = self.preferred.load(Ordering::Relaxed);
            let mut failures: Vec<String> = Vec::new();
            let mut tls: Option<(String, String)> = None;
            let mut not_leader = false;
            for i in 0..n {
                let index = (start + i) % n;
                let url = &self.urls[index];
                let client = if i + 1 < n {
                    &self.http_failover
                } else {
                    &self.http
                };
                let mut request = client
                    .request(method.clone(), format!("{url}/v1/{path}"))
                    .header("X-Vault-Token", self.token.expose_secret())
                    .header("X-Vault-Request", "true");
                for (name, value) in headers {
                    request = request.header(*name, value);
                }
                if let Some(body) = &body {
                    request = request
                        .header(reqwest::header::CONTENT_TYPE, "application/json")
                        .body(body.clone());
                }
                let response = match request.send().await {
                    Ok(r) => r,
                    Err(e) => {
                        let reason = describe_transport(&e);
                        tracing::debug!(url = %url, "request failed: {reason}");
                        if is_tls_error(&e) && tls.is_none() {
                            tls = Some((url.clone(), reason.clone()));
                        }
                        failures.push(format!("{url}: {reason}"));
                        continue;
                    }
                };
                let status = response.status();
                let bytes = match read_capped(response, MAX_ANSWER_BYTES).await {
                    Ok(Some(b)) => b,
                    Ok(None) => {
                        return Err(VaultError::TooLarge {
                            url: url.clone(),
                            limit: MAX_ANSWER_BYTES,
                        })
                    }
                    Err(e) => {
                        failures.push(format!("{url}: reading the answer: {}", error_chain(&e)));
                        continue;
                    }
                };
                if is_not_leader(status, &bytes) {
                    tracing::debug!(url = %url, status = status.as_u16(), "not the active node");
                    not_leader = true;
                    failures.push(format!(
                        "{url}: not the active node (HTTP {})",
                        status.as_u16()
                    ));
                    continue;
                }
                if index != start {
                    tracing::info!(url = %url, "using the next server");
                }
                self.preferred.store(index, Ordering::Relaxed);
                return Ok(Reply {
                    url: url.clone(),
                    status,
                    body: bytes,
                });
            }
            if not_leader && Instant::now() + backoff < deadline {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
            if let Some((url, reason)) = tls {
                if failures.len() == 1 || !not_leader {
                    return Err(self.tls_error(&url, reason));
                }
            }
            return Err(VaultError::Unreachable {
                tried: n,
                details: failures.join("; "),
            });
        }
    }

    /// Map an unexpected answer to an error.
    pub(crate) fn fail(&self, op: &str, reply: &Reply) -> VaultError {
        let message = errors_of(&reply.body);
        match reply.status.as_u16() {
            401 | 403 => VaultError::TokenRejected {
                url: reply.url.clone(),
            },
            404 if message.contains("no handler for route") => VaultError::UnknownMount {
                mount: self.mount.clone(),
                url: reply.url.clone(),
            },
            status => VaultError::Http {
                op: op.to_owned(),
                url: reply.url.clone(),
                status,
                message,
            },
        }
    }

    /// `GET /v1/sys/health` on each URL (no failover): what each node is.
    pub async fn health_all(&self) -> Vec<Health> {
        let mut out = Vec::with_capacity(self.urls.len());
        for url in &self.urls {
            out.push(self.health(url).await);
        }
        out
    }

    async fn health(&self, url: &str) -> Health {
        #[derive(Deserialize, Default)]
        struct HealthBody {
            #[serde(default)]
            version: Option<String>,
            #[serde(skip)]
            error: Option<String>,
        }
        let result = self.http.get(format!("{url}/v1/sys/health")).send().await;
        match result {
            Err(e) => {
                let reason = describe_transport(&e);
                let state = if is_tls_error(&e) {
                    "tls-error"
                } else {
                    "unreachable"
                };
                let detail = if state == "tls-error" {
                    self.tls_error(url, reason).to_string()
                } else {
                    reason
                };
                Health {
                    url: url.to_owned(),
                    state: state.into(),
                    version: None,
                    detail: Some(detail),
                }
            }
            Ok(response) => {
                let status = response.status().as_u16();
                let body: HealthBody = match read_capped(response, MAX_HEALTH_BYTES).await {
                    Ok(Some(bytes)) => serde_json::from_slice(&bytes).unwrap_or_default(),
                    Ok(None) => {
                        return Health {
                            url: url.to_owned(),
                            state: "unexpected".into(),
                            version: None,
                            detail: Some(
                                VaultError::TooLarge {
                                    url: url.to_owned(),
                                    limit: MAX_HEALTH_BYTES,
                                }
                                .to_string(),
                            ),
                        }
                    }
                    Err(e) => HealthBody {
                        version: None,
                        error: Some(describe_transport(&e)),
                    },
                };
                let state = match status {
                    200 => "active",
                    429 => "standby",
                    472 => "dr-secondary",
                    473 => "perf-standby",
                    501 => "uninitialized",
                    503 => "sealed",
                    _ => "unexpected",
                };
                Health {
                    url: url.to_owned(),
                    state: state.into(),
                    version: body.version.map(|v| escape_text(&v, 64)),
                    detail: body
                        .error
                        .or_else(|| (state == "unexpected").then(|| format!("HTTP {status}"))),
                }
            }
        }
    }

    /// `GET /v1/auth/token/lookup-self`: the token is valid (403 -> rejected).
    pub async fn lookup_self(&self) -> Result<TokenInfo, VaultError> {
        let reply = self
            .send(Method::GET, "auth/token/lookup-self", None)
            .await?;
        if !reply.status.is_success() {
            return Err(self.fail("token lookup", &reply));
        }
        let body: LookupBody =
            serde_json::from_slice(&reply.body).map_err(|_| VaultError::Decode {
                op: "token lookup".into(),
                url: reply.url.clone(),
            })?;
        let info = body.data;
        Ok(TokenInfo {
            display_name: info.display_name.map(|n| escape_text(&n, FOREIGN_TEXT_MAX)),
            policies: info
                .policies
                .iter()
                .map(|p| escape_text(p, FOREIGN_TEXT_MAX))
                .collect(),
            ttl: info.ttl,
        })
    }

    /// Check that the mount exists and answers KV v2 (a metadata list).
    pub async fn check_mount(&self) -> Result<(), VaultError> {
        self.list().await.map(|_| ())
    }

    /// Names under the prefix (`LIST` on the metadata path); empty when none.
    pub async fn list(&self) -> Result<Vec<String>, VaultError> {
        let path = format!("{}/metadata/{}?list=true", self.mount, self.prefix);
        let reply = self.send(Method::GET, &path, None).await?;
        if reply.status == StatusCode::NOT_FOUND {
            let message = errors_of(&reply.body);
            if message.is_empty() {
                return Ok(vec![]);
            }
            return Err(self.fail("list", &reply));
        }
        if !reply.status.is_success() {
            return Err(self.fail("list", &reply));
        }
        let body: ListBody =
            serde_json::from_slice(&reply.body).map_err(|_| VaultError::Decode {
                op: "list".into(),
                url: reply.url.clone(),
            })?;
        let mut keys: Vec<String> = body
            .data
            .keys
            .into_iter()
            .filter(|k| !k.ends_with('/'))
            .filter(|k| {
                // Names that cannot be local secret names are not ours.
                let ok = common::names::validate_secret_name(k).is_ok();
                if !ok {
                    tracing::warn!(
                        "skipping {} under {}/{}: not a secret name",
                        escape_text(k, FOREIGN_TEXT_MAX),
                        self.mount,
                        self.prefix
                    );
                }
                ok
            })
            .collect();
        keys.sort();
        Ok(keys)
    }

    /// Read the current version of a secret.
    pub async fn read(&self, name: &str) -> Result<RemoteRead, VaultError> {
        let op = format!("read {name}");
        let reply = self.send(Method::GET, &self.data_path(name), None).await?;
        let parsed = || -> Result<KvReadBody, VaultError> {
            serde_json::from_slice(&reply.body).map_err(|_| VaultError::Decode {
                op: op.clone(),
                url: reply.url.clone(),
            })
        };
        if reply.status == StatusCode::NOT_FOUND {
            if errors_of(&reply.body).contains("no handler for route") {
                return Err(self.fail(&op, &reply));
            }
            // A deleted latest version answers 404 with its metadata.
            let version = parsed()
                .ok()
                .and_then(|b| b.data)
                .and_then(|d| d.metadata)
                .map(|m| m.version)
                .unwrap_or(0);
            let current_version = if version == 0 {
                self.current_version(name).await?
            } else {
                version
            };
            return Ok(RemoteRead::Absent { current_version });
        }
        if !reply.status.is_success() {
            return Err(self.fail(&op, &reply));
        }
        let data = parsed()?.data.ok_or_else(|| VaultError::Decode {
            op: op.clone(),
            url: reply.url.clone(),
        })?;
        let meta = data.metadata.unwrap_or_default();
        match data.data {
            None => Ok(RemoteRead::Absent {
                current_version: meta.version,
            }),
            Some(values) => {
                let custom = match meta.custom_metadata {
                    Some(c) => c,
                    None => self.custom_metadata(name).await?,
                };
                Ok(RemoteRead::Present(RemoteSecret {
                    version: meta.version,
                    values,
                    meta: SecretMeta::from_custom(&custom),
                    created_time: meta.created_time,
                }))
            }
        }
    }

    async fn metadata(&self, name: &str) -> Result<Option<KvMetadata>, VaultError> {
        let op = format!("read metadata of {name}");
        let reply = self
            .send(Method::GET, &self.metadata_path(name), None)
            .await?;
        if reply.status == StatusCode::NOT_FOUND
            && !errors_of(&reply.body).contains("no handler for route")
        {
            return Ok(None);
        }
        if !reply.status.is_success() {
            return Err(self.fail(&op, &reply));
        }
        let body: KvMetadataBody =
            serde_json::from_slice(&reply.body).map_err(|_| VaultError::Decode {
                op,
                url: reply.url.clone(),
            })?;
        Ok(Some(body.data))
    }

    async fn current_version(&self, name: &str) -> Result<u64, VaultError> {
        Ok(self
            .metadata(name)
            .await?
            .map(|m| m.current_version)
            .unwrap_or(0))
    }

    async fn custom_metadata(&self, name: &str) -> Result<BTreeMap<String, String>, VaultError> {
        Ok(self
            .metadata(name)
            .await?
            .and_then(|m| m.custom_metadata)
            .unwrap_or_default())
    }

    /// Write a new version with check-and-set `cas` (0: the name must be
    /// new), then its metadata. Returns the new version.
    pub async fn write(
        &self,
        name: &str,
        values: &Values,
        meta: &SecretMeta,
        cas: u64,
    ) -> Result<u64, VaultError> {
        let op = format!("write {name}");
        let body = serde_json::to_vec(&WriteBody {
            data: values,
            options: WriteOptions { cas },
        })
        .expect("values serialize");
        let reply = self
            .send(Method::POST, &self.data_path(name), Some(body))
            .await?;
        if reply.status == StatusCode::BAD_REQUEST
            && errors_of(&reply.body).contains("check-and-set")
        {
            let current = self.current_version(name).await.unwrap_or(0);
            return Err(VaultError::CasMismatch {
                name: name.to_owned(),
                expected: cas,
                current,
            });
        }
        if !reply.status.is_success() {
            return Err(self.fail(&op, &reply));
        }
        let written: KvWriteBody =
            serde_json::from_slice(&reply.body).map_err(|_| VaultError::Decode {
                op: op.clone(),
                url: reply.url.clone(),
            })?;
        self.write_metadata(name, meta).await?;
        Ok(written.data.version)
    }

    /// Set a secret's `custom_metadata` (provider, path, env var names).
    pub async fn write_metadata(&self, name: &str, meta: &SecretMeta) -> Result<(), VaultError> {
        let body = serde_json::to_vec(&serde_json::json!({ "custom_metadata": meta.to_custom() }))
            .expect("metadata serializes");
        let reply = self
            .send(Method::POST, &self.metadata_path(name), Some(body))
            .await?;
        if !reply.status.is_success() {
            return Err(self.fail(&format!("write metadata of {name}"), &reply));
        }
        Ok(())
    }

    /// Delete a secret and all its versions (metadata included).
    pub async fn destroy(&self, name: &str) -> Result<(), VaultError> {
        let reply = self
            .send(Method::DELETE, &self.metadata_path(name), None)
            .await?;
        if !reply.status.is_success() && reply.status != StatusCode::NOT_FOUND {
            return Err(self.fail(&format!("delete {name}"), &reply));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_leader_answers_are_recognised() {
        assert!(is_not_leader(StatusCode::from_u16(307).unwrap(), b""));
        assert!(is_not_leader(StatusCode::SERVICE_UNAVAILABLE, b""));
        assert!(is_not_leader(
            StatusCode::INTERNAL_SERVER_ERROR,
            br#"{"errors":["local node not active but active cluster node not found"]}"#
        ));
        assert!(!is_not_leader(
            StatusCode::INTERNAL_SERVER_ERROR,
            br#"{"errors":["storage failure"]}"#
        ));
        assert!(!is_not_leader(StatusCode::FORBIDDEN, b""));
        let upgrading = br#"{"errors":["Waiting for the primary to upgrade from non-versioned to versioned data. This backend will be unavailable for a brief period and will resume service when the primary is finished."]}"#;
        assert!(is_not_leader(StatusCode::BAD_REQUEST, upgrading));
        assert!(!is_not_leader(
            StatusCode::BAD_REQUEST,
            br#"{"errors":["check-and-set parameter did not match the current version"]}"#
        ));
        assert!(!is_not_leader(StatusCode::OK, b""));
    }

    fn config_for(urls: &[&str], allow_insecure_http: bool) -> VaultConfig {
        VaultConfig {
            urls: urls.iter().map(|u| (*u).to_owned()).collect(),
            mount: "secret".into(),
            prefix: "rh/t".into(),
            ca_cert: None,
            token: Token::new("t"),
            token_source: super::super::config::TokenSource::Given,
            allow_insecure_http,
        }
    }

    #[test]
    fn cleartext_is_only_plain_http_off_this_machine_as_the_client_reads_it() {
        for url in [
            "http://10.0.0.5:8200",
            "http://vault.example:8200",
            "http://[2001:db8::1]:8200",
            "http://localhost.example.com",
            "http://localhost.:8200",
            "http://0.0.0.0:8200",
        ] {
            let err = VaultClient::new(&config_for(&[url], false)).unwrap_err();
            assert!(
                matches!(err, VaultError::InsecureHttp { .. }),
                "{url}: {err}"
            );
            assert!(VaultClient::new(&config_for(&[url], true)).is_ok(), "{url}");
        }
        // Not the client's reading of themselves: refused even when plain
        // http is allowed (the check would be made on another host).
        for url in [
            " http://127.0.0.1:8200",
            "http:10.0.0.2:8200",
            "http://10.0.0.2:8200\\@127.0.0.1",
            "http://127.0.0.1@10.0.0.2",
        ] {
            let err = VaultClient::new(&config_for(&[url], true)).unwrap_err();
            assert!(matches!(err, VaultError::Config(_)), "{url:?}: {err}");
        }
        for url in [
            "https://10.0.0.5:8200",
            "http://127.0.0.1:8200",
            "http://127.8.9.10",
            "http://localhost:8200",
            "http://[::1]:8200",
            "http://[::ffff:7f00:1]:8200",
        ] {
            assert!(
                VaultClient::new(&config_for(&[url], false)).is_ok(),
                "{url}"
            );
        }
    }

    #[test]
    fn metadata_round_trips_through_custom_metadata() {
        let meta = SecretMeta {
            provider: Some("openai".into()),
            path: None,
            env_vars: Some([("api_key".to_string(), "OPENAI_API_KEY".to_string())].into()),
        };
        let custom = meta.to_custom();
        assert_eq!(custom["provider"], "openai");
        assert_eq!(SecretMeta::from_custom(&custom), meta);
    }
}
