//! The commands of a pull cluster, called by `cluster enroll`, and by
//! `sync`, `revoke`, `status` and `cluster remove` when the cluster was
//! added with `--pull`: enroll (policy + AppRole + bundles), publish (with
//! `--wait`), unpublish, per-node status from the reports (no SSH), and
//! removal of the AppRole. Results on stdout (a table or `--json`),
//! diagnostics on stderr; never a value, token or secret_id.

use std::time::Duration;

use anyhow::{Context as _, Result};
use common::fleet::NodeReport;
use common::wire::SyncItem;
use serde::Serialize;

use super::admin::{self, RoleOptions, SecretIdKind};
use super::publish::{self, converged};
use super::{now_secs, parse_duration, Store};
use crate::cli::{EnrollArgs, StatusArgs, SyncArgs};
use crate::clusters::{self, Cluster};
use crate::commands::sync::{plan_items, SecretPool};
use crate::commands::vault::connect;
use crate::commands::{exit, UsageError};
use crate::output::{escape_text, FOREIGN_TEXT_MAX};
use crate::output::{print_json, Table};
use crate::Context;

/// The cluster `name` when it is a pull cluster (`None` otherwise, or when
/// it does not exist: the push path reports that).
pub fn pull_cluster(ctx: &Context, name: &str) -> Option<Cluster> {
    clusters::load(&ctx.home, name).ok().filter(|c| c.pull)
}

fn store(ctx: &Context) -> Result<Store> {
    let (config, client) = connect(ctx)?;
    Ok(Store::new(client, config))
}

fn duration(flag: &str, text: &str) -> Result<u64> {
    parse_duration(text).ok_or_else(|| {
        UsageError(format!(
            "{flag} {text:?} is not a duration (e.g. 90s, 15m, 2h)"
        ))
        .into()
    })
}

#[derive(Debug, Serialize)]
struct EnrollDoc {
    cluster: String,
    role: String,
    bundles: Vec<String>,
    reusable: bool,
}

/// `controller cluster enroll NAME --out DIR ...`.
pub async fn enroll(args: EnrollArgs, ctx: &Context) -> Result<u8> {
    let cluster = clusters::load(&ctx.home, &args.name).map_err(|e| UsageError(e.to_string()))?;
    if !cluster.pull {
        return Err(UsageError(format!(
            "cluster {} is not a pull cluster: add it with `controller cluster add {} --pull`",
            cluster.name, cluster.name
        ))
        .into());
    }
    let wrap_ttl = duration("--wrap-ttl", &args.wrap_ttl)?;
    let token_ttl = duration("--token-ttl", &args.token_ttl)?;
    let kind = if args.reusable {
        let ttl = duration("--ttl", args.ttl.as_deref().unwrap_or(""))?;
        // 0: not counted (Vault's num_uses 0), bounded by the TTL and CIDRs only.
        let uses = args
            .uses
            .ok_or_else(|| UsageError("--reusable needs --uses N (0: not counted)".into()))?;
        if uses == 0 && args.cidrs.is_empty() {
            eprintln!(
                "warning: --uses 0 without --cidr: the launch bundle logs in from anywhere, \
                 any number of times, until its --ttl runs out"
            );
        }
        SecretIdKind::Reusable {
            uses,
            ttl,
            cidrs: args.cidrs.clone(),
        }
    } else {
        if args.nodes == 0 {
            return Err(UsageError("--nodes must be at least 1".into()).into());
        }
        SecretIdKind::Wrapped { wrap_ttl }
    };
    let store = store(ctx)?;
    let written = async {
        let role_id = admin::ensure_role(&store, &cluster.name, RoleOptions { token_ttl }).await?;
        let count = if args.reusable { 1 } else { args.nodes };
        // The fleet booting from these bundles: the nodes enrolled, or the
        // logins a launch bundle allows (0: not counted, size unknown).
        let fleet_size = if args.reusable {
            args.uses.unwrap_or(0)
        } else {
            count as u64
        };
        let mut written = Vec::with_capacity(count);
        for i in 1..=count {
            let file = if args.reusable {
                "launch.json".to_owned()
            } else {
                format!("node-{i}.json")
            };
            let secret = admin::new_secret_id(&store, &cluster.name, &kind, &file).await?;
            let bundle = admin::bundle(
                &store,
                &cluster.name,
                &role_id,
                secret,
                !args.reusable,
                fleet_size,
            )?;
            let path = admin::write_bundle(&args.out, &file, &bundle)?;
            written.push(path.display().to_string());
        }
        anyhow::Ok(written)
    }
    .await?;
    let doc = EnrollDoc {
        cluster: cluster.name.clone(),
        role: admin::role_name(&store.config.prefix, &cluster.name),
        bundles: written,
        reusable: args.reusable,
    };
    if args.output.json {
        print_json(&doc)?;
    } else {
        for b in &doc.bundles {
            println!("{b}");
        }
        if args.reusable {
            eprintln!(
                "note: a launch bundle is weaker than per-node bundles: whoever reads it can log \
                 in as cluster {} until its {} run out",
                cluster.name,
                if args.uses == Some(0) {
                    "TTL"
                } else {
                    "uses or TTL"
                }
            );
        }
        eprintln!(
            "{} bundle(s) for cluster {} (AppRole {}); start each node with `agent serve --pull BUNDLE`",
            doc.bundles.len(),
            cluster.name,
            doc.role
        );
    }
    Ok(exit::OK)
}

