//! What can go wrong installing or revoking a secret on this node: one
//! enum, [`InstallError`], with a stable code per case ([`InstallError::code`],
//! the word in the audit log and in an answer) and the kind of failure
//! ([`Kind`]); whoever answers a caller maps the kind (the handlers: to an
//! HTTP status, `crate::error`), the pull loop reports the message. Messages
//! name secrets, paths, envs and vars, never a value. An internal failure's
//! detail is logged once, when the error is made, and its message is a
//! generic sentence.

use std::fmt::Display;

use thiserror::Error;

use common::fsutil::PathError;
use common::names::NameError;
use common::placement::PlaceError;
use common::policy::{PolicyError, Refused};
use common::providers::ProviderError;
use common::session::SessionError;

use crate::envs::EnvError;

/// The message of an internal failure (its detail is in the agent's log).
pub(crate) const INTERNAL: &str = "internal error (details are in the agent's log)";

/// The kind of a failure, for whoever answers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// What was asked is wrong: a name, a path, a value, a placement.
    Invalid,
    /// The placement policy refuses it.
    Refused,
    /// What it names is not here: an env, an installed secret.
    NotFound,
    /// It would pass a limit (more envs than `max_envs`).
    Full,
    /// A file it must read or replace cannot be: malformed, not a regular
    /// file, too large.
    Unusable,
    /// Something it needs is busy or down for now: a locked directory, an
    /// env process restarting.
    Unavailable,
    /// An env process died while it ran.
    Crashed,
    /// The deadline passed before it was started; nothing of it was written.
    Late,
    /// The agent itself failed: its state could not be saved, I/O.
    Internal,
}

/// Why an install, a revoke or one of their items failed.
#[derive(Debug, Error)]
pub(crate) enum InstallError {
    #[error(transparent)]
    Name(NameError),
    #[error(transparent)]
    Place(PlaceError),
    #[error(transparent)]
    Provider(ProviderError),
    #[error(transparent)]
    Path(PathError),
    #[error(transparent)]
    Policy(PolicyError),
    #[error(transparent)]
    Env(EnvError),
    /// A placement that cannot be taken as sent.
    #[error("secret {secret}: {reason}")]
    Placement {
        secret: String,
        reason: &'static str,
    },
    /// A session item that cannot be taken (`common::session::check_minted`).
    #[error(transparent)]
    Session(SessionError),
    /// This node's metadata server already serves another gcp session.
    #[error("this node's metadata server already serves gcp session secret {0}; revoke it first")]
    GcpSessionHeld(String),
    #[error("secret {0} is not installed on this node")]
    NotInstalled(String),
    #[error(
        "secret {0} was not applied: the request's deadline passed before it was reached; \
         nothing of it was written"
    )]
    NotApplied(String),
    /// A state file could not be saved; `unchanged` says what that left.
    #[error("the agent could not save its state ({detail}){unchanged}")]
    NotSaved { detail: String, unchanged: String },
    /// An item's vars could not be set: the kind and code of why, and the
    /// message saying what was written anyway.
    #[error("{message}")]
    VarsNotSet {
        kind: Kind,
        code: &'static str,
        message: String,
    },
    /// The agent failed; the detail (names and paths only) was logged.
    #[error("{0}")]
    Internal(String),
}

/// `From` for the errors an install passes on, logging an internal one's
/// detail once, as it is made.
macro_rules! passed_on {
    ($($source:ty => $variant:ident),* $(,)?) => {
        $(impl From<$source> for InstallError {
            fn from(e: $source) -> Self {
                Self::$variant(e).logged()
            }
        })*
    };
}

passed_on!(
    NameError => Name,
    PlaceError => Place,
    ProviderError => Provider,
    PathError => Path,
    PolicyError => Policy,
    EnvError => Env,
    SessionError => Session,
);

impl From<Refused> for InstallError {
    fn from(e: Refused) -> Self {
        match e {
            Refused::Policy(e) => e.into(),
            Refused::Path(e) => e.into(),
        }
    }
}

impl InstallError {
    /// An internal failure: `detail` (names and paths only) is logged, a
    /// generic message is answered.
    pub(crate) fn internal(detail: impl Display) -> Self {
        Self::Internal(detail.to_string()).logged()
    }

    /// A state file that could not be saved (`detail` names the file and the
    /// I/O error, never content): logged; `unchanged` says what that left.
    pub(crate) fn not_saved(detail: &dyn Display, unchanged: &str) -> Self {
        Self::not_saved_each(detail, unchanged)()
    }

    /// [`InstallError::not_saved`] for every item a failed save concerns:
    /// logged once, one error per call of the result.
    pub(crate) fn not_saved_each(detail: &dyn Display, unchanged: &str) -> impl Fn() -> Self {
        tracing::error!(error = %detail, "cannot save agent state");
        let (detail, unchanged) = (detail.to_string(), unchanged.to_owned());
        move || Self::NotSaved {
            detail: detail.clone(),
            unchanged: unchanged.clone(),
        }
    }

