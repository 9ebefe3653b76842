//! `controller cluster bootstrap NAME`: asks each node `uname -m`, picks the static agent built for
//! it ([`crate::agents`]; `--agent-bin` overrides), copies it and the real
//! boot files (`scripts/install-agent.sh`, `agent-boot.sh`,
//! `rh-agent.service`, embedded in this binary) to the node over SSH as the
//! node's user, verifies the binary's SHA-256 on the node, runs the install
//! script (a system unit run as the login user when systemd is PID 1 and the
//! user has passwordless sudo; else, as the user, a user unit with lingering
//! when systemd is PID 1, else the `agent-boot.sh` supervisor plus an
//! `@reboot` crontab entry when `crontab` exists), reports per node which
//! agent and which boot method were installed, and checks `/healthz`
//! through the tunnel. Re-running it upgrades in place.
//! On a pull cluster (added with `--pull --host ...`) it also mints one
//! fresh response-wrapped secret_id per node (the same role and bundle code
//! as `cluster enroll`, [`crate::fleet::admin`]), copies that node's bundle
//! to `~/.rh/agent/bundle.json` (0600) with a pull config naming it, and
//! installs the agent with `--config` so it starts in pull mode at boot; the
//! agent applies the store's secrets before it listens, so a node reported
//! `running` is applied. Each bundle is recorded (named after its host) with
//! its secret_id accessor; once a host runs its new bundle, the one it had
//! before is revoked (a bundle that failed to install is revoked at once).
//! Only the bundle's path is ever printed.
//! No secret value is involved.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use serde::Serialize;

use crate::agents::{AgentBin, Agents, AgentsError};
use crate::cli::BootstrapArgs;
use crate::clusters::{Cluster, Node, Target};
use crate::exit::UsageError;
use crate::fleet::admin::{self, BundleIdentity, RoleOptions, SecretIdKind};
use crate::fleet::nodes::{BundleEntry, BundleKind, Registry};
use crate::fleet::Store;
use crate::output::{print_json, Table};
use crate::remote::{exit_code, Remote};
use crate::transport::ssh::{self, Input, SshSession};
use crate::transport::{self, TransportError, TransportOptions};
use crate::Context;

/// The install script, boot script and unit, shipped inside the controller:
/// the same files as `scripts/`, so a node gets exactly what the docs describe.
mod scripts {
    pub(super) const INSTALL: &str = include_str!("../../../../scripts/install-agent.sh");
    pub(super) const BOOT: &str = include_str!("../../../../scripts/agent-boot.sh");
    pub(super) const UNIT: &str = include_str!("../../../../scripts/rh-agent.service");
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
            Self::SystemdSystem => "systemd system unit rh-agent.service",
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
    /// The node's `uname -m`.
    #[serde(skip_serializing_if = "Option::is_none")]
    arch: Option<String>,
    /// The agent sent: its target (`x86_64-unknown-linux-musl`) or `--agent-bin`.
    #[serde(skip_serializing_if = "Option::is_none")]
    agent: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sha256: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    boot: Option<BootMethod>,
    /// Pull cluster: where the node's fresh bundle was put (`~/.rh/agent/bundle.json`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pull_bundle: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// What bootstrapping one node achieved.
#[derive(Debug)]
struct Installed {
    version: String,
    boot: Option<BootMethod>,
    /// Pull cluster: the bundle's path on the node.
    pull_bundle: Option<String>,
}

/// Why one node's bootstrap failed.
#[derive(Debug, thiserror::Error)]
enum NodeError {
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// No agent fits the node (architecture, lookup, checksum).
    #[error("{node}: {source}")]
    Agent { node: String, source: AgentsError },
    /// The copy on the node is not the binary sent.
    #[error("{node}: {detail}")]
    Verify { node: String, detail: String },
    /// Minting the node's secret_id or building its bundle failed.
    #[error("{node}: node bundle: {source}")]
    Bundle {
        node: String,
        source: crate::vault::VaultError,
    },
}

/// Where a pull cluster's node keeps its bundle and its pull config
/// (relative to its home; `~/.rh/` is never a secret's destination).
const PULL_BUNDLE: &str = ".rh/agent/bundle.json";
const PULL_CONFIG: &str = ".rh/agent/pull.yaml";
/// How long the install script waits for a pulling agent to listen: it
/// applies the store's secrets first (the agent's own boot wait is 60 s).
const PULL_START_WAIT_SECS: u64 = 75;

/// What a pull cluster's bootstrap needs beyond the push one: the store (the
/// user's token), the cluster's role_id, the poll interval to configure, and
/// the bundles made here (each node's new one recorded once it runs it).
#[derive(Debug)]
struct PullPlan {
    store: Store,
    cluster: String,
    role_id: String,
    poll_interval: Option<u64>,
    registry: std::sync::Mutex<Registry>,
    /// Bundle ids the hosts replaced (their reports go at the end).
    replaced: std::sync::Mutex<Vec<String>>,
    home: std::path::PathBuf,
    /// Env vars the node owner allows the store's secrets to set (`--allow-var`).
    allow_vars: Vec<String>,
}

impl PullPlan {
    /// The store, and the cluster's policy and AppRole (idempotent, as `enroll`).
    async fn prepare(args: &BootstrapArgs, ctx: &Context, cluster: &Cluster) -> Result<Self> {
        if args.poll_interval == Some(0) {
            return Err(UsageError("--poll-interval must be at least 1 second".into()).into());
        }
        for var in &args.allow_vars {
            common::names::validate_env_var_name(var)
                .map_err(|e| UsageError(format!("--allow-var: {e}")))?;
        }
        let token_ttl = args.token_ttl;
        let store = Store::connect(ctx)?;
        let role_id = admin::ensure_role(&store, &cluster.name, RoleOptions { token_ttl })
            .await
            .with_context(|| format!("configure the AppRole of cluster {}", cluster.name))?;
        let registry = Registry::load(&ctx.home, &cluster.name)?;
        Ok(Self {
            store,
            cluster: cluster.name.clone(),
            role_id,
            poll_interval: args.poll_interval,
            registry: std::sync::Mutex::new(registry),
            replaced: std::sync::Mutex::new(Vec::new()),
            home: ctx.home.clone(),
            allow_vars: args.allow_vars.clone(),
        })
    }

