//! `controller cluster add|list|show|remove|bootstrap`. Definitions live in
//! `~/.rh/clusters/NAME.json` ([`crate::clusters`]); `local` always exists.
//! `bootstrap` copies the agent binary to every node over SSH, installs it
//! with the install script and boot unit embedded in this binary, starts it,
//! and checks `/healthz` through the tunnel. No secret value is involved.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use serde::Serialize;

use super::sync::{check_remote, exit_code, resolve_cluster, runtime};
use super::UsageError;
use crate::cli::{BootstrapArgs, ClusterAddArgs, ClusterCommand, ClusterNameArgs, ListArgs};
use crate::clusters::{self, Cluster, ClusterError, Node, Target};
use crate::output::{print_json, Table};
use crate::transport::local::agent_binary;
use crate::transport::ssh::{Input, SshSession};
use crate::transport::{self, TransportError, TransportOptions};
use crate::Context;

/// `controller cluster ...`.
pub fn run(cmd: ClusterCommand, ctx: &Context) -> Result<u8> {
    match cmd {
        ClusterCommand::Add(a) => add(a, ctx),
        ClusterCommand::List(a) => list(a, ctx),
        ClusterCommand::Show(a) => show(a, ctx),
        ClusterCommand::Remove(a) => remove(a, ctx),
        ClusterCommand::Bootstrap(a) => bootstrap(a, ctx),
    }
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
    };
    clusters::save(&ctx.home, &cluster).map_err(usage)?;
    if args.json {
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
    if args.json {
        print_json(&all)?;
    } else {
        table(&all).print()?;
    }
    Ok(0)
}

fn show(args: ClusterNameArgs, ctx: &Context) -> Result<u8> {
    let c = clusters::load(&ctx.home, &args.name).map_err(usage)?;
    if args.json {
        print_json(&c)?;
    } else {
        table(std::slice::from_ref(&c)).print()?;
    }
    Ok(0)
}

fn remove(args: ClusterNameArgs, ctx: &Context) -> Result<u8> {
    clusters::remove(&ctx.home, &args.name).map_err(usage)?;
    if args.json {
        print_json(&serde_json::json!({"removed": args.name}))?;
    } else {
        println!("cluster {} removed (the nodes are left alone)", args.name);
    }
    Ok(0)
}

/// The install script, boot script and unit, shipped inside the controller.
mod scripts {
    /// Run on the node with the agent binary in `~/.rh/bin/agent.new`.
    /// Arguments: the agent port.
    pub(super) const INSTALL: &str = r#"#!/bin/sh
# Installs the uploaded agent and (re)starts it on 127.0.0.1:$1.
set -eu
port="$1"
bin="$HOME/.rh/bin"
state="$HOME/.rh/agent"
mkdir -p "$bin" "$state"
chmod 700 "$HOME/.rh" "$bin" "$state"
chmod 700 "$bin/agent.new"
mv -f "$bin/agent.new" "$bin/agent"
if [ -f "$state/agent.pid" ]; then
  old="$(cat "$state/agent.pid" 2>/dev/null || true)"
  case "$old" in ''|*[!0-9]*) ;; *) kill "$old" 2>/dev/null || true ;; esac
  sleep 0.2
fi
cd "$HOME"
if command -v setsid >/dev/null 2>&1; then det=setsid; else det=nohup; fi
$det "$bin/agent" serve --listen "127.0.0.1:$port" --home "$HOME" --state-dir "$state" \
  </dev/null >>"$state/agent.log" 2>&1 &
echo $! >"$state/agent.pid"
"#;
}

