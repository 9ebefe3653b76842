//! The command line: every subcommand and flag, as clap derive structs.
//! Names are fixed by `shared/spec/interface.md`. No struct here derives
//! `Debug` over a field that can hold a value (`--value`, `--var`): those
//! implement it by hand.

mod duration;

use std::fmt;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use common::wire::{DEFAULT_AGENT_PORT, DEFAULT_ENV, DEFAULT_RUN_TIMEOUT_SECS};
use duration::{duration, session_lifetime};

/// Nodes reached at once unless `--parallel` says otherwise.
pub const DEFAULT_PARALLEL: usize = 32;
/// Seconds per node for connecting and each request unless `--timeout` says otherwise.
pub const DEFAULT_TIMEOUT_SECS: u64 = 15;

/// How results are printed; shared by every command that prints results.
#[derive(Debug, Args, Clone, Copy)]
pub struct OutputOpts {
    /// One JSON document on stdout (stable keys; values redacted unless --reveal).
    #[arg(long)]
    pub json: bool,
}

/// Get your cloud and API credentials onto every node of your clusters.
#[derive(Debug, Parser)]
#[command(name = "controller", version, about, propagate_version = true)]
pub struct Cli {
    /// More diagnostics on stderr (-v debug, -vv trace) from this program;
    /// the libraries it uses stay at warnings (RH_LOG=FILTER for any other
    /// level). Never prints values.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Read the environment that secrets are looked up in (provider env
    /// vars, VAULT_TOKEN, ...) as one JSON object `{"VAR": "value"}` on the
    /// first line of stdin, added over this process's environment, so values
    /// can stay out of /proc/PID/environ. The rest of stdin is the command's
    /// (`--secret-json -`, `--values-json -`). Used by the Python package.
    #[arg(long = "stdin-env", global = true)]
    pub stdin_env: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The builtin providers: id, default path, default env vars, value keys.
    Providers(ProvidersArgs),
    /// Secrets on this machine: detect, create, show, list, delete, write.
    #[command(subcommand)]
    Secret(SecretCommand),
    /// Clusters: add, list, show, remove, bootstrap.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Push secrets to every node of a cluster (files, and env vars in an env).
    Sync(SyncArgs),
    /// Send one secret to a cluster.
    Send(SendArgs),
    /// Envs: named processes on the nodes whose environment holds secrets.
    #[command(subcommand)]
    Env(EnvCommand),
    /// Run a command inside an env's process on each node.
    Run(RunArgs),
    /// What each node holds: secret names, paths, envs, var names, fingerprints.
    Status(StatusArgs),
    /// Remove a secret's files and env vars from the nodes.
    Revoke(RevokeArgs),
    /// Connect to the remote store (Vault KV v2); optionally upload/download secrets.
    Login(LoginArgs),
    /// Forget the remote store; optionally delete local credentials.
    Logout(LogoutArgs),
    /// The remote store: list, push, pull.
    #[command(subcommand)]
    Vault(VaultCommand),
}

#[derive(Debug, Args)]
pub struct ProvidersArgs {
    #[command(flatten)]
    pub output: OutputOpts,
}

#[derive(Debug, Subcommand)]
pub enum SecretCommand {
    /// The provider secrets configured on this machine (files, env vars, ~/.ssh keys).
    Detect(DetectArgs),
    /// Create and save a secret to ~/.rh/secrets/NAME.json.
    Create(Box<CreateArgs>),
    /// Show one saved (or detected) secret.
    Show(ShowArgs),
    /// List saved secrets (names, providers, paths; never values).
    List(ListArgs),
    /// Delete a saved secret (its credential files are left alone).
    Delete(DeleteArgs),
    /// Write a secret's values into its provider file on this machine (merge, atomic, 0600).
    Write(WriteArgs),
}

#[derive(Debug, Args)]
pub struct DetectArgs {
    /// Only these providers (repeatable).
    #[arg(long = "provider", value_name = "P")]
    pub providers: Vec<String>,
    /// Print values instead of `<redacted>`.
    #[arg(long)]
    pub reveal: bool,
    #[command(flatten)]
    pub output: OutputOpts,
}

