//! What the user hands the controller on the command line: paths they
//! typed (resolved against home and the current directory), JSON documents
//! given as FILE or `-` (stdin), and whole secrets given with
//! `--secret-json` (checked as `secret create` checks its arguments, values
//! extracted when left out). Used by `secret`, `sync` and `send`; never
//! echoes a value: errors name the flag, the entry and the position.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use anyhow::{bail, Context as _, Result};
use common::extract::extract;
use common::fsutil::{expand_home, tilde_path};
use common::names::{validate_env_var_name, validate_secret_name};
use common::providers::{self, Provider};
use common::Secret;
use serde_json::Value;

use crate::exit::UsageError;
use crate::local_secrets::with_sources;
use crate::Context;

/// How `secret show --json` writes a value it does not reveal.
pub(crate) const REDACTED: &str = "<redacted>";

/// Resolve a user-given path: `~/x` and absolute paths as they are, relative
/// paths against the current directory; returned in `~/...` form when under home.
pub(crate) fn user_path(ctx: &Context, path: &str) -> Result<String> {
    if path.is_empty() {
        return Err(UsageError("--path is empty".into()).into());
    }
    let full = if path == "~" || path.starts_with("~/") {
        expand_home(&ctx.home, path)
    } else if Path::new(path).is_absolute() {
        Path::new(path).to_path_buf()
    } else {
        std::env::current_dir()
            .context("current directory")?
            .join(path)
    };
    Ok(tilde_path(&ctx.home, &full))
}

/// A JSON document given as FILE or `-` (stdin) to `flag`. It carries
/// values: the text is held as a [`common::SecretText`] and errors name the
/// flag and the position, never the content.
pub(crate) fn read_json_input(ctx: &Context, source: &str, flag: &str) -> Result<Value> {
    let mut text = String::new();
    if source == "-" {
        std::io::stdin()
            .read_to_string(&mut text)
            .with_context(|| format!("read {flag} from stdin"))?;
    } else {
        let path = expand_home(&ctx.home, &user_path(ctx, source)?);
        text = std::fs::read_to_string(&path)
            .with_context(|| format!("read {flag} {}", path.display()))?;
    }
    let text = common::SecretText::new(text);
    serde_json::from_str(text.expose_secret()).map_err(|e| {
        UsageError(format!(
            "{flag}: invalid JSON ({:?} error at line {} column {})",
            e.classify(),
            e.line(),
            e.column()
        ))
        .into()
    })
}

/// The secrets given with `--secret-json` (one object or an array, in the
/// shape `secret show --json` prints), checked as `secret create` checks
/// its arguments; an entry without values gets them extracted from its
/// path, env vars or the provider's defaults. Never echoes a value.
pub(crate) fn given_secrets(ctx: &Context, source: &str) -> Result<Vec<Secret>> {
    let entries = match read_json_input(ctx, source, "--secret-json")? {
        Value::Array(items) if !items.is_empty() => items,
        one @ Value::Object(_) => vec![one],
        _ => {
            return Err(UsageError(
                "--secret-json: expected a JSON object or a non-empty array of objects".into(),
            )
            .into())
        }
    };
    entries
        .into_iter()
        .enumerate()
        .map(|(i, entry)| given_secret(ctx, entry, i))
        .collect()
}

/// One `--secret-json` entry, checked and filled in.
fn given_secret(ctx: &Context, entry: Value, index: usize) -> Result<Secret> {
    // serde's own message can quote a value ("invalid type: string ..."): not shown.
    let mut secret: Secret = serde_json::from_value(entry).map_err(|_| {
        UsageError(format!(
            "--secret-json: entry {index} is not a secret: expected {{\"name\": string, \
             \"provider\", \"path\": string or null, \"env_vars\": {{KEY: VAR}} or null, \
             \"values\": {{KEY: value}}}}"
        ))
    })?;
    let usage = |e: &dyn std::fmt::Display| UsageError(format!("--secret-json: {e}"));
    validate_secret_name(&secret.name).map_err(|e| usage(&e))?;
    if let Some(id) = &secret.provider {
        common::names::validate_provider_id(id).map_err(|e| usage(&e))?;
    }
    for var in secret.env_vars.iter().flat_map(|m| m.values()) {
        validate_env_var_name(var).map_err(|e| usage(&e))?;
    }
    if let Some(path) = &secret.path {
        secret.path = Some(user_path(ctx, path)?);
    }
    if secret
        .values
        .values()
        .any(|v| v.expose_str() == Some(REDACTED))
    {
        return Err(usage(&format_args!(
            "the values of secret {} are {REDACTED}: give `secret show --json --reveal` output, \
             or leave \"values\" out to extract them",
            secret.name
        ))
        .into());
    }
    if secret.values.is_empty() {
        let Some(id) = secret.provider.clone() else {
            return Err(usage(&format_args!(
                "base secret {} has no values (give \"values\", or a \"provider\" to extract them)",
                secret.name
            ))
            .into());
        };
        let name = secret.name.clone();
        return extract_or_explain(
            ctx,
            &id,
            &name,
            secret.path.as_deref(),
            secret.env_vars.as_ref(),
        );
    }
    if let Some(p) = secret.provider.as_deref().and_then(providers::lookup) {
        p.validate(&secret.values).map_err(|e| usage(&e))?;
    }
    Ok(secret)
}

/// Extract provider `id`'s secret `name` (from `path`, `env`, or the
/// provider's defaults), or say where it looked.
pub(crate) fn extract_or_explain(
    ctx: &Context,
    id: &str,
    name: &str,
    path: Option<&str>,
    env: Option<&BTreeMap<String, String>>,
) -> Result<Secret> {
    match with_sources(ctx, |src| extract(src, id, Some(name), path, env))? {
        Some(secret) => Ok(secret),
        None => {
            let p = providers::for_secret(Some(id));
            bail!(
                "no {id} credentials found ({}); give --path, --env-var KEY=VAR or --value KEY=VALUE",
                looked_at(p, name, path, env)
            );
        }
    }
}

/// Where extraction looked, for the "nothing found" message.
fn looked_at(
    p: &dyn Provider,
    name: &str,
    path: Option<&str>,
    env: Option<&BTreeMap<String, String>>,
) -> String {
    if let Some(path) = path {
        return format!("nothing at {}", p.files(path).join(" and "));
    }
    if let Some(env) = env {
        return format!(
            "not every variable is set: {}",
            env.values().cloned().collect::<Vec<_>>().join(", ")
        );
    }
    let mut parts = Vec::new();
    let file = p.default_path().map(str::to_owned).or_else(|| {
        (p.id() == "ssh").then(|| format!("~/.ssh/{}", name.strip_prefix("ssh-").unwrap_or(name)))
    });
    if let Some(file) = file {
        parts.push(format!("no file at {}", p.files(&file).join(" and ")));
    }
    if !p.env_vars().is_empty() {
        let vars: Vec<_> = p.env_vars().iter().map(|(_, v)| *v).collect();
        parts.push(format!("not every variable is set: {}", vars.join(", ")));
    }
    parts.join("; ")
}

/// The one secret given with `--secret-json` (a usage error for several).
pub(crate) fn given_one(ctx: &Context, source: &str) -> Result<Secret> {
    let mut given = given_secrets(ctx, source)?;
    if given.len() != 1 {
        return Err(UsageError("--secret-json: give one secret here".into()).into());
    }
    Ok(given.remove(0))
}
