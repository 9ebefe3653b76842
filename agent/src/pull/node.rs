//! Where a pulling node puts what it pulled: the [`Node`] trait, implemented
//! by this agent ([`AgentNode`]: the install service, the kept credentials
//! and `applied.json` under `<state-dir>/pull`) and, behind the `sim`
//! feature only, by the fleet bench's simulated node (`sim.rs`). The poll
//! loop knows only the trait.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};

use common::wire::{SecretResult, SyncItem};

use super::creds::CredFiles;
use super::PullError;
use crate::install::{self, InstallError};
use crate::state::AppState;

/// One result per item applied, with its secret's name.
pub(crate) type ItemResults = Vec<(String, Result<SecretResult, InstallError>)>;

/// Secret name -> the KV version this node applied from the store.
pub(crate) type Known = BTreeMap<String, u64>;

/// What a poll loop drives.
pub(crate) trait Node: Send + Sync + 'static {
    /// Apply items pulled from the store; `known` holds what this node
    /// applied from the store before (its earlier values are replaced; a
    /// new secret does not clobber differing values already in a file).
    fn apply(
        &self,
        items: Vec<SyncItem>,
        known: &Known,
    ) -> impl Future<Output = Result<ItemResults, PullError>> + Send;

    /// Remove a secret the store no longer publishes (one not installed is
    /// fine); the reason when it cannot be.
    fn remove(&self, name: &str) -> impl Future<Output = Result<(), String>> + Send;

    /// Where the secret_id and the token are kept (`None`: nowhere).
    fn creds(&self) -> Option<&CredFiles>;

    /// The directory of `applied.json` (`None`: not kept).
    fn pull_dir(&self) -> Option<&Path>;

    /// The agent, for the workload identity's SDK wiring (`None`: none).
    fn agent(&self) -> Option<&AppState>;
}

/// This agent: pulled secrets go through the same install service as
/// `POST /v1/sync` (`install::apply_pulled` with the store's origin: placed
/// by this node's policy, merged, 0600, env processes, installed state,
/// audit route `pull`).
pub(crate) struct AgentNode {
    pub(crate) state: AppState,
    pub(crate) files: CredFiles,
    /// `<state-dir>/pull`.
    pub(crate) dir: PathBuf,
}

impl Node for AgentNode {
    async fn apply(&self, items: Vec<SyncItem>, known: &Known) -> Result<ItemResults, PullError> {
        let known = |name: &str| known.contains_key(name);
        Ok(install::apply_pulled(&self.state, "pull", items, known).await)
    }

    async fn remove(&self, name: &str) -> Result<(), String> {
        match install::revoke(&self.state, "pull", name, None, false).await {
            Ok(_) | Err(InstallError::NotInstalled(_)) => Ok(()),
            Err(e) => Err(e.message()),
        }
    }

    fn creds(&self) -> Option<&CredFiles> {
        Some(&self.files)
    }

    fn pull_dir(&self) -> Option<&Path> {
        Some(&self.dir)
    }

    fn agent(&self) -> Option<&AppState> {
        Some(&self.state)
    }
}