    /// A fresh wrapped secret_id for `node`, as bundle JSON (held as a
    /// secret), and its record (for [`Self::settle`]).
    async fn bundle_for(
        &self,
        node: &Node,
    ) -> Result<(common::SecretText, BundleEntry), NodeError> {
        let fail = |source| NodeError::Bundle {
            node: node.name.clone(),
            source,
        };
        let kind = SecretIdKind::Wrapped { wrap_ttl: 15 * 60 };
        let (bundle_id, report_key) = self.registry.lock().expect("registry").new_bundle_key();
        let minted =
            admin::new_secret_id(&self.store, &self.cluster, &kind, &node.name, &bundle_id)
                .await
                .map_err(fail)?;
        let entry = BundleEntry {
            name: node.name.clone(),
            bundle_id: bundle_id.clone(),
            accessor: minted.accessor,
            kind: BundleKind::Bootstrap,
            created_at: common::time::now_rfc3339(false),
            revoked_at: None,
        };
        let who = BundleIdentity {
            name: node.name.clone(),
            bundle_id,
            report_key,
        };
        // No boot spread: bootstrap starts its nodes one SSH session at a
        // time, and waits for each to apply.
        let bundle = admin::bundle(
            &self.store,
            &self.cluster,
            &self.role_id,
            minted.secret,
            true,
            0,
            who,
        );
        let bundle = match bundle {
            Ok(b) => b,
            Err(e) => {
                self.settle(entry, false).await;
                return Err(fail(e));
            }
        };
        Ok((
            common::SecretText::new(
                serde_json::to_string_pretty(&bundle).expect("bundle serializes"),
            ),
            entry,
        ))
    }

    /// After a node's bootstrap: when it runs its new bundle, record it and
    /// revoke the one the host had before; when it failed, revoke the new
    /// one (no node holds it). A revocation that fails is a warning: the
    /// bundle stays recorded and `cluster revoke-node` can be run again.
    async fn settle(&self, entry: BundleEntry, installed: bool) {
        let (stale, name) = if installed {
            let old = self.registry.lock().expect("registry").add(entry.clone());
            (old, entry.name)
        } else {
            (Some(entry.clone()), entry.name)
        };
        let Some(stale) = stale else { return };
        match admin::destroy_secret_id(&self.store, &self.cluster, &stale.accessor).await {
            Ok(()) => {
                self.registry
                    .lock()
                    .expect("registry")
                    .mark_revoked(&stale.bundle_id);
                if installed {
                    self.replaced
                        .lock()
                        .expect("replaced")
                        .push(stale.bundle_id);
                }
            }
            Err(e) => eprintln!(
                "warning: {name}: cannot revoke its {} bundle: {e}; run `controller cluster \
                 revoke-node {} {name}`",
                if installed { "previous" } else { "unused new" },
                self.cluster
            ),
        }
    }

