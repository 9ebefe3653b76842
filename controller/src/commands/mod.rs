//! One module per subcommand, each with a `run` function (`async` where it
//! talks to nodes or the store). A command plans, delivers by the cluster's
//! mode and reports (`crate::plan`, `crate::mode`); no command module
//! imports another. [`dispatch`] maps the parsed command line to
//! them and returns the process exit code: 0 success, 1 failure, 2 bad
//! usage, 3 some nodes failed and others succeeded. It runs on the one
//! runtime `main` starts (or a test's); no command starts its own.

use anyhow::Result;

pub mod cluster;
pub mod env;
pub mod revoke;
pub mod run;
pub mod send;
pub mod status;
pub mod sync;

use crate::cli::Command;
use crate::Context;

pub mod login;
pub mod providers;
pub mod secret;
pub mod vault;

// The exit codes and `UsageError` live in `crate::exit`.
pub use crate::exit::{self, UsageError};

/// Run a parsed command on the current tokio runtime (multi-threaded: the
/// fan-out spawns one task per node).
pub async fn dispatch(command: Command, ctx: &Context) -> Result<u8> {
    match command {
        Command::Cluster(c) => cluster::run(c, ctx).await,
        Command::Sync(a) => sync::run(a, ctx).await,
        Command::Send(a) => send::run(a, ctx).await,
        Command::Env(c) => env::run(c, ctx).await,
        Command::Run(a) => run::run(a, ctx).await,
        Command::Status(a) => status::run(a, ctx).await,
        Command::Revoke(a) => revoke::run(a, ctx).await,
        Command::Providers(args) => providers::run(&args, ctx),
        Command::Secret(command) => secret::run(command, ctx),
        Command::Login(args) => login::run_login(args, ctx).await,
        Command::Logout(args) => login::run_logout(args, ctx),
        Command::Vault(command) => vault::run(command, ctx).await,
    }
}
