//! SSH to one node: the `openssh` crate (process mux) over the system `ssh`,
//! one multiplexed master connection per node with `BatchMode=yes`, a
//! `ConnectTimeout`, the cluster's user, port and identity file, and host keys
//! checked against known_hosts (`StrictHostKeyChecking=yes`, or `accept-new`
//! with `--accept-new-host-keys`: a CHANGED key is refused either way).
//! `RH_SSH_CONFIG` names an ssh_config passed as `-F` (tests use it so the real
//! `~/.ssh` is never read). Through the master: the agent token is read with
//! `cat ~/.rh/agent/token` (with the port in `agent.addr`, when the agent
//! wrote one) and a local port forward reaches the agent's loopback port. ssh's own messages are classified into errors a user can
//! act on; they never contain secret values, and neither does anything here.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::Path;
use std::time::{Duration, Instant};

use common::SecretText;
use openssh::{ForwardType, KnownHosts, Session, SessionBuilder, Socket, Stdio};
use tokio::io::AsyncWriteExt;

use super::{ensure_private_dir, AgentConn, TransportError, TransportOptions};
use crate::clusters::{Node, SshTarget};

/// What to feed a remote command on stdin.
#[derive(Debug, Clone, Copy)]
pub enum Input<'a> {
    File(&'a Path),
    Bytes(&'a [u8]),
}

/// An open master connection to one node.
pub struct SshSession {
    node: String,
    session: Session,
}

impl fmt::Debug for SshSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SshSession")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl SshSession {
    /// Open the master connection.
    pub async fn open(
        node: &Node,
        t: &SshTarget,
        opts: &TransportOptions,
    ) -> Result<Self, TransportError> {
        ensure_private_dir(&opts.control_dir)?;
        let mut b = SessionBuilder::default();
        b.known_hosts_check(if opts.accept_new_host_keys {
            KnownHosts::Add
        } else {
            KnownHosts::Strict
        })
        .connect_timeout(opts.timeout)
        .server_alive_interval(Duration::from_secs(15))
        .control_directory(&opts.control_dir);
        // Port 22 is ssh's default: leave it to the ssh config (host aliases may set Port).
        if t.port != 22 {
            b.port(t.port);
        }
        if let Some(user) = &t.user {
            b.user(user.clone());
        }
        if let Some(key) = &t.identity_file {
            b.keyfile(key);
        }
        if let Some(cfg) = &opts.ssh_config {
            b.config_file(cfg);
        }
        let started = Instant::now();
        let connect = b.connect(&t.host);
        let session =
            match tokio::time::timeout(opts.timeout + Duration::from_secs(5), connect).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => return Err(classify(&node.name, t, &e)),
                Err(_) => {
                    return Err(TransportError::Timeout {
                        node: node.name.clone(),
                        secs: opts.timeout.as_secs(),
                        during: "connecting",
                    })
                }
            };
        tracing::debug!(node = %node.name, ms = started.elapsed().as_millis() as u64, "ssh master up");
        Ok(Self {
            node: node.name.clone(),
            session,
        })
    }

    /// Read the agent token (`~/.rh/agent/token`) and the port the agent
    /// reports in `~/.rh/agent/agent.addr` (when present) in one remote command.
    pub async fn read_token(
        &self,
        cluster: &str,
    ) -> Result<(SecretText, Option<u16>), TransportError> {
        let out = self
            .session
            .raw_command(
                "cat ~/.rh/agent/token && echo && { cat ~/.rh/agent/agent.addr 2>/dev/null || true; }",
            )
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|e| TransportError::TokenUnreadable {
                node: self.node.clone(),
                detail: super::error_chain(&e),
            })?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            if stderr.contains("No such file") {
                return Err(TransportError::AgentNotInstalled {
                    node: self.node.clone(),
                    cluster: cluster.to_owned(),
                });
            }
            return Err(TransportError::TokenUnreadable {
                node: self.node.clone(),
                detail: first_line(&stderr),
            });
        }
        let text = SecretText::new(String::from_utf8(out.stdout).map_err(|_| {
            TransportError::TokenUnreadable {
                node: self.node.clone(),
                detail: "it is not UTF-8".into(),
            }
        })?);
        let mut lines = text
            .expose_secret()
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty());
        let token = lines.next().unwrap_or_default();
        if token.is_empty() || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(TransportError::TokenUnreadable {
                node: self.node.clone(),
                detail: "it is empty or malformed".into(),
            });
        }
        let port = lines.next().and_then(|addr| {
            let addr = addr.strip_prefix("http://").unwrap_or(addr);
            addr.trim_end_matches('/')
                .parse::<std::net::SocketAddr>()
                .ok()
                .map(|a| a.port())
        });
        Ok((SecretText::new(token.to_owned()), port))
    }

    /// Forward a free local loopback port to `127.0.0.1:remote_port` on the node.
    pub async fn forward(&self, remote_port: u16) -> Result<u16, TransportError> {
        let mut last = String::new();
        // A port picked here could be taken before ssh binds it: try a few.
        for _ in 0..3 {
            let local = free_port().map_err(|e| TransportError::Ssh {
                node: self.node.clone(),
                detail: format!("no free local port: {e}"),
            })?;
            let listen = Socket::from(SocketAddr::from((Ipv4Addr::LOCALHOST, local)));
            let connect = Socket::new("127.0.0.1", remote_port);
            match self
                .session
                .request_port_forward(ForwardType::Local, listen, connect)
                .await
            {
                Ok(()) => return Ok(local),
                Err(e) => last = super::error_chain(&e),
            }
        }
        Err(TransportError::Ssh {
            node: self.node.clone(),
            detail: format!("port forward failed: {last}"),
        })
    }

    /// Run a shell command on the node with `stdin` as its input; its exit
    /// status and stderr (first line) on failure.
    pub async fn run_with_input(
        &self,
        command: &str,
        stdin: Option<Input<'_>>,
    ) -> Result<String, TransportError> {
        let mut cmd = self.session.raw_command(command);
        cmd.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let err = |detail: String| TransportError::Ssh {
            node: self.node.clone(),
            detail,
        };
        let mut child = cmd.spawn().await.map_err(|e| err(super::error_chain(&e)))?;
        if let Some(source) = stdin {
            let mut input = child.stdin().take().expect("stdin is piped");
            match source {
                Input::File(path) => {
                    let mut file = tokio::fs::File::open(path)
                        .await
                        .map_err(|e| err(format!("open {}: {e}", path.display())))?;
                    tokio::io::copy(&mut file, &mut input)
                        .await
                        .map_err(|e| err(format!("upload {}: {e}", path.display())))?;
                }
                Input::Bytes(bytes) => input
                    .write_all(bytes)
                    .await
                    .map_err(|e| err(format!("upload: {e}")))?,
            }
            input.shutdown().await.ok();
            drop(input);
        }
        let out = child
            .wait_with_output()
            .await
            .map_err(|e| err(super::error_chain(&e)))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            let stderr = String::from_utf8_lossy(&out.stderr);
            Err(err(format!(
                "`{}` exited with {}: {}",
                command.split_whitespace().next().unwrap_or(command),
                out.status,
                last_lines(&stderr, 5)
            )))
        }
    }

    /// End the master connection.
    pub async fn close(self) {
        if let Err(e) = self.session.close().await {
            tracing::debug!(node = %self.node, error = %e, "closing the ssh session");
        }
    }
}

