//! The agent's configuration: command-line flags over an optional config file
//! (YAML or JSON, unknown keys refused) over defaults. Owns the resolution of
//! home and state dir and the loopback/TLS listen rule. Holds paths and limits
//! only; never a secret.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use thiserror::Error;

/// Default request body limit: 1 MiB.
pub const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;
/// Default cap on each of a run's stdout and stderr: 1 MiB.
pub const DEFAULT_OUTPUT_CAP: usize = 1024 * 1024;
/// Default cap on the number of envs (each is a process): 64.
pub const DEFAULT_MAX_ENVS: usize = 64;
/// Default cap on open connections: 1,024.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Default time allowed for a TLS handshake, a request's headers, or an idle
/// keep-alive connection: 10 s.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// A configuration that cannot be used.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("read config file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: String, message: String },
    #[error("no home directory: pass --home or set HOME")]
    NoHome,
    #[error(
        "refusing to listen on {addr}: not a loopback address and no TLS is configured \
         (set tls.cert and tls.key in the config file)"
    )]
    NotLoopback { addr: SocketAddr },
    #[error("{field} must be greater than zero")]
    Zero { field: &'static str },
    #[error("allow_paths entry {entry:?} must start with ~/")]
    AllowPath { entry: String },
    #[error("allow_vars entry {entry:?} is not an environment variable name")]
    AllowVar { entry: String },
}

/// TLS certificate and key (PEM files) for a non-loopback listener.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Workload identity of a pull node (`identity:` in the config file): the
/// node owner's settings, which the store cannot change. The endpoints are
/// where the SDKs exchange the node's token; the defaults are Google's
/// (AWS and Azure SDKs take theirs from their own settings).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    /// Fetch identity tokens when the cluster is federated (default true).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// `token_url` of the GCP `external_account` configuration.
    #[serde(default = "gcp_sts_url")]
    pub gcp_sts_url: String,
    /// Base of the service account impersonation URL.
    #[serde(default = "gcp_iam_url")]
    pub gcp_iam_url: String,
}

fn yes() -> bool {
    true
}

fn gcp_sts_url() -> String {
    common::identity::GCP_STS_URL.into()
}

fn gcp_iam_url() -> String {
    common::identity::GCP_IAM_CREDENTIALS_URL.into()
}

impl Default for IdentityConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            gcp_sts_url: gcp_sts_url(),
            gcp_iam_url: gcp_iam_url(),
        }
    }
}

/// The config file: every key optional.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<SocketAddr>,
    pub home: Option<PathBuf>,
    pub state_dir: Option<PathBuf>,
    pub body_limit_bytes: Option<usize>,
    pub request_timeout_secs: Option<u64>,
    pub run_timeout_secs: Option<u64>,
    pub max_run_timeout_secs: Option<u64>,
    pub output_cap_bytes: Option<usize>,
    pub max_envs: Option<usize>,
    pub max_connections: Option<usize>,
    pub header_read_timeout_secs: Option<u64>,
    pub tls: Option<TlsConfig>,
    /// `~/...` prefixes where secrets from the store may also be written.
    pub allow_paths: Option<Vec<String>>,
    /// Env var names secrets from the store may also set (exact names).
    pub allow_vars: Option<Vec<String>>,
    /// Fleet mode: the node bundle to pull with (like `--pull`).
    pub pull_bundle: Option<PathBuf>,
    /// Fleet mode: seconds between manifest polls (default 10, jittered ±20%).
    pub poll_interval_secs: Option<u64>,
    /// Fleet mode: seconds between unchanged node reports (default 300).
    pub heartbeat_secs: Option<u64>,
    /// Fleet mode: seconds the first poll may retry before serving anyway (default 60).
    pub pull_boot_wait_secs: Option<u64>,
    /// Fleet mode: allow plain `http://` store URLs to hosts that are not
    /// loopback (the node's token then crosses the network in cleartext).
    pub pull_allow_insecure_http: Option<bool>,
    /// Fleet mode: workload identity (`cluster federate`) settings.
    pub identity: Option<IdentityConfig>,
}

impl FileConfig {
    /// Read and parse a config file (YAML, which includes JSON).
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        yaml_serde::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.display().to_string(),
            message: e.to_string(),
        })
    }
}

