//! Reaching the agents of a cluster: over SSH for remote nodes ([`ssh`]: a
//! multiplexed master per node, kept alive between commands for
//! `--ssh-persist` idle seconds in the private `~/.rh/ssh`, a local port
//! forward to the agent's loopback port, the token read over the same
//! session) or straight over loopback for
//! the `local` cluster ([`local`]); then HTTP through ONE shared reqwest client
//! (connect and request timeouts, no redirects, no proxy). [`fan_out`] runs a
//! job on every node in parallel with a bound, one retry on connection errors
//! and an optional progress bar on stderr.
//!
//! The token is never sent before the agent proved it holds it: every
//! connection starts with `GET /healthz?challenge=<fresh nonce>` and checks
//! the answer's `proof` (`common::proof`) against the token read from the
//! node; a missing or wrong proof fails the node with
//! [`TransportError::NotTheAgent`]. [`AgentConn`] enforces this itself (an
//! unproven connection proves before its first authenticated request), and
//! the transports fold the challenge into work they do anyway (the local
//! liveness probe; over SSH, alongside reading the token) so it costs no extra
//! round trip on the usual path.
//!
//! Errors name the node, the host and what the user can do; request bodies
//! are never logged or `Debug`-printed, and the token is a [`SecretText`].

pub mod local;
pub mod ssh;

use std::future::Future;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::wire::{
    ErrorBody, Health, RevokeQuery, RunRequest, RunResponse, SecretResult, SetEnvVarsRequest,
    StatusResponse, SyncRequest, SyncResponse,
};
use common::SecretText;
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::sync::Semaphore;

use crate::cli::RemoteOpts;
use crate::clusters::{Node, Target};
use crate::Context;

/// Why a node could not be reached or answered with an error. Every message
/// names the node and, where there is one, the step the user can take.
#[derive(Debug, Error)]
pub enum TransportError {
    #[error("{node}: host key of {host} is not in known_hosts; check it and rerun with --accept-new-host-keys to trust it")]
    UnknownHostKey { node: String, host: String },
    #[error("{node}: HOST KEY MISMATCH: the host key of {host} differs from the one in known_hosts (possible man-in-the-middle); refused. If the host was reinstalled, remove the old key with `ssh-keygen -R {host}`")]
    HostKeyChanged { node: String, host: String },
    #[error("{node}: ssh authentication failed for {who}: {detail}; check --user and --identity-file of the cluster")]
    AuthFailed {
        node: String,
        who: String,
        detail: String,
    },
    #[error("{node}: cannot reach {host}: {detail}")]
    Unreachable {
        node: String,
        host: String,
        detail: String,
    },
    #[error("{node}: timed out after {secs}s {during}")]
    Timeout {
        node: String,
        secs: u64,
        during: &'static str,
    },
    #[error("{node}: ssh failed: {detail}")]
    Ssh { node: String, detail: String },
    #[error("{node}: the agent is not installed (no token at ~/.rh/agent/token); run `controller cluster bootstrap {cluster}`")]
    AgentNotInstalled { node: String, cluster: String },
    #[error("{node}: cannot read the agent token ~/.rh/agent/token: {detail}")]
    TokenUnreadable { node: String, detail: String },
    #[error("{node}: the agent is not running on port {port}; run `controller cluster bootstrap {cluster}`")]
    AgentNotRunning {
        node: String,
        port: u16,
        cluster: String,
    },
    #[error(
        "{node}: the agent refused the token (401); the token changed or belongs to another agent"
    )]
    Unauthorized { node: String },
    #[error(
        "the process listening on the agent port of {node} could not prove it holds the agent \
         token: it is not this user's agent (another process took the port?); refusing to send \
         the token{hint}"
    )]
    NotTheAgent { node: String, hint: String },
    #[error("{node}: agent answered {status} {code}: {message}")]
    Agent {
        node: String,
        status: u16,
        code: String,
        message: String,
    },
    #[error("{node}: request to the agent failed: {detail}")]
    Http { node: String, detail: String },
    #[error("local agent: {detail}")]
    LocalAgent { detail: String },
    #[error("ssh control directory {path}: {detail}")]
    ControlDir { path: String, detail: String },
}

