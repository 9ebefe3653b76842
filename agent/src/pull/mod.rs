//! Fleet mode (`agent serve --pull BUNDLE`, or `pull_bundle` in the config):
//! the agent logs in to the remote store with its bundle's AppRole
//! (`creds`), polls its cluster's manifest every `poll_interval` (a random
//! phase after the first poll, then the period ±2%; errors back off
//! exponentially, jittered), fetches the secrets
//! whose KV version changed, applies them through the same install path as
//! `POST /v1/sync` (`apply_pulled`: merge, atomic 0600 files, env
//! processes, installed state, audit), removes what was unpublished, and
//! writes a node report (`common::fleet::NodeReport`) only when what it
//! applied (or its error) changes, plus a slow heartbeat.
//! [`start`] runs the first poll before returning, so `main` binds the port
//! (and the boot unit's health check passes) only once the node is applied.
//! A store outage leaves everything on the node as it is.
//! What it applied is kept in `<state-dir>/pull/applied.json` (names and
//! versions only). Never logs a value, token or secret_id.

pub(crate) mod creds;
pub mod metrics;
pub(crate) mod store;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::fingerprint::fingerprint;
use common::fleet::{self, Bundle, Manifest, NodeReport};
use common::fsutil::{atomic_write, create_private_dir_all, read_optional, PathError};
use common::wire::{SecretResult, Status, SyncItem};
use common::{SecretText, SecretValue};
use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::task::JoinHandle;

use crate::audit::AuditEntry;
use crate::error::ApiError;
use crate::handlers::statuses;
use crate::install;
use crate::state::AppState;
use creds::{CredFiles, Token};
use metrics::Metrics;
use store::{StoreClient, StoreError};

/// Why pulling failed. Messages name files, URLs and secrets, never values.
#[derive(Debug, Error)]
pub enum PullError {
    #[error("bundle {path}: {reason}")]
    Bundle { path: String, reason: String },
    #[error(
        "bundle {path} was already unwrapped (by this node earlier with another state dir, or by \
         someone else) or its wrap TTL ran out: its secret_id cannot be trusted; enroll this \
         node again (`controller cluster enroll`)"
    )]
    AlreadyUnwrapped { path: String },
    #[error("login refused: {0} (was the cluster's AppRole removed?)")]
    LoginRefused(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Path(#[from] PathError),
    #[error("{0}")]
    Apply(String),
}

impl PullError {
    /// Errors no retry can fix: the agent refuses to start on them.
    fn is_fatal(&self) -> bool {
        matches!(self, Self::Bundle { .. } | Self::AlreadyUnwrapped { .. })
    }
}

/// What this node applied (`applied.json`): versions and names only.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Applied {
    /// Manifest version fully applied (0: none).
    version: u64,
    /// Secret name -> KV version installed.
    secrets: BTreeMap<String, u64>,
}

/// Seconds since the epoch.
pub(crate) fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `d` scaled by a random factor in `[1 - spread, 1 + spread]`.
pub(crate) fn jitter(d: Duration, spread: f64) -> Duration {
    let r = f64::from(store::random_u32()) / f64::from(u32::MAX);
    d.mul_f64(1.0 - spread + 2.0 * spread * r)
}

/// Spread of the steady poll period (±2%). Staleness after a publish is at
/// most one period, so this bounds it (poll + 2%); the spread of the nodes'
/// polls over the period comes from the random phase each node takes after
/// its first poll (`next_wait`), not from a wide jitter.
const POLL_JITTER: f64 = 0.02;

/// The wait before the next poll: after the first poll a uniform random
/// phase in `(0, poll]` (nodes booted together then poll evenly over the
/// period instead of in a burst), then the period ±2%; after failures the
/// jittered backoff (which re-randomizes the phase).
fn next_wait(poll: Duration, failures: u32, first: bool) -> Duration {
    if failures > 0 {
        backoff(poll, failures)
    } else if first {
        jitter(poll / 2, 1.0).max(Duration::from_millis(1))
    } else {
        jitter(poll, POLL_JITTER)
    }
}

/// The wait after `failures` failed polls in a row: doubling from the poll
/// interval, at most 8 intervals (and 5 minutes), ±50% jitter.
fn backoff(poll: Duration, failures: u32) -> Duration {
    let base = poll
        .saturating_mul(1 << failures.min(3))
        .min(Duration::from_secs(300));
    jitter(base, 0.5)
}

fn read_first_line(paths: &[&str]) -> Option<String> {
    paths.iter().find_map(|p| {
        std::fs::read_to_string(p)
            .ok()
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())
    })
}

