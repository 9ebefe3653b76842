//! Reaching the agents of a cluster: over SSH for remote nodes ([`ssh`]: a
//! multiplexed master per node, kept alive between commands for
//! `--ssh-persist` idle seconds in the private `~/.rh/ssh`, a local port
//! forward to the agent's loopback port, the token read over the same
//! session) or straight over loopback for
//! the `local` cluster ([`local`]); then HTTP through ONE shared reqwest client
//! (connect and request timeouts, no redirects, no proxy). [`fan_out()`] runs a
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
//! are never logged or `Debug`-printed, and the token is a `SecretText`.

mod client;
mod endpoint;
mod error;
mod fan_out;
pub mod local;
mod options;
pub mod ssh;

pub use client::AgentConn;
pub use error::{Phase, TransportError};
pub use fan_out::{fan_out, for_each_node, NodeOutcome};
pub use options::{http_client, TransportOptions, DEFAULT_SSH_PERSIST_SECS};

use crate::clusters::{Node, Target};

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

/// An exclusive `flock` on a file, released when dropped (the descriptor
/// closes with it).
#[derive(Debug)]
pub(crate) struct FileLock {
    _file: std::fs::File,
}

/// Hold an exclusive `flock` on `path` (created 0600 if missing); released
/// when the returned guard drops. A free lock (the usual case) is taken
/// here; only a held one is waited for on a blocking thread (a fan-out to
/// 32 nodes would otherwise start 32 threads to take 32 free locks). One
/// helper for the per-node SSH master lock and the local agent's start lock;
/// `flock` through rustix, as `common::fsutil`'s directory locks.
pub(crate) async fn lock_file(path: std::path::PathBuf) -> Result<FileLock, String> {
    use rustix::fs::{flock, FlockOperation};
    use rustix::io::Errno;
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| format!("open {}: {e}", path.display()))?;
    match flock(&file, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => return Ok(FileLock { _file: file }),
        Err(Errno::WOULDBLOCK) => {}
        Err(e) => return Err(format!("lock {}: {e}", path.display())),
    }
    tokio::task::spawn_blocking(move || loop {
        match flock(&file, FlockOperation::LockExclusive) {
            Ok(()) => return Ok(FileLock { _file: file }),
            Err(Errno::INTR) => continue,
            Err(e) => return Err(format!("lock {}: {e}", path.display())),
        }
    })
    .await
    .map_err(|e| e.to_string())
    .and_then(|r| r)
}
