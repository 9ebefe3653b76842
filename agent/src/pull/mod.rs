//! Fleet mode (`agent serve --pull BUNDLE`, or `pull_bundle` in the config):
//! the agent logs in to the remote store with its bundle's AppRole
//! (`creds`), polls its cluster's manifest every `poll_interval` (a random
//! phase after the first poll, then the period ±2%; errors back off
//! exponentially, jittered), fetches the secrets
//! whose KV version changed, applies them through the same install service
//! as `POST /v1/sync` (`install::apply_pulled`: merge, atomic 0600 files, env
//! processes, installed state, audit), removes what was unpublished, and
//! writes a node report (`common::fleet::NodeReport`, signed with the
//! bundle's report key when it has one) only when what it applied (or its
//! error) changes, plus a slow heartbeat.
//! The store is untrusted: only a well-formed manifest
//! (`fleet::parse_manifest`) is applied, and only an explicit empty one
//! unpublishes everything (a missing, deleted or malformed one keeps what
//! is installed and fails the poll); a manifest older than the one applied
//! (by `(epoch, version)`), or an entry older than the KV version applied
//! for that secret, is refused (no rollback); one entry that cannot be read
//! or applied fails alone, the rest (removals included) is applied; a
//! bundle that others can read or write is refused.
//! [`start`] runs the first poll before returning, so `main` binds the port
//! (and the boot unit's health check passes) only once the node is applied.
//! A store outage leaves everything on the node as it is.
//! What it applied is kept in `<state-dir>/pull/applied.json` (names and
//! versions only). Never logs a value, token or secret_id.

pub(crate) mod creds;
pub(crate) mod identity;
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

