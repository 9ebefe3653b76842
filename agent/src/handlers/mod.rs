//! HTTP handlers, one module per resource; free functions named for their
//! verb. They check input, call [`crate::install`] or [`crate::envs`], write
//! one audit entry (names only) and answer wire types. No handler logs or
//! echoes a value.

pub(crate) mod credentials;
pub(crate) mod envs;
pub(crate) mod health;
pub(crate) mod secrets;
pub(crate) mod status;
pub(crate) mod sync;

use std::future::Future;
use std::time::{Duration, Instant};

use common::wire::SecretResult;

use crate::error::ApiError;
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

/// The audit word for a request's outcome.
pub(crate) fn outcome<T>(result: &Result<T, ApiError>, ok: impl FnOnce(&T) -> String) -> String {
    match result {
        Ok(value) => ok(value),
        Err(e) => format!("error:{}", e.code),
    }
}

/// `written,unchanged,...` for a list of results.
pub(crate) fn statuses(results: &[SecretResult]) -> String {
    results
        .iter()
        .map(|r| format!("{}={}", r.name, r.status.as_str()))
        .collect::<Vec<_>>()
        .join(",")
}
