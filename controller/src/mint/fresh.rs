//! `sync --keep-fresh`: after the first sync, keep every session secret of
//! the cluster (and every kubeconfig whose users' tokens came from an
//! `exec` plugin, `super::kube`) fresh. Each is minted again once half of its lifetime is
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
use common::Secret;

use super::{env_owners, item, mint, SessionSecret, Target};
use crate::Context;

/// One session's schedule.
struct Due {
    at: i64,
    lifetime: i64,
}

fn retry_in(lifetime: i64) -> i64 {
    (lifetime / 10).clamp(5, 60)
}

/// Delivery of the refreshed items: `Ok(summary)` (e.g. `3/3 nodes`) or
/// the reason it failed everywhere.
pub trait Deliver {
    /// The item of a refreshed kubeconfig, placed by the sync rule in
    /// `env`, in the form this deliverer takes (`crate::plan::item`).
    fn place(&self, secret: &Secret, env: &str) -> anyhow::Result<Option<SyncItem>>;

    fn deliver(&self, items: Vec<SyncItem>) -> impl Future<Output = Result<String, String>> + Send;
}

/// What is kept fresh: a session secret (index into the sessions), or a
/// kubeconfig whose `exec` users are resolved again.
enum What {
    Session(usize),
    Kube(Secret),
}

/// Run until interrupted. `first`: what the first sync minted, by name;
/// `kube`: kubeconfig secrets with exec users as saved (unresolved), with
/// the `(minted_at, expires_at)` of their first resolution.
#[allow(clippy::too_many_arguments)]
pub async fn run<D: Deliver + Sync>(
    ctx: &Context,
    cluster: &str,
    sessions: Vec<SessionSecret>,
    first: Vec<(String, Minted)>,
    kube: Vec<(Secret, i64, i64)>,
    target: Target<'_>,
    deliver: &D,
) -> anyhow::Result<()> {
    let owners = env_owners(&sessions);
    let half = |minted_at: i64, expires_at: i64| Due {
        at: minted_at + (expires_at - minted_at).max(0) / 2,
        lifetime: (expires_at - minted_at).max(0),
    };
    let mut entries: Vec<(String, What, Due)> = sessions
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let due = match first.iter().find(|(n, _)| *n == s.name) {
                Some((_, m)) => half(m.minted_at, m.expires_at),
                // Its first mint failed: retry soon.
                None => Due {
                    at: now_secs() + 5,
                    lifetime: 60,
                },
            };
            (s.name.clone(), What::Session(i), due)
        })
        .collect();
    for (secret, minted_at, expires_at) in kube {
        entries.push((
            secret.name.clone(),
            What::Kube(secret),
            half(minted_at, expires_at),
        ));
    }
    if entries.is_empty() {
        eprintln!("keep-fresh: cluster {cluster} has no session secret to keep fresh");
        return Ok(());
    }
    eprintln!(
        "keep-fresh: keeping {} session secret(s) of cluster {cluster} fresh (Ctrl-C stops)",
        entries.len()
    );
    let stop = stop_signal();
    tokio::pin!(stop);
    loop {
        let next = entries.iter().map(|e| e.2.at).min().unwrap_or(i64::MAX);
        let wait = u64::try_from(next - now_secs()).unwrap_or(0);
        tokio::select! {
            () = &mut stop => {
                eprintln!("keep-fresh: stopped");
                return Ok(());
            }
            () = tokio::time::sleep(Duration::from_secs(wait)) => {}
        }
        let now = now_secs();
        let ready: Vec<usize> = (0..entries.len())
            .filter(|&i| entries[i].2.at <= now)
            .collect();
        let (entries_ref, sessions_ref, owners_ref) = (&entries, &sessions, &owners);
        let fresh = futures_util::future::join_all(ready.iter().map(|&i| async move {
            let (entries, sessions, owners) = (entries_ref, sessions_ref, owners_ref);
            match &entries[i].1 {
                What::Session(k) => {
                    let m = mint(ctx, &sessions[*k]).await?;
                    let due = half(m.minted_at, m.expires_at);
                    let expires = m.expires_at;
                    Ok((
                        item(&sessions[*k], ctx, m, target, owners[*k]),
                        due,
                        expires,
                    ))
                }
                What::Kube(secret) => {
                    let mut resolved = secret.clone();
                    let (minted_at, expires_at) = super::kube::resolve(&mut resolved)
                        .await?
                        .ok_or_else(|| anyhow::anyhow!("its exec plugins gave no expiry"))?;
                    let item = deliver
                        .place(&resolved, target.env)?
                        .ok_or_else(|| anyhow::anyhow!("it has no file"))?;
                    Ok((item, half(minted_at, expires_at), expires_at))
                }
            }
        }))
        .await;
        let mut items = vec![];
        let mut sent = vec![];
        for (&i, got) in ready.iter().zip(fresh) {
            match got {
                Ok((item, due, expires)) => {
                    sent.push((i, due, expires));
                    items.push(item);
                }
                Err(e) => {
                    let e: anyhow::Error = e;
                    let retry = retry_in(entries[i].2.lifetime);
                    entries[i].2.at = now + retry;
                    eprintln!(
                        "{} keep-fresh: refresh of session secret {} failed: {e:#}; retrying in {retry}s",
                        rfc3339(now, None),
                        entries[i].0,
                    );
                }
            }
        }
        if items.is_empty() {
            continue;
        }
        match deliver.deliver(items).await {
            Ok(summary) => {
                for (i, due, expires) in sent {
                    entries[i].2 = due;
                    eprintln!(
                        "{} keep-fresh: refreshed session secret {} on cluster {cluster} ({summary}); expires at {}",
                        rfc3339(now_secs(), None),
                        entries[i].0,
                        rfc3339(expires, None)
                    );
                }
            }
            Err(reason) => {
                for (i, _, _) in sent {
                    entries[i].2.at = now + retry_in(entries[i].2.lifetime);
                    eprintln!(
                        "{} keep-fresh: refresh of session secret {} on cluster {cluster} failed: {reason}",
                        rfc3339(now_secs(), None),
                        entries[i].0
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
        assert_eq!(m.minted_at + m.lifetime_secs() / 2, 2_800);
        assert_eq!(retry_in(3_600), 60);
        assert_eq!(retry_in(20), 5);
    }
}
