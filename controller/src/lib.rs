//! The controller: finds the user's provider secrets, keeps them in
//! `~/.rh/secrets`, and pushes them to the agents of a cluster.
//! All logic lives here (`commands/`, `remote`, `transport/`, `vault/`,
//! `fleet/`) so tests drive it without spawning a process; `main.rs` only
//! parses, starts the one async runtime [`commands::dispatch`] runs on, and
//! exits.
//! Results go to stdout, diagnostics to stderr; no value is ever printed
//! unless the user asked with `--reveal`.

pub mod agents;
pub mod cli;
pub mod commands;
pub mod context;
pub mod exit;
pub mod local_secrets;
pub mod mint;
pub mod outcome;
pub mod output;
mod remote;
pub mod vault;

pub use context::Context;
pub mod clusters;
pub mod envs;
pub mod fleet;
pub mod transport;
