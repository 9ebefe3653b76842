//! Fleet mode on the controller side: a pull cluster's nodes fetch their
//! secrets from the remote store themselves. This module owns the store
//! layout (`common::fleet`), the admin calls (ACL policy, AppRole, wrapped
//! secret_ids: [`admin`]), the bundles made here and what a node report is
//! worth ([`nodes`]), publishing and reading node reports ([`publish`]) and
//! the command entry points the existing commands branch to for a pull
//! cluster ([`cmd`]). It talks to the store through the
//! controller's one [`VaultClient`] with the user's token.
//! It never prints or logs a value, the user's token or a secret_id: bundles
//! carrying secret_ids are written 0600 and only their paths are printed.

pub mod admin;
pub mod cmd;
pub mod federate;
pub mod nodes;
pub mod publish;

use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::vault::{VaultClient, VaultConfig, VaultError};

/// The store of one user, as seen by fleet operations.
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

    /// One raw API call (path under `/v1/`): the status and the JSON body.
    pub(crate) async fn call(
        &self,
        op: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
        headers: &[(&'static str, String)],
    ) -> Result<(StatusCode, Value), VaultError> {
        let body = body.map(|b| serde_json::to_vec(&b).expect("JSON serializes"));
        let reply = self.client.send_with(method, path, body, headers).await?;
        if reply.status == StatusCode::NOT_FOUND || reply.status.is_success() {
            let json = if reply.body.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&reply.body).map_err(|_| VaultError::Decode {
                    op: op.to_owned(),
                    url: reply.url.clone(),
                })?
            };
            return Ok((reply.status, json));
        }
        Err(self.client.fail(op, &reply))
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
        let op = format!("read {path}");
        let mut full = format!("{}/data/{path}", self.config.mount);
        if let Some(v) = version {
            full.push_str(&format!("?version={v}"));
        }
        let (status, json) = self.call(&op, Method::GET, &full, None, &[]).await?;
        if status == StatusCode::NOT_FOUND || json["data"]["data"].is_null() {
            return Ok(None);
        }
        let version = json["data"]["metadata"]["version"].as_u64().unwrap_or(0);
        let data = serde_json::from_value(json["data"]["data"].clone()).map_err(|_| {
            VaultError::Decode {
                op,
                url: self.client.current_url().to_owned(),
            }
        })?;
        Ok(Some(Versioned { version, data }))
    }

    /// Write a KV v2 document; with `cas`, only if the current version is
    /// that one (0: absent). Returns the new version.
    pub async fn kv_write<T: Serialize>(
        &self,
        path: &str,
        data: &T,
        cas: Option<u64>,
    ) -> Result<u64, VaultError> {
        let op = format!("write {path}");
        let full = format!("{}/data/{path}", self.config.mount);
        let mut body = serde_json::json!({ "data": data });
        if let Some(cas) = cas {
            body["options"] = serde_json::json!({ "cas": cas });
        }
        let reply = self
            .client
            .send_with(
                Method::POST,
                &full,
                Some(serde_json::to_vec(&body).expect("JSON serializes")),
                &[],
            )
            .await?;
        if reply.status == StatusCode::BAD_REQUEST
            && String::from_utf8_lossy(&reply.body).contains("check-and-set")
        {
            return Err(VaultError::CasMismatch {
                name: path.to_owned(),
                expected: cas.unwrap_or(0),
                current: 0,
            });
        }
        if !reply.status.is_success() {
            return Err(self.client.fail(&op, &reply));
        }
        let json: Value = serde_json::from_slice(&reply.body).unwrap_or(Value::Null);
        Ok(json["data"]["version"].as_u64().unwrap_or(0))
    }

    /// Names directly under `path` (a KV v2 metadata list); empty when none.
    pub async fn kv_list(&self, path: &str) -> Result<Vec<String>, VaultError> {
        let op = format!("list {path}");
        let full = format!("{}/metadata/{path}?list=true", self.config.mount);
        let (status, json) = self.call(&op, Method::GET, &full, None, &[]).await?;
        if status == StatusCode::NOT_FOUND {
            return Ok(vec![]);
        }
        Ok(json["data"]["keys"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|k| k.as_str())
            .filter(|k| !k.ends_with('/'))
            .map(str::to_owned)
            .collect())
    }

    /// The KV v2 metadata of `path`: its current version, the versions
    /// whose data can be read and those soft-deleted (recoverable); `None`
    /// when it has none (never written, or its metadata deleted).
    pub async fn kv_metadata(&self, path: &str) -> Result<Option<KvMetadata>, VaultError> {
        let op = format!("read the metadata of {path}");
        let full = format!("{}/metadata/{path}", self.config.mount);
        let (status, json) = self.call(&op, Method::GET, &full, None, &[]).await?;
        if status == StatusCode::NOT_FOUND || json["data"].is_null() {
            return Ok(None);
        }
        let mut meta = KvMetadata {
            current: json["data"]["current_version"].as_u64().unwrap_or(0),
            readable: vec![],
            deleted: vec![],
        };
        for (k, v) in json["data"]["versions"].as_object().into_iter().flatten() {
            let Ok(n) = k.parse::<u64>() else { continue };
            if v["destroyed"] == Value::Bool(true) {
                continue;
            }
            if v["deletion_time"].as_str().is_none_or(str::is_empty) {
                meta.readable.push(n);
            } else {
                meta.deleted.push(n);
            }
        }
        meta.readable.sort_unstable();
        meta.deleted.sort_unstable();
        Ok(Some(meta))
    }

    /// Undelete (recover) soft-deleted `version` of `path`.
    pub async fn kv_undelete(&self, path: &str, version: u64) -> Result<(), VaultError> {
        let op = format!("undelete {path}");
        let full = format!("{}/undelete/{path}", self.config.mount);
        let body = serde_json::json!({ "versions": [version] });
        self.call_ok(&op, Method::POST, &full, Some(body), &[])
            .await?;
        Ok(())
    }

    /// Destroy the data of every version of `path` still holding some,
    /// keeping its metadata: the next write gets a higher version (nodes
    /// refuse a version older than one they applied).
    pub async fn kv_destroy_versions(&self, path: &str) -> Result<(), VaultError> {
        let Some(meta) = self.kv_metadata(path).await? else {
            return Ok(());
        };
        let versions: Vec<u64> = meta.readable.iter().chain(&meta.deleted).copied().collect();
        if versions.is_empty() {
            return Ok(());
        }
        let op = format!("destroy {path}");
        let full = format!("{}/destroy/{path}", self.config.mount);
        let body = serde_json::json!({ "versions": versions });
        self.call_ok(&op, Method::POST, &full, Some(body), &[])
            .await?;
        Ok(())
    }

    /// Delete a KV v2 document and all its versions.
    pub async fn kv_destroy(&self, path: &str) -> Result<(), VaultError> {
        let op = format!("delete {path}");
        let full = format!("{}/metadata/{path}", self.config.mount);
        self.call(&op, Method::DELETE, &full, None, &[]).await?;
        Ok(())
    }
}

/// What [`Store::kv_metadata`] reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvMetadata {
    /// The version the next write follows (deleted or not).
    pub current: u64,
    /// Versions whose data can still be read, ascending.
    pub readable: Vec<u64>,
    /// Versions soft-deleted (their data kept until destroyed), ascending.
    pub deleted: Vec<u64>,
}

/// Parse a duration: `90`, `90s`, `15m`, `2h`, `1d` -> seconds (> 0).
pub fn parse_duration(text: &str) -> Option<u64> {
    let text = text.trim();
    let (digits, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let n: u64 = digits.parse().ok()?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return None,
    };
    n.checked_mul(mult).filter(|s| *s > 0)
}

/// Seconds since the epoch.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("90"), Some(90));
        assert_eq!(parse_duration("15m"), Some(900));
        assert_eq!(parse_duration("2h"), Some(7200));
        assert_eq!(parse_duration("1d"), Some(86_400));
        assert_eq!(parse_duration("0s"), None);
        assert_eq!(parse_duration("5x"), None);
        assert_eq!(parse_duration("m"), None);
    }
}
