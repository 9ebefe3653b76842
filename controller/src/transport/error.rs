//! [`TransportError`]: why a node could not be reached or answered with an
//! error. Each error is typed: the node, what went wrong ([`TransportError::reason`],
//! a short phrase for a table cell) and what the user can do (the rest of the
//! message), so nobody has to take a message apart again. Messages name the
//! node, host, port or path concerned, never a secret value or the token.

use std::fmt;

use thiserror::Error;

/// What the transport was doing when a timeout struck.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Starting or reusing the SSH master, the forward and the token read.
    Connecting,
    /// An HTTP request to the agent.
    WaitingForAgent,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Connecting => "connecting",
            Phase::WaitingForAgent => "waiting for the agent",
        })
    }
}

/// Why a node could not be reached or answered with an error. Every message
/// names the node and, where there is one, the step the user can take.
#[derive(Debug, Error)]
pub enum TransportError {
    #[error("{node}: {}{}", self.reason(), self.hint())]
    UnknownHostKey { node: String, host: String },
    #[error("{node}: {}{}", self.reason(), self.hint())]
    HostKeyChanged { node: String, host: String },
    #[error("{node}: {}{}", self.reason(), self.hint())]
    AuthFailed {
        node: String,
        who: String,
        detail: String,
    },
    #[error("{node}: {}", self.reason())]
    Unreachable {
        node: String,
        host: String,
        detail: String,
    },
    #[error("{node}: {}", self.reason())]
    Timeout {
        node: String,
        secs: u64,
        during: Phase,
    },
    #[error("{node}: {}", self.reason())]
    Ssh { node: String, detail: String },
    #[error("{node}: {}{}", self.reason(), self.hint())]
    AgentNotInstalled { node: String, cluster: String },
    #[error("{node}: {}", self.reason())]
    TokenUnreadable { node: String, detail: String },
    #[error("{node}: {}{}", self.reason(), self.hint())]
    AgentNotRunning {
        node: String,
        port: u16,
        cluster: String,
        /// What showed it ("connection refused", "connection refused on the node").
        observed: String,
    },
    #[error("{node}: {}", self.reason())]
    AgentConnectionLost {
        node: String,
        port: u16,
        /// How the connection ended ("reset", "closed in the ssh tunnel", ...).
        observed: String,
        /// It was a kept-alive connection an earlier request was answered on.
        kept_alive: bool,
    },
    #[error("{node}: {}{}", self.reason(), self.hint())]
    Unauthorized { node: String },
    #[error("{}{}", self.reason(), self.hint())]
    NotTheAgent { node: String, hint: String },
    #[error("{node}: {}", self.reason())]
    Agent {
        node: String,
        status: u16,
        code: String,
        message: String,
    },
    #[error("{node}: {}", self.reason())]
    Http { node: String, detail: String },
    #[error("{}", self.reason())]
    LocalAgent { detail: String },
    #[error("{}", self.reason())]
    ControlDir { path: String, detail: String },
}

