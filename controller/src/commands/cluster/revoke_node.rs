//! `controller cluster revoke-node NAME NODE | --bundle FILE`: destroy one
//! bundle's secret_id through the accessor recorded when it was enrolled
//! here. A node is found by its name, or by a report whose signature
//! verifies (a forged report cannot point at another node's bundle). Text
//! the store or a node chose is escaped; never prints a secret_id.

use std::path::Path;

use anyhow::{Context as _, Result};
use common::fleet::{self, Bundle};
use serde::Serialize;

use crate::cli::RevokeNodeArgs;
use crate::exit::{self, UsageError};
use crate::fleet::admin;
use crate::fleet::nodes::{BundleEntry, BundleKind, Registry, Trust};
use crate::fleet::publish;
use crate::fleet::rows::foreign;
use crate::fleet::Store;
use crate::output::print_json;
use crate::Context;

#[derive(Debug, Serialize)]
struct RevokeNodeDoc {
    cluster: String,
    bundle: String,
    bundle_id: String,
    revoked: bool,
}

/// `controller cluster revoke-node NAME NODE | --bundle FILE`: destroy one
/// bundle's secret_id through the accessor recorded when it was made.
pub(super) async fn run(args: RevokeNodeArgs, ctx: &Context) -> Result<u8> {
    let cluster = super::load_pull(ctx, &args.name, |c| {
        format!("cluster {} is not a pull cluster", c.name)
    })?;
    let mut registry = Registry::load(&ctx.home, &cluster.name)?;
    let store = Store::connect(ctx)?;
    let entry = match (&args.node, &args.bundle) {
        (_, Some(file)) => bundle_file_entry(&registry, &cluster.name, file)?,
        (Some(node), None) => match registry.named(node) {
            Some(e) => e.clone(),
            None => node_entry(&store, &registry, &cluster.name, node).await?,
        },
        (None, None) => unreachable!("clap requires NODE or --bundle"),
    };
    let done = entry.revoked_at.is_some();
    if !done {
        admin::destroy_secret_id(&store, &cluster.name, &entry.accessor)
            .await
            .with_context(|| format!("revoke bundle {} of cluster {}", entry.name, cluster.name))?;
        registry.mark_revoked(&entry.bundle_id);
        registry.save(&ctx.home, &cluster.name)?;
    }
    let doc = RevokeNodeDoc {
        cluster: cluster.name.clone(),
        bundle: entry.name.clone(),
        bundle_id: entry.bundle_id.clone(),
        revoked: true,
    };
    if args.output.json {
        print_json(&doc)?;
    } else if done {
        println!(
            "cluster {}: bundle {} ({}) was already revoked",
            doc.cluster, doc.bundle, doc.bundle_id
        );
    } else {
        println!(
            "cluster {}: bundle {} ({}) revoked: its secret_id no longer logs in; a node using it \
             stops updating when its current token expires (the token TTL); enroll it again with \
             `controller cluster enroll {} --out DIR --node {}`",
            doc.cluster, doc.bundle, doc.bundle_id, doc.cluster, doc.bundle
        );
        if entry.kind == BundleKind::Launch {
            eprintln!(
                "note: {} is a launch bundle: every node started from it stops updating",
                doc.bundle
            );
        }
    }
    Ok(exit::OK)
}

/// The recorded bundle a bundle file is (by its bundle id).
fn bundle_file_entry(registry: &Registry, cluster: &str, file: &Path) -> Result<BundleEntry> {
    let text = common::fsutil::read_optional(file)?
        .ok_or_else(|| UsageError(format!("bundle {}: no such file", file.display())))?;
    let bundle: Bundle = serde_json::from_str(text.expose_secret())
        .map_err(|_| UsageError(format!("{} is not a node bundle", file.display())))?;
    if bundle.cluster != cluster {
        return Err(UsageError(format!(
            "bundle {} is for cluster {}, not {cluster}",
            file.display(),
            foreign(&bundle.cluster)
        ))
        .into());
    }
    let id = bundle
        .bundle_id
        .filter(|id| fleet::is_bundle_id(id))
        .ok_or_else(|| {
            UsageError(format!(
            "bundle {} has no bundle id (written before bundles had one): it cannot be revoked \
             alone; `controller cluster remove {cluster}` revokes every bundle",
            file.display()
        ))
        })?;
    registry.by_id(&id).cloned().ok_or_else(|| {
        UsageError(format!(
            "bundle {} ({id}) was not enrolled from this machine (no record in \
             ~/.rh/clusters/{cluster}.nodes.json): revoke it where it was enrolled",
            file.display()
        ))
        .into()
    })
}

/// The recorded bundle of the node `node` (a report id, or a node id
/// without its bundle suffix): the bundles of the reports under that id
/// whose signature verifies. A forged report cannot point here at another
/// node's bundle.
async fn node_entry(
    store: &Store,
    registry: &Registry,
    cluster: &str,
    node: &str,
) -> Result<BundleEntry> {
    let matching = publish::reports(store, cluster, registry)
        .await?
        .into_iter()
        .filter(|r| r.id == node || r.id.rsplit_once('.').is_some_and(|(base, _)| base == node))
        .collect::<Vec<_>>();
    let mut found: Vec<BundleEntry> = Vec::new();
    for r in &matching {
        if r.trust != Trust::Verified {
            continue;
        }
        let entry = r
            .report
            .bundle_id
            .as_deref()
            .and_then(|b| registry.by_id(b));
        if let Some(e) = entry.filter(|e| !found.iter().any(|f| f.bundle_id == e.bundle_id)) {
            found.push(e.clone());
        }
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => {
            let known = registry.live_names();
            Err(UsageError(format!(
                "no bundle or node {} in cluster {cluster}{}: give a bundle name ({}) or a node \
                 id from `controller status --cluster {cluster}`",
                foreign(node),
                if matching.is_empty() {
                    String::new()
                } else {
                    " with a report that verifies".to_owned()
                },
                if known.is_empty() {
                    "none enrolled from this machine".to_owned()
                } else {
                    known.join(", ")
                }
            ))
            .into())
        }
        _ => Err(UsageError(format!(
            "node {} reports with more than one bundle ({}): give the bundle name",
            foreign(node),
            found
                .iter()
                .map(|e| e.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))
        .into()),
    }
}
