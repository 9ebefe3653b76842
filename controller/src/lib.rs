//! The controller: finds the user's provider secrets, keeps them in
//! `~/.rh/secrets`, and pushes them to the agents of a cluster.
//! All logic lives here so tests drive it without spawning a process: a
//! command (`commands/`) loads the cluster's [`mode`] once, asks the
//! [`plan`] what goes where, and hands it to the mode's deliverer (`remote`
//! and `transport/` for a push, `fleet/` for a pull); `vault/` is the
//! user's store. Nothing below `commands/` calls a command; `main.rs` only
//! parses, starts the one async runtime [`commands::dispatch`] runs on, and
//! exits.
//! Results go to stdout, diagnostics to stderr; no value is ever printed
//! unless the user asked with `--reveal`.

pub mod agents;
pub mod cli;
pub mod commands;
pub mod context;
pub mod exit;
mod given;
pub mod local_secrets;
pub mod mint;
mod mode;
pub mod outcome;
pub mod output;
mod plan;
mod remote;
pub mod vault;

pub use context::Context;
pub mod clusters;
pub mod envs;
pub mod fleet;
pub mod transport;
