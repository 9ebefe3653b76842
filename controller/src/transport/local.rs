//! The `local` cluster: the agent on this machine, reached WITHOUT SSH at
//! `127.0.0.1:<port>` (the port from `~/.rh/agent/agent.addr`, else 32300)
//! with the token from `~/.rh/agent/token`. When no agent answers, one is
//! started in the background (`agent serve` detached with `setsid`, logs to
//! `~/.rh/agent/agent.log`, 0600; the agent writes its pid to `agent.pid`)
//! and `/healthz` is awaited, under `~/.rh/agent/start.lock` so two
//! controllers never start two agents. The liveness probe is the token
//! challenge (`/healthz?challenge=`): the answering process must prove it
//! holds the token in `~/.rh/agent/token` before the token is sent, and, on
//! Linux, the port must be held by this user (`/proc/net/tcp`). On macOS
//! (and other systems without `/proc/net/tcp`) the HMAC proof alone guards
//! the token, and a debug line says so: see `check_listener_owner` for
//! why that suffices. Never prints the token.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::fsutil;
use common::sockets::listener_uid;
use common::wire::DEFAULT_AGENT_PORT;
use common::SecretText;

use super::endpoint::{Challenged, Endpoint};
use super::{AgentConn, TransportError, TransportOptions};
use crate::clusters::Node;

/// `~/.rh/agent`: the local agent's state dir.
pub fn state_dir(home: &Path) -> PathBuf {
    home.join(".rh").join("agent")
}

/// Where this home's agent answers: `agent.addr` when present and valid,
/// else the address one would be started on (`RH_LOCAL_AGENT_LISTEN`, else
/// the default port). `None` when that names port 0: no agent of this home
/// can be at a fixed address then (an agent listening there belongs to
/// another home, and probing it only ends in "token missing").
pub fn agent_addr(home: &Path) -> Option<SocketAddr> {
    read_addr(home).or_else(|| {
        let listen = listen_addr();
        (listen.port() != 0).then_some(listen)
    })
}

/// The address a started agent listens on: `RH_LOCAL_AGENT_LISTEN` when it
/// is a loopback address, else `127.0.0.1:32300`.
fn listen_addr() -> SocketAddr {
    std::env::var("RH_LOCAL_AGENT_LISTEN")
        .ok()
        .and_then(|a| a.trim().parse::<SocketAddr>().ok())
        .filter(|a| a.ip().is_loopback())
        .unwrap_or_else(|| SocketAddr::from((Ipv4Addr::LOCALHOST, DEFAULT_AGENT_PORT)))
}

fn read_addr(home: &Path) -> Option<SocketAddr> {
    let text = std::fs::read_to_string(state_dir(home).join("agent.addr")).ok()?;
    let text = text.trim();
    let text = text.strip_prefix("http://").unwrap_or(text);
    let addr: SocketAddr = text.trim_end_matches('/').parse().ok()?;
    // Only ever loopback: a stray file must not send the token elsewhere.
    addr.ip().is_loopback().then_some(addr)
}

fn read_token(home: &Path) -> Result<Option<SecretText>, TransportError> {
    let path = state_dir(home).join("token");
    match fsutil::read_optional(&path) {
        Ok(None) => Ok(None),
        Ok(Some(text)) => {
            let t = text.expose_secret().trim();
            if t.is_empty() {
                Ok(None)
            } else {
                Ok(Some(SecretText::new(t.to_owned())))
            }
        }
        Err(e) => Err(TransportError::TokenUnreadable {
            node: "local".into(),
            detail: e.to_string(),
        }),
    }
}

/// Where the local agent at `addr` answers.
fn endpoint(
    node: &Node,
    addr: SocketAddr,
    http: &reqwest::Client,
    opts: &TransportOptions,
) -> Endpoint {
    Endpoint::new(node, format!("http://{addr}"), addr.port(), http, opts)
}

/// The liveness probe: a token challenge, answered by whatever listens at
/// the endpoint (checked against the token later). `None` when nothing
/// answers or it answers with an error status (as before the challenge:
/// then an agent is started); an answer with a success status that is no
/// agent's health is kept as the error it will be once the port's owner
/// was checked.
async fn healthy(ep: &Endpoint) -> Option<Result<Challenged, TransportError>> {
    match ep.challenge_raw(Some(Duration::from_secs(2))).await {
        Ok(c) => Some(Ok(c)),
        Err(e @ TransportError::Http { .. }) => Some(Err(ep.not_the_agent(&e))),
        Err(_) => None,
    }
}

