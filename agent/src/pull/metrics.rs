//! The agent's counters, served by `GET /metrics` in the Prometheus text
//! format: HTTP requests served, and in pull mode the applied manifest
//! version, polls, poll errors, logins, report writes and failures, store
//! requests, published secrets read and applied from the manifest, the
//! last apply's duration, and workload identity refreshes, token requests
//! and errors. Numbers only: never a name of a value, a
//! value, a token or a path.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// Counters shared by the router and the pull loop.
#[derive(Debug, Default)]
pub struct Metrics {
    pub(crate) http_requests: AtomicU64,
    pub(crate) pull_enabled: AtomicU64,
    pub(crate) applied_version: AtomicU64,
    pub(crate) polls: AtomicU64,
    pub(crate) poll_errors: AtomicU64,
    pub(crate) logins: AtomicU64,
    pub(crate) report_writes: AtomicU64,
    pub(crate) report_errors: AtomicU64,
    pub(crate) applies: AtomicU64,
    /// Published items read from `secrets/<name>`.
    pub(crate) secret_reads: AtomicU64,
    /// Published items applied from the manifest (no read).
    pub(crate) inline_items: AtomicU64,
    pub(crate) last_apply_micros: AtomicU64,
    pub(crate) last_poll_unix: AtomicU64,
    /// Store requests of the pull client (set from its own counter).
    pub(crate) store_requests: AtomicU64,
    /// Workload identity: refreshes done (every cloud's token written),
    /// token requests sent, refreshes failed.
    pub(crate) identity_refreshes: AtomicU64,
    pub(crate) identity_tokens: AtomicU64,
    pub(crate) identity_errors: AtomicU64,
}

impl Metrics {
    /// Add one to a counter.
    pub(crate) fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The manifest version applied (0: none yet).
    pub fn applied_version(&self) -> u64 {
        self.applied_version.load(Ordering::Relaxed)
    }

    /// Requests sent to the store, report writes and logins so far.
    pub fn store_counts(&self) -> (u64, u64, u64) {
        (
            self.store_requests.load(Ordering::Relaxed),
            self.report_writes.load(Ordering::Relaxed),
            self.logins.load(Ordering::Relaxed),
        )
    }

    /// Published secrets read from the store and applied from the manifest so far.
    pub fn item_counts(&self) -> (u64, u64) {
        (
            self.secret_reads.load(Ordering::Relaxed),
            self.inline_items.load(Ordering::Relaxed),
        )
    }

    /// Report writes that failed so far.
    pub fn report_errors(&self) -> u64 {
        self.report_errors.load(Ordering::Relaxed)
    }

    /// Polls that failed so far.
    pub fn poll_errors(&self) -> u64 {
        self.poll_errors.load(Ordering::Relaxed)
    }

    /// Identity refreshes done, token requests sent and refreshes failed so far.
    pub fn identity_counts(&self) -> (u64, u64, u64) {
        (
            self.identity_refreshes.load(Ordering::Relaxed),
            self.identity_tokens.load(Ordering::Relaxed),
            self.identity_errors.load(Ordering::Relaxed),
        )
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed).to_string();
        let rows: [(&str, &str, &str, String); 17] = [
            (
                "http_requests_total",
                "counter",
                "HTTP requests served by the agent.",
                get(&self.http_requests),
            ),
            (
                "pull_enabled",
                "gauge",
                "1 when the agent pulls from the store (fleet mode).",
                get(&self.pull_enabled),
            ),
            (
                "pull_applied_version",
                "gauge",
                "The cluster manifest version fully applied on this node.",
                get(&self.applied_version),
            ),
            (
                "pull_polls_total",
                "counter",
                "Manifest polls.",
                get(&self.polls),
            ),
            (
                "pull_poll_errors_total",
                "counter",
                "Polls that failed (store unreachable, login refused, apply failed).",
                get(&self.poll_errors),
            ),
            (
                "pull_logins_total",
                "counter",
                "AppRole logins.",
                get(&self.logins),
            ),
            (
                "pull_report_writes_total",
                "counter",
                "Node reports written to the store.",
                get(&self.report_writes),
            ),
            (
                "pull_report_errors_total",
                "counter",
                "Node report writes that failed (retried after 2, 4, then 8 polls).",
                get(&self.report_errors),
            ),
            (
                "pull_store_requests_total",
                "counter",
                "HTTP requests sent to the store.",
                get(&self.store_requests),
            ),
            (
                "pull_applies_total",
                "counter",
                "Manifest versions applied.",
                get(&self.applies),
            ),
            (
                "pull_secret_reads_total",
                "counter",
                "Published secrets read from the store (changed, not carried by the manifest).",
                get(&self.secret_reads),
            ),
            (
                "pull_inline_items_total",
                "counter",
                "Published secrets applied from the manifest, with no read of their own.",
                get(&self.inline_items),
            ),
            (
                "pull_last_apply_seconds",
                "gauge",
                "Duration of the last apply (fetch and install).",
                format!(
                    "{:.6}",
                    self.last_apply_micros.load(Ordering::Relaxed) as f64 / 1e6
                ),
            ),
            (
                "identity_refreshes_total",
                "counter",
                "Workload identity refreshes (every cloud's token fetched and written).",
                get(&self.identity_refreshes),
            ),
            (
                "identity_token_requests_total",
                "counter",
                "Identity token requests sent to the store.",
                get(&self.identity_tokens),
            ),
            (
                "identity_errors_total",
                "counter",
                "Workload identity refreshes that failed (the token files kept their last tokens).",
                get(&self.identity_errors),
            ),
            (
                "pull_last_poll_timestamp_seconds",
                "gauge",
                "When the last poll ended (seconds since the epoch).",
                get(&self.last_poll_unix),
            ),
        ];
        let mut out = String::new();
        for (name, kind, help, value) in rows {
            let _ = writeln!(out, "# HELP rh_agent_{name} {help}");
            let _ = writeln!(out, "# TYPE rh_agent_{name} {kind}");
            let _ = writeln!(out, "rh_agent_{name} {value}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        Metrics::inc(&m.polls);
        m.applied_version.store(7, Ordering::Relaxed);
        m.last_apply_micros.store(1500, Ordering::Relaxed);
        let text = m.render();
        assert!(text
            .contains("# TYPE rh_agent_pull_polls_total counter\nrh_agent_pull_polls_total 1\n"));
        assert!(text.contains("rh_agent_pull_applied_version 7\n"));
        assert!(text.contains("rh_agent_pull_last_apply_seconds 0.001500\n"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (name, value) = line.split_once(' ').unwrap();
            assert!(name.starts_with("rh_agent_"), "{line}");
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }
}
