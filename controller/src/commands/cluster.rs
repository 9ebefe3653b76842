//! `controller cluster add|list|show|remove|disconnect`, and the entry
//! points of `bootstrap` ([`bootstrap`]), `enroll` ([`enroll`]),
//! `revoke-node` ([`revoke_node`]) and `federate` ([`federate`]).
//! Definitions live in `~/.rh/clusters/NAME.json` ([`crate::clusters`]);
//! `local` always exists. Removing a pull cluster deletes its AppRole first
//! (`crate::fleet::pull`). `disconnect` closes the persisted SSH masters.
//! No secret value is involved.

mod bootstrap;
mod enroll;
mod federate;
mod revoke_node;

use anyhow::{Context as _, Result};

use crate::cli::{ClusterAddArgs, ClusterCommand, ClusterNameArgs, ListArgs};
use crate::clusters::{self, Cluster, ClusterError, Target};
use crate::exit::UsageError;
use crate::fleet::pull::PullCluster;
use crate::output::{print_json, Table};
use crate::remote::{exit_code, Remote};
use crate::transport::{ssh, TransportError};
use crate::Context;

/// `controller cluster ...`.
pub async fn run(cmd: ClusterCommand, ctx: &Context) -> Result<u8> {
    match cmd {
        ClusterCommand::Add(a) => add(a, ctx),
        ClusterCommand::List(a) => list(a, ctx),
        ClusterCommand::Show(a) => show(a, ctx),
        ClusterCommand::Remove(a) => remove(a, ctx).await,
        ClusterCommand::Bootstrap(a) => bootstrap::run(a, ctx).await,
        ClusterCommand::Disconnect(a) => disconnect(a, ctx).await,
        ClusterCommand::Enroll(a) => enroll::run(a, ctx).await,
        ClusterCommand::Federate(a) => federate::run(a, ctx).await,
        ClusterCommand::RevokeNode(a) => revoke_node::run(a, ctx).await,
    }
}

/// Cluster `name`, which must be a pull cluster: its loading error, or
/// `not_pull`'s message when it is pushed to, is a usage error.
fn load_pull(
    ctx: &Context,
    name: &str,
    not_pull: impl FnOnce(&Cluster) -> String,
) -> Result<Cluster> {
    let cluster = clusters::load(&ctx.home, name).map_err(|e| UsageError(e.to_string()))?;
    if !cluster.pull {
        return Err(UsageError(not_pull(&cluster)).into());
    }
    Ok(cluster)
}

fn usage(e: ClusterError) -> anyhow::Error {
    match e {
        ClusterError::Path(_) | ClusterError::Malformed { .. } => e.into(),
        other => UsageError(other.to_string()).into(),
    }
}

fn add(args: ClusterAddArgs, ctx: &Context) -> Result<u8> {
    let identity_file = match args.identity_file {
        Some(p) if p.is_relative() => Some(
            std::env::current_dir()
                .context("current directory")?
                .join(p),
        ),
        other => other,
    };
    let cluster = Cluster {
        name: args.name,
        hosts: args.hosts,
        user: args.user,
        port: args.port,
        identity_file,
        agent_port: args.agent_port,
        pull: args.pull,
    };
    clusters::save(&ctx.home, &cluster).map_err(usage)?;
    if args.output.json {
        print_json(&cluster)?;
    } else {
        println!(
            "cluster {} saved: {} node(s); next: `controller cluster bootstrap {}`",
            cluster.name,
            cluster.hosts.len(),
            cluster.name
        );
    }
    Ok(0)
}

fn table(clusters: &[Cluster]) -> Table {
    let mut t = Table::new(&[
        "cluster",
        "nodes",
        "user",
        "port",
        "agent port",
        "identity file",
    ]);
    for c in clusters {
        if c.is_local() {
            t.row(vec![
                c.name.clone(),
                "this machine (no ssh)".into(),
                "-".into(),
                "-".into(),
                "agent.addr".into(),
                "-".into(),
            ]);
            continue;
        }
        t.row(vec![
            c.name.clone(),
            c.hosts.join(" "),
            c.user.clone().unwrap_or_else(|| "-".into()),
            c.port.to_string(),
            c.agent_port.to_string(),
            c.identity_file
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "-".into()),
        ]);
    }
    t
}

fn list(args: ListArgs, ctx: &Context) -> Result<u8> {
    let all = clusters::list(&ctx.home).map_err(usage)?;
    if args.output.json {
        print_json(&all)?;
    } else {
        table(&all).print()?;
    }
    Ok(0)
}

fn show(args: ClusterNameArgs, ctx: &Context) -> Result<u8> {
    let c = clusters::load(&ctx.home, &args.name).map_err(usage)?;
    if args.output.json {
        print_json(&c)?;
    } else {
        table(std::slice::from_ref(&c)).print()?;
    }
    Ok(0)
}

async fn remove(args: ClusterNameArgs, ctx: &Context) -> Result<u8> {
    // A definition that does not load is for `clusters::remove` to report.
    if let Ok(cluster) = clusters::load(&ctx.home, &args.name) {
        if cluster.pull {
            PullCluster::new(cluster).remove_role(ctx).await?;
        }
    }
    clusters::remove(&ctx.home, &args.name).map_err(usage)?;
    if args.output.json {
        print_json(&serde_json::json!({"removed": args.name}))?;
    } else {
        println!("cluster {} removed (the nodes are left alone)", args.name);
    }
    Ok(0)
}

/// `controller cluster disconnect NAME`: close the persisted SSH masters.
async fn disconnect(args: ClusterNameArgs, ctx: &Context) -> Result<u8> {
    let flags = crate::cli::RemoteOpts {
        parallel: 32,
        timeout: 15,
        accept_new_host_keys: false,
        ssh_persist: Some(0),
    };
    let remote = Remote::resolve(ctx, &args.name, &flags, args.output.json)?;
    let cluster = &remote.cluster;
    let mut results: Vec<(String, Result<bool, TransportError>)> = vec![];
    for node in &remote.nodes {
        let r = match &node.target {
            Target::Ssh(t) => ssh::disconnect(t, &remote.opts).await,
            Target::Local => Ok(false),
        };
        results.push((node.name.clone(), r));
    }
    if args.output.json {
        let nodes: Vec<_> = results
            .iter()
            .map(|(n, r)| match r {
                Ok(closed) => serde_json::json!({"node": n, "ok": true, "closed": closed}),
                Err(e) => serde_json::json!({"node": n, "ok": false, "error": e.to_string()}),
            })
            .collect();
        print_json(&serde_json::json!({"cluster": cluster.name, "nodes": nodes}))?;
    } else {
        let mut t = Table::new(&["node", "ssh master"]);
        for (n, r) in &results {
            t.row(vec![
                n.clone(),
                match r {
                    Ok(true) => "closed".into(),
                    Ok(false) => "none open".into(),
                    Err(_) => "failed".into(),
                },
            ]);
        }
        t.print()?;
    }
    for (_, r) in &results {
        if let Err(e) = r {
            eprintln!("error: {e}");
        }
    }
    Ok(exit_code(results.iter().map(|(_, r)| r.is_ok())))
}
