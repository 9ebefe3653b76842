//! How a pull cluster's node reports are shown, for `sync --wait` and
//! `status`: one row per report, its state against the published
//! `(epoch, version)` (converged, behind, silent, revoked, forged or
//! foreign, unreadable), as a table or JSON, and the warnings about rows
//! that cannot be taken at their word. Text a node or the store chose
//! (report ids, host names, errors, secret names) is escaped before it
//! reaches a terminal. Never shows a value.

use serde::Serialize;

use super::nodes::{ReportRow, Trust};
use super::now_secs;
use crate::output::{escape_text, Table, FOREIGN_TEXT_MAX};

/// One row of `sync --wait` and `status`.
#[derive(Debug, Serialize)]
pub(crate) struct NodeRow {
    #[serde(flatten)]
    pub(crate) row: ReportRow,
    pub(crate) live: bool,
    pub(crate) converged: bool,
    pub(crate) state: &'static str,
}

impl NodeRow {
    /// The node id as shown (its report id without the bundle id the
    /// bundle column names).
    fn node(&self) -> &str {
        let id = &self.row.id;
        match (&self.row.report.bundle_id, self.row.trust) {
            (Some(b), Trust::Verified | Trust::Unverifiable) => id
                .strip_suffix(b.as_str())
                .and_then(|i| i.strip_suffix('.'))
                .unwrap_or(id),
            _ => id,
        }
    }
}

/// Rows for `reports` against the published `(epoch, version)`.
pub(crate) fn rows(reports: Vec<ReportRow>, published: (u64, u64)) -> Vec<NodeRow> {
    let now = now_secs();
    reports
        .into_iter()
        .map(|row| {
            let live = row.report.is_live(now);
            let state = match row.trust {
                Trust::Unreadable => "unreadable",
                Trust::Forged => "forged or foreign",
                _ if row.revoked => "revoked",
                _ if !live => "silent",
                _ if row.ahead_of(published) => "refused: older than applied",
                _ if row.converged(published) => "converged",
                _ => "behind",
            };
            NodeRow {
                live,
                converged: row.converged(published),
                state,
                row,
            }
        })
        .collect()
}

/// Text a node or the store chose, safe for a terminal.
pub(crate) fn foreign(text: &str) -> String {
    escape_text(text, FOREIGN_TEXT_MAX)
}

pub(crate) fn node_table(rows: &[NodeRow]) -> Table {
    let now = now_secs();
    let mut t = Table::new(&[
        "node",
        "bundle",
        "hostname",
        "applied",
        "state",
        "last poll",
        "last error",
        "secrets",
        "identity",
    ]);
    for r in rows {
        let report = &r.row.report;
        let suspect = r.row.suspect();
        let shown = |text: String| if suspect { "-".to_owned() } else { text };
        // Reports are written by nodes: escaped before they reach a terminal.
        t.row(vec![
            foreign(r.node()),
            match (&r.row.bundle, r.row.trust) {
                (Some(b), Trust::Unverifiable) => format!("{} (unverified)", foreign(b)),
                (Some(b), _) => foreign(b),
                (None, Trust::Unsigned) => "unsigned".into(),
                (None, _) => "-".into(),
            },
            shown(foreign(&report.hostname)),
            shown(report.applied_version.to_string()),
            r.state.into(),
            shown(format!("{}s ago", now.saturating_sub(report.last_poll))),
            shown(
                report
                    .last_error
                    .as_deref()
                    .map_or_else(|| "-".into(), foreign),
            ),
            shown(foreign(&report.secrets.join(","))),
            shown(super::federate::identity_cell(
                report.identity.as_ref(),
                now,
            )),
        ]);
    }
    t
}

/// What stderr says about rows that cannot be taken at their word.
pub(crate) fn warn_rows(cluster: &str, rows: &[NodeRow]) {
    let suspect: Vec<String> = rows
        .iter()
        .filter(|r| r.row.suspect())
        .map(|r| foreign(&r.row.id))
        .collect();
    if !suspect.is_empty() {
        eprintln!(
            "warning: {} report(s) of cluster {cluster} are forged, foreign or unreadable (a node \
             of the cluster, or anyone who can write its store prefix, wrote them; they count as \
             not converged): {}",
            suspect.len(),
            suspect.join(", ")
        );
    }
    if rows.iter().any(|r| r.row.trust == Trust::Unverifiable) {
        eprintln!(
            "note: some reports of cluster {cluster} are signed, but this machine has no report \
             key for it (~/.rh/clusters/{cluster}.nodes.json, kept where its bundles were \
             enrolled): they are shown unverified"
        );
    }
}