impl TransportError {
    /// Connection-level errors worth one retry (never host key or auth problems).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            TransportError::Unreachable { .. }
                | TransportError::Timeout {
                    during: "connecting",
                    ..
                }
                | TransportError::Ssh { .. }
        )
    }
}

/// How to reach nodes: timeouts, host key policy, ssh config and where the
/// control sockets live.
#[derive(Debug, Clone)]
pub struct TransportOptions {
    pub timeout: Duration,
    pub parallel: usize,
    pub accept_new_host_keys: bool,
    /// `RH_SSH_CONFIG`: an ssh_config passed as `-F`.
    pub ssh_config: Option<PathBuf>,
    /// `~/.rh/ssh`: control sockets of the master connections.
    pub control_dir: PathBuf,
    /// How long an idle master connection stays open for the next command;
    /// zero closes it when the command ends.
    pub ssh_persist: Duration,
    pub home: PathBuf,
    /// The cluster's name, for hints in errors.
    pub cluster: String,
    /// Show a progress bar (stderr is a terminal and output is not JSON).
    pub progress: bool,
}

impl TransportOptions {
    /// From the command line and the context.
    pub fn new(ctx: &Context, remote: &RemoteOpts, cluster: &str, json: bool) -> Self {
        Self {
            timeout: Duration::from_secs(remote.timeout.max(1)),
            parallel: remote.parallel.max(1),
            accept_new_host_keys: remote.accept_new_host_keys,
            ssh_config: ctx
                .var("RH_SSH_CONFIG")
                .filter(|s| !s.is_empty())
                .map(PathBuf::from),
            control_dir: ctx.rh_dir().join("ssh"),
            ssh_persist: Duration::from_secs(ssh_persist_secs(ctx, remote)),
            home: ctx.home.clone(),
            cluster: cluster.to_owned(),
            progress: !json && std::io::stderr().is_terminal(),
        }
    }
}

/// Default idle lifetime of a persisted master connection.
pub const DEFAULT_SSH_PERSIST_SECS: u64 = 300;

/// `--ssh-persist`, else `$RH_SSH_PERSIST`, else 300 s.
fn ssh_persist_secs(ctx: &Context, remote: &RemoteOpts) -> u64 {
    if let Some(secs) = remote.ssh_persist {
        return secs;
    }
    match ctx.var("RH_SSH_PERSIST").map(str::trim) {
        None | Some("") => DEFAULT_SSH_PERSIST_SECS,
        Some(v) => v.parse().unwrap_or_else(|_| {
            tracing::warn!(
                value = v,
                "RH_SSH_PERSIST is not a number of seconds; using 300"
            );
            DEFAULT_SSH_PERSIST_SECS
        }),
    }
}

/// The one HTTP client every node shares: connect and request timeouts,
/// no redirects, no proxy (all traffic goes to loopback).
pub fn http_client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(timeout)
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .pool_max_idle_per_host(1)
        .build()
        .expect("the HTTP client builds (rustls, no system config needed)")
}

/// Where one node's agent answers, and how to name it in errors. Makes the
/// HTTP requests, carrying the token only when handed one.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    node: String,
    base: String,
    agent_port: u16,
    http: reqwest::Client,
    timeout: Duration,
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
    async fn call<B: Serialize, T: DeserializeOwned>(
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
                during: "waiting for the agent",
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
    pub(crate) fn verify(self, token: &SecretText) -> Result<Health, TransportError> {
        let token = token.expose_secret().as_bytes();
        match &self.health.proof {
            Some(p) if common::proof::verify_agent_proof(token, &self.nonce, p) => Ok(self.health),
            Some(_) => Err(TransportError::NotTheAgent {
                node: self.node,
                hint: String::new(),
            }),
            None => Err(TransportError::NotTheAgent {
                node: self.node,
                hint: self.no_proof_hint,
            }),
        }
    }
}

