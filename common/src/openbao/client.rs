//! The transport of the OpenBao client: one reqwest client (the TLS of
//! [`crate::store_tls`], connect and request timeouts, no redirects) over
//! every URL of a store cluster, the one list of answers that mean "try
//! another node" ([`try_another`], with why each answer is in it or not), the one capped body read
//! ([`read_capped`]), the one backoff ([`Retry`]), and active-node routing
//! of logins and writes. Logs URLs and statuses at debug level only; never
//! a token, a body or a value.

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::Value;
use zeroize::Zeroizing;

use super::Error;
use crate::text::{escape_text, FOREIGN_TEXT_MAX};

/// Whether an answer means "this node cannot serve that now: try another
/// node (or, when none could, the same ones a moment later)": the one list
/// of both clients, decided from what OpenBao answers (`http/handler.go`, `vault/ha.go`, `sdk/logical/response_util.go`):
/// 307/308 (`respondStandby`: a standby that cannot forward redirects to the
/// active node); 429 (a rate-limit or lease-count quota of that node); 502,
/// 503, 504 (sealed: `ErrSealed` becomes 503 whatever the handler chose;
/// "node is not active", "no active Vault instance found", overloaded; a
/// proxy in front of a node that is down or slow); a 500 whose message says
/// the node is not the active one or none is ("local node not active but
/// active cluster node not found" from `handleRequestForwarding`, sealed,
/// standby, leadership lost, election: OpenBao answers those with a bare
/// 500, so its text decides) or "transaction commit failed" (concurrent
/// Raft transactions on the active node, e.g. logins of nodes booting
/// together with one use-limited secret_id); a 400 "waiting for the primary
/// to upgrade" (a new active node's KV v2 mount just after a leader change).
/// Not in it: 472 and 473, which OpenBao answers on `sys/health` only (read
/// per node, never failed over), and any other 5xx: the server's own
/// failure (storage, a plugin), which another node would forward to the
/// same active node; it is reported as it is (before this client, the
/// agent tried every 5xx elsewhere and the controller waited 40 s on some).
pub fn try_another(status: StatusCode, body: &[u8]) -> bool {
    match status.as_u16() {
        307 | 308 | 429 | 502 | 503 | 504 => true,
        500 => {
            let text = errors_of(body).to_lowercase();
            [
                "active",
                "leader",
                "standby",
                "sealed",
                "election",
                "transaction commit failed",
            ]
            .iter()
            .any(|w| text.contains(w))
        }
        400 => errors_of(body)
            .to_lowercase()
            .contains("waiting for the primary to upgrade"),
        _ => false,
    }
}

/// What a node's `GET /v1/sys/health` status says it is (its answers are
/// not errors: 429 is a standby, 503 a sealed node...).
pub fn health_state(status: u16) -> &'static str {
    match status {
        200 => "active",
        429 => "standby",
        472 => "dr-secondary",
        473 => "perf-standby",
        501 => "uninitialized",
        503 => "sealed",
        _ => "unexpected",
    }
}

/// The server's error messages (`{"errors": [...]}`) joined with `; `, with
/// control and bidi characters escaped and cut to [`FOREIGN_TEXT_MAX`]
/// characters: they reach terminals, logs and node reports. Empty when
/// there are none (or the body is not that JSON).
pub fn errors_of(body: &[u8]) -> String {
    #[derive(serde::Deserialize, Default)]
    struct ErrorBody {
        #[serde(default)]
        errors: Vec<String>,
    }
    let parsed: ErrorBody = serde_json::from_slice(body).unwrap_or_default();
    escape_text(&parsed.errors.join("; "), FOREIGN_TEXT_MAX)
}

