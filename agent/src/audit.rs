//! The audit log: `<state-dir>/audit.log`, JSON lines (mode 0600), one per
//! state-changing or revealing request: time, route, secret names, paths,
//! env names, var names and the result. It never records a value: its
//! entries are built from names only, by construction of [`AuditEntry`].

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::Mutex;

use serde::Serialize;

/// One audit record: names only.
#[derive(Debug, Default, Serialize)]
pub(crate) struct AuditEntry {
    pub(crate) route: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) secrets: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) paths: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) envs: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) vars: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) argv0: Option<String>,
    pub(crate) dry_run: bool,
    pub(crate) result: String,
}

/// The open audit log.
#[derive(Debug)]
pub(crate) struct AuditLog {
    file: Mutex<File>,
}

impl AuditLog {
    /// Open (append, create 0600) the log at `path`.
    pub(crate) fn open(path: &Path) -> std::io::Result<Self> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)?;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        Ok(Self {
            file: Mutex::new(file),
        })
    }

    /// Append one entry; a failure is logged, never fatal to the request.
    pub(crate) fn record(&self, entry: &AuditEntry) {
        #[derive(Serialize)]
        struct Line<'a> {
            time: String,
            #[serde(flatten)]
            entry: &'a AuditEntry,
        }
        let mut line = match serde_json::to_vec(&Line {
            time: rfc3339_now(),
            entry,
        }) {
            Ok(l) => l,
            Err(_) => return,
        };
        line.push(b'\n');
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = file.write_all(&line) {
            tracing::error!(error = %e, "cannot append to the audit log");
        }
    }
}

/// The current UTC time as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub(crate) fn rfc3339_now() -> String {
    common::time::now_rfc3339(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_is_0600_json_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let log = AuditLog::open(&path).unwrap();
        log.record(&AuditEntry {
            route: "/v1/sync",
            secrets: vec!["aws".into()],
            result: "200".into(),
            ..Default::default()
        });
        let text = std::fs::read_to_string(&path).unwrap();
        let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(v["route"], "/v1/sync");
        assert_eq!(v["secrets"][0], "aws");
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}
