//! HTTP handlers, one module per resource; free functions named for their
//! verb. They check input, call [`crate::install`] or [`crate::envs`], write
//! one audit entry (names only) and answer wire types. No handler logs or
//! echoes a value.

pub(crate) mod envs;
pub(crate) mod health;
pub(crate) mod secrets;
pub(crate) mod status;
pub(crate) mod sync;

use common::wire::SecretResult;

use crate::error::ApiError;

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
