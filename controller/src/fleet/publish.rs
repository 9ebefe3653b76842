//! Publishing a pull cluster's desired state and reading its nodes' reports.
//! A publish writes each changed secret to `secrets/<name>` (a new KV
//! version), then the manifest with check-and-set on the version it read,
//! so two publishers never lose each other's change (a lost race is retried
//! from a fresh read). Unchanged secrets (same keyed fingerprint) are not
//! rewritten and an unchanged set does not bump the manifest. Unpublish
//! drops the entry (nodes then remove what it installed) and destroys the
//! secret. Nothing here logs a value; fingerprints are HMACs under the
//! cluster's key (`~/.rh/clusters/NAME.key`). The manifest carries the items
//! its own publish changed while they fit in [`fleet::INLINE_BUDGET_BYTES`]
//! (in the order given), so nodes apply them without a second read; every
//! publish and unpublish drops the previous ones.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::fingerprint::fingerprint;
use common::fleet::{self, InlineItem, Manifest, ManifestEntry, NodeReport};
use common::wire::SyncItem;
use common::{SecretText, SecretValue};
use futures_util::stream::{self, StreamExt};
use serde::Serialize;

use super::{now_secs, Store, Versioned};
use crate::vault::{now_rfc3339, VaultError};

/// Attempts of a publish that loses check-and-set races.
const CAS_ATTEMPTS: usize = 5;

/// What a publish did.
#[derive(Debug, Clone, Serialize)]
pub struct Published {
    /// The manifest version now in the store.
    pub version: u64,
    /// Secrets written (new or changed).
    pub changed: Vec<String>,
    /// Secrets already published with the same content.
    pub unchanged: Vec<String>,
}

/// The manifest of `cluster` (`None` before the first publish).
pub async fn manifest(
    store: &Store,
    cluster: &str,
) -> Result<Option<Versioned<Manifest>>, VaultError> {
    store
        .kv_read(&fleet::manifest_path(&store.config.prefix, cluster))
        .await
}

/// The keyed fingerprint of a published item (its canonical JSON).
fn item_fingerprint(key: &[u8], item: &SyncItem) -> String {
    let text = SecretText::new(serde_json::to_string(item).expect("item serializes"));
    fingerprint(key, text.expose_secret().as_bytes())
}

/// `item` to carry inline in the manifest when its JSON fits in what is
/// left of `budget` (which it then uses up).
fn inline_within(budget: &mut usize, item: &SyncItem) -> Option<InlineItem> {
    let value = serde_json::to_value(item).expect("item serializes");
    let len = ByteCount::of(&value);
    let value = SecretValue::new(value);
    if len > *budget {
        return None;
    }
    *budget -= len;
    Some(InlineItem(value))
}

/// Counts the bytes of a value's JSON without keeping the text (it holds
/// secret values).
struct ByteCount(usize);

impl ByteCount {
    fn of(value: &serde_json::Value) -> usize {
        let mut count = ByteCount(0);
        serde_json::to_writer(&mut count, value).expect("a JSON value serializes");
        count.0
    }
}

