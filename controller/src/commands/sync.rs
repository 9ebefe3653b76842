//! `controller sync --cluster NAME`: push secrets to every node in ONE
//! `POST /v1/sync` per node. Path secrets become files, env-var secrets become
//! vars in env E (both when a secret has both); a base secret with neither is
//! skipped with a note. The plan (cluster, nodes, secrets, envs) is resolved
//! and validated before any SSH or HTTP work. The plan of items and the
//! cells of a result row (`send` and `env sync` build their items the same
//! way); fanning out, the report table and the exit code are
//! `crate::remote`'s.
//! Never prints a value: rows carry names, paths, var names and statuses.

use anyhow::Result;
use common::placement::{place, PlaceOpts};
use common::wire::{SyncItem, SyncRequest};
use common::Secret;
use serde::Serialize;

use crate::cli::SyncArgs;
use crate::exit::UsageError;
use crate::mint;
use crate::remote::{finish, reports, Remote};
use crate::Context;

/// Every secret this machine knows (saved and detected): one gathering
/// for `sync`, `send`, `env sync` and `status`.
pub(crate) use crate::local_secrets::LocalSecrets as SecretPool;

/// A secret left out of a sync, and why.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Skipped {
    pub(crate) secret: String,
    pub(crate) reason: String,
}

/// A secret placed as `opts` asks (`common::placement::place`: the one
/// decision of its files and vars), as the item sent to the agents; `None`
/// when it goes nowhere.
pub(crate) fn sync_item(secret: &Secret, opts: &PlaceOpts<'_>) -> Result<Option<SyncItem>> {
    let placement = place(secret, opts)?;
    Ok((!placement.is_empty()).then(|| SyncItem::placed(secret.clone(), placement)))
}