#[derive(Args)]
pub struct CreateArgs {
    /// Name of the secret (file name in ~/.rh/secrets).
    pub name: String,
    /// Provider id; without it a base secret is created.
    #[arg(long)]
    pub provider: Option<String>,
    /// File to extract the values from (and where `secret write` puts them).
    #[arg(long)]
    pub path: Option<String>,
    /// Value key to environment variable, KEY=VAR (repeatable).
    #[arg(long = "env-var", value_name = "KEY=VAR")]
    pub env_vars: Vec<String>,
    /// A value, KEY=VALUE (repeatable). Visible in shell history and `ps`: prefer --values-json.
    #[arg(long = "value", value_name = "KEY=VALUE")]
    pub values: Vec<String>,
    /// A JSON object of values, from FILE or `-` for stdin.
    #[arg(long = "values-json", value_name = "FILE|-")]
    pub values_json: Option<String>,
    /// Replace an existing saved secret of the same name.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub session: SessionArgs,
    #[command(flatten)]
    pub output: OutputOpts,
}

/// `secret create --session`: a secret that is minted, not copied.
#[derive(Debug, Args, Clone, Default)]
pub struct SessionArgs {
    /// A session secret (aws, gcp): nodes get credentials minted here that
    /// expire (an STS session, a 1 h access token), never the keys or
    /// refresh tokens of this machine. Minted again by every `sync`, and
    /// before half their life by `sync --keep-fresh`.
    #[arg(long, conflicts_with_all = ["path", "env_vars", "values", "values_json"])]
    pub session: bool,
    /// aws: the profile of ~/.aws/config to resolve (SSO, role, process,
    /// static keys) [default: $AWS_PROFILE, else default].
    #[arg(long, requires = "session")]
    pub profile: Option<String>,
    /// aws: a role to assume with the profile's credentials.
    #[arg(long = "role-arn", value_name = "ARN", requires = "session")]
    pub role_arn: Option<String>,
    /// aws: the session's lifetime (e.g. 1h, 90m, 900s; STS limits apply:
    /// 15 min to 12 h for a role, 36 h for GetSessionToken) [default: 1h].
    #[arg(long, value_name = "DUR", requires = "session", value_parser = session_lifetime)]
    pub duration: Option<u64>,
    /// gcp: a service account to impersonate (IAM Credentials
    /// generateAccessToken with your user credentials).
    #[arg(long, value_name = "SA_EMAIL", requires = "session")]
    pub impersonate: Option<String>,
    /// gcp: scopes of the impersonated token, comma-separated [default: cloud-platform].
    #[arg(
        long,
        value_name = "S,...",
        value_delimiter = ',',
        requires = "session"
    )]
    pub scopes: Vec<String>,
}

impl fmt::Debug for CreateArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreateArgs")
            .field("name", &self.name)
            .field("provider", &self.provider)
            .field("path", &self.path)
            .field("env_vars", &self.env_vars)
            .field("values", &format_args!("<{} redacted>", self.values.len()))
            .field("values_json", &self.values_json)
            .field("force", &self.force)
            .field("session", &self.session)
            .field("output", &self.output)
            .finish()
    }
}

/// Which secret a command is about: a saved or detected NAME, or the secret
/// itself as JSON (`--secret-json`), so its values stay out of argv.
#[derive(Debug, Args, Clone)]
pub struct SecretRef {
    /// A saved or detected secret (or give --secret-json).
    #[arg(
        value_name = "NAME",
        required_unless_present = "secret_json",
        conflicts_with = "secret_json"
    )]
    pub name: Option<String>,
    /// The secret itself as JSON (FILE or `-` for stdin), in the shape
    /// `secret show --json` prints (`name`, `provider`, `path`, `env_vars`,
    /// `values`), instead of a saved or detected NAME: values stay out of argv.
    /// Without `values` they are extracted from its path, env vars or the
    /// provider's defaults, as `secret create` does.
    #[arg(long = "secret-json", value_name = "FILE|-")]
    pub secret_json: Option<String>,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    #[command(flatten)]
    pub secret: SecretRef,
    /// Print values instead of `<redacted>`.
    #[arg(long)]
    pub reveal: bool,
    #[command(flatten)]
    pub output: OutputOpts,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub output: OutputOpts,
}

#[derive(Debug, Args)]
pub struct DeleteArgs {
    pub name: String,
}

