//! The one client of the remote store, an OpenBao (or Vault) cluster, used
//! by the controller (`vault` commands, fleet admin and publish) and by the
//! agent (pull mode): [`client`] sends a call to the first node of the
//! cluster that serves it, [`kv`] is the KV v2 API on top (read, write,
//! list, metadata, check-and-set), [`auth`] the AppRole login, response
//! unwrapping and token lookup. Each side sets [`Options`]: the controller
//! waits out an election (rounds repeated for 40 s while nodes answer "try
//! another"), the agent starts at a random node, routes logins and writes
//! to the active node and never resends a write that timed out.
//!
//! It sends a token only in `X-Vault-Token`, follows no redirect (a
//! redirect would take the token to a URL the server chose), never logs a
//! token, a body or a value (URLs and statuses at debug level only), and
//! its errors name operations, URLs and statuses; server text in them is
//! escaped ([`errors_of`]). Every answer is read chunk by chunk up to a cap
//! into a buffer zeroed when dropped (a huge or endless answer is an error,
//! not an allocation).
//!
//! **"Try another node"** is one list, [`try_another`], decided from what
//! OpenBao answers; its doc says why each answer is in it or not.
//!
//! **Why hand-written.** `vaultrs` (the maintained Vault crate) talks to one
//! address: no list of URLs to fail over, no active-node routing, no cap on
//! what it reads (its `rustify` layer takes whole bodies), CA certificates
//! only as file paths (not the pinned-self-signed trust of
//! [`crate::store_tls`]), and its settings hold the token as a plain
//! `String` with a derived `Debug`. Those four are what this module does;
//! the rest (a handful of JSON calls) is too small to justify the crate.

pub mod auth;
pub mod client;
pub mod kv;

pub use auth::{Login, TokenInfo};
pub use client::{
    errors_of, health_state, read_capped, try_another, Answer, BuildError, Call, Client, Method,
    Options, Probe, Retry, Start, StatusCode, TlsRefusal, ToActive,
};
pub use kv::{Kv, KvMetadata, KvVersion};

/// A call that failed. No token, secret_id or value in any message.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No node served the call: each failed or answered "try another".
    #[error("no store node answered (tried {tried}): {details}")]
    Unreachable {
        tried: usize,
        /// One `URL: reason` per node tried.
        details: String,
        /// Some node answered "try another" (it is up but cannot serve
        /// now): worth a short retry. Never set when a write timed out.
        busy: bool,
        /// The first TLS failure seen (a refused certificate).
        tls: Option<TlsRefusal>,
    },
    #[error("{op}: permission denied by {url} (HTTP 403)")]
    Forbidden { op: String, url: String },
    #[error("{op}: HTTP {status} from {url}{}", if message.is_empty() { String::new() } else { format!(": {message}") })]
    Http {
        op: String,
        url: String,
        status: u16,
        /// The server's messages, escaped.
        message: String,
    },
    #[error("{op}: the answer from {url} is not the expected JSON")]
    Decode { op: String, url: String },
    #[error("{op}: the answer from {url} is larger than {limit} bytes")]
    TooLarge {
        op: String,
        url: String,
        limit: usize,
    },
    /// A check-and-set write found another version than `expected`.
    #[error("{path} changed in the store since version {expected}")]
    CasMismatch { path: String, expected: u64 },
}

impl Error {
    /// Whether no usable answer came back (no node served the call, or
    /// its answer was too large), as opposed to an answer refusing it.
    pub fn is_transport(&self) -> bool {
        matches!(self, Self::Unreachable { .. } | Self::TooLarge { .. })
    }
}
