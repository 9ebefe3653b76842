//! The bundles of a pull cluster as this controller made them, and what a
//! node report is worth. `~/.rh/clusters/NAME.nodes.json` (0600, in the
//! 0700 clusters dir) keeps the cluster's report key (32 random bytes, hex:
//! each bundle's report key is derived from it, `fleet::bundle_report_key`)
//! and per bundle its name (`node-3`, `launch-1`, or the host a bootstrap
//! sent it to), its id, its secret_id's accessor (what destroys that
//! secret_id), its kind and when it was made and revoked. It never holds a
//! secret_id, a wrapping token or a value; the accessor only serves the
//! owner's token to look up or destroy one secret_id.
//!
//! [`Registry::row`] classifies one report read from the store: unreadable,
//! forged (its signature does not verify under the bundle its id names),
//! unsigned (an agent or bundle older than report keys), unverifiable (no
//! report key on this machine), verified; and names its bundle and whether
//! that bundle was revoked.

use std::path::{Path, PathBuf};

use common::fleet::{self, NodeReport, ReportTrust};
use common::fsutil::{self, PathError};
use common::{SecretText, SecretValue};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::clusters::clusters_dir;

/// How a bundle was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BundleKind {
    /// `cluster enroll`: one node, a wrapped secret_id.
    Node,
    /// `cluster enroll --reusable`: a launch bundle shared by many nodes.
    Launch,
    /// `cluster bootstrap`: sent to one host over SSH.
    Bootstrap,
}

/// One bundle this controller made. No secret in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleEntry {
    pub name: String,
    pub bundle_id: String,
    /// The secret_id accessor (`auth/approle/role/R/secret-id-accessor/destroy`).
    pub accessor: String,
    pub kind: BundleKind,
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
}

/// `NAME.nodes.json`. Holds the cluster's report key: no derived `Debug`.
#[derive(Default, Serialize, Deserialize)]
pub struct Registry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    report_key: Option<SecretValue>,
    #[serde(default)]
    bundles: Vec<BundleEntry>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field(
                "report_key",
                &self.report_key.as_ref().map(|_| "<redacted>"),
            )
            .field("bundles", &self.bundles.len())
            .finish()
    }
}

/// `~/.rh/clusters/NAME.nodes.json`.
pub fn registry_file(home: &Path, cluster: &str) -> PathBuf {
    clusters_dir(home).join(format!("{cluster}.nodes.json"))
}

/// Why the registry cannot be used. Names the file, never its content.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("bundle registry {path} is malformed ({reason}): move it away to start a new one (bundles it listed can no longer be revoked by name)")]
    Malformed { path: String, reason: String },
    #[error(transparent)]
    Path(#[from] PathError),
}

impl Registry {
    /// The cluster's registry (empty when there is none yet).
    pub fn load(home: &Path, cluster: &str) -> Result<Self, RegistryError> {
        let path = registry_file(home, cluster);
        let Some(text) = fsutil::read_optional(&path)? else {
            return Ok(Self::default());
        };
        let reg: Self =
            serde_json::from_str(text.expose_secret()).map_err(|e| RegistryError::Malformed {
                path: path.display().to_string(),
                reason: format!("line {} column {}", e.line(), e.column()),
            })?;
        if reg
            .report_key
            .as_ref()
            .is_some_and(|k| key_bytes(k).is_none())
        {
            return Err(RegistryError::Malformed {
                path: path.display().to_string(),
                reason: "its report key is not 64 hex digits".into(),
            });
        }
        Ok(reg)
    }

    /// Save it (atomic, 0600, dir 0700).
    pub fn save(&self, home: &Path, cluster: &str) -> Result<(), RegistryError> {
        fsutil::create_private_dir_all(&clusters_dir(home))?;
        let text =
            SecretText::new(serde_json::to_string_pretty(self).expect("registry serializes"));
        fsutil::atomic_write(
            &registry_file(home, cluster),
            text.expose_secret().as_bytes(),
        )?;
        Ok(())
    }

    /// Forget the cluster's registry (its AppRole is gone).
    pub fn remove(home: &Path, cluster: &str) -> Result<(), RegistryError> {
        Ok(fsutil::remove_file(&registry_file(home, cluster))?)
    }

    /// The cluster's report key, made (32 random bytes) on first use.
    fn cluster_key(&mut self) -> Vec<u8> {
        if let Some(key) = self.report_key.as_ref().and_then(key_bytes) {
            return key;
        }
        let hex = common::fingerprint::random_hex(32);
        let key = hex::decode(&hex).expect("random_hex is hex");
        self.report_key = Some(SecretValue::from_string(hex));
        key
    }

