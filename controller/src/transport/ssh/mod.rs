//! SSH to one node: the system `ssh`, one multiplexed master connection per
//! node, every ssh process built by `command::ssh_command` with the same
//! options (`RH_SSH_CONFIG` as `-F`, batch mode, strict host keys, the
//! cluster's port, user and key), the control files in the private
//! `~/.rh/ssh` (`control`).
//!
//! Masters persist between commands (like `ControlMaster=auto
//! ControlPersist=300s`): a live master (its socket accepts) is reused,
//! otherwise one is started with `ControlPersist=<idle seconds>`; `--ssh-persist
//! 0` closes it when the command ends (through its socket, without waiting
//! for it to exit). A per-node lock file keeps two controllers from racing
//! to start the same master.
//!
//! Cold, the master does everything in one process: its command line
//! forwards the agent port to a unix socket next to the control socket
//! (kept with the master) and its first session reads the agent token and
//! the port in `agent.addr`. Warm, no process is started at all: the token
//! comes from the 0600 cache beside the control socket (dropped with the
//! master) and the forward socket is already there; a loopback port in this
//! process bridges to it while a command runs.
//!
//! The token is sent only to a process that proved it holds it: the
//! forwarded port is sent a token challenge (`/healthz?challenge=`) and the
//! answer is checked against the token. A cached token whose proof fails is
//! dropped and the token read again once over the master (the same answer is
//! checked against it, no second challenge). Nothing here logs the token or
//! any value.

pub(crate) mod command;
pub(crate) mod control;

use std::fmt;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::SecretText;
use tokio::io::AsyncWriteExt;

use self::command::{classify_text, first_line, last_lines, ssh_command, Call};
use self::control::{
    control_dir, control_path, ensure_private_dir, forward_path, lock_node, log_path,
};
use super::endpoint::{Challenged, Endpoint};
use super::error::error_chain;
use super::{AgentConn, TransportError, TransportOptions};
use crate::clusters::{Node, SshTarget};

/// The remote command that prints the agent token, a newline, and the
/// agent's address when it wrote one.
const READ_TOKEN: &str =
    "cat ~/.rh/agent/token && echo && { cat ~/.rh/agent/agent.addr 2>/dev/null || true; }";

/// What to feed a remote command on stdin.
#[derive(Debug, Clone, Copy)]
pub enum Input<'a> {
    File(&'a Path),
    Bytes(&'a [u8]),
}

/// The output of a remote command.
#[derive(Debug)]
pub struct Output {
    pub success: bool,
    pub status: String,
    pub stdout: String,
    pub stderr: String,
}

/// The agent token and the port the agent reported (`agent.addr`), if any.
type TokenRead = (SecretText, Option<u16>);

/// What a session knows of the token before asking the node.
enum Known {
    /// Read by the new master's first session (or why it could not be).
    Fresh(Result<TokenRead, TransportError>),
    /// Cached beside a reused master: used only once proven.
    Cached(TokenRead),
    /// Nothing: read it over the master.
    Nothing,
}

/// An open master connection to one node.
pub struct SshSession {
    node: String,
    target: SshTarget,
    opts: TransportOptions,
    ctl: PathBuf,
    /// Leave the master running when this session ends.
    keep: bool,
    /// An already running master was reused.
    reused: bool,
    known: Mutex<Option<Known>>,
    /// The in-process loopback listeners bridging to the forwards' unix
    /// sockets, stopped when this session ends.
    bridges: Mutex<Vec<tokio::task::AbortHandle>>,
}

impl fmt::Debug for SshSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SshSession")
            .field("node", &self.node)
            .field("ctl", &self.ctl)
            .field("keep", &self.keep)
            .field("reused", &self.reused)
            .finish_non_exhaustive()
    }
}

