//! `controller run --cluster NAME [--env E] [--node N] -- CMD [ARG]...`: run a
//! command inside env E's process on each node (or node N) in parallel and
//! print each node's output: as is for one node, under a `==> node <==`
//! header for several. Exits with the command's status (the highest over
//! the nodes), 3 when some nodes could not be reached and others ran, 1 when
//! none could. The command's own output is the user's to see; nothing else
//! here prints a value.

use std::io::Write;
use std::sync::Arc;

use anyhow::Result;
use common::names::validate_env_name;
use common::wire::RunRequest;
use serde::Serialize;

use crate::cli::RunArgs;
use crate::exit::{self, UsageError};
use crate::output::print_json;
use crate::remote::Remote;
use crate::Context;

#[derive(Debug, Serialize)]
struct NodeRun {
    node: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    exit_code: Option<i32>,
    stdout: String,
    stderr: String,
    timed_out: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// `controller run`.
pub async fn run(args: RunArgs, ctx: &Context) -> Result<u8> {
    validate_env_name(&args.env).map_err(|e| UsageError(e.to_string()))?;
    // No progress bar: the commands' output is what this prints.
    let mut remote = Remote::resolve(ctx, &args.cluster, &args.remote, true)?;
    if let Some(only) = &args.node {
        remote.only_node(only)?;
    }
    if args.command_timeout == 0 {
        return Err(UsageError("--command-timeout must be at least 1 second".into()).into());
    }
    let request = Arc::new(RunRequest {
        argv: args.argv.clone(),
        timeout_secs: Some(args.command_timeout),
    });
    let env = Arc::new(args.env.clone());
    let outcomes = remote
        .fan_out("run", move |conn| {
            let (request, env) = (request.clone(), env.clone());
            async move { conn.run(&env, &request).await }
        })
        .await;
    let runs: Vec<NodeRun> = outcomes
        .into_iter()
        .map(|o| match o.result {
            Ok(r) => NodeRun {
                node: o.node.name,
                exit_code: Some(r.exit_code),
                stdout: r.stdout,
                stderr: r.stderr,
                timed_out: r.timed_out,
                error: None,
            },
            Err(e) => NodeRun {
                node: o.node.name,
                exit_code: None,
                stdout: String::new(),
                stderr: String::new(),
                timed_out: false,
                error: Some(e.to_string()),
            },
        })
        .collect();
    if args.output.json {
        print_json(
            &serde_json::json!({"cluster": remote.cluster.name, "env": args.env, "nodes": runs}),
        )?;
    } else {
        let headers = runs.len() > 1;
        let mut out = std::io::stdout().lock();
        let mut err = std::io::stderr().lock();
        for r in &runs {
            if headers {
                writeln!(out, "==> {} <==", r.node)?;
            }
            out.write_all(r.stdout.as_bytes())?;
            if headers && !r.stdout.is_empty() && !r.stdout.ends_with('\n') {
                writeln!(out)?;
            }
            out.flush()?;
            if !r.stderr.is_empty() {
                if headers {
                    writeln!(err, "==> {} (stderr) <==", r.node)?;
                }
                err.write_all(r.stderr.as_bytes())?;
            }
            if r.timed_out {
                writeln!(err, "{}: the command timed out and was killed", r.node)?;
            }
        }
        for r in &runs {
            if let Some(e) = &r.error {
                writeln!(err, "error: {e}")?;
            }
        }
    }
    Ok(run_exit_code(&runs))
}

fn run_exit_code(runs: &[NodeRun]) -> u8 {
    let failed = runs.iter().filter(|r| r.error.is_some()).count();
    if failed == runs.len() {
        return exit::FAILURE;
    }
    if failed > 0 {
        return exit::PARTIAL;
    }
    // A status outside 0..=255 (a malformed answer) is a failure, never success.
    runs.iter()
        .filter_map(|r| r.exit_code)
        .map(|c| u8::try_from(c).unwrap_or(if c > 0 { 255 } else { exit::FAILURE }))
        .max()
        .unwrap_or(exit::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(code: Option<i32>) -> NodeRun {
        NodeRun {
            node: "n".into(),
            exit_code: code,
            stdout: String::new(),
            stderr: String::new(),
            timed_out: false,
            error: code.is_none().then(|| "down".into()),
        }
    }

    #[test]
    fn exit_code_is_max_or_partial() {
        assert_eq!(run_exit_code(&[r(Some(0)), r(Some(7))]), 7);
        assert_eq!(run_exit_code(&[r(Some(0)), r(None)]), 3);
        assert_eq!(run_exit_code(&[r(None)]), 1);
        assert_eq!(run_exit_code(&[r(Some(0))]), 0);
        assert_eq!(run_exit_code(&[r(Some(-1))]), 1);
        assert_eq!(run_exit_code(&[r(Some(0)), r(Some(300))]), 255);
    }
}
