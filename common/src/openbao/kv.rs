//! The KV v2 API of a mount, through the one [`Client`]: read (a version or
//! the current one), write (check-and-set when asked), list, metadata
//! (versions, `custom_metadata`), undelete, destroy. Paths are under the
//! mount (`rh/a/clusters/gpu/manifest`); a 404 "no handler for route" (no
//! such mount) is an error, any other 404 means "absent". Documents are
//! parsed from the answer's zeroed buffer straight into the caller's type
//! (`Values`, `SecretValue`): no copy of a value is left behind.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use zeroize::Zeroizing;

use super::{Call, Client, Error, Method, StatusCode};

/// A mount of a store, used with one token.
pub struct Kv<'a> {
    client: &'a Client,
    token: &'a str,
    mount: &'a str,
}

impl std::fmt::Debug for Kv<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kv")
            .field("mount", &self.mount)
            .finish_non_exhaustive()
    }
}

/// One version of a document as read.
#[derive(Debug)]
pub struct KvVersion<T> {
    /// Its version (0 when the answer named none: never written).
    pub version: u64,
    /// Its data; `None` when absent, deleted or destroyed.
    pub data: Option<T>,
    /// When it was written (RFC 3339, as the server says).
    pub created_time: Option<String>,
    pub custom_metadata: Option<BTreeMap<String, String>>,
}

/// What [`Kv::metadata`] reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KvMetadata {
    /// The version the next write follows (deleted or not).
    pub current: u64,
    /// Versions whose data can still be read, ascending.
    pub readable: Vec<u64>,
    /// Versions soft-deleted (their data kept until destroyed), ascending.
    pub deleted: Vec<u64>,
    pub custom_metadata: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
struct ReadBody<T> {
    #[serde(default = "none")]
    data: Option<ReadData<T>>,
}

#[derive(Deserialize)]
struct ReadData<T> {
    #[serde(default = "none")]
    data: Option<T>,
    #[serde(default)]
    metadata: Option<VersionMeta>,
}

fn none<T>() -> Option<T> {
    None
}

#[derive(Deserialize, Default)]
struct VersionMeta {
    #[serde(default)]
    version: u64,
    #[serde(default)]
    created_time: Option<String>,
    #[serde(default)]
    custom_metadata: Option<BTreeMap<String, String>>,
}

impl<'a> Kv<'a> {
    /// `mount` of `client`'s store, with `token`.
    pub fn new(client: &'a Client, token: &'a str, mount: &'a str) -> Self {
        Self {
            client,
            token,
            mount,
        }
    }

    async fn call(
        &self,
        op: &str,
        method: Method,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<super::Answer, Error> {
        let mut call = Call::new(op, method, path).token(self.token);
        call.body = body;
        self.client.send(&call).await
    }

    /// Version `version` (`None`: the current one) of the document at
    /// `path`; its data is `None` when absent, deleted or destroyed.
    pub async fn read<T: DeserializeOwned>(
        &self,
        path: &str,
        version: Option<u64>,
    ) -> Result<KvVersion<T>, Error> {
        let op = format!("read {path}");
        let mut full = format!("{}/data/{path}", self.mount);
        if let Some(v) = version {
            full.push_str(&format!("?version={v}"));
        }
        let answer = self.call(&op, Method::GET, &full, None).await?;
        if answer.is_unknown_route()
            || !(answer.status.is_success() || answer.status == StatusCode::NOT_FOUND)
        {
            return Err(answer.fail(&op));
        }
        let absent = answer.status == StatusCode::NOT_FOUND || answer.body.is_empty();
        // A deleted or destroyed version answers 404 with its metadata.
        let body: ReadBody<T> = match serde_json::from_slice(&answer.body) {
            Ok(body) => body,
            Err(_) if absent => ReadBody { data: None },
            Err(_) => {
                return Err(Error::Decode {
                    op,
                    url: answer.url.clone(),
                })
            }
        };
        let (data, meta) = match body.data {
            Some(d) => (d.data, d.metadata.unwrap_or_default()),
            None => (None, VersionMeta::default()),
        };
        Ok(KvVersion {
            version: meta.version,
            data: if absent { None } else { data },
            created_time: meta.created_time,
            custom_metadata: meta.custom_metadata,
        })
    }

    /// Write a new version of `path`; with `cas`, only if the current
    /// version is that one (0: absent), else [`Error::CasMismatch`].
    /// Returns the new version.
    pub async fn write<T: Serialize>(
        &self,
        path: &str,
        data: &T,
        cas: Option<u64>,
    ) -> Result<u64, Error> {
        #[derive(Serialize)]
        struct Body<'a, T> {
            data: &'a T,
            #[serde(skip_serializing_if = "Option::is_none")]
            options: Option<Cas>,
        }
        #[derive(Serialize)]
        struct Cas {
            cas: u64,
        }
        let op = format!("write {path}");
        // Serialized straight from the caller's values into a buffer
        // zeroed when dropped.
        let options = cas.map(|cas| Cas { cas });
        let body =
            Zeroizing::new(serde_json::to_vec(&Body { data, options }).expect("JSON serializes"));
        let full = format!("{}/data/{path}", self.mount);
        let answer = self.call(&op, Method::POST, &full, Some(&body)).await?;
        if answer.status == StatusCode::BAD_REQUEST && answer.errors().contains("check-and-set") {
            return Err(Error::CasMismatch {
                path: path.to_owned(),
                expected: cas.unwrap_or(0),
            });
        }
        if !answer.status.is_success() {
            return Err(answer.fail(&op));
        }
        let written = answer.json(&op).unwrap_or(Value::Null);
        Ok(written["data"]["version"].as_u64().unwrap_or(0))
    }

