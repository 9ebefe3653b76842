//! The store side of workload identity for a pull cluster, as `cluster
//! federate` asks it (the command prints the setup): with the user's
//! token, the cluster's entity (created ahead of
//! the first login and tied to its AppRole, so its id, the tokens' `sub`,
//! is known now and stays the same for every node), a signing key named
//! like the cluster's role, one OIDC role per cloud configured (`aud` the
//! cloud's audience, claims `cluster` and `rh_prefix`, no per-node data: all
//! nodes share the AppRole's entity, see /work/notes/i22-findings.md and
//! scripts/bench.d/63-federation-store-cost.sh), the cluster's policy
//! (which already grants exactly these token paths, see `admin::policy_lines`),
//! and the federation document the nodes wire their SDKs from
//! (`common::identity::Federation`); its removal with the cluster; and the
//! `identity` cell of `status`.
//! Never prints a token: there is none here (nodes fetch their own).

use common::identity::{self, Cloud, Federation, IdentityStatus};
use common::openbao::{Method, StatusCode};
use serde_json::{json, Value};

use super::admin::{self, AUTH_MOUNT};
use super::Store;
use crate::clusters::Cluster;
use crate::output::{escape_text, FOREIGN_TEXT_MAX};
use crate::vault::VaultError;

/// What the store holds after [`apply`].
pub(crate) struct Applied {
    pub(crate) issuer: String,
    pub(crate) subject: String,
    pub(crate) key: String,
    pub(crate) discovery: Value,
    pub(crate) jwks: Value,
    /// The KV version the federation document was written at.
    pub(crate) federation: u64,
}

fn decode_err(store: &Store, op: &str) -> VaultError {
    VaultError::Decode {
        op: op.to_owned(),
        url: store.client.current_url().to_owned(),
    }
}

/// Make the store match `fed` (idempotent).
pub(crate) async fn apply(
    store: &Store,
    cluster: &Cluster,
    fed: &Federation,
    algorithm: &str,
    rotation: u64,
    issuer: Option<&str>,
) -> Result<Applied, VaultError> {
    let prefix = &store.config.prefix;
    let name = admin::role_name(prefix, &cluster.name);
    let (status, _) = store
        .call(
            "read the cluster's AppRole",
            Method::GET,
            &format!("auth/{AUTH_MOUNT}/role/{name}"),
            None,
            &[],
        )
        .await?;
    if status == StatusCode::NOT_FOUND {
        return Err(VaultError::Http {
            op: "read the cluster's AppRole".into(),
            url: store.client.current_url().to_owned(),
            status: 404,
            message: format!(
                "cluster {} has no AppRole in this store: run `controller cluster enroll {}` first",
                cluster.name, cluster.name
            ),
        });
    }
    if issuer.is_none() {
        check_one_issuer(store).await?;
    }
    let subject = cluster_entity(store, &name, &cluster.name).await?;
    // The key first: it must list every audience its roles use.
    let audiences: Vec<String> = fed
        .clouds()
        .iter()
        .filter_map(|c| fed.audience(*c))
        .collect();
    let ttl = fed.token_ttl_secs;
    store
        .call_ok(
            "write the cluster's signing key",
            Method::POST,
            &format!("identity/oidc/key/{name}"),
            Some(json!({
                "algorithm": algorithm,
                "rotation_period": rotation,
                "verification_ttl": rotation.max(ttl),
                "allowed_client_ids": audiences,
            })),
            &[],
        )
        .await?;
    let template = json!({ "cluster": cluster.name, "rh_prefix": prefix }).to_string();
    for cloud in Cloud::ALL {
        let role = identity::oidc_role_name(prefix, &cluster.name, cloud);
        match fed.audience(cloud) {
            Some(aud) => {
                store
                    .call_ok(
                        &format!("write the cluster's {} OIDC role", cloud.as_str()),
                        Method::POST,
                        &format!("identity/oidc/role/{role}"),
                        Some(json!({
                            "key": name,
                            "client_id": aud,
                            "ttl": ttl,
                            "template": template,
                        })),
                        &[],
                    )
                    .await?;
            }
            None => {
                store
                    .call(
                        &format!("delete the cluster's {} OIDC role", cloud.as_str()),
                        Method::DELETE,
                        &format!("identity/oidc/role/{role}"),
                        None,
                        &[],
                    )
                    .await?;
            }
        }
    }
    admin::write_policy(store, &cluster.name).await?;
    if let Some(issuer) = issuer {
        store
            .call_ok(
                "set the store's OIDC issuer",
                Method::POST,
                "identity/oidc/config",
                Some(json!({ "issuer": issuer })),
                &[],
            )
            .await?;
    }
    let federation = store
        .kv_write(&identity::federation_path(prefix, &cluster.name), fed, None)
        .await?;
    let op = "read the OIDC discovery document";
    let discovery = store
        .call_ok(
            op,
            Method::GET,
            "identity/oidc/.well-known/openid-configuration",
            None,
            &[],
        )
        .await?;
    let issuer = discovery["issuer"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| decode_err(store, op))?;
    let jwks = store
        .call_ok(
            "read the JWKS",
            Method::GET,
            "identity/oidc/.well-known/keys",
            None,
            &[],
        )
        .await?;
    Ok(Applied {
        issuer,
        subject,
        key: name,
        discovery,
        jwks,
        federation,
    })
}

