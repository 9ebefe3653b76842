//! `controller sync --cluster NAME`: push secrets to every node in ONE
//! `POST /v1/sync` per node. Path secrets become files, env-var secrets become
//! vars in env E (both when a secret has both); a base secret with neither is
//! skipped with a note. The plan (cluster, nodes, secrets, envs) is resolved
//! and validated before any SSH or HTTP work. Also holds what `send`,
//! `env sync` and `revoke` share: the secret pool (detected + saved, from
//! `crate::local_secrets`), the per-node x per-secret result table and the
//! exit code rule.
//! Never prints a value: rows carry names, paths, var names and statuses.

use std::sync::Arc;

use anyhow::{Context as _, Result};
use common::placement::{place, PlaceOpts};
use common::wire::{SecretResult, Status, SyncItem, SyncRequest};
use common::Secret;
use serde::Serialize;

use crate::cli::{RemoteOpts, SyncArgs};
use crate::clusters::{self, Cluster, Node};
use crate::exit::{self, UsageError};
pub(crate) use crate::outcome::{status_cell, where_cell};
use crate::output::{print_json, Table};
use crate::transport::{fan_out, NodeOutcome, TransportOptions};
use crate::Context;

/// Every secret this machine knows (saved and detected): one gathering
/// for `sync`, `send`, `env sync` and `status`.
pub(crate) use crate::local_secrets::LocalSecrets as SecretPool;

/// A secret left out of a sync, and why.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Skipped {
    pub(crate) secret: String,
    pub(crate) reason: String,
}

/// A secret placed as `opts` asks (`common::placement::place`: the one
/// decision of its files and vars), as the item sent to the agents; `None`
/// when it goes nowhere.
pub(crate) fn sync_item(secret: &Secret, opts: &PlaceOpts<'_>) -> Result<Option<SyncItem>> {
    let placement = place(secret, opts)?;
    Ok((!placement.is_empty()).then(|| SyncItem::placed(secret.clone(), placement)))
}

/// Items for these secrets placed by the `sync` rule (a secret kept in a
/// file goes to that file; its values become vars in `env` when it defines
/// env vars or has no file), with the ones that have nowhere to go noted.
pub(crate) fn plan_items(secrets: &[Secret], env: &str) -> Result<(Vec<SyncItem>, Vec<Skipped>)> {
    let mut items = vec![];
    let mut skipped = vec![];
    for s in secrets {
        if s.values.is_empty() {
            skipped.push(Skipped {
                secret: s.name.clone(),
                reason: "no values (its file or env vars are missing on this machine)".into(),
            });
            continue;
        }
        match sync_item(s, &PlaceOpts::sync(env))? {
            Some(item) => items.push(item),
            None => skipped.push(Skipped {
                secret: s.name.clone(),
                reason: "no file and no env vars (a base secret: give it --path or --env-var)"
                    .into(),
            }),
        }
    }
    Ok((items, skipped))
}

/// A resolved cluster and its nodes.
pub(crate) fn resolve_cluster(ctx: &Context, name: &str) -> Result<(Cluster, Vec<Node>)> {
    let cluster = clusters::load(&ctx.home, name).map_err(|e| match e {
        clusters::ClusterError::NotFound { .. } | clusters::ClusterError::Name(_) => {
            anyhow::Error::from(UsageError(e.to_string()))
        }
        other => other.into(),
    })?;
    let nodes = cluster.nodes()?;
    Ok((cluster, nodes))
}

/// Check the fan-out options.
pub(crate) fn check_remote(remote: &RemoteOpts) -> Result<()> {
    if remote.parallel == 0 {
        return Err(UsageError("--parallel must be at least 1".into()).into());
    }
    if remote.timeout == 0 {
        return Err(UsageError("--timeout must be at least 1 second".into()).into());
    }
    Ok(())
}

/// A tokio runtime for one command (the dispatch is sync).
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .context("start the async runtime")
}

