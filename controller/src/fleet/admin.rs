//! Store administration for a pull cluster, with the user's token: the
//! cluster's ACL policy (read its manifest and published secrets, create or
//! update its node reports; nothing else), its AppRole (batch tokens with a
//! short TTL, no `default` policy), fresh secret_ids (response-wrapped for
//! per-node bundles, plain with uses/TTL/CIDRs for a launch bundle) with
//! their accessors, destroying one secret_id by its accessor (revoking one
//! bundle), the bundles themselves (atomic, 0600), and deleting policy and
//! role. Never prints or logs a secret_id or a wrapping token.

use std::path::{Path, PathBuf};

use common::fleet::{cluster_base, Bundle};
use common::fsutil::{atomic_write, create_private_dir_all, PathError};
use common::identity::{self, Cloud};
use common::openbao::{Method, StatusCode};
use common::{SecretText, SecretValue};
use serde_json::{json, Value};

use super::Store;
use crate::vault::VaultError;

/// The AppRole auth mount the bundles log in at.
pub const AUTH_MOUNT: &str = "approle";

/// The name of a cluster's policy and AppRole: unique per store prefix.
pub fn role_name(prefix: &str, cluster: &str) -> String {
    common::identity::fleet_role_name(prefix, cluster)
}

/// The cluster's ACL policy (HCL). Also its workload identity (`cluster
/// federate`): its federation document and exactly its own OIDC roles'
/// token paths, whether federated yet or not (so enroll and federate write
/// the same policy).
pub fn policy_text(mount: &str, prefix: &str, cluster: &str) -> String {
    let base = format!("{mount}/data/{}", cluster_base(prefix, cluster));
    let mut text = format!(
        "# rh-secrets fleet mode: nodes of cluster {cluster}\n\
         path \"{base}/manifest\" {{ capabilities = [\"read\"] }}\n\
         path \"{base}/secrets/*\" {{ capabilities = [\"read\"] }}\n\
         path \"{base}/nodes/*\" {{ capabilities = [\"create\", \"update\"] }}\n"
    );
    text.push_str(&policy_lines(mount, prefix, cluster));
    text
}

/// The lines of the cluster's ACL policy for its workload identity: read on
/// its federation document and on exactly its own OIDC roles' token paths
/// (never a wildcard: another cluster's role name may start with this one's).
pub fn policy_lines(mount: &str, prefix: &str, cluster: &str) -> String {
    let mut text = format!(
        "path \"{mount}/data/{}\" {{ capabilities = [\"read\"] }}\n",
        identity::federation_path(prefix, cluster)
    );
    for cloud in Cloud::ALL {
        text.push_str(&format!(
            "path \"{}\" {{ capabilities = [\"read\"] }}\n",
            identity::token_api_path(prefix, cluster, cloud)
        ));
    }
    text
}

/// Write the cluster's ACL policy ([`policy_text`]).
pub async fn write_policy(store: &Store, cluster: &str) -> Result<(), VaultError> {
    let cfg = &store.config;
    store
        .call_ok(
            "write the cluster's policy",
            Method::PUT,
            &format!("sys/policies/acl/{}", role_name(&cfg.prefix, cluster)),
            Some(json!({ "policy": policy_text(&cfg.mount, &cfg.prefix, cluster) })),
            &[],
        )
        .await?;
    Ok(())
}

/// How the role issues tokens.
#[derive(Debug, Clone, Copy)]
pub struct RoleOptions {
    /// Batch token TTL, seconds.
    pub token_ttl: u64,
}

fn approle_missing(store: &Store) -> VaultError {
    VaultError::Http {
        op: "configure the cluster's AppRole".into(),
        url: store.client.current_url().to_owned(),
        status: 404,
        message: format!(
            "AppRole auth is not enabled at auth/{AUTH_MOUNT}/: enable it once with \
             `bao auth enable approle` (or `vault auth enable approle`)"
        ),
    }
}

/// Create or update the cluster's policy and AppRole (idempotent); returns
/// the role_id.
pub async fn ensure_role(
    store: &Store,
    cluster: &str,
    opts: RoleOptions,
) -> Result<String, VaultError> {
    let name = role_name(&store.config.prefix, cluster);
    write_policy(store, cluster).await?;
    // Re-login uses the kept secret_id again, so a per-node secret_id is not
    // limited in uses: the single use that matters is the wrapping token's.
    let (status, _) = store
        .call(
            "write the cluster's AppRole",
            Method::POST,
            &format!("auth/{AUTH_MOUNT}/role/{name}"),
            Some(json!({
                "token_policies": [name],
                "token_type": "batch",
                "token_ttl": opts.token_ttl,
                "token_max_ttl": opts.token_ttl,
                "token_no_default_policy": true,
                "bind_secret_id": true,
                "secret_id_num_uses": 0,
                "secret_id_ttl": 0,
            })),
            &[],
        )
        .await?;
    if status == StatusCode::NOT_FOUND {
        return Err(approle_missing(store));
    }
    let body = store
        .call_ok(
            "read the cluster's role_id",
            Method::GET,
            &format!("auth/{AUTH_MOUNT}/role/{name}/role-id"),
            None,
            &[],
        )
        .await?;
    body["data"]["role_id"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| VaultError::Decode {
            op: "read the cluster's role_id".into(),
            url: store.client.current_url().to_owned(),
        })
}