/// The resolved configuration the agent runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// The node user's home: every file the agent writes is confined to it.
    pub home: PathBuf,
    /// Token, state files, audit log (default `<home>/.rh/agent`).
    pub state_dir: PathBuf,
    pub body_limit: usize,
    /// Timeout of every request but `run`.
    pub request_timeout: Duration,
    /// Default timeout of a command run in an env.
    pub run_timeout: Duration,
    /// Longest timeout a `run` may ask for.
    pub max_run_timeout: Duration,
    /// Cap on each of a run's stdout and stderr.
    pub output_cap: usize,
    /// Most envs (env processes) this node keeps; creating one more is refused.
    pub max_envs: usize,
    /// Most open connections; at the cap the longest-idle one is dropped.
    pub max_connections: usize,
    /// Time allowed for a TLS handshake, a request's headers, or an idle
    /// keep-alive connection.
    pub header_read_timeout: Duration,
    pub tls: Option<TlsConfig>,
    /// `~/...` prefixes (besides each provider's own credential locations)
    /// where store-originated secrets may be written; see `common::policy`.
    pub allow_paths: Vec<String>,
    /// Env var names (exact) that store-originated secrets may set besides
    /// their provider's own; see `common::policy`.
    pub allow_vars: Vec<String>,
    /// Fleet mode: the node bundle (`--pull` / `pull_bundle`); `None`: push only.
    pub pull_bundle: Option<PathBuf>,
    /// Fleet mode: time between manifest polls (jittered ±20%).
    pub poll_interval: Duration,
    /// Fleet mode: time between unchanged node reports.
    pub heartbeat: Duration,
    /// Fleet mode: how long the first poll may retry before serving anyway.
    pub pull_boot_wait: Duration,
    /// Fleet mode: plain `http://` store URLs to non-loopback hosts are
    /// allowed (off: such a bundle is refused at start).
    pub pull_allow_insecure_http: bool,
    /// Fleet mode: workload identity settings.
    pub identity: IdentityConfig,
    /// The executable started as `<exe> env-host --name E` for each env
    /// (the agent binary itself; tests point it at the built binary).
    pub env_host_exe: PathBuf,
    /// Tests only: a pause before each file item of a request, so a test
    /// can make a request outlive its deadline part-way. Never set by the
    /// config file or flags.
    #[doc(hidden)]
    pub test_item_delay: Option<Duration>,
}

