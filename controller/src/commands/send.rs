//! `controller send SECRET --cluster NAME [--env E] [--path P]`: one secret to
//! every node, in the same single `POST /v1/sync` per node as `sync`. By
//! default a path secret becomes files and any other secret's vars go to
//! `base_env`; `--env` sets its vars in that env, `--path` writes its file
//! there. Never prints a value.

use anyhow::Result;
use common::apply::secret_env_vars;
use common::names::validate_env_name;
use common::wire::{SyncRequest, DEFAULT_ENV};

use super::sync::{sync_item, SecretPool};
use super::UsageError;
use crate::cli::SendArgs;
use crate::remote::{finish, reports, Remote};
use crate::Context;

/// `controller send`.
pub async fn run(args: SendArgs, ctx: &Context) -> Result<u8> {
    if let Some(env) = &args.env {
        validate_env_name(env).map_err(|e| UsageError(e.to_string()))?;
    }
    let remote = Remote::resolve(ctx, &args.cluster, &args.remote, args.output.json)?;
    let pool = SecretPool::load(ctx)?;
    let secret = pool.resolve(std::slice::from_ref(&args.secret))?.remove(0);
    let has_file = args.path.is_some() || common::apply::secret_paths(&secret, None).is_ok();
    let env = match (&args.env, has_file) {
        (Some(e), _) => Some(e.as_str()),
        (None, false) => Some(DEFAULT_ENV),
        (None, true) => None,
    };
    if args.env.is_some() && secret_env_vars(&secret).is_empty() {
        return Err(UsageError(format!(
            "secret {:?} has no env vars to set in env {:?}",
            secret.name,
            args.env.as_deref().unwrap_or_default()
        ))
        .into());
    }
    let Some(item) = sync_item(&secret, env, args.path.as_deref())? else {
        return Err(UsageError(format!(
            "secret {:?} has no file and no env vars: give --path (or create it with --env-var)",
            secret.name
        ))
        .into());
    };
    let names = vec![secret.name.clone()];
    let request = SyncRequest {
        items: vec![item],
        overwrite: args.overwrite,
        dry_run: false,
    };
    let nodes = reports(remote.push(request, "send").await, false);
    finish(
        &remote.cluster.name,
        false,
        &names,
        &nodes,
        &[],
        args.output.json,
    )
}
