//! SSH to one node: the `openssh` crate (process mux) over the system `ssh`,
//! one multiplexed master connection per node with `BatchMode=yes`, a
//! `ConnectTimeout`, the cluster's user, port and identity file, and host keys
//! checked against known_hosts (`StrictHostKeyChecking=yes`, or `accept-new`
//! with `--accept-new-host-keys`: a CHANGED key is refused either way).
//! `RH_SSH_CONFIG` names an ssh_config passed as `-F` (tests use it so the real
//! `~/.ssh` is never read).
//!
//! Masters persist between commands (like `ControlMaster=auto
//! ControlPersist=300s`): each node's control socket has a fixed short name in
//! the private control dir (`~/.rh/ssh/<16 hex of a hash of user, host, port,
//! identity file and ssh config>`, 0700, owned by the user; a socket is as
//! good as an authenticated session), a live master is reused after
//! `ssh -O check`, otherwise a new one is started with `ControlPersist=<idle
//! seconds>` and left running; `--ssh-persist 0` closes it (`ssh -O exit`)
//! when the command ends. A per-node lock file keeps two controllers from
//! racing to start the same master. The agent port is forwarded to a unix
//! socket next to the control socket (kept with the master) and bridged to
//! a loopback port by this process only while a command runs.
//!
//! Through the master: the agent token is read with `cat ~/.rh/agent/token`
//! (with the port in `agent.addr`, when the agent wrote one) and a local port
//! forward reaches the agent's loopback port. While the token is being read,
//! the forwarded port is sent a token challenge (`/healthz?challenge=`); the
//! connection is only made when the answer proves the token, so a process
//! that took the agent's port on the node never receives it (and the check
//! adds no round trip: it overlaps the token read). ssh's own messages are
//! classified into errors a user can act on; they never contain secret
//! values, and neither does anything here.

use std::fmt;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Stdio as StdStdio;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::SecretText;
use openssh::{ForwardType, Session, Socket, Stdio};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::{
    ensure_private_dir, AgentConn, Challenged, Endpoint, TransportError, TransportOptions,
};
use crate::clusters::{Node, SshTarget};

/// A unix socket path must fit in `sun_path` (108 bytes) and ssh first binds
/// `<path>.<16 random chars>`: keep control paths at most this long.
const MAX_CONTROL_PATH: usize = 90;

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

/// An open master connection to one node.
pub struct SshSession {
    node: String,
    session: Session,
    ctl: PathBuf,
    /// Leave the master running when this session ends.
    keep: bool,
    /// An already running master was reused.
    reused: bool,
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

/// The directory for control sockets: `opts.control_dir`, or
/// `/tmp/rh-ssh-<uid>` when home is so deep that socket paths would not fit.
pub fn control_dir(opts: &TransportOptions) -> PathBuf {
    // "/" + 16 hex + ".lock"
    if opts.control_dir.as_os_str().len() + 22 <= MAX_CONTROL_PATH {
        opts.control_dir.clone()
    } else {
        std::env::temp_dir().join(format!("rh-ssh-{}", nix::unistd::geteuid().as_raw()))
    }
}

/// The control socket of one node's master: a short fixed name derived from
/// everything that decides where and as whom ssh connects.
pub fn control_path(opts: &TransportOptions, t: &SshTarget) -> PathBuf {
    let mut h = Sha256::new();
    for part in [
        t.user.as_deref().unwrap_or(""),
        &t.host,
        &t.port.to_string(),
        &t.identity_file
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        &opts
            .ssh_config
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
    ] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    let digest = h.finalize();
    let name: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    control_dir(opts).join(name)
}

/// Hold the node's lock file (`<ctl>.lock`) while checking or starting its master.
async fn lock_node(ctl: &Path) -> Result<nix::fcntl::Flock<std::fs::File>, TransportError> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = ctl.with_extension("lock");
    tokio::task::spawn_blocking(move || {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| format!("lock {}: {e}", path.display()))
    })
    .await
    .map_err(|e| e.to_string())
    .and_then(|r| r)
    .map_err(|detail| TransportError::ControlDir {
        path: ctl.display().to_string(),
        detail,
    })
}

