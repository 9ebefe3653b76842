//! The process exit codes fixed by the interface and the error type that
//! selects "bad usage". Kept apart from `commands` so lower layers (the
//! store client, the secret gathering) can use them without importing the
//! commands. Holds no text but the usage message it is given.

/// Success.
pub const OK: u8 = 0;
/// Failure.
pub const FAILURE: u8 = 1;
/// Bad usage (arguments, names, flags).
pub const USAGE: u8 = 2;
/// Some nodes failed and others succeeded.
pub const PARTIAL: u8 = 3;

/// A usage error: exit code 2 rather than 1.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// The exit code for an error that ended a command: [`USAGE`] when its
/// chain holds a [`UsageError`], else [`FAILURE`].
pub fn code_of(err: &anyhow::Error) -> u8 {
    if err.downcast_ref::<UsageError>().is_some() {
        USAGE
    } else {
        FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context as _;

    #[test]
    fn a_usage_error_anywhere_in_the_chain_exits_2() {
        let usage: anyhow::Result<()> = Err(UsageError("bad flag".into()).into());
        assert_eq!(code_of(&usage.context("parse").unwrap_err()), USAGE);
        assert_eq!(code_of(&anyhow::anyhow!("boom")), FAILURE);
    }
}
