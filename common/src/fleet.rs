//! Fleet mode, shared by the controller (which publishes and enrolls) and the
//! agent (which pulls): the store layout of a pull cluster, the node bundle,
//! the manifest and the per-node report. Nodes read a cluster's desired state
//! from the remote store (Vault KV v2 / OpenBao) instead of being pushed to.
//!
//! Layout under the KV v2 mount (`<prefix>` is the user's store prefix,
//! `rh/<user>` by default; `<base>` is `<prefix>/clusters/<cluster>`):
//!
//! - `<mount>/data/<base>/manifest`: one small document ([`Manifest`]) whose
//!   `version` changes on every publish: a poll is one read of it. It also
//!   carries the small items its own publish changed
//!   ([`ManifestEntry::inline`]), so a publish costs a node no second read.
//! - `<mount>/data/<base>/secrets/<name>`: one published secret (a
//!   `wire::SyncItem`: the secret with its values, path and env).
//! - `<mount>/data/<base>/nodes/<node-id>`: one node's [`NodeReport`].
//!
//! A node's token may read the manifest and `secrets/*` of its own cluster
//! and write `nodes/*` of its own cluster, nothing else (not the user's own
//! secrets under `<prefix>/<name>`, not another cluster).
//! The types holding credentials ([`Bundle`]) implement `Debug` by hand,
//! without them; manifests and reports hold names, versions and keyed
//! fingerprints, and inline items whose `Debug` shows no value.
//!
//! What a node reads from the store is untrusted: [`parse_manifest`] takes
//! only a well-formed manifest of this format (its marker, version and
//! secret list present, at most [`MAX_MANIFEST_ENTRIES`] entries), and
//! [`Manifest::stamp`] orders manifests so a node refuses one older than
//! what it applied (no rollback). A node whose bundle carries a report key
//! signs its report ([`sign_report`]) under `nodes/<node-id>.<bundle-id>`,
//! and the controller checks it ([`verify_report`]) with the key it derived
//! that bundle's from ([`bundle_report_key`]).

use std::fmt;

use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::Sha256;
use thiserror::Error;

use crate::secret_value::{SecretText, SecretValue};

/// Default poll interval of a pulling agent, in seconds.
pub const DEFAULT_POLL_SECS: u64 = 10;
/// Default heartbeat of a node report (written even when nothing changed).
pub const DEFAULT_HEARTBEAT_SECS: u64 = 300;

/// `<prefix>/clusters/<cluster>`: the cluster's base path under the mount.
pub fn cluster_base(prefix: &str, cluster: &str) -> String {
    format!("{prefix}/clusters/{cluster}")
}

/// The KV v2 data path of the manifest (without the mount).
pub fn manifest_path(prefix: &str, cluster: &str) -> String {
    format!("{}/manifest", cluster_base(prefix, cluster))
}

/// The KV v2 path of one published secret (without the mount).
pub fn secret_path(prefix: &str, cluster: &str, name: &str) -> String {
    format!("{}/secrets/{name}", cluster_base(prefix, cluster))
}

/// The KV v2 path of one node's report (without the mount).
pub fn report_path(prefix: &str, cluster: &str, node_id: &str) -> String {
    format!("{}/nodes/{node_id}", cluster_base(prefix, cluster))
}

