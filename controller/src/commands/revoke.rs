//! `controller revoke SECRET --cluster NAME [--env E]`: `DELETE
//! /v1/secrets/{name}` on every node, which removes the files and env vars
//! that secret installed (only its vars in env E with `--env`). The secret
//! need not exist on this machine any more: the nodes know what they hold.
//! On a pull cluster the secret is unpublished instead (`crate::fleet::pull`).

use std::sync::Arc;

use anyhow::Result;
use common::names::{validate_env_name, validate_secret_name};
use common::wire::{RevokeQuery, SecretResult, Status};

use crate::cli::RevokeArgs;
use crate::exit::UsageError;
use crate::mode::Mode;
use crate::remote::{finish, reports};
use crate::transport::TransportError;
use crate::Context;

/// `controller revoke`.
pub async fn run(args: RevokeArgs, ctx: &Context) -> Result<u8> {
    let remote = match Mode::load(ctx, &args.cluster, &args.remote, args.output.json)? {
        Mode::Pull(cluster) => {
            let env = args.env.as_deref();
            return cluster
                .unpublish(ctx, &args.secret, env, args.output.json)
                .await;
        }
        Mode::Push(remote) => remote,
    };
    validate_secret_name(&args.secret).map_err(|e| UsageError(e.to_string()))?;
    if let Some(env) = &args.env {
        validate_env_name(env).map_err(|e| UsageError(e.to_string()))?;
    }
    let query = Arc::new(RevokeQuery {
        env: args.env.clone(),
        dry_run: false,
    });
    let name = Arc::new(args.secret.clone());
    let outcomes = remote
        .fan_out("revoke", move |conn| {
            let (query, name) = (query.clone(), name.clone());
            async move {
                match conn.revoke(&name, &query).await {
                    // Nothing of that secret on this node: nothing to remove.
                    Err(TransportError::Agent { status: 404, .. }) => Ok(vec![SecretResult {
                        name: name.to_string(),
                        status: Status::Unchanged,
                        files: vec![],
                        env: None,
                        vars: vec![],
                        message: Some("not installed on this node".into()),
                    }]),
                    other => other,
                }
            }
        })
        .await;
    let reports = reports(outcomes, false);
    finish(
        &remote.cluster.name,
        false,
        std::slice::from_ref(&args.secret),
        &reports,
        &[],
        args.output.json,
    )
}
