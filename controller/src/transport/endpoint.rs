//! [`Endpoint`]: where one node's agent answers (a tunnel's loopback end, or
//! the local agent) and the raw HTTP requests to it, bounded in size, the
//! token attached only when handed one; and [`Challenged`], an answer to the
//! token challenge (`GET /healthz?challenge=<fresh nonce>`) still to be
//! checked against the token (`common::proof`). Request bodies and queries
//! are never logged.
//!
//! A failed request is reported as what was observed, not guessed: a
//! refused connection (for a tunnel: the ssh master's log says the node
//! refused the agent port, "open failed: connect failed: Connection
//! refused") is "the agent is not running"; a connection reset or closed
//! before an answer is said to be that; a timeout is a timeout. A challenge
//! that went over a kept-alive connection (the endpoint answered before)
//! which the other side closed or reset is sent again once on a fresh
//! connection: the connection pool hands out an idle connection without
//! knowing that its far end, several hops away through a tunnel, already
//! closed it (the agent ends idle connections after
//! `header_read_timeout_secs`). A request carrying the token is not sent
//! again here: [`crate::transport::AgentConn`] first has the agent prove
//! itself again on the fresh connection (whoever answers there may not be
//! the agent), and never sends a `run` twice.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::wire::{ErrorBody, Health};
use common::SecretText;
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::error::{error_chain, Phase};
use super::{TransportError, TransportOptions};
use crate::clusters::{Node, Target};

/// The largest agent answer read (a `run` answer holds at most twice the
/// agent's output cap, 1 MiB by default, JSON-escaped).
const MAX_RESPONSE_BYTES: usize = 64 << 20;

/// Where one node's agent answers, and how to name it in errors. Makes the
/// HTTP requests, carrying the token only when handed one.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    pub(crate) node: String,
    base: String,
    agent_port: u16,
    http: reqwest::Client,
    pub(crate) timeout: Duration,
    cluster: String,
    local: bool,
    /// The log of the ssh master the requests go through (`-E`): where a
    /// channel the node refused is recorded.
    tunnel_log: Option<PathBuf>,
    /// A request was answered: the next one goes over a pooled connection.
    answered: Arc<AtomicBool>,
}

/// Whether a request may be sent again when its kept-alive connection was
/// closed under it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Resend {
    /// It has no effect beyond its answer, or the same effect twice (a
    /// challenge, a sync of the same items, a status, a revoke).
    Once,
    /// It may have started something that must not run twice (`run`).
    Never,
}

/// How a request's connection failed before an answer came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lost {
    Refused,
    Reset,
    Closed,
}

impl Lost {
    /// How a reqwest error's connection failed; `None` for a timeout or
    /// an error that is no connection failure.
    fn of(e: &reqwest::Error) -> Option<Lost> {
        if e.is_timeout() || !(e.is_connect() || e.is_request()) {
            return None;
        }
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
        while let Some(s) = source {
            if let Some(io) = s.downcast_ref::<std::io::Error>() {
                use std::io::ErrorKind::*;
                match io.kind() {
                    ConnectionRefused => return Some(Lost::Refused),
                    ConnectionReset | ConnectionAborted | BrokenPipe => return Some(Lost::Reset),
                    _ => {}
                }
                // hyper and the connector nest io::Errors, hidden from `source()`.
                if let Some(inner) = io.get_ref() {
                    source = Some(inner);
                    continue;
                }
            }
            source = s.source();
        }
        Some(Lost::Closed)
    }

    fn words(self) -> &'static str {
        match self {
            Lost::Refused => "refused",
            Lost::Reset => "reset",
            Lost::Closed => "closed",
        }
    }
}

/// The length of `log` now: where to look for what a request makes ssh log.
fn log_mark(log: &Path) -> u64 {
    std::fs::metadata(log).map_or(0, |m| m.len())
}