/// What kind of secret_id to mint.
#[derive(Debug, Clone)]
pub enum SecretIdKind {
    /// Response-wrapped, unwrappable once within `wrap_ttl` seconds.
    Wrapped { wrap_ttl: u64 },
    /// Plain, `uses` logins within `ttl` seconds, from `cidrs` only.
    Reusable {
        uses: u64,
        ttl: u64,
        cidrs: Vec<String>,
    },
}

/// A secret_id as minted: what goes into the bundle (the wrapping token,
/// or the secret_id itself for a reusable one) and the secret_id's
/// accessor (kept by the controller to revoke it).
#[derive(Debug)]
pub struct Minted {
    pub secret: SecretValue,
    pub accessor: String,
}

/// Mint one secret_id for the cluster's role. It carries no metadata: every
/// node of a cluster logs in through one AppRole, so one entity alias, and
/// OpenBao copies a login's secret_id metadata onto that alias, a Raft write
/// whenever it differs from the last login's (measured: 1.00 write per
/// login with per-bundle metadata, 0.01 without; at 10,000 nodes re-logging
/// in every ~400 s, 25 writes/s). Which bundle a secret_id belongs to is
/// kept here instead (`fleet::nodes`, with its accessor). `name` and
/// `bundle_id` are for errors only. A wrapped one is minted plain (the
/// answer carries its accessor, which a wrapped answer hides) and wrapped
/// at once with `sys/wrapping/wrap` (the same `data.secret_id` a node
/// unwraps); it never leaves this process unwrapped.
pub async fn new_secret_id(
    store: &Store,
    cluster: &str,
    kind: &SecretIdKind,
    name: &str,
    bundle_id: &str,
) -> Result<Minted, VaultError> {
    let role = role_name(&store.config.prefix, cluster);
    let path = format!("auth/{AUTH_MOUNT}/role/{role}/secret-id");
    let op = format!("mint a secret_id for {name} ({bundle_id})");
    let op = op.as_str();
    let body = match kind {
        SecretIdKind::Wrapped { .. } => json!({}),
        SecretIdKind::Reusable { uses, ttl, cidrs } => {
            let mut b = json!({ "num_uses": uses, "ttl": ttl });
            if !cidrs.is_empty() {
                b["cidr_list"] = json!(cidrs);
                b["token_bound_cidrs"] = json!(cidrs);
            }
            b
        }
    };
    let (status, mut reply) = store.call(op, Method::POST, &path, Some(body), &[]).await?;
    if status == StatusCode::NOT_FOUND {
        return Err(approle_missing(store));
    }
    let decode = || VaultError::Decode {
        op: op.into(),
        url: store.client.current_url().to_owned(),
    };
    let (Value::String(secret_id), Value::String(accessor)) = (
        reply["data"]["secret_id"].take(),
        reply["data"]["secret_id_accessor"].take(),
    ) else {
        return Err(decode());
    };
    let secret_id = SecretValue::from_string(secret_id);
    let secret = match kind {
        SecretIdKind::Reusable { .. } => secret_id,
        SecretIdKind::Wrapped { wrap_ttl } => {
            let op = "wrap the secret_id";
            let body = json!({ "secret_id": secret_id.expose_str().unwrap_or_default() });
            let headers = [("X-Vault-Wrap-TTL", format!("{wrap_ttl}s"))];
            let mut reply = store
                .call_ok(op, Method::POST, "sys/wrapping/wrap", Some(body), &headers)
                .await?;
            match reply["wrap_info"]["token"].take() {
                Value::String(t) => SecretValue::from_string(t),
                _ => return Err(decode()),
            }
        }
    };
    Ok(Minted { secret, accessor })
}