/// One row of `sync --wait` and `status`.
#[derive(Debug, Serialize)]
struct NodeRow {
    #[serde(flatten)]
    report: NodeReport,
    live: bool,
    converged: bool,
}

#[derive(Debug, Serialize)]
struct SyncDoc {
    cluster: String,
    published: publish::Published,
    #[serde(skip_serializing_if = "Option::is_none")]
    nodes: Option<Vec<NodeRow>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    not_converged: Vec<String>,
}

fn rows(reports: Vec<NodeReport>, version: u64) -> Vec<NodeRow> {
    let now = now_secs();
    reports
        .into_iter()
        .map(|r| NodeRow {
            live: r.is_live(now),
            converged: converged(&r, version),
            report: r,
        })
        .collect()
}

fn node_table(rows: &[NodeRow]) -> Table {
    let now = now_secs();
    let mut t = Table::new(&[
        "node",
        "hostname",
        "applied",
        "state",
        "last poll",
        "last error",
        "secrets",
    ]);
    for r in rows {
        let state = match (r.live, r.converged) {
            (false, _) => "silent",
            (true, true) => "converged",
            (true, false) => "behind",
        };
        // Reports are written by nodes: escaped before they reach a terminal.
        let foreign = |text: &str| escape_text(text, FOREIGN_TEXT_MAX);
        t.row(vec![
            foreign(&r.report.node_id),
            foreign(&r.report.hostname),
            r.report.applied_version.to_string(),
            state.into(),
            format!("{}s ago", now.saturating_sub(r.report.last_poll)),
            r.report
                .last_error
                .as_deref()
                .map_or_else(|| "-".into(), foreign),
            foreign(&r.report.secrets.join(",")),
        ]);
    }
    t
}

/// `controller sync --cluster NAME` on a pull cluster: publish, then `--wait`.
pub async fn sync(args: SyncArgs, ctx: &Context, cluster: &Cluster) -> Result<u8> {
    if args.dry_run || args.overwrite {
        return Err(UsageError(
            "--dry-run and --overwrite do not apply to a pull cluster (the store holds the \
             desired state; nodes apply it)"
                .into(),
        )
        .into());
    }
    common::names::validate_env_name(&args.env).map_err(|e| UsageError(e.to_string()))?;
    let pool = SecretPool::load(ctx)?;
    let mut secrets = pool.select(&args.secrets)?;
    let sessions = pool.select_sessions(&args.secrets);
    let (kube, kube_failed) = crate::mint::resolve_kube(&mut secrets).await;
    let (items, skipped) = plan_items(&secrets, &args.env)?;
    // Published in the older item form: each node places it again under
    // its own policy.
    let mut items: Vec<SyncItem> = items.iter().map(SyncItem::as_request).collect();
    for s in &skipped {
        eprintln!("note: skipped {}: {}", s.secret, s.reason);
    }
    // Session secrets: minted here and published (nodes serve them).
    let target = crate::mint::Target {
        env: &args.env,
        local: false,
    };
    let (minted, mut mint_failed) = crate::mint::plan(ctx, &sessions, target).await;
    mint_failed.extend(kube_failed);
    for (name, why) in &mint_failed {
        eprintln!("error: session secret {name} could not be minted: {why}");
    }
    let first = crate::mint::minted_of(&minted);
    items.extend(minted);
    if items.is_empty() && !mint_failed.is_empty() {
        return Ok(exit::FAILURE);
    }
    if items.is_empty() {
        anyhow::bail!("nothing to publish: no secret detected or saved");
    }
    let key = clusters::fingerprint_key(&ctx.home, &cluster.name)?;
    let store = store(ctx)?;
    let (published, reports) = async {
        let published = publish::publish(
            &store,
            &cluster.name,
            key.expose_secret().as_bytes(),
            &items,
        )
        .await
        .context("publish")?;
        let reports = match args.wait {
            Some(secs) => Some(
                publish::wait_for(
                    &store,
                    &cluster.name,
                    published.version,
                    Duration::from_secs(secs),
                )
                .await?,
            ),
            None => None,
        };
        anyhow::Ok((published, reports))
    }
    .await?;
    let nodes = reports.map(|r| rows(r, published.version));
    let not_converged: Vec<String> = nodes
        .iter()
        .flatten()
        .filter(|r| !r.converged)
        .map(|r| r.report.node_id.clone())
        .collect();
    let doc = SyncDoc {
        cluster: cluster.name.clone(),
        published,
        nodes,
        not_converged,
    };
    if args.output.json {
        print_json(&doc)?;
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
    let code = if !doc.not_converged.is_empty() {
        eprintln!(
            "error: {} node(s) did not apply version {} in time: {}",
            doc.not_converged.len(),
            doc.published.version,
            doc.not_converged.join(", ")
        );
        exit::PARTIAL
    } else if !mint_failed.is_empty() {
        exit::FAILURE
    } else {
        exit::OK
    };
    if args.keep_fresh {
        let publish = Publish {
            store: &store,
            cluster: &cluster.name,
            key: key.expose_secret().as_bytes(),
        };
        crate::mint::fresh::run(ctx, &cluster.name, sessions, first, kube, target, &publish)
            .await?;
    }
    Ok(code)
}

/// `--keep-fresh` on a pull cluster: refreshed sessions are published
/// (the publish path of `sync`; the other secrets stay as published).
struct Publish<'a> {
    store: &'a Store,
    cluster: &'a str,
    key: &'a [u8],
}

