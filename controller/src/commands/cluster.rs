//! `controller cluster add|list|show|remove|bootstrap`. Definitions live in
//! `~/.rh/clusters/NAME.json` ([`crate::clusters`]); `local` always exists.
//! `bootstrap` copies the agent binary and the real boot files
//! (`scripts/install-agent.sh`, `agent-boot.sh`, `rh-agent.service`, embedded
//! in this binary) to every node over SSH as the node's user, runs the
//! install script (binary in `~/.rh/bin`; systemd unit when systemd is PID 1,
//! else the `agent-boot.sh` supervisor plus an `@reboot` crontab entry when
//! `crontab` exists), reports which boot method was installed, and checks
//! `/healthz` through the tunnel. Re-running it upgrades in place.
//! `disconnect` closes the persisted SSH masters. No secret value is involved.

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
use crate::transport::ssh::{self, Input, SshSession};
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
        ClusterCommand::Disconnect(a) => disconnect(a, ctx),
        ClusterCommand::Enroll(a) => crate::fleet::cmd::enroll(a, ctx),
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

fn remove(args: ClusterNameArgs, ctx: &Context) -> Result<u8> {
    if let Some(cluster) = crate::fleet::cmd::pull_cluster(ctx, &args.name) {
        crate::fleet::cmd::remove_role(ctx, &cluster)?;
    }
    clusters::remove(&ctx.home, &args.name).map_err(usage)?;
    if args.output.json {
        print_json(&serde_json::json!({"removed": args.name}))?;
    } else {
        println!("cluster {} removed (the nodes are left alone)", args.name);
    }
    Ok(0)
}

/// The install script, boot script and unit, shipped inside the controller:
/// the same files as `scripts/`, so a node gets exactly what the docs describe.
mod scripts {
    pub(super) const INSTALL: &str = include_str!("../../../scripts/install-agent.sh");
    pub(super) const BOOT: &str = include_str!("../../../scripts/agent-boot.sh");
    pub(super) const UNIT: &str = include_str!("../../../scripts/rh-agent.service");
}

/// Where the files are staged on the node before the install script runs.
const STAGE: &str = "$HOME/.rh/install";

/// How the agent comes back after a reboot, as the install script reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
enum BootMethod {
    /// A system unit (root with systemd).
    SystemdSystem,
    /// A user unit with lingering (non-root with systemd).
    SystemdUser,
    /// `agent-boot.sh` started now and an `@reboot` crontab entry.
    Crontab,
    /// `agent-boot.sh` started now; nothing starts it at boot.
    None,
}

impl BootMethod {
    /// From the install script's output (stdout and stderr).
    fn parse(out: &str) -> Option<Self> {
        if out.contains("systemd user unit rh-agent.service enabled") {
            Some(Self::SystemdUser)
        } else if out.contains("systemd unit rh-agent.service enabled") {
            Some(Self::SystemdSystem)
        } else if out.contains("@reboot crontab entry") {
            Some(Self::Crontab)
        } else if out.contains("no systemd and no crontab") {
            Some(Self::None)
        } else {
            None
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Self::SystemdSystem => "systemd unit rh-agent.service",
            Self::SystemdUser => "systemd user unit rh-agent.service",
            Self::Crontab => "agent-boot.sh + @reboot crontab",
            Self::None => "none (agent-boot.sh started now; no systemd, no crontab)",
        }
    }
}

#[derive(Debug, Serialize)]
struct BootstrapReport {
    node: String,
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    boot: Option<BootMethod>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// What bootstrapping one node achieved.
#[derive(Debug)]
struct Installed {
    version: String,
    boot: Option<BootMethod>,
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
    let opts = TransportOptions::new(ctx, &args.remote, &cluster.name, args.output.json);
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
        .map(|o| {
            report(
                o.node,
                o.result.map(|h| Installed {
                    version: h.version,
                    boot: None,
                }),
            )
        })
        .collect()
    } else {
        let bin = Arc::new(bin);
        let shared = Arc::new(opts.clone());
        rt.block_on(transport::for_each_node(
            &nodes,
            &opts,
            "bootstrap",
            move |node| {
                let (bin, opts) = (bin.clone(), shared.clone());
                async move { bootstrap_node(&node, &bin, &opts).await }
            },
        ))
        .into_iter()
        .map(|o| report(o.node, o.result))
        .collect()
    };
    if args.output.json {
        print_json(&serde_json::json!({"cluster": cluster.name, "nodes": reports}))?;
    } else {
        let mut t = Table::new(&["node", "status", "agent version", "starts at boot via"]);
        for r in &reports {
            t.row(vec![
                r.node.clone(),
                if r.ok {
                    "running".into()
                } else {
                    "failed".into()
                },
                r.version.clone().unwrap_or_default(),
                match (r.ok, r.boot) {
                    (true, Some(b)) => b.describe().into(),
                    (true, None) if cluster.is_local() => "- (started on demand)".into(),
                    (true, None) => "unknown (see the install output with -v)".into(),
                    (false, _) => String::new(),
                },
            ]);
        }
        t.print()?;
    }
    for r in &reports {
        if let Some(e) = &r.error {
            eprintln!("error: {e}");
        }
        if r.boot == Some(BootMethod::None) {
            eprintln!(
                "warning: {}: no systemd and no crontab: the agent runs now but will not start \
                 after a reboot; run `~/.rh/bin/agent-boot.sh` from the node's init \
                 (containers: as the entrypoint) or rerun bootstrap after a reboot",
                r.node
            );
        }
    }
    Ok(exit_code(reports.iter().map(|r| r.ok)))
}

