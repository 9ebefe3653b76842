//! The plan of a delivery, below the commands: which secrets go (the local
//! ones, the `--secret` names, the `--secret-json` ones, the session
//! secrets minted now), where each one goes (`common::placement::place`,
//! the one decision of its files and vars) and which are left out, with
//! the note saying why. `sync` ([`sync`]), `send` ([`send`]), `env sync`
//! ([`env`]) and `--keep-fresh` ([`item`]) build their items here; a push cluster is sent the placed items, a pull
//! cluster is published the asked form each node places again under its
//! own policy ([`Form`]). Nothing here talks to a node or the store, and
//! nothing prints: the commands report.
//! Never logs a value: notes carry secret names and reasons.

use anyhow::Result;
use common::placement::{place, PlaceError, PlaceOpts};
use common::session::Minted;
use common::wire::SyncItem;
use common::Secret;
use serde::Serialize;

use crate::envs::{vars_secret, EnvDef};
use crate::exit::UsageError;
use crate::local_secrets::LocalSecrets;
use crate::mint::{self, SessionSecret};
use crate::Context;

/// A secret left out of a sync, and why.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Skipped {
    pub(crate) secret: String,
    pub(crate) reason: String,
}

/// The form of the items a plan makes, as the cluster's mode takes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Form {
    /// The placement decided here travels with the item (push: the agent
    /// writes what was decided).
    Placed,
    /// The first file's path and the env's name only (pull: published in
    /// the older item form, so published items and their fingerprints are
    /// as they were; each node places it again under its own policy).
    Asked,
}

/// A secret placed as `opts` asks, as an item of `form`; `None` when it
/// goes nowhere.
pub(crate) fn item(secret: &Secret, opts: &PlaceOpts<'_>, form: Form) -> Result<Option<SyncItem>> {
    let placement = place(secret, opts)?;
    if placement.is_empty() {
        return Ok(None);
    }
    Ok(Some(match form {
        Form::Placed => SyncItem::placed(secret.clone(), placement),
        Form::Asked => {
            let (path, env) = placement.as_request();
            SyncItem {
                secret: secret.clone(),
                path,
                env,
                placement: None,
                session: None,
            }
        }
    }))
}

/// Items for these secrets placed by the `sync` rule (a secret kept in a
/// file goes to that file; its values become vars in `env` when it defines
/// env vars or has no file), with the ones that have nowhere to go noted.
pub(crate) fn items(
    secrets: &[Secret],
    env: &str,
    form: Form,
) -> Result<(Vec<SyncItem>, Vec<Skipped>)> {
    let mut items = vec![];
    let mut skipped = vec![];
    for s in secrets {
        if s.values.is_empty() {
            skipped.push(Skipped {
                secret: s.name.clone(),
                reason: "no values (its file or env vars are missing on this machine)".into(),
            });
            continue;
        }
        match item(s, &PlaceOpts::sync(env), form)? {
            Some(item) => items.push(item),
            None => skipped.push(Skipped {
                secret: s.name.clone(),
                reason: "no file and no env vars (a base secret: give it --path or --env-var)"
                    .into(),
            }),
        }
    }
    Ok((items, skipped))
}

/// Items for `env sync`: the env's secrets, each with its file when it has
/// one and its vars in the env when it maps any (noted when it goes
/// nowhere), then the env's plain vars ([`vars_secret`]).
pub(crate) fn env(
    def: &EnvDef,
    secrets: &[Secret],
    form: Form,
) -> Result<(Vec<SyncItem>, Vec<Skipped>)> {
    let opts = PlaceOpts::both(&def.name);
    let mut items: Vec<SyncItem> = vec![];
    let mut skipped = vec![];
    for s in secrets {
        match item(s, &opts, form)? {
            Some(i) => items.push(i),
            None => skipped.push(Skipped {
                secret: s.name.clone(),
                reason: "no file and no env vars".into(),
            }),
        }
    }
    if !def.vars.is_empty() {
        items.extend(item(&vars_secret(def), &opts, form)?);
    }
    Ok((items, skipped))
}

