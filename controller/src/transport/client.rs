//! [`AgentConn`]: the typed client of one node's agent (`/v1/sync`,
//! `/v1/status`, `run`, `revoke`, ...). It holds the token and the SSH
//! session its tunnel runs through, and sends the token only once the agent
//! proved it holds it: a connection made unproven challenges the agent
//! before its first authenticated request. Never logs a body or the token.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::wire::{
    Health, RevokeQuery, RunRequest, RunResponse, SecretResult, SetEnvVarsRequest, StatusResponse,
    SyncRequest, SyncResponse, FEATURE_PLACEMENT, FEATURE_SESSIONS,
};
use common::SecretText;
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::endpoint::{Challenged, Endpoint, Resend};
use super::{ssh, TransportError};

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
    /// The agent announced [`common::wire::FEATURE_PLACEMENT`] when proven.
    placements: AtomicBool,
    /// The agent announced [`common::wire::FEATURE_SESSIONS`] when proven.
    sessions: AtomicBool,
    ssh: Option<ssh::SshSession>,
}

impl AgentConn {
    /// A connection to the agent listening on local port `port` (a tunnel's
    /// end, or the agent itself for `local`), not yet proven: the first
    /// authenticated request challenges the agent first.
    #[cfg(test)]
    pub(crate) fn new(
        node: &crate::clusters::Node,
        port: u16,
        agent_port: u16,
        token: SecretText,
        http: &reqwest::Client,
        opts: &super::TransportOptions,
        ssh: Option<ssh::SshSession>,
    ) -> Self {
        let ep = Endpoint::loopback(node, port, agent_port, http, opts);
        Self {
            node: node.name.clone(),
            ep,
            token,
            proven: AtomicBool::new(false),
            placements: AtomicBool::new(false),
            sessions: AtomicBool::new(false),
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
        let health = match challenged.verify(&token) {
            Ok(h) => h,
            Err(e) => {
                if let Some(s) = ssh {
                    s.close().await;
                }
                return Err(e);
            }
        };
        Ok(Self {
            node: ep.node.clone(),
            ep,
            token,
            proven: AtomicBool::new(true),
            placements: AtomicBool::new(health.has(FEATURE_PLACEMENT)),
            sessions: AtomicBool::new(health.has(FEATURE_SESSIONS)),
            ssh,
        })
    }

    /// `GET /healthz` with a fresh challenge, the proof checked against the
    /// token (which is not sent).
    pub async fn health(&self) -> Result<Health, TransportError> {
        let health = self.ep.challenge(None).await?.verify(&self.token)?;
        self.placements
            .store(health.has(FEATURE_PLACEMENT), Ordering::Release);
        self.sessions
            .store(health.has(FEATURE_SESSIONS), Ordering::Release);
        self.proven.store(true, Ordering::Release);
        Ok(health)
    }

    /// `POST /v1/sync`. An agent that did not announce placements (one
    /// older than this controller) gets every item in the older form, which
    /// it places itself the same way.
    pub async fn sync(&self, req: &SyncRequest) -> Result<SyncResponse, TransportError> {
        if !self.proven.load(Ordering::Acquire) {
            self.health().await?;
        }
        // Session items only to agents that know them: an older agent
        // refuses the field (and with it the whole request).
        if !self.sessions.load(Ordering::Acquire) && req.items.iter().any(|i| i.session.is_some()) {
            let (sessions, items): (Vec<_>, Vec<_>) =
                req.items.iter().cloned().partition(|i| i.session.is_some());
            let rest = SyncRequest {
                items,
                overwrite: req.overwrite,
                dry_run: req.dry_run,
            };
            let mut resp = if rest.items.is_empty() {
                SyncResponse::default()
            } else {
                Box::pin(self.sync(&rest)).await?
            };
            resp.results.extend(sessions.into_iter().map(|i| SecretResult {
                name: i.secret.name,
                status: common::wire::Status::Failed,
                files: vec![],
                env: None,
                vars: vec![],
                message: Some(
                    "this node's agent predates session secrets: upgrade it (controller cluster bootstrap)".into(),
                ),
            }));
            return Ok(resp);
        }
        if self.placements.load(Ordering::Acquire) {
            self.call(Method::POST, "/v1/sync", Some(req), None, Resend::Once)
                .await
        } else {
            let older = req.without_placements();
            self.call(Method::POST, "/v1/sync", Some(&older), None, Resend::Once)
                .await
        }
    }

    /// `POST /v1/envs/{env}/_set_env_vars`.
    pub async fn set_env_vars(
        &self,
        env: &str,
        req: &SetEnvVarsRequest,
    ) -> Result<SyncResponse, TransportError> {
        let path = format!("/v1/envs/{}/_set_env_vars", encode_segment(env));
        self.call(Method::POST, &path, Some(req), None, Resend::Once)
            .await
    }

    /// `POST /v1/envs/{env}/run`; the HTTP timeout is the command's plus a margin.
    pub async fn run(&self, env: &str, req: &RunRequest) -> Result<RunResponse, TransportError> {
        let path = format!("/v1/envs/{}/run", encode_segment(env));
        let limit = run_http_limit(req.timeout_secs, self.ep.timeout);
        // It may have started its command: never sent twice.
        self.call(Method::POST, &path, Some(req), Some(limit), Resend::Never)
            .await
    }

    /// `GET /v1/status`.
    pub async fn status(&self) -> Result<StatusResponse, TransportError> {
        self.call::<(), _>(Method::GET, "/v1/status", None, None, Resend::Once)
            .await
    }

    /// `GET /v1/status?key=HEX`: fingerprints under the caller's key (hex
    /// digits only). The key is kept out of errors and logs.
    pub async fn status_with_key(&self, key_hex: &str) -> Result<StatusResponse, TransportError> {
        let path = format!("/v1/status?key={key_hex}");
        self.call::<(), _>(Method::GET, &path, None, None, Resend::Once)
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
            .call::<(), _>(Method::DELETE, &path, None, None, Resend::Once)
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
    /// the token; `resend` says whether it may go again on a fresh
    /// connection when its kept-alive one was closed under it.
    async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
        timeout: Option<Duration>,
        resend: Resend,
    ) -> Result<T, TransportError> {
        if !self.proven.load(Ordering::Acquire) {
            self.health().await?;
        }
        let sent = self
            .ep
            .call(
                method.clone(),
                path,
                body,
                timeout,
                Some(&self.token),
                resend,
            )
            .await;
        match sent {
            // The kept-alive connection was closed under the request: on a
            // fresh connection, the agent proves itself again before the
            // token goes out (whoever listens there now may not be it).
            Err(TransportError::AgentConnectionLost {
                kept_alive: true, ..
            }) if resend == Resend::Once => {
                tracing::debug!(node = %self.node, "the kept-alive connection was closed under \
                    the request; proving the agent again and sending it once more");
                self.health().await?;
                self.ep
                    .call(method, path, body, timeout, Some(&self.token), resend)
                    .await
            }
            other => other,
        }
    }
}

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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use test_support::FakeAgent;

