//! `agent`: parses flags, sets up tracing to stderr, loads the config and
//! calls [`agent::serve`]; `agent env-host` is the hidden subcommand the
//! agent re-executes for each env process. No logic lives here.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

/// The node agent: writes credential files and keeps env processes.
#[derive(Debug, Parser)]
#[command(name = "agent", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the HTTP API (loopback only unless TLS is configured).
    Serve(ServeArgs),
    /// Credentials of session secrets, for tools that ask a program.
    #[command(subcommand)]
    Credentials(CredentialsCommand),
    /// Internal: the process behind one env (started by `agent serve`).
    #[command(hide = true)]
    EnvHost {
        /// The env's name.
        #[arg(long)]
        name: String,
    },
}

#[derive(Debug, Subcommand)]
enum CredentialsCommand {
    /// A `credential_process` helper: prints botocore's Version 1 JSON for
    /// an AWS session secret, read from the running agent; exits non-zero
    /// with a message on stderr when it cannot (expired, agent down, ...).
    Aws {
        /// The session secret [default: the only AWS session on this node].
        #[arg(long, value_name = "NAME")]
        secret: Option<String>,
        /// The agent's state dir [default: $HOME/.rh/agent].
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// The node user's home, for the default state dir [default: $HOME].
        #[arg(long)]
        home: Option<PathBuf>,
    },
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:32300]; a non-loopback
    /// address is refused unless the config file configures TLS.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// The node user's home; every file written is confined to it [default: $HOME].
    #[arg(long)]
    home: Option<PathBuf>,
    /// Token, state and audit log directory [default: <home>/.rh/agent].
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Config file (YAML or JSON): listen, home, state_dir, body_limit_bytes,
    /// request_timeout_secs, run_timeout_secs, max_run_timeout_secs,
    /// output_cap_bytes, max_envs, max_connections, header_read_timeout_secs,
    /// tls {cert, key}, allow_paths, pull_bundle, poll_interval_secs,
    /// heartbeat_secs, pull_boot_wait_secs.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Fleet mode: pull this cluster's secrets from the remote store with the
    /// node bundle BUNDLE (written by `controller cluster enroll`); the first
    /// poll is applied before the port opens. Also `pull_bundle` in the
    /// config, with `poll_interval_secs` (default 10) and `heartbeat_secs`.
    #[arg(long, value_name = "BUNDLE")]
    pull: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Credentials(CredentialsCommand::Aws {
            secret,
            state_dir,
            home,
        }) => {
            use agent::credentials::helper;
            let out = state_dir
                .map_or_else(|| helper::default_state_dir(home), Ok)
                .and_then(|dir| helper::aws_process_json(&dir, secret.as_deref()));
            match out {
                Ok(json) => {
                    println!("{json}");
                    ExitCode::SUCCESS
                }
                Err(message) => {
                    eprintln!("agent credentials aws: {message}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::EnvHost { name } => {
            ExitCode::from(u8::try_from(agent::run_env_host(&name)).unwrap_or(1))
        }
        Command::Serve(args) => {
            tracing_subscriber::fmt()
                .with_env_filter(
                    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
                )
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .init();
            match serve(args) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("agent: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let file = match &args.config {
        Some(path) => agent::FileConfig::load(path)?,
        None => agent::FileConfig::default(),
    };
    let mut config = agent::Config::resolve(file, args.listen, args.home, args.state_dir)?;
    if let Some(bundle) = args.pull {
        config.pull_bundle = Some(bundle);
    }
    // Room for the connection cap: the soft open-file limit up to the hard one.
    let fds = agent::raise_fd_limit();
    tracing::debug!(open_file_limit = fds, "open-file limit");
    let workers = std::thread::available_parallelism()
        .map(|n| n.get().min(4))
        .unwrap_or(2);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .max_blocking_threads(32)
        .enable_all()
        .build()
        .context("start the async runtime")?;
    runtime.block_on(async move {
        let listen = config.listen;
        let state = agent::AppState::open(config)
            .await
            .context("open the agent state")?;
        // Pull mode: applied before the port opens (the boot unit's health
        // check passes only then).
        let _pull = agent::start_pull(&state).await.context("pull mode")?;
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("listen on {listen}"))?;
        agent::serve(listener, state, shutdown_signal())
            .await
            .context("serve")
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("install SIGINT handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
    }
}