/// Read an answer's body chunk by chunk into a buffer zeroed when dropped;
/// `Ok(None)` as soon as it would exceed `cap` bytes (a declared length
/// over the cap is refused unread).
pub async fn read_capped(
    mut response: reqwest::Response,
    cap: usize,
) -> Result<Option<Zeroizing<Vec<u8>>>, reqwest::Error> {
    if response
        .content_length()
        .is_some_and(|len| len > cap as u64)
    {
        return Ok(None);
    }
    let mut body = Zeroizing::new(Vec::new());
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > cap {
            return Ok(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(body))
}

/// A short reason for a transport error: what failed and its root cause;
/// a TLS failure is named as such (a refused certificate is no "cannot
/// connect").
pub fn describe_transport(err: &reqwest::Error) -> String {
    if let Some(tls) = crate::store_tls::tls_failure(err) {
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

/// A uniform random number in `[0, 1]` (jitter).
pub fn random_fraction() -> f64 {
    let mut b = [0u8; 4];
    getrandom::getrandom(&mut b).expect("the OS random source is available");
    f64::from(u32::from_le_bytes(b)) / f64::from(u32::MAX)
}

/// How rounds over the nodes are repeated while no node could serve and
/// some answered "try another" ([`try_another`]): the one backoff, "full
/// jitter" (retry `n` waits uniformly in `[0, min(cap, base * 2^(n-1))]`,
/// so clients that collided once do not collide again in lockstep); no
/// retry starts later than `budget` after the first attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// Attempts in all (1: no retry).
    pub tries: u32,
    pub budget: Duration,
    pub base: Duration,
    pub cap: Duration,
}

impl Retry {
    /// One round only.
    pub const NONE: Retry = Retry {
        tries: 1,
        budget: Duration::ZERO,
        base: Duration::ZERO,
        cap: Duration::ZERO,
    };

    /// The wait before retry `attempt` (1-based).
    pub fn delay(&self, attempt: u32) -> Duration {
        let window = self
            .base
            .saturating_mul(1 << attempt.saturating_sub(1).min(16))
            .min(self.cap);
        window.mul_f64(random_fraction())
    }
}

/// Where the first request of a client goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// The first URL (a CLI: the order the user gave).
    First,
    /// A URL picked at random (a fleet: reads spread over the store nodes).
    Random,
}

/// Which calls a client sends to the active node rather than the
/// preferred one.
///
/// OpenBao's standbys answer a call themselves from their own Raft copy
/// and forward it only when it must write storage: a read there can miss
/// a write the active node made a moment ago, and a write whose handler
/// first reads (an OIDC role naming the key just written) can fail there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToActive {
    /// None: every call starts at the preferred node.
    Never,
    /// Logins and writes (a standby would forward them over its cluster
    /// connection, costing the store more); reads spread over the nodes,
    /// where a moment's staleness is fine (a fleet's polls).
    Writes,
    /// Every call: a CLI that reads what it has just written (a key, then
    /// a role naming it; a manifest version, then a check-and-set) sees
    /// its own writes.
    All,
}

/// What each side needs of the one client.
#[derive(Debug, Clone)]
pub struct Options {
    pub user_agent: &'static str,
    pub connect_timeout: Duration,
    /// The connect timeout for every URL of a round but the last one
    /// tried (a node that is down costs each command this long); `None`:
    /// `connect_timeout` for all.
    pub failover_connect_timeout: Option<Duration>,
    pub request_timeout: Duration,
    /// How long a pooled connection may sit idle (`None`: reqwest's 90 s).
    pub idle_timeout: Option<Duration>,
    /// The largest answer read; a larger one is [`Error::TooLarge`].
    pub body_cap: usize,
    pub start: Start,
    /// Which calls go to the active node (found with `sys/health`,
    /// forgotten on any failure) instead of the preferred one.
    pub to_active: ToActive,
    /// Send a login or write that timed out to the next node. Off for a
    /// fleet: that node forwards it to the same overloaded active node,
    /// which still works on the first.
    pub resend_timed_out_writes: bool,
    /// How rounds are repeated while nodes answer "try another" (an
    /// election, a sealed node, a busy active node).
    pub retry: Retry,
}

/// One API call (`path` under `/v1/`). The body (JSON) and the token may
/// be secrets: no derived `Debug`.
pub struct Call<'a> {
    /// What the call does, for errors (`read rh/a/manifest`).
    pub op: &'a str,
    pub method: Method,
    pub path: &'a str,
    pub token: Option<&'a str>,
    pub body: Option<&'a [u8]>,
    pub headers: &'a [(&'static str, String)],
}

