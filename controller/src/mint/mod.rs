//! Session secrets on the user's machine: what they are ([`SessionSecret`]:
//! saved with `secret create --session`, or detected AWS profiles without
//! static keys), minting them ([`mint`]: `aws`, `gcp`), and the items that
//! carry the minted credentials to the agents ([`plan`]). Only what was
//! minted leaves this machine: never the user's refresh tokens, SSO cache
//! or static keys. Nothing here prints or logs a credential.

pub mod aws;
pub mod fresh;
pub mod gcp;
pub mod kube;

use anyhow::Result;
use common::session::{Minted, SessionItem, SessionKind, SessionSpec};
use common::wire::SyncItem;

use crate::Context;

/// A session secret known on this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionSecret {
    pub name: String,
    pub kind: SessionKind,
    pub spec: SessionSpec,
}

impl SessionSecret {
    /// The `KEYS` cell of listings: `session (sso)`, `session (role)`, ...
    pub fn keys_cell(&self) -> String {
        let how = self.spec.detected.clone().unwrap_or_else(|| {
            match (self.kind, &self.spec.role_arn, &self.spec.impersonate) {
                (SessionKind::Aws, Some(_), _) => "assume role".into(),
                (SessionKind::Aws, None, _) => "profile".into(),
                (SessionKind::Gcp, _, Some(_)) => "impersonate".into(),
                (SessionKind::Gcp, _, None) => "adc".into(),
            }
        });
        format!("session ({how})")
    }

    /// The source column of listings.
    pub fn source_cell(&self, ctx: &Context) -> String {
        match self.kind {
            SessionKind::Aws => format!("~/.aws/config [{}]", aws::profile_of(ctx, &self.spec)),
            SessionKind::Gcp => self
                .spec
                .path
                .clone()
                .unwrap_or_else(|| gcp::DEFAULT_ADC.to_owned()),
        }
    }
}

/// The AWS profiles of `~/.aws/config` without static keys, as session
/// secrets: `aws` for `default`, `aws-PROFILE` for the others (names a
/// secret cannot have are left out).
pub fn detect(ctx: &Context) -> Vec<SessionSecret> {
    aws::detect(ctx)
        .into_iter()
        .filter_map(|d| {
            let name = if d.profile == "default" {
                "aws".to_owned()
            } else {
                format!("aws-{}", d.profile)
            };
            common::names::validate_secret_name(&name).ok()?;
            Some(SessionSecret {
                name,
                kind: SessionKind::Aws,
                spec: SessionSpec {
                    profile: Some(d.profile),
                    detected: Some(d.kind.to_owned()),
                    ..Default::default()
                },
            })
        })
        .collect()
}

/// Mint one session secret.
pub async fn mint(ctx: &Context, s: &SessionSecret) -> Result<Minted> {
    match s.kind {
        SessionKind::Aws => aws::mint(ctx, &s.spec).await,
        SessionKind::Gcp => gcp::mint(ctx, &s.spec).await,
    }
}

/// Where a cluster's nodes expose sessions.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// The env whose processes get the container / metadata variables.
    pub env: &'a str,
    /// The `local` cluster: the user's own `~/.aws` files stay as they
    /// are (no profile line); env processes still get the session.
    pub local: bool,
}

/// The session item of `s` minted as `minted`, for `target`. `env_owner`:
/// whether this session gets the env's variables (one AWS and one GCP
/// session per env: the first in [`plan`]'s order).
pub fn item(
    s: &SessionSecret,
    ctx: &Context,
    minted: Minted,
    target: Target<'_>,
    env_owner: bool,
) -> SyncItem {
    let profile = match (s.kind, target.local) {
        (SessionKind::Aws, false) => Some(aws::profile_of(ctx, &s.spec)),
        _ => None,
    };
    SyncItem::session(
        &s.name,
        SessionItem {
            minted,
            env: env_owner.then(|| target.env.to_owned()),
            profile,
        },
    )
}