/// The node bundle (`node-<i>.json`, mode 0600): what a node needs to log in
/// to the store as its cluster. Holds a secret (the wrapped secret_id, or the
/// secret_id itself for a reusable launch bundle): no derived `Debug`.
///
/// Forward compatible: fields added by a newer controller (within the same
/// [`BUNDLE_FORMAT`]) are kept in `unknown` by name only and ignored, so an
/// older agent still boots from a newer bundle; a change an older agent
/// cannot ignore bumps `format`, which such an agent refuses.
#[derive(Clone, Serialize, Deserialize)]
pub struct Bundle {
    /// Format version ([`BUNDLE_FORMAT`]).
    pub format: u32,
    pub cluster: String,
    /// Store node URLs; reads go to any of them.
    pub urls: Vec<String>,
    /// PEM CA certificate(s) of the store, when it uses a private CA.
    #[serde(default)]
    pub ca_pem: Option<String>,
    pub mount: String,
    pub prefix: String,
    /// The AppRole's login path under `auth/` (`approle`).
    pub auth_mount: String,
    pub role_id: String,
    /// A response-wrapping token around a fresh secret_id (per-node bundle):
    /// unwrapped once, at the node's first start.
    #[serde(default)]
    pub wrapped_secret_id: Option<SecretValue>,
    /// The secret_id itself (a reusable launch bundle: several logins, a TTL, CIDRs).
    #[serde(default)]
    pub secret_id: Option<SecretValue>,
    /// Seconds over which nodes booting together spread their first login
    /// ([`boot_spread_secs`] of the fleet size enroll or bootstrap was told;
    /// absent under [`BOOT_LOGINS_PER_SEC`] nodes). A node with a kept,
    /// valid token does not wait. Older agents refuse a bundle carrying it
    /// (agents before this field refused unknown fields; newer ones ignore
    /// them): upgrade agents before enrolling large fleets.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub boot_spread_secs: u64,
    /// Seconds over which nodes booting together spread the first report
    /// they write after applying ([`report_spread_secs`] of the fleet size;
    /// absent under 100 nodes): a fleet that logs in at
    /// [`BOOT_LOGINS_PER_SEC`] would otherwise report at that rate too, and
    /// a report costs the store far more than a login. The node uses the
    /// larger of this and the manifest's spread, capped by its heartbeat.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub report_spread_secs: u64,
    /// The heartbeat asked of nodes of a fleet this size
    /// ([`heartbeat_secs`]; absent up to 3,000 nodes), used until a
    /// manifest asks for more: a fleet enrolled and published before its
    /// nodes boot has a manifest sized to no nodes, and would otherwise
    /// heartbeat at the nodes' own 300 s (10,000 nodes: 33 report writes a
    /// second) until the next publish. The node takes the largest of its
    /// own, this and the manifest's, at most [`MAX_HEARTBEAT_SECS`].
    #[serde(default, skip_serializing_if = "is_zero")]
    pub heartbeat_secs: u64,
    /// The bundle's name on the controller that wrote it (`node-3`,
    /// `launch-1`, or the host a bootstrap sent it to): what
    /// `controller cluster revoke-node CLUSTER NAME` takes. Absent in
    /// bundles written before names were kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A random id of this bundle ([`is_bundle_id`]; not a secret): its
    /// node reports under `nodes/<node-id>.<bundle-id>`, so a report names
    /// the bundle to revoke.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundle_id: Option<String>,
    /// The key this bundle's node signs its reports with (hex; derived by
    /// the controller from the cluster's report key and `bundle_id`,
    /// [`bundle_report_key`]), so another node of the cluster cannot write
    /// a report that verifies as this one's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_key: Option<SecretValue>,
    /// Fields this build does not know, by name (their values are skipped,
    /// never kept: a future field may hold a credential).
    #[serde(flatten, skip_serializing)]
    pub unknown: std::collections::BTreeMap<String, serde::de::IgnoredAny>,
}

/// The bundle format this build writes and reads. Additive fields keep it;
/// only a change an older agent must not ignore bumps it.
pub const BUNDLE_FORMAT: u32 = 1;

impl fmt::Debug for Bundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bundle")
            .field("cluster", &self.cluster)
            .field("urls", &self.urls)
            .field("mount", &self.mount)
            .field("prefix", &self.prefix)
            .field("name", &self.name)
            .field("bundle_id", &self.bundle_id)
            .field("wrapped", &self.wrapped_secret_id.is_some())
            .field("reusable", &self.secret_id.is_some())
            .field("signs_reports", &self.report_key.is_some())
            .finish()
    }
}

/// One published secret in the manifest.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ManifestEntry {
    pub name: String,
    /// The KV v2 version of `secrets/<name>` to read.
    pub kv_version: u64,
    /// Keyed fingerprint (HMAC under the cluster's key) of what was published.
    pub fingerprint: String,
    /// The item at `kv_version` itself, when the publish that wrote this
    /// manifest changed it and the manifest's [`INLINE_BUDGET_BYTES`] had
    /// room: a node that was one publish behind applies it from the poll
    /// that sees it, with no second read (a read per node within one poll
    /// period is what a publish cost a large fleet's store). The next
    /// publish drops it. A node trusts it no more than `secrets/<name>`:
    /// the same checks, and one that fails them (or that it cannot parse) is
    /// read from `secrets/<name>` instead. Older agents ignore it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inline: Option<InlineItem>,
}

/// A published item carried in the manifest ([`ManifestEntry::inline`]),
/// kept as JSON and parsed by the node when it applies it, so an item it
/// cannot parse costs it one read of `secrets/<name>`, not the manifest.
/// Holds values, so it is a [`SecretValue`]: redacted in `Debug`, zeroed
/// when dropped (a node parses the manifest on every poll).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct InlineItem(pub SecretValue);