    /// A fresh bundle id and its report key (hex) for a new bundle.
    pub fn new_bundle_key(&mut self) -> (String, SecretText) {
        let id = common::fingerprint::random_hex(8);
        let key = fleet::bundle_report_key(&self.cluster_key(), &id);
        (id, key)
    }

    /// The next free `PREFIX<k>` name (`node-4` after `node-1..3`).
    pub fn next_name(&self, prefix: &str) -> String {
        let last = self
            .bundles
            .iter()
            .filter_map(|b| b.name.strip_prefix(prefix)?.parse::<u64>().ok())
            .max()
            .unwrap_or(0);
        format!("{prefix}{}", last + 1)
    }

    /// The live (not revoked) bundle named `name`.
    pub fn live(&self, name: &str) -> Option<&BundleEntry> {
        self.bundles
            .iter()
            .rev()
            .find(|b| b.name == name && b.revoked_at.is_none())
    }

    /// The bundle whose id is `id`.
    pub fn by_id(&self, id: &str) -> Option<&BundleEntry> {
        self.bundles.iter().find(|b| b.bundle_id == id)
    }

    /// The bundle named `name`: the live one, else the last one revoked.
    pub fn named(&self, name: &str) -> Option<&BundleEntry> {
        self.live(name)
            .or_else(|| self.bundles.iter().rev().find(|b| b.name == name))
    }

    /// Record a new bundle. Returns the live bundle of the same name it
    /// replaces (to be revoked by the caller, then [`Self::mark_revoked`]).
    pub fn add(&mut self, entry: BundleEntry) -> Option<BundleEntry> {
        let old = self.live(&entry.name).cloned();
        self.bundles.push(entry);
        old
    }

    /// Mark a bundle revoked (its secret_id destroyed).
    pub fn mark_revoked(&mut self, id: &str) {
        let now = common::time::now_rfc3339(false);
        for b in self.bundles.iter_mut().filter(|b| b.bundle_id == id) {
            b.revoked_at.get_or_insert_with(|| now.clone());
        }
    }

    /// The names of the live bundles.
    pub fn live_names(&self) -> Vec<String> {
        self.bundles
            .iter()
            .filter(|b| b.revoked_at.is_none())
            .map(|b| b.name.clone())
            .collect()
    }

    /// Classify the report stored under `nodes/<id>` (`None`: the document
    /// could not be read as JSON).
    pub fn row(&self, id: String, value: Option<Value>) -> ReportRow {
        let key = self.report_key.as_ref().and_then(key_bytes);
        let parsed = value.as_ref().and_then(|v| NodeReport::deserialize(v).ok());
        let (Some(value), Some(report)) = (value, parsed) else {
            return ReportRow {
                report: NodeReport {
                    node_id: id.clone(),
                    ..Default::default()
                },
                id,
                trust: Trust::Unreadable,
                bundle: None,
                revoked: false,
            };
        };
        let trust = Trust::from(fleet::verify_report(&id, &value, key.as_deref()));
        let signed_by = report
            .bundle_id
            .as_deref()
            .filter(|_| trust != Trust::Forged);
        let entry = signed_by.and_then(|b| self.by_id(b));
        ReportRow {
            bundle: match (entry, signed_by) {
                (Some(e), _) => Some(e.name.clone()),
                (None, Some(b)) => Some(format!("?{b}")),
                (None, None) => None,
            },
            revoked: entry.is_some_and(|e| e.revoked_at.is_some()),
            id,
            trust,
            report,
        }
    }
}

/// A hex key's bytes (`None` unless 32 bytes of hex).
fn key_bytes(key: &SecretValue) -> Option<Vec<u8>> {
    key.expose_str()
        .and_then(|k| hex::decode(k).ok())
        .filter(|k| k.len() == 32)
}

/// What a report read from the store is worth.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Trust {
    Verified,
    /// Signed, but no report key on this machine to check it.
    Unverifiable,
    /// From an agent or bundle older than report keys.
    Unsigned,
    /// Its signature does not verify under the bundle its id names.
    Forged,
    /// Not a report at all (not JSON, or not a report's fields).
    Unreadable,
}

impl From<ReportTrust> for Trust {
    fn from(t: ReportTrust) -> Self {
        match t {
            ReportTrust::Verified => Self::Verified,
            ReportTrust::Unverifiable => Self::Unverifiable,
            ReportTrust::Unsigned => Self::Unsigned,
            ReportTrust::Forged => Self::Forged,
        }
    }
}

