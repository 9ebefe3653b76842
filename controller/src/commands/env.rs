//! `controller env create|list|show|delete|sync`: envs are defined on this
//! machine (`~/.rh/envs/NAME.json`: secret names and plain vars) and
//! `env sync NAME --cluster C` creates or refreshes the env process on each
//! node: its secrets' vars and its plain vars set in it, its path secrets'
//! files written, all in one `POST /v1/sync` per node of a push cluster, or
//! published beside what is there for a pull cluster (its nodes place them
//! under their own policy). Listings show var names only, never values.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::Result;
use common::wire::{SecretResult, SetEnvVarsRequest, SyncItem, SyncRequest};
use serde::Serialize;

use crate::cli::{EnvCommand, EnvCreateArgs, EnvNameArgs, EnvSyncArgs, ListArgs};
use crate::envs::{self, EnvDef, EnvError};
use crate::exit::UsageError;
use crate::fleet::publish::PublishOpts;
use crate::local_secrets::LocalSecrets;
use crate::mode::Mode;
use crate::output::{print_json, Table};
use crate::plan::{self, Skipped};
use crate::remote::{finish, reports, Remote};
use crate::Context;

/// `controller env ...`.
pub async fn run(cmd: EnvCommand, ctx: &Context) -> Result<u8> {
    match cmd {
        EnvCommand::Create(a) => create(a, ctx),
        EnvCommand::List(a) => list(a, ctx),
        EnvCommand::Show(a) => show(a, ctx),
        EnvCommand::Delete(a) => delete(a, ctx),
        EnvCommand::Sync(a) => sync(a, ctx).await,
    }
}

fn usage(e: EnvError) -> anyhow::Error {
    match e {
        EnvError::Path(_) | EnvError::Malformed { .. } => e.into(),
        other => UsageError(other.to_string()).into(),
    }
}

/// An env as listed: names only.
#[derive(Debug, Serialize)]
struct EnvView {
    name: String,
    secrets: Vec<String>,
    vars: Vec<String>,
}

impl From<&EnvDef> for EnvView {
    fn from(e: &EnvDef) -> Self {
        Self {
            name: e.name.clone(),
            secrets: e.secrets.clone(),
            vars: e.vars.keys().cloned().collect(),
        }
    }
}

fn create(args: EnvCreateArgs, ctx: &Context) -> Result<u8> {
    let vars = envs::parse_vars(&args.vars).map_err(usage)?;
    let env = EnvDef {
        name: args.name.clone(),
        secrets: args.secrets.clone(),
        vars,
    };
    env.validate().map_err(usage)?;
    if !env.secrets.is_empty() {
        // Refuse names that resolve to nothing now rather than at `env sync`.
        LocalSecrets::load(ctx)?.resolve(&env.secrets)?;
    }
    envs::save(&ctx.home, &env).map_err(usage)?;
    let view = EnvView::from(&env);
    if args.output.json {
        print_json(&view)?;
    } else {
        println!(
            "env {} saved: {} secret(s), {} var(s)",
            view.name,
            view.secrets.len(),
            view.vars.len()
        );
    }
    Ok(0)
}

fn list(args: ListArgs, ctx: &Context) -> Result<u8> {
    let mut views = vec![];
    for name in envs::list_names(&ctx.home).map_err(usage)? {
        views.push(EnvView::from(&envs::load(&ctx.home, &name).map_err(usage)?));
    }
    if args.output.json {
        print_json(&views)?;
    } else {
        let mut t = Table::new(&["env", "secrets", "vars"]);
        for v in &views {
            t.row(vec![v.name.clone(), v.secrets.join(" "), v.vars.join(" ")]);
        }
        t.print()?;
    }
    Ok(0)
}

fn show(args: EnvNameArgs, ctx: &Context) -> Result<u8> {
    let view = EnvView::from(&envs::load(&ctx.home, &args.name).map_err(usage)?);
    if args.output.json {
        print_json(&view)?;
    } else {
        println!("env:     {}", view.name);
        println!("secrets: {}", view.secrets.join(" "));
        println!("vars:    {}", view.vars.join(" "));
    }
    Ok(0)
}

fn delete(args: EnvNameArgs, ctx: &Context) -> Result<u8> {
    envs::delete(&ctx.home, &args.name).map_err(usage)?;
    if args.output.json {
        print_json(&serde_json::json!({"deleted": args.name}))?;
    } else {
        println!(
            "env {} deleted (env processes on the nodes are left alone)",
            args.name
        );
    }
    Ok(0)
}

async fn sync(args: EnvSyncArgs, ctx: &Context) -> Result<u8> {
    let env = envs::load(&ctx.home, &args.name).map_err(usage)?;
    let mode = Mode::load(ctx, &args.cluster, &args.remote, args.output.json)?;
    if let Mode::Pull(cluster) = &mode {
        cluster.refuse_push_flags(false, false, args.overwrite)?;
    }
    let secrets = if env.secrets.is_empty() {
        vec![]
    } else {
        LocalSecrets::load(ctx)?.resolve(&env.secrets)?
    };
    let (items, skipped) = plan::env(&env, &secrets, mode.form())?;
    match &mode {
        Mode::Push(remote) => push(&args, &env, remote, items, &skipped).await,
        Mode::Pull(cluster) => {
            for s in &skipped {
                eprintln!("note: skipped {}: {}", s.secret, s.reason);
            }
            if items.is_empty() {
                // A node creates an env when a published secret sets a
                // var in it: an empty one has nothing to publish.
                anyhow::bail!(
                    "nothing to publish: env {} has no secret or var to place",
                    env.name
                );
            }
            let opts = PublishOpts { new_epoch: false };
            let published = cluster.publish(ctx, &items, opts, None).await?;
            published.report(args.output.json, false)
        }
    }
}

/// `env sync` to a push cluster: one `/v1/sync` per node (and the env
/// created empty when nothing sets a var in it).
async fn push(
    args: &EnvSyncArgs,
    env: &EnvDef,
    remote: &Remote,
    items: Vec<SyncItem>,
    skipped: &[Skipped],
) -> Result<u8> {
    // An env with nothing to set is still created (empty) on each node.
    let create_empty = !items
        .iter()
        .any(|i| i.placement.as_ref().is_some_and(|p| p.env.is_some()));
    let names: Vec<String> = items.iter().map(|i| i.secret.name.clone()).collect();
    let request = Arc::new(SyncRequest {
        items,
        overwrite: args.overwrite,
        dry_run: false,
    });
    let env_name = Arc::new(env.name.clone());
    let outcomes = remote
        .fan_out("env sync", move |conn| {
            let (request, env_name) = (request.clone(), env_name.clone());
            async move {
                let mut results: Vec<SecretResult> = vec![];
                if !request.items.is_empty() {
                    results = conn.sync(&request).await?.results;
                }
                if create_empty {
                    let empty = SetEnvVarsRequest {
                        vars: BTreeMap::new(),
                        secret: None,
                        dry_run: false,
                    };
                    conn.set_env_vars(&env_name, &empty).await?;
                }
                Ok(results)
            }
        })
        .await;
    let reports = reports(outcomes, false);
    let code = finish(
        &remote.cluster.name,
        false,
        &names,
        &reports,
        skipped,
        args.output.json,
    )?;
    if !args.output.json && create_empty && code == 0 {
        println!("env {} is running on {} node(s)", env.name, reports.len());
    }
    Ok(code)
}