fn report(node: Node, r: Result<Installed, TransportError>) -> BootstrapReport {
    match r {
        Ok(i) => BootstrapReport {
            node: node.name,
            ok: true,
            version: Some(i.version),
            boot: i.boot,
            error: None,
        },
        Err(e) => BootstrapReport {
            node: node.name,
            ok: false,
            version: None,
            boot: None,
            error: Some(e.to_string()),
        },
    }
}

/// Upload, install, start, and wait for `/healthz` on one node, all through
/// one master connection.
async fn bootstrap_node(
    node: &Node,
    bin: &Path,
    opts: &TransportOptions,
) -> Result<Installed, TransportError> {
    let Target::Ssh(t) = &node.target else {
        unreachable!("only ssh nodes are bootstrapped over ssh")
    };
    let session = SshSession::open(node, t, opts).await?;
    let result = async {
        let boot = install(&session, node, bin, t.agent_port).await?;
        let version = wait_healthy(&session, node, t, opts).await?;
        Ok(Installed { version, boot })
    }
    .await;
    session.close().await;
    result
}

/// Through the session's tunnel, `/healthz` until the agent proves it
/// holds the token just installed (10 s at most).
async fn wait_healthy(
    session: &SshSession,
    node: &Node,
    t: &crate::clusters::SshTarget,
    opts: &TransportOptions,
) -> Result<String, TransportError> {
    let http = transport::http_client(opts.timeout);
    let started = Instant::now();
    loop {
        session.forget_token();
        let proven = ssh::prove_within(session, node, t, opts, &http).await;
        match proven.and_then(|(token, _, challenged)| challenged.verify(&token)) {
            Ok(h) => return Ok(h.version),
            Err(e) if started.elapsed() < Duration::from_secs(10) => {
                tracing::debug!(node = %node.name, error = %e, "agent not up yet");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Stage the binary and the boot files in `~/.rh/install` (0700), run
/// `install-agent.sh --from` it with the binary going to `~/.rh/bin`, and
/// remove the stage. Returns the boot method the script reported.
async fn install(
    session: &SshSession,
    node: &Node,
    bin: &Path,
    agent_port: u16,
) -> Result<Option<BootMethod>, TransportError> {
    session
        .run_with_input(
            &format!(
                "command -v bash >/dev/null 2>&1 || {{ echo 'bash is required on the node' >&2; exit 1; }}; \
                 umask 077 && mkdir -p \"$HOME/.rh\" {STAGE} && chmod 700 \"$HOME/.rh\" {STAGE}"
            ),
            None,
        )
        .await?;
    let upload = |name: &'static str, input: Input<'static>| async move {
        session
            .run_with_input(
                &format!(
                    "umask 077 && cat > {STAGE}/{name}.part && chmod 700 {STAGE}/{name}.part \
                     && mv -f {STAGE}/{name}.part {STAGE}/{name}"
                ),
                Some(input),
            )
            .await
    };
    let upload_bin = format!(
        "umask 077 && cat > {STAGE}/agent.part && chmod 700 {STAGE}/agent.part \
         && mv -f {STAGE}/agent.part {STAGE}/agent"
    );
    let (a, b, c, d) = tokio::join!(
        session.run_with_input(&upload_bin, Some(Input::File(bin))),
        upload(
            "install-agent.sh",
            Input::Bytes(scripts::INSTALL.as_bytes())
        ),
        upload("agent-boot.sh", Input::Bytes(scripts::BOOT.as_bytes())),
        upload("rh-agent.service", Input::Bytes(scripts::UNIT.as_bytes())),
    );
    a?;
    b?;
    c?;
    d?;
    let out = session
        .output(
            &format!(
                "bash {STAGE}/install-agent.sh --from {STAGE} --prefix \"$HOME/.rh/bin\" \
                 --port {agent_port}; rc=$?; rm -rf {STAGE}; exit $rc"
            ),
            None,
        )
        .await?;
    for line in out.stdout.lines().chain(out.stderr.lines()) {
        tracing::debug!(node = %node.name, "install-agent.sh: {line}");
    }
    if !out.success {
        let text = format!("{}\n{}", out.stdout, out.stderr);
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        let tail = lines[lines.len().saturating_sub(4)..].join(" | ");
        return Err(TransportError::Ssh {
            node: node.name.clone(),
            detail: format!("install-agent.sh exited with {}: {tail}", out.status),
        });
    }
    let boot = BootMethod::parse(&format!("{}\n{}", out.stdout, out.stderr));
    if boot.is_none() {
        tracing::warn!(node = %node.name, "install-agent.sh did not say how the agent starts at boot");
    }
    Ok(boot)
}

/// `controller cluster disconnect NAME`: close the persisted SSH masters.
fn disconnect(args: ClusterNameArgs, ctx: &Context) -> Result<u8> {
    let (cluster, nodes) = resolve_cluster(ctx, &args.name)?;
    let remote = crate::cli::RemoteOpts {
        parallel: 32,
        timeout: 15,
        accept_new_host_keys: false,
        ssh_persist: Some(0),
    };
    let opts = TransportOptions::new(ctx, &remote, &cluster.name, args.output.json);
    let rt = runtime()?;
    let results: Vec<(String, Result<bool, TransportError>)> = rt.block_on(async {
        let mut out = vec![];
        for node in &nodes {
            let r = match &node.target {
                Target::Ssh(t) => ssh::disconnect(t, &opts).await,
                Target::Local => Ok(false),
            };
            out.push((node.name.clone(), r));
        }
        out
    });
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
