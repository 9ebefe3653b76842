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
//!
//! Nodes refuse a manifest older than the one they applied, by
//! `(epoch, version)` inside the document: `version` is raised past both
//! the last document's and the KV version it is written over (a re-put of
//! an old document gets a newer KV version but keeps its old serial), and
//! `epoch` is set when the manifest is first written and raised only by an
//! explicit `--new-epoch`. A manifest whose current version was deleted is
//! published over (check-and-set on the metadata's current version) from
//! its latest readable version. Unpublishing destroys a secret's data but
//! keeps its metadata, so a later publish of the name gets a higher KV
//! version. Items over [`fleet::MAX_ITEM_BYTES`] and manifests over
//! [`fleet::MAX_MANIFEST_ENTRIES`] are refused before anything is written.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::fingerprint::fingerprint;
use common::fleet::{self, InlineItem, Manifest, ManifestEntry};
use common::wire::SyncItem;
use common::{SecretText, SecretValue};
use futures_util::stream::{self, StreamExt};
use serde::Serialize;

use super::nodes::{Registry, ReportRow};
use super::{now_secs, Store, Versioned};
use crate::vault::{now_rfc3339, VaultError};

/// Attempts of a publish that loses check-and-set races.
const CAS_ATTEMPTS: usize = 5;

/// Why a publish or unpublish did not happen. Names secrets and the
/// cluster, never a value.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(transparent)]
    Store(#[from] VaultError),
    #[error(
        "{name} is {bytes} bytes as published, over the {max} a node reads: not published \
         (nothing was written)",
        max = fleet::MAX_ITEM_BYTES
    )]
    ItemTooLarge { name: String, bytes: usize },
    #[error(
        "cluster {cluster} would publish {count} secrets, more than {max} per manifest: not \
         published (nothing was written)",
        max = fleet::MAX_MANIFEST_ENTRIES
    )]
    TooManyEntries { cluster: String, count: usize },
    #[error(
        "the manifest of cluster {cluster} has no readable version left (deleted or destroyed \
         in the store), so its epoch is lost: nodes refuse a manifest older than the one they \
         applied; publish with `controller sync --cluster {cluster} --new-epoch`"
    )]
    EpochLost { cluster: String },
    #[error("another publish to cluster {cluster} kept winning the check-and-set race; try again")]
    Raced { cluster: String },
}

/// How to publish.
#[derive(Debug, Clone, Copy, Default)]
pub struct PublishOpts {
    /// Start a new epoch: nodes take this manifest even if they applied a
    /// higher version before (a store restored from a backup, a manifest
    /// whose history was destroyed).
    pub new_epoch: bool,
}

/// What a publish did.
#[derive(Debug, Clone, Serialize)]
pub struct Published {
    /// The manifest's epoch.
    pub epoch: u64,
    /// The manifest version now in the store.
    pub version: u64,
    /// Secrets written (new or changed).
    pub changed: Vec<String>,
    /// Secrets already published with the same content.
    pub unchanged: Vec<String>,
}

/// The manifest of `cluster` (`None` before the first publish, or when
/// its current version was deleted).
pub async fn manifest(
    store: &Store,
    cluster: &str,
) -> Result<Option<Versioned<Manifest>>, VaultError> {
    store
        .kv_read(&fleet::manifest_path(&store.config.prefix, cluster))
        .await
}

/// The manifest a publish starts from.
struct Base {
    doc: Manifest,
    /// Check-and-set: the metadata's current version (0: none yet).
    cas: u64,
    /// Whether `doc` is the current version (else recovered from an older
    /// readable one, or empty).
    current: bool,
    /// No version of it was ever written (or its metadata is gone).
    fresh: bool,
}

