//! The agent's client of the remote store (Vault KV v2 API, OpenBao): one
//! reqwest client (rustls, the bundle's CA added, connect and request
//! timeouts, no redirects) over every store URL of the bundle. Requests
//! start at a node picked at random per agent (OpenBao standbys serve reads
//! with Raft storage, so reads spread over the cluster) and fail over to the
//! next URL on a connection error or a "not this node" answer (429, 472,
//! 473, 5xx). A write or login (anything but GET: standbys forward those to
//! the active node) that timed out is not sent to the next node: that node
//! would forward it to the same overloaded active node, and the store still
//! works on the abandoned one; the poll fails and backs off instead (a
//! timeout is not "busy": retrying it within the poll, tried with 10,000
//! nodes booting, fed the overload). Logins and writes start at the active
//! node, found with the unauthenticated `sys/health` (200 there, 429 on a
//! standby) and forgotten on any failure: a standby would forward them
//! over its cluster connection (the 10,000-node boot of
//! scripts/bench.d/60-fleet.sh took 46% of the machine instead of 49%,
//! probes included); reads stay spread. Answers
//! are read up to a cap. Only the calls fleet mode needs: unwrap, AppRole
//! login, KV v2 read and write.
//! Tokens and secret_ids go in headers and bodies only; errors name URLs,
//! paths and statuses, never a token, a secret_id or a value.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::fleet::Bundle;
use common::SecretText;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use thiserror::Error;

/// Largest answer read from the store (a manifest or one secret is far smaller).
pub(crate) const BODY_CAP: usize = 4 * 1024 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a `sys/health` probe for the active node may take.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