#[derive(Debug, Args)]
pub struct WriteArgs {
    #[command(flatten)]
    pub secret: SecretRef,
    /// Write here instead of the secret's path or the provider's default file.
    #[arg(long)]
    pub path: Option<String>,
    /// Replace differing values of the secret's keys (other content is kept).
    #[arg(long)]
    pub overwrite: bool,
    #[command(flatten)]
    pub output: OutputOpts,
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Add (or replace) a cluster.
    Add(ClusterAddArgs),
    /// List clusters.
    List(ListArgs),
    /// Show one cluster.
    Show(ClusterNameArgs),
    /// Remove a cluster from this machine (nodes are left alone).
    Remove(ClusterNameArgs),
    /// Install the agent and its boot unit on every node, start it, check /healthz.
    Bootstrap(BootstrapArgs),
    /// Close the persisted SSH master connections to the cluster's nodes.
    Disconnect(ClusterNameArgs),
    /// Fleet mode: create the cluster's read-only policy and AppRole in the
    /// store (idempotent) and write node bundles `DIR/node-<i>.json` (0600),
    /// each with a response-wrapped, single-use secret_id, for cloud-init
    /// user-data or an image bake.
    Enroll(EnrollArgs),
    /// Fleet mode: workload identity for a pull cluster (idempotent). In the
    /// store: a signing key and one OIDC role per cloud named here (tokens
    /// say `cluster`; `sub` is the cluster's, the same on every node), read
    /// on the token paths in the cluster's policy, and the federation
    /// document the nodes wire their SDKs from. Prints the issuer and what to
    /// create in each cloud. Nodes then keep a token file fresh and the SDKs
    /// exchange it themselves; no key anywhere.
    Federate(FederateArgs),
    /// Fleet mode: revoke one bundle: its secret_id is destroyed, so neither
    /// its node nor anyone holding a copy logs in with it again (tokens
    /// already issued end within the token TTL). Then enroll the node again.
    RevokeNode(RevokeNodeArgs),
}

#[derive(Debug, Args)]
pub struct FederateArgs {
    /// A pull cluster (added with `--pull`, enrolled).
    pub name: String,
    /// AWS: the IAM role nodes assume (AssumeRoleWithWebIdentity).
    #[arg(long = "aws-role-arn", value_name = "ARN")]
    pub aws_role_arn: Option<String>,
    /// AWS: the profile of ~/.aws/config the nodes wire (role_arn,
    /// web_identity_token_file).
    #[arg(long = "aws-profile", value_name = "P", requires = "aws_role_arn")]
    pub aws_profile: Option<String>,
    /// GCP: the workload identity pool provider, as in an external_account
    /// configuration: //iam.googleapis.com/projects/NUMBER/locations/global/
    /// workloadIdentityPools/POOL/providers/PROVIDER.
    #[arg(long = "gcp-audience", value_name = "AUD")]
    pub gcp_audience: Option<String>,
    /// GCP: impersonate this service account with the federated token.
    #[arg(
        long = "gcp-service-account",
        value_name = "EMAIL",
        requires = "gcp_audience"
    )]
    pub gcp_service_account: Option<String>,
    /// Azure: the application (client) id holding the federated credential.
    #[arg(
        long = "azure-client-id",
        value_name = "ID",
        requires = "azure_tenant_id"
    )]
    pub azure_client_id: Option<String>,
    /// Azure: its tenant (id or domain).
    #[arg(
        long = "azure-tenant-id",
        value_name = "TID",
        requires = "azure_client_id"
    )]
    pub azure_tenant_id: Option<String>,
    /// Lifetime of the identity tokens (default 15m, or what the cluster has);
    /// nodes fetch a new one at half of it.
    #[arg(long = "token-ttl", value_name = "DUR", value_parser = duration)]
    pub token_ttl: Option<u64>,
    /// Write the OIDC discovery document and JWKS under DIR (at the issuer's
    /// path) for static hosting, when the store is not reachable from the
    /// clouds; pair it with --issuer. Re-run within each key rotation.
    #[arg(long = "discovery-out", value_name = "DIR")]
    pub discovery_out: Option<PathBuf>,
    /// Set the store's OIDC issuer to this https origin (no path): where the
    /// discovery documents are served. STORE-WIDE: every OIDC role of the
    /// store's namespace takes this issuer.
    #[arg(long, value_name = "URL")]
    pub issuer: Option<String>,
    /// Signing algorithm of the cluster's key: ES256 (default; about a fifth
    /// of RS256's signing cost on the store) or RS256 (default when Azure is
    /// configured: Entra ID verifies RSA keys).
    #[arg(long = "key-algorithm", value_name = "ALG", value_parser = ["ES256", "RS256"])]
    pub key_algorithm: Option<String>,
    /// How often the store rotates the cluster's signing key (default 24h;
    /// the JWKS holds the current and the next key).
    #[arg(long = "key-rotation", value_name = "DUR", default_value = "24h", value_parser = duration)]
    pub key_rotation: u64,
    #[command(flatten)]
    pub output: OutputOpts,
}