/// Why the ssh master could not open a channel to the agent port, from
/// what it logged after `mark` ("channel 3: open failed: connect failed:
/// Connection refused"), if it logged that.
fn channel_refusal(log: &Path, mark: u64) -> Option<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(log).ok()?;
    file.seek(SeekFrom::Start(mark)).ok()?;
    let mut text = String::new();
    file.take(64 << 10).read_to_string(&mut text).ok()?;
    text.lines().rev().find_map(|l| {
        l.split_once("open failed: ")
            .map(|(_, why)| why.trim().to_owned())
    })
}

impl Endpoint {
    /// The agent at `base` (`http://127.0.0.1:PORT`: a tunnel's end, or the
    /// local agent), listening on `agent_port` on its node.
    pub(crate) fn new(
        node: &Node,
        base: String,
        agent_port: u16,
        http: &reqwest::Client,
        opts: &TransportOptions,
    ) -> Self {
        Self {
            node: node.name.clone(),
            base,
            agent_port,
            http: http.clone(),
            timeout: opts.timeout,
            cluster: opts.cluster.clone(),
            local: matches!(node.target, Target::Local),
            tunnel_log: None,
            answered: Arc::new(AtomicBool::new(false)),
        }
    }

    /// The same, its requests going through the ssh master whose log (`-E`)
    /// is `log`.
    pub(crate) fn through_tunnel(mut self, log: PathBuf) -> Self {
        self.tunnel_log = Some(log);
        self
    }

    /// The agent at `127.0.0.1:<port>` here (a tunnel's end, or the local
    /// agent), listening on `agent_port` on its node.
    pub(crate) fn loopback(
        node: &Node,
        port: u16,
        agent_port: u16,
        http: &reqwest::Client,
        opts: &TransportOptions,
    ) -> Self {
        Self::new(
            node,
            format!("http://127.0.0.1:{port}"),
            agent_port,
            http,
            opts,
        )
    }

    /// The agent's port on its node.
    pub(crate) fn agent_port(&self) -> u16 {
        self.agent_port
    }

    /// `GET /healthz?challenge=<fresh nonce>`, without the token. The answer
    /// is checked against the token with [`Challenged::verify`]. An answer
    /// that is no agent's health (an error status, not JSON, too large) is
    /// [`TransportError::NotTheAgent`]; connection errors and timeouts stay
    /// what they are.
    pub(crate) async fn challenge(
        &self,
        timeout: Option<Duration>,
    ) -> Result<Challenged, TransportError> {
        self.challenge_raw(timeout).await.map_err(|e| match e {
            TransportError::Agent { .. } | TransportError::Http { .. } => self.not_the_agent(&e),
            other => other,
        })
    }

    /// [`Endpoint::challenge`] with the request's own errors: `Agent` for an
    /// error status, `Http` for a success status whose body is no health.
    pub(crate) async fn challenge_raw(
        &self,
        timeout: Option<Duration>,
    ) -> Result<Challenged, TransportError> {
        let nonce_hex = common::fingerprint::random_hex(common::proof::NONCE_BYTES);
        let path = format!("/healthz?challenge={nonce_hex}");
        let health = self
            .call::<(), Health>(Method::GET, &path, None, timeout, None, Resend::Once)
            .await?;
        Ok(Challenged {
            node: self.node.clone(),
            nonce: common::proof::parse_challenge(&nonce_hex).expect("a fresh nonce is valid"),
            health,
            no_proof_hint: self.no_proof_hint(),
        })
    }

    /// The error for an answer to the challenge that is no agent's health.
    pub(crate) fn not_the_agent(&self, answer: &TransportError) -> TransportError {
        TransportError::NotTheAgent {
            node: self.node.clone(),
            hint: format!(" (its answer to /healthz: {answer})"),
        }
    }

    /// What to do when the answer carries no proof at all: an agent older
    /// than this controller gives none.
    fn no_proof_hint(&self) -> String {
        if self.local {
            "; its answer has no proof at all: if it is an agent older than this controller, \
             stop it (pid in ~/.rh/agent/agent.pid) and rerun to start a current one"
                .to_owned()
        } else {
            format!(
                "; its answer has no proof at all: if it is an agent older than this \
                 controller, upgrade it with `controller cluster bootstrap {}`",
                self.cluster
            )
        }
    }