impl SshSession {
    /// Reuse the node's live master connection, or start one.
    pub async fn open(
        node: &Node,
        t: &SshTarget,
        opts: &TransportOptions,
    ) -> Result<Self, TransportError> {
        ensure_private_dir(&control_dir(opts))?;
        let ctl = control_path(opts, t);
        let log = ctl.with_extension("log");
        let keep = !opts.ssh_persist.is_zero();
        let started = Instant::now();
        let _lock = lock_node(&ctl).await?;
        if std::fs::symlink_metadata(&ctl).is_ok() {
            let session = Session::resume(
                ctl.clone().into_boxed_path(),
                Some(log.clone().into_boxed_path()),
            );
            // A master that accepts on its socket is alive (what `ssh -O
            // check` asks, without spawning ssh).
            match tokio::net::UnixStream::connect(&ctl).await {
                Ok(_) => {
                    tracing::debug!(node = %node.name, ms = started.elapsed().as_millis() as u64,
                        "ssh master reused");
                    return Ok(Self::new(node, session, ctl, keep, true));
                }
                Err(e) => {
                    tracing::debug!(node = %node.name, error = %e, "stale ssh master; starting a new one");
                    let _ = std::fs::remove_file(&ctl);
                }
            }
        }
        launch_master(node, t, opts, &ctl, &log).await?;
        tracing::debug!(node = %node.name, ms = started.elapsed().as_millis() as u64, "ssh master up");
        let session = Session::resume(ctl.clone().into_boxed_path(), Some(log.into_boxed_path()));
        Ok(Self::new(node, session, ctl, keep, false))
    }

    fn new(node: &Node, session: Session, ctl: PathBuf, keep: bool, reused: bool) -> Self {
        Self {
            node: node.name.clone(),
            session,
            ctl,
            keep,
            reused,
            bridges: Mutex::new(vec![]),
        }
    }

