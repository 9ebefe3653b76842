//! [`Endpoint`]: where one node's agent answers (a tunnel's loopback end, or
//! the local agent) and the raw HTTP requests to it, bounded in size, the
//! token attached only when handed one; and [`Challenged`], an answer to the
//! token challenge (`GET /healthz?challenge=<fresh nonce>`) still to be
//! checked against the token (`common::proof`). Request bodies and queries
//! are never logged.

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
        }
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
            .call::<(), Health>(Method::GET, &path, None, timeout, None)
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
    /// The body is serialized here and never logged.
    pub(crate) async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
        timeout: Option<Duration>,
        token: Option<&SecretText>,
    ) -> Result<T, TransportError> {
        let started = Instant::now();
        let url = format!("{}{}", self.base, path);
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
        let mut resp = req.send().await.map_err(|e| self.request_error(&e))?;
        let status = resp.status();
        // Bounded: a broken or hostile node must not exhaust this machine's memory.
        let mut bytes = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| self.request_error(&e))? {
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

    fn request_error(&self, e: &reqwest::Error) -> TransportError {
        if e.is_timeout() {
            TransportError::Timeout {
                node: self.node.clone(),
                secs: self.timeout.as_secs(),
                during: Phase::WaitingForAgent,
            }
        } else if e.is_connect() || e.is_request() {
            // Through a tunnel, a closed connection means nothing listens on the node's port.
            TransportError::AgentNotRunning {
                node: self.node.clone(),
                port: self.agent_port,
                cluster: self.cluster.clone(),
            }
        } else {
            TransportError::Http {
                node: self.node.clone(),
                detail: error_chain(e),
            }
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