/// This node's host name and stable id, kept in `<pull dir>/node_id` from
/// the first start on: the host name (made path-safe) and a hash of the
/// machine id, the state dir (two agents on one machine, as in tests, get
/// two ids) and 16 random bytes (nodes cloned from one image with the same
/// machine id and host name, or containers with none, still get distinct
/// ids; otherwise their reports would overwrite each other and `status`
/// would count one node). A node that ran before ids were kept (it has an
/// `applied.json`) keeps the id it reported under.
fn node_identity(state_dir: &Path, pull_dir: &Path) -> Result<(String, String), PullError> {
    let hostname = read_first_line(&["/proc/sys/kernel/hostname", "/etc/hostname"])
        .unwrap_or_else(|| "unknown".into());
    let kept = pull_dir.join("node_id");
    if let Some(id) = read_optional(&kept)?
        .map(|t| t.expose_secret().trim().to_owned())
        .filter(|id| is_node_id(id))
    {
        return Ok((hostname, id));
    }
    let salt = if pull_dir.join("applied.json").exists() {
        String::new()
    } else {
        let mut b = [0u8; 16];
        getrandom::getrandom(&mut b).expect("the OS random source is available");
        b.iter().map(|x| format!("{x:02x}")).collect()
    };
    let id = derive_node_id(&hostname, state_dir, &salt);
    atomic_write(&kept, format!("{id}\n").as_bytes())?;
    Ok((hostname, id))
}

/// Whether `id` is what [`derive_node_id`] makes: path-safe, not empty, short.
fn is_node_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

/// `<host name, path-safe>-<12 hex>` of the machine id, `state_dir` and `salt`
/// (empty: the id agents derived before ids were kept).
fn derive_node_id(hostname: &str, state_dir: &Path, salt: &str) -> String {
    let machine =
        read_first_line(&["/etc/machine-id", "/var/lib/dbus/machine-id"]).unwrap_or_default();
    let mut input = format!("{machine}\n{}", state_dir.display());
    if !salt.is_empty() {
        input.push('\n');
        input.push_str(salt);
    }
    let hash = fingerprint(b"rh-fleet-node-id", input.as_bytes());
    let safe: String = hostname
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(48)
        .collect();
    format!("{safe}-{}", &hash[..12])
}

/// Read and check a bundle file.
fn load_bundle(path: &Path) -> Result<Bundle, PullError> {
    let shown = path.display().to_string();
    let bad = |reason: String| PullError::Bundle {
        path: shown.clone(),
        reason,
    };
    let text = read_optional(path)?.ok_or_else(|| bad("no such file".into()))?;
    let bundle: Bundle = serde_json::from_str(text.expose_secret()).map_err(|e| {
        bad(format!(
            "not a bundle (line {} column {})",
            e.line(),
            e.column()
        ))
    })?;
    if bundle.format != fleet::BUNDLE_FORMAT {
        return Err(bad(format!(
            "format {} (this agent reads format {}): {}",
            bundle.format,
            fleet::BUNDLE_FORMAT,
            if bundle.format > fleet::BUNDLE_FORMAT {
                "written by a newer controller; upgrade this node's agent"
            } else {
                "not a bundle format any controller wrote"
            }
        )));
    }
    if !bundle.unknown.is_empty() {
        let names: Vec<&str> = bundle.unknown.keys().map(String::as_str).collect();
        tracing::info!(fields = ?names, "bundle fields this agent does not know are ignored (written by a newer controller)");
    }
    if bundle.urls.is_empty() {
        return Err(bad("it names no store URL".into()));
    }
    common::names::validate_cluster_name(&bundle.cluster).map_err(|e| bad(e.to_string()))?;
    let safe = |s: &str| {
        !s.is_empty()
            && !s
                .split('/')
                .any(|seg| seg.is_empty() || seg == "." || seg == "..")
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
    };
    if !safe(&bundle.mount) || !safe(&bundle.prefix) || !safe(&bundle.auth_mount) {
        return Err(bad(
            "its mount, prefix or auth mount is not a safe path".into()
        ));
    }
    Ok(bundle)
}

/// Refuse a bundle whose store URLs are plain `http://` to a host that is
/// not loopback, unless the node's config allows it
/// (`pull_allow_insecure_http`): the node's secret_id and tokens would cross
/// the network in cleartext. Decided here, on the node, not by the bundle.
fn check_cleartext(bundle: &Bundle, path: &Path, allowed: bool) -> Result<(), PullError> {
    for url in bundle
        .urls
        .iter()
        .filter(|u| common::fleet::is_cleartext_to_network(u))
    {
        if !allowed {
            return Err(PullError::Bundle {
                path: path.display().to_string(),
                reason: format!(
                    "store URL {:?} is plain http:// to a host that is not loopback: this node's \
                     secret_id and tokens would cross the network in cleartext; use https://, \
                     or set `pull_allow_insecure_http: true` in the agent config",
                    url
                ),
            });
        }
        tracing::warn!(url = ?url, "store tokens go over plain http (pull_allow_insecure_http)");
    }
    Ok(())
}