/// The current manifest, or, when its current version was deleted or is
/// not a manifest (a store writer's doing), its latest earlier version that
/// is one (undeleted first when it was deleted: the secret set and the
/// epoch live in it), with check-and-set on the metadata's current
/// version, so the owner publishes again without `--overwrite`; empty
/// when no version is left.
async fn base(store: &Store, cluster: &str) -> Result<Base, VaultError> {
    let path = fleet::manifest_path(&store.config.prefix, cluster);
    let garbled = match store.kv_read::<Manifest>(&path).await {
        Ok(Some(m)) => {
            return Ok(Base {
                cas: m.version,
                doc: m.data,
                current: true,
                fresh: false,
            })
        }
        Ok(None) => false,
        Err(VaultError::Decode { .. }) => true,
        Err(e) => return Err(e),
    };
    let Some(meta) = store.kv_metadata(&path).await? else {
        return Ok(Base {
            doc: Manifest::default(),
            cas: 0,
            current: false,
            fresh: true,
        });
    };
    let mut candidates: Vec<u64> = meta.readable.iter().chain(&meta.deleted).copied().collect();
    candidates.sort_unstable_by(|a, b| b.cmp(a));
    let mut doc = None;
    for v in candidates {
        if garbled && v == meta.current {
            continue;
        }
        if meta.deleted.contains(&v) {
            store.kv_undelete(&path, v).await?;
        }
        match store.kv_read_at::<Manifest>(&path, Some(v)).await {
            Ok(Some(m)) => {
                doc = Some(m.data);
                break;
            }
            Ok(None) | Err(VaultError::Decode { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(Base {
        fresh: false,
        current: false,
        cas: meta.current,
        doc: doc.unwrap_or_default(),
    })
}

impl Base {
    /// Stamp the document for writing: this format, a serial above both
    /// the last one and the KV version it goes over, the epoch kept (set
    /// when first written; raised with `new_epoch`).
    fn stamp(&mut self, cluster: &str, opts: PublishOpts) -> Result<(), PublishError> {
        let doc = &mut self.doc;
        if opts.new_epoch {
            doc.epoch = now_secs().max(doc.epoch + 1);
        } else if self.fresh {
            doc.epoch = now_secs();
        } else if !self.current && doc.version == 0 {
            return Err(PublishError::EpochLost {
                cluster: cluster.to_owned(),
            });
        }
        doc.format = fleet::MANIFEST_FORMAT;
        doc.version = doc.version.max(self.cas) + 1;
        doc.published_at = now_rfc3339();
        Ok(())
    }
}

/// Refuse what no node could apply, before anything is written: an item
/// over [`fleet::MAX_ITEM_BYTES`], a manifest over
/// [`fleet::MAX_MANIFEST_ENTRIES`].
fn check_limits(cluster: &str, doc: &Manifest, items: &[SyncItem]) -> Result<(), PublishError> {
    for item in items {
        let bytes = ByteCount::of(&serde_json::to_value(item).expect("item serializes"));
        if bytes > fleet::MAX_ITEM_BYTES {
            return Err(PublishError::ItemTooLarge {
                name: item.secret.name.clone(),
                bytes,
            });
        }
    }
    let names: BTreeSet<&str> = doc
        .secrets
        .iter()
        .map(|e| e.name.as_str())
        .chain(items.iter().map(|i| i.secret.name.as_str()))
        .collect();
    if names.len() > fleet::MAX_MANIFEST_ENTRIES {
        return Err(PublishError::TooManyEntries {
            cluster: cluster.to_owned(),
            count: names.len(),
        });
    }
    Ok(())
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
    opts: PublishOpts,
) -> Result<Published, PublishError> {
    let prefix = &store.config.prefix;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut base = base(store, cluster).await?;
        check_limits(cluster, &base.doc, items)?;
        let doc = &mut base.doc;
        // Inline items belong to the publish that changed them.
        let mut budget = fleet::INLINE_BUDGET_BYTES;
        for e in &mut doc.secrets {
            e.inline = None;
        }
        let mut out = Published {
            epoch: doc.epoch,
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
        // Written also when nothing changed but the current document is
        // not one nodes take (deleted, an older controller's, no epoch
        // yet) or a new epoch was asked for.
        let takeable = base.current && doc.format == fleet::MANIFEST_FORMAT;
        if out.changed.is_empty() && takeable && !opts.new_epoch {
            return Ok(out);
        }
        doc.secrets.sort_by(|a, b| a.name.cmp(&b.name));
        base.stamp(cluster, opts)?;
        let doc = &mut base.doc;
        size_to_fleet(store, cluster, doc).await;
        match store
            .kv_write(&fleet::manifest_path(prefix, cluster), doc, Some(base.cas))
            .await
        {
            Ok(_) => {
                out.version = doc.version;
                out.epoch = doc.epoch;
                return Ok(out);
            }
            Err(VaultError::CasMismatch { .. }) if attempt < CAS_ATTEMPTS => continue,
            Err(VaultError::CasMismatch { .. }) => {
                return Err(PublishError::Raced {
                    cluster: cluster.to_owned(),
                })
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Unpublish `name`; the new manifest version, or `None` when it was not published.
pub async fn unpublish(
    store: &Store,
    cluster: &str,
    name: &str,
) -> Result<Option<u64>, PublishError> {
    let version = rewrite(store, cluster, |doc| {
        if !doc.secrets.iter().any(|e| e.name == name) {
            return false;
        }
        doc.secrets.retain(|e| e.name != name);
        true
    })
    .await?;
    if version.is_some() {
        // The data goes; the metadata (its version counter) stays.
        let prefix = &store.config.prefix;
        store
            .kv_destroy_versions(&fleet::secret_path(prefix, cluster, name))
            .await?;
    }
    Ok(version)
}

/// Mark the manifest with the KV version of the cluster's federation
/// document (`Manifest::federation`), so nodes read that document on their
/// next poll; the new manifest version, or `None` when it already said so.
pub async fn mark_federation(
    store: &Store,
    cluster: &str,
    federation: u64,
) -> Result<Option<u64>, PublishError> {
    rewrite(store, cluster, |doc| {
        let changed = doc.federation != federation;
        doc.federation = federation;
        changed
    })
    .await
}

/// Write a new manifest version made by `edit` from the current one (its
/// inline items dropped: they belong to the publish that changed them),
/// with check-and-set, again from the new current one on a race; `None`
/// (nothing written) when `edit` says nothing changed.
async fn rewrite(
    store: &Store,
    cluster: &str,
    mut edit: impl FnMut(&mut Manifest) -> bool,
) -> Result<Option<u64>, PublishError> {
    let prefix = &store.config.prefix;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut base = base(store, cluster).await?;
        if !edit(&mut base.doc) {
            return Ok(None);
        }
        for e in &mut base.doc.secrets {
            e.inline = None;
        }
        base.stamp(cluster, PublishOpts::default())?;
        let doc = &mut base.doc;
        size_to_fleet(store, cluster, doc).await;
        match store
            .kv_write(&fleet::manifest_path(prefix, cluster), doc, Some(base.cas))
            .await
        {
            Ok(_) => return Ok(Some(doc.version)),
            Err(VaultError::CasMismatch { .. }) if attempt < CAS_ATTEMPTS => continue,
            Err(VaultError::CasMismatch { .. }) => {
                return Err(PublishError::Raced {
                    cluster: cluster.to_owned(),
                })
            }
            Err(e) => return Err(e.into()),
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

/// The reports of `ids`, read with at most [`REPORT_READS`] reads in
/// flight, in no order, classified by `registry` (a document that is not a
/// report is a row of its own); a report deleted meanwhile is left out.
async fn read_reports(
    store: &Store,
    cluster: &str,
    registry: &Registry,
    ids: Vec<String>,
) -> Result<Vec<ReportRow>, VaultError> {
    let prefix = &store.config.prefix;
    let mut reads = stream::iter(ids)
        .map(|id| async move {
            let path = fleet::report_path(prefix, cluster, &id);
            let read = store.kv_read::<serde_json::Value>(&path).await;
            (id, read)
        })
        .buffer_unordered(REPORT_READS);
    let mut out = Vec::new();
    while let Some((id, read)) = reads.next().await {
        match read {
            Ok(Some(r)) => out.push(registry.row(id, Some(r.data))),
            Ok(None) => {}
            // Any node token can write a report: one that is not JSON
            // is that report's problem, not the whole listing's.
            Err(VaultError::Decode { .. }) => out.push(registry.row(id, None)),
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// Delete the reports written under the bundles `bundle_ids` (report ids
/// `<node-id>.<bundle-id>`): a node enrolled or bootstrapped again reports
/// under its new bundle, so its old row would stay behind. One LIST, then
/// one delete per report; returns how many went.
pub async fn forget_reports(
    store: &Store,
    cluster: &str,
    bundle_ids: &[String],
) -> Result<usize, VaultError> {
    if bundle_ids.is_empty() {
        return Ok(0);
    }
    let prefix = &store.config.prefix;
    let mut gone = 0;
    for id in node_ids(store, cluster).await? {
        let Some((_, bundle)) = id.rsplit_once('.') else {
            continue;
        };
        if bundle_ids.iter().any(|b| b == bundle) {
            store
                .kv_destroy(&fleet::report_path(prefix, cluster, &id))
                .await?;
            gone += 1;
        }
    }
    Ok(gone)
}

/// Every node report of the cluster, sorted by report id: one LIST, then
/// the reports read [`REPORT_READS`] at a time.
pub async fn reports(
    store: &Store,
    cluster: &str,
    registry: &Registry,
) -> Result<Vec<ReportRow>, VaultError> {
    let ids = node_ids(store, cluster).await?;
    let mut out = read_reports(store, cluster, registry, ids).await?;
    out.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(out)
}

/// First and longest pause between two rounds of [`wait_for`]: it doubles
/// from the first to the longest while nodes are still behind.
const WAIT_FIRST: Duration = Duration::from_millis(250);
const WAIT_LONGEST: Duration = Duration::from_secs(2);

/// Poll the reports until every node that counts (live, not revoked; a
/// forged or unreadable report always counts, as not converged) has
/// applied `target` (epoch, version), or `wait` runs out. Returns the last
/// rows read that count, sorted by report id. Each round LISTs the report
/// ids (a node may report for the first time) and rereads only the reports
/// not yet at `target` (a report at `target` stays so: a node applies
/// versions in order), so a fleet that converges costs each node's report
/// about one read after it converged, not one per round; rounds back off
/// from 250 ms to 2 s.
pub async fn wait_for(
    store: &Store,
    cluster: &str,
    registry: &Registry,
    target: (u64, u64),
    wait: Duration,
) -> Result<Vec<ReportRow>, VaultError> {
    let deadline = Instant::now() + wait;
    let mut known: BTreeMap<String, ReportRow> = BTreeMap::new();
    let mut pause = WAIT_FIRST;
    loop {
        let ids = node_ids(store, cluster).await?;
        let stale: Vec<String> = ids
            .iter()
            .filter(|id| known.get(*id).is_none_or(|r| !r.converged(target)))
            .cloned()
            .collect();
        for row in read_reports(store, cluster, registry, stale).await? {
            known.insert(row.id.clone(), row);
        }
        let listed: BTreeSet<&String> = ids.iter().collect();
        known.retain(|id, _| listed.contains(id));
        let now = now_secs();
        let counted: Vec<ReportRow> = known.values().filter(|r| r.counts(now)).cloned().collect();
        if counted.iter().all(|r| r.converged(target)) || Instant::now() >= deadline {
            return Ok(counted);
        }
        tokio::time::sleep(pause.min(deadline.saturating_duration_since(Instant::now()))).await;
        pause = (pause * 2).min(WAIT_LONGEST);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::secret_value::values_from;
    use common::Secret;

    fn item(name: &str, value: &str) -> SyncItem {
        let secret = Secret::base(name, values_from([("k", value)]));
        SyncItem {
            secret,
            path: Some(format!("~/.cfg/{name}")),
            env: None,
            placement: None,
            session: None,
        }
    }

    #[test]
    fn what_no_node_could_apply_is_refused_before_anything_is_written() {
        let entry = |i: usize| ManifestEntry {
            name: format!("s{i}"),
            kv_version: 1,
            fingerprint: "f".into(),
            inline: None,
        };
        let full = Manifest {
            secrets: (0..fleet::MAX_MANIFEST_ENTRIES).map(entry).collect(),
            ..Default::default()
        };
        // Replacing a published one is fine; one more is not.
        assert!(check_limits("gpu", &full, &[item("s0", "v")]).is_ok());
        let err = check_limits("gpu", &full, &[item("one-more", "v")]).unwrap_err();
        assert!(
            matches!(err, PublishError::TooManyEntries { count, .. } if count == fleet::MAX_MANIFEST_ENTRIES + 1)
        );
        let big = "x".repeat(fleet::MAX_ITEM_BYTES);
        let err = check_limits("gpu", &Manifest::default(), &[item("big", &big)]).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("big") && text.contains("nothing was written"),
            "{text}"
        );
        assert!(!text.contains(&big[..64]));
    }
}