    use super::*;
    use crate::clusters::{Node, Target};
    use crate::transport::http_client;
    use crate::transport::options::test_options;

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
            let fake = FakeAgent::start(&body);
            let conn = test_conn(fake.port, "the-token");
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
            let seen = fake.requests();
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

    /// A fake agent that proves "the-token" and announces `features`.
    fn proving_agent(features: &'static str) -> FakeAgent {
        FakeAgent::answering(move |head| match nonce_of(head) {
            Some(nonce) => format!(
                r#"{{"status":"ok","version":"0.1.0","proof":"{}"{features}}}"#,
                common::proof::agent_proof(b"the-token", &nonce)
            ),
            None => r#"{"results":[]}"#.to_owned(),
        })
    }

    #[tokio::test]
    async fn an_agent_without_the_placement_feature_gets_the_older_item_form() {
        let secret: common::Secret = serde_json::from_str(
            r#"{"name":"openai","provider":"openai","values":{"api_key":"k"}}"#,
        )
        .unwrap();
        let placement =
            common::placement::place(&secret, &common::placement::PlaceOpts::sync("base_env"))
                .unwrap();
        let req = SyncRequest {
            items: vec![common::wire::SyncItem::placed(secret, placement)],
            overwrite: false,
            dry_run: false,
        };
        for (features, placed) in [
            ("", false),
            (r#","features":["placement"]"#, true),
            (r#","features":["something-else"]"#, false),
        ] {
            let fake = proving_agent(features);
            let conn = test_conn(fake.port, "the-token");
            conn.sync(&req).await.unwrap();
            let seen = fake.requests();
            let body = seen
                .iter()
                .find(|r| r.starts_with("POST /v1/sync "))
                .expect("a sync request");
            let json: serde_json::Value =
                serde_json::from_str(&body[body.find('{').expect("a JSON body")..]).unwrap();
            let item = &json["items"][0];
            assert_eq!(
                item.get("placement").is_some(),
                placed,
                "{features}: {item}"
            );
            if !placed {
                assert_eq!(item["env"], "base_env", "{item}");
            }
        }
    }

    #[tokio::test]
    async fn a_listener_that_proves_the_token_gets_the_request() {
        let fake = FakeAgent::answering(|head| match nonce_of(head) {
            Some(nonce) => format!(
                r#"{{"status":"ok","version":"0.1.0","proof":"{}"}}"#,
                common::proof::agent_proof(b"the-token", &nonce)
            ),
            None => r#"{"version":"0.1.0","secrets":[],"envs":[]}"#.to_owned(),
        });
        let conn = test_conn(fake.port, "the-token");
        conn.status().await.unwrap();
        conn.status().await.unwrap();
        let seen = fake.requests();
        // One challenge, then only authenticated requests.
        assert_eq!(seen.len(), 3, "{seen:?}");
        assert!(seen[0].starts_with("GET /healthz?challenge="));
        assert!(!seen[0].to_ascii_lowercase().contains("authorization"));
        for head in &seen[1..] {
            assert!(head.starts_with("GET /v1/status "), "{head}");
            assert!(head.contains("Bearer the-token"), "{head}");
        }
        // A proof for another token is refused.
        drop(conn);
        let other = test_conn(fake.port, "another-token");
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

    /// A server playing one script per connection: for each request head,
    /// `Some(prove)` answers (a challenge with a proof of "the-token" when
    /// `prove`, of another token when not; anything else with a status),
    /// `None` reads it and drops the connection. Records each connection's
    /// request heads.
    async fn per_connection(
        scripts: Vec<Vec<Option<bool>>>,
    ) -> (u16, std::sync::Arc<std::sync::Mutex<Vec<Vec<String>>>>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            for script in scripts {
                let (mut s, _) = listener.accept().await.unwrap();
                let index = {
                    let mut log = log.lock().unwrap();
                    log.push(vec![]);
                    log.len() - 1
                };
                for step in script {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        if s.read(&mut byte).await.unwrap_or(0) == 0 {
                            return;
                        }
                        head.push(byte[0]);
                    }
                    let head = String::from_utf8_lossy(&head).into_owned();
                    log.lock().unwrap()[index].push(head.clone());
                    let Some(prove) = step else {
                        break;
                    };
                    let body = match nonce_of(&head) {
                        Some(nonce) => format!(
                            r#"{{"status":"ok","version":"0.1.0","proof":"{}"}}"#,
                            common::proof::agent_proof(
                                if prove { b"the-token" } else { b"other-token" },
                                &nonce
                            )
                        ),
                        None => r#"{"version":"0.1.0","secrets":[],"envs":[]}"#.to_owned(),
                    };
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                         Content-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    s.write_all(answer.as_bytes()).await.unwrap();
                }
            }
        });
        (port, seen)
    }