impl fmt::Debug for Call<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Call")
            .field("op", &self.op)
            .field("method", &self.method)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl<'a> Call<'a> {
    /// A call without token, body or extra headers.
    pub fn new(op: &'a str, method: Method, path: &'a str) -> Self {
        Self {
            op,
            method,
            path,
            token: None,
            body: None,
            headers: &[],
        }
    }

    /// With `X-Vault-Token: token`.
    pub fn token(mut self, token: &'a str) -> Self {
        self.token = Some(token);
        self
    }

    /// With a JSON body.
    pub fn body(mut self, body: &'a [u8]) -> Self {
        self.body = Some(body);
        self
    }

    /// With extra headers (`X-Vault-Wrap-TTL`).
    pub fn headers(mut self, headers: &'a [(&'static str, String)]) -> Self {
        self.headers = headers;
        self
    }

    fn is_read(&self) -> bool {
        self.method == Method::GET
    }
}

/// A node's answer (any status but the "try another" ones). The body may
/// hold values or tokens: zeroed when dropped, no `Debug` of it.
pub struct Answer {
    pub url: String,
    pub status: StatusCode,
    pub body: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Answer")
            .field("url", &self.url)
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

impl Answer {
    /// The body as `T`; [`Error::Decode`] when it is not.
    pub fn parse<T: DeserializeOwned>(&self, op: &str) -> Result<T, Error> {
        serde_json::from_slice(&self.body).map_err(|_| Error::Decode {
            op: op.to_owned(),
            url: self.url.clone(),
        })
    }

    /// The body as JSON (`Null` when empty).
    pub fn json(&self, op: &str) -> Result<Value, Error> {
        if self.body.is_empty() {
            return Ok(Value::Null);
        }
        self.parse(op)
    }

    /// The server's error messages, escaped ([`errors_of`]).
    pub fn errors(&self) -> String {
        errors_of(&self.body)
    }

    /// This answer as the error of `op`: 403 is [`Error::Forbidden`].
    pub fn fail(&self, op: &str) -> Error {
        if self.status == StatusCode::FORBIDDEN {
            return Error::Forbidden {
                op: op.to_owned(),
                url: self.url.clone(),
            };
        }
        Error::Http {
            op: op.to_owned(),
            url: self.url.clone(),
            status: self.status.as_u16(),
            message: self.errors(),
        }
    }

    /// Whether a 404 is the server's "no such route" (no such mount), not
    /// "no such document".
    pub fn is_unknown_route(&self) -> bool {
        self.status == StatusCode::NOT_FOUND && self.errors().contains("no handler for route")
    }
}

/// A TLS failure seen on one URL while no node could serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsRefusal {
    pub url: String,
    pub reason: String,
}

/// What a probe of one node found.
#[derive(Debug)]
pub enum Probe {
    /// The node answered `status`; `body` is `Ok(None)` when larger than
    /// the cap, `Err` (the reason) when it was cut.
    Answered {
        status: StatusCode,
        body: Result<Option<Zeroizing<Vec<u8>>>, String>,
    },
    /// No answer ([`describe_transport`]); `tls` when a certificate or
    /// handshake failed.
    Failed { reason: String, tls: bool },
}

/// Not known (the active node).
const UNKNOWN: usize = usize::MAX;
/// How long a `sys/health` probe for the active node may take.
const ACTIVE_PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// The largest `sys/health` answer read (a few hundred bytes in practice).
pub const MAX_HEALTH_BYTES: usize = 64 << 10;

/// A client of one store cluster (its URLs). Holds no token.
pub struct Client {
    http: reqwest::Client,
    /// The same with the failover connect timeout: for every URL of a
    /// round but the last one tried.
    http_failover: reqwest::Client,
    urls: Vec<String>,
    /// Where reads (and, without active routing, everything) start.
    preferred: AtomicUsize,
    /// The node that answered `sys/health` 200, or [`UNKNOWN`].
    active: AtomicUsize,
    /// Requests sent, probes included (a fleet's `/metrics`).
    requests: AtomicU64,
    options: Options,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = format!("Client of {}", self.urls.join(", "));
        f.debug_struct(&name).finish_non_exhaustive()
    }
}