/// The running pull loop; stopped when dropped.
#[derive(Debug)]
pub struct PullHandle {
    task: JoinHandle<()>,
}

impl Drop for PullHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Start pulling when the config names a bundle: load it, run polls until
/// the first one succeeds (or `boot_wait` passes: then the loop keeps
/// trying in the background), then poll in the background. Errors only on
/// what no retry fixes (an unreadable bundle, one already unwrapped).
pub async fn start(state: &AppState) -> Result<Option<PullHandle>, PullError> {
    let config = state.config();
    let Some(bundle_path) = config.pull_bundle.clone() else {
        return Ok(None);
    };
    let bundle = load_bundle(&bundle_path)?;
    check_cleartext(&bundle, &bundle_path, config.pull_allow_insecure_http)?;
    let client = StoreClient::new(&bundle, config.poll_interval)?;
    let dir = config.state_dir.join("pull");
    create_private_dir_all(&dir)?;
    let (hostname, node_id) = node_identity(&config.state_dir, &dir)?;
    let applied = read_optional(&dir.join("applied.json"))?
        .and_then(|t| serde_json::from_str(t.expose_secret()).ok())
        .unwrap_or_default();
    let files = CredFiles { dir: dir.clone() };
    let mut puller = Puller {
        metrics: state.metrics(),
        sim_home: None,
        token: files.load_token(),
        node: Some(NodeSide {
            state: state.clone(),
            files,
            dir,
        }),
        bundle,
        bundle_path,
        client,
        secret_id: None,
        applied,
        last_error: None,
        reported: None,
        report_failures: 0,
        report_retry_at: None,
        node_id,
        hostname,
        poll: config.poll_interval,
        heartbeat: config.heartbeat,
        heartbeat_hint: 0,
        failures: 0,
        synced: false,
    };
    tracing::info!(cluster = %puller.bundle.cluster, node = %puller.node_id, "pull mode: first poll before serving");
    puller.boot(config.pull_boot_wait).await?;
    let task = tokio::spawn(async move { puller.run().await });
    Ok(Some(PullHandle { task }))
}

/// One simulated node for the fleet bench (`examples/fleet_sim.rs`): the
/// real pull client (its own login, jittered polls with backoff, fetches of
/// what changed, reports). Needs a bundle carrying its secret_id (a launch
/// bundle, or a per-node secret_id put in it). With `home`, each fetched
/// secret's files are merged into that home (atomic, 0600, through
/// `common::apply` as the agent does) and `applied.json` kept under
/// `home/.rh/agent/pull`; env processes and the installed-state bookkeeping
/// of a real agent are left out. Its progress is in `metrics`
/// (`applied_version`...). Runs until the task is dropped; returns only on a
/// fatal error.
pub async fn simulate(
    bundle: Bundle,
    node_id: String,
    poll: Duration,
    heartbeat: Duration,
    metrics: std::sync::Arc<Metrics>,
    home: Option<PathBuf>,
) -> Result<(), PullError> {
    let client = StoreClient::new(&bundle, poll)?;
    if let Some(home) = &home {
        create_private_dir_all(&home.join(".rh/agent/pull"))?;
    }
    let mut puller = Puller {
        metrics,
        node: None,
        sim_home: home,
        bundle,
        bundle_path: PathBuf::from("<simulated>"),
        client,
        secret_id: None,
        token: None,
        applied: Applied::default(),
        last_error: None,
        reported: None,
        report_failures: 0,
        report_retry_at: None,
        hostname: node_id.clone(),
        node_id,
        poll,
        heartbeat,
        heartbeat_hint: 0,
        failures: 0,
        synced: false,
    };
    puller.boot(Duration::from_secs(3600)).await?;
    puller.run().await;
    Ok(())
}

/// What a real node has and a simulated one (the fleet bench) has not: the
/// install path, the kept credentials and `applied.json`.
struct NodeSide {
    state: AppState,
    files: CredFiles,
    dir: PathBuf,
}

struct Puller {
    metrics: std::sync::Arc<Metrics>,
    /// `None`: a simulated node (installs nothing, or only files into
    /// `sim_home`).
    node: Option<NodeSide>,
    sim_home: Option<PathBuf>,
    bundle: Bundle,
    bundle_path: PathBuf,
    client: StoreClient,
    secret_id: Option<SecretText>,
    token: Option<Token>,
    applied: Applied,
    last_error: Option<String>,
    /// What the last report written said, and when it was written.
    reported: Option<(NodeReport, Instant)>,
    /// Report writes failed in a row, and when the next may be tried: a
    /// store too busy to take writes (every report is a Raft write on the
    /// active node) is not asked again on every poll by every node.
    report_failures: u32,
    report_retry_at: Option<Instant>,
    node_id: String,
    hostname: String,
    poll: Duration,
    /// The configured heartbeat; the one used is [`Puller::heartbeat`].
    heartbeat: Duration,
    /// The heartbeat the last manifest asked for (seconds, 0: none).
    heartbeat_hint: u64,
    failures: u32,
    /// Whether a manifest was fully applied since start.
    synced: bool,
}