impl std::io::Write for ByteCount {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Size the manifest's report spread and heartbeat to the cluster's current
/// fleet (its node reports counted with one LIST; none when they cannot be
/// listed).
async fn size_to_fleet(store: &Store, cluster: &str, doc: &mut Manifest) {
    let base = fleet::cluster_base(&store.config.prefix, cluster);
    let nodes = store
        .kv_list(&format!("{base}/nodes"))
        .await
        .map_or(0, |ids| ids.len() as u64);
    doc.report_spread_secs = fleet::report_spread_secs(nodes);
    doc.heartbeat_secs = fleet::heartbeat_secs(nodes);
}

/// Publish `items` (added to, or replacing entries of, what is published).
pub async fn publish(
    store: &Store,
    cluster: &str,
    key: &[u8],
    items: &[SyncItem],
) -> Result<Published, VaultError> {
    let prefix = &store.config.prefix;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let current = manifest(store, cluster).await?;
        let cas = current.as_ref().map_or(0, |m| m.version);
        let mut doc = current.map(|m| m.data).unwrap_or_default();
        // Inline items belong to the publish that changed them.
        let mut budget = fleet::INLINE_BUDGET_BYTES;
        for e in &mut doc.secrets {
            e.inline = None;
        }
        let mut out = Published {
            version: doc.version,
            changed: vec![],
            unchanged: vec![],
        };
        for item in items {
            let name = &item.secret.name;
            let fp = item_fingerprint(key, item);
            if doc
                .secrets
                .iter()
                .any(|e| &e.name == name && e.fingerprint == fp)
            {
                out.unchanged.push(name.clone());
                continue;
            }
            let kv_version = store
                .kv_write(&fleet::secret_path(prefix, cluster, name), item, None)
                .await?;
            doc.secrets.retain(|e| &e.name != name);
            doc.secrets.push(ManifestEntry {
                name: name.clone(),
                kv_version,
                fingerprint: fp,
                inline: inline_within(&mut budget, item),
            });
            out.changed.push(name.clone());
        }
        if out.changed.is_empty() {
            return Ok(out);
        }
        doc.secrets.sort_by(|a, b| a.name.cmp(&b.name));
        doc.version += 1;
        doc.published_at = now_rfc3339();
        size_to_fleet(store, cluster, &mut doc).await;
        match store
            .kv_write(&fleet::manifest_path(prefix, cluster), &doc, Some(cas))
            .await
        {
            Ok(_) => {
                out.version = doc.version;
                return Ok(out);
            }
            Err(VaultError::CasMismatch { .. }) if attempt < CAS_ATTEMPTS => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Unpublish `name`; the new manifest version, or `None` when it was not published.
pub async fn unpublish(
    store: &Store,
    cluster: &str,
    name: &str,
) -> Result<Option<u64>, VaultError> {
    let prefix = &store.config.prefix;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let Some(current) = manifest(store, cluster).await? else {
            return Ok(None);
        };
        let mut doc = current.data;
        if !doc.secrets.iter().any(|e| e.name == name) {
            return Ok(None);
        }
        for e in &mut doc.secrets {
            e.inline = None;
        }
        doc.secrets.retain(|e| e.name != name);
        doc.version += 1;
        doc.published_at = now_rfc3339();
        size_to_fleet(store, cluster, &mut doc).await;
        match store
            .kv_write(
                &fleet::manifest_path(prefix, cluster),
                &doc,
                Some(current.version),
            )
            .await
        {
            Ok(_) => {
                store
                    .kv_destroy(&fleet::secret_path(prefix, cluster, name))
                    .await?;
                return Ok(Some(doc.version));
            }
            Err(VaultError::CasMismatch { .. }) if attempt < CAS_ATTEMPTS => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Node report reads in flight at once (`status`, `sync --wait`): enough to
/// hide the round trip, few enough not to queue on a store that also serves
/// the fleet's polls.
pub const REPORT_READS: usize = 16;

/// The node ids that have a report in the cluster (one LIST).
async fn node_ids(store: &Store, cluster: &str) -> Result<Vec<String>, VaultError> {
    store
        .kv_list(&format!(
            "{}/nodes",
            fleet::cluster_base(&store.config.prefix, cluster)
        ))
        .await
}

/// The reports of `ids` with the id each was read under, read with at most
/// [`REPORT_READS`] reads in flight, in no order; a report deleted meanwhile
/// is left out.
async fn read_reports(
    store: &Store,
    cluster: &str,
    ids: Vec<String>,
) -> Result<Vec<(String, NodeReport)>, VaultError> {
    let prefix = &store.config.prefix;
    let mut reads = stream::iter(ids)
        .map(|id| async move {
            let read = store
                .kv_read::<NodeReport>(&fleet::report_path(prefix, cluster, &id))
                .await;
            (id, read)
        })
        .buffer_unordered(REPORT_READS);
    let mut out = Vec::new();
    while let Some((id, read)) = reads.next().await {
        if let Some(r) = read? {
            out.push((id, r.data));
        }
    }
    Ok(out)
}

/// Every node report of the cluster, sorted by node id: one LIST, then the
/// reports read [`REPORT_READS`] at a time.
pub async fn reports(store: &Store, cluster: &str) -> Result<Vec<NodeReport>, VaultError> {
    let ids = node_ids(store, cluster).await?;
    let mut out: Vec<NodeReport> = read_reports(store, cluster, ids)
        .await?
        .into_iter()
        .map(|(_, r)| r)
        .collect();
    out.sort_by(|a, b| a.node_id.cmp(&b.node_id));
    Ok(out)
}

/// Whether a live node has applied `version` (or later).
pub fn converged(report: &NodeReport, version: u64) -> bool {
    report.applied_version >= version
}

/// First and longest pause between two rounds of [`wait_for`]: it doubles
/// from the first to the longest while nodes are still behind.
const WAIT_FIRST: Duration = Duration::from_millis(250);
const WAIT_LONGEST: Duration = Duration::from_secs(2);

/// Poll the reports until every live node has applied `version`, or `wait`
/// runs out. Returns the last reports read (live ones only), sorted by node
/// id. Each round LISTs the node ids (a node may report for the first time)
/// and rereads only the reports not yet at `version` (a report at `version`
/// stays so: a node applies versions in order), so a fleet that converges
/// costs each node's report about one read after it converged, not one per
/// round; rounds back off from 250 ms to 2 s.
pub async fn wait_for(
    store: &Store,
    cluster: &str,
    version: u64,
    wait: Duration,
) -> Result<Vec<NodeReport>, VaultError> {
    let deadline = Instant::now() + wait;
    let mut known: BTreeMap<String, NodeReport> = BTreeMap::new();
    let mut pause = WAIT_FIRST;
    loop {
        let ids = node_ids(store, cluster).await?;
        let stale: Vec<String> = ids
            .iter()
            .filter(|id| known.get(*id).is_none_or(|r| !converged(r, version)))
            .cloned()
            .collect();
        known.extend(read_reports(store, cluster, stale).await?);
        let listed: BTreeSet<&String> = ids.iter().collect();
        known.retain(|id, _| listed.contains(id));
        let now = now_secs();
        let mut live: Vec<NodeReport> =
            known.values().filter(|r| r.is_live(now)).cloned().collect();
        live.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        if live.iter().all(|r| converged(r, version)) || Instant::now() >= deadline {
            return Ok(live);
        }
        tokio::time::sleep(pause.min(deadline.saturating_duration_since(Instant::now()))).await;
        pause = (pause * 2).min(WAIT_LONGEST);
    }
}