/// Items for these secrets placed by the `sync` rule (a secret kept in a
/// file goes to that file; its values become vars in `env` when it defines
/// env vars or has no file), with the ones that have nowhere to go noted.
pub(crate) fn plan_items(secrets: &[Secret], env: &str) -> Result<(Vec<SyncItem>, Vec<Skipped>)> {
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
        match sync_item(s, &PlaceOpts::sync(env))? {
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

/// The secrets a sync sends: every local one, or the `--secret` names plus
/// the `--secret-json` ones (a given secret wins over a named one of the
/// same name; the local secrets are not gathered when only JSON is given).
fn selection(
    pool: &SecretPool,
    ctx: &Context,
    names: &[String],
    json: Option<&str>,
) -> Result<Vec<Secret>> {
    let Some(source) = json else {
        return pool.select(names);
    };
    let mut secrets = super::secret::given_secrets(ctx, source)?;
    if !names.is_empty() {
        let named = pool.resolve(names)?;
        let given: Vec<String> = secrets.iter().map(|s| s.name.clone()).collect();
        secrets.extend(named.into_iter().filter(|s| !given.contains(&s.name)));
    }
    Ok(secrets)
}

/// `controller sync`.
pub async fn run(args: SyncArgs, ctx: &Context) -> Result<u8> {
    if let Some(cluster) = crate::fleet::cmd::pull_cluster(ctx, &args.cluster) {
        if args.secret_json.is_some() {
            return Err(UsageError(format!(
                "--secret-json is for push clusters; {} is a pull cluster: save the secret \
                 (`controller secret create`) and publish it with --secret NAME",
                args.cluster
            ))
            .into());
        }
        return crate::fleet::cmd::sync(args, ctx, &cluster).await;
    }
    if args.new_epoch {
        return Err(UsageError(format!(
            "--new-epoch applies to pull clusters only; {} is pushed to",
            args.cluster
        ))
        .into());
    }
    common::names::validate_env_name(&args.env).map_err(|e| UsageError(e.to_string()))?;
    let remote = Remote::resolve(ctx, &args.cluster, &args.remote, args.output.json)?;
    let pool = SecretPool::load(ctx)?;
    let mut secrets = selection(&pool, ctx, &args.secrets, args.secret_json.as_deref())?;
    // Secrets given as JSON alone name no saved session secret.
    let sessions = if args.secret_json.is_some() && args.secrets.is_empty() {
        vec![]
    } else {
        pool.select_sessions(&args.secrets)
    };
    // Kubeconfig users with exec plugins: the plugins run here (not for
    // `local`: this machine has them, and the file is the user's own).
    let (kube, kube_failed) = if remote.cluster.is_local() {
        (vec![], vec![])
    } else {
        mint::resolve_kube(ctx, &mut secrets).await
    };
    let (mut items, skipped) = plan_items(&secrets, &args.env)?;
    // Session secrets: minted here, now (`crate::mint`).
    let target = mint::Target {
        env: &args.env,
        local: remote.cluster.is_local(),
    };
    let minting = std::time::Instant::now();
    let (minted, mut mint_failed) = mint::plan(ctx, &sessions, target).await;
    if !sessions.is_empty() {
        tracing::info!(
            sessions = sessions.len(),
            mint_ms = minting.elapsed().as_millis() as u64,
            "session secrets minted"
        );
    }
    mint_failed.extend(kube_failed);
    for (name, why) in &mint_failed {
        eprintln!("error: session secret {name} could not be minted: {why}");
    }
    let first = mint::minted_of(&minted);
    items.extend(minted);
    let names: Vec<String> = items.iter().map(|i| i.secret.name.clone()).collect();
    if items.is_empty() && !mint_failed.is_empty() {
        return Ok(crate::exit::FAILURE);
    }
    if items.is_empty() {
        for s in &skipped {
            eprintln!("note: skipped {}: {}", s.secret, s.reason);
        }
        anyhow::bail!(
            "nothing to sync: no secret detected or saved (see `controller secret detect` and `controller secret create`)"
        );
    }
    tracing::info!(cluster = %remote.cluster.name, nodes = remote.nodes.len(), secrets = items.len(), dry_run = args.dry_run, "sync plan");
    let request = SyncRequest {
        items,
        overwrite: args.overwrite,
        dry_run: args.dry_run,
    };
    let outcomes = remote.push(request, "sync").await;
    let nodes = reports(outcomes, args.dry_run);
    let code = finish(
        &remote.cluster.name,
        args.dry_run,
        &names,
        &nodes,
        &skipped,
        args.output.json,
    )?;
    let code = if mint_failed.is_empty() || code != crate::exit::OK {
        code
    } else {
        crate::exit::FAILURE
    };
    if args.keep_fresh && !args.dry_run {
        // Refreshed items replace what they installed before (a kube
        // token changes with every run of its plugin).
        let push = Push {
            remote: &remote,
            overwrite: true,
        };
        mint::fresh::run(
            ctx,
            &remote.cluster.name,
            sessions,
            first,
            kube,
            target,
            &push,
        )
        .await?;
    }
    Ok(code)
}

/// `--keep-fresh` on a push cluster: the refreshed items go to every node
/// in one `/v1/sync` each, as the first sync's did.
struct Push<'a> {
    remote: &'a Remote,
    overwrite: bool,
}

impl mint::fresh::Deliver for Push<'_> {
    async fn deliver(&self, items: Vec<SyncItem>) -> std::result::Result<String, String> {
        let request = SyncRequest {
            items,
            overwrite: self.overwrite,
            dry_run: false,
        };
        let nodes = reports(self.remote.push(request, "keep-fresh").await, false);
        let ok = nodes.iter().filter(|n| n.ok).count();
        for n in nodes.iter().filter(|n| !n.ok) {
            let why = n.error.clone().unwrap_or_else(|| {
                n.results
                    .iter()
                    .filter_map(|r| r.message.clone())
                    .collect::<Vec<_>>()
                    .join("; ")
            });
            eprintln!("keep-fresh: node {}: {why}", n.node);
        }
        if ok == 0 && !nodes.is_empty() {
            return Err(format!("no node took it ({} failed)", nodes.len()));
        }
        Ok(format!("{ok}/{} nodes", nodes.len()))
    }
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
        let (items, skipped) =
            plan_items(&[file_only, vars_only, both, neither], "base_env").unwrap();
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
    fn bad_var_names_are_refused_before_any_network() {
        let mut s = Secret::base("tok", values_from([("k", "v")]));
        s.env_vars = Some([("k".to_string(), "NOT-A-VAR".to_string())].into());
        assert!(plan_items(&[s], "base_env").is_err());
    }
}