#[derive(Debug, Args)]
pub struct RevokeNodeArgs {
    /// A pull cluster.
    pub name: String,
    /// The bundle's name (`node-3`, `launch-1`, or a host bootstrapped as a
    /// pull node) or a node id from `controller status --cluster NAME`.
    #[arg(required_unless_present = "bundle", conflicts_with = "bundle")]
    pub node: Option<String>,
    /// The bundle file (its bundle id names it).
    #[arg(long, value_name = "FILE")]
    pub bundle: Option<PathBuf>,
    #[command(flatten)]
    pub output: OutputOpts,
}

#[derive(Debug, Args)]
pub struct EnrollArgs {
    /// A cluster added with `--pull`.
    pub name: String,
    /// Directory for the bundles (created 0700).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// How many new per-node bundles to write, named after the last one
    /// enrolled from this machine (node-1.. on a new cluster, then node-4..).
    #[arg(long, default_value_t = 1)]
    pub nodes: usize,
    /// Enroll the node bundle NAME again (repeatable, e.g. `--node node-3`):
    /// a fresh DIR/NAME.json, and the bundle of that name enrolled before is
    /// revoked (its secret_id destroyed; a copy of it no longer logs in).
    #[arg(long = "node", value_name = "NAME", conflicts_with_all = ["nodes", "reusable"])]
    pub node_names: Vec<String>,
    /// How long each wrapped secret_id can be unwrapped (e.g. 15m, 1h, 90s).
    #[arg(long = "wrap-ttl", value_name = "DUR", default_value = "15m", value_parser = duration)]
    pub wrap_ttl: u64,
    /// Write ONE launch bundle (DIR/launch.json) for an autoscaling group: its
    /// secret_id is not wrapped and logs in up to --uses times within --ttl
    /// (re-logins count), from the --cidr ranges only. WEAKER than per-node
    /// bundles: anyone who reads it can log in as the cluster until it runs out.
    #[arg(long, requires_all = ["uses", "ttl"])]
    pub reusable: bool,
    /// Logins the launch bundle allows (with --reusable). 0: no count, only
    /// --ttl and --cidr bound it; for large fleets, since a counted login is a
    /// write on that one secret_id and logins of nodes booting together
    /// conflict on it (about 5 logins/s measured on a three-node OpenBao).
    #[arg(long, requires = "reusable")]
    pub uses: Option<u64>,
    /// Lifetime of the launch bundle's secret_id (with --reusable), e.g. 24h.
    #[arg(long, value_name = "DUR", requires = "reusable", value_parser = duration)]
    pub ttl: Option<u64>,
    /// Source address range allowed to log in with the launch bundle (repeatable).
    #[arg(long = "cidr", value_name = "CIDR", requires = "reusable")]
    pub cidrs: Vec<String>,
    /// Lifetime of a node's (batch) token; nodes log in again before it ends.
    #[arg(long = "token-ttl", value_name = "DUR", default_value = "10m", value_parser = duration)]
    pub token_ttl: u64,
    #[command(flatten)]
    pub output: OutputOpts,
}

#[derive(Debug, Args)]
pub struct ClusterAddArgs {
    pub name: String,
    /// Node address (repeatable), HOST or USER@HOST or HOST:PORT. Required
    /// unless --pull (then only used by `cluster bootstrap` over SSH).
    #[arg(long = "host", required_unless_present = "pull")]
    pub hosts: Vec<String>,
    /// Fleet mode: the nodes pull this cluster's secrets from the remote store
    /// (`controller login`) on their own; `sync` publishes, `status` reads
    /// their reports. Enroll nodes with `controller cluster enroll NAME`.
    #[arg(long)]
    pub pull: bool,
    /// SSH user (default: your user name).
    #[arg(long)]
    pub user: Option<String>,
    /// SSH port.
    #[arg(long, default_value_t = 22)]
    pub port: u16,
    /// SSH private key.
    #[arg(long = "identity-file")]
    pub identity_file: Option<PathBuf>,
    /// The agent's port on the nodes (loopback).
    #[arg(long = "agent-port", default_value_t = DEFAULT_AGENT_PORT)]
    pub agent_port: u16,
    #[command(flatten)]
    pub output: OutputOpts,
}