/// Bytes of items (their JSON) one manifest carries inline: what a typical
/// rotation changes (an API key is a few hundred bytes, a GCP service
/// account key about 2.3 KiB) while a poll, which reads the manifest until
/// the next publish, stays one small read. What does not fit is read from
/// `secrets/<name>` as before.
pub const INLINE_BUDGET_BYTES: usize = 4096;

/// The desired state of a pull cluster: small, read on every poll.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Manifest {
    /// The format marker ([`MANIFEST_FORMAT`]): a node applies only a
    /// manifest that carries it (see [`parse_manifest`]).
    #[serde(default)]
    pub format: u32,
    /// The publisher's epoch: set when the manifest is first written (the
    /// time, in seconds) and raised only by an explicit
    /// `controller sync --new-epoch`. Nodes order manifests by
    /// ([`Manifest::stamp`]) `(epoch, version)` and refuse an older one.
    #[serde(default)]
    pub epoch: u64,
    /// The publish serial, set by the controller inside the document:
    /// raised on every publish or unpublish, never lower than the KV
    /// version it is written at (so a re-put of an older document, whose
    /// KV version is newer, still carries its old serial).
    pub version: u64,
    /// When (UTC, RFC 3339).
    #[serde(default)]
    pub published_at: String,
    #[serde(default)]
    pub secrets: Vec<ManifestEntry>,
    /// Seconds over which the nodes spread the report they write after
    /// applying this version ([`report_spread_secs`] of the fleet's size
    /// when it was published; 0: report at once). Every report is a Raft
    /// write, replicated to every store node: ten thousand nodes reporting
    /// within one poll period bury the store.
    /// Untrusted on the node: capped by its heartbeat.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub report_spread_secs: u64,
    /// The heartbeat the publisher asks of the nodes, in seconds
    /// ([`heartbeat_secs`] of the fleet's size; 0: the node's own). A node
    /// takes the larger of this and its configured heartbeat, at most
    /// [`MAX_HEARTBEAT_SECS`]; its reports say which it used, so liveness
    /// (three heartbeats) follows. Untrusted on the node, as above.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub heartbeat_secs: u64,
    /// The KV version of the cluster's federation document as
    /// `controller cluster federate` last wrote it (0: never). A node seeing
    /// it change reads that document on the same poll, instead of at its
    /// next recheck of a cluster it thought unfederated: a cluster
    /// federated after its nodes booted gets tokens within a poll period.
    /// Untrusted on the node: it can only make that one read come sooner.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub federation: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The manifest format this build writes and reads.
pub const MANIFEST_FORMAT: u32 = 1;

/// Most secrets one manifest may list. A node reads each changed one, so
/// a manifest of 70,000 small entries (under the byte cap) cost a node
/// tens of thousands of reads per poll, again after every backoff: the
/// controller refuses to publish more, a node refuses a manifest with more
/// without reading any.
pub const MAX_MANIFEST_ENTRIES: usize = 10_000;

/// Largest published item (its JSON, values included). A node reads at
/// most 4 MiB per store answer; an item at most this size always fits
/// (with its KV envelope and JSON escapes), so the controller refuses a
/// larger one instead of publishing something no node can read.
pub const MAX_ITEM_BYTES: usize = 1024 * 1024;

impl Manifest {
    /// What orders manifests: `(epoch, version)`. A node refuses a manifest
    /// whose stamp is below the one it applied.
    pub fn stamp(&self) -> (u64, u64) {
        (self.epoch, self.version)
    }
}

/// Why a document read as a manifest is not applied. Names no value.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ManifestError {
    #[error("it is not a manifest a controller wrote ({0})")]
    Malformed(&'static str),
    #[error(
        "it has format {0} (this agent reads format {MANIFEST_FORMAT}): written by a newer \
         controller; upgrade this node's agent"
    )]
    NewerFormat(u64),
    #[error("it lists {0} secrets, more than {MAX_MANIFEST_ENTRIES}: none is read")]
    TooManyEntries(usize),
}