    /// One request, with `Authorization: Bearer` only when `token` is given.
    /// The body is serialized here and never logged. Without a token, sent
    /// again once on a fresh connection when `resend` allows it and the
    /// kept-alive connection it went over was closed or reset before an
    /// answer; with one, that is [`TransportError::AgentConnectionLost`]
    /// with `kept_alive` set, for the caller to prove the agent again first.
    pub(crate) async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
        timeout: Option<Duration>,
        token: Option<&SecretText>,
        resend: Resend,
    ) -> Result<T, TransportError> {
        let started = Instant::now();
        let url = format!("{}{}", self.base, path);
        let mut pooled = self.answered.load(Ordering::Acquire);
        let mut resp = loop {
            let mut req = self.http.request(method.clone(), &url);
            if let Some(token) = token {
                req = req.bearer_auth(token.expose_secret());
            }
            if let Some(body) = body {
                req = req.json(body);
            }
            if let Some(t) = timeout {
                req = req.timeout(t);
            }
            let mark = self.tunnel_log.as_deref().map(log_mark);
            match req.send().await {
                Ok(resp) => break resp,
                Err(e) => {
                    let lost = Lost::of(&e);
                    let refused_on_node = self
                        .tunnel_log
                        .as_deref()
                        .zip(mark)
                        .and_then(|(log, mark)| channel_refusal(log, mark));
                    let under_it = pooled
                        && matches!(lost, Some(Lost::Reset | Lost::Closed))
                        && refused_on_node.is_none();
                    if under_it && token.is_none() && resend == Resend::Once {
                        tracing::debug!(node = %self.node, "the kept-alive connection was {} \
                            under the request; sending it again on a fresh one",
                            lost.map_or("", Lost::words));
                        pooled = false;
                        continue;
                    }
                    return Err(self.request_error(&e, lost, refused_on_node, under_it));
                }
            }
        };
        self.answered.store(true, Ordering::Release);
        let status = resp.status();
        // Bounded: a broken or hostile node must not exhaust this machine's memory.
        let mut bytes = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| self.request_error(&e, Lost::of(&e), None, false))?
        {
            if bytes.len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Err(TransportError::Http {
                    node: self.node.clone(),
                    detail: format!(
                        "the agent's answer is larger than {} MiB; refused",
                        MAX_RESPONSE_BYTES >> 20
                    ),
                });
            }
            bytes.extend_from_slice(&chunk);
        }
        let path = path.split('?').next().unwrap_or(path); // queries may hold keys
        tracing::debug!(node = %self.node, %method, path, status = status.as_u16(),
            ms = started.elapsed().as_millis() as u64, "agent request");
        if status == StatusCode::UNAUTHORIZED {
            return Err(TransportError::Unauthorized {
                node: self.node.clone(),
            });
        }
        if !status.is_success() {
            let (code, message) = match serde_json::from_slice::<ErrorBody>(&bytes) {
                Ok(b) => (b.error, b.message),
                Err(_) => (
                    status.canonical_reason().unwrap_or("error").to_owned(),
                    "(no JSON error body)".to_owned(),
                ),
            };
            return Err(TransportError::Agent {
                node: self.node.clone(),
                status: status.as_u16(),
                code,
                message,
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| TransportError::Http {
            node: self.node.clone(),
            detail: format!("unexpected answer from the agent ({e})"),
        })
    }

    /// The error for a failed request, saying what was observed: `lost`
    /// (how its connection failed, a `kept_alive` one or not) and, through a
    /// tunnel, why the ssh master could not open a channel to the agent port
    /// if it logged that.
    fn request_error(
        &self,
        e: &reqwest::Error,
        lost: Option<Lost>,
        refused_on_node: Option<String>,
        kept_alive: bool,
    ) -> TransportError {
        let not_running = |observed: String| TransportError::AgentNotRunning {
            node: self.node.clone(),
            port: self.agent_port,
            cluster: self.cluster.clone(),
            observed,
        };
        let connection_lost = |observed: String| TransportError::AgentConnectionLost {
            node: self.node.clone(),
            port: self.agent_port,
            observed,
            kept_alive,
        };
        if e.is_timeout() {
            return TransportError::Timeout {
                node: self.node.clone(),
                secs: self.timeout.as_secs(),
                during: Phase::WaitingForAgent,
            };
        }
        if let Some(why) = refused_on_node {
            return if why.contains("Connection refused") {
                not_running("connection refused on the node".into())
            } else {
                connection_lost(format!(
                    "refused by the ssh master (it could not open a channel to the port: {why})"
                ))
            };
        }
        match lost {
            // Only the agent's own port refuses: through a tunnel the local
            // end is this process's bridge, which does not refuse.
            Some(Lost::Refused) if self.tunnel_log.is_none() => {
                not_running("connection refused".into())
            }
            Some(lost) if self.tunnel_log.is_some() => {
                connection_lost(format!("{} in the ssh tunnel", lost.words()))
            }
            Some(lost) => connection_lost(lost.words().into()),
            None => TransportError::Http {
                node: self.node.clone(),
                detail: error_chain(e),
            },
        }
    }
}