impl Puller {
    /// The first polls: until one succeeds (or `wait` passes); an error no
    /// retry fixes is returned. Boot logins of nodes started together are
    /// spread by a random delay (uniform within the bundle's boot spread
    /// when it has one and this node holds no valid token, else within
    /// half a second) and by the jittered backoff. The delay counts in `wait`.
    async fn boot(&mut self, wait: Duration) -> Result<(), PullError> {
        self.metrics.pull_enabled.store(1, Ordering::Relaxed);
        let deadline = Instant::now() + wait;
        tokio::time::sleep(self.boot_delay()).await;
        loop {
            match self.cycle().await {
                Ok(()) => return Ok(()),
                Err(e) if e.is_fatal() => return Err(e),
                Err(e) => {
                    if Instant::now() >= deadline {
                        tracing::warn!(error = %e, "first poll failed; serving what is installed and retrying in the background");
                        return Ok(());
                    }
                    tracing::debug!(error = %e, "first poll failed; retrying");
                    tokio::time::sleep(backoff(self.poll, self.failures)).await;
                }
            }
        }
    }

    /// The wait before the first poll: uniform in `[0, boot spread]` for a
    /// node that must log in (the bundle's spread, at most
    /// `MAX_BOOT_SPREAD_SECS`), else up to half a second.
    fn boot_delay(&self) -> Duration {
        let spread = Duration::from_secs(
            self.bundle
                .boot_spread_secs
                .min(fleet::MAX_BOOT_SPREAD_SECS),
        );
        let has_token = self.token.as_ref().is_some_and(|t| !t.is_due(now_unix()));
        if spread.is_zero() || has_token {
            jitter(self.poll.min(Duration::from_secs(2)) / 4, 1.0)
        } else {
            jitter(spread / 2, 1.0)
        }
    }

    async fn run(mut self) {
        let mut first = true;
        loop {
            tokio::time::sleep(next_wait(self.poll, self.failures, first)).await;
            first = false;
            if let Err(e) = self.cycle().await {
                tracing::warn!(error = %e, failures = self.failures, "poll failed");
            }
        }
    }

    /// One poll: apply what changed, then report if needed.
    async fn cycle(&mut self) -> Result<(), PullError> {
        Metrics::inc(&self.metrics.polls);
        let result = self.poll_once().await;
        match &result {
            Ok(()) => {
                self.failures = 0;
                self.last_error = None;
            }
            Err(e) => {
                Metrics::inc(&self.metrics.poll_errors);
                self.failures = self.failures.saturating_add(1);
                self.last_error = Some(e.to_string());
            }
        }
        self.metrics
            .last_poll_unix
            .store(now_unix(), Ordering::Relaxed);
        self.report().await;
        self.metrics.store_requests.store(
            self.client.requests.load(Ordering::Relaxed),
            Ordering::Relaxed,
        );
        result
    }

    /// A valid token: the kept one, else a fresh login (unwrapping the
    /// bundle first when this node never did).
    async fn token(&mut self) -> Result<Token, PullError> {
        if let Some(t) = &self.token {
            if !t.is_due(now_unix()) {
                return Ok(t.clone());
            }
        }
        if self.secret_id.is_none() {
            self.secret_id = Some(
                creds::secret_id(
                    &self.bundle,
                    &self.bundle_path,
                    self.node.as_ref().map(|n| &n.files),
                    &self.client,
                )
                .await?,
            );
        }
        let sid = self.secret_id.as_ref().expect("set above");
        let token = creds::login(&self.bundle, sid, &self.client).await?;
        Metrics::inc(&self.metrics.logins);
        if let Some(node) = &self.node {
            if let Err(e) = node.files.save_token(&token) {
                tracing::warn!(error = %e, "cannot keep the token in the state dir");
            }
        }
        self.token = Some(token.clone());
        Ok(token)
    }

    /// Read a KV document with the token; on 403 log in again once (the
    /// token may have expired early or been revoked).
    async fn read(
        &mut self,
        path: &str,
        version: Option<u64>,
    ) -> Result<Option<(u64, serde_json::Value)>, PullError> {
        let token = self.token().await?;
        match self
            .client
            .kv_read(token.expose_secret(), &self.bundle.mount, path, version)
            .await
        {
            Err(StoreError::Forbidden { .. }) => {
                self.token = None;
                if let Some(node) = &self.node {
                    node.files.drop_token();
                }
                let token = self.token().await?;
                Ok(self
                    .client
                    .kv_read(token.expose_secret(), &self.bundle.mount, path, version)
                    .await?)
            }
            other => Ok(other?),
        }
    }