/// A connection to one node's agent. Holds the SSH session (if any) that the
/// tunnel runs through; [`AgentConn::close`] ends it. The token goes out
/// only once the agent proved it holds it (a connection made unproven proves
/// itself before its first authenticated request).
#[derive(Debug)]
pub struct AgentConn {
    pub node: String,
    ep: Endpoint,
    token: SecretText,
    proven: AtomicBool,
    ssh: Option<ssh::SshSession>,
}

impl AgentConn {
    /// A connection to the agent listening on local port `port` (a tunnel's
    /// end, or the agent itself for `local`), not yet proven: the first
    /// authenticated request challenges the agent first.
    pub(crate) fn new(
        node: &Node,
        port: u16,
        agent_port: u16,
        token: SecretText,
        http: &reqwest::Client,
        opts: &TransportOptions,
        ssh: Option<ssh::SshSession>,
    ) -> Self {
        let ep = Endpoint::new(
            node,
            format!("http://127.0.0.1:{port}"),
            agent_port,
            http,
            opts,
        );
        Self {
            node: node.name.clone(),
            ep,
            token,
            proven: AtomicBool::new(false),
            ssh,
        }
    }

    /// A connection whose agent answered `challenged`: checked against
    /// `token` here, so the token is never sent when the proof is missing or
    /// wrong. On error the SSH session is closed.
    pub(crate) async fn proven(
        ep: Endpoint,
        token: SecretText,
        challenged: Challenged,
        ssh: Option<ssh::SshSession>,
    ) -> Result<Self, TransportError> {
        if let Err(e) = challenged.verify(&token) {
            if let Some(s) = ssh {
                s.close().await;
            }
            return Err(e);
        }
        Ok(Self {
            node: ep.node.clone(),
            ep,
            token,
            proven: AtomicBool::new(true),
            ssh,
        })
    }

    /// `GET /healthz` with a fresh challenge, the proof checked against the
    /// token (which is not sent).
    pub async fn health(&self) -> Result<Health, TransportError> {
        let health = self.ep.challenge(None).await?.verify(&self.token)?;
        self.proven.store(true, Ordering::Release);
        Ok(health)
    }

    /// `POST /v1/sync`.
    pub async fn sync(&self, req: &SyncRequest) -> Result<SyncResponse, TransportError> {
        self.call(Method::POST, "/v1/sync", Some(req), None).await
    }

    /// `POST /v1/envs/{env}/_set_env_vars`.
    pub async fn set_env_vars(
        &self,
        env: &str,
        req: &SetEnvVarsRequest,
    ) -> Result<SyncResponse, TransportError> {
        let path = format!("/v1/envs/{}/_set_env_vars", encode_segment(env));
        self.call(Method::POST, &path, Some(req), None).await
    }

    /// `POST /v1/envs/{env}/run`; the HTTP timeout is the command's plus a margin.
    pub async fn run(&self, env: &str, req: &RunRequest) -> Result<RunResponse, TransportError> {
        let path = format!("/v1/envs/{}/run", encode_segment(env));
        let limit = run_http_limit(req.timeout_secs, self.ep.timeout);
        self.call(Method::POST, &path, Some(req), Some(limit)).await
    }

    /// `GET /v1/status`.
    pub async fn status(&self) -> Result<StatusResponse, TransportError> {
        self.call::<(), _>(Method::GET, "/v1/status", None, None)
            .await
    }

