//! `controller sync --cluster NAME`: plan, deliver by the cluster's mode,
//! report. The plan (cluster secrets, placement, skipped notes, sessions
//! minted now) is `crate::plan`'s, resolved and validated before any SSH
//! or HTTP work. A push cluster gets every item in ONE `POST /v1/sync` per
//! node (path secrets become files, env-var secrets become vars in env E,
//! both when a secret has both; a base secret with neither is skipped with
//! a note), reported per node x secret by `crate::remote`; a pull cluster
//! gets them published to the store (`crate::fleet::pull`), then `--wait`.
//! Never prints a value: rows carry names, paths, var names and statuses.

use anyhow::Result;
use common::placement::PlaceOpts;
use common::wire::{SyncItem, SyncRequest};
use common::Secret;

use crate::cli::SyncArgs;
use crate::exit::{self, UsageError};
use crate::fleet::publish::PublishOpts;
use crate::mint;
use crate::mode::Mode;
use crate::plan::{self, Form, SyncAsk, SyncPlan};
use crate::remote::{finish, reports, Remote};
use crate::Context;

/// `controller sync`.
pub async fn run(args: SyncArgs, ctx: &Context) -> Result<u8> {
    let mode = Mode::load(ctx, &args.cluster, &args.remote, args.output.json)?;
    match &mode {
        Mode::Pull(cluster) => {
            cluster.refuse_push_flags(args.secret_json.is_some(), args.dry_run, args.overwrite)?;
        }
        Mode::Push(_) if args.new_epoch => {
            return Err(UsageError(format!(
                "--new-epoch applies to pull clusters only; {} is pushed to",
                args.cluster
            ))
            .into());
        }
        Mode::Push(_) => {}
    }
    common::names::validate_env_name(&args.env).map_err(|e| UsageError(e.to_string()))?;
    let ask = SyncAsk {
        names: &args.secrets,
        json: args.secret_json.as_deref(),
        env: &args.env,
        local: mode.is_local(),
        form: mode.form(),
    };
    let mut plan = plan::sync(ctx, &ask).await?;
    if let Mode::Pull(_) = &mode {
        notes(&plan);
    }
    for (name, why) in &plan.mint_failed {
        eprintln!("error: session secret {name} could not be minted: {why}");
    }
    if plan.items.is_empty() && !plan.mint_failed.is_empty() {
        return Ok(exit::FAILURE);
    }
    if plan.items.is_empty() {
        if let Mode::Pull(_) = &mode {
            anyhow::bail!("nothing to publish: no secret detected or saved");
        }
        notes(&plan);
        anyhow::bail!(
            "nothing to sync: no secret detected or saved (see `controller secret detect` and `controller secret create`)"
        );
    }
    match &mode {
        Mode::Push(remote) => {
            let code = push(&args, remote, &mut plan).await?;
            if args.keep_fresh && !args.dry_run {
                // Refreshed items replace what they installed before (a
                // kube token changes with every run of its plugin).
                let push = Push {
                    remote,
                    overwrite: true,
                };
                plan.keep_fresh(ctx, &remote.cluster.name, &ask, &push)
                    .await?;
            }
            Ok(code)
        }
        Mode::Pull(cluster) => {
            let opts = PublishOpts {
                new_epoch: args.new_epoch,
            };
            let published = cluster.publish(ctx, &plan.items, opts, args.wait).await?;
            let code = published.report(args.output.json, !plan.mint_failed.is_empty())?;
            if args.keep_fresh {
                plan.keep_fresh(ctx, &cluster.cluster.name, &ask, &published)
                    .await?;
            }
            Ok(code)
        }
    }
}

/// The notes of the secrets the plan left out.
fn notes(plan: &SyncPlan) {
    for s in &plan.skipped {
        eprintln!("note: skipped {}: {}", s.secret, s.reason);
    }
}

/// Deliver the plan's items to a push cluster (one `/v1/sync` per node)
/// and print the per-node x per-secret table; a session that could not be
/// minted fails a sync that otherwise succeeded.
async fn push(args: &SyncArgs, remote: &Remote, plan: &mut SyncPlan) -> Result<u8> {
    let names = plan.names();
    tracing::info!(cluster = %remote.cluster.name, nodes = remote.nodes.len(), secrets = plan.items.len(), dry_run = args.dry_run, "sync plan");
    let request = SyncRequest {
        items: std::mem::take(&mut plan.items),
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
        &plan.skipped,
        args.output.json,
    )?;
    Ok(if plan.mint_failed.is_empty() || code != exit::OK {
        code
    } else {
        exit::FAILURE
    })
}

/// `--keep-fresh` on a push cluster: the refreshed items go to every node
/// in one `/v1/sync` each, as the first sync's did.
struct Push<'a> {
    remote: &'a Remote,
    overwrite: bool,
}

impl mint::fresh::Deliver for Push<'_> {
    fn place(&self, secret: &Secret, env: &str) -> Result<Option<SyncItem>> {
        plan::item(secret, &PlaceOpts::sync(env), Form::Placed)
    }

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
