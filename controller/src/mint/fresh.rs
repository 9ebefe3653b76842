//! `sync --keep-fresh`: after the first sync, keep every session secret of
//! the cluster fresh. Each is minted again once half of its lifetime is
//! gone (so a node never serves one within half a lifetime of its expiry
//! while this runs) and handed to the cluster's deliverer (a push to every
//! node, or a publish to the store for a pull cluster: the same roads the
//! first sync took). One line on stderr per refresh and per failure; a
//! failed mint or delivery is retried after a tenth of the session's
//! lifetime (at least 5 s, at most 60 s), before it expires. Stops on
//! SIGINT or SIGTERM. Never prints a credential.

use std::future::Future;
use std::time::Duration;

use common::session::{now_secs, Minted};
use common::time::rfc3339;
use common::wire::SyncItem;

use super::{env_owners, item, mint, SessionSecret, Target};
use crate::Context;

/// One session's schedule.
struct Due {
    at: i64,
    lifetime: i64,
}

/// When a session minted as `m` is minted again: half its lifetime on.
pub fn refresh_at(m: &Minted) -> i64 {
    m.minted_at + m.lifetime_secs() / 2
}

fn retry_in(lifetime: i64) -> i64 {
    (lifetime / 10).clamp(5, 60)
}

/// Delivery of the refreshed items: `Ok(summary)` (e.g. `3/3 nodes`) or
/// the reason it failed everywhere.
pub trait Deliver {
    fn deliver(&self, items: Vec<SyncItem>) -> impl Future<Output = Result<String, String>> + Send;
}

/// Run until interrupted. `first`: what the first sync minted, by name.
pub async fn run(
    ctx: &Context,
    cluster: &str,
    sessions: Vec<SessionSecret>,
    first: Vec<(String, Minted)>,
    target: Target<'_>,
    deliver: &impl Deliver,
) -> anyhow::Result<()> {
    let owners = env_owners(&sessions);
    let mut due: Vec<Due> = sessions
        .iter()
        .map(|s| match first.iter().find(|(n, _)| *n == s.name) {
            Some((_, m)) => Due {
                at: refresh_at(m),
                lifetime: m.lifetime_secs(),
            },
            // Its first mint failed: retry soon.
            None => Due {
                at: now_secs() + 5,
                lifetime: 60,
            },
        })
        .collect();
    if sessions.is_empty() {
        eprintln!("keep-fresh: cluster {cluster} has no session secret to keep fresh");
        return Ok(());
    }
    eprintln!(
        "keep-fresh: keeping {} session secret(s) of cluster {cluster} fresh (Ctrl-C stops)",
        sessions.len()
    );
    let stop = stop_signal();
    tokio::pin!(stop);
    loop {
        let next = due.iter().map(|d| d.at).min().unwrap_or(i64::MAX);
        let wait = u64::try_from(next - now_secs()).unwrap_or(0);
        tokio::select! {
            () = &mut stop => {
                eprintln!("keep-fresh: stopped");
                return Ok(());
            }
            () = tokio::time::sleep(Duration::from_secs(wait)) => {}
        }
        let now = now_secs();
        let ready: Vec<usize> = (0..sessions.len()).filter(|&i| due[i].at <= now).collect();
        let minted =
            futures_util::future::join_all(ready.iter().map(|&i| mint(ctx, &sessions[i]))).await;
        let mut items = vec![];
        let mut sent = vec![];
        for (&i, m) in ready.iter().zip(minted) {
            let s = &sessions[i];
            match m {
                Ok(m) => {
                    sent.push((i, refresh_at(&m), m.lifetime_secs(), m.expires_at));
                    items.push(item(s, ctx, m, target, owners[i]));
                }
                Err(e) => {
                    due[i].at = now + retry_in(due[i].lifetime);
                    eprintln!(
                        "{} keep-fresh: refresh of session secret {} failed: {e:#}; retrying in {}s",
                        rfc3339(now, None),
                        s.name,
                        retry_in(due[i].lifetime)
                    );
                }
            }
        }
        if items.is_empty() {
            continue;
        }
        match deliver.deliver(items).await {
            Ok(summary) => {
                for (i, at, lifetime, expires) in sent {
                    due[i] = Due { at, lifetime };
                    eprintln!(
                        "{} keep-fresh: refreshed session secret {} on cluster {cluster} ({summary}); expires at {}",
                        rfc3339(now_secs(), None),
                        sessions[i].name,
                        rfc3339(expires, None)
                    );
                }
            }
            Err(reason) => {
                for (i, _, _, _) in sent {
                    due[i].at = now + retry_in(due[i].lifetime);
                    eprintln!(
                        "{} keep-fresh: refresh of session secret {} on cluster {cluster} failed: {reason}",
                        rfc3339(now_secs(), None),
                        sessions[i].name
                    );
                }
            }
        }
    }
}

async fn stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::session::{aws_credential, SessionKind};

    #[test]
    fn refreshed_at_half_life() {
        let m = Minted {
            kind: SessionKind::Aws,
            credential: aws_credential("a", "b", "c"),
            expires_at: 1_000 + 3_600,
            minted_at: 1_000,
            source: "x".into(),
            region: None,
            project_id: None,
            account: None,
            scopes: vec![],
        };
        assert_eq!(refresh_at(&m), 2_800);
        assert_eq!(retry_in(3_600), 60);
        assert_eq!(retry_in(20), 5);
    }
}