/// Why a client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("the store's CA certificate cannot be used: {0}")]
    Ca(String),
    #[error("cannot build the HTTP client: {0}")]
    Http(String),
}

impl Client {
    /// A client of `urls` (checked by the caller with
    /// [`crate::store_url`]) trusting the web PKI roots and the PEM
    /// certificates of `ca_pem` ([`crate::store_tls::client_config`]).
    pub fn new(
        urls: &[String],
        ca_pem: Option<&[u8]>,
        options: Options,
    ) -> Result<Self, BuildError> {
        let pinned = match ca_pem {
            Some(pem) => crate::store_tls::pem_certs(pem).map_err(BuildError::Ca)?,
            None => vec![],
        };
        let tls = crate::store_tls::client_config(&pinned).map_err(BuildError::Ca)?;
        let build = |connect: Duration| {
            let mut builder = reqwest::Client::builder()
                .use_preconfigured_tls(tls.clone())
                .connect_timeout(connect)
                .timeout(options.request_timeout)
                .redirect(reqwest::redirect::Policy::none())
                .user_agent(options.user_agent);
            if let Some(idle) = options.idle_timeout {
                builder = builder.pool_idle_timeout(idle);
            }
            builder.build().map_err(|e| BuildError::Http(e.to_string()))
        };
        let http = build(options.connect_timeout)?;
        let http_failover = match options.failover_connect_timeout {
            Some(t) if urls.len() > 1 => build(t)?,
            _ => http.clone(),
        };
        let n = urls.len().max(1);
        let first = match options.start {
            Start::First => 0,
            Start::Random => (random_fraction() * n as f64) as usize % n,
        };
        Ok(Self {
            http,
            http_failover,
            urls: urls
                .iter()
                .map(|u| u.trim_end_matches('/').to_owned())
                .collect(),
            preferred: AtomicUsize::new(first),
            active: AtomicUsize::new(UNKNOWN),
            requests: AtomicU64::new(0),
            options,
        })
    }

    /// The URLs, in order.
    pub fn urls(&self) -> &[String] {
        &self.urls
    }

    /// The URL that answered last (where the next read starts).
    pub fn current_url(&self) -> &str {
        let n = self.urls.len().max(1);
        self.urls
            .get(self.preferred.load(Ordering::Relaxed) % n)
            .map_or("", String::as_str)
    }

    /// Requests sent so far, probes included.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Send `call` to the first node that serves it, repeating rounds as
    /// the client's [`Options::retry`] says.
    pub async fn send(&self, call: &Call<'_>) -> Result<Answer, Error> {
        self.send_retrying(call, &self.options.retry).await
    }