/// A manifest from the store, taken only when well formed: a JSON object
/// with `format` [`MANIFEST_FORMAT`], a `version` of at least 1 and a
/// `secrets` list of at most [`MAX_MANIFEST_ENTRIES`] entries. Anything
/// else (`{}`, a document some store writer put there, one an older
/// controller wrote without the marker) is an error: a node keeps what it
/// has. Only such a manifest with an empty `secrets` list unpublishes
/// everything.
pub fn parse_manifest(data: &Value) -> Result<Manifest, ManifestError> {
    let Some(doc) = data.as_object() else {
        return Err(ManifestError::Malformed("not a JSON object"));
    };
    match doc.get("format").and_then(Value::as_u64) {
        None => {
            return Err(ManifestError::Malformed(
                "no format marker: written by an older controller or by something else; \
                 publish again with this controller",
            ))
        }
        Some(f) if f > u64::from(MANIFEST_FORMAT) => return Err(ManifestError::NewerFormat(f)),
        Some(f) if f != u64::from(MANIFEST_FORMAT) => {
            return Err(ManifestError::Malformed("an unknown format"))
        }
        Some(_) => {}
    }
    if doc.get("version").and_then(Value::as_u64).unwrap_or(0) < 1 {
        return Err(ManifestError::Malformed("no version"));
    }
    let Some(secrets) = doc.get("secrets").and_then(Value::as_array) else {
        return Err(ManifestError::Malformed("no secret list"));
    };
    if secrets.len() > MAX_MANIFEST_ENTRIES {
        return Err(ManifestError::TooManyEntries(secrets.len()));
    }
    Manifest::deserialize(data).map_err(|_| ManifestError::Malformed("its fields do not parse"))
}

/// Report writes per second a fleet is spread to. A report is a Raft write:
/// on a three-node OpenBao each costs about 4 CPU-ms over the three nodes
/// (log append and state apply, each with an fsync, on every node;
/// scripts/bench.d/60-fleet.sh), so 40 a second is about 16% of a two-core
/// store, beside the polls.
pub const REPORT_WRITES_PER_SEC: u64 = 40;

/// Heartbeat report writes per second a fleet's steady state is held to
/// (10,000 nodes: a heartbeat of 1,000 s instead of 300).
pub const HEARTBEAT_WRITES_PER_SEC: u64 = 10;

/// The longest heartbeat a publisher may ask of the nodes.
pub const MAX_HEARTBEAT_SECS: u64 = 3600;

/// The longest report spread a publisher asks for.
pub const MAX_REPORT_SPREAD_SECS: u64 = 600;

/// The report spread for a fleet of `nodes`: 0 under a hundred nodes, then
/// one second per [`REPORT_WRITES_PER_SEC`] nodes, at most
/// [`MAX_REPORT_SPREAD_SECS`] (1,000 nodes: 25 s; 10,000: 250 s).
pub fn report_spread_secs(nodes: u64) -> u64 {
    if nodes < 100 {
        return 0;
    }
    (nodes / REPORT_WRITES_PER_SEC).min(MAX_REPORT_SPREAD_SECS)
}

/// The heartbeat a publisher asks of a fleet of `nodes`: 0 (the nodes' own,
/// 300 s by default) until that would exceed [`HEARTBEAT_WRITES_PER_SEC`],
/// then `nodes / HEARTBEAT_WRITES_PER_SEC` s, at most [`MAX_HEARTBEAT_SECS`].
pub fn heartbeat_secs(nodes: u64) -> u64 {
    let secs = nodes / HEARTBEAT_WRITES_PER_SEC;
    if secs <= DEFAULT_HEARTBEAT_SECS {
        0
    } else {
        secs.min(MAX_HEARTBEAT_SECS)
    }
}

/// First logins per second a fleet booting together is spread to. A booting
/// node costs the store a login, two reads and a report write (the login and
/// the write forwarded by standbys to the active node): 1,000 nodes booting
/// at 200 a second took 88% of one core from a three-node OpenBao pinned to
/// it (scripts/bench.d/60-fleet.sh, `FLEET_STORE_CPUS=0`); 100 a second
/// aims at half.
pub const BOOT_LOGINS_PER_SEC: u64 = 100;

/// The longest boot spread (a node waits at most this before its first
/// login; the agent's boot unit allows 120 s to start). Under a minute, so
/// the last node's login and apply still fit in one.
pub const MAX_BOOT_SPREAD_SECS: u64 = 50;

/// The boot spread for a fleet of `nodes` booting together: 0 under
/// [`BOOT_LOGINS_PER_SEC`] nodes, then one second per that many, at most
/// [`MAX_BOOT_SPREAD_SECS`] (1,000 nodes: 10 s; 10,000: 50 s).
pub fn boot_spread_secs(nodes: u64) -> u64 {
    (nodes / BOOT_LOGINS_PER_SEC).min(MAX_BOOT_SPREAD_SECS)
}