/// A `/healthz` answer to a fresh challenge, not yet checked against a token.
#[derive(Debug)]
pub(crate) struct Challenged {
    node: String,
    nonce: Vec<u8>,
    health: Health,
    no_proof_hint: String,
}

impl Challenged {
    /// Whether the answer proves the process holds `token` (constant-time
    /// compare); [`TransportError::NotTheAgent`] if not. Returns the health.
    pub(crate) fn verify(&self, token: &SecretText) -> Result<Health, TransportError> {
        let token = token.expose_secret().as_bytes();
        match &self.health.proof {
            Some(p) if common::proof::verify_agent_proof(token, &self.nonce, p) => {
                Ok(self.health.clone())
            }
            Some(_) => Err(TransportError::NotTheAgent {
                node: self.node.clone(),
                hint: String::new(),
            }),
            None => Err(TransportError::NotTheAgent {
                node: self.node.clone(),
                hint: self.no_proof_hint.clone(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use super::*;
    use crate::clusters::{Node, Target};
    use crate::transport::http_client;
    use crate::transport::options::test_options;

    const OK: &str =
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}";

    /// What the test server does with one request on a connection.
    #[derive(Clone, Copy, Debug)]
    enum Then {
        Answer,
        /// Read the request, then close without answering.
        Close,
        /// Read the request, then reset the connection.
        Reset,
    }

    /// Read one request head (these requests have no body).
    async fn read_head(s: &mut TcpStream) -> bool {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            match s.read(&mut byte).await {
                Ok(1) => head.push(byte[0]),
                _ => return false,
            }
        }
        true
    }

    /// A server whose connection `i` plays `script[i]` request by request
    /// (then answers); returns its port and the counts of connections and
    /// requests it saw.
    async fn scripted(script: Vec<Vec<Then>>) -> (u16, Arc<AtomicUsize>, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (conns, reqs) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (c, r) = (conns.clone(), reqs.clone());
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                let steps = script.get(c.fetch_add(1, Ordering::SeqCst)).cloned();
                let r = r.clone();
                tokio::spawn(async move {
                    let mut steps = steps.unwrap_or_default().into_iter();
                    while read_head(&mut s).await {
                        r.fetch_add(1, Ordering::SeqCst);
                        match steps.next().unwrap_or(Then::Answer) {
                            Then::Answer => s.write_all(OK.as_bytes()).await.unwrap(),
                            Then::Close => return,
                            Then::Reset => {
                                // A zero linger resets instead of closing (and
                                // does not block: nothing is left to send).
                                #[allow(deprecated)]
                                s.set_linger(Some(Duration::ZERO)).unwrap();
                                return;
                            }
                        }
                    }
                });
            }
        });
        (port, conns, reqs)
    }

    fn endpoint(port: u16) -> Endpoint {
        let node = Node {
            name: "n1".into(),
            target: Target::Local,
        };
        let opts = test_options(10);
        Endpoint::loopback(&node, port, 32300, &http_client(opts.timeout), &opts)
    }

