//! The node agent: an HTTP daemon on loopback (or behind TLS) that writes
//! credential files into the node user's home and keeps named env processes
//! whose environment holds env-var secrets. [`router`] builds the API,
//! [`serve`] runs it until shutdown; `main.rs` only parses flags.
//! It never logs, echoes or records a secret value: logs, errors and the
//! audit log carry names, paths and statuses only.

mod audit;
pub mod config;
mod conn;
pub mod credentials;
mod env_host;
mod envs;
pub mod error;
mod handlers;
mod install;
mod notify;
mod protocol;
pub mod pull;
mod router;
mod state;
mod tls;
mod verified;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use thiserror::Error;
use tokio::net::TcpListener;

pub use config::{Config, ConfigError, FileConfig};
pub use conn::raise_fd_limit;
pub use env_host::run_env_host;
pub use envs::EnvError;
pub use pull::{start as start_pull, PullError, PullHandle};
pub use router::router;
pub use state::{AppState, StartError};

/// How long in-flight requests may run after a shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Why serving stopped with an error.
#[derive(Debug, Error)]
pub enum ServeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Path(#[from] common::fsutil::PathError),
    #[error("tls: {0}")]
    Tls(String),
}

/// Serve the API on `listener` until `shutdown` resolves, then let in-flight
/// requests finish (up to a grace period) and stop every env process.
/// Refuses a non-loopback listener unless TLS is configured. Writes the bound
/// address to `<state-dir>/agent.addr` and the pid to `<state-dir>/agent.pid`.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let addr: SocketAddr = listener.local_addr().map_err(|source| ServeError::Io {
        what: "read the listener address".into(),
        source,
    })?;
    let config = state.config().clone();
    config.check_listen(addr)?;
    let app = router(state.clone());
    let acceptor = match &config.tls {
        Some(tls) => Some(tls::acceptor(tls).map_err(ServeError::Tls)?),
        None => None,
    };
    state.inner.credentials.set_port(addr.port());
    if config.listen.port() == 0 {
        // Sessions a pull applied before the bind named port 0.
        let rebind = state.clone();
        tokio::spawn(async move { install::rebind(&rebind).await });
    }
    common::fsutil::atomic_write(
        &config.state_dir.join("agent.addr"),
        format!("{addr}\n").as_bytes(),
    )?;
    let pid_path = config.state_dir.join("agent.pid");
    common::fsutil::atomic_write(&pid_path, format!("{}\n", std::process::id()).as_bytes())?;
    tracing::info!(%addr, tls = acceptor.is_some(), "agent listening");
    // Pull mode applied the store's secrets before the listener was bound.
    notify::ready();

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let stopped = {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let grace = {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        }
    };
    let limits = conn::Limits {
        max_connections: config.max_connections,
        header_read_timeout: config.header_read_timeout,
    };
    let served = conn::serve(listener, acceptor, app, limits, stopped);
    let result = tokio::select! {
        () = served => Ok(()),
        () = grace => {
            tracing::warn!("requests still running after the shutdown grace period; stopping anyway");
            Ok(())
        }
    };
    tracing::info!("stopping env processes");
    state.shutdown().await;
    let _ = std::fs::remove_file(&pid_path);
    result
}