/// One report as `status` and `sync --wait` see it.
#[derive(Debug, Clone, Serialize)]
pub struct ReportRow {
    /// The key it is stored under (`nodes/<id>`).
    #[serde(rename = "report_id")]
    pub id: String,
    /// What it says (for an unreadable one: only `node_id`, the key).
    #[serde(flatten)]
    pub report: NodeReport,
    pub trust: Trust,
    /// The name of the bundle that signed it (`?<id>` when this machine
    /// did not make that bundle).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bundle: Option<String>,
    /// That bundle was revoked here.
    pub revoked: bool,
}

impl ReportRow {
    /// Whether what it says cannot be taken at its word: `sync --wait`
    /// counts it as a node that did not converge, whatever it claims.
    pub fn suspect(&self) -> bool {
        matches!(self.trust, Trust::Forged | Trust::Unreadable)
    }

    /// Whether it counts for convergence: not revoked, and live or suspect.
    pub fn counts(&self, now: u64) -> bool {
        !self.revoked && (self.suspect() || self.report.is_live(now))
    }

    /// Whether the node applied `target` (epoch, version) or later.
    /// Reports of agents older than epochs compare versions only.
    pub fn converged(&self, target: (u64, u64)) -> bool {
        !self.suspect() && applied_stamp(&self.report, target) >= target
    }

    /// Whether the node applied something newer than `published`: it
    /// refuses the store's manifest as older than what it applied.
    pub fn ahead_of(&self, published: (u64, u64)) -> bool {
        !self.suspect() && applied_stamp(&self.report, published) > published
    }
}

/// `(epoch, version)` a report applied, comparable with `target` (an agent
/// older than epochs reports epoch 0: its version alone is compared).
fn applied_stamp(r: &NodeReport, target: (u64, u64)) -> (u64, u64) {
    if r.applied_epoch == 0 {
        (target.0, r.applied_version)
    } else {
        (r.applied_epoch, r.applied_version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registry_is_private_names_bundles_and_classifies_reports() {
        let home = tempfile::tempdir().unwrap();
        let mut reg = Registry::load(home.path(), "gpu").unwrap();
        assert_eq!(reg.next_name("node-"), "node-1");
        let (id, key) = reg.new_bundle_key();
        let entry = BundleEntry {
            name: "node-1".into(),
            bundle_id: id.clone(),
            accessor: "acc-1".into(),
            kind: BundleKind::Node,
            created_at: "now".into(),
            revoked_at: None,
        };
        assert!(reg.add(entry.clone()).is_none());
        reg.save(home.path(), "gpu").unwrap();
        let file = registry_file(home.path(), "gpu");
        assert_eq!(test_support::mode(&file), 0o600);
        let reg = Registry::load(home.path(), "gpu").unwrap();
        assert!(!format!("{reg:?}").contains(key.expose_secret()));
        assert_eq!(reg.next_name("node-"), "node-2");
        assert_eq!(reg.live("node-1"), Some(&entry));

        let report = NodeReport {
            node_id: "h-0123456789ab".into(),
            applied_version: 3,
            applied_epoch: 7,
            reported_at: u64::MAX / 2,
            heartbeat_secs: 300,
            ..Default::default()
        };
        let signed = fleet::sign_report(report.clone(), &id, key.expose_secret()).unwrap();
        let value = serde_json::to_value(&signed).unwrap();
        let row = reg.row(signed.node_id.clone(), Some(value.clone()));
        assert_eq!(
            (row.trust, row.bundle.as_deref()),
            (Trust::Verified, Some("node-1"))
        );
        assert!(row.converged((7, 3)) && !row.converged((7, 4)) && row.ahead_of((7, 2)));
        let mut forged = value.clone();
        forged["applied_version"] = 9.into();
        let row = reg.row(signed.node_id.clone(), Some(forged));
        assert_eq!((row.trust, row.bundle.as_deref()), (Trust::Forged, None));
        assert!(row.suspect() && row.counts(0) && !row.converged((0, 0)));
        let row = reg.row("junk".into(), Some(serde_json::json!({"x": "1"})));
        assert_eq!(row.trust, Trust::Unreadable);
        assert_eq!(row.report.node_id, "junk");
        // Without the registry's key: signed reports cannot be checked.
        let row = Registry::default().row(signed.node_id.clone(), Some(value));
        assert_eq!(row.trust, Trust::Unverifiable);
        assert_eq!(row.bundle.as_deref(), Some(format!("?{id}").as_str()));

        let mut reg = reg;
        let mut again = entry.clone();
        again.bundle_id = "ffffffffffffffff".into();
        assert_eq!(reg.add(again), Some(entry));
        reg.mark_revoked(&id);
        assert!(reg.by_id(&id).unwrap().revoked_at.is_some());
        assert_eq!(reg.live_names(), ["node-1"]);
    }
}
