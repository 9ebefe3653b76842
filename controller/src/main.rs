//! `controller`: parse the command line, set up tracing on stderr, start the
//! one async runtime, run the command on it, print the error chain (each
//! cause once) and exit with its code.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use controller::cli::Cli;
use controller::Context;
use controller::{commands, exit, output};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // -v and -vv raise this project's own crates only: the crates below
    // them (the AWS SDK, hyper, rustls...) stay at warn, as their debug
    // output prints what they handle (the SDK's `Credentials` debug print
    // names the access key id). RH_LOG sets any filter on purpose.
    let default = match cli.verbose {
        0 => "warn",
        1 => "warn,controller=debug,common=debug",
        _ => "warn,controller=trace,common=trace",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("RH_LOG").unwrap_or_else(|_| EnvFilter::new(default)),
        )
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    let ctx = if cli.stdin_env {
        // The std handle's buffer is shared: what follows the first line
        // stays readable by the command (`--secret-json -`).
        Context::from_stdin_env(&mut std::io::stdin().lock())
    } else {
        Context::from_process()
    };
    let result = ctx.and_then(|ctx| {
        // Multi-threaded: a fan-out runs one task per node (`--parallel`).
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .enable_all()
            .build()
            .context("start the async runtime")?;
        runtime.block_on(commands::dispatch(cli.command, &ctx))
    });
    match result {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("error: {}", output::error_chain(err.as_ref()));
            ExitCode::from(exit::code_of(&err))
        }
    }
}