/// Refuse to federate on a store of several nodes whose OIDC issuer is not
/// set: each node would then sign with its own `api_addr` as `iss` (measured
/// on a three-node OpenBao), so a token fetched from a standby would not
/// match the issuer a cloud trusts. A store that does not say
/// (`sys/ha-status` refused) is not checked.
async fn check_one_issuer(store: &Store) -> Result<(), VaultError> {
    let (_, config) = store
        .call(
            "read the store's OIDC issuer",
            Method::GET,
            "identity/oidc/config",
            None,
            &[],
        )
        .await?;
    if config["data"]["issuer"]
        .as_str()
        .is_some_and(|i| !i.is_empty())
    {
        return Ok(());
    }
    let nodes = match store
        .call(
            "list the store's nodes",
            Method::GET,
            "sys/ha-status",
            None,
            &[],
        )
        .await
    {
        Ok((_, ha)) => ha["data"]["nodes"].as_array().map_or(0, Vec::len),
        Err(_) => 0,
    };
    if nodes > 1 {
        return Err(VaultError::Http {
            op: "federate".into(),
            url: store.client.current_url().to_owned(),
            status: 400,
            message: format!(
                "this store has {nodes} nodes and no OIDC issuer set: each node would sign \
                 with its own address as issuer; pass --issuer https://HOST (the one address \
                 the clouds fetch the discovery document from: the store's load balancer, or \
                 where --discovery-out's files are served)"
            ),
        });
    }
    Ok(())
}