    /// Names directly under `path` (sub-folders left out); empty when none.
    pub async fn list(&self, path: &str) -> Result<Vec<String>, Error> {
        #[derive(Deserialize)]
        struct ListBody {
            data: ListData,
        }
        #[derive(Deserialize)]
        struct ListData {
            #[serde(default)]
            keys: Vec<String>,
        }
        let op = format!("list {path}");
        let full = format!("{}/metadata/{path}?list=true", self.mount);
        let answer = self.call(&op, Method::GET, &full, None).await?;
        if answer.status == StatusCode::NOT_FOUND && answer.errors().is_empty() {
            return Ok(vec![]);
        }
        if !answer.status.is_success() {
            return Err(answer.fail(&op));
        }
        let body: ListBody = answer.parse(&op)?;
        Ok(body
            .data
            .keys
            .into_iter()
            .filter(|k| !k.ends_with('/'))
            .collect())
    }

    /// The metadata of `path`; `None` when it has none (never written, or
    /// its metadata deleted).
    pub async fn metadata(&self, path: &str) -> Result<Option<KvMetadata>, Error> {
        let op = format!("read the metadata of {path}");
        let full = format!("{}/metadata/{path}", self.mount);
        let answer = self.call(&op, Method::GET, &full, None).await?;
        if answer.status == StatusCode::NOT_FOUND && !answer.is_unknown_route() {
            return Ok(None);
        }
        if !answer.status.is_success() {
            return Err(answer.fail(&op));
        }
        let json = answer.json(&op)?;
        let data = &json["data"];
        if data.is_null() {
            return Ok(None);
        }
        let mut meta = KvMetadata {
            current: data["current_version"].as_u64().unwrap_or(0),
            custom_metadata: serde_json::from_value(data["custom_metadata"].clone()).ok(),
            ..KvMetadata::default()
        };
        for (k, v) in data["versions"].as_object().into_iter().flatten() {
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

    /// Set the `custom_metadata` of `path` (string values only, no secret).
    pub async fn write_metadata(
        &self,
        path: &str,
        custom: &BTreeMap<String, String>,
    ) -> Result<(), Error> {
        let op = format!("write the metadata of {path}");
        let body =
            serde_json::to_vec(&json!({ "custom_metadata": custom })).expect("JSON serializes");
        let full = format!("{}/metadata/{path}", self.mount);
        let answer = self.call(&op, Method::POST, &full, Some(&body)).await?;
        if !answer.status.is_success() {
            return Err(answer.fail(&op));
        }
        Ok(())
    }

    /// Undelete (recover) soft-deleted `version` of `path`.
    pub async fn undelete(&self, path: &str, version: u64) -> Result<(), Error> {
        self.versions_op("undelete", path, &[version]).await
    }

    /// Destroy the data of every version of `path` still holding some,
    /// keeping its metadata: the next write gets a higher version.
    pub async fn destroy_versions(&self, path: &str) -> Result<(), Error> {
        let Some(meta) = self.metadata(path).await? else {
            return Ok(());
        };
        let versions: Vec<u64> = meta.readable.iter().chain(&meta.deleted).copied().collect();
        if versions.is_empty() {
            return Ok(());
        }
        self.versions_op("destroy", path, &versions).await
    }

    async fn versions_op(&self, verb: &str, path: &str, versions: &[u64]) -> Result<(), Error> {
        let op = format!("{verb} {path}");
        let body = serde_json::to_vec(&json!({ "versions": versions })).expect("JSON serializes");
        let full = format!("{}/{verb}/{path}", self.mount);
        let answer = self.call(&op, Method::POST, &full, Some(&body)).await?;
        if !answer.status.is_success() {
            return Err(answer.fail(&op));
        }
        Ok(())
    }

    /// Delete the document at `path` with all its versions and metadata;
    /// an absent one is fine.
    pub async fn delete_all(&self, path: &str) -> Result<(), Error> {
        let op = format!("delete {path}");
        let full = format!("{}/metadata/{path}", self.mount);
        let answer = self.call(&op, Method::DELETE, &full, None).await?;
        if !answer.status.is_success() && answer.status != StatusCode::NOT_FOUND {
            return Err(answer.fail(&op));
        }
        Ok(())
    }
}