impl SshSession {
    /// Reuse the node's live master connection, or start one (which reads
    /// the token as its first session).
    pub async fn open(
        node: &Node,
        t: &SshTarget,
        opts: &TransportOptions,
    ) -> Result<Self, TransportError> {
        ensure_private_dir(&control_dir(opts))?;
        let ctl = control_path(opts, t);
        let started = Instant::now();
        let _lock = lock_node(&ctl).await?;
        let session = |known, reused| Self {
            node: node.name.clone(),
            target: t.clone(),
            opts: opts.clone(),
            ctl: ctl.clone(),
            keep: !opts.ssh_persist.is_zero(),
            reused,
            known: Mutex::new(Some(known)),
            bridges: Mutex::new(vec![]),
        };
        if std::fs::symlink_metadata(&ctl).is_ok() {
            // A master that accepts on its socket is alive (what `ssh -O
            // check` asks, without spawning ssh).
            match tokio::net::UnixStream::connect(&ctl).await {
                Ok(_) => {
                    tracing::debug!(node = %node.name, ms = started.elapsed().as_millis() as u64,
                        "ssh master reused");
                    let known =
                        control::read_cached_token(&ctl).map_or(Known::Nothing, Known::Cached);
                    return Ok(session(known, true));
                }
                Err(e) => {
                    tracing::debug!(node = %node.name, error = %e, "stale ssh master; starting a new one");
                }
            }
        }
        // Whatever an old master left (its token cache included) goes with it.
        control::remove_master_files(&ctl, true);
        let read = launch_master(node, t, opts, &ctl).await?;
        tracing::debug!(node = %node.name, ms = started.elapsed().as_millis() as u64, "ssh master up");
        Ok(session(Known::Fresh(read), false))
    }

    /// Whether an already running master was reused.
    pub fn reused(&self) -> bool {
        self.reused
    }

    /// What the session knows of the token, once.
    fn take_known(&self) -> Known {
        self.known
            .lock()
            .expect("never poisoned")
            .take()
            .unwrap_or(Known::Nothing)
    }

    /// Read the agent token and the port the agent reports in
    /// `~/.rh/agent/agent.addr` (when present) with one command through the master.
    async fn read_token(&self) -> Result<TokenRead, TransportError> {
        let out = ssh_command(&self.opts, &self.target, &self.ctl, Call::Run(READ_TOKEN))
            .output()
            .await
            .map_err(|e| TransportError::TokenUnreadable {
                node: self.node.clone(),
                detail: error_chain(&e),
            })?;
        parse_token_read(&self.node, &self.opts.cluster, &out)
    }