/// The cluster's entity id (the tokens' `sub`): the one its AppRole's alias
/// already points to (nodes logged in), else one created now and tied to
/// the AppRole (named like the role; an entity of that name from an earlier
/// AppRole of this cluster keeps its id and gets the new alias).
async fn cluster_entity(store: &Store, name: &str, cluster: &str) -> Result<String, VaultError> {
    let op = "read the AppRole mount";
    let auth = store
        .call_ok(op, Method::GET, "sys/auth", None, &[])
        .await?;
    let mount = format!("{AUTH_MOUNT}/");
    let accessor = auth["data"][&mount]["accessor"]
        .as_str()
        .or_else(|| auth[&mount]["accessor"].as_str())
        .map(str::to_owned)
        .ok_or_else(|| decode_err(store, op))?;
    let op = "read the cluster's role_id";
    let role_id = store
        .call_ok(
            op,
            Method::GET,
            &format!("auth/{AUTH_MOUNT}/role/{name}/role-id"),
            None,
            &[],
        )
        .await?["data"]["role_id"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| decode_err(store, op))?;
    let (_, found) = store
        .call(
            "look up the cluster's entity",
            Method::POST,
            "identity/lookup/entity",
            Some(json!({ "alias_name": role_id, "alias_mount_accessor": accessor })),
            &[],
        )
        .await?;
    if let Some(id) = found["data"]["id"].as_str() {
        return Ok(id.to_owned());
    }
    let (_, named) = store
        .call(
            "read the cluster's entity",
            Method::GET,
            &format!("identity/entity/name/{name}"),
            None,
            &[],
        )
        .await?;
    let id = match named["data"]["id"].as_str() {
        Some(id) => {
            for alias in named["data"]["aliases"].as_array().into_iter().flatten() {
                if alias["mount_accessor"].as_str() == Some(accessor.as_str()) {
                    if let Some(alias_id) = alias["id"].as_str() {
                        store
                            .call(
                                "drop the entity's alias of an earlier AppRole",
                                Method::DELETE,
                                &format!("identity/entity-alias/id/{alias_id}"),
                                None,
                                &[],
                            )
                            .await?;
                    }
                }
            }
            id.to_owned()
        }
        None => {
            let op = "create the cluster's entity";
            store
                .call_ok(
                    op,
                    Method::POST,
                    "identity/entity",
                    Some(json!({
                        "name": name,
                        "metadata": { "rh_cluster": cluster, "rh_prefix": store.config.prefix },
                    })),
                    &[],
                )
                .await?["data"]["id"]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| decode_err(store, op))?
        }
    };
    store
        .call_ok(
            "tie the cluster's entity to its AppRole",
            Method::POST,
            "identity/entity-alias",
            Some(json!({ "name": role_id, "canonical_id": id, "mount_accessor": accessor })),
            &[],
        )
        .await?;
    Ok(id)
}

/// Delete the cluster's identity objects (on `cluster remove`): its OIDC
/// roles, its key (its public keys leave the JWKS, so tokens already issued
/// stop verifying), its entity and its federation document. Absent ones are fine.
pub async fn remove(store: &Store, cluster: &str) -> Result<(), VaultError> {
    let prefix = store.config.prefix.clone();
    let name = admin::role_name(&prefix, cluster);
    for cloud in Cloud::ALL {
        let role = identity::oidc_role_name(&prefix, cluster, cloud);
        store
            .call(
                "delete an OIDC role",
                Method::DELETE,
                &format!("identity/oidc/role/{role}"),
                None,
                &[],
            )
            .await?;
    }
    store
        .call(
            "delete the signing key",
            Method::DELETE,
            &format!("identity/oidc/key/{name}"),
            None,
            &[],
        )
        .await?;
    store
        .call(
            "delete the entity",
            Method::DELETE,
            &format!("identity/entity/name/{name}"),
            None,
            &[],
        )
        .await?;
    store
        .kv_destroy(&identity::federation_path(&prefix, cluster))
        .await
}

/// The `identity` cell of a node in `status`: its clouds, when its tokens
/// expire and when it last refreshed them (as of its last report), and its
/// last refresh error with its age; `-` when the cluster is not federated.
pub(crate) fn identity_cell(status: Option<&IdentityStatus>, now: u64) -> String {
    let Some(s) = status else {
        return "-".into();
    };
    let ago = |t: u64| format!("{}s ago", now.saturating_sub(t));
    let mut cell = if s.clouds.is_empty() {
        "not federated".to_owned()
    } else {
        let clouds: Vec<&str> = s.clouds.iter().map(|c| c.as_str()).collect();
        let expiry = if s.expires_at > now {
            format!("expires in {}s", s.expires_at - now)
        } else {
            format!("expired {}", ago(s.expires_at))
        };
        format!(
            "{} {expiry}, refreshed {}",
            clouds.join(","),
            ago(s.refreshed_at)
        )
    };
    if let Some(error) = &s.last_error {
        cell.push_str(&format!(
            "; last error {}: {}",
            ago(s.last_error_at),
            escape_text(error, FOREIGN_TEXT_MAX)
        ));
    }
    cell
}
