//! The JSON-lines protocol between the agent and an env host process
//! (`agent env-host --name E`): one request per line on the host's stdin, one
//! reply per line on its stdout, matched by `id`. Requests carry values (the
//! vars an env holds), so none of these types derives `Debug`; replies carry
//! only run output and errors that name commands and variables.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use common::wire::RunResponse;
use common::SecretValue;

/// A request to an env host.
#[derive(Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum HostRequest {
    /// Replace every var (sent after a (re)start).
    Replace {
        id: u64,
        vars: BTreeMap<String, SecretValue>,
    },
    /// Set these vars, keeping the others.
    Set {
        id: u64,
        vars: BTreeMap<String, SecretValue>,
    },
    /// Remove these vars.
    Unset { id: u64, names: Vec<String> },
    /// Replace the env's ambient vars: set by the agent itself (the workload
    /// identity wiring: file paths, role and client ids; no secret), below
    /// the env's own vars (a var a secret set wins), never saved.
    Ambient {
        id: u64,
        vars: BTreeMap<String, String>,
    },
    /// Run argv with the env's current environment.
    Run {
        id: u64,
        argv: Vec<String>,
        timeout_ms: u64,
        output_cap: usize,
    },
}

impl HostRequest {
    pub(crate) fn id(&self) -> u64 {
        match self {
            Self::Replace { id, .. }
            | Self::Set { id, .. }
            | Self::Unset { id, .. }
            | Self::Ambient { id, .. }
            | Self::Run { id, .. } => *id,
        }
    }
}

impl fmt::Debug for HostRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Replace { id, vars } | Self::Set { id, vars } => f
                .debug_struct("HostRequest::Set")
                .field("id", id)
                .field("vars", &vars.keys().collect::<Vec<_>>())
                .finish(),
            Self::Ambient { id, vars } => f
                .debug_struct("HostRequest::Ambient")
                .field("id", id)
                .field("vars", &vars.keys().collect::<Vec<_>>())
                .finish(),
            Self::Unset { id, names } => f
                .debug_struct("HostRequest::Unset")
                .field("id", id)
                .field("names", names)
                .finish(),
            Self::Run { id, argv, .. } => f
                .debug_struct("HostRequest::Run")
                .field("id", id)
                .field("argv0", &argv.first())
                .finish(),
        }
    }
}

/// A reply from an env host: `run` set for a run, `error` when the request failed.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HostReply {
    pub(crate) id: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) run: Option<RunResponse>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_and_debug_hides_values() {
        let req = HostRequest::Set {
            id: 7,
            vars: [("TOKEN".to_string(), SecretValue::from("hunter2"))].into(),
        };
        let line = serde_json::to_string(&req).unwrap();
        assert_eq!(line, r#"{"op":"set","id":7,"vars":{"TOKEN":"hunter2"}}"#);
        let back: HostRequest = serde_json::from_str(&line).unwrap();
        assert_eq!(back.id(), 7);
        assert!(!format!("{back:?}").contains("hunter2"));
        let run: HostRequest = serde_json::from_str(
            r#"{"op":"run","id":1,"argv":["env"],"timeout_ms":5,"output_cap":9}"#,
        )
        .unwrap();
        assert!(matches!(run, HostRequest::Run { output_cap: 9, .. }));
    }
}