/// The item of `send`, in `form`: its file (at `path` when given), its
/// vars (in `env` when given, else in `base_env` when it has no file); a
/// usage error when it cannot go where asked, or anywhere.
pub(crate) fn send(
    secret: &Secret,
    path: Option<&str>,
    env: Option<&str>,
    form: Form,
) -> Result<SyncItem> {
    let opts = PlaceOpts::send(path, env);
    let placed = match item(secret, &opts, form) {
        Err(e) if matches!(e.downcast_ref(), Some(PlaceError::NoVars { .. })) => {
            return Err(UsageError(format!(
                "secret {:?} has no env vars to set in env {:?}",
                secret.name,
                env.unwrap_or_default()
            ))
            .into());
        }
        other => other?,
    };
    placed.ok_or_else(|| {
        UsageError(format!(
            "secret {:?} has no file and no env vars: give --path (or create it with --env-var)",
            secret.name
        ))
        .into()
    })
}

/// The secrets a sync sends: every local one, or the `--secret` names plus
/// the `--secret-json` ones (a given secret wins over a named one of the
/// same name; the local secrets are not gathered when only JSON is given).
fn selection(
    pool: &LocalSecrets,
    ctx: &Context,
    names: &[String],
    json: Option<&str>,
) -> Result<Vec<Secret>> {
    let Some(source) = json else {
        return pool.select(names);
    };
    let mut secrets = crate::given::given_secrets(ctx, source)?;
    if !names.is_empty() {
        let named = pool.resolve(names)?;
        let given: Vec<String> = secrets.iter().map(|s| s.name.clone()).collect();
        secrets.extend(named.into_iter().filter(|s| !given.contains(&s.name)));
    }
    Ok(secrets)
}

/// What `controller sync` was asked to send.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SyncAsk<'a> {
    /// `--secret` names (none: every local secret).
    pub(crate) names: &'a [String],
    /// `--secret-json` source.
    pub(crate) json: Option<&'a str>,
    /// `--env`: where vars go.
    pub(crate) env: &'a str,
    /// The cluster is this machine (`local`): kube plugins are not run here
    /// for it, and sessions are minted for this machine.
    pub(crate) local: bool,
    pub(crate) form: Form,
}

/// The plan of one `controller sync`: the items to deliver (placed
/// secrets, then the session secrets minted now), the secrets left out,
/// and what `--keep-fresh` keeps fresh afterwards.
#[derive(Debug)]
pub(crate) struct SyncPlan {
    pub(crate) items: Vec<SyncItem>,
    pub(crate) skipped: Vec<Skipped>,
    /// Session secrets that could not be minted (or kubeconfigs whose exec
    /// plugins failed): `(name, reason)`, named without a value.
    pub(crate) mint_failed: Vec<(String, String)>,
    /// The session secrets asked for (for `--keep-fresh`).
    pub(crate) sessions: Vec<SessionSecret>,
    /// What this sync minted, by name (for `--keep-fresh`).
    pub(crate) first: Vec<(String, Minted)>,
    /// Kubeconfigs whose exec users were resolved here, as saved, with the
    /// `(minted_at, expires_at)` of that resolution (for `--keep-fresh`).
    pub(crate) kube: Vec<(Secret, i64, i64)>,
}

impl SyncPlan {
    /// The names of the secrets delivered, in order.
    pub(crate) fn names(&self) -> Vec<String> {
        self.items.iter().map(|i| i.secret.name.clone()).collect()
    }

    /// Where minted sessions go, for `--keep-fresh` to mint them again alike.
    pub(crate) fn target<'a>(ask: &SyncAsk<'a>) -> mint::Target<'a> {
        mint::Target {
            env: ask.env,
            local: ask.local,
        }
    }

    /// `--keep-fresh`: keep this plan's sessions (and resolved kubeconfigs)
    /// fresh on `cluster` through `deliver`, the road the first delivery
    /// took, until interrupted.
    pub(crate) async fn keep_fresh<D: mint::fresh::Deliver + Sync>(
        self,
        ctx: &Context,
        cluster: &str,
        ask: &SyncAsk<'_>,
        deliver: &D,
    ) -> Result<()> {
        let target = Self::target(ask);
        mint::fresh::run(
            ctx,
            cluster,
            self.sessions,
            self.first,
            self.kube,
            target,
            deliver,
        )
        .await
    }
}

