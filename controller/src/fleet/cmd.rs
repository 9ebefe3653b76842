//! The commands of a pull cluster, called by `cluster enroll` and
//! `cluster revoke-node`, and by `sync`, `revoke`, `status` and
//! `cluster remove` when the cluster was added with `--pull`: enroll
//! (policy + AppRole + bundles, each recorded with its secret_id accessor),
//! revoking one bundle, publish (with `--wait`), unpublish, per-node status
//! from the reports (no SSH; each report checked against its bundle's
//! signature), and removal of the AppRole. Results on stdout (a table or
//! `--json`), diagnostics on stderr; never a value, token or secret_id.
//! Text the store or a node chose (report ids, host names, errors, secret
//! names of the manifest) is escaped before it reaches a terminal.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, Result};
use common::fleet::{self, Bundle};
use common::wire::SyncItem;
use serde::Serialize;

use super::admin::{self, BundleIdentity, RoleOptions, SecretIdKind};
use super::nodes::{BundleEntry, BundleKind, Registry, ReportRow, Trust};
use super::publish::{self, PublishOpts};
use super::{now_secs, parse_duration, Store};
use crate::cli::{EnrollArgs, RevokeNodeArgs, StatusArgs, SyncArgs};
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
    /// Bundles of the same names enrolled before, now revoked.
    revoked: Vec<String>,
}