#[derive(Debug, Serialize)]
struct BootstrapReport {
    node: String,
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

fn bootstrap(args: BootstrapArgs, ctx: &Context) -> Result<u8> {
    check_remote(&args.remote)?;
    let (cluster, nodes) = resolve_cluster(ctx, &args.name)?;
    let bin = args.agent_bin.clone().unwrap_or_else(agent_binary);
    let bin = bin
        .canonicalize()
        .with_context(|| format!("agent binary {} (give --agent-bin)", bin.display()))?;
    if !bin.is_file() {
        return Err(UsageError(format!("agent binary {} is not a file", bin.display())).into());
    }
    let opts = TransportOptions::new(ctx, &args.remote, &cluster.name, args.json);
    let rt = runtime()?;
    let reports: Vec<BootstrapReport> = if cluster.is_local() {
        // The local agent is started on demand; bootstrapping it means starting it.
        rt.block_on(transport::fan_out(
            &nodes,
            &opts,
            "bootstrap",
            |conn| async move { conn.health().await },
        ))
        .into_iter()
        .map(|o| report(o.node, o.result.map(|h| h.version)))
        .collect()
    } else {
        let bin = Arc::new(bin);
        let opts = Arc::new(opts);
        rt.block_on(async {
            let limit = Arc::new(tokio::sync::Semaphore::new(opts.parallel));
            let mut tasks = vec![];
            for node in nodes.iter().cloned() {
                let (bin, opts, limit) = (bin.clone(), opts.clone(), limit.clone());
                tasks.push(tokio::spawn(async move {
                    let _p = limit.acquire_owned().await.expect("never closed");
                    let r = bootstrap_node(&node, &bin, &opts).await;
                    report(node, r)
                }));
            }
            let mut out = vec![];
            for t in tasks {
                out.push(t.await.expect("bootstrap task"));
            }
            out
        })
    };
    if args.json {
        print_json(&serde_json::json!({"cluster": cluster.name, "nodes": reports}))?;
    } else {
        let mut t = Table::new(&["node", "status", "agent version"]);
        for r in &reports {
            t.row(vec![
                r.node.clone(),
                if r.ok {
                    "running".into()
                } else {
                    "failed".into()
                },
                r.version.clone().unwrap_or_default(),
            ]);
        }
        t.print()?;
    }
    for r in &reports {
        if let Some(e) = &r.error {
            eprintln!("error: {e}");
        }
    }
    Ok(exit_code(reports.iter().map(|r| r.ok)))
}

fn report(node: Node, r: Result<String, TransportError>) -> BootstrapReport {
    match r {
        Ok(version) => BootstrapReport {
            node: node.name,
            ok: true,
            version: Some(version),
            error: None,
        },
        Err(e) => BootstrapReport {
            node: node.name,
            ok: false,
            version: None,
            error: Some(e.to_string()),
        },
    }
}

/// Upload, install, start, and wait for `/healthz` on one node.
async fn bootstrap_node(
    node: &Node,
    bin: &Path,
    opts: &TransportOptions,
) -> Result<String, TransportError> {
    let Target::Ssh(t) = &node.target else {
        unreachable!("only ssh nodes are bootstrapped over ssh")
    };
    let session = SshSession::open(node, t, opts).await?;
    let result = install(&session, bin, t.agent_port).await;
    session.close().await;
    result?;
    // Reconnect through the normal path: token, forward, /healthz.
    let http = transport::http_client(opts.timeout);
    let started = Instant::now();
    loop {
        let attempt = async {
            let conn = transport::connect(node, opts, &http).await?;
            let h = conn.health().await;
            conn.close().await;
            h
        };
        match attempt.await {
            Ok(h) => return Ok(h.version),
            Err(e) if started.elapsed() < Duration::from_secs(10) => {
                tracing::debug!(node = %node.name, error = %e, "agent not up yet");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

async fn install(session: &SshSession, bin: &Path, agent_port: u16) -> Result<(), TransportError> {
    session
        .run_with_input(
            "umask 077 && mkdir -p ~/.rh/bin && cat > ~/.rh/bin/agent.new",
            Some(Input::File(bin)),
        )
        .await?;
    session
        .run_with_input(
            "umask 077 && cat > ~/.rh/bin/install-agent.sh && chmod 700 ~/.rh/bin/install-agent.sh",
            Some(Input::Bytes(scripts::INSTALL.as_bytes())),
        )
        .await?;
    session
        .run_with_input(&format!("sh ~/.rh/bin/install-agent.sh {agent_port}"), None)
        .await?;
    Ok(())
}