    /// The answer for an item whose vars could not be set (because of
    /// `self`) while its `files` files, if any, were written.
    pub(crate) fn vars_not_set(&self, files: usize) -> Self {
        let written = if files == 0 {
            ", nothing changed".to_owned()
        } else {
            format!(" (its {files} file(s) were written)")
        };
        Self::VarsNotSet {
            kind: self.kind(),
            code: self.code(),
            message: format!("its vars were not set{written}: {}", self.message()),
        }
    }

    fn logged(self) -> Self {
        if self.hides_detail() {
            tracing::error!(error = %self, "internal error");
        }
        self
    }

    /// Whether it is an internal failure whose text is a detail for the
    /// log, not for the caller.
    fn hides_detail(&self) -> bool {
        self.code() == "internal" && !matches!(self, Self::VarsNotSet { .. })
    }

    /// What the caller is told: the error's text, or for an internal
    /// failure a sentence pointing to the agent's log.
    pub(crate) fn message(&self) -> String {
        if self.hides_detail() {
            INTERNAL.to_owned()
        } else {
            self.to_string()
        }
    }

    /// The kind of failure.
    pub(crate) fn kind(&self) -> Kind {
        self.classify().0
    }

    /// The stable code of the failure (`path_reserved`, `unknown_env`...).
    pub(crate) fn code(&self) -> &'static str {
        self.classify().1
    }

    fn classify(&self) -> (Kind, &'static str) {
        match self {
            Self::Name(e) => name(e),
            Self::Place(e) => place(e),
            Self::Provider(e) => provider(e),
            Self::Path(e) => path(e),
            Self::Policy(e) => (Kind::Refused, e.code()),
            Self::Env(e) => env(e),
            Self::Placement { .. } => (Kind::Invalid, "invalid_placement"),
            Self::Session(SessionError::Expired { .. }) => (Kind::Unusable, "session_expired"),
            Self::Session(_) => (Kind::Invalid, "invalid_session"),
            Self::GcpSessionHeld(_) => (Kind::Full, "gcp_session_held"),
            Self::NotInstalled(_) => (Kind::NotFound, "unknown_secret"),
            Self::NotApplied(_) => (Kind::Late, "deadline_exceeded"),
            Self::NotSaved { .. } => (Kind::Internal, "state_not_saved"),
            Self::VarsNotSet { kind, code, .. } => (*kind, code),
            Self::Internal(_) => (Kind::Internal, "internal"),
        }
    }
}

fn name(e: &NameError) -> (Kind, &'static str) {
    match e {
        NameError::TooLong { .. } => (Kind::Invalid, "name_too_long"),
        _ => (Kind::Invalid, "invalid_name"),
    }
}

fn place(e: &PlaceError) -> (Kind, &'static str) {
    match e {
        PlaceError::Provider(e) => provider(e),
        PlaceError::Name { source, .. } => name(source),
        PlaceError::NoVars { .. } => (Kind::Invalid, "no_env_vars"),
        PlaceError::NulValue { .. } => (Kind::Invalid, "invalid_value"),
        PlaceError::Invalid { .. } => (Kind::Invalid, "invalid_placement"),
    }
}

fn provider(e: &ProviderError) -> (Kind, &'static str) {
    match e {
        ProviderError::Path(e) => path(e),
        ProviderError::Unknown { .. } => (Kind::Invalid, "unknown_provider"),
        ProviderError::Malformed { .. } => (Kind::Unusable, "malformed_file"),
        ProviderError::MissingKey { .. } | ProviderError::InvalidValue { .. } => {
            (Kind::Invalid, "invalid_value")
        }
        ProviderError::NoPath { .. } => (Kind::Invalid, "no_path"),
    }
}

fn path(e: &PathError) -> (Kind, &'static str) {
    match e {
        PathError::ParentComponent { .. } => (Kind::Invalid, "path_traversal"),
        PathError::OutsideHome { .. } => (Kind::Invalid, "path_outside_home"),
        PathError::SymlinkEscape { .. } => (Kind::Invalid, "path_symlink_escape"),
        PathError::SymlinkLoop { .. } => (Kind::Invalid, "path_symlink_loop"),
        PathError::TooLong { .. } => (Kind::Invalid, "path_too_long"),
        PathError::Empty | PathError::ControlChar { .. } => (Kind::Invalid, "invalid_path"),
        PathError::NotRegular { .. } | PathError::NotDirectory { .. } => {
            (Kind::Unusable, "not_regular_file")
        }
        PathError::TooLarge { .. } => (Kind::Unusable, "file_too_large"),
        PathError::Busy { .. } => (Kind::Unavailable, "path_busy"),
        PathError::Io { .. } => (Kind::Internal, "internal"),
    }
}

fn env(e: &EnvError) -> (Kind, &'static str) {
    match e {
        EnvError::NotFound(_) => (Kind::NotFound, "unknown_env"),
        EnvError::Unavailable(_) => (Kind::Unavailable, "env_unavailable"),
        EnvError::Crashed(_) => (Kind::Crashed, "env_crashed"),
        EnvError::TooMany { .. } => (Kind::Full, "too_many_envs"),
        EnvError::Spawn { .. } | EnvError::State { .. } => (Kind::Internal, "internal"),
    }
}