/// Destroy the secret_id whose accessor is `accessor`: no node logs in
/// with it again (tokens it already got end within their TTL). One
/// already gone is fine.
pub async fn destroy_secret_id(
    store: &Store,
    cluster: &str,
    accessor: &str,
) -> Result<(), VaultError> {
    let role = role_name(&store.config.prefix, cluster);
    let op = "destroy a bundle's secret_id";
    let path = format!("auth/{AUTH_MOUNT}/role/{role}/secret-id-accessor/destroy");
    let body = json!({ "secret_id_accessor": accessor });
    match store.call(op, Method::POST, &path, Some(body), &[]).await {
        Ok(_) => Ok(()),
        Err(VaultError::Http { message, .. })
            if message.contains("failed to find accessor entry") =>
        {
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Delete the cluster's AppRole and policy: every node's login fails and its
/// current (batch) token loses its policy at once. Absent ones are fine.
pub async fn delete_role(store: &Store, cluster: &str) -> Result<(), VaultError> {
    let name = role_name(&store.config.prefix, cluster);
    store
        .call(
            "delete the cluster's AppRole",
            Method::DELETE,
            &format!("auth/{AUTH_MOUNT}/role/{name}"),
            None,
            &[],
        )
        .await?;
    store
        .call(
            "delete the cluster's policy",
            Method::DELETE,
            &format!("sys/policies/acl/{name}"),
            None,
            &[],
        )
        .await?;
    Ok(())
}

/// Who a bundle is: its name, id and report key (hex).
#[derive(Debug)]
pub struct BundleIdentity {
    pub name: String,
    pub bundle_id: String,
    pub report_key: SecretText,
}

/// A bundle for this store and cluster around one secret_id, for a fleet of
/// about `fleet_size` nodes (sizes its boot spread; 0: unknown).
pub fn bundle(
    store: &Store,
    cluster: &str,
    role_id: &str,
    secret: SecretValue,
    wrapped: bool,
    fleet_size: u64,
    who: BundleIdentity,
) -> Result<Bundle, VaultError> {
    let cfg = &store.config;
    let ca_pem = match &cfg.ca_cert {
        Some(path) => Some(
            std::fs::read_to_string(path).map_err(|e| VaultError::CaFile {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?,
        ),
        None => None,
    };
    let (wrapped_secret_id, secret_id) = if wrapped {
        (Some(secret), None)
    } else {
        (None, Some(secret))
    };
    Ok(Bundle {
        format: common::fleet::BUNDLE_FORMAT,
        cluster: cluster.to_owned(),
        urls: cfg.urls.clone(),
        ca_pem,
        mount: cfg.mount.clone(),
        prefix: cfg.prefix.clone(),
        auth_mount: AUTH_MOUNT.into(),
        role_id: role_id.to_owned(),
        wrapped_secret_id,
        secret_id,
        boot_spread_secs: common::fleet::boot_spread_secs(fleet_size),
        report_spread_secs: common::fleet::report_spread_secs(fleet_size),
        heartbeat_secs: common::fleet::heartbeat_secs(fleet_size),
        name: Some(who.name),
        bundle_id: Some(who.bundle_id),
        report_key: Some(SecretValue::from_string(
            who.report_key.expose_secret().to_owned(),
        )),
        unknown: Default::default(),
    })
}

/// Write a bundle to `dir/file` (dir 0700, file 0600, atomic).
pub fn write_bundle(dir: &Path, file: &str, bundle: &Bundle) -> Result<PathBuf, PathError> {
    create_private_dir_all(dir)?;
    let path = dir.join(file);
    let text = SecretText::new(serde_json::to_string_pretty(bundle).expect("bundle serializes"));
    atomic_write(&path, text.expose_secret().as_bytes())?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_names_only_the_cluster_paths() {
        let p = policy_text("secret", "rh/alice", "gpu");
        assert!(p.contains("path \"secret/data/rh/alice/clusters/gpu/manifest\""));
        assert!(p.contains("secret/data/rh/alice/clusters/gpu/secrets/*"));
        assert!(p.contains("secret/data/rh/alice/clusters/gpu/nodes/*"));
        assert!(!p.contains("rh/alice/*"));
        assert!(!p.contains("\"delete\"") && !p.contains("list"));
        assert_eq!(role_name("rh/alice", "gpu"), "rh-fleet-rh-alice-gpu");
    }

    #[test]
    fn the_policy_names_exactly_this_cluster_s_token_paths() {
        let p = policy_lines("secret", "rh/alice", "gpu");
        assert!(p.contains("path \"secret/data/rh/alice/clusters/gpu/federation\""));
        for cloud in ["aws", "gcp", "azure"] {
            assert!(p.contains(&format!(
                "path \"identity/oidc/token/rh-fleet-rh-alice-gpu-{cloud}\" {{ capabilities = [\"read\"] }}"
            )));
        }
        assert!(!p.contains('*'), "{p}");
        assert!(!p.contains("update") && !p.contains("create"));
    }
}