/// Connect to the local agent, starting it when none answers.
pub(crate) async fn connect(
    node: &Node,
    opts: &TransportOptions,
    http: &reqwest::Client,
) -> Result<AgentConn, TransportError> {
    let home = &opts.home;
    let running = match agent_addr(home) {
        Some(addr) => {
            let ep = endpoint(node, addr, http, opts);
            healthy(&ep).await.map(|c| (addr, ep, c))
        }
        None => None,
    };
    let (addr, ep, challenged) = match running {
        Some(found) => found,
        None => {
            // One starter at a time: a controller that waited on the lock finds
            // the agent the other one started instead of starting a second one
            // on the same state dir.
            let _lock = lock_start(home).await?;
            let found = match agent_addr(home) {
                Some(addr) => {
                    let ep = endpoint(node, addr, http, opts);
                    healthy(&ep).await.map(|c| (addr, ep, c))
                }
                None => None,
            };
            match found {
                Some(found) => found,
                None => {
                    let wait = opts.timeout.max(Duration::from_secs(10));
                    let (addr, c) = start_agent(node, opts, http, wait).await?;
                    (addr, endpoint(node, addr, http, opts), c)
                }
            }
        }
    };
    // Defence in depth, and the clearer message when it applies: a port
    // held by another user is refused before the proof is even looked at.
    check_listener_owner(addr)?;
    let challenged = challenged?;
    let token = read_token(home)?.ok_or_else(|| TransportError::TokenUnreadable {
        node: node.name.clone(),
        detail: format!(
            "{} is missing or empty",
            state_dir(home).join("token").display()
        ),
    })?;
    AgentConn::proven(ep, token, challenged, None).await
}

/// Refuse to send the token to a port another user listens on: while the
/// agent is down, anyone on this machine can bind its loopback port, answer
/// `/healthz` and collect the bearer token of the next request. The owner
/// comes from `/proc/net/tcp{,6}`.
///
/// This is defence in depth, not the guard: the token is sent only after
/// the listener has answered a fresh random challenge with its HMAC-SHA256
/// under the token ([`AgentConn::proven`]), and only this user (and root)
/// can read the token (`~/.rh/agent/token`, 0600 in a 0700 dir). A process of
/// another user on the port cannot compute that proof, and cannot borrow
/// it from the real agent either: the controller asks the one address in
/// `agent.addr`, which the agent writes, so a squatter on that address means
/// no agent of ours answers there. Where the owner cannot be read (macOS: no
/// `/proc/net/tcp`, and `proc_pidinfo` on another user's process is refused
/// to an unprivileged caller, so a port held by another user cannot be
/// attributed), the proof alone decides, and a debug line says the check
/// was not made.
fn check_listener_owner(addr: SocketAddr) -> Result<(), TransportError> {
    let me = nix::unistd::geteuid().as_raw();
    let Some(tables) = common::sockets::tables() else {
        tracing::debug!(
            %addr,
            "no /proc/net/tcp on this system: the port owner is not checked; \
             the agent's HMAC proof of the token guards it"
        );
        return Ok(());
    };
    match listener_uid(&tables, addr) {
        Some(uid) if uid != me => Err(TransportError::LocalAgent {
            detail: format!(
                "{addr} is held by uid {uid}, not by you (uid {me}): not the agent; \
                 refusing to send it the token"
            ),
        }),
        _ => Ok(()),
    }
}

/// Hold `~/.rh/agent/start.lock` (0600) while checking for and starting the agent.
async fn lock_start(home: &Path) -> Result<crate::transport::FileLock, TransportError> {
    let dir = state_dir(home);
    fsutil::create_private_dir_all(&dir).map_err(|e| TransportError::LocalAgent {
        detail: e.to_string(),
    })?;
    super::lock_file(dir.join("start.lock"))
        .await
        .map_err(|detail| TransportError::LocalAgent { detail })
}

/// The agent binary: `$RH_AGENT_BIN`, else `agent` next to this executable, else `agent` on PATH.
pub fn agent_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("RH_AGENT_BIN").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            let candidate = dir.join("agent");
            if candidate.is_file() {
                return candidate;
            }
            // `cargo test` binaries live in target/<profile>/deps.
            if let Some(up) = dir.parent() {
                let candidate = up.join("agent");
                if dir.ends_with("deps") && candidate.is_file() {
                    return candidate;
                }
            }
        }
    }
    PathBuf::from("agent")
}