#[derive(Debug, Args)]
pub struct ClusterNameArgs {
    pub name: String,
    #[command(flatten)]
    pub output: OutputOpts,
}

#[derive(Debug, Args)]
pub struct BootstrapArgs {
    pub name: String,
    /// One agent binary for every node, instead of the static agent built
    /// for each node's `uname -m` (scripts/build-agents.sh; looked up in
    /// $RH_AGENTS_DIR, else ~/.rh/agents, else target/agents). It must be a
    /// Linux ELF for the node's machine.
    #[arg(long = "agent-bin")]
    pub agent_bin: Option<PathBuf>,
    /// Pull cluster only: seconds between the nodes' manifest polls, written
    /// to each node's pull config (default: the agent's, 10 s).
    #[arg(long = "poll-interval", value_name = "SECS")]
    pub poll_interval: Option<u64>,
    /// Pull cluster only: an env var the store's secrets may set on the
    /// nodes besides their provider's own (written to each node's pull
    /// config as `allow_vars`; a generic secret sets none without it).
    /// Repeatable.
    #[arg(long = "allow-var", value_name = "NAME")]
    pub allow_vars: Vec<String>,
    /// Pull cluster only: lifetime of a node's (batch) token, as with
    /// `cluster enroll` (the role is updated with it).
    #[arg(long = "token-ttl", value_name = "DUR", default_value = "10m", value_parser = duration)]
    pub token_ttl: u64,
    #[command(flatten)]
    pub remote: RemoteOpts,
    #[command(flatten)]
    pub output: OutputOpts,
}

/// How to reach the nodes.
#[derive(Debug, Args, Clone)]
pub struct RemoteOpts {
    /// At most this many nodes at once.
    #[arg(long, default_value_t = DEFAULT_PARALLEL)]
    pub parallel: usize,
    /// Seconds allowed per node for connecting and for each request.
    #[arg(long, default_value_t = DEFAULT_TIMEOUT_SECS)]
    pub timeout: u64,
    /// Accept (and remember) host keys of hosts not yet in known_hosts. A changed key is always refused.
    #[arg(long = "accept-new-host-keys")]
    pub accept_new_host_keys: bool,
    /// Keep each node's SSH master connection open for this many idle seconds so the
    /// next command skips the handshake (default 300, or $RH_SSH_PERSIST); 0 closes
    /// it when this command ends. `controller cluster disconnect NAME` closes them.
    #[arg(long = "ssh-persist", value_name = "SECS")]
    pub ssh_persist: Option<u64>,
}

#[derive(Debug, Args)]
pub struct SyncArgs {
    #[arg(long)]
    pub cluster: String,
    /// Only these secrets (repeatable): saved names or provider ids. Default: every
    /// detected provider secret plus every saved one.
    #[arg(long = "secret", value_name = "S")]
    pub secrets: Vec<String>,
    /// More secrets as JSON (FILE or `-` for stdin): one object or an array
    /// of them, in the shape `secret show --json` prints; values stay out of
    /// argv. With it, only these and the `--secret` ones are synced (one
    /// given here wins over a saved or detected one of the same name).
    /// Push clusters only.
    #[arg(long = "secret-json", value_name = "FILE|-")]
    pub secret_json: Option<String>,
    /// Env whose process gets the env-var secrets.
    #[arg(long, default_value = DEFAULT_ENV)]
    pub env: String,
    /// Replace differing values on the nodes (other content is kept).
    #[arg(long)]
    pub overwrite: bool,
    /// Show what would change on each node; change nothing.
    #[arg(long = "dry-run")]
    pub dry_run: bool,
    /// Pull cluster: after publishing, wait up to SECS until every live node
    /// reports the new version (exit 3 naming the nodes that did not). Nodes
    /// spread their reports over 1 s per 40 nodes past 100 (10,000 nodes:
    /// 250 s): give a large fleet that long.
    #[arg(long, value_name = "SECS")]
    pub wait: Option<u64>,
    /// Keep running: mint every session secret of the cluster again before
    /// half its lifetime is gone and send (or publish) it, one log line per
    /// refresh and per failure on stderr, until interrupted.
    #[arg(long = "keep-fresh")]
    pub keep_fresh: bool,
    /// Pull cluster: publish as a new epoch. Nodes refuse a manifest older
    /// than the one they applied (no rollback); a new epoch is taken even so:
    /// after restoring the store from a backup, or when the manifest's
    /// history was destroyed.
    #[arg(long = "new-epoch")]
    pub new_epoch: bool,
    #[command(flatten)]
    pub remote: RemoteOpts,
    #[command(flatten)]
    pub output: OutputOpts,
}

