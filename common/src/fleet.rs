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

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::secret_value::SecretValue;

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

/// The `errors` of a Vault/OpenBao error body, joined and cut to about 300
/// bytes (server messages name paths and reasons, never values).
pub fn store_errors(body: &[u8]) -> String {
    #[derive(Deserialize, Default)]
    struct ErrorBody {
        #[serde(default)]
        errors: Vec<String>,
    }
    let parsed: ErrorBody = serde_json::from_slice(body).unwrap_or_default();
    let mut text = parsed.errors.join("; ");
    if text.len() > 300 {
        let mut cut = 300;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str("...");
    }
    text
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
            .field("wrapped", &self.wrapped_secret_id.is_some())
            .field("reusable", &self.secret_id.is_some())
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
    /// Incremented on every publish or unpublish.
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
}

fn is_zero(n: &u64) -> bool {
    *n == 0
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

/// What a node reports under `nodes/<node-id>`: names and versions only.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeReport {
    pub node_id: String,
    pub hostname: String,
    /// The manifest version fully applied on the node (0: none yet).
    pub applied_version: u64,
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
}

impl NodeReport {
    /// Whether the node reported recently enough to count: within three of
    /// its heartbeats (reports are written on change and on the heartbeat,
    /// never on every poll).
    pub fn is_live(&self, now: u64) -> bool {
        now.saturating_sub(self.reported_at) <= 3 * self.heartbeat_secs.max(self.poll_interval_secs)
    }
}

/// Whether `url` sends what it carries in cleartext across a network:
/// plain `http://` to a host that is not loopback (`localhost`, 127/8,
/// `::1`). Store tokens may go there only when the user opted in, on the
/// machine that sends them (controller: `RH_VAULT_ALLOW_HTTP`; agent:
/// `pull_allow_insecure_http`). Anything that is not `http://` is `false`.
pub fn is_cleartext_to_network(url: &str) -> bool {
    let Some(rest) = url
        .get(..7)
        .filter(|scheme| scheme.eq_ignore_ascii_case("http://"))
        .map(|_| &url[7..])
    else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority.rsplit('@').next().unwrap_or_default();
    let host = if let Some(v6) = host_port.strip_prefix('[') {
        v6.split(']').next().unwrap_or_default()
    } else {
        host_port.split(':').next().unwrap_or_default()
    };
    if host.eq_ignore_ascii_case("localhost") {
        return false;
    }
    match host.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(ip)) => !ip.is_loopback(),
        Ok(std::net::IpAddr::V6(ip)) => {
            !(ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()))
        }
        Err(_) => true,
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
    fn cleartext_to_network_is_plain_http_to_a_non_loopback_host() {
        for (url, cleartext) in [
            ("http://10.0.0.5:8200", true),
            ("HTTP://vault.example.com/v1", true),
            ("http://user@192.168.1.2:8200", true),
            ("http://[2001:db8::1]:8200", true),
            ("http://127.0.0.1:8200", false),
            ("http://127.9.9.9", false),
            ("http://localhost:8200/x", false),
            ("http://[::1]:8200", false),
            ("http://[::ffff:127.0.0.1]:8200", false),
            ("https://10.0.0.5:8200", false),
            ("https://vault.example.com", false),
        ] {
            assert_eq!(is_cleartext_to_network(url), cleartext, "{url}");
        }
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
}
