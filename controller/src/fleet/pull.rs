//! Delivery to a pull cluster: its nodes fetch their secrets from the
//! store, so `sync` publishes the plan's items (then waits for the nodes'
//! reports with `--wait`, and `--keep-fresh` publishes the refreshed
//! sessions), `revoke` unpublishes, `status` reads the reports (no SSH;
//! each report checked against its bundle's signature), and `cluster
//! remove` deletes the cluster's AppRole. The command decides nothing
//! here: it plans (`crate::plan`) and this module delivers and reports.
//! Results on stdout (a table or `--json`), diagnostics on stderr; never a
//! value, token or secret_id. Text the store or a node chose is escaped
//! before it reaches a terminal ([`super::rows`]).

use std::time::Duration;

use anyhow::{Context as _, Result};
use common::placement::PlaceOpts;
use common::wire::SyncItem;
use common::Secret;
use serde::Serialize;

use super::nodes::Registry;
use super::publish::{self, PublishOpts, Published};
use super::rows::{foreign, node_table, rows, warn_rows, NodeRow};
use super::Store;
use crate::clusters::{self, Cluster};
use crate::exit::{self, UsageError};
use crate::output::print_json;
use crate::Context;

/// A cluster whose nodes pull from the store (added with `--pull`).
#[derive(Debug)]
pub struct PullCluster {
    pub cluster: Cluster,
}

/// What `sync` published, and the nodes' reports when it waited.
#[derive(Debug)]
pub struct Publication {
    store: Store,
    cluster: String,
    /// The cluster's fingerprint key (hex), which published items are
    /// fingerprinted under.
    key: common::SecretText,
    doc: SyncDoc,
}

#[derive(Debug, Serialize)]
struct SyncDoc {
    cluster: String,
    published: Published,
    #[serde(skip_serializing_if = "Option::is_none")]
    nodes: Option<Vec<NodeRow>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    not_converged: Vec<String>,
}

#[derive(Debug, Serialize)]
struct StatusDoc {
    cluster: String,
    published_epoch: u64,
    published_version: u64,
    published_at: Option<String>,
    secrets: Vec<String>,
    nodes: Vec<NodeRow>,
}

impl PullCluster {
    /// A loaded cluster added with `--pull`.
    pub fn new(cluster: Cluster) -> Self {
        debug_assert!(cluster.pull);
        Self { cluster }
    }

    /// The flags a push takes that mean nothing here.
    pub fn refuse_push_flags(
        &self,
        secret_json: bool,
        dry_run: bool,
        overwrite: bool,
    ) -> Result<()> {
        if secret_json {
            return Err(UsageError(format!(
                "--secret-json is for push clusters; {} is a pull cluster: save the secret \
                 (`controller secret create`) and publish it by name",
                self.cluster.name
            ))
            .into());
        }
        if dry_run || overwrite {
            return Err(UsageError(
                "--dry-run and --overwrite do not apply to a pull cluster (the store holds the \
                 desired state; nodes apply it)"
                    .into(),
            )
            .into());
        }
        Ok(())
    }

    /// Publish `items` (in the form nodes read, `crate::plan::Form::Asked`),
    /// then, with `wait`, wait that long for every node to report it applied.
    pub async fn publish(
        &self,
        ctx: &Context,
        items: &[SyncItem],
        opts: PublishOpts,
        wait: Option<u64>,
    ) -> Result<Publication> {
        let name = &self.cluster.name;
        let key = clusters::fingerprint_key(&ctx.home, name)?;
        let registry = Registry::load(&ctx.home, name)?;
        let store = Store::connect(ctx)?;
        let published = publish::publish(&store, name, key.expose_secret().as_bytes(), items, opts)
            .await
            .context("publish")?;
        let target = (published.epoch, published.version);
        let reports = match wait {
            Some(secs) => Some(
                publish::wait_for(&store, name, &registry, target, Duration::from_secs(secs))
                    .await?,
            ),
            None => None,
        };
        let nodes = reports.map(|r| rows(r, target));
        let not_converged: Vec<String> = nodes
            .iter()
            .flatten()
            .filter(|r| !r.converged)
            .map(|r| r.row.id.clone())
            .collect();
        Ok(Publication {
            store,
            cluster: name.clone(),
            key,
            doc: SyncDoc {
                cluster: name.clone(),
                published,
                nodes,
                not_converged,
            },
        })
    }

    /// `controller revoke SECRET --cluster NAME`: unpublish it.
    pub async fn unpublish(
        &self,
        ctx: &Context,
        secret: &str,
        env: Option<&str>,
        json: bool,
    ) -> Result<u8> {
        let cluster = &self.cluster;
        if env.is_some() {
            return Err(UsageError(
                "--env does not apply to a pull cluster: revoke unpublishes the whole secret"
                    .into(),
            )
            .into());
        }
        common::names::validate_secret_name(secret).map_err(|e| UsageError(e.to_string()))?;
        let store = Store::connect(ctx)?;
        let version = publish::unpublish(&store, &cluster.name, secret).await?;
        if json {
            print_json(&serde_json::json!({
                "cluster": cluster.name,
                "secret": secret,
                "unpublished": version.is_some(),
                "version": version,
            }))?;
        } else {
            match version {
                Some(v) => println!(
                    "cluster {}: {secret} unpublished (version {v}); nodes remove it at their next poll",
                    cluster.name
                ),
                None => println!("cluster {}: {secret} was not published", cluster.name),
            }
        }
        Ok(exit::OK)
    }

