//! [`TransportOptions`]: how to reach the nodes of one command (timeouts,
//! parallelism, host key policy, `RH_SSH_CONFIG`, where the control sockets
//! live, how long masters persist), and the one HTTP client every node
//! shares. Holds no secret.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use crate::cli::RemoteOpts;
use crate::Context;

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

/// Options for a test node reached over loopback (no SSH, no persistence).
#[cfg(test)]
pub(crate) fn test_options(timeout_secs: u64) -> TransportOptions {
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
