//! "Run something on a cluster's nodes", the part every push command shares:
//! resolve the cluster and check the fan-out flags ([`Remote::resolve`])
//! before any SSH or HTTP work, fan a job out to every node
//! ([`Remote::fan_out`], [`Remote::push`]), turn the node outcomes into
//! per-node reports ([`reports`]), print the per-node x per-secret table or
//! JSON ([`finish`]), and pick the exit code ([`exit_code`]: 0 all nodes
//! ok, 1 none, 3 some). Commands keep only what is their own: the request
//! they send and how they read the answer.
//! Never prints a value: rows carry names, paths, var names and statuses.

use std::future::Future;
use std::sync::Arc;

use anyhow::Result;
use common::wire::{SecretResult, Status, SyncRequest};
use serde::Serialize;

use crate::cli::RemoteOpts;
use crate::clusters::{self, Cluster, Node};
// The note of a secret left out belongs to the plan, which the table only prints.
use crate::exit::{self, UsageError};
use crate::outcome::{status_cell, where_cell};
use crate::output::{print_json, Table};
use crate::plan::Skipped;
use crate::transport::{self, AgentConn, NodeOutcome, TransportError, TransportOptions};
use crate::Context;

/// A cluster resolved for one command: its definition, the nodes to reach
/// and the transport options (checked `--parallel`, `--timeout`, ...).
#[derive(Debug)]
pub(crate) struct Remote {
    pub(crate) cluster: Cluster,
    pub(crate) nodes: Vec<Node>,
    pub(crate) opts: TransportOptions,
}

impl Remote {
    /// Check the fan-out flags, then load cluster `name` and its nodes. An
    /// unknown or invalid cluster name is a usage error. `json` turns the
    /// progress bar off (stdout is a document, or the command's own output).
    pub(crate) fn resolve(
        ctx: &Context,
        name: &str,
        remote: &RemoteOpts,
        json: bool,
    ) -> Result<Self> {
        check_remote(remote)?;
        Self::of(ctx, clusters::load(&ctx.home, name), remote, json)
    }

    /// The cluster as loaded (its error, an unknown or invalid name, is a
    /// usage error), its nodes, and the transport options of the flags.
    pub(crate) fn of(
        ctx: &Context,
        loaded: Result<Cluster, clusters::ClusterError>,
        remote: &RemoteOpts,
        json: bool,
    ) -> Result<Self> {
        let cluster = loaded.map_err(|e| match e {
            clusters::ClusterError::NotFound { .. } | clusters::ClusterError::Name(_) => {
                anyhow::Error::from(UsageError(e.to_string()))
            }
            other => other.into(),
        })?;
        let nodes = cluster.nodes()?;
        let opts = TransportOptions::new(ctx, remote, &cluster.name, json);
        Ok(Self {
            cluster,
            nodes,
            opts,
        })
    }

    /// Keep node `only` alone (`--node`); a usage error naming the
    /// cluster's nodes when it has none of that name.
    pub(crate) fn only_node(&mut self, only: &str) -> Result<()> {
        let known: Vec<String> = self.nodes.iter().map(|n| n.name.clone()).collect();
        self.nodes.retain(|n| n.name == only);
        if self.nodes.is_empty() {
            return Err(UsageError(format!(
                "cluster {} has no node {only:?}; its nodes: {}",
                self.cluster.name,
                known.join(", ")
            ))
            .into());
        }
        Ok(())
    }

    /// Run `job` on a connection to every node's agent
    /// ([`transport::fan_out`]); outcomes in the order of the nodes.
    pub(crate) async fn fan_out<T, F, Fut>(&self, label: &str, job: F) -> Vec<NodeOutcome<T>>
    where
        T: Send + 'static,
        F: Fn(Arc<AgentConn>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, TransportError>> + Send + 'static,
    {
        transport::fan_out(&self.nodes, &self.opts, label, job).await
    }

    /// Run `job` on every node without an agent connection
    /// ([`transport::for_each_node`]: bootstrap, over SSH alone).
    pub(crate) async fn for_each_node<T, F, Fut>(&self, label: &str, job: F) -> Vec<NodeOutcome<T>>
    where
        T: Send + 'static,
        F: Fn(Node) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, TransportError>> + Send + 'static,
    {
        transport::for_each_node(&self.nodes, &self.opts, label, job).await
    }

    /// Send one `POST /v1/sync` per node carrying every item; collect the
    /// per-node results.
    pub(crate) async fn push(
        &self,
        request: SyncRequest,
        label: &str,
    ) -> Vec<NodeOutcome<Vec<SecretResult>>> {
        let request = Arc::new(request);
        self.fan_out(label, move |conn| {
            let request = request.clone();
            async move { conn.sync(&request).await.map(|r| r.results) }
        })
        .await
    }
}

/// Check the fan-out flags: at least one node at a time, a timeout of at
/// least a second.
pub(crate) fn check_remote(remote: &RemoteOpts) -> Result<()> {
    if remote.parallel == 0 {
        return Err(UsageError("--parallel must be at least 1".into()).into());
    }
    if remote.timeout == 0 {
        return Err(UsageError("--timeout must be at least 1 second".into()).into());
    }
    Ok(())
}

/// What one node of a fan-out answered: its per-secret results, or why
/// it could not be reached.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct NodeResults {
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
    pub(crate) nodes: &'a [NodeResults],
    #[serde(skip_serializing_if = "<[Skipped]>::is_empty")]
    pub(crate) skipped: &'a [Skipped],
}

/// Node outcomes into reports. A node is ok when it answered and no secret
/// failed (or conflicted, unless `conflicts_ok`).
pub(crate) fn reports(
    outcomes: Vec<NodeOutcome<Vec<SecretResult>>>,
    conflicts_ok: bool,
) -> Vec<NodeResults> {
    outcomes
        .into_iter()
        .map(|o| match o.result {
            Ok(results) => NodeResults {
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
            Err(e) => NodeResults {
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
/// on stderr, and return the exit code ([`exit_code`]). `names` are the
/// secrets sent: a node that failed as a whole gets one failed row each.
pub(crate) fn finish(
    cluster: &str,
    dry_run: bool,
    names: &[String],
    nodes: &[NodeResults],
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

/// The exit code of a fan-out from each node's success: 0 when every node
/// succeeded (or there were none), 1 when none did, 3 otherwise.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes() {
        assert_eq!(exit_code([true, true].into_iter()), 0);
        assert_eq!(exit_code([false, false].into_iter()), 1);
        assert_eq!(exit_code([true, false].into_iter()), 3);
        assert_eq!(exit_code(std::iter::empty()), 0);
    }

    #[test]
    fn fan_out_flags_are_checked() {
        let ok = RemoteOpts {
            parallel: 1,
            timeout: 1,
            accept_new_host_keys: false,
            ssh_persist: None,
        };
        assert!(check_remote(&ok).is_ok());
        for bad in [
            RemoteOpts {
                parallel: 0,
                ..ok.clone()
            },
            RemoteOpts {
                timeout: 0,
                ..ok.clone()
            },
        ] {
            let err = check_remote(&bad).unwrap_err();
            assert_eq!(exit::code_of(&err), exit::USAGE, "{err}");
        }
    }
}