use crate::install::{self, InstallError};
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
         someone else) or its wrap TTL ran out: its secret_id cannot be trusted; revoke it \
         (`controller cluster revoke-node {cluster} {revoke}`) and enroll this node again \
         (`controller cluster enroll {cluster} --out DIR --node {name}`)"
    )]
    AlreadyUnwrapped {
        path: String,
        cluster: String,
        /// What `revoke-node` takes: the bundle's name, or `--bundle FILE`.
        revoke: String,
        name: String,
    },
    #[error("login refused: {0} (was the cluster's AppRole removed?)")]
    LoginRefused(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Path(#[from] PathError),
    #[error("{0}")]
    Apply(String),
    #[error("workload identity: {0}")]
    Identity(String),
    /// The manifest is missing, malformed or older than what was applied:
    /// nothing is changed on the node.
    #[error("{0}")]
    Manifest(String),
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
    /// The epoch of that manifest.
    #[serde(default)]
    epoch: u64,
    /// Secret name -> KV version installed.
    secrets: BTreeMap<String, u64>,
    /// Secret name -> the highest KV version applied in this epoch, kept
    /// after the secret is unpublished: an older one is refused.
    #[serde(default)]
    floors: BTreeMap<String, u64>,
}

impl Applied {
    /// The `(epoch, version)` applied, ordered like `Manifest::stamp`.
    fn stamp(&self) -> (u64, u64) {
        (self.epoch, self.version)
    }
}

/// The longest error text a node keeps and reports (characters): a
/// manifest of ten thousand failing entries makes one error each.
const MAX_ERROR_CHARS: usize = 2_000;

/// `errors` joined with `; `, cut after [`MAX_ERROR_CHARS`] with a count of
/// those left out.
fn join_errors(errors: &[String]) -> String {
    let mut out = String::new();
    for (i, e) in errors.iter().enumerate() {
        let sep = if i == 0 { "" } else { "; " };
        if out.chars().count() + sep.len() + e.chars().count() > MAX_ERROR_CHARS {
            if out.is_empty() {
                out = common::text::escape_text(e, MAX_ERROR_CHARS);
                if errors.len() > 1 {
                    out.push_str(&format!(" (and {} more errors)", errors.len() - 1));
                }
            } else {
                out.push_str(&format!("; and {} more errors", errors.len() - i));
            }
            return out;
        }
        out.push_str(sep);
        out.push_str(e);
    }
    out
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
    let read = match common::fsutil::FileRef::anywhere(path)?.open(false)? {
        Some(file) => file.read_with_sig()?,
        None => None,
    };
    let (text, sig) = read.ok_or_else(|| bad("no such file".into()))?;
    // Like a TLS key: a secret_id (or the wrapping token around one) that
    // others can read is not this node's alone, and one others can write
    // can be swapped for another store or cluster.
    if !sig.is_private() {
        return Err(bad(format!(
            "it is readable or writable by group or others: run `chmod 600 {shown}` (and \
             consider it leaked: revoke it and enroll this node again)"
        )));
    }
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
    if bundle
        .name
        .as_deref()
        .is_some_and(|n| !fleet::is_bundle_name(n))
    {
        return Err(bad("its name is not a bundle name".into()));
    }
    match (&bundle.bundle_id, &bundle.report_key) {
        (None, None) => {}
        (Some(id), Some(key))
            if fleet::is_bundle_id(id)
                && key
                    .expose_str()
                    .is_some_and(|k| k.len() == 64 && hex::decode(k).is_ok()) => {}
        _ => {
            return Err(bad(
                "its bundle_id and report_key are not a bundle id and a 64-hex-digit key".into(),
            ))
        }
    }
    Ok(bundle)
}

/// The bundle's store URLs as the HTTP client reads them
/// (`common::store_url`, the same check as the controller's): a URL that
/// reads otherwise than written (`" http://h"`, `http:h`, `\\`, `h\@127.0.0.1`,
/// `127.1`), or with credentials, a query or a fragment, is refused; so is
/// plain `http://` to a host that is not loopback unless the node's config
/// allows it (`pull_allow_insecure_http`): the node's secret_id and tokens
/// would cross the network in cleartext. Decided here, on the node, not by
/// the bundle.
fn check_urls(bundle: &Bundle, path: &Path, allowed: bool) -> Result<Vec<String>, PullError> {
    let bad = |reason: String| PullError::Bundle {
        path: path.display().to_string(),
        reason,
    };
    let mut urls = Vec::with_capacity(bundle.urls.len());
    for text in &bundle.urls {
        let url = common::store_url::parse(text).map_err(|e| {
            bad(format!(
                "store URL {:?} is not valid: {e}",
                common::store_url::shown(text)
            ))
        })?;
        if url.is_cleartext_to_network() {
            if !allowed {
                return Err(bad(format!(
                    "store URL {:?} is plain http:// to a host that is not loopback: this node's \
                     secret_id and tokens would cross the network in cleartext; use https://, \
                     or set `pull_allow_insecure_http: true` in the agent config",
                    url.as_str()
                )));
            }
            tracing::warn!(url = %url, "store tokens go over plain http (pull_allow_insecure_http)");
        }
        urls.push(url.as_str().to_owned());
    }
    Ok(urls)
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
    let mut bundle = load_bundle(&bundle_path)?;
    bundle.urls = check_urls(&bundle, &bundle_path, config.pull_allow_insecure_http)?;
    let client = StoreClient::new(&bundle, config.poll_interval)?;
    let dir = config.state_dir.join("pull");
    create_private_dir_all(&dir)?;
    let (hostname, node_id) = node_identity(&config.state_dir, &dir)?;
    let applied = read_optional(&dir.join("applied.json"))?
        .and_then(|t| serde_json::from_str(t.expose_secret()).ok())
        .unwrap_or_default();
    let files = CredFiles { dir: dir.clone() };
    let identity = identity::Refresher::new(
        config.identity.clone(),
        Some(&config.state_dir),
        Some(config.home.clone()),
        &node_id,
    );
    let mut puller = Puller {
        identity,
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
        federation_seen: 0,
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
    let state_dir = home.as_ref().map(|h| h.join(".rh/agent"));
    let identity = identity::Refresher::new(
        crate::config::IdentityConfig::default(),
        state_dir.as_deref(),
        None,
        &node_id,
    );
    let mut puller = Puller {
        identity,
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
        federation_seen: 0,
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
    /// Workload identity: tokens fetched on the poll when due.
    identity: identity::Refresher,
    /// The manifest's `federation` mark last seen (0: none).
    federation_seen: u64,
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
                self.last_error = Some(join_errors(&[e.to_string()]));
            }
        }
        self.metrics
            .last_poll_unix
            .store(now_unix(), Ordering::Relaxed);
        self.refresh_identity(&result).await;
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
        let kept = "everything installed is kept";
        let manifest: Manifest = match self
            .read(&fleet::manifest_path(&prefix, &cluster), None)
            .await?
        {
            // Nothing published yet, and nothing installed from the store:
            // nothing to keep either.
            None if self.applied == Applied::default() => Manifest::default(),
            // Only an explicit, well-formed manifest unpublishes: one that
            // is gone (deleted, destroyed, never there) keeps everything.
            None => {
                return Err(PullError::Manifest(format!(
                    "the manifest of cluster {cluster} is missing (not found, deleted or \
                     destroyed in the store): {kept}"
                )))
            }
            Some((_, data)) => fleet::parse_manifest(&data).map_err(|e| {
                PullError::Manifest(format!(
                    "the manifest of cluster {cluster} is refused: {e}; {kept}"
                ))
            })?,
        };
        if manifest.stamp() < self.applied.stamp() {
            // A re-put older document carries its old serial (its KV
            // version is newer): refused, whatever else it says.
            return Err(PullError::Manifest(format!(
                "refused: older than applied (the manifest of cluster {cluster} is version {} of \
                 epoch {}; this node applied version {} of epoch {}): a rollback, or a store \
                 restored from a backup; {kept} (the owner starts a new epoch with \
                 `controller sync --cluster {cluster} --new-epoch`)",
                manifest.version, manifest.epoch, self.applied.version, self.applied.epoch
            )));
        }
        self.heartbeat_hint = manifest.heartbeat_secs;
        if manifest.federation != self.federation_seen {
            // `cluster federate` wrote the federation document since this
            // node last looked: tokens on this poll, not at the next
            // recheck of a cluster thought unfederated (up to 15 minutes).
            // From the store, so it can only make one read come sooner.
            self.federation_seen = manifest.federation;
            self.identity.refresh_now();
        }
        if manifest.stamp() == self.applied.stamp() && self.synced {
            return Ok(());
        }
        if manifest.epoch > self.applied.epoch && self.applied.epoch != 0 {
            // The owner started a new epoch (a store restored from a
            // backup restarts KV versions): the floors go, and every secret
            // is read again under the new epoch. (Epoch 0 is the state of
            // an agent older than epochs: it just takes the epoch.)
            tracing::info!(
                epoch = manifest.epoch,
                "a new epoch: every secret is applied again"
            );
            self.applied.floors.clear();
            self.applied.secrets.values_mut().for_each(|v| *v = 0);
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
        // Set when the store stops answering: the entries left are not
        // read this poll (removals and what was read are still applied).
        let mut unread: Option<(usize, PullError)> = None;
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
            if let Some(&floor) = self.applied.floors.get(&entry.name) {
                if entry.kv_version < floor {
                    errors.push(format!(
                        "{}: refused: version {} is older than version {floor} applied",
                        entry.name, entry.kv_version
                    ));
                    continue;
                }
            }
            if let Some((n, _)) = &mut unread {
                *n += 1;
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
            // One entry's error (too large, not JSON, refused) is its own:
            // the others, and the removals, are applied all the same.
            match self.read(&path, Some(entry.kv_version)).await {
                Ok(None) => errors.push(format!(
                    "{}: version {} is not in the store",
                    entry.name, entry.kv_version
                )),
                Ok(Some((_, data))) => match published_item(&entry.name, &SecretValue::new(data)) {
                    Some(item) => items.push((item, entry.kv_version)),
                    None => errors.push(format!("{}: not a published secret", entry.name)),
                },
                Err(e) if e.is_fatal() => return Err(e),
                Err(
                    e @ (PullError::LoginRefused(_)
                    | PullError::Store(StoreError::Unreachable { .. })),
                ) => {
                    unread = Some((1, e));
                }
                Err(e) => errors.push(format!("{}: {e}", entry.name)),
            }
        }
        if let Some((n, e)) = unread {
            errors.push(format!("{n} secret(s) not read: {e}"));
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
            match install::revoke(&node.state, "pull", &name, None, false).await {
                Ok(_) | Err(InstallError::NotInstalled(_)) => {}
                Err(e) => {
                    errors.push(format!("{name}: cannot remove: {}", e.message()));
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
            Some(node) => {
                let known = |name: &str| self.applied.secrets.contains_key(name);
                install::apply_pulled(&node.state, "pull", items, known).await
            }
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
                    let version = versions[&name];
                    self.applied.secrets.insert(name.clone(), version);
                    let floor = self.applied.floors.entry(name).or_default();
                    *floor = (*floor).max(version);
                }
                Err(e) => errors.push(format!("{name}: {}", e.message())),
            }
        }
        if errors.is_empty() {
            self.applied.version = manifest.version;
            self.applied.epoch = manifest.epoch;
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
            Err(PullError::Apply(join_errors(&errors)))
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
        let mut report = NodeReport {
            node_id: self.node_id.clone(),
            hostname: self.hostname.clone(),
            applied_version: self.applied.version,
            applied_epoch: self.applied.epoch,
            reported_at: now,
            last_poll: now,
            last_error: self.last_error.clone(),
            secrets: self.applied.secrets.keys().cloned().collect(),
            poll_interval_secs: self.poll.as_secs().max(1),
            heartbeat_secs: self.heartbeat().as_secs().max(1),
            identity: self.identity.report(),
            bundle_id: None,
            sig: None,
        };
        // A routine identity refresh is not news (the heartbeat carries its
        // expiry); being federated or not, and a new error, are.
        let identity_key = |r: &NodeReport| {
            r.identity
                .as_ref()
                .map(|i| (i.clouds.clone(), i.last_error_at))
        };
        // Signed, under `<node-id>.<bundle-id>`, when the bundle has a
        // report key (checked hex when it was loaded).
        if let (Some(id), Some(key)) = (&self.bundle.bundle_id, &self.bundle.report_key) {
            let key = key.expose_str().unwrap_or_default();
            match fleet::sign_report(report.clone(), id, key) {
                Some(signed) => report = signed,
                None => tracing::warn!("the bundle's report key is not hex; reporting unsigned"),
            }
        }
        let same = |a: &NodeReport, b: &NodeReport| {
            a.applied_version == b.applied_version
                && a.applied_epoch == b.applied_epoch
                && a.last_error == b.last_error
                && a.secrets == b.secrets
                && identity_key(a) == identity_key(b)
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
        let path = fleet::report_path(&self.bundle.prefix, &self.bundle.cluster, &report.node_id);
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
fn simulated_apply(home: Option<&Path>, item: SyncItem) -> Result<SecretResult, InstallError> {
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
    let opts = common::placement::PlaceOpts::request(item.path.as_deref(), None, true);
    let files = common::placement::place(&item.secret, &opts)?
        .paths()
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

    /// Write a bundle file as enroll does (0600).
    fn write_private(path: &Path, text: &str) {
        std::fs::write(path, text).unwrap();
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
    }

    #[test]
    fn bundles_others_can_read_or_write_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let good = serde_json::json!({
            "format": 1, "cluster": "gpu", "urls": ["http://127.0.0.1:1"],
            "mount": "secret", "prefix": "rh/a", "auth_mount": "approle", "role_id": "r",
            "secret_id": "launch-sid-never-shown"
        });
        let path = dir.path().join("launch.json");
        write_private(&path, &good.to_string());
        assert!(load_bundle(&path).is_ok());
        for mode in [0o644, 0o666, 0o640, 0o604, 0o620, 0o602] {
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(mode))
                .unwrap();
            let err = load_bundle(&path).unwrap_err().to_string();
            assert!(
                err.contains("readable or writable by group or others"),
                "{mode:o}: {err}"
            );
            assert!(err.contains("chmod 600"), "{err}");
            assert!(!err.contains("never-shown"), "{err}");
        }
        // A bundle id and report key come together, well formed.
        let mut signed = good.clone();
        signed["bundle_id"] = "0123456789abcdef".into();
        signed["report_key"] = "ab".repeat(32).into();
        signed["name"] = "node-3".into();
        write_private(&path, &signed.to_string());
        assert!(load_bundle(&path).is_ok());
        for (field, value) in [
            ("report_key", serde_json::json!("not-hex")),
            ("bundle_id", serde_json::json!("../x")),
            ("name", serde_json::json!("node 3\u{1b}")),
        ] {
            let mut bad = signed.clone();
            bad[field] = value;
            write_private(&path, &bad.to_string());
            assert!(load_bundle(&path).is_err(), "{field}");
        }
    }

    #[test]
    fn error_text_is_cut_with_a_count_of_what_was_left_out() {
        let errors: Vec<String> = (0..70_000).map(|i| format!("s{i}: refused")).collect();
        let text = join_errors(&errors);
        assert!(
            text.chars().count() <= MAX_ERROR_CHARS + 40,
            "{}",
            text.len()
        );
        assert!(text.starts_with("s0: refused; s1: refused"), "{text}");
        assert!(text.ends_with("more errors"), "{text}");
        assert_eq!(join_errors(&["a".into(), "b".into()]), "a; b");
        let one = join_errors(&["x".repeat(10_000)]);
        assert!(one.chars().count() <= MAX_ERROR_CHARS + 3, "{}", one.len());
    }

    #[test]
    fn bundles_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.json");
        write_private(&path, "{}");
        assert!(matches!(load_bundle(&path), Err(PullError::Bundle { .. })));
        let good = serde_json::json!({
            "format": 1, "cluster": "gpu", "urls": ["http://127.0.0.1:1"],
            "mount": "secret", "prefix": "rh/a", "auth_mount": "approle", "role_id": "r",
            "wrapped_secret_id": "hvs.x"
        });
        write_private(&path, &good.to_string());
        assert!(load_bundle(&path).is_ok());
        // A field a newer controller added is ignored (by name; its value is
        // not kept); a newer format is refused, naming the upgrade.
        let mut newer = good.clone();
        newer["future_knob"] = serde_json::json!({"nested": ["hvs.future-secret"]});
        write_private(&path, &newer.to_string());
        let b = load_bundle(&path).unwrap();
        assert_eq!(b.unknown.keys().collect::<Vec<_>>(), ["future_knob"]);
        assert_eq!(b.urls, ["http://127.0.0.1:1"]);
        assert!(!format!("{b:?}").contains("future-secret"));
        newer["format"] = 2.into();
        write_private(&path, &newer.to_string());
        let err = load_bundle(&path).unwrap_err().to_string();
        assert!(err.contains("format 2") && err.contains("upgrade"), "{err}");
        let mut zero = good.clone();
        zero["format"] = 0.into();
        write_private(&path, &zero.to_string());
        assert!(load_bundle(&path).is_err());
        let mut bad = good.clone();
        bad["prefix"] = "rh/../x".into();
        write_private(&path, &bad.to_string());
        let err = load_bundle(&path).unwrap_err().to_string();
        assert!(err.contains("not a safe path"), "{err}");
        assert!(!err.contains("hvs.x"));

        // Plain http to a store that is not loopback: refused unless the
        // node's own config allows it; https and loopback always pass.
        let mut remote = good.clone();
        remote["urls"] = serde_json::json!(["https://10.0.0.1:8200", "http://10.0.0.2:8200"]);
        write_private(&path, &remote.to_string());
        let bundle = load_bundle(&path).unwrap();
        let err = check_urls(&bundle, &path, false).unwrap_err().to_string();
        assert!(
            err.contains("http://10.0.0.2:8200") && err.contains("pull_allow_insecure_http"),
            "{err}"
        );
        assert!(!err.contains("hvs.x"));
        assert!(check_urls(&bundle, &path, true).is_ok());
        let loopback = load_bundle(&path)
            .map(|mut b| {
                b.urls = vec![
                    "http://127.0.0.1:8200".into(),
                    "https://10.0.0.1:8200".into(),
                ];
                b
            })
            .unwrap();
        assert_eq!(
            check_urls(&loopback, &path, false).unwrap(),
            ["http://127.0.0.1:8200", "https://10.0.0.1:8200"]
        );
        // Decided on the URL as the client reads it: none of these reaches
        // a loopback host, and each read as loopback by a string test.
        for tricky in [
            " http://10.0.0.2:8200",
            "http:10.0.0.2:8200",
            "http://10.0.0.2:8200\\@127.0.0.1",
            "HTTP:\\\\10.0.0.2",
            "http://127.0.0.1@10.0.0.2",
            "http://127.0.0.1:8200@10.0.0.2:8200",
            "http://10.0.0.2#@127.0.0.1",
            "http://localhost.:8200",
            "http://10.0.0.2/@127.0.0.1",
        ] {
            let mut b = loopback.clone();
            b.urls = vec!["https://10.0.0.1:8200".into(), tricky.into()];
            let err = check_urls(&b, &path, false).unwrap_err().to_string();
            assert!(err.contains("store URL"), "{tricky:?}: {err}");
        }
        // Loopback spelled as the client spells it passes; other spellings
        // of it are refused with the client's reading.
        for ok in [
            "http://[::1]:8200",
            "http://localhost:8200",
            "http://127.0.0.1:8200/",
        ] {
            let mut b = loopback.clone();
            b.urls = vec![ok.into()];
            assert!(check_urls(&b, &path, false).is_ok(), "{ok}");
        }
        let mut b = loopback.clone();
        b.urls = vec!["http://127.1:8200".into()];
        let err = check_urls(&b, &path, false).unwrap_err().to_string();
        assert!(err.contains("reads it as http://127.0.0.1:8200"), "{err}");
    }
}