/// Plan a `controller sync`: select the secrets, run kubeconfig exec
/// plugins here (not for `local`: that machine has them, and the file is
/// the user's own), place every secret, and mint the session secrets.
pub(crate) async fn sync(ctx: &Context, ask: &SyncAsk<'_>) -> Result<SyncPlan> {
    let pool = LocalSecrets::load(ctx)?;
    let mut secrets = selection(&pool, ctx, ask.names, ask.json)?;
    // Secrets given as JSON alone name no saved session secret.
    let sessions = if ask.json.is_some() && ask.names.is_empty() {
        vec![]
    } else {
        pool.select_sessions(ask.names)
    };
    let (kube, kube_failed) = if ask.local {
        (vec![], vec![])
    } else {
        mint::resolve_kube(ctx, &mut secrets).await
    };
    let (mut items, skipped) = items(&secrets, ask.env, ask.form)?;
    // Session secrets: minted here, now (`crate::mint`).
    let minting = std::time::Instant::now();
    let (minted, mut mint_failed) = mint::plan(ctx, &sessions, SyncPlan::target(ask)).await;
    if !sessions.is_empty() {
        tracing::info!(
            sessions = sessions.len(),
            mint_ms = minting.elapsed().as_millis() as u64,
            "session secrets minted"
        );
    }
    mint_failed.extend(kube_failed);
    let first = mint::minted_of(&minted);
    items.extend(minted);
    Ok(SyncPlan {
        items,
        skipped,
        mint_failed,
        sessions,
        first,
        kube,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::secret_value::values_from;

    #[test]
    fn items_get_files_vars_both_or_are_skipped() {
        let mut file_only = Secret::base("cfg", values_from([("k", "v")]));
        file_only.path = Some("~/cfg.json".into());
        let mut vars_only = Secret::base("tok", values_from([("k", "v")]));
        vars_only.env_vars = Some([("k".to_string(), "TOK".to_string())].into());
        let mut both = file_only.clone();
        both.name = "both".into();
        both.env_vars = vars_only.env_vars.clone();
        let neither = Secret::base("plain", values_from([("k", "v")]));
        let (items, skipped) = items(
            &[file_only, vars_only, both, neither],
            "base_env",
            Form::Placed,
        )
        .unwrap();
        let got: Vec<(String, Option<String>, Option<String>)> = items
            .iter()
            .map(|i| {
                let (path, env) = i.placement.as_ref().unwrap().as_request();
                (i.secret.name.clone(), path, env)
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("cfg".into(), Some("~/cfg.json".into()), None),
                ("tok".into(), None, Some("base_env".into())),
                (
                    "both".into(),
                    Some("~/cfg.json".into()),
                    Some("base_env".into())
                ),
            ]
        );
        assert_eq!(skipped.len(), 1);
        assert_eq!(skipped[0].secret, "plain");
    }

    #[test]
    fn the_asked_form_is_the_placed_one_as_a_node_reads_it() {
        let mut s = Secret::base("cfg", values_from([("k", "v")]));
        s.path = Some("~/cfg.json".into());
        s.env_vars = Some([("k".to_string(), "CFG".to_string())].into());
        let placed = item(&s, &PlaceOpts::sync("e"), Form::Placed)
            .unwrap()
            .unwrap();
        let asked = item(&s, &PlaceOpts::sync("e"), Form::Asked)
            .unwrap()
            .unwrap();
        assert_eq!(
            serde_json::to_value(&asked).unwrap(),
            serde_json::to_value(placed.as_request()).unwrap()
        );
    }

    #[test]
    fn bad_var_names_are_refused_before_any_network() {
        let mut s = Secret::base("tok", values_from([("k", "v")]));
        s.env_vars = Some([("k".to_string(), "NOT-A-VAR".to_string())].into());
        assert!(items(&[s], "base_env", Form::Placed).is_err());
    }
}