#[derive(Debug, Args)]
pub struct SendArgs {
    #[command(flatten)]
    pub secret: SecretRef,
    #[arg(long)]
    pub cluster: String,
    /// Set the secret's env vars in this env (default: files for path secrets, base_env otherwise).
    #[arg(long)]
    pub env: Option<String>,
    /// Write to this path on the nodes.
    #[arg(long)]
    pub path: Option<String>,
    /// Replace differing values on the nodes.
    #[arg(long)]
    pub overwrite: bool,
    #[command(flatten)]
    pub remote: RemoteOpts,
    #[command(flatten)]
    pub output: OutputOpts,
}

#[derive(Debug, Subcommand)]
pub enum EnvCommand {
    /// Define an env: its secrets and plain vars (saved in ~/.rh/envs/NAME.json).
    Create(EnvCreateArgs),
    /// List envs.
    List(ListArgs),
    /// Show one env.
    Show(EnvNameArgs),
    /// Delete an env definition.
    Delete(EnvNameArgs),
    /// Create or refresh the env process on each node, with its secrets and vars.
    Sync(EnvSyncArgs),
}

#[derive(Args)]
pub struct EnvCreateArgs {
    pub name: String,
    /// Secret to bring into the env (repeatable).
    #[arg(long = "secret", value_name = "S")]
    pub secrets: Vec<String>,
    /// Plain variable, KEY=VALUE (repeatable).
    #[arg(long = "var", value_name = "KEY=VALUE")]
    pub vars: Vec<String>,
    #[command(flatten)]
    pub output: OutputOpts,
}

impl fmt::Debug for EnvCreateArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnvCreateArgs")
            .field("name", &self.name)
            .field("secrets", &self.secrets)
            .field("vars", &format_args!("<{} redacted>", self.vars.len()))
            .field("output", &self.output)
            .finish()
    }
}

#[derive(Debug, Args)]
pub struct EnvNameArgs {
    pub name: String,
    #[command(flatten)]
    pub output: OutputOpts,
}

#[derive(Debug, Args)]
pub struct EnvSyncArgs {
    pub name: String,
    #[arg(long)]
    pub cluster: String,
    /// Replace differing values on the nodes.
    #[arg(long)]
    pub overwrite: bool,
    #[command(flatten)]
    pub remote: RemoteOpts,
    #[command(flatten)]
    pub output: OutputOpts,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[arg(long)]
    pub cluster: String,
    /// The env to run in.
    #[arg(long, default_value = DEFAULT_ENV)]
    pub env: String,
    /// Only this node.
    #[arg(long)]
    pub node: Option<String>,
    /// Seconds the command may run on each node before the agent kills it
    /// (`--timeout` only bounds connecting and the other requests).
    #[arg(long = "command-timeout", value_name = "SECS", default_value_t = DEFAULT_RUN_TIMEOUT_SECS)]
    pub command_timeout: u64,
    #[command(flatten)]
    pub remote: RemoteOpts,
    #[command(flatten)]
    pub output: OutputOpts,
    /// The command and its arguments.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub argv: Vec<String>,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[arg(long)]
    pub cluster: String,
    #[command(flatten)]
    pub remote: RemoteOpts,
    #[command(flatten)]
    pub output: OutputOpts,
}