/// A store call that failed. No token, secret_id or value in any message.
#[derive(Debug, Error)]
pub enum StoreError {
    #[error("no store node answered (tried {tried}): {details}")]
    Unreachable {
        tried: usize,
        details: String,
        /// Every node tried answered 429 or 5xx (busy, sealed, a write
        /// conflict on the active node): worth a short retry.
        busy: bool,
    },
    #[error("{op}: permission denied by {url} (HTTP 403)")]
    Forbidden { op: String, url: String },
    #[error("{op}: HTTP {status} from {url}{}", if message.is_empty() { String::new() } else { format!(": {message}") })]
    Http {
        op: String,
        url: String,
        status: u16,
        message: String,
    },
    #[error("{op}: the answer from {url} is not the expected JSON")]
    Decode { op: String, url: String },
    #[error("{op}: the answer from {url} is larger than {BODY_CAP} bytes")]
    TooLarge { op: String, url: String },
    #[error("the bundle's CA certificate cannot be used: {0}")]
    Ca(String),
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

/// One answer: status and JSON body (may hold values: no `Debug`).
pub(crate) struct Answer {
    pub(crate) url: String,
    pub(crate) status: StatusCode,
    pub(crate) json: Value,
}

/// A client bound to the bundle's store URLs.
#[derive(Debug, Clone)]
pub(crate) struct StoreClient {
    http: reqwest::Client,
    urls: Arc<Vec<String>>,
    preferred: Arc<AtomicUsize>,
    /// The node that answered `sys/health` 200 (the active node), or
    /// `usize::MAX` when not known.
    active: Arc<AtomicUsize>,
    /// Requests sent (the `/metrics` counter).
    pub(crate) requests: Arc<AtomicU64>,
}

/// A random number (jitter, picking a store node).
pub(crate) fn random_u32() -> u32 {
    let mut b = [0u8; 4];
    getrandom::getrandom(&mut b).expect("the OS random source is available");
    u32::from_le_bytes(b)
}

/// How long a store connection may sit idle before the client closes it:
/// three poll periods. The connection reads go over, used every poll, stays
/// open (a new TCP connection per read costs the store half as much again:
/// 0.51 against 0.34 CPU-ms, scripts/bench.d/62-fleet-store-cost.sh); one to
/// the active node that only carries a login every few minutes and a report
/// every heartbeat is closed 30 s after its last use (at the default 10 s
/// poll) instead of reqwest's 90 s, so store nodes hold fewer idle
/// connections (a goroutine and its buffers each) for nodes that write
/// through them.
fn idle_timeout(poll: Duration) -> Duration {
    poll * 3
}

impl StoreClient {
    /// A client for the bundle's URLs and CA, starting at a random URL,
    /// for a node polling every `poll`.
    pub(crate) fn new(bundle: &Bundle, poll: Duration) -> Result<Self, StoreError> {
        // The bundle's CA certificates are roots, and one of them used as
        // the store's own certificate is trusted as itself (a self-signed
        // store certificate), name and validity checked.
        let pinned = match &bundle.ca_pem {
            Some(pem) => common::store_tls::pem_certs(pem.as_bytes()).map_err(StoreError::Ca)?,
            None => vec![],
        };
        let tls = common::store_tls::client_config(&pinned).map_err(StoreError::Ca)?;
        let builder = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .pool_idle_timeout(idle_timeout(poll))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("rh-agent/", env!("CARGO_PKG_VERSION")));
        let http = builder
            .build()
            .map_err(|e| StoreError::Client(e.to_string()))?;
        let n = bundle.urls.len().max(1);
        Ok(Self {
            http,
            urls: Arc::new(
                bundle
                    .urls
                    .iter()
                    .map(|u| u.trim_end_matches('/').to_owned())
                    .collect(),
            ),
            preferred: Arc::new(AtomicUsize::new(random_u32() as usize % n)),
            active: Arc::new(AtomicUsize::new(usize::MAX)),
            requests: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Where a request starts: a read at the preferred node; a login or
    /// write at the active node (asked of each node in turn with
    /// `sys/health` when not known; the preferred one when none says so).
    async fn start_for(&self, method: &Method) -> usize {
        let n = self.urls.len();
        let preferred = self.preferred.load(Ordering::Relaxed);
        if *method == Method::GET || n < 2 {
            return preferred;
        }
        let known = self.active.load(Ordering::Relaxed);
        if known < n {
            return known;
        }
        for i in 0..n {
            let index = (preferred + i) % n;
            self.requests.fetch_add(1, Ordering::Relaxed);
            let probe = self
                .http
                .get(format!("{}/v1/sys/health", self.urls[index]))
                .timeout(HEALTH_TIMEOUT)
                .send()
                .await;
            if probe.is_ok_and(|r| r.status() == StatusCode::OK) {
                self.active.store(index, Ordering::Relaxed);
                return index;
            }
        }
        preferred
    }

    /// Send one request (path under `/v1/`): a read to the preferred node,
    /// a login or write to the active one; failing over to the next on a
    /// connection error or a "not this node" answer.
    pub(crate) async fn send(
        &self,
        op: &str,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<SecretText>,
    ) -> Result<Answer, StoreError> {
        let start = self.start_for(&method).await;
        let read = method == Method::GET;
        let result = self.send_from(start, op, method, path, token, body).await;
        if !read && !matches!(&result, Ok(a) if a.url == self.urls[start]) {
            // The active node failed, or another answered: ask again next time.
            self.active.store(usize::MAX, Ordering::Relaxed);
        }
        result
    }

    /// Try the nodes from `start` on. Only reads move `preferred` (the
    /// node reads start at); logins and writes follow `active`.
    async fn send_from(
        &self,
        start: usize,
        op: &str,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<SecretText>,
    ) -> Result<Answer, StoreError> {
        let n = self.urls.len();
        let mut failures = Vec::new();
        let mut busy = true;
        for i in 0..n {
            let index = (start + i) % n;
            let url = &self.urls[index];
            self.requests.fetch_add(1, Ordering::Relaxed);
            let mut req = self
                .http
                .request(method.clone(), format!("{url}/v1/{path}"))
                .header("X-Vault-Request", "true");
            if let Some(token) = token {
                req = req.header("X-Vault-Token", token);
            }
            if let Some(body) = &body {
                req = req
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body.expose_secret().to_owned());
            }
            let mut resp = match req.send().await {
                Ok(r) => r,
                Err(e) if e.is_timeout() && !e.is_connect() => {
                    busy = false;
                    failures.push(format!("{url}: timed out"));
                    if method != Method::GET {
                        return Err(StoreError::Unreachable {
                            tried: i + 1,
                            details: failures.join("; "),
                            busy,
                        });
                    }
                    continue;
                }
                Err(e) => {
                    busy = false;
                    // A refused certificate is named as one, not as "cannot connect".
                    let what = common::store_tls::tls_failure(&e).unwrap_or_else(|| {
                        if e.is_timeout() {
                            "timed out".into()
                        } else if e.is_connect() {
                            "cannot connect".into()
                        } else {
                            "request failed".into()
                        }
                    });
                    failures.push(format!("{url}: {what}"));
                    continue;
                }
            };
            let status = resp.status();
            // Answers carry tokens and values: zeroed when dropped.
            let mut bytes = zeroize::Zeroizing::new(Vec::new());
            let mut cut = false;
            loop {
                match resp.chunk().await {
                    Ok(Some(chunk)) => {
                        if bytes.len() + chunk.len() > BODY_CAP {
                            return Err(StoreError::TooLarge {
                                op: op.to_owned(),
                                url: url.clone(),
                            });
                        }
                        bytes.extend_from_slice(&chunk);
                    }
                    Ok(None) => break,
                    Err(_) => {
                        cut = true;
                        break;
                    }
                }
            }
            if cut {
                busy = false;
                failures.push(format!("{url}: the answer was cut"));
                continue;
            }
            if matches!(status.as_u16(), 429 | 472 | 473 | 500..=599) {
                let why = common::fleet::store_errors(&bytes);
                failures.push(if why.is_empty() {
                    format!("{url}: HTTP {}", status.as_u16())
                } else {
                    format!("{url}: HTTP {}: {why}", status.as_u16())
                });
                continue;
            }
            let json = if bytes.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&bytes).map_err(|_| StoreError::Decode {
                    op: op.to_owned(),
                    url: url.clone(),
                })?
            };
            if method == Method::GET {
                self.preferred.store(index, Ordering::Relaxed);
            }
            return Ok(Answer {
                url: url.clone(),
                status,
                json,
            });
        }
        // Next time, start elsewhere.
        if method == Method::GET {
            self.preferred
                .store((start + 1) % n.max(1), Ordering::Relaxed);
        }
        Err(StoreError::Unreachable {
            tried: n,
            details: failures.join("; "),
            busy: busy && n > 0,
        })
    }