    /// `GET /v1/status?key=HEX`: fingerprints under the caller's key (hex
    /// digits only). The key is kept out of errors and logs.
    pub async fn status_with_key(&self, key_hex: &str) -> Result<StatusResponse, TransportError> {
        let path = format!("/v1/status?key={key_hex}");
        self.call::<(), _>(Method::GET, &path, None, None)
            .await
            .map_err(|e| match e {
                TransportError::Http { node, detail } => TransportError::Http {
                    node,
                    detail: detail.replace(key_hex, "<key>"),
                },
                other => other,
            })
    }

    /// `DELETE /v1/secrets/{name}`.
    pub async fn revoke(
        &self,
        name: &str,
        query: &RevokeQuery,
    ) -> Result<Vec<SecretResult>, TransportError> {
        let mut path = format!("/v1/secrets/{}", encode_segment(name));
        let mut params = vec![];
        if let Some(env) = &query.env {
            params.push(format!("env={}", encode_segment(env)));
        }
        if query.dry_run {
            params.push("dry_run=true".into());
        }
        if !params.is_empty() {
            path.push('?');
            path.push_str(&params.join("&"));
        }
        let body: RevokeBody = self
            .call::<(), _>(Method::DELETE, &path, None, None)
            .await?;
        Ok(match body {
            RevokeBody::Many(r) => r.results,
            RevokeBody::One(r) => vec![r],
        })
    }

    /// End the SSH session (the master connection and its forward).
    pub async fn close(self) {
        if let Some(s) = self.ssh {
            s.close().await;
        }
    }

    /// One authenticated request, made only once the agent proved it holds
    /// the token.
    async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
        timeout: Option<Duration>,
    ) -> Result<T, TransportError> {
        if !self.proven.load(Ordering::Acquire) {
            self.health().await?;
        }
        self.ep
            .call(method, path, body, timeout, Some(&self.token))
            .await
    }
}

/// The largest agent answer read (a `run` answer holds at most twice the
/// agent's output cap, 1 MiB by default, JSON-escaped).
const MAX_RESPONSE_BYTES: usize = 64 << 20;

/// The agent's own limit on a command when the request names none
/// (`run_timeout_secs`, 600 s by default).
const AGENT_DEFAULT_RUN_SECS: u64 = common::wire::DEFAULT_RUN_TIMEOUT_SECS;

/// How long to wait for a `run` answer: the command's limit (the agent's
/// default when none is sent) plus the request timeout and a margin, so a
/// command is stopped by the agent, never cut off by this client first.
fn run_http_limit(command_secs: Option<u64>, request: Duration) -> Duration {
    Duration::from_secs(command_secs.unwrap_or(AGENT_DEFAULT_RUN_SECS))
        + request
        + Duration::from_secs(10)
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RevokeBody {
    Many(SyncResponse),
    One(SecretResult),
}

/// Percent-encode a path segment (names are validated already; this is belt and braces).
fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// An error and its sources on one line (reqwest errors carry URLs, never bodies).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        out.push_str(": ");
        out.push_str(&s.to_string());
        src = s.source();
    }
    out
}

/// Connect to one node's agent.
pub async fn connect(
    node: &Node,
    opts: &TransportOptions,
    http: &reqwest::Client,
) -> Result<AgentConn, TransportError> {
    match &node.target {
        Target::Local => local::connect(node, opts, http).await,
        Target::Ssh(t) => ssh::connect(node, t, opts, http).await,
    }
}

/// The outcome of a job on one node.
#[derive(Debug)]
pub struct NodeOutcome<T> {
    pub node: Node,
    pub result: Result<T, TransportError>,
}