    #[tokio::test]
    async fn a_request_whose_kept_alive_connection_was_closed_goes_again_only_after_a_new_proof() {
        // Connection 1: the challenge is answered, the status request is
        // read and the connection dropped (an agent ending an idle
        // connection as the request arrives). Connection 2: a new
        // challenge, then the status again.
        let (port, seen) =
            per_connection(vec![vec![Some(true), None], vec![Some(true), Some(true)]]).await;
        let conn = test_conn(port, "the-token");
        conn.health().await.unwrap();
        conn.status()
            .await
            .unwrap_or_else(|e| panic!("not sent again: {e}"));
        // Per connection, each request's method and path.
        let requests: Vec<Vec<String>> = seen
            .lock()
            .unwrap()
            .iter()
            .map(|c| {
                c.iter()
                    .map(|h| {
                        let line = h.lines().next().unwrap_or_default();
                        line.split(['?', ' ']).take(2).collect::<Vec<_>>().join(" ")
                    })
                    .collect()
            })
            .collect();
        let round = vec!["GET /healthz".to_owned(), "GET /v1/status".to_owned()];
        assert_eq!(requests, [round.clone(), round]);

        // Whoever answers on the fresh connection without proving the
        // token gets no request and no token.
        let (port, seen) =
            per_connection(vec![vec![Some(true), None], vec![Some(false), Some(true)]]).await;
        let conn = test_conn(port, "the-token");
        conn.health().await.unwrap();
        let err = conn.status().await.unwrap_err();
        assert!(matches!(err, TransportError::NotTheAgent { .. }), "{err}");
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert_eq!(seen[1].len(), 1, "{seen:?}");
        assert!(
            seen[1][0].starts_with("GET /healthz?challenge="),
            "{seen:?}"
        );
        assert!(!seen[1][0].contains("the-token"), "{seen:?}");
        assert!(
            !seen[1][0].to_ascii_lowercase().contains("authorization"),
            "{seen:?}"
        );
    }
}