/// Open the master, then read the token (and the agent's reported port)
/// while forwarding a local port to the agent.
pub(crate) async fn connect(
    node: &Node,
    t: &SshTarget,
    opts: &TransportOptions,
    http: &reqwest::Client,
) -> Result<AgentConn, TransportError> {
    let session = SshSession::open(node, t, opts).await?;
    // Read the token and forward the cluster's agent port at the same time;
    // when the agent reports another port (agent.addr), forward that one too.
    let tunnel = async {
        let (read, forward) = tokio::join!(
            session.read_token(&opts.cluster),
            session.forward(t.agent_port)
        );
        let (token, reported) = read?;
        match reported {
            Some(p) if p != t.agent_port => {
                tracing::debug!(node = %node.name, port = p, "agent reports another port");
                Ok::<_, TransportError>((token, p, session.forward(p).await?))
            }
            _ => Ok((token, t.agent_port, forward?)),
        }
    };
    let (token, agent_port, port) = match tunnel.await {
        Ok(v) => v,
        Err(e) => {
            session.close().await;
            return Err(e);
        }
    };
    Ok(AgentConn {
        node: node.name.clone(),
        base: format!("http://127.0.0.1:{port}"),
        agent_port,
        token,
        http: http.clone(),
        timeout: opts.timeout,
        cluster: opts.cluster.clone(),
        ssh: Some(session),
    })
}

