//! The controller's side of the one store client (`common::openbao`):
//! its options (connect in 3 s, 1 s for every URL but the last one tried,
//! 20 s per request, no redirects, answers up to [`MAX_ANSWER_BYTES`], the
//! URLs in the user's order, and an election wait: rounds over the URLs are
//! repeated for up to 40 s while some node answers "try another"), its
//! errors worded for the terminal ([`VaultError`]: a refused token, an
//! unknown mount, a TLS failure naming the CA file), and the calls of the
//! `vault` commands: secrets under `<mount>/<prefix>/<name>` with their
//! provider, path and env var names in `custom_metadata` ([`SecretMeta`]).
//! It refuses to send the token over plain `http://` to a host that is not
//! loopback unless the user opted in (`RH_VAULT_ALLOW_HTTP=1` or
//! `"allow_insecure_http": true`). The token goes in `X-Vault-Token` only;
//! nothing here logs it or a value, and text the server chose (errors,
//! versions, token names) is escaped before it can reach a terminal.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use common::openbao::{self, Answer, Call, Kv, Method, Options, Probe, Retry, Start, ToActive};
use common::Values;
use serde::{Deserialize, Serialize};

pub use common::openbao::TokenInfo;

use super::config::{Token, VaultConfig};
use super::VaultError;
use crate::output::{escape_text, FOREIGN_TEXT_MAX};

/// The largest answer read from the store (a KV read, a list, an error).
pub const MAX_ANSWER_BYTES: usize = 32 << 20;

/// How the controller uses the one client.
const OPTIONS: Options = Options {
    user_agent: concat!("rh-controller/", env!("CARGO_PKG_VERSION")),
    connect_timeout: Duration::from_secs(3),
    // A store node that is down (its packets dropped) costs every command
    // this long until it is back, and a healthy one on a LAN or a region
    // answers a connect in well under it (one lost SYN is retried by the
    // kernel at 1 s: then the next server is asked).
    failover_connect_timeout: Some(Duration::from_millis(1000)),
    request_timeout: Duration::from_secs(20),
    idle_timeout: None,
    body_cap: MAX_ANSWER_BYTES,
    start: Start::First,
    // The active node for every call: this CLI reads what it has just
    // written, and a standby answers from its own, maybe older, copy.
    to_active: ToActive::All,
    resend_timed_out_writes: true,
    // An election: some node says the active one is gone or not known yet.
    retry: Retry {
        tries: u32::MAX,
        budget: Duration::from_secs(40),
        base: Duration::from_millis(200),
        cap: Duration::from_secs(1),
    },
};

/// A client bound to one store (URLs, mount, prefix, token).
pub struct VaultClient {
    store: openbao::Client,
    mount: String,
    prefix: String,
    token: Token,
    ca_cert: Option<PathBuf>,
}

