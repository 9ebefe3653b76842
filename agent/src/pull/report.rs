//! The node report of a pulling node (`common::fleet::NodeReport` at
//! `nodes/<node-id>[.<bundle-id>]`, signed with the bundle's report key
//! when it has one): written when what the node applied, its error or its
//! identity state changed, or when the heartbeat is due; spread after a
//! publish or a boot as the manifest and the bundle ask; failed writes back
//! off. Names, versions and errors only, never a value or token.

use std::time::{Duration, Instant};

use common::fleet::{self, NodeReport};
use common::openbao::Kv;

use super::metrics::Metrics;
use super::node::Node;
use super::now_unix;
use super::poller::Puller;
use super::schedule::backoff;

impl<N: Node> Puller<N> {
    /// The heartbeat used: the configured one, or the manifest's or the
    /// bundle's when longer (a large fleet's publisher, or its enroll, asks
    /// for fewer heartbeat writes), at most `MAX_HEARTBEAT_SECS`.
    pub(super) fn heartbeat(&self) -> Duration {
        let asked = self.heartbeat_hint.max(self.bundle.heartbeat_secs);
        self.heartbeat
            .max(Duration::from_secs(asked.min(fleet::MAX_HEARTBEAT_SECS)))
    }

    /// Write this node's report when it changed or the heartbeat is due.
    pub(super) async fn report(&mut self) {
        let now = now_unix();
        let mut report = NodeReport {
            node_id: self.node_id.clone(),
            hostname: self.hostname.clone(),
            applied_version: self.applied.version,
            applied_epoch: self.applied.epoch,
            reported_at: now,
            last_poll: now,
            last_error: self.last_error.clone(),
            secrets: self.applied.secrets.keys().cloned().collect(),
            poll_interval_secs: self.poll.as_secs().max(1),
            heartbeat_secs: self.heartbeat().as_secs().max(1),
            identity: self.identity.report(),
            bundle_id: None,
            sig: None,
        };
        // A routine identity refresh is not news (the heartbeat carries its
        // expiry); being federated or not, and a new error, are.
        let identity_key = |r: &NodeReport| {
            r.identity
                .as_ref()
                .map(|i| (i.clouds.clone(), i.last_error_at))
        };
        // Signed, under `<node-id>.<bundle-id>`, when the bundle has a
        // report key (checked hex when it was loaded).
        if let (Some(id), Some(key)) = (&self.bundle.bundle_id, &self.bundle.report_key) {
            let key = key.expose_str().unwrap_or_default();
            match fleet::sign_report(report.clone(), id, key) {
                Some(signed) => report = signed,
                None => tracing::warn!("the bundle's report key is not hex; reporting unsigned"),
            }
        }
        let same = |a: &NodeReport, b: &NodeReport| {
            a.applied_version == b.applied_version
                && a.applied_epoch == b.applied_epoch
                && a.last_error == b.last_error
                && a.secrets == b.secrets
                && identity_key(a) == identity_key(b)
        };
        if let Some((last, at)) = &self.reported {
            if same(last, &report) && at.elapsed() < self.heartbeat() {
                return;
            }
        }
        if self.report_retry_at.is_some_and(|at| Instant::now() < at) {
            return;
        }
        let Some(token) = self.token.clone().filter(|t| !t.is_due(now)) else {
            return;
        };
        let path = fleet::report_path(&self.bundle.prefix, &self.bundle.cluster, &report.node_id);
        let kv = Kv::new(&self.client, token.expose_secret(), &self.bundle.mount);
        match kv.write(&path, &report, None).await {
            Ok(_) => {
                Metrics::inc(&self.metrics.report_writes);
                self.reported = Some((report, Instant::now()));
                self.report_failures = 0;
                self.report_retry_at = None;
            }
            Err(e) => {
                // Back off (2, 4, then 8 polls, jittered) instead of
                // retrying on every poll: a fleet whose writes failed
                // together would otherwise keep the store saturated.
                Metrics::inc(&self.metrics.report_errors);
                self.report_failures = self.report_failures.saturating_add(1);
                self.report_retry_at =
                    Some(Instant::now() + backoff(self.poll, self.report_failures));
                tracing::debug!(error = %e, failures = self.report_failures, "cannot write the node report");
            }
        }
    }
}
