//! `controller send SECRET --cluster NAME [--env E] [--path P]`: one secret to
//! every node. A push cluster gets it in the same single `POST /v1/sync` per
//! node as `sync`; a pull cluster gets it published to the store beside
//! what is there (nodes place it under their own policy), as
//! `sync --secret SECRET` does. By default a path secret becomes files and
//! any other secret's vars go to `base_env`; `--env` sets its vars in that
//! env, `--path` writes its file there. The secret is a saved or detected
//! name, or, for a push cluster, given as JSON (`--secret-json -`: the
//! Python package's `.to()`, values on stdin). Never prints a value.

use anyhow::Result;
use common::names::validate_env_name;
use common::wire::SyncRequest;

use crate::cli::SendArgs;
use crate::exit::UsageError;
use crate::fleet::publish::PublishOpts;
use crate::local_secrets::LocalSecrets;
use crate::mode::Mode;
use crate::plan;
use crate::remote::{finish, reports};
use crate::Context;

/// `controller send`.
pub async fn run(args: SendArgs, ctx: &Context) -> Result<u8> {
    if let Some(env) = &args.env {
        validate_env_name(env).map_err(|e| UsageError(e.to_string()))?;
    }
    let mode = Mode::load(ctx, &args.cluster, &args.remote, args.output.json)?;
    if let Mode::Pull(cluster) = &mode {
        cluster.refuse_push_flags(args.secret.secret_json.is_some(), false, args.overwrite)?;
    }
    let secret = match (&args.secret.secret_json, &args.secret.name) {
        (Some(source), _) => crate::given::given_one(ctx, source)?,
        (None, Some(name)) => LocalSecrets::load(ctx)?
            .resolve(std::slice::from_ref(name))?
            .remove(0),
        (None, None) => return Err(UsageError("give NAME or --secret-json".into()).into()),
    };
    let item = plan::send(
        &secret,
        args.path.as_deref(),
        args.env.as_deref(),
        mode.form(),
    )?;
    match &mode {
        Mode::Push(remote) => {
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
        Mode::Pull(cluster) => {
            let opts = PublishOpts { new_epoch: false };
            let published = cluster.publish(ctx, &[item], opts, None).await?;
            published.report(args.output.json, false)
        }
    }
}