/// The names of the bundles to write: the launch bundle's, the `--node`
/// names given, or the next `--nodes` free `node-<k>` names.
fn bundle_names(args: &EnrollArgs, registry: &Registry) -> Result<Vec<String>> {
    if args.reusable {
        return Ok(vec![registry.next_name("launch-")]);
    }
    if args.node_names.is_empty() {
        let first = registry.next_name("node-");
        let k: usize = first["node-".len()..].parse().expect("next_name numbers");
        return Ok((k..k + args.nodes).map(|i| format!("node-{i}")).collect());
    }
    let mut names = Vec::new();
    for n in &args.node_names {
        if !fleet::is_bundle_name(n) {
            return Err(UsageError(format!(
                "--node {n:?} is not a bundle name (letters, digits and . _ - @ : [ ], at most \
                 128, e.g. node-3)"
            ))
            .into());
        }
        if !names.contains(n) {
            names.push(n.clone());
        }
    }
    Ok(names)
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
    let mut registry = Registry::load(&ctx.home, &cluster.name)?;
    let names = bundle_names(&args, &registry)?;
    let store = store(ctx)?;
    // The fleet booting from these bundles: the nodes enrolled, or the
    // logins a launch bundle allows (0: not counted, size unknown).
    let fleet_size = if args.reusable {
        args.uses.unwrap_or(0)
    } else {
        names.len() as u64
    };
    let mut written = Vec::with_capacity(names.len());
    let mut replaced: Vec<BundleEntry> = Vec::new();
    let made = async {
        let role_id = admin::ensure_role(&store, &cluster.name, RoleOptions { token_ttl }).await?;
        for name in names {
            let (bundle_id, report_key) = registry.new_bundle_key();
            let minted =
                admin::new_secret_id(&store, &cluster.name, &kind, &name, &bundle_id).await?;
            let who = BundleIdentity {
                name: name.clone(),
                bundle_id: bundle_id.clone(),
                report_key,
            };
            let bundle = admin::bundle(
                &store,
                &cluster.name,
                &role_id,
                minted.secret,
                !args.reusable,
                fleet_size,
                who,
            )?;
            let file = if args.reusable {
                "launch.json".to_owned()
            } else {
                format!("{name}.json")
            };
            let path = admin::write_bundle(&args.out, &file, &bundle)?;
            written.push(path.display().to_string());
            let entry = BundleEntry {
                name,
                bundle_id,
                accessor: minted.accessor,
                kind: if args.reusable {
                    BundleKind::Launch
                } else {
                    BundleKind::Node
                },
                created_at: common::time::now_rfc3339(false),
                revoked_at: None,
            };
            // Enrolling a node again revokes the bundle it had: a copy of
            // that one (an intercepted bundle) no longer logs in.
            if let Some(old) = registry.add(entry) {
                admin::destroy_secret_id(&store, &cluster.name, &old.accessor).await?;
                registry.mark_revoked(&old.bundle_id);
                replaced.push(old);
            }
        }
        anyhow::Ok(())
    }
    .await;
    // What was made is recorded even when a later bundle failed.
    registry.save(&ctx.home, &cluster.name)?;
    made?;
    for old in &replaced {
        eprintln!(
            "note: the previous bundle {} of cluster {} was revoked (its secret_id no longer \
             logs in)",
            old.name, cluster.name
        );
    }
    // The node reports under its new bundle: its old row goes.
    let ids: Vec<String> = replaced.iter().map(|b| b.bundle_id.clone()).collect();
    if let Err(e) = publish::forget_reports(&store, &cluster.name, &ids).await {
        eprintln!("warning: cannot delete the reports of the replaced bundles: {e}");
    }
    let replaced: Vec<String> = replaced.into_iter().map(|b| b.name).collect();
    let doc = EnrollDoc {
        cluster: cluster.name.clone(),
        role: admin::role_name(&store.config.prefix, &cluster.name),
        bundles: written,
        reusable: args.reusable,
        revoked: replaced,
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
    row: ReportRow,
    live: bool,
    converged: bool,
    state: &'static str,
}

impl NodeRow {
    /// The node id as shown (its report id without the bundle id the
    /// bundle column names).
    fn node(&self) -> &str {
        let id = &self.row.id;
        match (&self.row.report.bundle_id, self.row.trust) {
            (Some(b), Trust::Verified | Trust::Unverifiable) => id
                .strip_suffix(b.as_str())
                .and_then(|i| i.strip_suffix('.'))
                .unwrap_or(id),
            _ => id,
        }
    }
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

/// Rows for `reports` against the published `(epoch, version)`.
fn rows(reports: Vec<ReportRow>, published: (u64, u64)) -> Vec<NodeRow> {
    let now = now_secs();
    reports
        .into_iter()
        .map(|row| {
            let live = row.report.is_live(now);
            let state = match row.trust {
                Trust::Unreadable => "unreadable",
                Trust::Forged => "forged or foreign",
                _ if row.revoked => "revoked",
                _ if !live => "silent",
                _ if row.ahead_of(published) => "refused: older than applied",
                _ if row.converged(published) => "converged",
                _ => "behind",
            };
            NodeRow {
                live,
                converged: row.converged(published),
                state,
                row,
            }
        })
        .collect()
}

/// Text a node or the store chose, safe for a terminal.
fn foreign(text: &str) -> String {
    escape_text(text, FOREIGN_TEXT_MAX)
}

fn node_table(rows: &[NodeRow]) -> Table {
    let now = now_secs();
    let mut t = Table::new(&[
        "node",
        "bundle",
        "hostname",
        "applied",
        "state",
        "last poll",
        "last error",
        "secrets",
        "identity",
    ]);
    for r in rows {
        let report = &r.row.report;
        let suspect = r.row.suspect();
        let shown = |text: String| if suspect { "-".to_owned() } else { text };
        // Reports are written by nodes: escaped before they reach a terminal.
        t.row(vec![
            foreign(r.node()),
            match (&r.row.bundle, r.row.trust) {
                (Some(b), Trust::Unverifiable) => format!("{} (unverified)", foreign(b)),
                (Some(b), _) => foreign(b),
                (None, Trust::Unsigned) => "unsigned".into(),
                (None, _) => "-".into(),
            },
            shown(foreign(&report.hostname)),
            shown(report.applied_version.to_string()),
            r.state.into(),
            shown(format!("{}s ago", now.saturating_sub(report.last_poll))),
            shown(
                report
                    .last_error
                    .as_deref()
                    .map_or_else(|| "-".into(), foreign),
            ),
            shown(foreign(&report.secrets.join(","))),
            shown(super::federate::identity_cell(
                report.identity.as_ref(),
                now,
            )),
        ]);
    }
    t
}

/// What stderr says about rows that cannot be taken at their word.
fn warn_rows(cluster: &str, rows: &[NodeRow]) {
    let suspect: Vec<String> = rows
        .iter()
        .filter(|r| r.row.suspect())
        .map(|r| foreign(&r.row.id))
        .collect();
    if !suspect.is_empty() {
        eprintln!(
            "warning: {} report(s) of cluster {cluster} are forged, foreign or unreadable (a node \
             of the cluster, or anyone who can write its store prefix, wrote them; they count as \
             not converged): {}",
            suspect.len(),
            suspect.join(", ")
        );
    }
    if rows.iter().any(|r| r.row.trust == Trust::Unverifiable) {
        eprintln!(
            "note: some reports of cluster {cluster} are signed, but this machine has no report \
             key for it (~/.rh/clusters/{cluster}.nodes.json, kept where its bundles were \
             enrolled): they are shown unverified"
        );
    }
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
    let (kube, kube_failed) = crate::mint::resolve_kube(ctx, &mut secrets).await;
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
    let registry = Registry::load(&ctx.home, &cluster.name)?;
    let store = store(ctx)?;
    let opts = PublishOpts {
        new_epoch: args.new_epoch,
    };
    let (published, reports) = async {
        let published = publish::publish(
            &store,
            &cluster.name,
            key.expose_secret().as_bytes(),
            &items,
            opts,
        )
        .await
        .context("publish")?;
        let target = (published.epoch, published.version);
        let reports = match args.wait {
            Some(secs) => Some(
                publish::wait_for(
                    &store,
                    &cluster.name,
                    &registry,
                    target,
                    Duration::from_secs(secs),
                )
                .await?,
            ),
            None => None,
        };
        anyhow::Ok((published, reports))
    }
    .await?;
    let nodes = reports.map(|r| rows(r, (published.epoch, published.version)));
    let not_converged: Vec<String> = nodes
        .iter()
        .flatten()
        .filter(|r| !r.converged)
        .map(|r| r.row.id.clone())
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
    if let Some(nodes) = &doc.nodes {
        warn_rows(&doc.cluster, nodes);
    }
    let code = if !doc.not_converged.is_empty() {
        // Report ids are chosen by whoever wrote the report.
        let ids: Vec<String> = doc.not_converged.iter().map(|id| foreign(id)).collect();
        eprintln!(
            "error: {} node(s) did not apply version {} in time: {}",
            ids.len(),
            doc.published.version,
            ids.join(", ")
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
        let opts = PublishOpts { new_epoch: false };
        match publish::publish(self.store, self.cluster, self.key, &items, opts).await {
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
    published_epoch: u64,
    published_version: u64,
    published_at: Option<String>,
    secrets: Vec<String>,
    nodes: Vec<NodeRow>,
}

/// `controller status --cluster NAME` on a pull cluster: the reports.
pub async fn status(args: &StatusArgs, ctx: &Context, cluster: &Cluster) -> Result<u8> {
    let registry = Registry::load(&ctx.home, &cluster.name)?;
    let store = store(ctx)?;
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
    if args.output.json {
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

/// `controller cluster remove NAME` on a pull cluster: delete its AppRole
/// and policy first (nodes keep what is installed and stop updating), then
/// the bundles recorded here (their secret_ids went with the role).
pub async fn remove_role(ctx: &Context, cluster: &Cluster) -> Result<()> {
    let store = store(ctx)?;
    admin::delete_role(&store, &cluster.name)
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

#[derive(Debug, Serialize)]
struct RevokeNodeDoc {
    cluster: String,
    bundle: String,
    bundle_id: String,
    revoked: bool,
}

/// `controller cluster revoke-node NAME NODE | --bundle FILE`: destroy one
/// bundle's secret_id through the accessor recorded when it was made.
pub async fn revoke_node(args: RevokeNodeArgs, ctx: &Context) -> Result<u8> {
    let Some(cluster) = pull_cluster(ctx, &args.name) else {
        clusters::load(&ctx.home, &args.name).map_err(|e| UsageError(e.to_string()))?;
        return Err(UsageError(format!("cluster {} is not a pull cluster", args.name)).into());
    };
    let mut registry = Registry::load(&ctx.home, &cluster.name)?;
    let store = store(ctx)?;
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
