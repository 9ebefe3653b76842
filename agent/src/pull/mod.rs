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
//!
//! Files: `bundle` (reading and checking the bundle), `node_id` (this
//! node's id), `store` (the agent's options of the one store client,
//! `common::openbao`), `creds` (secret_id and token), `schedule` (boot
//! delay, poll period, backoff), `poller` (the poll loop), `node` (where
//! what is pulled goes: this agent's install service), `report` (the node
//! report), `identity` (workload identity tokens), `metrics`; `sim` (the
//! fleet bench's simulated node) only with the `sim` feature.

mod bundle;
pub(crate) mod creds;
pub(crate) mod identity;
pub mod metrics;
mod node;
mod node_id;
mod poller;
mod report;
mod schedule;
#[cfg(feature = "sim")]
mod sim;
pub(crate) mod store;

use std::collections::BTreeMap;

use common::fsutil::{create_private_dir_all, PathError};
use common::openbao;
use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::task::JoinHandle;

use crate::state::AppState;
use creds::CredFiles;
use node::AgentNode;
use poller::{Puller, Setup};
#[cfg(feature = "sim")]
pub use sim::simulate;

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
    Store(#[from] openbao::Error),
    #[error(transparent)]
    Client(#[from] openbao::BuildError),
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
    let mut bundle = bundle::load_bundle(&bundle_path)?;
    bundle.urls = bundle::check_urls(&bundle, &bundle_path, config.pull_allow_insecure_http)?;
    let dir = config.state_dir.join("pull");
    create_private_dir_all(&dir)?;
    let (hostname, node_id) = node_id::node_identity(&config.state_dir, &dir)?;
    let identity = identity::Refresher::new(
        config.identity.clone(),
        Some(&config.state_dir),
        Some(config.home.clone()),
        &node_id,
    );
    let node = AgentNode {
        state: state.clone(),
        files: CredFiles { dir: dir.clone() },
        dir,
    };
    let setup = Setup {
        bundle,
        bundle_path,
        node_id,
        hostname,
    };
    let timing = (config.poll_interval, config.heartbeat);
    let mut puller = Puller::new(node, setup, timing, state.metrics(), identity)?;
    tracing::info!(cluster = %puller.bundle.cluster, node = %puller.node_id, "pull mode: first poll before serving");
    puller.boot(config.pull_boot_wait).await?;
    let task = tokio::spawn(async move { puller.run().await });
    Ok(Some(PullHandle { task }))
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