impl fmt::Debug for VaultClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VaultClient")
            .field("urls", &self.store.urls())
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
        let shown = config
            .ca_cert
            .as_ref()
            .map_or_else(|| "(none)".into(), |p| p.display().to_string());
        let pem = match &config.ca_cert {
            Some(ca) => Some(std::fs::read(ca).map_err(|e| VaultError::CaFile {
                path: shown.clone(),
                reason: e.to_string(),
            })?),
            None => None,
        };
        // The CA file's certificates are roots, and one of them used as the
        // server's own certificate is trusted as itself (a self-signed
        // store certificate), name and validity checked.
        let store =
            openbao::Client::new(&config.urls, pem.as_deref(), OPTIONS).map_err(|e| match e {
                openbao::BuildError::Ca(reason) => VaultError::CaFile {
                    path: shown,
                    reason,
                },
                openbao::BuildError::Http(reason) => VaultError::Client { reason },
            })?;
        Ok(Self {
            store,
            mount: config.mount.clone(),
            prefix: config.prefix.clone(),
            token: config.token.clone(),
            ca_cert: config.ca_cert.clone(),
        })
    }

    /// The server URLs, in order.
    pub fn urls(&self) -> &[String] {
        self.store.urls()
    }

    /// The URL that answered last (the first one before any request).
    pub fn current_url(&self) -> &str {
        self.store.current_url()
    }

    /// The KV v2 mount, with the user's token (paths under the mount).
    pub(crate) fn kv(&self) -> Kv<'_> {
        Kv::new(&self.store, self.token.expose_secret(), &self.mount)
    }

    /// Send one call (path under `/v1/`) with the user's token to the first
    /// server that can serve it.
    pub(crate) async fn send(
        &self,
        op: &str,
        method: Method,
        path: &str,
        body: Option<&[u8]>,
        headers: &[(&'static str, String)],
    ) -> Result<Answer, VaultError> {
        let mut call = Call::new(op, method, path)
            .token(self.token.expose_secret())
            .headers(headers);
        call.body = body;
        self.store.send(&call).await.map_err(|e| self.error(e))
    }

    /// A failed call as the controller words it.
    pub(crate) fn error(&self, e: openbao::Error) -> VaultError {
        use openbao::Error as E;
        match e {
            E::Unreachable {
                tried,
                details,
                busy,
                tls,
            } => match tls {
                Some(t) if tried == 1 || !busy => self.tls_error(&t.url, t.reason),
                _ => VaultError::Unreachable { tried, details },
            },
            E::TooLarge { url, limit, .. } => VaultError::TooLarge { url, limit },
            E::Forbidden { url, .. }
            | E::Http {
                url, status: 401, ..
            } => VaultError::TokenRejected { url },
            E::Http {
                url,
                status: 404,
                message,
                ..
            } if message.contains("no handler for route") => VaultError::UnknownMount {
                mount: self.mount.clone(),
                url,
            },
            E::Http {
                op,
                url,
                status,
                message,
            } => VaultError::Http {
                op,
                url,
                status,
                message,
            },
            E::Decode { op, url } => VaultError::Decode { op, url },
            E::CasMismatch { path, expected } => VaultError::CasMismatch {
                name: path,
                expected,
                current: 0,
            },
        }
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

    /// `GET /v1/sys/health` on each URL (no failover): what each node is.
    pub async fn health_all(&self) -> Vec<Health> {
        let mut out = Vec::with_capacity(self.urls().len());
        for (index, url) in self.urls().iter().enumerate() {
            let probe = self.store.probe(index, "sys/health", None).await;
            out.push(self.health(url, probe));
        }
        out
    }

    fn health(&self, url: &str, probe: Probe) -> Health {
        #[derive(Deserialize, Default)]
        struct HealthBody {
            #[serde(default)]
            version: Option<String>,
        }
        let health = |state: &str, version: Option<String>, detail: Option<String>| Health {
            url: url.to_owned(),
            state: state.into(),
            version,
            detail,
        };
        let (status, body) = match probe {
            Probe::Failed { reason, tls: true } => {
                let detail = self.tls_error(url, reason).to_string();
                return health("tls-error", None, Some(detail));
            }
            Probe::Failed { reason, .. } => return health("unreachable", None, Some(reason)),
            Probe::Answered { status, body } => (status.as_u16(), body),
        };
        let (version, error) = match body {
            Ok(Some(bytes)) => {
                let body: HealthBody = serde_json::from_slice(&bytes).unwrap_or_default();
                (body.version.map(|v| escape_text(&v, 64)), None)
            }
            Ok(None) => {
                let limit = openbao::client::MAX_HEALTH_BYTES;
                let url = url.to_owned();
                let detail = VaultError::TooLarge { url, limit }.to_string();
                return health("unexpected", None, Some(detail));
            }
            Err(reason) => (None, Some(reason)),
        };
        let state = openbao::health_state(status);
        let detail = error.or_else(|| (state == "unexpected").then(|| format!("HTTP {status}")));
        health(state, version, detail)
    }

    /// `GET /v1/auth/token/lookup-self`: the token is valid (403 -> rejected).
    pub async fn lookup_self(&self) -> Result<TokenInfo, VaultError> {
        self.store
            .lookup_self(self.token.expose_secret())
            .await
            .map_err(|e| self.error(e))
    }

    /// Check that the mount exists and answers KV v2 (a metadata list).
    pub async fn check_mount(&self) -> Result<(), VaultError> {
        self.list().await.map(|_| ())
    }

    fn path_of(&self, name: &str) -> String {
        format!("{}/{name}", self.prefix)
    }

    /// Names under the prefix (`LIST` on the metadata path); empty when none.
    pub async fn list(&self) -> Result<Vec<String>, VaultError> {
        let names = self.kv().list(&self.prefix).await;
        let mut keys: Vec<String> = names
            .map_err(|e| self.error(e))?
            .into_iter()
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
        let read = self.kv().read::<Values>(&self.path_of(name), None).await;
        let read = read.map_err(|e| self.error(e))?;
        let Some(values) = read.data else {
            // A deleted latest version answers with its number.
            let current_version = match read.version {
                0 => self.metadata(name).await?.map_or(0, |m| m.current),
                v => v,
            };
            return Ok(RemoteRead::Absent { current_version });
        };
        let custom = match read.custom_metadata {
            Some(c) => c,
            None => self
                .metadata(name)
                .await?
                .and_then(|m| m.custom_metadata)
                .unwrap_or_default(),
        };
        Ok(RemoteRead::Present(RemoteSecret {
            version: read.version,
            values,
            meta: SecretMeta::from_custom(&custom),
            created_time: read.created_time,
        }))
    }

    async fn metadata(&self, name: &str) -> Result<Option<openbao::KvMetadata>, VaultError> {
        let meta = self.kv().metadata(&self.path_of(name)).await;
        meta.map_err(|e| self.error(e))
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
        match self
            .kv()
            .write(&self.path_of(name), values, Some(cas))
            .await
        {
            Err(openbao::Error::CasMismatch { .. }) => {
                let current = self.metadata(name).await.ok().flatten();
                Err(VaultError::CasMismatch {
                    name: name.to_owned(),
                    expected: cas,
                    current: current.map_or(0, |m| m.current),
                })
            }
            Err(e) => Err(self.error(e)),
            Ok(version) => {
                self.write_metadata(name, meta).await?;
                Ok(version)
            }
        }
    }

    /// Set a secret's `custom_metadata` (provider, path, env var names).
    pub async fn write_metadata(&self, name: &str, meta: &SecretMeta) -> Result<(), VaultError> {
        let custom = meta.to_custom();
        let written = self.kv().write_metadata(&self.path_of(name), &custom).await;
        written.map_err(|e| self.error(e))
    }

    /// Delete a secret and all its versions (metadata included).
    pub async fn destroy(&self, name: &str) -> Result<(), VaultError> {
        let deleted = self.kv().delete_all(&self.path_of(name)).await;
        deleted.map_err(|e| self.error(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