/// After failed polls a node waits its poll interval doubled per failure,
/// at most this many intervals ...
pub const MAX_BACKOFF_POLLS: u32 = 8;
/// ... and at most this long (seconds) ...
pub const MAX_BACKOFF_SECS: u64 = 300;
/// ... each wait jittered by up to this fraction either way.
pub const BACKOFF_JITTER: f64 = 0.5;

/// The longest a node with poll interval `poll_secs` waits between two
/// polls while its polls fail (whole seconds, rounded up).
pub fn longest_retry_secs(poll_secs: u64) -> u64 {
    let base = poll_secs
        .saturating_mul(u64::from(MAX_BACKOFF_POLLS))
        .min(MAX_BACKOFF_SECS);
    (base as f64 * (1.0 + BACKOFF_JITTER)).ceil() as u64
}

/// What a node reports under `nodes/<node-id>`: names and versions only.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeReport {
    pub node_id: String,
    pub hostname: String,
    /// The manifest version fully applied on the node (0: none yet).
    pub applied_version: u64,
    /// The epoch of that manifest ([`Manifest::epoch`]; 0 from agents
    /// older than epochs).
    #[serde(default)]
    pub applied_epoch: u64,
    /// When this report was written (seconds since the epoch).
    pub reported_at: u64,
    /// Last poll (seconds since the epoch).
    pub last_poll: u64,
    #[serde(default)]
    pub last_error: Option<String>,
    /// Names of the published secrets installed on the node.
    #[serde(default)]
    pub secrets: Vec<String>,
    /// The node's poll interval and heartbeat, in seconds (for liveness).
    pub poll_interval_secs: u64,
    pub heartbeat_secs: u64,
    /// Its workload identity (`cluster federate`): token expiry, last
    /// refresh, last error; absent when the cluster is not federated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<crate::identity::IdentityStatus>,
    /// The id of the bundle the node logged in with, when it signs
    /// ([`Bundle::bundle_id`]); `node_id` is then `<node-id>.<bundle-id>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundle_id: Option<String>,
    /// HMAC-SHA256 (hex) of the report without `sig` ([`sign_report`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sig: Option<String>,
}

impl NodeReport {
    /// Whether the node reported recently enough to count: within three of
    /// its heartbeats (reports are written on change and on the heartbeat,
    /// never on every poll), plus its longest backoff when its last poll
    /// failed (a node backing off reports at its next poll, which can come
    /// later than three short heartbeats: it is still there, and a
    /// `sync --wait` must wait for it).
    pub fn is_live(&self, now: u64) -> bool {
        // The figures are the report's (its writer's word): saturating.
        let mut window = self
            .heartbeat_secs
            .max(self.poll_interval_secs)
            .saturating_mul(3);
        if self.last_error.is_some() {
            window = window.saturating_add(longest_retry_secs(self.poll_interval_secs));
        }
        now.saturating_sub(self.reported_at) <= window
    }
}

/// Whether `id` is a bundle id: 16 lowercase hex digits.
pub fn is_bundle_id(id: &str) -> bool {
    id.len() == 16 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Whether `name` can name a bundle: 1 to 128 of `A-Z a-z 0-9 . _ - @ : [ ]`
/// (`node-3`, or a host as `cluster add` took it: `ubuntu@10.0.0.6:2222`),
/// not starting with `-` or `.` (it is printed and taken on a command line).
pub fn is_bundle_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with(['-', '.'])
        && name.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@' | b':' | b'[' | b']')
        })
}

/// Where a node reports: `<node-id>.<bundle-id>` when its bundle signs
/// reports, else its node id alone (bundles older than report keys). Node
/// ids hold no `.`, so the two never collide.
pub fn report_id(node_id: &str, bundle_id: Option<&str>) -> String {
    match bundle_id {
        Some(b) => format!("{node_id}.{b}"),
        None => node_id.to_owned(),
    }
}

fn hmac_hex(key: &[u8], parts: &[&[u8]]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("hmac accepts any key length");
    for p in parts {
        mac.update(p);
    }
    hex::encode(mac.finalize().into_bytes())
}

/// The report key of bundle `bundle_id` (hex): HMAC-SHA256 of the id under
/// the cluster's report key, which only the controller holds. Written into
/// that bundle; the controller derives it again to verify.
pub fn bundle_report_key(cluster_key: &[u8], bundle_id: &str) -> SecretText {
    SecretText::new(hmac_hex(
        cluster_key,
        &[b"rh-fleet-bundle-report-key-v1\n", bundle_id.as_bytes()],
    ))
}

