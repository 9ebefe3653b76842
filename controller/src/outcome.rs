//! How the result of putting a secret somewhere is shown: the one place that
//! words a status (`written`, `would write`, `blocked (another file
//! conflicts)`, `conflict (k1, k2)`, `failed: reason`) and says where a
//! result landed, for `sync`, `send`, `env sync`, `revoke`, `secret write`
//! and `login --download`. How statuses rank is `common`'s
//! (`Status::rank`, `FileStatus::rank`). Shows names, paths, keys and
//! statuses, never a value.

use common::apply::FileStatus;
use common::wire::{FileOutcome, SecretResult, Status};

/// The word for a file's status, with its conflicting keys.
pub fn file_status_cell(status: FileStatus, conflict_keys: &[String]) -> String {
    status_text(Status::from(status), conflict_keys)
}

/// The word for a status; a conflict lists its keys when there are any.
fn status_text(status: Status, conflict_keys: &[String]) -> String {
    match status {
        Status::Conflict if !conflict_keys.is_empty() => {
            format!("conflict ({})", conflict_keys.join(", "))
        }
        Status::Blocked => "blocked (another file conflicts)".into(),
        s => s.as_str().into(),
    }
}

/// The status cell of one result: `written`, `conflict (k1, k2)`, `failed: reason`.
pub fn status_cell(r: &SecretResult) -> String {
    match r.status {
        Status::Failed => format!(
            "failed: {}",
            r.message.as_deref().unwrap_or("no reason given")
        ),
        s => {
            let keys: Vec<String> = r
                .files
                .iter()
                .flat_map(|f| f.conflict_keys.iter().cloned())
                .collect();
            status_text(s, &keys)
        }
    }
}

/// Where a result landed: file paths (each with its own status when it
/// differs from the secret's, e.g. `blocked`) and `env: VARS`.
pub fn where_cell(r: &SecretResult) -> String {
    let mut parts: Vec<String> = r.files.iter().map(|f| file_where(r.status, f)).collect();
    if !r.vars.is_empty() {
        parts.push(format!(
            "{}: {}",
            r.env.as_deref().unwrap_or("env"),
            r.vars.join(" ")
        ));
    }
    parts.join(", ")
}

fn file_where(secret: Status, f: &FileOutcome) -> String {
    match f.status {
        FileStatus::Blocked if secret != Status::Blocked => format!("{} (blocked)", f.path),
        _ => f.path.clone(),
    }
}

/// The outcome rows of a store push or pull (`vault push|pull`,
/// `login --download`) as a table.
pub(crate) fn outcome_table(outcomes: &[crate::vault::Outcome]) -> crate::output::Table {
    let mut table = crate::output::Table::new(&["name", "status", "version", "detail"]);
    for o in outcomes {
        table.row(vec![
            o.name.clone(),
            o.status.as_str().into(),
            o.version
                .map(|v| v.to_string())
                .unwrap_or_else(|| "-".into()),
            o.detail.clone().unwrap_or_default(),
        ]);
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, status: FileStatus, keys: &[&str]) -> FileOutcome {
        FileOutcome {
            path: path.into(),
            status,
            conflict_keys: keys.iter().map(|k| k.to_string()).collect(),
        }
    }

    #[test]
    fn blocked_is_told_apart_from_would_write() {
        let r = SecretResult {
            name: "ssh-k".into(),
            status: Status::Conflict,
            files: vec![
                file("~/.ssh/k", FileStatus::Blocked, &[]),
                file("~/.ssh/k.pub", FileStatus::Conflict, &["public_key"]),
            ],
            env: None,
            vars: vec![],
            message: None,
        };
        assert_eq!(status_cell(&r), "conflict (public_key)");
        assert_eq!(where_cell(&r), "~/.ssh/k (blocked), ~/.ssh/k.pub");
        assert_eq!(
            file_status_cell(FileStatus::Blocked, &[]),
            "blocked (another file conflicts)"
        );
        assert_eq!(file_status_cell(FileStatus::WouldWrite, &[]), "would write");
        let dry = SecretResult {
            status: Status::WouldWrite,
            files: vec![file("~/a", FileStatus::WouldWrite, &[])],
            env: Some("e".into()),
            vars: vec!["A".into()],
            ..r
        };
        assert_eq!(status_cell(&dry), "would write");
        assert_eq!(where_cell(&dry), "~/a, e: A");
    }
}
