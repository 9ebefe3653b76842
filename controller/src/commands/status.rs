//! `controller status --cluster NAME`: what each node holds, from
//! `GET /v1/status`: secret names, file paths, env names and var names, and
//! keyed fingerprints; never values. Secrets that are not installed the same
//! way on every node (other files, vars or keys), or that some nodes lack,
//! are flagged. Fingerprints are keyed per node (each agent has its own
//! key), so they tell whether a value changed on one node over time but
//! cannot be compared across nodes: value drift between nodes is not
//! detectable here without a shared fingerprint key.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Result;
use common::wire::{InstalledSecret, StatusResponse};
use serde::Serialize;

use super::sync::{check_remote, exit_code, resolve_cluster, runtime};
use crate::cli::StatusArgs;
use crate::output::{print_json, Table};
use crate::transport::{fan_out, TransportOptions};
use crate::Context;

#[derive(Debug, Serialize)]
struct NodeStatus {
    node: String,
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<StatusResponse>,
}

/// A secret that is not the same everywhere.
#[derive(Debug, Serialize, PartialEq, Eq)]
struct Drift {
    secret: String,
    /// Installed differently (other files, keys or vars) on the nodes that hold it.
    differs: bool,
    /// Nodes that answered but do not hold it.
    missing_on: Vec<String>,
}

/// Where a secret is installed on one node: `(path, keys)` of its files and
/// `(env:var, "")` of its vars. Fingerprints are left out: they are keyed per node.
fn footprint(s: &InstalledSecret) -> Footprint {
    s.files
        .iter()
        .map(|f| (f.path.clone(), f.keys.join(",")))
        .chain(
            s.vars
                .iter()
                .map(|v| (format!("{}:{}", v.env, v.var), String::new())),
        )
        .collect()
}

/// Where a secret is installed on one node.
type Footprint = BTreeSet<(String, String)>;

fn drift(nodes: &[NodeStatus]) -> Vec<Drift> {
    let answered: Vec<(&str, &StatusResponse)> = nodes
        .iter()
        .filter_map(|n| n.status.as_ref().map(|s| (n.node.as_str(), s)))
        .collect();
    let mut by_secret: BTreeMap<&str, Vec<(&str, Footprint)>> = BTreeMap::new();
    for (node, st) in &answered {
        for s in &st.secrets {
            by_secret
                .entry(s.name.as_str())
                .or_default()
                .push((node, footprint(s)));
        }
    }
    let mut out = vec![];
    for (name, holders) in by_secret {
        let differs = holders.windows(2).any(|w| w[0].1 != w[1].1);
        let missing_on: Vec<String> = answered
            .iter()
            .filter(|(n, _)| !holders.iter().any(|(h, _)| h == n))
            .map(|(n, _)| (*n).to_owned())
            .collect();
        if differs || !missing_on.is_empty() {
            out.push(Drift {
                secret: name.to_owned(),
                differs,
                missing_on,
            });
        }
    }
    out
}

/// `controller status`.
pub fn run(args: StatusArgs, ctx: &Context) -> Result<u8> {
    check_remote(&args.remote)?;
    let (cluster, nodes) = resolve_cluster(ctx, &args.cluster)?;
    let opts = TransportOptions::new(ctx, &args.remote, &cluster.name, args.json);
    let rt = runtime()?;
    let outcomes = rt.block_on(fan_out(&nodes, &opts, "status", |conn| async move {
        conn.status().await
    }));
    let nodes: Vec<NodeStatus> = outcomes
        .into_iter()
        .map(|o| match o.result {
            Ok(s) => NodeStatus {
                node: o.node.name,
                ok: true,
                error: None,
                status: Some(s),
            },
            Err(e) => NodeStatus {
                node: o.node.name,
                ok: false,
                error: Some(e.to_string()),
                status: None,
            },
        })
        .collect();
    let drift = drift(&nodes);
    if args.json {
        print_json(&serde_json::json!({
            "cluster": cluster.name,
            "nodes": nodes,
            "drift": drift,
        }))?;
    } else {
        let flagged: BTreeMap<&str, &Drift> =
            drift.iter().map(|d| (d.secret.as_str(), d)).collect();
        let mut secrets =
            Table::new(&["node", "secret", "provider", "where", "fingerprint", "flag"]);
        let mut envs = Table::new(&["node", "env", "running", "vars"]);
        for n in &nodes {
            let Some(st) = &n.status else { continue };
            for s in &st.secrets {
                let flag = match flagged.get(s.name.as_str()) {
                    Some(d) if d.differs => "DIFFERS ACROSS NODES",
                    Some(_) => "missing on some nodes",
                    None => "",
                };
                let mut rows: Vec<(String, String)> = s
                    .files
                    .iter()
                    .map(|f| (f.path.clone(), f.fingerprint.clone()))
                    .collect();
                rows.extend(
                    s.vars
                        .iter()
                        .map(|v| (format!("{}: {}", v.env, v.var), v.fingerprint.clone())),
                );
                if rows.is_empty() {
                    rows.push((String::new(), String::new()));
                }
                for (place, fp) in rows {
                    secrets.row(vec![
                        n.node.clone(),
                        s.name.clone(),
                        s.provider.clone().unwrap_or_else(|| "-".into()),
                        place,
                        fp,
                        flag.into(),
                    ]);
                }
            }
            for e in &st.envs {
                envs.row(vec![
                    n.node.clone(),
                    e.name.clone(),
                    if e.running { "yes" } else { "no" }.into(),
                    e.vars.join(" "),
                ]);
            }
        }
        if secrets.is_empty() {
            println!("no secrets installed on the reachable nodes");
        } else {
            secrets.print()?;
        }
        if !envs.is_empty() {
            println!();
            envs.print()?;
        }
        for d in &drift {
            if d.differs {
                eprintln!(
                    "warning: secret {} is installed differently across nodes (files, keys or vars); run `controller sync --cluster {} --secret {} --overwrite`",
                    d.secret, cluster.name, d.secret
                );
            }
            if !d.missing_on.is_empty() {
                eprintln!(
                    "note: secret {} is missing on {}",
                    d.secret,
                    d.missing_on.join(", ")
                );
            }
        }
    }
    for n in &nodes {
        if let Some(e) = &n.error {
            eprintln!("error: {e}");
        }
    }
    Ok(exit_code(nodes.iter().map(|n| n.ok)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::wire::InstalledFile;

    fn node(name: &str, fp: Option<&str>) -> NodeStatus {
        let secrets = fp
            .map(|fp| {
                vec![InstalledSecret {
                    name: "aws".into(),
                    provider: Some("aws".into()),
                    files: vec![InstalledFile {
                        path: "~/.aws/credentials".into(),
                        keys: vec![fp.into()],
                        fingerprint: "ff".into(),
                    }],
                    vars: vec![],
                }]
            })
            .unwrap_or_default();
        NodeStatus {
            node: name.into(),
            ok: true,
            error: None,
            status: Some(StatusResponse {
                version: "x".into(),
                secrets,
                envs: vec![],
                ..Default::default()
            }),
        }
    }

    #[test]
    fn drift_flags_differences_and_missing() {
        // Fingerprints are per node: only the layout (paths, keys, vars) is compared.
        assert!(drift(&[node("a", Some("f1")), node("b", Some("f1"))]).is_empty());
        let d = drift(&[
            node("a", Some("f1")),
            node("b", Some("f2")),
            node("c", None),
        ]);
        assert_eq!(
            d,
            vec![Drift {
                secret: "aws".into(),
                differs: true,
                missing_on: vec!["c".into()]
            }]
        );
    }
}
