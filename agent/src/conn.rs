//! The one accept loop of the agent, for the plain and the TLS listener
//! alike, and what keeps any local user from tying it up:
//!
//! - a cap on open connections (`max_connections`, also kept below the
//!   process's open-file limit); at the cap, the connection idle the longest
//!   (waiting for its TLS handshake, its request headers or its next
//!   keep-alive request: no request running) is dropped to make room, and a
//!   new connection is refused only when every open one is running a request;
//! - one timeout (`header_read_timeout`) for the TLS handshake, for reading a
//!   request's headers and for an idle keep-alive connection;
//! - a growing pause (10 ms to 1 s) after an `accept` error (EMFILE, ENFILE,
//!   ...) instead of a busy loop, dropping the longest-idle connection to
//!   free a descriptor.
//!
//! Each request carries its connection's two addresses ([`PeerInfo`]) for
//! the routes that answer by the peer's uid.
//!
//! It never reads or logs request content; logs carry counts and errors.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinSet};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::credentials::peer::PeerInfo;

/// The first pause after a failed `accept`; it doubles up to [`ACCEPT_BACKOFF_MAX`].
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Descriptors kept free for state files, env processes and the audit log
/// when the connection cap is derived from the open-file limit.
const RESERVED_FDS: u64 = 64;

/// Connection limits of the listener.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) max_connections: usize,
    pub(crate) header_read_timeout: Duration,
}

/// Raise the soft open-file limit to the hard limit (best effort); returns
/// the soft limit in force afterwards.
pub fn raise_fd_limit() -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return u64::MAX;
    };
    if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        return hard;
    }
    soft
}

/// The configured cap, kept below what the open-file limit allows.
fn effective_cap(configured: usize) -> usize {
    use nix::sys::resource::{getrlimit, Resource};
    let soft = getrlimit(Resource::RLIMIT_NOFILE).map_or(u64::MAX, |(soft, _)| soft);
    let room = usize::try_from(soft.saturating_sub(RESERVED_FDS)).unwrap_or(usize::MAX);
    configured.min(room).max(1)
}

/// What the accept loop knows of one open connection.
struct Conn {
    /// Requests being answered on it now (0: idle or slow, can be dropped).
    in_flight: AtomicUsize,
    /// When it was accepted or last finished a request.
    last_active: Mutex<Instant>,
    /// Its two addresses, given to each request (see [`PeerInfo`]).
    peer: Option<PeerInfo>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Every open connection.
#[derive(Default)]
struct Registry {
    next_id: u64,
    conns: HashMap<u64, (Arc<Conn>, AbortHandle)>,
}

impl Registry {
    /// Remove the connection idle the longest; its task, to abort once the
    /// registry lock is released.
    fn take_longest_idle(&mut self) -> Option<AbortHandle> {
        let victim = self
            .conns
            .iter()
            .filter(|(_, (c, _))| c.in_flight.load(Ordering::SeqCst) == 0)
            .min_by_key(|(_, (c, _))| *lock(&c.last_active))
            .map(|(id, _)| *id)?;
        self.conns.remove(&victim).map(|(_, handle)| handle)
    }
}

/// Removes a connection from the registry when its task ends or is aborted.
struct Registered {
    registry: Arc<Mutex<Registry>>,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        lock(&self.registry).conns.remove(&self.id);
    }
}

/// Marks a connection busy while one request is being answered.
struct Busy(Arc<Conn>);

impl Busy {
    fn enter(conn: &Arc<Conn>) -> Self {
        conn.in_flight.fetch_add(1, Ordering::SeqCst);
        Self(Arc::clone(conn))
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        *lock(&self.0.last_active) = Instant::now();
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Accept connections (TLS when `acceptor` is set) until `stopped`
/// resolves, then let open connections finish their current request.
pub(crate) async fn serve(
    listener: TcpListener,
    acceptor: Option<TlsAcceptor>,
    app: Router,
    limits: Limits,
    stopped: impl Future<Output = ()> + Send + 'static,
) {
    let cap = effective_cap(limits.max_connections);
    if cap < limits.max_connections {
        tracing::warn!(
            cap,
            configured = limits.max_connections,
            "connection cap lowered to fit the open-file limit"
        );
    }
    let registry = Arc::new(Mutex::new(Registry::default()));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut backoff = ACCEPT_BACKOFF_MIN;
    let mut refused: u64 = 0;
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            () = &mut stopped => break,
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok((stream, peer)) => {
                        backoff = ACCEPT_BACKOFF_MIN;
                        (stream, peer)
                    }
                    Err(e) => {
                        let victim = lock(&registry).take_longest_idle();
                        let freed = victim.is_some();
                        if let Some(handle) = victim {
                            handle.abort();
                        }
                        tracing::warn!(
                            error = %e,
                            freed_idle_connection = freed,
                            pause_ms = backoff.as_millis() as u64,
                            "accept failed; pausing before the next accept"
                        );
                        tokio::select! {
                            () = &mut stopped => break,
                            () = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                        continue;
                    }
                };
                let mut registry_guard = lock(&registry);
                let mut victim = None;
                if registry_guard.conns.len() >= cap {
                    victim = registry_guard.take_longest_idle();
                    if victim.is_none() {
                        drop(registry_guard);
                        drop(stream);
                        refused += 1;
                        if refused.is_power_of_two() {
                            tracing::warn!(cap, refused, "connection refused: every open connection is running a request");
                        }
                        continue;
                    }
                }
                let id = registry_guard.next_id;
                registry_guard.next_id += 1;
                let conn = Arc::new(Conn {
                    in_flight: AtomicUsize::new(0),
                    last_active: Mutex::new(Instant::now()),
                    peer: stream.local_addr().ok().map(|local| PeerInfo { peer, local }),
                });
                let registered = Registered { registry: Arc::clone(&registry), id };
                let handle = connections.spawn(serve_connection(
                    stream,
                    acceptor.clone(),
                    app.clone(),
                    Arc::clone(&conn),
                    limits.header_read_timeout,
                    stop_rx.clone(),
                    registered,
                ));
                registry_guard.conns.insert(id, (conn, handle));
                drop(registry_guard);
                if let Some(handle) = victim {
                    handle.abort();
                }
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    let _ = stop_tx.send(true);
    while connections.join_next().await.is_some() {}
}

/// One connection: the TLS handshake when configured, then HTTP/1.1.
async fn serve_connection(
    stream: TcpStream,
    acceptor: Option<TlsAcceptor>,
    app: Router,
    conn: Arc<Conn>,
    timeout: Duration,
    stop: watch::Receiver<bool>,
    _registered: Registered,
) {
    let _ = stream.set_nodelay(true);
    match acceptor {
        None => http(TokioIo::new(stream), app, conn, timeout, stop).await,
        Some(acceptor) => {
            let Ok(Ok(tls)) = tokio::time::timeout(timeout, acceptor.accept(stream)).await else {
                return;
            };
            http(TokioIo::new(tls), app, conn, timeout, stop).await;
        }
    }
}

async fn http<I>(
    io: I,
    app: Router,
    conn: Arc<Conn>,
    timeout: Duration,
    mut stop: watch::Receiver<bool>,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        let busy = Busy::enter(&conn);
        // Who is on the other end (the metadata routes check its uid).
        if let Some(peer) = conn.peer {
            req.extensions_mut().insert(peer);
        }
        let app = app.clone();
        async move {
            let response = app.oneshot(req).await;
            drop(busy);
            response
        }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(timeout)
        .serve_connection(io, service);
    tokio::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => {}
        () = async { let _ = stop.wait_for(|s| *s).await; } => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}