    /// Reach `127.0.0.1:remote_port` on the node from a local loopback port.
    /// The master forwards a unix socket in the private control dir
    /// (`<ctl>.p<port>`, kept with the master, so a reused master needs no
    /// new forward) and a loopback listener in this process bridges to it
    /// for the duration of the command. Returns the local port.
    ///
    /// With `trust_existing`, a forward socket already there is used as is
    /// (the master that made it is alive); otherwise it is checked by
    /// connecting, which costs the master a channel to the agent: only
    /// done once a first attempt failed.
    pub async fn forward(
        &self,
        remote_port: u16,
        trust_existing: bool,
    ) -> Result<u16, TransportError> {
        let err = |detail: String| TransportError::Ssh {
            node: self.node.clone(),
            detail,
        };
        let sock = forward_path(&self.ctl, remote_port);
        let usable = if trust_existing {
            use std::os::unix::fs::FileTypeExt;
            std::fs::symlink_metadata(&sock).is_ok_and(|m| m.file_type().is_socket())
        } else {
            tokio::net::UnixStream::connect(&sock).await.is_ok()
        };
        if !usable {
            let _ = std::fs::remove_file(&sock);
            let out = ssh_command(
                &self.opts,
                &self.target,
                &self.ctl,
                Call::Forward(&sock, remote_port),
            )
            .output()
            .await
            .map_err(|e| err(format!("port forward failed: {}", error_chain(&e))))?;
            if !out.status.success() {
                return Err(err(format!(
                    "port forward failed: {}",
                    first_line(&String::from_utf8_lossy(&out.stderr))
                )));
            }
        }
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .map_err(|e| err(format!("no free local port: {e}")))?;
        let local = listener
            .local_addr()
            .map_err(|e| err(format!("no free local port: {e}")))?
            .port();
        let node = self.node.clone();
        let task = tokio::spawn(async move {
            loop {
                let mut tcp = match listener.accept().await {
                    Ok((tcp, _)) => tcp,
                    Err(e) => {
                        // Out of descriptors, or a connection aborted before
                        // it was taken: the bridge stays (leaving would turn
                        // every later request into a refused connection).
                        tracing::debug!(node = %node, error = %e, "bridge accept failed");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                };
                let sock = sock.clone();
                let node = node.clone();
                tokio::spawn(async move {
                    match tokio::net::UnixStream::connect(&sock).await {
                        Ok(mut unix) => {
                            let _ = tokio::io::copy_bidirectional(&mut tcp, &mut unix).await;
                        }
                        Err(e) => {
                            tracing::debug!(node = %node, error = %e, "forward socket unreachable")
                        }
                    }
                });
            }
        });
        self.bridges
            .lock()
            .expect("never poisoned")
            .push(task.abort_handle());
        Ok(local)
    }

    /// Run a shell command on the node with `stdin` as its input; its
    /// stdout, or on failure an error with its exit status and stderr.
    pub async fn run_with_input(
        &self,
        command: &str,
        stdin: Option<Input<'_>>,
    ) -> Result<String, TransportError> {
        let out = self.output(command, stdin).await?;
        if out.success {
            Ok(out.stdout)
        } else {
            Err(TransportError::Ssh {
                node: self.node.clone(),
                detail: format!(
                    "`{}` exited with {}: {}",
                    command.split_whitespace().next().unwrap_or(command),
                    out.status,
                    last_lines(&out.stderr, 5)
                ),
            })
        }
    }

    /// Run a shell command on the node with `stdin` as its input; its exit
    /// status, stdout and stderr.
    pub async fn output(
        &self,
        command: &str,
        stdin: Option<Input<'_>>,
    ) -> Result<Output, TransportError> {
        let mut cmd = ssh_command(&self.opts, &self.target, &self.ctl, Call::Run(command));
        if stdin.is_some() {
            cmd.stdin(Stdio::piped());
        }
        let err = |detail: String| TransportError::Ssh {
            node: self.node.clone(),
            detail,
        };
        let mut child = cmd.spawn().map_err(|e| err(error_chain(&e)))?;
        if let Some(source) = stdin {
            let mut input = child.stdin.take().expect("stdin is piped");
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
            .map_err(|e| err(error_chain(&e)))?;
        Ok(Output {
            success: out.status.success(),
            status: out.status.to_string(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    /// Forget the token read when the master started (bootstrap installs
    /// the agent after that): the next proof reads it again.
    pub fn forget_token(&self) {
        *self.known.lock().expect("never poisoned") = Some(Known::Nothing);
    }

    /// Close the master whatever the persistence setting (and wait until
    /// it is gone, as [`SshSession::close`] does without persistence).
    async fn shut_down(mut self) {
        self.keep = false;
        self.close().await;
    }

    /// End this command's use of the master: with persistence, stop this
    /// process's bridges and leave the master (and its forwards and token
    /// cache) for the next command; without, ask the master to exit, remove
    /// its files and wait (at most 5 s) until its control socket is gone. A
    /// master told to exit but not waited for was still there for the next
    /// command at the same control path: found alive, reused, and its
    /// forward socket (already removed) read as "the agent is not running";
    /// or, exiting later, it removed the new master's socket. The master is
    /// a local process told to exit, so the wait is its exit; 5 s covers a
    /// machine busy enough that 2 s did not (seen once under a load of 11).
    pub async fn close(self) {
        for bridge in self.bridges.lock().expect("never poisoned").drain(..) {
            bridge.abort();
        }
        if self.keep {
            return;
        }
        if !control::terminate(&self.ctl, false).await {
            tracing::debug!(node = %self.node, "the ssh master did not accept to exit");
        }
        control::remove_master_files(&self.ctl, false);
        let started = Instant::now();
        while std::fs::symlink_metadata(&self.ctl).is_ok()
            && started.elapsed() < Duration::from_secs(5)
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// The token and reported port out of [`READ_TOKEN`]'s output, or why not.
fn parse_token_read(
    node: &str,
    cluster: &str,
    out: &std::process::Output,
) -> Result<TokenRead, TransportError> {
    let unreadable = |detail: String| TransportError::TokenUnreadable {
        node: node.to_owned(),
        detail,
    };
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        if stderr.contains("No such file") {
            return Err(TransportError::AgentNotInstalled {
                node: node.to_owned(),
                cluster: cluster.to_owned(),
            });
        }
        return Err(unreadable(first_line(&stderr)));
    }
    let text = SecretText::new(
        String::from_utf8(out.stdout.clone()).map_err(|_| unreadable("it is not UTF-8".into()))?,
    );
    let mut lines = text
        .expose_secret()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty());
    let token = lines.next().unwrap_or_default();
    if !control::valid_token(token) {
        return Err(unreadable("it is empty or malformed".into()));
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

/// ssh's exit status when ssh itself failed (not the remote command).
const SSH_FAILED: i32 = 255;

/// Start a master connection for `t` at `ctl` that persists after its first
/// session (`ControlPersist`), with the agent port forwarded on its command
/// line; its first session reads the token. Returns that read (an error
/// there leaves the master up); `Err` when the connection failed.
async fn launch_master(
    node: &Node,
    t: &SshTarget,
    opts: &TransportOptions,
    ctl: &Path,
) -> Result<Result<TokenRead, TransportError>, TransportError> {
    // Without persistence the master is closed when the command ends; the
    // idle timeout only matters if this process dies before it can say so.
    let persist_secs = match opts.ssh_persist.as_secs() {
        0 => 30,
        n => n,
    };
    let log = log_path(ctl);
    let sock = forward_path(ctl, t.agent_port);
    let cmd = ssh_command(
        opts,
        t,
        ctl,
        Call::Master {
            persist_secs,
            log: &log,
            forward: (&sock, t.agent_port),
            command: READ_TOKEN,
        },
    )
    .output();
    let out = match tokio::time::timeout(opts.timeout + Duration::from_secs(5), cmd).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => {
            return Err(TransportError::Ssh {
                node: node.name.clone(),
                detail: format!("cannot run ssh: {e}"),
            })
        }
        Err(_) => return Err(TransportError::connect_timeout(&node.name, opts.timeout)),
    };
    if out.status.code() == Some(SSH_FAILED) {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let text = if text.trim().is_empty() {
            format!("ssh exited with {}", out.status)
        } else {
            text
        };
        return Err(classify_text(&node.name, t, &text));
    }
    Ok(parse_token_read(&node.name, &opts.cluster, &out))
}

/// Close a persisted master for `t`, if one is running. True when one was closed.
pub async fn disconnect(t: &SshTarget, opts: &TransportOptions) -> Result<bool, TransportError> {
    let ctl = control_path(opts, t);
    if std::fs::symlink_metadata(&ctl).is_err() {
        return Ok(false);
    }
    let _lock = lock_node(&ctl).await?;
    let closed = control::terminate(&ctl, true).await;
    control::remove_master_files(&ctl, true);
    Ok(closed)
}

/// Open (or reuse) the master, then prove the agent holds the token.
pub(crate) async fn connect(
    node: &Node,
    t: &SshTarget,
    opts: &TransportOptions,
    http: &reqwest::Client,
) -> Result<AgentConn, TransportError> {
    let mut session = SshSession::open(node, t, opts).await?;
    let mut result = prove_within(&session, node, t, opts, http).await;
    if session.reused()
        && matches!(
            result,
            Err(TransportError::Ssh { .. }
                | TransportError::TokenUnreadable { .. }
                | TransportError::Timeout { .. }
                | TransportError::AgentConnectionLost { .. })
        )
    {
        // A master's socket accepts while it waits for a peer that is gone
        // (node rebooted, network changed), or while it is exiting (its
        // idle time ran out, or the last command asked it to): drop it and
        // connect afresh once.
        tracing::debug!(node = %node.name, "reused ssh master failed; starting a new one");
        session.shut_down().await;
        session = SshSession::open(node, t, opts).await?;
        result = prove_within(&session, node, t, opts, http).await;
    }
    match result {
        // The proof is checked again here, before the connection can send
        // anything with the token; a failure closes the session.
        Ok((token, ep, challenged)) => {
            AgentConn::proven(ep, token, challenged, Some(session)).await
        }
        Err(e) => {
            session.close().await;
            Err(e)
        }
    }
}

/// [`prove`] bounded by `--timeout`: requests through the master can hang
/// on a peer that vanished.
pub(crate) async fn prove_within(
    session: &SshSession,
    node: &Node,
    t: &SshTarget,
    opts: &TransportOptions,
    http: &reqwest::Client,
) -> Result<(SecretText, Endpoint, Challenged), TransportError> {
    tokio::time::timeout(opts.timeout, prove(session, node, t, opts, http))
        .await
        .unwrap_or_else(|_| Err(TransportError::connect_timeout(&node.name, opts.timeout)))
}

/// The one tunnel path: the agent's token, an endpoint through the master
/// and the agent's answer to a challenge, proven to match the token. The
/// token comes from the new master's first session, else from the cache
/// beside a reused master, else (or when the cached one fails its proof)
/// from a command through the master while the agent port is challenged.
/// A proven token is cached while the master persists. A token-read failure
/// wins over the challenge's (it says more: not installed, ...).
async fn prove(
    session: &SshSession,
    node: &Node,
    t: &SshTarget,
    opts: &TransportOptions,
    http: &reqwest::Client,
) -> Result<(SecretText, Endpoint, Challenged), TransportError> {
    let probe = |agent_port: u16, trust_existing: bool| async move {
        let port = session.forward(agent_port, trust_existing).await?;
        let ep = Endpoint::loopback(node, port, agent_port, http, opts)
            .through_tunnel(log_path(&session.ctl));
        let challenged = ep.challenge(None).await;
        Ok::<_, TransportError>((ep, challenged))
    };
    let proven = |token: SecretText, reported: Option<u16>, ep, challenged: Challenged| {
        challenged.verify(&token)?;
        if session.keep {
            control::write_cached_token(&session.ctl, &token, reported);
        }
        Ok((token, ep, challenged))
    };
    let cached = match session.take_known() {
        Known::Fresh(read) => {
            let (token, reported) = read?;
            // The new master made the forward (ExitOnForwardFailure).
            let (ep, challenged) = probe(reported.unwrap_or(t.agent_port), true).await?;
            return proven(token, reported, ep, challenged?);
        }
        Known::Cached((token, reported)) => {
            let (ep, challenged) = probe(reported.unwrap_or(t.agent_port), true).await?;
            match challenged {
                Ok(c) if c.verify(&token).is_ok() => return Ok((token, ep, c)),
                // The agent changed its token: check the same answer
                // against the token on the node.
                Ok(c) => Some((ep, c)),
                // It moved to another port, or is down: ask the node.
                Err(_) => None,
            }
        }
        Known::Nothing => None,
    };
    control::drop_cached_token(&session.ctl);
    let (token, reported) = match cached {
        Some((ep, challenged)) => {
            let (token, reported) = session.read_token().await?;
            if !matches!(reported, Some(p) if p != ep.agent_port()) {
                return proven(token, reported, ep, challenged);
            }
            (token, reported)
        }
        None => {
            let (read, probed) = tokio::join!(session.read_token(), probe(t.agent_port, false));
            let (token, reported) = read?;
            if !matches!(reported, Some(p) if p != t.agent_port) {
                let (ep, challenged) = probed?;
                return proven(token, reported, ep, challenged?);
            }
            (token, reported)
        }
    };
    let port = reported.expect("another port was reported");
    tracing::debug!(node = %node.name, port, "agent reports another port");
    let (ep, challenged) = probe(port, false).await?;
    proven(token, reported, ep, challenged?)
}