/// What one node reported.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct NodeReport {
    pub(crate) node: String,
    pub(crate) ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<String>,
    /// The error's reason alone (no node, no advice), for a table cell.
    #[serde(skip)]
    pub(crate) reason: Option<String>,
    pub(crate) results: Vec<SecretResult>,
}

/// The JSON document of `sync`, `send`, `env sync` and `revoke`.
#[derive(Debug, Serialize)]
pub(crate) struct Report<'a> {
    pub(crate) cluster: &'a str,
    pub(crate) dry_run: bool,
    pub(crate) nodes: &'a [NodeReport],
    #[serde(skip_serializing_if = "<[Skipped]>::is_empty")]
    pub(crate) skipped: &'a [Skipped],
}

/// Node outcomes into reports. A node is ok when it answered and no secret
/// failed (or conflicted, unless `conflicts_ok`).
pub(crate) fn reports(
    outcomes: Vec<NodeOutcome<Vec<SecretResult>>>,
    conflicts_ok: bool,
) -> Vec<NodeReport> {
    outcomes
        .into_iter()
        .map(|o| match o.result {
            Ok(results) => NodeReport {
                node: o.node.name,
                ok: results.iter().all(|r| match r.status {
                    Status::Failed => false,
                    Status::Conflict => conflicts_ok,
                    _ => true,
                }),
                error: None,
                reason: None,
                results,
            },
            Err(e) => NodeReport {
                node: o.node.name,
                ok: false,
                error: Some(e.to_string()),
                reason: Some(e.reason()),
                results: vec![],
            },
        })
        .collect()
}

/// Print the per-node x per-secret table (or JSON), the notes and failures
/// on stderr, and return the exit code: 0 all ok, 1 all failed, 3 some failed.
pub(crate) fn finish(
    cluster: &str,
    dry_run: bool,
    names: &[String],
    nodes: &[NodeReport],
    skipped: &[Skipped],
    json: bool,
) -> Result<u8> {
    if json {
        print_json(&Report {
            cluster,
            dry_run,
            nodes,
            skipped,
        })?;
    } else {
        let mut table = Table::new(&["node", "secret", "status", "where"]);
        for n in nodes {
            match &n.reason {
                Some(reason) => {
                    for name in names {
                        table.row(vec![
                            n.node.clone(),
                            name.clone(),
                            format!("failed: {reason}"),
                            String::new(),
                        ]);
                    }
                    if names.is_empty() {
                        table.row(vec![
                            n.node.clone(),
                            "-".into(),
                            format!("failed: {reason}"),
                            String::new(),
                        ]);
                    }
                }
                None => {
                    for r in &n.results {
                        table.row(vec![
                            n.node.clone(),
                            r.name.clone(),
                            status_cell(r),
                            where_cell(r),
                        ]);
                    }
                }
            }
        }
        if !table.is_empty() {
            table.print()?;
        }
        for s in skipped {
            eprintln!("note: skipped {}: {}", s.secret, s.reason);
        }
        if dry_run {
            eprintln!("dry run: nothing was changed");
        }
    }
    for n in nodes {
        if let Some(err) = &n.error {
            eprintln!("error: {err}");
        }
    }
    if !dry_run
        && nodes
            .iter()
            .any(|n| n.results.iter().any(|r| r.status == Status::Conflict))
    {
        eprintln!("hint: conflicts were left as they are; rerun with --overwrite to replace them");
    }
    Ok(exit_code(nodes.iter().map(|n| n.ok)))
}

/// 0 when every node succeeded, 1 when none did (or there were none), 3 otherwise.
pub(crate) fn exit_code(oks: impl Iterator<Item = bool>) -> u8 {
    let (mut good, mut bad) = (0, 0);
    for ok in oks {
        if ok {
            good += 1
        } else {
            bad += 1
        }
    }
    match (good, bad) {
        (_, 0) => exit::OK,
        (0, _) => exit::FAILURE,
        _ => exit::PARTIAL,
    }
}

