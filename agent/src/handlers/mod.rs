//! HTTP handlers, one module per resource; free functions named for their
//! verb. They take the request apart, call the install service
//! ([`crate::install`], which checks, applies and records its audit entry)
//! or [`crate::envs`], and answer wire types, mapping the service's errors
//! to HTTP ([`crate::error`]). No handler logs or echoes a value.

pub(crate) mod credentials;
pub(crate) mod envs;
pub(crate) mod health;
pub(crate) mod secrets;
pub(crate) mod status;
pub(crate) mod sync;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::time::{Duration, Instant};

use crate::state::AppState;

/// Run a mutating request's work in a task of its own. The request timeout
/// may drop the request, but not this work: it runs to its end, so locks
/// are held until the writing stops and whatever was applied is recorded
/// (installed state, envs, audit log). The work itself stops starting new
/// items at [`deadline`].
pub(crate) async fn detached<T: Send + 'static>(
    work: impl Future<Output = T> + Send + 'static,
) -> T {
    match tokio::spawn(work).await {
        Ok(out) => out,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// When a mutating request stops starting new items: a quarter of the
/// request timeout (at most 5 s) before it, so the answer (with what was and
/// was not applied) is sent before the timeout's 504.
pub(crate) fn deadline(state: &AppState) -> Instant {
    let timeout = state.config().request_timeout;
    let margin = (timeout / 4).min(Duration::from_secs(5));
    Instant::now() + timeout.saturating_sub(margin)
}