    /// Whether an already running master was reused.
    pub fn reused(&self) -> bool {
        self.reused
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

    /// Reach `127.0.0.1:remote_port` on the node from a local loopback port.
    /// The master forwards a unix socket in the private control dir
    /// (`<ctl>.p<port>`, kept with the master, so a reused master needs no
    /// new forward) and a loopback listener in this process bridges to it
    /// for the duration of the command. Returns the local port.
    pub async fn forward(&self, remote_port: u16) -> Result<u16, TransportError> {
        let err = |detail: String| TransportError::Ssh {
            node: self.node.clone(),
            detail,
        };
        let sock = self.ctl.with_extension(format!("p{remote_port}"));
        if tokio::net::UnixStream::connect(&sock).await.is_err() {
            let _ = std::fs::remove_file(&sock);
            self.session
                .request_port_forward(
                    ForwardType::Local,
                    Socket::from(sock.as_path()),
                    Socket::new("127.0.0.1", remote_port),
                )
                .await
                .map_err(|e| err(format!("port forward failed: {}", super::error_chain(&e))))?;
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
                let Ok((mut tcp, _)) = listener.accept().await else {
                    break;
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
        Ok(Output {
            success: out.status.success(),
            status: out.status.to_string(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    /// Close the master whatever the persistence setting (`ssh -O exit`).
    pub async fn shut_down(mut self) {
        self.keep = false;
        self.close().await;
    }

    /// End this command's use of the master: with persistence, cancel the
    /// forwards requested here and leave the master running for the next
    /// command; without, close the master (`ssh -O exit`).
    pub async fn close(self) {
        for bridge in self.bridges.lock().expect("never poisoned").drain(..) {
            bridge.abort();
        }
        if self.keep {
            // Dropping a resumed session leaves its master (and its
            // unix-socket forwards) alone.
            return;
        }
        let log = self.ctl.with_extension("log");
        let ctl = self.ctl.clone();
        if let Err(e) = self.session.close().await {
            tracing::debug!(node = %self.node, error = %e, "closing the ssh session");
        }
        let _ = std::fs::remove_file(log);
        remove_forward_sockets(&ctl);
    }
}

/// Remove the forward sockets (`<ctl>.p<port>`) of a closed master.
fn remove_forward_sockets(ctl: &Path) {
    let (Some(dir), Some(name)) = (ctl.parent(), ctl.file_name()) else {
        return;
    };
    let prefix = format!("{}.p", name.to_string_lossy());
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Start a master connection for `t` at `ctl`, backgrounded by ssh (`-f`)
/// with `ControlPersist` set, so it outlives this process when persisting.
async fn launch_master(
    node: &Node,
    t: &SshTarget,
    opts: &TransportOptions,
    ctl: &Path,
    log: &Path,
) -> Result<(), TransportError> {
    let _ = std::fs::remove_file(log);
    // Without persistence the master is closed when the command ends; the
    // idle timeout only matters if this process dies before it can say so.
    let persist = match opts.ssh_persist.as_secs() {
        0 => 30,
        n => n,
    };
    let mut cmd = tokio::process::Command::new("ssh");
    cmd.stdin(StdStdio::null())
        .stdout(StdStdio::null())
        .stderr(StdStdio::null())
        .kill_on_drop(true)
        .arg("-E")
        .arg(log)
        .arg("-S")
        .arg(ctl)
        .args(["-M", "-f", "-N", "-o"])
        .arg(format!("ControlPersist={persist}s"))
        .args(["-o", "BatchMode=yes", "-o"])
        .arg(if opts.accept_new_host_keys {
            "StrictHostKeyChecking=accept-new"
        } else {
            "StrictHostKeyChecking=yes"
        })
        .arg("-o")
        .arg(format!("ConnectTimeout={}", opts.timeout.as_secs().max(1)))
        .args(["-o", "ServerAliveInterval=15"]);
    // Port 22 is ssh's default: leave it to the ssh config (host aliases may set Port).
    if t.port != 22 {
        cmd.arg("-p").arg(t.port.to_string());
    }
    if let Some(user) = &t.user {
        cmd.arg("-l").arg(user);
    }
    if let Some(key) = &t.identity_file {
        cmd.args(["-o", "IdentitiesOnly=yes", "-i"]).arg(key);
    }
    if let Some(cfg) = &opts.ssh_config {
        cmd.arg("-F").arg(cfg);
    }
    cmd.arg("--").arg(&t.host);
    let status =
        match tokio::time::timeout(opts.timeout + Duration::from_secs(5), cmd.status()).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                return Err(TransportError::Ssh {
                    node: node.name.clone(),
                    detail: format!("cannot run ssh: {e}"),
                })
            }
            Err(_) => {
                return Err(TransportError::Timeout {
                    node: node.name.clone(),
                    secs: opts.timeout.as_secs(),
                    during: "connecting",
                })
            }
        };
    if status.success() {
        return Ok(());
    }
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let text = if text.trim().is_empty() {
        format!("ssh exited with {status}")
    } else {
        text
    };
    Err(classify_text(&node.name, t, &text))
}

/// Close a persisted master for `t`, if one is running. True when one was closed.
pub async fn disconnect(t: &SshTarget, opts: &TransportOptions) -> Result<bool, TransportError> {
    let ctl = control_path(opts, t);
    let log = ctl.with_extension("log");
    if std::fs::symlink_metadata(&ctl).is_err() {
        return Ok(false);
    }
    let _lock = lock_node(&ctl).await?;
    let session = Session::resume(ctl.clone().into_boxed_path(), None);
    let closed = session.check().await.is_ok() && session.close().await.is_ok();
    let _ = std::fs::remove_file(&ctl);
    let _ = std::fs::remove_file(&log);
    remove_forward_sockets(&ctl);
    Ok(closed)
}

/// Open (or reuse) the master, then read the token (and the agent's
/// reported port) while forwarding a local port to the agent.
pub(crate) async fn connect(
    node: &Node,
    t: &SshTarget,
    opts: &TransportOptions,
    http: &reqwest::Client,
) -> Result<AgentConn, TransportError> {
    let mut session = SshSession::open(node, t, opts).await?;
    let mut result = proven_tunnel_within(&session, node, t, opts, http).await;
    if session.reused()
        && matches!(
            result,
            Err(TransportError::Ssh { .. }
                | TransportError::TokenUnreadable { .. }
                | TransportError::Timeout { .. })
        )
    {
        // `-O check` passes while a master waits for a peer that is gone
        // (node rebooted, network changed): drop it and connect afresh once.
        tracing::debug!(node = %node.name, "reused ssh master failed; starting a new one");
        session.shut_down().await;
        session = SshSession::open(node, t, opts).await?;
        result = proven_tunnel_within(&session, node, t, opts, http).await;
    }
    match result {
        // The proof is checked here, before the connection can send anything
        // with the token; a failure closes the session.
        Ok((token, ep, challenged)) => {
            AgentConn::proven(ep, token, challenged, Some(session)).await
        }
        Err(e) => {
            session.close().await;
            Err(e)
        }
    }
}

/// [`proven_tunnel`] bounded by `--timeout`.
async fn proven_tunnel_within(
    session: &SshSession,
    node: &Node,
    t: &SshTarget,
    opts: &TransportOptions,
    http: &reqwest::Client,
) -> Result<(SecretText, Endpoint, Challenged), TransportError> {
    tokio::time::timeout(opts.timeout, proven_tunnel(session, node, t, opts, http))
        .await
        .unwrap_or_else(|_| {
            Err(TransportError::Timeout {
                node: node.name.clone(),
                secs: opts.timeout.as_secs(),
                during: "connecting",
            })
        })
}

/// Like [`tunnel`], and the forwarded port is challenged while the token is
/// read (the challenge carries no token). Returns the token, the endpoint
/// and its answer, still to be checked against the token. A token-read
/// failure wins over the challenge's (it says more: not installed, ...).
async fn proven_tunnel(
    session: &SshSession,
    node: &Node,
    t: &SshTarget,
    opts: &TransportOptions,
    http: &reqwest::Client,
) -> Result<(SecretText, Endpoint, Challenged), TransportError> {
    let probe = |agent_port: u16| async move {
        let port = session.forward(agent_port).await?;
        let ep = Endpoint::new(
            node,
            format!("http://127.0.0.1:{port}"),
            agent_port,
            http,
            opts,
        );
        let challenged = ep.challenge(None).await;
        Ok::<_, TransportError>((ep, challenged))
    };
    let (read, probed) = tokio::join!(session.read_token(&opts.cluster), probe(t.agent_port));
    let (token, reported) = read?;
    let (ep, challenged) = match reported {
        Some(p) if p != t.agent_port => {
            tracing::debug!(node = %node.name, port = p, "agent reports another port");
            probe(p).await?
        }
        _ => probed?,
    };
    Ok((token, ep, challenged?))
}

/// [`tunnel`] bounded by `--timeout`: reading the token and requesting the
/// forward go through the master, which can hang on a peer that vanished.
pub(crate) async fn tunnel_within(
    session: &SshSession,
    node: &Node,
    t: &SshTarget,
    opts: &TransportOptions,
) -> Result<(SecretText, u16, u16), TransportError> {
    tokio::time::timeout(opts.timeout, tunnel(session, node, t, opts))
        .await
        .unwrap_or_else(|_| {
            Err(TransportError::Timeout {
                node: node.name.clone(),
                secs: opts.timeout.as_secs(),
                during: "connecting",
            })
        })
}

/// Read the token and forward the cluster's agent port at the same time;
/// when the agent reports another port (agent.addr), forward that one too.
/// Returns the token, the agent's port on the node and the local port.
pub(crate) async fn tunnel(
    session: &SshSession,
    node: &Node,
    t: &SshTarget,
    opts: &TransportOptions,
) -> Result<(SecretText, u16, u16), TransportError> {
    let (read, forward) = tokio::join!(
        session.read_token(&opts.cluster),
        session.forward(t.agent_port)
    );
    let (token, reported) = read?;
    match reported {
        Some(p) if p != t.agent_port => {
            tracing::debug!(node = %node.name, port = p, "agent reports another port");
            Ok((token, p, session.forward(p).await?))
        }
        _ => Ok((token, t.agent_port, forward?)),
    }
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