impl TransportError {
    /// Connection-level errors worth one retry of the connect phase (no
    /// token and no request has gone out then; never host key or auth
    /// problems).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            TransportError::Unreachable { .. }
                | TransportError::Timeout {
                    during: Phase::Connecting,
                    ..
                }
                | TransportError::Ssh { .. }
                | TransportError::AgentConnectionLost { .. }
        )
    }

    /// The node could not be connected to within `timeout`.
    pub(crate) fn connect_timeout(node: &str, timeout: std::time::Duration) -> Self {
        TransportError::Timeout {
            node: node.to_owned(),
            secs: timeout.as_secs(),
            during: Phase::Connecting,
        }
    }

    /// What went wrong, without the node's name in front and without the
    /// advice: enough for a table cell (the full message goes to stderr).
    pub fn reason(&self) -> String {
        use TransportError::*;
        match self {
            UnknownHostKey { host, .. } => format!("host key of {host} is not in known_hosts"),
            HostKeyChanged { host, .. } => format!(
                "HOST KEY MISMATCH: the host key of {host} differs from the one in known_hosts \
                 (possible man-in-the-middle)"
            ),
            AuthFailed { who, detail, .. } => {
                format!("ssh authentication failed for {who}: {detail}")
            }
            Unreachable { host, detail, .. } => format!("cannot reach {host}: {detail}"),
            Timeout { secs, during, .. } => format!("timed out after {secs}s {during}"),
            Ssh { detail, .. } => format!("ssh failed: {detail}"),
            AgentNotInstalled { .. } => {
                "the agent is not installed (no token at ~/.rh/agent/token)".to_owned()
            }
            TokenUnreadable { detail, .. } => {
                format!("cannot read the agent token ~/.rh/agent/token: {detail}")
            }
            AgentNotRunning { port, observed, .. } => {
                format!("the agent is not running on port {port} ({observed})")
            }
            AgentConnectionLost {
                port,
                observed,
                kept_alive,
                ..
            } => format!(
                "the {}connection to the agent on port {port} was {observed} before it answered",
                if *kept_alive { "kept-alive " } else { "" }
            ),
            Unauthorized { .. } => "the agent refused the token (401)".to_owned(),
            NotTheAgent { node, .. } => format!(
                "the process listening on the agent port of {node} could not prove it holds the \
                 agent token: it is not this user's agent (another process took the port?)"
            ),
            Agent {
                status,
                code,
                message,
                ..
            } => format!("agent answered {status} {code}: {message}"),
            Http { detail, .. } => format!("request to the agent failed: {detail}"),
            LocalAgent { detail } => format!("local agent: {detail}"),
            ControlDir { path, detail } => format!("ssh control directory {path}: {detail}"),
        }
    }

    /// What the user can do, with its leading separator; empty when the
    /// reason says it all.
    fn hint(&self) -> String {
        use TransportError::*;
        match self {
            UnknownHostKey { .. } => {
                "; check it and rerun with --accept-new-host-keys to trust it".to_owned()
            }
            HostKeyChanged { host, .. } => format!(
                "; refused. If the host was reinstalled, remove the old key with \
                 `ssh-keygen -R {host}`"
            ),
            AuthFailed { .. } => "; check --user and --identity-file of the cluster".to_owned(),
            AgentNotInstalled { cluster, .. } | AgentNotRunning { cluster, .. } => {
                format!("; run `controller cluster bootstrap {cluster}`")
            }
            Unauthorized { .. } => "; the token changed or belongs to another agent".to_owned(),
            NotTheAgent { hint, .. } => format!("; refusing to send the token{hint}"),
            _ => String::new(),
        }
    }
}

/// An error and its sources on one line (reqwest errors carry URLs, never bodies).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        out.push_str(": ");
        out.push_str(&s.to_string());
        src = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let timeout = |during| TransportError::Timeout {
            node: "n".into(),
            secs: 3,
            during,
        };
        assert!(timeout(Phase::Connecting).is_retryable());
        assert!(!timeout(Phase::WaitingForAgent).is_retryable());
    }

    #[test]
    fn the_reason_is_the_message_without_node_and_advice() {
        let e = TransportError::AgentNotRunning {
            node: "n1".into(),
            port: 32300,
            cluster: "c".into(),
            observed: "connection refused".into(),
        };
        assert_eq!(
            e.to_string(),
            "n1: the agent is not running on port 32300 (connection refused); run \
             `controller cluster bootstrap c`"
        );
        assert_eq!(
            e.reason(),
            "the agent is not running on port 32300 (connection refused)"
        );
        // A `;` in a detail is kept: the reason is typed, not cut out of text.
        let e = TransportError::Ssh {
            node: "n1".into(),
            detail: "a; b".into(),
        };
        assert_eq!(e.reason(), "ssh failed: a; b");
        assert_eq!(e.to_string(), "n1: ssh failed: a; b");
        let e = TransportError::NotTheAgent {
            node: "n1".into(),
            hint: String::new(),
        };
        assert!(e.to_string().starts_with(&e.reason()), "{e}");
        assert!(
            e.to_string().ends_with("; refusing to send the token"),
            "{e}"
        );
    }
}