    async fn poll_once(&mut self) -> Result<(), PullError> {
        let (prefix, cluster) = (self.bundle.prefix.clone(), self.bundle.cluster.clone());
        let manifest: Manifest = match self
            .read(&fleet::manifest_path(&prefix, &cluster), None)
            .await?
        {
            None => Manifest::default(),
            Some((_, data)) => serde_json::from_value(data).map_err(|_| {
                PullError::Apply(format!("the manifest of cluster {cluster} is malformed"))
            })?,
        };
        self.heartbeat_hint = manifest.heartbeat_secs;
        if manifest.version == self.applied.version && self.synced {
            return Ok(());
        }
        self.apply(&manifest).await?;
        // Write the report after a random delay within the spread the
        // publisher sized to the fleet, or, for the first report since this
        // agent started, the one enroll sized into the bundle when larger
        // (nodes booting together); capped by the heartbeat (the manifest's
        // value comes from the store). A large fleet's reports then do not
        // all land on the store within one poll period or one boot.
        let boot = if self.synced {
            0
        } else {
            self.bundle.report_spread_secs
        };
        self.synced = true;
        let spread =
            Duration::from_secs(manifest.report_spread_secs.max(boot)).min(self.heartbeat());
        if !spread.is_zero() {
            let at = Instant::now() + jitter(spread / 2, 1.0);
            self.report_retry_at = Some(self.report_retry_at.map_or(at, |t| t.max(at)));
        }
        Ok(())
    }

