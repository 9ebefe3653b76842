//! Fleet mode on the controller side: a pull cluster's nodes fetch their
//! secrets from the remote store themselves. This module owns the store
//! layout (`common::fleet`), the admin calls (ACL policy, AppRole, wrapped
//! secret_ids: [`admin`]), the bundles made here and what a node report is
//! worth ([`nodes`]), publishing and reading node reports ([`publish`]),
//! delivery to a pull cluster for `sync`, `revoke`, `status` and `cluster
//! remove` ([`pull`], its report rows in [`rows`]), and the store side of
//! workload identity ([`federate`]). The command entry points live under
//! `commands/`, which nothing here calls. It talks to the store
//! through the controller's [`VaultClient`] (the one `common::openbao`
//! client) with the user's token.
//! It never prints or logs a value, the user's token or a secret_id: bundles
//! carrying secret_ids are written 0600 and only their paths are printed.

pub mod admin;
pub mod federate;
pub mod nodes;
pub mod publish;
pub mod pull;
pub mod rows;

use common::openbao::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use zeroize::Zeroizing;

pub use common::openbao::KvMetadata;

use crate::vault::{VaultClient, VaultConfig, VaultError};

/// The store of one user, as seen by fleet operations: the controller's
/// client of the one OpenBao client, and its configuration.
#[derive(Debug)]
pub struct Store {
    pub client: VaultClient,
    pub config: VaultConfig,
}

/// A KV v2 document and its version.
#[derive(Debug)]
pub struct Versioned<T> {
    pub version: u64,
    pub data: T,
}

impl Store {
    /// Bind a client and its configuration.
    pub fn new(client: VaultClient, config: VaultConfig) -> Self {
        Self { client, config }
    }

    /// The user's store, from `~/.rh/config` and the environment
    /// ([`crate::vault::connect`]).
    pub fn connect(ctx: &crate::Context) -> anyhow::Result<Self> {
        let (config, client) = crate::vault::connect(ctx)?;
        Ok(Self::new(client, config))
    }

    /// One raw API call (path under `/v1/`): the status and the JSON body
    /// of a success or a 404; any other answer is an error.
    pub(crate) async fn call(
        &self,
        op: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
        headers: &[(&'static str, String)],
    ) -> Result<(StatusCode, Value), VaultError> {
        // May carry a secret_id: zeroed when dropped.
        let body = body.map(|b| Zeroizing::new(serde_json::to_vec(&b).expect("JSON serializes")));
        let answer = self
            .client
            .send(
                op,
                method,
                path,
                body.as_deref().map(Vec::as_slice),
                headers,
            )
            .await?;
        if answer.status == StatusCode::NOT_FOUND || answer.status.is_success() {
            let json = answer.json(op).map_err(|e| self.client.error(e))?;
            return Ok((answer.status, json));
        }
        Err(self.client.error(answer.fail(op)))
    }

    /// Like [`Self::call`], but a 404 is an error too.
    pub(crate) async fn call_ok(
        &self,
        op: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
        headers: &[(&'static str, String)],
    ) -> Result<Value, VaultError> {
        let (status, json) = self.call(op, method, path, body, headers).await?;
        if status == StatusCode::NOT_FOUND {
            return Err(VaultError::Http {
                op: op.to_owned(),
                url: self.client.current_url().to_owned(),
                status: 404,
                message: "not found".into(),
            });
        }
        Ok(json)
    }

    /// Read the KV v2 document at `path` (under the mount); `None` when absent.
    pub async fn kv_read<T: DeserializeOwned>(
        &self,
        path: &str,
    ) -> Result<Option<Versioned<T>>, VaultError> {
        self.kv_read_at(path, None).await
    }

    /// Read version `version` (`None`: the current one) of the KV v2
    /// document at `path`; `None` when absent, deleted or destroyed.
    pub async fn kv_read_at<T: DeserializeOwned>(
        &self,
        path: &str,
        version: Option<u64>,
    ) -> Result<Option<Versioned<T>>, VaultError> {
        let read = self.client.kv().read::<T>(path, version).await;
        let read = read.map_err(|e| self.client.error(e))?;
        Ok(read.data.map(|data| Versioned {
            version: read.version,
            data,
        }))
    }

    /// Write a KV v2 document; with `cas`, only if the current version is
    /// that one (0: absent). Returns the new version.
    pub async fn kv_write<T: Serialize>(
        &self,
        path: &str,
        data: &T,
        cas: Option<u64>,
    ) -> Result<u64, VaultError> {
        let written = self.client.kv().write(path, data, cas).await;
        written.map_err(|e| self.client.error(e))
    }

    /// Names directly under `path` (a KV v2 metadata list); empty when none.
    pub async fn kv_list(&self, path: &str) -> Result<Vec<String>, VaultError> {
        let names = self.client.kv().list(path).await;
        names.map_err(|e| self.client.error(e))
    }

    /// The KV v2 metadata of `path`: its current version, the versions
    /// whose data can be read and those soft-deleted (recoverable); `None`
    /// when it has none (never written, or its metadata deleted).
    pub async fn kv_metadata(&self, path: &str) -> Result<Option<KvMetadata>, VaultError> {
        let meta = self.client.kv().metadata(path).await;
        meta.map_err(|e| self.client.error(e))
    }

    /// Undelete (recover) soft-deleted `version` of `path`.
    pub async fn kv_undelete(&self, path: &str, version: u64) -> Result<(), VaultError> {
        let done = self.client.kv().undelete(path, version).await;
        done.map_err(|e| self.client.error(e))
    }

    /// Destroy the data of every version of `path` still holding some,
    /// keeping its metadata: the next write gets a higher version (nodes
    /// refuse a version older than one they applied).
    pub async fn kv_destroy_versions(&self, path: &str) -> Result<(), VaultError> {
        let done = self.client.kv().destroy_versions(path).await;
        done.map_err(|e| self.client.error(e))
    }

    /// Delete a KV v2 document and all its versions.
    pub async fn kv_destroy(&self, path: &str) -> Result<(), VaultError> {
        let done = self.client.kv().delete_all(path).await;
        done.map_err(|e| self.client.error(e))
    }
}

/// Seconds since the epoch.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