#[derive(Debug, Args)]
pub struct RevokeArgs {
    pub secret: String,
    #[arg(long)]
    pub cluster: String,
    /// Only remove its vars from this env.
    #[arg(long)]
    pub env: Option<String>,
    #[command(flatten)]
    pub remote: RemoteOpts,
    #[command(flatten)]
    pub output: OutputOpts,
}

#[derive(Debug, Args)]
pub struct LoginArgs {
    /// Server URL(s) of the Vault KV v2 store (repeatable; tried in order). Default: $VAULT_ADDR.
    #[arg(long = "url")]
    pub urls: Vec<String>,
    /// Push every detected and saved secret to the store.
    #[arg(long)]
    pub upload: bool,
    /// Pull every remote secret and write its provider files.
    #[arg(long)]
    pub download: bool,
    #[command(flatten)]
    pub output: OutputOpts,
}

#[derive(Debug, Args)]
pub struct LogoutArgs {
    /// Answer yes to every question.
    #[arg(long)]
    pub yes: bool,
}

#[derive(Debug, Subcommand)]
pub enum VaultCommand {
    /// Secret names in the remote store.
    List(ListArgs),
    /// Push saved (or detected) secrets to the store (check-and-set).
    Push(VaultNamesArgs),
    /// Pull secrets from the store into ~/.rh/secrets.
    Pull(VaultNamesArgs),
}

#[derive(Debug, Args)]
pub struct VaultNamesArgs {
    #[arg(required = true)]
    pub names: Vec<String>,
    /// Replace a differing remote (push) or local (pull) copy.
    #[arg(long)]
    pub overwrite: bool,
    #[command(flatten)]
    pub output: OutputOpts,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Command {
        let mut argv = vec!["controller"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv)
            .unwrap_or_else(|e| panic!("{args:?}: {e}"))
            .command
    }

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_listing_command_takes_the_shared_json_flag() {
        let listing: &[&[&str]] = &[
            &["providers"],
            &["secret", "detect"],
            &["secret", "create", "n", "--value", "k=v"],
            &["secret", "show", "n"],
            &["secret", "list"],
            &["secret", "write", "n"],
            &["cluster", "add", "c", "--host", "h"],
            &["cluster", "list"],
            &["cluster", "show", "c"],
            &["cluster", "bootstrap", "c"],
            &["sync", "--cluster", "c"],
            &["send", "s", "--cluster", "c"],
            &["env", "create", "e"],
            &["env", "list"],
            &["env", "show", "e"],
            &["env", "sync", "e", "--cluster", "c"],
            &["status", "--cluster", "c"],
            &["revoke", "s", "--cluster", "c"],
            &["login"],
            &["vault", "list"],
            &["vault", "push", "n"],
        ];
        for args in listing {
            let mut with_json = args.to_vec();
            with_json.push("--json");
            let debug = format!("{:?}", parse(&with_json));
            assert!(
                debug.contains("output: OutputOpts { json: true }"),
                "{with_json:?}: {debug}"
            );
            let debug = format!("{:?}", parse(args));
            assert!(
                debug.contains("output: OutputOpts { json: false }"),
                "{args:?}: {debug}"
            );
        }
        let mut run = vec!["run", "--cluster", "c", "--json", "--", "true"];
        assert!(format!("{:?}", parse(&run)).contains("json: true"));
        run.retain(|a| *a != "--json");
        assert!(format!("{:?}", parse(&run)).contains("json: false"));
    }

    #[test]
    fn defaults_come_from_the_shared_constants() {
        let Command::Sync(sync) = parse(&["sync", "--cluster", "c"]) else {
            panic!("not sync");
        };
        assert_eq!(sync.env, DEFAULT_ENV);
        assert_eq!(sync.remote.parallel, DEFAULT_PARALLEL);
        assert_eq!(sync.remote.timeout, DEFAULT_TIMEOUT_SECS);
        let Command::Run(run) = parse(&["run", "--cluster", "c", "--", "true"]) else {
            panic!("not run");
        };
        assert_eq!(run.env, DEFAULT_ENV);
        assert_eq!(run.command_timeout, DEFAULT_RUN_TIMEOUT_SECS);
        let Command::Cluster(ClusterCommand::Add(add)) =
            parse(&["cluster", "add", "c", "--host", "h"])
        else {
            panic!("not cluster add");
        };
        assert_eq!(add.agent_port, DEFAULT_AGENT_PORT);
    }
}