    async fn get(ep: &Endpoint, resend: Resend) -> Result<serde_json::Value, TransportError> {
        ep.call::<(), serde_json::Value>(Method::GET, "/x", None, None, None, resend)
            .await
    }

    #[tokio::test]
    async fn a_kept_alive_connection_closed_under_a_request_is_retried_once_on_a_fresh_one() {
        for then in [Then::Close, Then::Reset] {
            // Connection 1: the first request is answered (and the connection
            // kept alive), the second is read and the connection dropped.
            let (port, conns, reqs) = scripted(vec![vec![Then::Answer, then]]).await;
            let ep = endpoint(port);
            get(&ep, Resend::Once).await.unwrap();
            get(&ep, Resend::Once)
                .await
                .unwrap_or_else(|e| panic!("{then:?}: not sent again: {e}"));
            assert_eq!(conns.load(Ordering::SeqCst), 2, "{then:?}");
            assert_eq!(reqs.load(Ordering::SeqCst), 3, "{then:?}");
        }
        // A request that must not run twice is not sent again, nor one
        // carrying the token (the caller proves the agent again first), and
        // the error says what happened to the connection.
        let token = SecretText::new("t".into());
        for (resend, token) in [(Resend::Never, None), (Resend::Once, Some(&token))] {
            let (port, conns, reqs) = scripted(vec![vec![Then::Answer, Then::Close]]).await;
            let ep = endpoint(port);
            get(&ep, Resend::Once).await.unwrap();
            let err = ep
                .call::<(), serde_json::Value>(Method::GET, "/x", None, None, token, resend)
                .await
                .unwrap_err();
            assert_eq!(
                err.reason(),
                "the kept-alive connection to the agent on port 32300 was closed before it \
                 answered"
            );
            assert_eq!(
                (conns.load(Ordering::SeqCst), reqs.load(Ordering::SeqCst)),
                (1, 2)
            );
        }
    }

    #[tokio::test]
    async fn a_first_request_is_not_sent_twice_and_failures_say_what_was_observed() {
        for (then, observed) in [(Then::Close, "closed"), (Then::Reset, "reset")] {
            let (port, conns, _) = scripted(vec![vec![then]]).await;
            let err = get(&endpoint(port), Resend::Once).await.unwrap_err();
            assert_eq!(
                err.reason(),
                format!(
                    "the connection to the agent on port 32300 was {observed} before it answered"
                )
            );
            assert_eq!(conns.load(Ordering::SeqCst), 1, "{observed}");
        }
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = free.local_addr().unwrap().port();
        drop(free);
        let err = get(&endpoint(port), Resend::Once).await.unwrap_err();
        assert_eq!(
            err.reason(),
            "the agent is not running on port 32300 (connection refused)"
        );
    }

    #[tokio::test]
    async fn through_a_tunnel_only_a_channel_the_node_refused_is_not_running() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("master.log");
        std::fs::write(
            &log,
            "channel 1: open failed: connect failed: Connection refused\n",
        )
        .unwrap();
        // What ssh logged before the request is not this request's story.
        let (port, _, _) = scripted(vec![vec![Then::Close], vec![Then::Close]]).await;
        let ep = endpoint(port).through_tunnel(log.clone());
        let err = get(&ep, Resend::Once).await.unwrap_err();
        assert_eq!(
            err.reason(),
            "the connection to the agent on port 32300 was closed in the ssh tunnel before it \
             answered"
        );
        // The master logs the refusal, then closes the forwarded connection.
        let appended = log.clone();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            read_head(&mut s).await;
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&appended)
                .unwrap();
            std::io::Write::write_all(
                &mut f,
                b"channel 2: open failed: connect failed: Connection refused\n",
            )
            .unwrap();
        });
        let ep = endpoint(port).through_tunnel(log);
        let err = get(&ep, Resend::Once).await.unwrap_err();
        assert_eq!(
            err.reason(),
            "the agent is not running on port 32300 (connection refused on the node)"
        );
    }
}
