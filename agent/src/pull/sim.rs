//! The fleet bench's simulated node (cargo feature `sim`, off by default:
//! `examples/fleet_sim.rs` and scripts/bench.d/60-fleet.sh turn it on): the
//! agent's real poll loop, store client, login and reports, driving a
//! [`Node`] that merges each pulled secret's files into a home of its own
//! (or writes nothing), with no env process, no policy check, no installed
//! state and no kept credentials: the bench measures the store, not this.
//! Never part of an agent built without the feature.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::fleet::Bundle;
use common::fsutil::{create_private_dir_all, PathError};
use common::wire::{SecretResult, Status, SyncItem};

use super::creds::CredFiles;
use super::metrics::Metrics;
use super::node::{ItemResults, Known, Node};
use super::poller::{Puller, Setup};
use super::{identity, PullError};
use crate::install::InstallError;
use crate::state::AppState;

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
    metrics: Arc<Metrics>,
    home: Option<PathBuf>,
) -> Result<(), PullError> {
    let pull_dir = home.as_ref().map(|h| h.join(".rh/agent/pull"));
    if let Some(dir) = &pull_dir {
        create_private_dir_all(dir)?;
    }
    let state_dir = home.as_ref().map(|h| h.join(".rh/agent"));
    let identity = identity::Refresher::new(
        crate::config::IdentityConfig::default(),
        state_dir.as_deref(),
        None,
        &node_id,
    );
    let setup = Setup {
        bundle,
        bundle_path: PathBuf::from("<simulated>"),
        hostname: node_id.clone(),
        node_id,
    };
    let node = SimNode { home, pull_dir };
    let mut puller = Puller::new(node, setup, (poll, heartbeat), metrics, identity)?;
    puller.boot(Duration::from_secs(3600)).await?;
    puller.run().await;
    Ok(())
}

/// A simulated node: files into `home` (when given), `applied.json` in
/// `pull_dir`.
struct SimNode {
    home: Option<PathBuf>,
    pull_dir: Option<PathBuf>,
}

impl Node for SimNode {
    async fn apply(&self, items: Vec<SyncItem>, _: &Known) -> Result<ItemResults, PullError> {
        let home = self.home.clone();
        tokio::task::spawn_blocking(move || {
            items
                .into_iter()
                .map(|i| (i.secret.name.clone(), simulated_apply(home.as_deref(), i)))
                .collect()
        })
        .await
        .map_err(|_| PullError::Apply("the simulated apply panicked".into()))
    }

    async fn remove(&self, _name: &str) -> Result<(), String> {
        Ok(())
    }

    fn creds(&self) -> Option<&CredFiles> {
        None
    }

    fn pull_dir(&self) -> Option<&Path> {
        self.pull_dir.as_deref()
    }

    fn agent(&self) -> Option<&AppState> {
        None
    }
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