/// Run `job` on every node: at most `opts.parallel` at once, each node's
/// connection retried once on a connection error, a progress bar on stderr
/// when it is a terminal. Results come back in the order of `nodes`.
pub async fn fan_out<T, F, Fut>(
    nodes: &[Node],
    opts: &TransportOptions,
    label: &str,
    job: F,
) -> Vec<NodeOutcome<T>>
where
    T: Send + 'static,
    F: Fn(Arc<AgentConn>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<T, TransportError>> + Send + 'static,
{
    let http = http_client(opts.timeout);
    let limit = Arc::new(Semaphore::new(opts.parallel));
    let job = Arc::new(job);
    let opts_arc = Arc::new(opts.clone());
    let bar = opts.progress.then(|| {
        let bar = indicatif::ProgressBar::new(nodes.len() as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} nodes {elapsed}")
                .expect("a valid template")
                .progress_chars("=> "),
        );
        bar.set_message(label.to_owned());
        bar
    });
    let mut tasks = Vec::with_capacity(nodes.len());
    for node in nodes.iter().cloned() {
        let (http, limit, job, opts, bar) = (
            http.clone(),
            limit.clone(),
            job.clone(),
            opts_arc.clone(),
            bar.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let _permit = limit
                .acquire_owned()
                .await
                .expect("the semaphore is never closed");
            let result = run_on_node(&node, &opts, &http, job.as_ref()).await;
            if let Some(bar) = &bar {
                bar.inc(1);
            }
            NodeOutcome { node, result }
        }));
    }
    let mut out = Vec::with_capacity(tasks.len());
    for (task, node) in tasks.into_iter().zip(nodes) {
        out.push(task.await.unwrap_or_else(|e| NodeOutcome {
            node: node.clone(),
            result: Err(TransportError::Http {
                node: node.name.clone(),
                detail: format!("internal error: {e}"),
            }),
        }));
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    out
}

/// Slack on top of `--timeout` for the connect phase (starting ssh, the
/// forward, reading the token), so a healthy but slow node is not cut off.
const CONNECT_MARGIN: Duration = Duration::from_secs(1);

async fn run_on_node<T, F, Fut>(
    node: &Node,
    opts: &TransportOptions,
    http: &reqwest::Client,
    job: &F,
) -> Result<T, TransportError>
where
    F: Fn(Arc<AgentConn>) -> Fut,
    Fut: Future<Output = Result<T, TransportError>>,
{
    let started = Instant::now();
    // One budget for the whole connect phase (a stale kept master, a new
    // master, the retry): an unreachable node is reported after about
    // `--timeout`, not after a multiple of it.
    let deadline = started + opts.timeout + CONNECT_MARGIN;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let remaining = deadline.saturating_duration_since(Instant::now());
        let connected = match tokio::time::timeout(remaining, connect(node, opts, http)).await {
            Ok(result) => result,
            Err(_) => Err(TransportError::Timeout {
                node: node.name.clone(),
                secs: opts.timeout.as_secs(),
                during: "connecting",
            }),
        };
        let conn = match connected {
            Ok(c) => Arc::new(c),
            Err(e) if attempt == 1 && e.is_retryable() && Instant::now() < deadline => {
                tracing::info!(node = %node.name, error = %e, "connection failed; retrying once");
                continue;
            }
            Err(e) => return Err(e),
        };
        tracing::debug!(node = %node.name, ms = started.elapsed().as_millis() as u64, "connected");
        let result = job(conn.clone()).await;
        if let Ok(conn) = Arc::try_unwrap(conn) {
            conn.close().await;
        }
        tracing::debug!(node = %node.name, ms = started.elapsed().as_millis() as u64, "done");
        // No retry once a request went out: it may have reached the agent.
        return result;
    }
}

