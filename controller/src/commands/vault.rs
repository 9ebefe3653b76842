//! `controller vault list | push NAME... | pull NAME...`: the remote store
//! (Vault KV v2). Resolves the configuration and the secrets first, then
//! talks to the server; prints one row per secret (name, status, version,
//! detail) or one JSON document. Never prints a value or the token.

use anyhow::Result;
use serde::Serialize;

use crate::cli::{ListArgs, VaultCommand, VaultNamesArgs};
use crate::exit::{self, UsageError};
use crate::local_secrets::LocalSecrets;
use crate::output::{print_json, Table};
use crate::vault::{self, local, Outcome, State};
use crate::Context;

/// Run `controller vault ...`.
pub async fn run(command: VaultCommand, ctx: &Context) -> Result<u8> {
    match command {
        VaultCommand::List(args) => list(&args, ctx).await,
        VaultCommand::Push(args) => push(&args, ctx).await,
        VaultCommand::Pull(args) => pull(&args, ctx).await,
    }
}

#[derive(Serialize)]
struct ListEntry {
    name: String,
    saved_locally: bool,
    known_version: Option<u64>,
}

#[derive(Serialize)]
struct ListDoc<'a> {
    url: &'a str,
    mount: &'a str,
    prefix: &'a str,
    secrets: Vec<ListEntry>,
}

async fn list(args: &ListArgs, ctx: &Context) -> Result<u8> {
    let (config, client) = vault::connect(ctx)?;
    let names = client.list().await?;
    let state = State::load(&ctx.home)?;
    let key = config.store_key();
    let entries: Vec<ListEntry> = names
        .into_iter()
        .map(|name| ListEntry {
            saved_locally: local::exists(&ctx.home, &name),
            known_version: state.known(&key, &name).map(|k| k.version),
            name,
        })
        .collect();
    if args.output.json {
        print_json(&ListDoc {
            url: client.current_url(),
            mount: &config.mount,
            prefix: &config.prefix,
            secrets: entries,
        })?;
    } else if entries.is_empty() {
        eprintln!(
            "no secrets in {}/{} on {}",
            config.mount,
            config.prefix,
            client.current_url()
        );
    } else {
        let mut table = Table::new(&["name", "saved here", "version seen here"]);
        for e in &entries {
            table.row(vec![
                e.name.clone(),
                if e.saved_locally { "yes" } else { "no" }.into(),
                e.known_version
                    .map(|v| v.to_string())
                    .unwrap_or_else(|| "-".into()),
            ]);
        }
        table.print()?;
    }
    Ok(exit::OK)
}

fn check_names(names: &[String]) -> Result<()> {
    for name in names {
        common::names::validate_secret_name(name).map_err(|e| UsageError(e.to_string()))?;
    }
    Ok(())
}

async fn push(args: &VaultNamesArgs, ctx: &Context) -> Result<u8> {
    check_names(&args.names)?;
    let local_secrets = LocalSecrets::load(ctx)?;
    let mut secrets = Vec::with_capacity(args.names.len());
    for name in &args.names {
        match local_secrets.get(name) {
            Some(s) => secrets.push(s.clone()),
            None => anyhow::bail!(
                "no saved or detected secret named {name}: see `controller secret list`"
            ),
        }
    }
    let (config, client) = vault::connect(ctx)?;
    let outcomes = vault::push(&client, &config, &ctx.home, &secrets, args.overwrite).await?;
    report(&outcomes, args.output.json)
}

async fn pull(args: &VaultNamesArgs, ctx: &Context) -> Result<u8> {
    check_names(&args.names)?;
    let (config, client) = vault::connect(ctx)?;
    let (outcomes, _) =
        vault::pull(&client, &config, &ctx.home, &args.names, args.overwrite).await?;
    report(&outcomes, args.output.json)
}

/// Print outcomes; exit 1 if any conflicted or failed.
pub(crate) fn report(outcomes: &[Outcome], json: bool) -> Result<u8> {
    if json {
        print_json(&serde_json::json!({ "results": outcomes }))?;
    } else {
        crate::outcome::outcome_table(outcomes).print()?;
    }
    let bad = outcomes.iter().filter(|o| o.status.is_failure()).count();
    if bad > 0 {
        eprintln!("error: {bad} of {} secret(s) not done", outcomes.len());
        Ok(exit::FAILURE)
    } else {
        Ok(exit::OK)
    }
}