    /// Fetch the changed secrets, apply them, remove the unpublished ones.
    async fn apply(&mut self, manifest: &Manifest) -> Result<(), PullError> {
        let started = Instant::now();
        let (prefix, cluster) = (self.bundle.prefix.clone(), self.bundle.cluster.clone());
        let mut items = Vec::new();
        let mut errors = Vec::new();
        for entry in &manifest.secrets {
            if self.applied.secrets.get(&entry.name) == Some(&entry.kv_version) {
                continue;
            }
            // A name from the store becomes a store path: the same rules as
            // a name from a request (no `/`, no `..`).
            if let Err(e) = common::names::validate_secret_name(&entry.name) {
                errors.push(e.to_string());
                continue;
            }
            // The item the manifest carries, if it passes the checks; else
            // the one at `secrets/<name>`, under the same checks.
            if let Some(item) = entry
                .inline
                .as_ref()
                .and_then(|i| published_item(&entry.name, &i.0))
            {
                Metrics::inc(&self.metrics.inline_items);
                items.push((item, entry.kv_version));
                continue;
            }
            let path = fleet::secret_path(&prefix, &cluster, &entry.name);
            Metrics::inc(&self.metrics.secret_reads);
            match self.read(&path, Some(entry.kv_version)).await? {
                None => errors.push(format!(
                    "{}: version {} is not in the store",
                    entry.name, entry.kv_version
                )),
                Some((_, data)) => match published_item(&entry.name, &SecretValue::new(data)) {
                    Some(item) => items.push((item, entry.kv_version)),
                    None => errors.push(format!("{}: not a published secret", entry.name)),
                },
            }
        }
        let published: BTreeSet<&str> = manifest.secrets.iter().map(|e| e.name.as_str()).collect();
        let gone: Vec<String> = self
            .applied
            .secrets
            .keys()
            .filter(|n| !published.contains(n.as_str()))
            .cloned()
            .collect();
        for name in gone {
            let Some(node) = &self.node else {
                self.applied.secrets.remove(&name);
                continue;
            };
            let result = install::revoke(&node.state, &name, None, false).await;
            let mut audit = AuditEntry {
                route: "pull",
                secrets: vec![name.clone()],
                ..Default::default()
            };
            match &result {
                Ok(r) => {
                    audit.paths = r.files.iter().map(|f| f.path.clone()).collect();
                    audit.vars.clone_from(&r.vars);
                    audit.result = format!("{name}=removed");
                }
                Err(e) => audit.result = format!("error:{}", e.code),
            }
            node.state.inner.audit.record(&audit);
            match result {
                Ok(_) => {}
                Err(e) if e.status == axum::http::StatusCode::NOT_FOUND => {}
                Err(e) => {
                    errors.push(format!("{name}: cannot remove: {}", e.message));
                    continue;
                }
            }
            tracing::info!(secret = %name, "unpublished: removed");
            self.applied.secrets.remove(&name);
        }
        let versions: BTreeMap<String, u64> = items
            .iter()
            .map(|(i, v)| (i.secret.name.clone(), *v))
            .collect();
        let items = items.into_iter().map(|(i, _)| i).collect();
        let results = match &self.node {
            Some(node) => apply_pulled(&node.state, items, &self.applied.secrets).await,
            None => {
                let home = self.sim_home.clone();
                tokio::task::spawn_blocking(move || {
                    items
                        .into_iter()
                        .map(|i| (i.secret.name.clone(), simulated_apply(home.as_deref(), i)))
                        .collect::<Vec<_>>()
                })
                .await
                .map_err(|_| PullError::Apply("the simulated apply panicked".into()))?
            }
        };
        for (name, result) in results {
            match result {
                Ok(r) if matches!(r.status, Status::Conflict | Status::Failed) => {
                    errors.push(format!(
                        "{name}: {}{}",
                        r.status.as_str(),
                        r.message.map(|m| format!(" ({m})")).unwrap_or_default()
                    ));
                }
                Ok(_) => {
                    self.applied.secrets.insert(name.clone(), versions[&name]);
                }
                Err(e) => errors.push(format!("{name}: {}", e.message)),
            }
        }
        if errors.is_empty() {
            self.applied.version = manifest.version;
            self.metrics
                .applied_version
                .store(manifest.version, Ordering::Relaxed);
            Metrics::inc(&self.metrics.applies);
            tracing::info!(
                version = manifest.version,
                secrets = self.applied.secrets.len(),
                "applied"
            );
        }
        let state_dir = match (&self.node, &self.sim_home) {
            (Some(node), _) => Some(node.dir.clone()),
            (None, Some(home)) => Some(home.join(".rh/agent/pull")),
            (None, None) => None,
        };
        if let Some(dir) = state_dir {
            let text = serde_json::to_string_pretty(&self.applied).expect("applied serializes");
            atomic_write(&dir.join("applied.json"), text.as_bytes())?;
        }
        self.metrics
            .last_apply_micros
            .store(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        if errors.is_empty() {
            Ok(())
        } else {
            Err(PullError::Apply(errors.join("; ")))
        }
    }

    /// The heartbeat used: the configured one, or the manifest's or the
    /// bundle's when longer (a large fleet's publisher, or its enroll, asks
    /// for fewer heartbeat writes), at most `MAX_HEARTBEAT_SECS`.
    fn heartbeat(&self) -> Duration {
        let asked = self.heartbeat_hint.max(self.bundle.heartbeat_secs);
        self.heartbeat
            .max(Duration::from_secs(asked.min(fleet::MAX_HEARTBEAT_SECS)))
    }

    /// Write this node's report when it changed or the heartbeat is due.
    async fn report(&mut self) {
        let now = now_unix();
        let report = NodeReport {
            node_id: self.node_id.clone(),
            hostname: self.hostname.clone(),
            applied_version: self.applied.version,
            reported_at: now,
            last_poll: now,
            last_error: self.last_error.clone(),
            secrets: self.applied.secrets.keys().cloned().collect(),
            poll_interval_secs: self.poll.as_secs().max(1),
            heartbeat_secs: self.heartbeat().as_secs().max(1),
        };
        let same = |a: &NodeReport, b: &NodeReport| {
            a.applied_version == b.applied_version
                && a.last_error == b.last_error
                && a.secrets == b.secrets
        };
        if let Some((last, at)) = &self.reported {
            if same(last, &report) && at.elapsed() < self.heartbeat() {
                return;
            }
        }
        if self.report_retry_at.is_some_and(|at| Instant::now() < at) {
            return;
        }
        let Some(token) = self.token.clone().filter(|t| !t.is_due(now)) else {
            return;
        };
        let path = fleet::report_path(&self.bundle.prefix, &self.bundle.cluster, &self.node_id);
        let data = serde_json::to_value(&report).expect("report serializes");
        match self
            .client
            .kv_write(token.expose_secret(), &self.bundle.mount, &path, &data)
            .await
        {
            Ok(()) => {
                Metrics::inc(&self.metrics.report_writes);
                self.reported = Some((report, Instant::now()));
                self.report_failures = 0;
                self.report_retry_at = None;
            }
            Err(e) => {
                // Back off (2, 4, then 8 polls, jittered) instead of
                // retrying on every poll: a fleet whose writes failed
                // together would otherwise keep the store saturated.
                Metrics::inc(&self.metrics.report_errors);
                self.report_failures = self.report_failures.saturating_add(1);
                self.report_retry_at =
                    Some(Instant::now() + backoff(self.poll, self.report_failures));
                tracing::debug!(error = %e, failures = self.report_failures, "cannot write the node report");
            }
        }
    }
}

/// `data` as the published item `name`: a `SyncItem` of that name in the
/// older form. A publish writes no placement: where a secret goes is decided
/// here, by this node's policy, never by the store; an item carrying a
/// placement is refused.
fn published_item(name: &str, data: &SecretValue) -> Option<SyncItem> {
    SyncItem::deserialize(data.expose_secret())
        .ok()
        .filter(|item| item.secret.name == name && item.placement.is_none())
}

/// A simulated node's apply of one pulled secret: its files merged into
/// `home` (confined to it, atomic, 0600; overwriting what the store put
/// there before), or nothing without a home. No env process, no policy
/// check, no installed state: the bench measures the store, not this.
fn simulated_apply(home: Option<&Path>, item: SyncItem) -> Result<SecretResult, ApiError> {
    let result = SecretResult {
        name: item.secret.name.clone(),
        status: Status::Written,
        files: vec![],
        env: None,
        vars: vec![],
        message: None,
    };
    let Some(home) = home else {
        return Ok(result);
    };
    let provider = common::providers::for_secret(item.secret.provider.as_deref());
    let paths = common::apply::secret_paths(&item.secret, item.path.as_deref())?;
    let files = paths
        .into_iter()
        .map(|display| {
            Ok(common::apply::TargetFile {
                path: common::fsutil::confine(home, &display)?,
                display,
            })
        })
        .collect::<Result<Vec<_>, PathError>>()?;
    common::apply::write_files(provider, &files, &item.secret.values, true, false)?;
    Ok(result)
}

/// Apply secrets pulled from the store through the same path as
/// `POST /v1/sync` (`install::plan_item` with `Origin::Remote`, then `install::apply`): one bad or
/// conflicting secret does not hold back the others. A secret this node
/// already installed from the store replaces its own earlier values
/// (overwrite); a new one does not clobber differing values already in a
/// file (conflict, reported). One audit entry, route `pull`.
pub(crate) async fn apply_pulled(
    state: &AppState,
    items: Vec<SyncItem>,
    known: &BTreeMap<String, u64>,
) -> Vec<(String, Result<SecretResult, ApiError>)> {
    let mut audit = AuditEntry {
        route: "pull",
        secrets: items.iter().map(|i| i.secret.name.clone()).collect(),
        ..Default::default()
    };
    let mut out = Vec::with_capacity(items.len());
    let (mut again, mut new) = (Vec::new(), Vec::new());
    // Session secrets (`crate::credentials`): checked as the store's input.
    let (sessions, items) = crate::credentials::install::split(items);
    out.extend(
        crate::credentials::install::apply_items(
            state,
            sessions,
            common::policy::Origin::Remote,
            false,
        )
        .await,
    );
    for item in items {
        let name = item.secret.name.clone();
        // Placed by this node's policy, not by the store: provider
        // locations or `allow_paths` only, never the deny-list.
        let planned =
            install::plan_item(state, item, common::policy::Origin::Remote).and_then(|p| {
                let env = p.env_vars().map(|(env, _)| env);
                state
                    .inner
                    .envs
                    .check_room(env.iter().map(String::as_str))?;
                Ok(p)
            });
        match planned {
            Err(e) => out.push((name, Err(e))),
            Ok(p) => {
                audit.paths.extend(p.paths());
                if let Some((env, vars)) = p.env_vars() {
                    if !audit.envs.contains(&env) {
                        audit.envs.push(env);
                    }
                    audit.vars.extend(vars);
                }
                if known.contains_key(&name) {
                    again.push(p);
                } else {
                    new.push(p);
                }
            }
        }
    }
    for (batch, overwrite) in [(again, true), (new, false)] {
        if batch.is_empty() {
            continue;
        }
        let names: Vec<String> = batch.iter().map(|p| p.secret.name.clone()).collect();
        let results = install::apply(state, batch, overwrite, false, None).await;
        out.extend(names.into_iter().zip(results));
    }
    let ok: Vec<SecretResult> = out
        .iter()
        .filter_map(|(_, r)| r.as_ref().ok().cloned())
        .collect();
    audit.result = statuses(&ok);
    state.inner.audit.record(&audit);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn polls_take_a_random_phase_then_keep_the_period_within_2_percent() {
        let poll = Duration::from_secs(10);
        let (mut early, mut late) = (false, false);
        for _ in 0..400 {
            let steady = next_wait(poll, 0, false);
            assert!(
                steady >= Duration::from_millis(9800) && steady <= Duration::from_millis(10200),
                "{steady:?}"
            );
            let phase = next_wait(poll, 0, true);
            assert!(phase > Duration::ZERO && phase <= poll, "{phase:?}");
            early |= phase < Duration::from_secs(2);
            late |= phase > Duration::from_secs(8);
            let after_error = next_wait(poll, 1, false);
            assert!(after_error >= Duration::from_secs(10), "{after_error:?}");
        }
        assert!(early && late, "the phase is not spread over the period");
    }

    #[test]
    fn jitter_and_backoff_stay_in_bounds() {
        let poll = Duration::from_secs(10);
        for _ in 0..200 {
            let j = jitter(poll, 0.2);
            assert!(
                j >= Duration::from_secs(8) && j <= Duration::from_secs(12),
                "{j:?}"
            );
            let b = backoff(poll, 10);
            assert!(
                b >= Duration::from_secs(40) && b <= Duration::from_secs(120),
                "{b:?}"
            );
        }
    }

    #[test]
    fn node_ids_are_kept_distinct_on_cloned_machines_and_path_safe() {
        let (one, two) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        // Two nodes cloned from one image: same machine id, host name and
        // state dir path; only their own kept files differ.
        let state = Path::new("/home/ubuntu/.rh/agent");
        let (_, a) = node_identity(state, one.path()).unwrap();
        let (_, b) = node_identity(state, two.path()).unwrap();
        assert_ne!(a, b);
        assert!(is_node_id(&a), "{a}");
        // Kept: the same id on the next start, the file private.
        assert_eq!(a, node_identity(state, one.path()).unwrap().1);
        let kept = one.path().join("node_id");
        assert_eq!(std::fs::read_to_string(&kept).unwrap(), format!("{a}\n"));
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(
                &std::fs::metadata(&kept).unwrap().permissions()
            ) & 0o777,
            0o600
        );
        // A node from before ids were kept (it applied something) keeps the
        // id it reported under; a kept file that is not an id is replaced.
        let old = tempfile::tempdir().unwrap();
        std::fs::write(old.path().join("applied.json"), "{}").unwrap();
        std::fs::write(old.path().join("node_id"), "../../etc\n").unwrap();
        let (host, c) = node_identity(state, old.path()).unwrap();
        assert_eq!(c, derive_node_id(&host, state, ""));
    }