    /// [`Self::send`] with another [`Retry`] (an AppRole login).
    pub async fn send_retrying(&self, call: &Call<'_>, retry: &Retry) -> Result<Answer, Error> {
        let started = Instant::now();
        let mut attempt = 1;
        loop {
            let result = self.round(call).await;
            if !matches!(result, Err(Error::Unreachable { busy: true, .. }))
                || attempt >= retry.tries
            {
                return result;
            }
            let delay = retry.delay(attempt);
            if started.elapsed() + delay >= retry.budget {
                return result;
            }
            tracing::debug!(attempt, op = call.op, "no store node could serve; retrying");
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }

    /// `GET /v1/<path>` on node `index` alone (no failover, no token):
    /// `sys/health`.
    pub async fn probe(&self, index: usize, path: &str, timeout: Option<Duration>) -> Probe {
        self.probe_with(&self.http, index, path, timeout).await
    }

    async fn probe_with(
        &self,
        http: &reqwest::Client,
        index: usize,
        path: &str,
        timeout: Option<Duration>,
    ) -> Probe {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let mut request = http.get(format!("{}/v1/{path}", self.urls[index]));
        if let Some(t) = timeout {
            request = request.timeout(t);
        }
        match request.send().await {
            Err(e) => Probe::Failed {
                reason: describe_transport(&e),
                tls: crate::store_tls::tls_failure(&e).is_some(),
            },
            Ok(response) => Probe::Answered {
                status: response.status(),
                body: read_capped(response, MAX_HEALTH_BYTES)
                    .await
                    .map_err(|e| describe_transport(&e)),
            },
        }
    }

    /// Where a call starts: the preferred node, or for a login or write
    /// with active routing the active one (asked of each node in turn
    /// with `sys/health` when not known; the preferred one when none says
    /// so).
    async fn start_for(&self, call: &Call<'_>) -> usize {
        let n = self.urls.len();
        let preferred = self.preferred.load(Ordering::Relaxed) % n.max(1);
        if !self.routes_to_active(call) || n < 2 {
            return preferred;
        }
        let known = self.active.load(Ordering::Relaxed);
        if known < n {
            return known;
        }
        for i in 0..n {
            let index = (preferred + i) % n;
            // A node that is down costs the failover connect timeout, as
            // in a round.
            let http = if i + 1 < n {
                &self.http_failover
            } else {
                &self.http
            };
            let probe = self
                .probe_with(http, index, "sys/health", Some(ACTIVE_PROBE_TIMEOUT))
                .await;
            if matches!(probe, Probe::Answered { status, .. } if status == StatusCode::OK) {
                self.active.store(index, Ordering::Relaxed);
                return index;
            }
        }
        preferred
    }

    fn routes_to_active(&self, call: &Call<'_>) -> bool {
        match self.options.to_active {
            ToActive::Never => false,
            ToActive::Writes => !call.is_read(),
            ToActive::All => true,
        }
    }

    /// One round: from where the call starts, each node once.
    async fn round(&self, call: &Call<'_>) -> Result<Answer, Error> {
        let start = self.start_for(call).await;
        let result = self.round_from(start, call).await;
        if self.routes_to_active(call)
            && !matches!(&result, Ok(a) if self.urls.get(start) == Some(&a.url))
        {
            // The active node failed, or another answered: ask again next time.
            self.active.store(UNKNOWN, Ordering::Relaxed);
        }
        result
    }

    async fn round_from(&self, start: usize, call: &Call<'_>) -> Result<Answer, Error> {
        let n = self.urls.len();
        // Logins and writes routed to the active node leave the preferred
        // node (where reads start) alone.
        let moves_preferred = !self.routes_to_active(call);
        let mut failures: Vec<String> = Vec::new();
        let mut tls: Option<TlsRefusal> = None;
        let mut busy = false;
        for i in 0..n {
            let index = (start + i) % n;
            let url = &self.urls[index];
            let http = if i + 1 < n {
                &self.http_failover
            } else {
                &self.http
            };
            self.requests.fetch_add(1, Ordering::Relaxed);
            let mut request = http
                .request(call.method.clone(), format!("{url}/v1/{}", call.path))
                .header("X-Vault-Request", "true");
            if let Some(token) = call.token {
                request = request.header("X-Vault-Token", token);
            }
            for (name, value) in call.headers {
                request = request.header(*name, value);
            }
            if let Some(body) = call.body {
                request = request
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body.to_vec());
            }
            let response = match request.send().await {
                Ok(r) => r,
                Err(e) => {
                    let reason = describe_transport(&e);
                    tracing::debug!(url = %url, "store request failed: {reason}");
                    if tls.is_none() && crate::store_tls::tls_failure(&e).is_some() {
                        tls = Some(TlsRefusal {
                            url: url.clone(),
                            reason: reason.clone(),
                        });
                    }
                    failures.push(format!("{url}: {reason}"));
                    if e.is_timeout()
                        && !e.is_connect()
                        && !call.is_read()
                        && !self.options.resend_timed_out_writes
                    {
                        // Never sent twice: the store may still apply it.
                        return Err(Error::Unreachable {
                            tried: i + 1,
                            details: failures.join("; "),
                            busy: false,
                            tls,
                        });
                    }
                    continue;
                }
            };
            let status = response.status();
            let body = match read_capped(response, self.options.body_cap).await {
                Ok(Some(body)) => body,
                Ok(None) => {
                    return Err(Error::TooLarge {
                        op: call.op.to_owned(),
                        url: url.clone(),
                        limit: self.options.body_cap,
                    })
                }
                Err(e) => {
                    failures.push(format!(
                        "{url}: the answer was cut ({})",
                        describe_transport(&e)
                    ));
                    continue;
                }
            };
            if try_another(status, &body) {
                let why = errors_of(&body);
                tracing::debug!(url = %url, status = status.as_u16(), "the store node cannot serve this now");
                busy = true;
                failures.push(if why.is_empty() {
                    format!("{url}: HTTP {}", status.as_u16())
                } else {
                    format!("{url}: HTTP {}: {why}", status.as_u16())
                });
                continue;
            }
            if moves_preferred {
                if index != start {
                    tracing::debug!(url = %url, "using the next store node");
                }
                self.preferred.store(index, Ordering::Relaxed);
            }
            return Ok(Answer {
                url: url.clone(),
                status,
                body,
            });
        }
        if moves_preferred {
            // Next time, start elsewhere.
            self.preferred
                .store((start + 1) % n.max(1), Ordering::Relaxed);
        }
        Err(Error::Unreachable {
            tried: n,
            details: failures.join("; "),
            busy,
            tls,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn try_another_is_what_openbao_answers_for_a_node_that_cannot_serve_now() {
        let s = |c: u16| StatusCode::from_u16(c).unwrap();
        for code in [307, 308, 429, 502, 503, 504] {
            assert!(try_another(s(code), b""), "{code}");
        }
        assert!(try_another(
            StatusCode::INTERNAL_SERVER_ERROR,
            br#"{"errors":["local node not active but active cluster node not found"]}"#
        ));
        assert!(try_another(
            StatusCode::INTERNAL_SERVER_ERROR,
            br#"{"errors":["transaction commit failed"]}"#
        ));
        assert!(!try_another(
            StatusCode::INTERNAL_SERVER_ERROR,
            br#"{"errors":["storage failure"]}"#
        ));
        assert!(!try_another(StatusCode::FORBIDDEN, b""));
        let upgrading = br#"{"errors":["Waiting for the primary to upgrade from non-versioned to versioned data. This backend will be unavailable for a brief period and will resume service when the primary is finished."]}"#;
        assert!(try_another(StatusCode::BAD_REQUEST, upgrading));
        assert!(!try_another(
            StatusCode::BAD_REQUEST,
            br#"{"errors":["check-and-set parameter did not match the current version"]}"#
        ));
        // Health-only answers and the server's own failures are answers.
        for code in [200, 404, 472, 473, 501] {
            assert!(!try_another(s(code), b""), "{code}");
        }
    }

    #[test]
    fn the_backoff_is_full_jitter_within_a_growing_capped_window() {
        let retry = Retry {
            tries: 8,
            budget: Duration::from_secs(30),
            base: Duration::from_millis(200),
            cap: Duration::from_secs(1),
        };
        for _ in 0..200 {
            assert!(retry.delay(1) <= Duration::from_millis(200));
            assert!(retry.delay(3) <= Duration::from_millis(800));
            assert!(retry.delay(30) <= Duration::from_secs(1));
        }
        assert!((0..200).any(|_| retry.delay(3) > Duration::from_millis(400)));
    }

    #[test]
    fn store_error_text_is_escaped_and_cut() {
        let body = br#"{"errors": ["permission denied\u001b]0;owned\u0007", "x\r\ny"]}"#;
        let text = errors_of(body);
        assert!(!text.chars().any(char::is_control), "{text}");
        assert!(text.contains("permission denied\\u{1b}]0;owned"), "{text}");
        let long = serde_json::json!({ "errors": ["e".repeat(5000)] }).to_string();
        assert_eq!(
            errors_of(long.as_bytes()).chars().count(),
            FOREIGN_TEXT_MAX + 3
        );
        assert_eq!(errors_of(b"not json"), "");
    }
}