    /// An error for an unexpected answer.
    pub(crate) fn fail(op: &str, answer: &Answer) -> StoreError {
        if answer.status == StatusCode::FORBIDDEN {
            return StoreError::Forbidden {
                op: op.to_owned(),
                url: answer.url.clone(),
            };
        }
        StoreError::Http {
            op: op.to_owned(),
            url: answer.url.clone(),
            status: answer.status.as_u16(),
            message: common::fleet::store_errors(answer.json.to_string().as_bytes()),
        }
    }

    /// Read a KV v2 document (`<mount>/data/<path>`): its version and data,
    /// `None` when absent (or deleted).
    pub(crate) async fn kv_read(
        &self,
        token: &str,
        mount: &str,
        path: &str,
        version: Option<u64>,
    ) -> Result<Option<(u64, Value)>, StoreError> {
        let op = format!("read {path}");
        let mut full = format!("{mount}/data/{path}");
        if let Some(v) = version {
            full.push_str(&format!("?version={v}"));
        }
        let mut a = self
            .send(&op, Method::GET, &full, Some(token), None)
            .await?;
        if a.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !a.status.is_success() {
            return Err(Self::fail(&op, &a));
        }
        let v = a.json["data"]["metadata"]["version"].as_u64().unwrap_or(0);
        match a.json["data"]["data"].take() {
            Value::Null => Ok(None),
            data => Ok(Some((v, data))),
        }
    }