/// The signature of a report (as JSON, `sig` left out) under a bundle's
/// report key (hex): HMAC-SHA256 over its canonical JSON (sorted keys,
/// compact), so it survives the store's re-encoding and covers fields a
/// newer agent adds.
fn report_signature(report: &Value, bundle_key_hex: &str) -> Option<String> {
    let key = hex::decode(bundle_key_hex).ok()?;
    let mut unsigned = report.clone();
    unsigned.as_object_mut()?.remove("sig");
    let text = crate::fingerprint::canonical_value(&SecretValue::new(unsigned));
    Some(hmac_hex(
        &key,
        &[b"rh-fleet-report-v1\n", text.expose_secret().as_bytes()],
    ))
}

/// Sign `report` for the bundle `bundle_id` with its report key (hex): its
/// `node_id` becomes the report id (`<node-id>.<bundle-id>`), and
/// `bundle_id` and `sig` are set. `None` when the key is not hex.
pub fn sign_report(
    mut report: NodeReport,
    bundle_id: &str,
    bundle_key_hex: &str,
) -> Option<NodeReport> {
    report.node_id = report_id(&report.node_id, Some(bundle_id));
    report.bundle_id = Some(bundle_id.to_owned());
    report.sig = None;
    let value = serde_json::to_value(&report).expect("a report serializes");
    report.sig = Some(report_signature(&value, bundle_key_hex)?);
    Some(report)
}

/// What a report's signature says about it ([`verify_report`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReportTrust {
    /// Signed by the bundle its id names, under the key derived for it.
    Verified,
    /// Signed, but this machine has no cluster report key to check it.
    Unverifiable,
    /// An id without a bundle (an agent or bundle older than report keys):
    /// any node of the cluster could have written it.
    Unsigned,
    /// Does not verify: its id, bundle or signature do not match. Written
    /// by another node of the cluster, or by anyone who can write the
    /// store's prefix.
    Forged,
}