fn free_port() -> std::io::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}

fn first_line(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("no message")
        .to_owned()
}

fn last_lines(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let start = lines.len().saturating_sub(n);
    let out = lines[start..].join(" | ");
    if out.is_empty() {
        "no message".into()
    } else {
        out
    }
}

/// Turn ssh's failure into an error the user can act on.
fn classify(node: &str, t: &SshTarget, e: &openssh::Error) -> TransportError {
    let text = super::error_chain(e);
    classify_text(node, t, &text)
}

fn classify_text(node: &str, t: &SshTarget, text: &str) -> TransportError {
    let host = if t.port == 22 {
        t.host.clone()
    } else {
        format!("[{}]:{}", t.host, t.port)
    };
    let node = node.to_owned();
    let lower = text.to_lowercase();
    if lower.contains("remote host identification has changed")
        || lower.contains("host key for") && lower.contains("has changed")
        || lower.contains("offending")
    {
        return TransportError::HostKeyChanged { node, host };
    }
    if lower.contains("host key verification failed")
        || lower.contains("no ") && lower.contains("host key is known")
    {
        return TransportError::UnknownHostKey { node, host };
    }
    if lower.contains("permission denied") || lower.contains("too many authentication failures") {
        return TransportError::AuthFailed {
            node,
            who: format!("{}@{host}", t.user.as_deref().unwrap_or("(default user)")),
            detail: detail_of(text),
        };
    }
    for pat in [
        "connection refused",
        "no route to host",
        "could not resolve hostname",
        "name or service not known",
        "network is unreachable",
        "connection timed out",
        "operation timed out",
        "connection reset",
        "connection closed by",
        "kex_exchange_identification",
    ] {
        if lower.contains(pat) {
            return TransportError::Unreachable {
                node,
                host,
                detail: detail_of(text),
            };
        }
    }
    TransportError::Ssh {
        node,
        detail: detail_of(text),
    }
}

/// The most telling line of ssh's output, without the crate's wrapper text.
fn detail_of(text: &str) -> String {
    let inner = text
        .strip_prefix("failed to connect to the remote host: ")
        .unwrap_or(text);
    first_line(inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> SshTarget {
        SshTarget {
            host: "10.0.0.5".into(),
            user: Some("ubuntu".into()),
            port: 2222,
            identity_file: None,
            agent_port: 32300,
        }
    }

    #[test]
    fn ssh_messages_are_classified() {
        let t = target();
        let c = |s: &str| classify_text("n1", &t, s);
        assert!(matches!(
            c("@@@@@\r\n@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\r\nHost key verification failed."),
            TransportError::HostKeyChanged { .. }
        ));
        assert!(matches!(
            c("No ED25519 host key is known for [10.0.0.5]:2222 and you have requested strict checking.\r\nHost key verification failed."),
            TransportError::UnknownHostKey { .. }
        ));
        assert!(matches!(
            c("ubuntu@10.0.0.5: Permission denied (publickey)."),
            TransportError::AuthFailed { .. }
        ));
        assert!(matches!(
            c("connect to host 10.0.0.5 port 2222: Connection refused"),
            TransportError::Unreachable { .. }
        ));
        let e = c("something else");
        assert!(matches!(e, TransportError::Ssh { .. }));
        let msg = c("No ED25519 host key is known for x").to_string();
        assert!(msg.contains("--accept-new-host-keys"), "{msg}");
    }
}