    /// Write a KV v2 document.
    pub(crate) async fn kv_write(
        &self,
        token: &str,
        mount: &str,
        path: &str,
        data: &Value,
    ) -> Result<(), StoreError> {
        let op = format!("write {path}");
        let body =
            serde_json::to_string(&serde_json::json!({ "data": data })).expect("JSON serializes");
        let a = self
            .send(
                &op,
                Method::POST,
                &format!("{mount}/data/{path}"),
                Some(token),
                Some(SecretText::new(body)),
            )
            .await?;
        if !a.status.is_success() {
            return Err(Self::fail(&op, &a));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicI64;

    use serde_json::json;

    use super::*;

    /// A store node (answering `sys/health` 200) behind a TCP proxy that
    /// counts the connections open through it and those ever opened.
    async fn counted_node() -> (String, Arc<AtomicI64>, Arc<AtomicI64>) {
        let app =
            axum::Router::new().route("/v1/sys/health", axum::routing::get(|| async { "{}" }));
        let server = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = server.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(server, app).await.unwrap() });
        let proxy = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", proxy.local_addr().unwrap());
        let (open, opened) = (Arc::new(AtomicI64::new(0)), Arc::new(AtomicI64::new(0)));
        let (o, n) = (open.clone(), opened.clone());
        tokio::spawn(async move {
            loop {
                let (mut client, _) = proxy.accept().await.unwrap();
                let mut server = tokio::net::TcpStream::connect(target).await.unwrap();
                o.fetch_add(1, Ordering::SeqCst);
                n.fetch_add(1, Ordering::SeqCst);
                let o = o.clone();
                tokio::spawn(async move {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    o.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        (url, open, opened)
    }

    #[tokio::test]
    async fn a_connection_used_every_poll_is_kept_and_one_idle_for_three_is_closed() {
        let (url, open, opened) = counted_node().await;
        let bundle: Bundle = serde_json::from_value(json!({
            "format": 1, "cluster": "c", "urls": [url], "mount": "secret",
            "prefix": "p", "auth_mount": "approle", "role_id": "r"
        }))
        .unwrap();
        let poll = Duration::from_millis(300);
        let client = StoreClient::new(&bundle, poll).unwrap();
        for _ in 0..8 {
            let a = client
                .send("probe", Method::GET, "sys/health", None, None)
                .await
                .unwrap();
            assert_eq!(a.status, StatusCode::OK);
            tokio::time::sleep(poll).await;
        }
        assert_eq!(
            (open.load(Ordering::SeqCst), opened.load(Ordering::SeqCst)),
            (1, 1)
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while open.load(Ordering::SeqCst) > 0 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(
            open.load(Ordering::SeqCst),
            0,
            "an idle connection was kept"
        );
    }

    /// A client of one store URL with `ca_pem` as the bundle's CA.
    fn tls_client(url: &str, ca_pem: &std::path::Path) -> StoreClient {
        let bundle: Bundle = serde_json::from_value(json!({
            "format": 1, "cluster": "c", "urls": [url], "mount": "secret",
            "prefix": "p", "auth_mount": "approle", "role_id": "r",
            "ca_pem": std::fs::read_to_string(ca_pem).unwrap()
        }))
        .unwrap();
        StoreClient::new(&bundle, Duration::from_secs(10)).unwrap()
    }

    #[tokio::test]
    async fn a_pinned_self_signed_store_certificate_is_trusted_as_itself_and_nothing_else() {
        use test_support::{self_signed_cert, TlsServer, Validity};
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // openssl's self-signed certificate (CA:TRUE) for the store's IP.
        let (cert, key) = self_signed_cert(d, "store", "127.0.0.1", Validity::Current);
        let server = TlsServer::start(&d.join("s1"), &cert, &key, &[]);
        let answer = tls_client(&server.url(), &cert)
            .send("health", Method::GET, "sys/health", None, None)
            .await
            .unwrap_or_else(|e| panic!("the pinned certificate is trusted: {e}"));
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.json["version"], "tls-test");

        // Refused, each named as a certificate problem (never "cannot connect").
        let (_servers, refused) = test_support::refused_pins(d, &server);
        for pin in &refused {
            let (url, pinned, problem) = (&pin.url, &pin.pinned, pin.problem);
            let err = tls_client(url, pinned)
                .send("health", Method::GET, "sys/health", None, None)
                .await
                .err()
                .unwrap_or_else(|| panic!("{url} with {} was trusted", pinned.display()))
                .to_string();
            assert!(
                err.contains(&format!("{url}: the server's TLS certificate was refused")),
                "{err}"
            );
            assert!(err.contains(problem), "{problem}: {err}");
            assert!(!err.contains("cannot connect"), "{err}");
        }
    }
}