/// Check the report stored under `nodes/<id>` (`value`, as read) with the
/// cluster's report key (`None`: not on this machine). A report id with a
/// bundle id must carry that id and a signature under that bundle's key; a
/// report id without one must carry neither.
pub fn verify_report(id: &str, value: &Value, cluster_key: Option<&[u8]>) -> ReportTrust {
    let field = |k: &str| value.get(k).and_then(Value::as_str);
    let Some((_, bundle)) = id.rsplit_once('.').filter(|(_, b)| is_bundle_id(b)) else {
        let signed = value.get("sig").is_some() || value.get("bundle_id").is_some();
        return if signed || field("node_id") != Some(id) {
            ReportTrust::Forged
        } else {
            ReportTrust::Unsigned
        };
    };
    if field("node_id") != Some(id) || field("bundle_id") != Some(bundle) {
        return ReportTrust::Forged;
    }
    let Some(sig) = field("sig") else {
        return ReportTrust::Forged;
    };
    let Some(cluster_key) = cluster_key else {
        return ReportTrust::Unverifiable;
    };
    let key = bundle_report_key(cluster_key, bundle);
    match report_signature(value, key.expose_secret()) {
        Some(expected)
            if subtle::ConstantTimeEq::ct_eq(expected.as_bytes(), sig.as_bytes()).into() =>
        {
            ReportTrust::Verified
        }
        _ => ReportTrust::Forged,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundle_debug_hides_the_secret_id() {
        let b = Bundle {
            format: 1,
            cluster: "gpu".into(),
            urls: vec!["http://127.0.0.1:8200".into()],
            ca_pem: None,
            mount: "secret".into(),
            prefix: "rh/alice".into(),
            auth_mount: "approle".into(),
            role_id: "r".into(),
            wrapped_secret_id: Some(SecretValue::from("hvs.wrapped-do-not-print")),
            secret_id: Some(SecretValue::from("sid-do-not-print")),
            boot_spread_secs: 0,
            report_spread_secs: 0,
            heartbeat_secs: 0,
            name: Some("node-1".into()),
            bundle_id: Some("0123456789abcdef".into()),
            report_key: Some(SecretValue::from("report-key-do-not-print")),
            unknown: Default::default(),
        };
        let shown = format!("{b:?} {b:#?}");
        assert!(!shown.contains("do-not-print"), "{shown}");
        assert!(shown.contains("gpu"));
    }

    #[test]
    fn layout_and_liveness() {
        assert_eq!(manifest_path("rh/a", "gpu"), "rh/a/clusters/gpu/manifest");
        assert_eq!(
            secret_path("rh/a", "gpu", "aws"),
            "rh/a/clusters/gpu/secrets/aws"
        );
        assert_eq!(
            report_path("rh/a", "gpu", "n1"),
            "rh/a/clusters/gpu/nodes/n1"
        );
        let r = NodeReport {
            reported_at: 1000,
            poll_interval_secs: 10,
            heartbeat_secs: 60,
            ..Default::default()
        };
        assert!(r.is_live(1180));
        assert!(!r.is_live(1181));
    }

    #[test]
    fn a_node_whose_polls_fail_stays_live_for_its_longest_backoff() {
        // Poll 1 s, heartbeat 2 s: three heartbeats are 6 s, but after
        // failed polls the node waits up to 8 polls +50% (12 s) before its
        // next poll and report.
        assert_eq!(longest_retry_secs(1), 12);
        assert_eq!(longest_retry_secs(10), 120);
        assert_eq!(longest_retry_secs(3600), 450);
        let mut r = NodeReport {
            reported_at: 1000,
            poll_interval_secs: 1,
            heartbeat_secs: 2,
            ..Default::default()
        };
        assert!(!r.is_live(1007));
        r.last_error = Some("the manifest is missing from the store".into());
        assert!(r.is_live(1018));
        assert!(!r.is_live(1019));
        // A report's own figures cannot overflow the window (a panic in
        // `status` for a store writer's report).
        r.heartbeat_secs = u64::MAX;
        r.poll_interval_secs = u64::MAX;
        assert!(r.is_live(u64::MAX));
    }

    #[test]
    fn report_spread_grows_with_the_fleet_and_is_capped() {
        assert_eq!(report_spread_secs(0), 0);
        assert_eq!(report_spread_secs(99), 0);
        assert_eq!(report_spread_secs(100), 2);
        assert_eq!(report_spread_secs(1_000), 25);
        assert_eq!(report_spread_secs(10_000), 250);
        assert_eq!(report_spread_secs(10_000_000), MAX_REPORT_SPREAD_SECS);
        assert_eq!(heartbeat_secs(0), 0);
        assert_eq!(heartbeat_secs(3_000), 0);
        assert_eq!(heartbeat_secs(3_010), 301);
        assert_eq!(heartbeat_secs(10_000), 1_000);
        assert_eq!(heartbeat_secs(u64::MAX), MAX_HEARTBEAT_SECS);
        assert_eq!(boot_spread_secs(99), 0);
        assert_eq!(boot_spread_secs(1_000), 10);
        assert_eq!(boot_spread_secs(10_000), MAX_BOOT_SPREAD_SECS);
        assert_eq!(boot_spread_secs(u64::MAX), MAX_BOOT_SPREAD_SECS);
        // An older manifest (no field) reads as 0, and 0 is not written.
        let m: Manifest = serde_json::from_str(r#"{"version": 3}"#).unwrap();
        assert_eq!((m.report_spread_secs, m.heartbeat_secs), (0, 0));
        let text = serde_json::to_string(&m).unwrap();
        assert!(!text.contains("report_spread") && !text.contains("heartbeat"));
    }

    #[test]
    fn inline_items_round_trip_and_never_show_their_values() {
        let text = r#"{"version": 2, "secrets": [
            {"name": "a", "kv_version": 4, "fingerprint": "f",
             "inline": {"secret": {"name": "a", "values": {"k": "inline-value-8c1d"}}}},
            {"name": "b", "kv_version": 1, "fingerprint": "g"}]}"#;
        let m: Manifest = serde_json::from_str(text).unwrap();
        assert!(m.secrets[0].inline.is_some() && m.secrets[1].inline.is_none());
        assert!(!format!("{m:?}").contains("inline-value-8c1d"));
        let again = serde_json::to_string(&m).unwrap();
        assert!(again.contains("inline-value-8c1d"));
        // An entry without one writes no `inline` (what older agents read).
        assert_eq!(again.matches("\"inline\"").count(), 1);
    }

    #[test]
    fn only_a_well_formed_manifest_of_this_format_is_taken() {
        use serde_json::json;
        let good = json!({"format": 1, "epoch": 7, "version": 3, "secrets": []});
        let m = parse_manifest(&good).unwrap();
        assert_eq!((m.stamp(), m.secrets.len()), ((7, 3), 0));
        for (doc, why) in [
            (json!({}), "format"),
            (json!(null), "object"),
            (json!("x"), "object"),
            (json!({"version": 3, "secrets": []}), "format"),
            (
                json!({"format": 0, "version": 3, "secrets": []}),
                "unknown format",
            ),
            (json!({"format": 1, "secrets": []}), "no version"),
            (
                json!({"format": 1, "version": 0, "secrets": []}),
                "no version",
            ),
            (json!({"format": 1, "version": 3}), "no secret list"),
            (
                json!({"format": 1, "version": 3, "secrets": {}}),
                "no secret list",
            ),
            (
                json!({"format": 1, "version": 3, "secrets": [{"name": 1}]}),
                "parse",
            ),
        ] {
            let err = parse_manifest(&doc).unwrap_err().to_string();
            assert!(err.contains(why), "{doc}: {err}");
        }
        let newer = parse_manifest(&json!({"format": 2, "version": 3, "secrets": []}));
        assert_eq!(newer.unwrap_err(), ManifestError::NewerFormat(2));
        let entry = json!({"name": "a", "kv_version": 1, "fingerprint": "f"});
        let many = json!({"format": 1, "version": 3,
                          "secrets": vec![entry; MAX_MANIFEST_ENTRIES + 1]});
        assert_eq!(
            parse_manifest(&many).unwrap_err(),
            ManifestError::TooManyEntries(MAX_MANIFEST_ENTRIES + 1)
        );
    }

    #[test]
    fn reports_verify_only_under_their_own_bundle_key() {
        let cluster_key = [7u8; 32];
        let bid = "0123456789abcdef";
        let key = bundle_report_key(&cluster_key, bid);
        let report = NodeReport {
            node_id: "host-1a2b3c4d5e6f".into(),
            hostname: "host".into(),
            applied_version: 4,
            applied_epoch: 9,
            secrets: vec!["aws".into()],
            heartbeat_secs: 300,
            ..Default::default()
        };
        let signed = sign_report(report, bid, key.expose_secret()).unwrap();
        let id = "host-1a2b3c4d5e6f.0123456789abcdef";
        assert_eq!(signed.node_id, id);
        // As the store gives it back: another key order, a field a newer
        // agent added.
        let text = serde_json::to_string(&signed).unwrap();
        let mut value: Value = serde_json::from_str(&text).unwrap();
        let mut sorted: serde_json::Map<String, Value> = Default::default();
        let obj = value.as_object().unwrap();
        for k in obj.keys().rev() {
            sorted.insert(k.clone(), obj[k].clone());
        }
        let round = Value::Object(sorted);
        let ck = Some(&cluster_key[..]);
        assert_eq!(verify_report(id, &round, ck), ReportTrust::Verified);
        assert_eq!(verify_report(id, &round, None), ReportTrust::Unverifiable);
        // Another bundle's key, a changed field, another id: forged.
        let other = bundle_report_key(&cluster_key, "fedcba9876543210");
        let mut resigned = round.clone();
        resigned["sig"] = report_signature(&round, other.expose_secret())
            .unwrap()
            .into();
        assert_eq!(verify_report(id, &resigned, ck), ReportTrust::Forged);
        value["applied_version"] = 5.into();
        assert_eq!(verify_report(id, &value, ck), ReportTrust::Forged);
        let elsewhere = "other-1a2b3c4d5e6f.0123456789abcdef";
        assert_eq!(verify_report(elsewhere, &round, ck), ReportTrust::Forged);
        assert_eq!(
            verify_report("host-1a2b3c4d5e6f", &round, ck),
            ReportTrust::Forged
        );
        let mut unsigned = round.clone();
        unsigned.as_object_mut().unwrap().remove("sig");
        assert_eq!(verify_report(id, &unsigned, ck), ReportTrust::Forged);
        // An id without a bundle: a report from an older agent or bundle.
        let legacy = serde_json::json!({"node_id": "n1", "hostname": "n1"});
        assert_eq!(verify_report("n1", &legacy, ck), ReportTrust::Unsigned);
        assert_eq!(verify_report("n2", &legacy, ck), ReportTrust::Forged);
        assert!(is_bundle_id(bid) && !is_bundle_id("0123") && !is_bundle_id("0123456789ABCDEF"));
        assert!(is_bundle_name("node-3") && is_bundle_name("ubuntu@[::1]:2222"));
        assert!(!is_bundle_name("-x") && !is_bundle_name("a b") && !is_bundle_name("a;b"));
    }
}