    /// `controller status --cluster NAME`: the published manifest and the
    /// nodes' reports against it.
    pub async fn status(&self, ctx: &Context, json: bool) -> Result<u8> {
        let cluster = &self.cluster;
        let registry = Registry::load(&ctx.home, &cluster.name)?;
        let store = Store::connect(ctx)?;
        // A manifest a store writer garbled is shown as missing, not fatal.
        let manifest = match publish::manifest(&store, &cluster.name).await {
            Err(crate::vault::VaultError::Decode { .. }) => None,
            other => other?,
        };
        let reports = publish::reports(&store, &cluster.name, &registry).await?;
        let missing = manifest.is_none();
        let manifest = manifest.map(|m| m.data).unwrap_or_default();
        let published = manifest.stamp();
        let doc = StatusDoc {
            cluster: cluster.name.clone(),
            published_epoch: manifest.epoch,
            published_version: manifest.version,
            published_at: (!manifest.published_at.is_empty()).then_some(manifest.published_at),
            secrets: manifest.secrets.iter().map(|e| e.name.clone()).collect(),
            nodes: rows(reports, published),
        };
        if json {
            print_json(&doc)?;
        } else {
            // Secret names in the manifest are the store's: escaped.
            let names: Vec<String> = doc.secrets.iter().map(|n| foreign(n)).collect();
            println!(
                "cluster {} (pull): published version {}: {}",
                doc.cluster,
                doc.published_version,
                if names.is_empty() {
                    "-".to_owned()
                } else {
                    names.join(",")
                }
            );
            node_table(&doc.nodes).print()?;
        }
        warn_rows(&doc.cluster, &doc.nodes);
        if missing && doc.nodes.iter().any(|r| r.row.report.applied_version > 0) {
            eprintln!(
                "warning: the manifest of cluster {} is missing from the store (deleted?) or not a \
                 manifest: nodes keep what they have and report an error; publish again with \
                 `controller sync --cluster {}`",
                doc.cluster, doc.cluster
            );
        }
        Ok(exit::OK)
    }

    /// `controller cluster remove NAME`: delete its AppRole and policy
    /// first (nodes keep what is installed and stop updating), then the
    /// bundles recorded here (their secret_ids went with the role).
    pub async fn remove_role(&self, ctx: &Context) -> Result<()> {
        let cluster = &self.cluster;
        let store = Store::connect(ctx)?;
        super::admin::delete_role(&store, &cluster.name)
            .await
            .with_context(|| format!("delete the AppRole of cluster {}", cluster.name))?;
        super::federate::remove(&store, &cluster.name)
            .await
            .with_context(|| format!("delete the workload identity of cluster {}", cluster.name))?;
        Registry::remove(&ctx.home, &cluster.name)?;
        eprintln!(
            "cluster {}: AppRole and policy deleted; nodes keep what is installed and stop updating",
            cluster.name
        );
        Ok(())
    }
}

impl Publication {
    /// Print what was published (and the nodes' rows when it waited), and
    /// return the exit code: 3 when some node did not apply it in time, 1
    /// when some session could not be minted (`mint_failed`), else 0.
    pub fn report(&self, json: bool, mint_failed: bool) -> Result<u8> {
        let doc = &self.doc;
        if json {
            print_json(doc)?;
        } else {
            println!(
                "cluster {}: published version {} ({} changed: {}; {} unchanged)",
                doc.cluster,
                doc.published.version,
                doc.published.changed.len(),
                if doc.published.changed.is_empty() {
                    "-".to_owned()
                } else {
                    doc.published.changed.join(",")
                },
                doc.published.unchanged.len()
            );
            if let Some(nodes) = &doc.nodes {
                if nodes.is_empty() {
                    eprintln!("note: no node of {} has reported recently", doc.cluster);
                } else {
                    node_table(nodes).print()?;
                }
            }
        }
        if let Some(nodes) = &doc.nodes {
            warn_rows(&doc.cluster, nodes);
        }
        Ok(if !doc.not_converged.is_empty() {
            // Report ids are chosen by whoever wrote the report.
            let ids: Vec<String> = doc.not_converged.iter().map(|id| foreign(id)).collect();
            eprintln!(
                "error: {} node(s) did not apply version {} in time: {}",
                ids.len(),
                doc.published.version,
                ids.join(", ")
            );
            exit::PARTIAL
        } else if mint_failed {
            exit::FAILURE
        } else {
            exit::OK
        })
    }
}

/// `--keep-fresh` on a pull cluster: refreshed sessions are published
/// (the publish road of `sync`; the other secrets stay as published).
impl crate::mint::fresh::Deliver for Publication {
    fn place(&self, secret: &Secret, env: &str) -> Result<Option<SyncItem>> {
        crate::plan::item(secret, &PlaceOpts::sync(env), crate::plan::Form::Asked)
    }

    async fn deliver(&self, items: Vec<SyncItem>) -> std::result::Result<String, String> {
        let opts = PublishOpts { new_epoch: false };
        let key = self.key.expose_secret().as_bytes();
        match publish::publish(&self.store, &self.cluster, key, &items, opts).await {
            Ok(p) => Ok(format!("published version {}", p.version)),
            Err(e) => Err(format!("publish: {e}")),
        }
    }
}