/// The order sessions are planned in: per kind, the one for the `default`
/// profile (or named like the provider) first, so it is the one whose
/// variables the env gets.
pub fn env_owners(sessions: &[SessionSecret]) -> Vec<bool> {
    let rank = |s: &SessionSecret| {
        let default =
            s.spec.profile.as_deref().is_none_or(|p| p == "default") || s.name == s.kind.as_str();
        (!default, s.name.clone())
    };
    let mut owners = vec![false; sessions.len()];
    for kind in [SessionKind::Aws, SessionKind::Gcp] {
        if let Some((i, _)) = sessions
            .iter()
            .enumerate()
            .filter(|(_, s)| s.kind == kind)
            .min_by_key(|(_, s)| rank(s))
        {
            owners[i] = true;
        }
    }
    owners
}

/// Mint every session (in parallel) and make their items; failures are
/// `(name, reason)`, named without a value.
pub async fn plan(
    ctx: &Context,
    sessions: &[SessionSecret],
    target: Target<'_>,
) -> (Vec<SyncItem>, Vec<(String, String)>) {
    let minted = futures_util::future::join_all(sessions.iter().map(|s| mint(ctx, s))).await;
    let owners = env_owners(sessions);
    let mut items = vec![];
    let mut failed = vec![];
    for ((s, m), owner) in sessions.iter().zip(minted).zip(owners) {
        match m {
            Ok(m) => items.push(item(s, ctx, m, target, owner)),
            Err(e) => failed.push((s.name.clone(), format!("{e:#}"))),
        }
    }
    (items, failed)
}

/// Resolve the `exec` users of the kubeconfig secrets among `secrets` in
/// place (`kube`): those whose plugins gave an expiry, as they were
/// before (for `--keep-fresh`) with `(minted_at, expires_at)`; a secret
/// whose plugin failed is taken out of `secrets` and listed as failed.
/// Only a kubeconfig read from this machine's own file (its `users` as the
/// file at its path holds them) has its plugins run here: one saved from
/// elsewhere (the store, `--values-json`) names programs nobody on this
/// machine chose, so it goes as it is (and a pull node refuses its `exec`).
pub async fn resolve_kube(
    ctx: &Context,
    secrets: &mut Vec<common::Secret>,
) -> (Vec<(common::Secret, i64, i64)>, Vec<(String, String)>) {
    let mut fresh = vec![];
    let mut failed = vec![];
    let mut kept = Vec::with_capacity(secrets.len());
    for mut s in std::mem::take(secrets) {
        if !kube::has_exec(&s) || !kube::from_own_file(&ctx.home, &s) {
            kept.push(s);
            continue;
        }
        let original = s.clone();
        match kube::resolve(&mut s).await {
            Ok(Some((minted_at, expires_at))) => {
                fresh.push((original, minted_at, expires_at));
                kept.push(s);
            }
            Ok(None) => kept.push(s),
            Err(e) => failed.push((s.name.clone(), format!("{e:#}"))),
        }
    }
    *secrets = kept;
    (fresh, failed)
}

/// What the items of [`plan`] carry: `(name, minted)`.
pub fn minted_of(items: &[SyncItem]) -> Vec<(String, Minted)> {
    items
        .iter()
        .filter_map(|i| Some((i.secret.name.clone(), i.session.as_ref()?.minted.clone())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aws(name: &str, profile: Option<&str>) -> SessionSecret {
        SessionSecret {
            name: name.into(),
            kind: SessionKind::Aws,
            spec: SessionSpec {
                profile: profile.map(str::to_owned),
                ..Default::default()
            },
        }
    }

    #[test]
    fn one_session_per_kind_owns_the_env() {
        let gcp = SessionSecret {
            name: "g".into(),
            kind: SessionKind::Gcp,
            spec: SessionSpec::default(),
        };
        let list = [
            aws("aws-dev", Some("dev")),
            aws("main", Some("default")),
            gcp,
        ];
        assert_eq!(env_owners(&list), vec![false, true, true]);
        assert_eq!(
            env_owners(&[aws("b", Some("x")), aws("a", Some("y"))]),
            vec![false, true]
        );
    }
}
