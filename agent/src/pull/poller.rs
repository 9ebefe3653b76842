//! The poll loop of a pulling node: log in (unwrapping the bundle once),
//! read the manifest, refuse one older than what was applied, fetch the
//! secrets whose version changed (inline in the manifest, else one read
//! each), hand them to the [`Node`], remove what was unpublished, keep what
//! was applied (`applied.json`), back off on failures; then the identity
//! refresh (`identity`) and the node report (`report`). What the store says
//! is untrusted: names are checked, items carrying a placement refused.
//! Never logs a value, token or secret_id.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::fleet::{self, Bundle, Manifest, NodeReport};
use common::fsutil::{atomic_write, read_optional};
use common::openbao::{self, Kv};
use common::wire::{Status, SyncItem};
use common::{SecretText, SecretValue};
use serde::Deserialize;

use super::creds::{self, CredFiles, Token};
use super::metrics::Metrics;
use super::node::Node;
use super::schedule::{self, backoff, jitter, next_wait};
use super::{identity, join_errors, now_unix, store, Applied, PullError};

/// What a poll loop is started with: the bundle and this node's names.
pub(crate) struct Setup {
    pub(crate) bundle: Bundle,
    /// Where the bundle was read (named in errors).
    pub(crate) bundle_path: PathBuf,
    /// The key of this node's reports.
    pub(crate) node_id: String,
    pub(crate) hostname: String,
}

/// The poll loop of one node: its bundle and store client, its token, what
/// it applied, and what it last reported. Drives a [`Node`]; never asks
/// which one.
pub(crate) struct Puller<N: Node> {
    pub(super) metrics: Arc<Metrics>,
    /// Where what is pulled goes.
    pub(super) node: N,
    pub(super) bundle: Bundle,
    pub(super) bundle_path: PathBuf,
    pub(super) client: openbao::Client,
    pub(super) secret_id: Option<SecretText>,
    pub(super) token: Option<Token>,
    pub(super) applied: Applied,
    pub(super) last_error: Option<String>,
    /// What the last report written said, and when it was written.
    pub(super) reported: Option<(NodeReport, Instant)>,
    /// Report writes failed in a row, and when the next may be tried: a
    /// store too busy to take writes (every report is a Raft write on the
    /// active node) is not asked again on every poll by every node.
    pub(super) report_failures: u32,
    pub(super) report_retry_at: Option<Instant>,
    pub(super) node_id: String,
    pub(super) hostname: String,
    pub(super) poll: Duration,
    /// The configured heartbeat; the one used is [`Puller::heartbeat`].
    pub(super) heartbeat: Duration,
    /// The heartbeat the last manifest asked for (seconds, 0: none).
    pub(super) heartbeat_hint: u64,
    pub(super) failures: u32,
    /// Whether a manifest was fully applied since start.
    pub(super) synced: bool,
    /// Workload identity: tokens fetched on the poll when due.
    pub(super) identity: identity::Refresher,
    /// The manifest's `federation` mark last seen (0: none).
    pub(super) federation_seen: u64,
}

impl<N: Node> Puller<N> {
    /// A poller for `node`, polling every `poll`, reporting at least every
    /// `heartbeat` (a manifest or the bundle may lengthen it), counting in
    /// `metrics`, refreshing `identity`: its store client, and the token
    /// and what it applied kept by an earlier run of this node.
    pub(crate) fn new(
        node: N,
        setup: Setup,
        (poll, heartbeat): (Duration, Duration),
        metrics: Arc<Metrics>,
        identity: identity::Refresher,
    ) -> Result<Self, PullError> {
        let client = store::client_for(&setup.bundle, poll)?;
        let token = node.creds().and_then(CredFiles::load_token);
        let applied = match node.pull_dir() {
            Some(dir) => read_optional(&dir.join("applied.json"))?
                .and_then(|t| serde_json::from_str(t.expose_secret()).ok())
                .unwrap_or_default(),
            None => Applied::default(),
        };
        Ok(Self {
            node,
            metrics,
            bundle: setup.bundle,
            bundle_path: setup.bundle_path,
            client,
            secret_id: None,
            token,
            applied,
            last_error: None,
            reported: None,
            report_failures: 0,
            report_retry_at: None,
            node_id: setup.node_id,
            hostname: setup.hostname,
            poll,
            heartbeat,
            heartbeat_hint: 0,
            failures: 0,
            synced: false,
            identity,
            federation_seen: 0,
        })
    }