/// The variables the local agent inherits from the controller.
const AGENT_ENV: &[&str] = &[
    "PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "USER", "LOGNAME", "SHELL", "TMPDIR", "RUST_LOG",
];

/// Start `agent serve` detached (new session, stdin closed, output to
/// `agent.log`) and wait until it answers `/healthz` (the token challenge:
/// its answer is returned to be checked).
async fn start_agent(
    node: &Node,
    opts: &TransportOptions,
    http: &reqwest::Client,
    wait: Duration,
) -> Result<(SocketAddr, Result<Challenged, TransportError>), TransportError> {
    let home = opts.home.as_path();
    let dir = state_dir(home);
    let err = |detail: String| TransportError::LocalAgent { detail };
    fsutil::create_private_dir_all(&dir).map_err(|e| err(e.to_string()))?;
    let addr_file = dir.join("agent.addr");
    // A stale address must not be mistaken for the new agent's.
    let _ = std::fs::remove_file(&addr_file);
    let log_path = dir.join("agent.log");
    let log = {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&log_path)
            .map_err(|e| err(format!("open {}: {e}", log_path.display())))?;
        // A log an older version left readable by others is tightened too.
        log.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(|e| err(format!("chmod 600 {}: {e}", log_path.display())))?;
        log
    };
    let log2 = log
        .try_clone()
        .map_err(|e| err(format!("open {}: {e}", log_path.display())))?;
    let bin = agent_binary();
    let listen = std::env::var("RH_LOCAL_AGENT_LISTEN")
        .unwrap_or_else(|_| format!("127.0.0.1:{DEFAULT_AGENT_PORT}"));
    let setsid = ["/usr/bin/setsid", "/bin/setsid"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.is_file());
    let mut cmd = match setsid {
        Some(s) => {
            let mut c = std::process::Command::new(s);
            c.arg(&bin);
            c
        }
        None => {
            use std::os::unix::process::CommandExt;
            let mut c = std::process::Command::new(&bin);
            c.process_group(0);
            c
        }
    };
    cmd.arg("serve")
        .arg("--listen")
        .arg(&listen)
        .arg("--home")
        .arg(home)
        .arg("--state-dir")
        .arg(&dir)
        // Only a neutral environment: the env processes inherit the agent's,
        // so the controller's own (a shell full of API keys) would otherwise
        // reach every `run` unasked, and survive `revoke`.
        .env_clear()
        .envs(
            AGENT_ENV
                .iter()
                .filter_map(|k| Some((k, std::env::var_os(k)?))),
        )
        .env("HOME", home)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2);
    tracing::info!(agent = %bin.display(), %listen, "starting the local agent");
    let mut child = cmd.spawn().map_err(|e| {
        err(format!(
            "cannot start {} ({e}); build it (`cargo build -p agent`) or set RH_AGENT_BIN",
            bin.display()
        ))
    })?;
    let started = Instant::now();
    while started.elapsed() < wait {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(err(format!(
                "the agent exited at start ({status}); see {}",
                log_path.display()
            )));
        }
        if let Some(addr) = read_addr(home) {
            if let Some(c) = healthy(&endpoint(node, addr, http, opts)).await {
                tracing::debug!(%addr, ms = started.elapsed().as_millis() as u64, "local agent up");
                return Ok((addr, c));
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    Err(err(format!(
        "the agent did not answer /healthz within {}s; see {}",
        wait.as_secs(),
        log_path.display()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_listener_passes_and_is_found_with_our_uid() {
        let l = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let addr = l.local_addr().unwrap();
        check_listener_owner(addr).unwrap();
        if let Ok(tcp) = std::fs::read_to_string("/proc/net/tcp") {
            assert_eq!(
                listener_uid(&tcp, addr),
                Some(nix::unistd::geteuid().as_raw())
            );
        }
        let l6 = std::net::TcpListener::bind("[::1]:0");
        if let (Ok(l6), Ok(tcp6)) = (l6, std::fs::read_to_string("/proc/net/tcp6")) {
            let addr6 = l6.local_addr().unwrap();
            assert_eq!(
                listener_uid(&tcp6, addr6),
                Some(nix::unistd::geteuid().as_raw())
            );
        }
    }
}