impl Config {
    /// Defaults for `home`: state dir `<home>/.rh/agent`, loopback port 32300.
    pub fn for_home(home: impl Into<PathBuf>) -> Self {
        let home = home.into();
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], common::wire::DEFAULT_AGENT_PORT)),
            state_dir: home.join(".rh/agent"),
            home,
            body_limit: DEFAULT_BODY_LIMIT,
            request_timeout: Duration::from_secs(30),
            run_timeout: Duration::from_secs(600),
            max_run_timeout: Duration::from_secs(24 * 3600),
            output_cap: DEFAULT_OUTPUT_CAP,
            max_envs: DEFAULT_MAX_ENVS,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            tls: None,
            allow_paths: Vec::new(),
            allow_vars: Vec::new(),
            pull_bundle: None,
            poll_interval: Duration::from_secs(common::fleet::DEFAULT_POLL_SECS),
            heartbeat: Duration::from_secs(common::fleet::DEFAULT_HEARTBEAT_SECS),
            pull_boot_wait: Duration::from_secs(60),
            pull_allow_insecure_http: false,
            identity: IdentityConfig::default(),
            env_host_exe: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("agent")),
            test_item_delay: None,
        }
    }

    /// Merge flags (`Some` wins) over the file over defaults.
    pub fn resolve(
        file: FileConfig,
        listen: Option<SocketAddr>,
        home: Option<PathBuf>,
        state_dir: Option<PathBuf>,
    ) -> Result<Self, ConfigError> {
        let home = home
            .or(file.home)
            .or_else(|| std::env::var_os("HOME").map(PathBuf::from))
            .filter(|h| !h.as_os_str().is_empty())
            .ok_or(ConfigError::NoHome)?;
        let mut config = Self::for_home(home);
        if let Some(dir) = state_dir.or(file.state_dir) {
            config.state_dir = dir;
        }
        if let Some(addr) = listen.or(file.listen) {
            config.listen = addr;
        }
        let positive = |v: Option<u64>, field| match v {
            Some(0) => Err(ConfigError::Zero { field }),
            other => Ok(other),
        };
        let nonzero = |v: Option<usize>, field| match v {
            Some(0) => Err(ConfigError::Zero { field }),
            other => Ok(other),
        };
        if let Some(n) = nonzero(file.body_limit_bytes, "body_limit_bytes")? {
            config.body_limit = n;
        }
        if let Some(s) = positive(file.request_timeout_secs, "request_timeout_secs")? {
            config.request_timeout = Duration::from_secs(s);
        }
        if let Some(s) = positive(file.run_timeout_secs, "run_timeout_secs")? {
            config.run_timeout = Duration::from_secs(s);
        }
        if let Some(s) = positive(file.max_run_timeout_secs, "max_run_timeout_secs")? {
            config.max_run_timeout = Duration::from_secs(s);
        }
        if let Some(n) = file.output_cap_bytes {
            config.output_cap = n;
        }
        if let Some(n) = nonzero(file.max_envs, "max_envs")? {
            config.max_envs = n;
        }
        if let Some(n) = nonzero(file.max_connections, "max_connections")? {
            config.max_connections = n;
        }
        if let Some(s) = positive(file.header_read_timeout_secs, "header_read_timeout_secs")? {
            config.header_read_timeout = Duration::from_secs(s);
        }
        config.tls = file.tls;
        config.allow_paths = file.allow_paths.unwrap_or_default();
        if let Some(entry) = config.allow_paths.iter().find(|e| !e.starts_with("~/")) {
            return Err(ConfigError::AllowPath {
                entry: entry.clone(),
            });
        }
        config.allow_vars = file.allow_vars.unwrap_or_default();
        if let Some(entry) = config
            .allow_vars
            .iter()
            .find(|v| common::names::validate_env_var_name(v).is_err())
        {
            return Err(ConfigError::AllowVar {
                entry: common::providers::field_name(entry),
            });
        }
        config.pull_bundle = file.pull_bundle;
        if let Some(s) = positive(file.poll_interval_secs, "poll_interval_secs")? {
            config.poll_interval = Duration::from_secs(s);
        }
        if let Some(s) = positive(file.heartbeat_secs, "heartbeat_secs")? {
            config.heartbeat = Duration::from_secs(s);
        }
        if let Some(s) = file.pull_boot_wait_secs {
            config.pull_boot_wait = Duration::from_secs(s);
        }
        config.pull_allow_insecure_http = file.pull_allow_insecure_http.unwrap_or(false);
        config.identity = file.identity.unwrap_or_default();
        config.check_listen(config.listen)?;
        Ok(config)
    }

    /// Refuse a non-loopback address unless TLS is configured.
    pub fn check_listen(&self, addr: SocketAddr) -> Result<(), ConfigError> {
        if addr.ip().is_loopback() || self.tls.is_some() {
            Ok(())
        } else {
            Err(ConfigError::NotLoopback { addr })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_file_and_non_loopback_needs_tls() {
        let file: FileConfig =
            yaml_serde::from_str("listen: 127.0.0.1:4000\nbody_limit_bytes: 10\n").unwrap();
        let c = Config::resolve(file.clone(), None, Some("/h".into()), None).unwrap();
        assert_eq!(c.listen.port(), 4000);
        assert_eq!(c.body_limit, 10);
        assert_eq!(c.state_dir, PathBuf::from("/h/.rh/agent"));
        let c = Config::resolve(
            file,
            Some("127.0.0.1:5000".parse().unwrap()),
            Some("/h".into()),
            Some("/s".into()),
        )
        .unwrap();
        assert_eq!(c.listen.port(), 5000);
        assert_eq!(c.state_dir, PathBuf::from("/s"));
        let err = Config::resolve(
            FileConfig::default(),
            Some("0.0.0.0:1".parse().unwrap()),
            Some("/h".into()),
            None,
        )
        .unwrap_err();
        assert!(matches!(err, ConfigError::NotLoopback { .. }), "{err}");
        let tls: FileConfig = yaml_serde::from_str("tls: {cert: /c.pem, key: /k.pem}\n").unwrap();
        assert!(Config::resolve(
            tls,
            Some("0.0.0.0:1".parse().unwrap()),
            Some("/h".into()),
            None
        )
        .is_ok());
        assert!(yaml_serde::from_str::<FileConfig>("bogus: 1").is_err());
        let envs: FileConfig = yaml_serde::from_str("max_envs: 5\n").unwrap();
        let c = Config::resolve(envs, None, Some("/h".into()), None).unwrap();
        assert_eq!(c.max_envs, 5);
        let zero: FileConfig = yaml_serde::from_str("max_envs: 0\n").unwrap();
        assert!(Config::resolve(zero, None, Some("/h".into()), None).is_err());
        let vars: FileConfig =
            yaml_serde::from_str("allow_vars: [MY_TOKEN, PULL_E2E_API_KEY]\n").unwrap();
        let c = Config::resolve(vars, None, Some("/h".into()), None).unwrap();
        assert_eq!(c.allow_vars, ["MY_TOKEN", "PULL_E2E_API_KEY"]);
        let bad: FileConfig = yaml_serde::from_str("allow_vars: [\"A=B\"]\n").unwrap();
        let err = Config::resolve(bad, None, Some("/h".into()), None).unwrap_err();
        assert!(matches!(err, ConfigError::AllowVar { .. }), "{err}");
    }
}