impl crate::mint::fresh::Deliver for Publish<'_> {
    async fn deliver(&self, items: Vec<SyncItem>) -> std::result::Result<String, String> {
        let items: Vec<SyncItem> = items.iter().map(SyncItem::as_request).collect();
        match publish::publish(self.store, self.cluster, self.key, &items).await {
            Ok(p) => Ok(format!("published version {}", p.version)),
            Err(e) => Err(format!("publish: {e}")),
        }
    }
}

/// `controller revoke SECRET --cluster NAME` on a pull cluster: unpublish.
pub async fn revoke(
    secret: &str,
    env: Option<&str>,
    json: bool,
    ctx: &Context,
    cluster: &Cluster,
) -> Result<u8> {
    if env.is_some() {
        return Err(UsageError(
            "--env does not apply to a pull cluster: revoke unpublishes the whole secret".into(),
        )
        .into());
    }
    common::names::validate_secret_name(secret).map_err(|e| UsageError(e.to_string()))?;
    let store = store(ctx)?;
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

#[derive(Debug, Serialize)]
struct StatusDoc {
    cluster: String,
    published_version: u64,
    published_at: Option<String>,
    secrets: Vec<String>,
    nodes: Vec<NodeRow>,
}

/// `controller status --cluster NAME` on a pull cluster: the reports.
pub async fn status(args: &StatusArgs, ctx: &Context, cluster: &Cluster) -> Result<u8> {
    let store = store(ctx)?;
    let manifest = publish::manifest(&store, &cluster.name).await?;
    let reports = publish::reports(&store, &cluster.name).await?;
    let manifest = manifest.map(|m| m.data).unwrap_or_default();
    let doc = StatusDoc {
        cluster: cluster.name.clone(),
        published_version: manifest.version,
        published_at: (!manifest.published_at.is_empty()).then_some(manifest.published_at),
        secrets: manifest.secrets.iter().map(|e| e.name.clone()).collect(),
        nodes: rows(reports, manifest.version),
    };
    if args.output.json {
        print_json(&doc)?;
    } else {
        println!(
            "cluster {} (pull): published version {}: {}",
            doc.cluster,
            doc.published_version,
            if doc.secrets.is_empty() {
                "-".to_owned()
            } else {
                doc.secrets.join(",")
            }
        );
        node_table(&doc.nodes).print()?;
    }
    Ok(exit::OK)
}

/// `controller cluster remove NAME` on a pull cluster: delete its AppRole
/// and policy first (nodes keep what is installed and stop updating).
pub async fn remove_role(ctx: &Context, cluster: &Cluster) -> Result<()> {
    let store = store(ctx)?;
    admin::delete_role(&store, &cluster.name)
        .await
        .with_context(|| format!("delete the AppRole of cluster {}", cluster.name))?;
    eprintln!(
        "cluster {}: AppRole and policy deleted; nodes keep what is installed and stop updating",
        cluster.name
    );
    Ok(())
}