    #[test]
    fn only_a_published_item_of_the_entry_s_name_without_a_placement_is_taken() {
        let item = |name: &str| json!({ "secret": { "name": name, "values": { "k": "v" } } });
        let taken = |v: serde_json::Value| published_item("a", &SecretValue::new(v)).is_some();
        assert!(taken(item("a")));
        assert!(!taken(item("b")));
        let mut placed = item("a");
        placed["placement"] = json!({ "files": [{ "path": "~/.ssh/authorized_keys" }] });
        assert!(!taken(placed));
        assert!(!taken(json!(42)));
        let mut extra = item("a");
        extra["unknown"] = json!(1);
        assert!(!taken(extra));
    }

    #[test]
    fn bundles_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.json");
        std::fs::write(&path, "{}").unwrap();
        assert!(matches!(load_bundle(&path), Err(PullError::Bundle { .. })));
        let good = serde_json::json!({
            "format": 1, "cluster": "gpu", "urls": ["http://127.0.0.1:1"],
            "mount": "secret", "prefix": "rh/a", "auth_mount": "approle", "role_id": "r",
            "wrapped_secret_id": "hvs.x"
        });
        std::fs::write(&path, good.to_string()).unwrap();
        assert!(load_bundle(&path).is_ok());
        // A field a newer controller added is ignored (by name; its value is
        // not kept); a newer format is refused, naming the upgrade.
        let mut newer = good.clone();
        newer["future_knob"] = serde_json::json!({"nested": ["hvs.future-secret"]});
        std::fs::write(&path, newer.to_string()).unwrap();
        let b = load_bundle(&path).unwrap();
        assert_eq!(b.unknown.keys().collect::<Vec<_>>(), ["future_knob"]);
        assert_eq!(b.urls, ["http://127.0.0.1:1"]);
        assert!(!format!("{b:?}").contains("future-secret"));
        newer["format"] = 2.into();
        std::fs::write(&path, newer.to_string()).unwrap();
        let err = load_bundle(&path).unwrap_err().to_string();
        assert!(err.contains("format 2") && err.contains("upgrade"), "{err}");
        let mut zero = good.clone();
        zero["format"] = 0.into();
        std::fs::write(&path, zero.to_string()).unwrap();
        assert!(load_bundle(&path).is_err());
        let mut bad = good.clone();
        bad["prefix"] = "rh/../x".into();
        std::fs::write(&path, bad.to_string()).unwrap();
        let err = load_bundle(&path).unwrap_err().to_string();
        assert!(err.contains("not a safe path"), "{err}");
        assert!(!err.contains("hvs.x"));

        // Plain http to a store that is not loopback: refused unless the
        // node's own config allows it; https and loopback always pass.
        let mut remote = good.clone();
        remote["urls"] = serde_json::json!(["https://10.0.0.1:8200", "http://10.0.0.2:8200"]);
        std::fs::write(&path, remote.to_string()).unwrap();
        let bundle = load_bundle(&path).unwrap();
        let err = check_cleartext(&bundle, &path, false)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("http://10.0.0.2:8200") && err.contains("pull_allow_insecure_http"),
            "{err}"
        );
        assert!(!err.contains("hvs.x"));
        assert!(check_cleartext(&bundle, &path, true).is_ok());
        let loopback = load_bundle(&path)
            .map(|mut b| {
                b.urls = vec![
                    "http://127.0.0.1:8200".into(),
                    "https://10.0.0.1:8200".into(),
                ];
                b
            })
            .unwrap();
        assert!(check_cleartext(&loopback, &path, false).is_ok());
    }
}