    /// Save the bundles recorded during the bootstrap, and delete the
    /// reports of the bundles hosts replaced (each node reports under its
    /// new one; one LIST for the whole run).
    async fn finish(&self) -> Result<()> {
        self.registry
            .lock()
            .expect("registry")
            .save(&self.home, &self.cluster)?;
        let replaced = std::mem::take(&mut *self.replaced.lock().expect("replaced"));
        if let Err(e) =
            crate::fleet::publish::forget_reports(&self.store, &self.cluster, &replaced).await
        {
            eprintln!("warning: cannot delete the reports of the replaced bundles: {e}");
        }
        Ok(())
    }

    /// The pull config for a node whose home is `home`: absolute paths
    /// (the unit and the boot script run the agent from anywhere), strings
    /// JSON-quoted (YAML reads JSON).
    fn config_text(&self, home: &str) -> String {
        let home = home.trim_end_matches('/');
        let mut text = format!(
            "# written by controller cluster bootstrap (pull cluster {})\npull_bundle: {}\n",
            self.cluster,
            serde_json::Value::from(format!("{home}/{PULL_BUNDLE}"))
        );
        if let Some(s) = self.poll_interval {
            text.push_str(&format!("poll_interval_secs: {s}\n"));
        }
        if !self.allow_vars.is_empty() {
            let vars = serde_json::Value::from(self.allow_vars.clone());
            text.push_str(&format!("allow_vars: {vars}\n"));
        }
        // The user let this controller send its token over plain http
        // (RH_VAULT_ALLOW_HTTP / allow_insecure_http), and the node will use
        // the same URLs: say so in the node's own config, or it refuses them.
        let config = &self.store.config;
        if config.allow_insecure_http
            && config
                .urls
                .iter()
                .any(|u| common::store_url::parse(u).map_or(true, |u| u.is_cleartext_to_network()))
        {
            text.push_str("pull_allow_insecure_http: true\n");
        }
        text
    }
}

/// What is known of one node's bootstrap, whatever its outcome: its
/// architecture and the agent chosen for it, once asked and chosen.
#[derive(Debug, Default)]
struct Chosen {
    arch: Option<String>,
    agent: Option<AgentBin>,
}

/// `controller cluster bootstrap NAME`.
pub(super) async fn run(args: BootstrapArgs, ctx: &Context) -> Result<u8> {
    let remote = Remote::resolve(ctx, &args.name, &args.remote, args.output.json)?;
    let cluster = &remote.cluster;
    if let Some(bin) = &args.agent_bin {
        let bin = bin
            .canonicalize()
            .with_context(|| format!("agent binary {} (--agent-bin)", bin.display()))?;
        if !bin.is_file() {
            return Err(UsageError(format!("agent binary {} is not a file", bin.display())).into());
        }
    }
    let pull = if cluster.pull {
        if remote.nodes.is_empty() {
            return Err(UsageError(format!(
                "pull cluster {} has no hosts to bootstrap: add it again with `--pull --host HOST...`, \
                 or start agents with bundles from `controller cluster enroll`",
                cluster.name
            ))
            .into());
        }
        Some(Arc::new(PullPlan::prepare(&args, ctx, cluster).await?))
    } else {
        if args.poll_interval.is_some() || !args.allow_vars.is_empty() {
            return Err(UsageError(format!(
                "--poll-interval and --allow-var apply to pull clusters only; {} is pushed to",
                cluster.name
            ))
            .into());
        }
        None
    };
    let reports: Vec<BootstrapReport> = if cluster.is_local() {
        // The local agent is started on demand; bootstrapping it means starting it.
        remote
            .fan_out("bootstrap", |conn| async move { conn.health().await })
            .await
            .into_iter()
            .map(|o| {
                report(
                    o.node,
                    Chosen::default(),
                    o.result
                        .map(|h| Installed {
                            version: h.version,
                            boot: None,
                            pull_bundle: None,
                        })
                        .map_err(NodeError::from),
                )
            })
            .collect()
    } else {
        let agents = Arc::new(Agents::new(args.agent_bin.as_deref(), &ctx.home));
        let shared = Arc::new(remote.opts.clone());
        let plan = pull.clone();
        let reports = remote
            .for_each_node("bootstrap", move |node| {
                let (agents, opts, pull) = (agents.clone(), shared.clone(), pull.clone());
                async move {
                    let mut chosen = Chosen::default();
                    let r =
                        bootstrap_node(&node, &agents, &opts, pull.as_deref(), &mut chosen).await;
                    Ok((chosen, r))
                }
            })
            .await
            .into_iter()
            .map(|o| match o.result {
                Ok((chosen, r)) => report(o.node, chosen, r),
                Err(e) => report(o.node, Chosen::default(), Err(e.into())),
            })
            .collect();
        if let Some(plan) = plan {
            plan.finish().await?;
        }
        reports
    };
    if args.output.json {
        print_json(&serde_json::json!({"cluster": cluster.name, "nodes": reports}))?;
    } else {
        let mut headers = vec![
            "node",
            "status",
            "arch",
            "agent",
            "agent version",
            "starts at boot via",
        ];
        if cluster.pull {
            headers.push("pulls with");
        }
        let mut t = Table::new(&headers);
        for r in &reports {
            let mut row = vec![
                r.node.clone(),
                if r.ok {
                    "running".into()
                } else {
                    "failed".into()
                },
                r.arch.clone().unwrap_or_default(),
                r.agent.clone().unwrap_or_default(),
                r.version.clone().unwrap_or_default(),
                match (r.ok, r.boot) {
                    (true, Some(b)) => b.describe().into(),
                    (true, None) if cluster.is_local() => "- (started on demand)".into(),
                    (true, None) => "unknown (see the install output with -v)".into(),
                    (false, _) => String::new(),
                },
            ];
            if cluster.pull {
                row.push(
                    r.pull_bundle
                        .as_ref()
                        .map(|b| format!("fresh bundle {b}"))
                        .unwrap_or_default(),
                );
            }
            t.row(row);
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

fn report(node: Node, chosen: Chosen, r: Result<Installed, NodeError>) -> BootstrapReport {
    let (version, boot, pull_bundle, error) = match r {
        Ok(i) => (Some(i.version), i.boot, i.pull_bundle, None),
        Err(e) => (None, None, None, Some(e.to_string())),
    };
    BootstrapReport {
        node: node.name,
        ok: error.is_none(),
        arch: chosen.arch,
        agent: chosen.agent.as_ref().map(|a| a.what.clone()),
        sha256: chosen.agent.map(|a| a.sha256),
        version,
        boot,
        pull_bundle,
        error,
    }
}

/// Ask the node's architecture, pick its agent, upload, verify, install,
/// start, and wait for `/healthz` on one node, all through one master
/// connection. On a pull cluster, the node's fresh bundle and pull config
/// go along, minted once the node's agent is known. What was learnt on the
/// way is left in `chosen`.
async fn bootstrap_node(
    node: &Node,
    agents: &Agents,
    opts: &TransportOptions,
    pull: Option<&PullPlan>,
    chosen: &mut Chosen,
) -> Result<Installed, NodeError> {
    let Target::Ssh(t) = &node.target else {
        unreachable!("only ssh nodes are bootstrapped over ssh")
    };
    let session = SshSession::open(node, t, opts).await?;
    // The bundle minted for this node, settled (recorded or revoked) once
    // the node runs it or failed.
    let mut minted = None;
    let result = async {
        let (arch, home) = stage(&session).await?;
        chosen.arch = Some(arch.clone());
        let bin = agents.for_arch(&arch).map_err(|source| NodeError::Agent {
            node: node.name.clone(),
            source,
        })?;
        let bin = chosen.agent.insert(bin);
        let pull_files = match pull {
            Some(plan) => {
                let (bundle, entry) = plan.bundle_for(node).await?;
                minted = Some(entry);
                Some(PullFiles {
                    bundle,
                    config: plan.config_text(&home),
                })
            }
            None => None,
        };
        let boot = install(&session, node, bin, t.agent_port, pull_files.as_ref()).await?;
        let version = wait_healthy(&session, node, t, opts).await?;
        Ok(Installed {
            version,
            boot,
            pull_bundle: pull.map(|_| format!("~/{PULL_BUNDLE}")),
        })
    }
    .await;
    session.close().await;
    if let (Some(plan), Some(entry)) = (pull, minted) {
        plan.settle(entry, result.is_ok()).await;
    }
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

/// Check the node has bash, make the stage `~/.rh/install` (0700), and
/// return the node's `uname -m` and its `$HOME`.
async fn stage(session: &SshSession) -> Result<(String, String), TransportError> {
    let out = session
        .run_with_input(
            &format!(
                "command -v bash >/dev/null 2>&1 || {{ echo 'bash is required on the node' >&2; exit 1; }}; \
                 umask 077 && mkdir -p \"$HOME/.rh\" {STAGE} && chmod 700 \"$HOME/.rh\" {STAGE} && uname -m \
                 && printf '%s\\n' \"$HOME\""
            ),
            None,
        )
        .await?;
    let mut lines = out.lines();
    let arch = lines.next().unwrap_or_default().trim().to_owned();
    let home = lines.next().unwrap_or_default().trim().to_owned();
    Ok((arch, home))
}

/// A pull cluster node's bundle (its wrapped secret_id) and pull config.
struct PullFiles {
    bundle: common::SecretText,
    config: String,
}

impl std::fmt::Debug for PullFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PullFiles")
            .field("bundle", &"<redacted>")
            .field("config", &self.config)
            .finish()
    }
}

/// The node command that checks the staged agent's SHA-256 against `sha256`
/// (`sha256sum`, else `shasum -a 256`) and fails, saying what it found,
/// when it differs: a corrupt copy is never installed.
fn verify_command(sha256: &str) -> String {
    format!(
        "f={STAGE}/agent; if command -v sha256sum >/dev/null 2>&1; then s=$(sha256sum \"$f\"); \
         elif command -v shasum >/dev/null 2>&1; then s=$(shasum -a 256 \"$f\"); \
         else echo 'neither sha256sum nor shasum on the node: cannot verify the agent' >&2; exit 1; fi; \
         s=${{s%% *}}; [ \"$s\" = {sha256} ] || {{ echo \"the agent copied to the node has sha256 ${{s:-none}}, \
         expected {sha256}: not installed\" >&2; exit 1; }}"
    )
}

/// The node command that runs the staged install script: as root for a
/// system unit run as the login user when systemd is PID 1 and the user has
/// passwordless sudo, else as the user (binary in `~/.rh/bin`).
/// With `pull`, the agent is started with the pull config (fleet mode), and
/// the script waits for it to apply the store's secrets and listen.
fn install_command(agent_port: u16, pull: bool) -> String {
    let extra = if pull {
        format!("--start-wait {PULL_START_WAIT_SECS} -- --config \"$HOME/{PULL_CONFIG}\"")
    } else {
        String::new()
    };
    format!(
        "if [ \"$(id -u)\" != 0 ] && [ -d /run/systemd/system ] \
            && [ \"$(cat /proc/1/comm 2>/dev/null)\" = systemd ] && sudo -n true 2>/dev/null; then \
           sudo -n bash {STAGE}/install-agent.sh --from {STAGE} --user \"$(id -un)\" --port {agent_port} {extra}; \
         else \
           bash {STAGE}/install-agent.sh --from {STAGE} --prefix \"$HOME/.rh/bin\" --port {agent_port} {extra}; \
         fi; rc=$?; rm -rf {STAGE}; exit $rc"
    )
}

/// Stage the binary and the boot files in `~/.rh/install`, verify the
/// binary's SHA-256 there, put a pull cluster's bundle and config in
/// `~/.rh/agent` (0600, atomic), run the install script ([`install_command`]),
/// and remove the stage. Returns the boot method the script reported.
async fn install(
    session: &SshSession,
    node: &Node,
    bin: &AgentBin,
    agent_port: u16,
    pull: Option<&PullFiles>,
) -> Result<Option<BootMethod>, NodeError> {
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
        session.run_with_input(&upload_bin, Some(Input::File(&bin.path))),
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
    let verified = session.output(&verify_command(&bin.sha256), None).await?;
    if !verified.success {
        return Err(NodeError::Verify {
            node: node.name.clone(),
            detail: verified.stderr.trim().to_owned(),
        });
    }
    if let Some(files) = pull {
        // Before the install script starts the agent, which reads them.
        let put = |rel: &'static str| {
            format!(
                "umask 077 && mkdir -p \"$HOME/.rh/agent\" && chmod 700 \"$HOME/.rh/agent\" \
                 && cat > \"$HOME/{rel}.part\" && chmod 600 \"$HOME/{rel}.part\" \
                 && mv -f \"$HOME/{rel}.part\" \"$HOME/{rel}\""
            )
        };
        session
            .run_with_input(
                &put(PULL_BUNDLE),
                Some(Input::Bytes(files.bundle.expose_secret().as_bytes())),
            )
            .await?;
        session
            .run_with_input(
                &put(PULL_CONFIG),
                Some(Input::Bytes(files.config.as_bytes())),
            )
            .await?;
    }
    let out = session
        .output(&install_command(agent_port, pull.is_some()), None)
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
        }
        .into());
    }
    let boot = BootMethod::parse(&format!("{}\n{}", out.stdout, out.stderr));
    if boot.is_none() {
        tracing::warn!(node = %node.name, "install-agent.sh did not say how the agent starts at boot");
    }
    Ok(boot)
}