    /// The first polls: until one succeeds (or `wait` passes); an error no
    /// retry fixes is returned. Boot logins of nodes started together are
    /// spread by a random delay (uniform within the bundle's boot spread
    /// when it has one and this node holds no valid token, else within
    /// half a second) and by the jittered backoff. The delay counts in `wait`.
    pub(super) async fn boot(&mut self, wait: Duration) -> Result<(), PullError> {
        self.metrics.pull_enabled.store(1, Ordering::Relaxed);
        let deadline = Instant::now() + wait;
        let has_token = self.token.as_ref().is_some_and(|t| !t.is_due(now_unix()));
        let delay = schedule::boot_delay(self.poll, self.bundle.boot_spread_secs, has_token);
        tokio::time::sleep(delay).await;
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

    pub(super) async fn run(mut self) {
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
        self.metrics
            .store_requests
            .store(self.client.requests(), Ordering::Relaxed);
        result
    }

    /// A valid token: the kept one, else a fresh login (unwrapping the
    /// bundle first when this node never did).
    pub(super) async fn token(&mut self) -> Result<Token, PullError> {
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
                    self.node.creds(),
                    &self.client,
                )
                .await?,
            );
        }
        let sid = self.secret_id.as_ref().expect("set above");
        let token = creds::login(&self.bundle, sid, &self.client).await?;
        Metrics::inc(&self.metrics.logins);
        if let Some(files) = self.node.creds() {
            if let Err(e) = files.save_token(&token) {
                tracing::warn!(error = %e, "cannot keep the token in the state dir");
            }
        }
        self.token = Some(token.clone());
        Ok(token)
    }

    /// Read a KV document with the token (its version and data, `None`
    /// when absent); on 403 log in again once (the token may have expired
    /// early or been revoked).
    pub(super) async fn read(
        &mut self,
        path: &str,
        version: Option<u64>,
    ) -> Result<Option<(u64, SecretValue)>, PullError> {
        let mut relogged = false;
        loop {
            let token = self.token().await?;
            let kv = Kv::new(&self.client, token.expose_secret(), &self.bundle.mount);
            match kv.read::<SecretValue>(path, version).await {
                Err(openbao::Error::Forbidden { .. }) if !relogged => {
                    relogged = true;
                    self.forget_token();
                }
                Err(e) => return Err(e.into()),
                Ok(read) => return Ok(read.data.map(|d| (read.version, d))),
            }
        }
    }

    /// Drop the token (refused): the next call logs in again.
    pub(super) fn forget_token(&mut self) {
        self.token = None;
        if let Some(files) = self.node.creds() {
            files.drop_token();
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
            Some((_, data)) => fleet::parse_manifest(data.expose_secret()).map_err(|e| {
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
                Ok(Some((_, data))) => match published_item(&entry.name, &data) {
                    Some(item) => items.push((item, entry.kv_version)),
                    None => errors.push(format!("{}: not a published secret", entry.name)),
                },
                Err(e) if e.is_fatal() => return Err(e),
                Err(
                    e @ (PullError::LoginRefused(_)
                    | PullError::Store(openbao::Error::Unreachable { .. })),
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
            if let Err(reason) = self.node.remove(&name).await {
                errors.push(format!("{name}: cannot remove: {reason}"));
                continue;
            }
            tracing::info!(secret = %name, "unpublished: removed");
            self.applied.secrets.remove(&name);
        }
        let versions: BTreeMap<String, u64> = items
            .iter()
            .map(|(i, v)| (i.secret.name.clone(), *v))
            .collect();
        let items = items.into_iter().map(|(i, _)| i).collect();
        let results = self.node.apply(items, &self.applied.secrets).await?;
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
        if let Some(dir) = self.node.pull_dir() {
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
}