/// Create `~/.rh/ssh` (0700) for control sockets, and refuse it unless it
/// is a real directory (not a symlink) owned by this user; group and other
/// permissions are removed. A control socket is as good as an authenticated
/// session, so nobody else may reach one.
pub(crate) fn ensure_private_dir(dir: &Path) -> Result<(), TransportError> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let fail = |detail: String| TransportError::ControlDir {
        path: dir.display().to_string(),
        detail,
    };
    common::fsutil::create_private_dir_all(dir).map_err(|e| fail(e.to_string()))?;
    let meta = std::fs::symlink_metadata(dir).map_err(|e| fail(e.to_string()))?;
    if !meta.file_type().is_dir() {
        return Err(fail("is not a directory (a symlink?); refused".into()));
    }
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me {
        return Err(fail(format!(
            "is owned by uid {}, not by you (uid {me}); refused",
            meta.uid()
        )));
    }
    if meta.mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| fail(format!("chmod 700: {e}")))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Options for a test node reached over loopback (no SSH, no persistence).
    fn test_options(timeout_secs: u64) -> TransportOptions {
        TransportOptions {
            timeout: Duration::from_secs(timeout_secs),
            parallel: 1,
            accept_new_host_keys: false,
            ssh_config: None,
            control_dir: PathBuf::from("/nonexistent"),
            ssh_persist: Duration::ZERO,
            home: PathBuf::from("/nonexistent"),
            cluster: "c".into(),
            progress: false,
        }
    }

    #[test]
    fn control_dir_is_made_private_and_a_symlink_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/ssh");
        ensure_private_dir(&dir).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        ensure_private_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&dir, &link).unwrap();
        let err = ensure_private_dir(&link).unwrap_err();
        assert!(err.to_string().contains("symlink"), "{err}");
    }

    #[test]
    fn a_run_outlives_its_command_not_the_request_timeout() {
        let request = Duration::from_secs(15);
        // A 10-minute command must not be cut off after 25 s.
        assert!(run_http_limit(Some(600), request) > Duration::from_secs(600));
        assert!(run_http_limit(None, request) > Duration::from_secs(AGENT_DEFAULT_RUN_SECS));
        assert!(run_http_limit(Some(1), request) > Duration::from_secs(1) + request);
    }

    #[tokio::test]
    async fn a_huge_answer_is_refused_not_buffered() {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                        Content-Length: 1000000000\r\n\r\n";
            let _ = s.write_all(head.as_bytes());
            let chunk = vec![b' '; 1 << 20];
            while s.write_all(&chunk).is_ok() {}
        });
        let node = Node {
            name: "n1".into(),
            target: Target::Local,
        };
        let opts = test_options(30);
        let http = http_client(opts.timeout);
        let token = SecretText::new("t".to_owned());
        let conn = AgentConn::new(&node, port, port, token, &http, &opts, None);
        let err = conn.status().await.unwrap_err().to_string();
        assert!(err.contains("larger than 64 MiB"), "{err}");
    }

    /// A one-thread HTTP server on a loopback port: answers every request
    /// with `answer(request head)` and records each request head.
    fn fake_agent(
        answer: impl Fn(&str) -> String + Send + 'static,
    ) -> (u16, Arc<std::sync::Mutex<Vec<String>>>) {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(std::sync::Mutex::new(vec![]));
        let log = seen.clone();
        std::thread::spawn(move || {
            for s in listener.incoming() {
                let Ok(mut s) = s else { break };
                loop {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        match s.read(&mut byte) {
                            Ok(1) => head.push(byte[0]),
                            _ => break,
                        }
                    }
                    if !head.ends_with(b"\r\n\r\n") {
                        break;
                    }
                    let head = String::from_utf8_lossy(&head).into_owned();
                    let len = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    let mut body = vec![0u8; len];
                    let _ = s.read_exact(&mut body);
                    let out = answer(&head);
                    log.lock().unwrap().push(head);
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                         Content-Length: {}\r\n\r\n{out}",
                        out.len()
                    );
                    if s.write_all(resp.as_bytes()).is_err() {
                        break;
                    }
                }
            }
        });
        (port, seen)
    }

    fn test_conn(port: u16, token: &str) -> AgentConn {
        let node = Node {
            name: "n1".into(),
            target: Target::Ssh(crate::clusters::SshTarget {
                host: "h".into(),
                port: 22,
                user: None,
                identity_file: None,
                agent_port: port,
            }),
        };
        let opts = test_options(10);
        let http = http_client(opts.timeout);
        AgentConn::new(
            &node,
            port,
            port,
            SecretText::new(token.to_owned()),
            &http,
            &opts,
            None,
        )
    }

    /// The nonce of a `GET /healthz?challenge=HEX` request head.
    fn nonce_of(head: &str) -> Option<Vec<u8>> {
        let hex = head.split("challenge=").nth(1)?.split([' ', '&']).next()?;
        common::proof::parse_challenge(hex).ok()
    }

    #[tokio::test]
    async fn no_token_goes_to_a_listener_that_cannot_prove_it_holds_it() {
        let health = r#"{"status":"ok","version":"0.1.0"}"#;
        let wrong = format!(
            r#"{{"status":"ok","version":"0.1.0","proof":"{}"}}"#,
            "ab".repeat(32)
        );
        for (body, hint) in [(health.to_owned(), true), (wrong, false)] {
            let (port, seen) = fake_agent(move |_| body.clone());
            let conn = test_conn(port, "the-token");
            let err = conn.status().await.unwrap_err();
            assert!(matches!(err, TransportError::NotTheAgent { .. }), "{err}");
            let msg = err.to_string();
            assert!(
                msg.contains("the process listening on the agent port of n1 could not prove it holds the agent token")
                    && msg.contains("refusing to send the token"),
                "{msg}"
            );
            assert_eq!(
                msg.contains("controller cluster bootstrap c"),
                hint,
                "{msg}"
            );
            let seen = seen.lock().unwrap().clone();
            assert_eq!(seen.len(), 1, "{seen:?}");
            assert!(seen[0].starts_with("GET /healthz?challenge="), "{seen:?}");
            for head in &seen {
                assert!(
                    !head.to_ascii_lowercase().contains("authorization"),
                    "{head}"
                );
                assert!(!head.contains("the-token"), "{head}");
            }
            // health() itself refuses too, and sends no token either.
            assert!(matches!(
                conn.health().await,
                Err(TransportError::NotTheAgent { .. })
            ));
        }
    }

    #[tokio::test]
    async fn a_listener_that_proves_the_token_gets_the_request() {
        let (port, seen) = fake_agent(|head| match nonce_of(head) {
            Some(nonce) => format!(
                r#"{{"status":"ok","version":"0.1.0","proof":"{}"}}"#,
                common::proof::agent_proof(b"the-token", &nonce)
            ),
            None => r#"{"version":"0.1.0","secrets":[],"envs":[]}"#.to_owned(),
        });
        let conn = test_conn(port, "the-token");
        conn.status().await.unwrap();
        conn.status().await.unwrap();
        let seen = seen.lock().unwrap().clone();
        // One challenge, then only authenticated requests.
        assert_eq!(seen.len(), 3, "{seen:?}");
        assert!(seen[0].starts_with("GET /healthz?challenge="));
        assert!(!seen[0].to_ascii_lowercase().contains("authorization"));
        for head in &seen[1..] {
            assert!(head.starts_with("GET /v1/status "), "{head}");
            assert!(head.contains("Bearer the-token"), "{head}");
        }
        // A proof for another token is refused (the fake serves one
        // connection at a time: close this one first).
        drop(conn);
        let other = test_conn(port, "another-token");
        assert!(matches!(
            other.health().await,
            Err(TransportError::NotTheAgent { .. })
        ));
    }

    #[test]
    fn segments_are_encoded() {
        assert_eq!(encode_segment("base_env"), "base_env");
        assert_eq!(encode_segment("a/b c"), "a%2Fb%20c");
    }

    #[test]
    fn retry_only_connection_errors() {
        let unreachable = TransportError::Unreachable {
            node: "n".into(),
            host: "h".into(),
            detail: "Connection refused".into(),
        };
        assert!(unreachable.is_retryable());
        let changed = TransportError::HostKeyChanged {
            node: "n".into(),
            host: "h".into(),
        };
        assert!(!changed.is_retryable());
        assert!(changed.to_string().contains("HOST KEY MISMATCH"));
    }
}