/// Send one request per node carrying every item; collect per-node results.
pub(crate) fn push(
    ctx: &Context,
    cluster: &Cluster,
    nodes: &[Node],
    remote: &RemoteOpts,
    request: SyncRequest,
    json: bool,
    label: &str,
) -> Result<Vec<NodeOutcome<Vec<SecretResult>>>> {
    let opts = TransportOptions::new(ctx, remote, &cluster.name, json);
    let request = Arc::new(request);
    let rt = runtime()?;
    Ok(rt.block_on(fan_out(nodes, &opts, label, move |conn| {
        let request = request.clone();
        async move { conn.sync(&request).await.map(|r| r.results) }
    })))
}

/// `controller sync`.
pub fn run(args: SyncArgs, ctx: &Context) -> Result<u8> {
    if let Some(cluster) = crate::fleet::cmd::pull_cluster(ctx, &args.cluster) {
        return crate::fleet::cmd::sync(args, ctx, &cluster);
    }
    check_remote(&args.remote)?;
    common::names::validate_env_name(&args.env).map_err(|e| UsageError(e.to_string()))?;
    let (cluster, nodes) = resolve_cluster(ctx, &args.cluster)?;
    let secrets = SecretPool::load(ctx)?.select(&args.secrets)?;
    let (items, skipped) = plan_items(&secrets, &args.env)?;
    let names: Vec<String> = items.iter().map(|i| i.secret.name.clone()).collect();
    if items.is_empty() {
        for s in &skipped {
            eprintln!("note: skipped {}: {}", s.secret, s.reason);
        }
        anyhow::bail!(
            "nothing to sync: no secret detected or saved (see `controller secret detect` and `controller secret create`)"
        );
    }
    tracing::info!(cluster = %cluster.name, nodes = nodes.len(), secrets = items.len(), dry_run = args.dry_run, "sync plan");
    let request = SyncRequest {
        items,
        overwrite: args.overwrite,
        dry_run: args.dry_run,
    };
    let outcomes = push(
        ctx,
        &cluster,
        &nodes,
        &args.remote,
        request,
        args.output.json,
        "sync",
    )?;
    let nodes = reports(outcomes, args.dry_run);
    finish(
        &cluster.name,
        args.dry_run,
        &names,
        &nodes,
        &skipped,
        args.output.json,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::secret_value::values_from;

    #[test]
    fn items_get_files_vars_both_or_are_skipped() {
        let mut file_only = Secret::base("cfg", values_from([("k", "v")]));
        file_only.path = Some("~/cfg.json".into());
        let mut vars_only = Secret::base("tok", values_from([("k", "v")]));
        vars_only.env_vars = Some([("k".to_string(), "TOK".to_string())].into());
        let mut both = file_only.clone();
        both.name = "both".into();
        both.env_vars = vars_only.env_vars.clone();
        let neither = Secret::base("plain", values_from([("k", "v")]));
        let (items, skipped) =
            plan_items(&[file_only, vars_only, both, neither], "base_env").unwrap();
        let got: Vec<(String, Option<String>, Option<String>)> = items
            .iter()
            .map(|i| {
                let (path, env) = i.placement.as_ref().unwrap().as_request();
                (i.secret.name.clone(), path, env)
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("cfg".into(), Some("~/cfg.json".into()), None),
                ("tok".into(), None, Some("base_env".into())),
                (
                    "both".into(),
                    Some("~/cfg.json".into()),
                    Some("base_env".into())
                ),
            ]
        );
        assert_eq!(skipped.len(), 1);
        assert_eq!(skipped[0].secret, "plain");
    }

    #[test]
    fn bad_var_names_are_refused_before_any_network() {
        let mut s = Secret::base("tok", values_from([("k", "v")]));
        s.env_vars = Some([("k".to_string(), "NOT-A-VAR".to_string())].into());
        assert!(plan_items(&[s], "base_env").is_err());
    }

    #[test]
    fn exit_codes() {
        assert_eq!(exit_code([true, true].into_iter()), 0);
        assert_eq!(exit_code([false, false].into_iter()), 1);
        assert_eq!(exit_code([true, false].into_iter()), 3);
        assert_eq!(exit_code(std::iter::empty()), 0);
    }
}
