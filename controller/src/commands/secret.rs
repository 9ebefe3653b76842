//! `controller secret detect|create|show|list|delete|write`: the secrets on
//! this machine. Finds provider secrets (files, env vars, ~/.ssh key pairs),
//! saves them to `~/.rh/secrets`, and writes them into provider files
//! (merged, atomic, 0600). Values are printed only with `--reveal`; errors and
//! conflicts name files and keys, never values.

use std::collections::BTreeMap;

use anyhow::{bail, Context as _, Result};
use common::apply::{overall, write_files, FileStatus};
use common::fsutil::PathError;
use common::names::{validate_env_var_name, validate_secret_name};
use common::placement::{place, Files, PlaceOpts, Vars};
use common::policy::{Origin, Policy, Reach, Refused};
use common::providers::{self, ProviderError};
use common::store;
use common::wire::DEFAULT_ENV;
use common::{Secret, SecretValue, Values};
use serde_json::{json, Value};

use crate::cli::{
    CreateArgs, DeleteArgs, DetectArgs, ListArgs, SecretCommand, SecretRef, ShowArgs, WriteArgs,
};
use crate::exit::{self, UsageError};
use crate::given::{extract_or_explain, given_one, read_json_input, user_path, REDACTED};
use crate::local_secrets;
use crate::mint::SessionSecret;
use crate::outcome::file_status_cell;
use crate::output::{print_json, Table};
use crate::Context;
use common::session::{SessionKind, SessionSpec};

/// Run one `secret` subcommand.
pub fn run(command: SecretCommand, ctx: &Context) -> Result<u8> {
    match command {
        SecretCommand::Detect(args) => detect(&args, ctx),
        SecretCommand::Create(args) => create(&args, ctx),
        SecretCommand::Show(args) => show(&args, ctx),
        SecretCommand::List(args) => list(&args, ctx),
        SecretCommand::Delete(args) => delete(&args, ctx),
        SecretCommand::Write(args) => write(&args, ctx),
    }
}

/// One secret as printed: `{"name","provider","path","env_vars","values"}`.
fn entry_json(secret: &Secret, reveal: bool) -> Value {
    let values: serde_json::Map<String, Value> = secret
        .values
        .iter()
        .map(|(k, v)| {
            let shown = if reveal {
                v.expose_secret().clone()
            } else {
                Value::String(REDACTED.into())
            };
            (k.clone(), shown)
        })
        .collect();
    json!({
        "name": secret.name,
        "provider": secret.provider,
        "path": secret.path,
        "env_vars": secret.env_vars,
        "values": values,
    })
}

/// Where a secret comes from, for tables.
fn source_of(secret: &Secret) -> String {
    match (&secret.path, &secret.env_vars) {
        (Some(path), _) => path.clone(),
        (None, Some(vars)) => format!(
            "env {}",
            vars.values().cloned().collect::<Vec<_>>().join(" ")
        ),
        (None, None) => "-".to_owned(),
    }
}

/// A value for a `--reveal` text listing: the string itself when it is one
/// line, else JSON.
fn revealed(value: &SecretValue) -> String {
    match value.expose_str() {
        Some(s) if !s.contains('\n') => s.to_owned(),
        _ => value.expose_secret().to_string(),
    }
}

fn print_values(secret: &Secret, reveal: bool) {
    for (key, value) in &secret.values {
        if reveal {
            println!("  {key}: {}", revealed(value));
        } else {
            println!("  {key}: {REDACTED}");
        }
    }
}

fn check_provider_filter(ids: &[String]) -> Result<()> {
    for id in ids {
        providers::builtin(id).map_err(|e| UsageError(e.to_string()))?;
    }
    Ok(())
}

fn detect(args: &DetectArgs, ctx: &Context) -> Result<u8> {
    check_provider_filter(&args.providers)?;
    let found = local_secrets::detect(ctx, &args.providers);
    for warning in &found.warnings {
        eprintln!("warning: {warning}");
    }
    // AWS profiles without static keys: session secrets (minted at sync).
    let wanted = |id: &str| args.providers.is_empty() || args.providers.iter().any(|p| p == id);
    let sessions: Vec<SessionSecret> = crate::mint::detect(ctx)
        .into_iter()
        .filter(|s| wanted(s.kind.as_str()) && !found.secrets.iter().any(|f| f.name == s.name))
        .collect();
    if args.output.json {
        let mut map: serde_json::Map<String, Value> = found
            .secrets
            .iter()
            .map(|s| (s.name.clone(), entry_json(s, args.reveal)))
            .collect();
        for s in &sessions {
            map.insert(s.name.clone(), session_json(s, ctx));
        }
        print_json(&map)?;
        return Ok(exit::OK);
    }
    if found.secrets.is_empty() && sessions.is_empty() {
        eprintln!("no provider secrets found");
        return Ok(exit::OK);
    }
    if args.reveal {
        for s in &found.secrets {
            println!(
                "{} ({}, {})",
                s.name,
                s.provider.as_deref().unwrap_or("-"),
                source_of(s)
            );
            print_values(s, true);
        }
        return Ok(exit::OK);
    }
    let mut table = Table::new(&["name", "provider", "source", "keys"]);
    for s in &found.secrets {
        table.row(vec![
            s.name.clone(),
            s.provider.clone().unwrap_or_default(),
            source_of(s),
            s.keys().join(", "),
        ]);
    }
    for s in &sessions {
        table.row(vec![
            s.name.clone(),
            s.kind.as_str().to_owned(),
            s.source_cell(ctx),
            s.keys_cell(),
        ]);
    }
    table.print()?;
    Ok(exit::OK)
}

/// Values given on the command line (`--value`, `--values-json`), if any.
fn explicit_values(args: &CreateArgs, ctx: &Context) -> Result<Option<Values>> {
    if args.values.is_empty() && args.values_json.is_none() {
        return Ok(None);
    }
    let mut values = Values::new();
    if let Some(source) = &args.values_json {
        let Value::Object(map) = read_json_input(ctx, source, "--values-json")? else {
            return Err(UsageError("--values-json: expected a JSON object".into()).into());
        };
        values.extend(map.into_iter().map(|(k, v)| (k, SecretValue::new(v))));
    }
    for pair in &args.values {
        match pair.split_once('=') {
            Some((key, value)) if !key.is_empty() => {
                values.insert(key.to_owned(), SecretValue::from(value));
            }
            _ => return Err(UsageError("--value expects KEY=VALUE".into()).into()),
        }
    }
    Ok(Some(values))
}

/// `--env-var KEY=VAR` pairs, if any.
fn env_var_map(args: &CreateArgs) -> Result<Option<BTreeMap<String, String>>> {
    if args.env_vars.is_empty() {
        return Ok(None);
    }
    let mut map = BTreeMap::new();
    for pair in &args.env_vars {
        let Some((key, var)) = pair.split_once('=').filter(|(k, _)| !k.is_empty()) else {
            return Err(UsageError(format!("--env-var expects KEY=VAR, got {pair:?}")).into());
        };
        validate_env_var_name(var).map_err(|e| UsageError(e.to_string()))?;
        map.insert(key.to_owned(), var.to_owned());
    }
    Ok(Some(map))
}

/// The JSON of a session secret in listings: the shape of a secret with
/// no values, plus `"session"` (how it is minted).
fn session_json(s: &SessionSecret, ctx: &Context) -> Value {
    json!({
        "name": s.name,
        "provider": s.kind.as_str(),
        "path": null,
        "env_vars": null,
        "values": {},
        "session": {
            "kind": s.spec.detected.clone().unwrap_or_else(|| "created".into()),
            "source": s.source_cell(ctx),
            "spec": s.spec,
        },
    })
}

/// `secret create NAME --provider aws|gcp --session ...`: saves how to mint.
fn create_session(args: &CreateArgs, ctx: &Context) -> Result<u8> {
    let name = args.name.as_str();
    let usage = |m: &str| anyhow::Error::new(UsageError(m.to_owned()));
    let provider = args
        .provider
        .as_deref()
        .ok_or_else(|| usage("--session needs --provider aws or --provider gcp"))?;
    let kind = SessionKind::of_provider(provider)
        .ok_or_else(|| usage("--session is for --provider aws or --provider gcp"))?;
    if store::exists(&ctx.home, name) && !args.force {
        bail!("secret {name} already exists in ~/.rh/secrets; use --force to replace it");
    }
    let s = &args.session;
    let duration_secs = s.duration;
    match kind {
        SessionKind::Aws if s.impersonate.is_some() || !s.scopes.is_empty() => {
            return Err(usage("--impersonate and --scopes are for gcp sessions"));
        }
        SessionKind::Gcp if s.profile.is_some() || s.role_arn.is_some() || s.duration.is_some() => {
            return Err(usage(
                "--profile, --role-arn and --duration are for aws sessions (gcp mints 1 h tokens)",
            ));
        }
        _ => {}
    }
    if let Some(p) = &s.profile {
        common::session::validate_profile(name, p).map_err(|e| usage(&e.to_string()))?;
    }
    let spec = SessionSpec {
        profile: s.profile.clone(),
        role_arn: s.role_arn.clone(),
        duration_secs,
        impersonate: s.impersonate.clone(),
        scopes: s.scopes.clone(),
        path: None,
        detected: None,
    };
    store::save_session(&ctx.home, name, provider, &spec)
        .with_context(|| format!("save secret {name}"))?;
    let secret = SessionSecret {
        name: name.to_owned(),
        kind,
        spec,
    };
    if args.output.json {
        print_json(&session_json(&secret, ctx))?;
    } else {
        println!(
            "saved session secret {name} ({provider}, {}; {}) to ~/.rh/secrets/{name}.json:              minted on this machine at each sync, never copied",
            secret.source_cell(ctx),
            secret.keys_cell()
        );
    }
    Ok(exit::OK)
}

fn create(args: &CreateArgs, ctx: &Context) -> Result<u8> {
    let name = args.name.as_str();
    validate_secret_name(name).map_err(|e| UsageError(e.to_string()))?;
    if args.session.session {
        return create_session(args, ctx);
    }
    let explicit = explicit_values(args, ctx)?;
    let env_map = env_var_map(args)?;
    let path = args
        .path
        .as_deref()
        .map(|p| user_path(ctx, p))
        .transpose()?;
    if store::exists(&ctx.home, name) && !args.force {
        bail!("secret {name} already exists in ~/.rh/secrets; use --force to replace it");
    }
    let secret = match args.provider.as_deref() {
        None => {
            let values = explicit.ok_or_else(|| {
                UsageError(
                    "a base secret needs values: give --value KEY=VALUE or --values-json FILE|- \
                     (or --provider P to extract a provider's credentials)"
                        .into(),
                )
            })?;
            Secret {
                name: name.to_owned(),
                provider: None,
                path,
                env_vars: env_map,
                values,
            }
        }
        Some(id) => {
            let builtin = providers::lookup(id);
            if builtin.is_none() {
                if explicit.is_none() && path.is_none() && env_map.is_none() {
                    let err = providers::builtin(id).unwrap_err();
                    return Err(UsageError(format!(
                        "{err}; a custom provider needs --value, --values-json or --path"
                    ))
                    .into());
                }
                eprintln!(
                    "note: {id:?} is not a builtin provider; saving a generic provider secret"
                );
            }
            match explicit {
                Some(values) => Secret {
                    name: name.to_owned(),
                    provider: Some(id.to_owned()),
                    path,
                    env_vars: env_map,
                    values,
                },
                None => extract_or_explain(ctx, id, name, path.as_deref(), env_map.as_ref())?,
            }
        }
    };
    if let Some(p) = secret.provider.as_deref().and_then(providers::lookup) {
        p.validate(&secret.values)
            .map_err(|e| UsageError(e.to_string()))?;
    }
    store::save(&ctx.home, &secret).with_context(|| format!("save secret {name}"))?;
    if args.output.json {
        print_json(&entry_json(&secret, false))?;
    } else {
        let mut what = vec![match &secret.provider {
            Some(p) => format!("provider {p}"),
            None => "base secret".to_owned(),
        }];
        if secret.path.is_some() || secret.env_vars.is_some() {
            what.push(format!("source {}", source_of(&secret)));
        }
        what.push(format!("keys {}", secret.keys().join(", ")));
        println!(
            "saved secret {name} ({}) to ~/.rh/secrets/{name}.json",
            what.join("; ")
        );
    }
    Ok(exit::OK)
}

/// A saved secret (values filled in when the file kept none), else a detected one.
fn load_or_detect(ctx: &Context, name: &str) -> Result<Secret> {
    validate_secret_name(name).map_err(|e| UsageError(e.to_string()))?;
    local_secrets::one(ctx, name)?
        .with_context(|| format!("no saved or detected secret named {name}"))
}

/// The secret a `show`/`write` is about: given as JSON, else saved or detected.
fn named_or_given(ctx: &Context, secret: &SecretRef) -> Result<Secret> {
    match (&secret.secret_json, &secret.name) {
        (Some(source), _) => given_one(ctx, source),
        (None, Some(name)) => load_or_detect(ctx, name),
        (None, None) => Err(UsageError("give NAME or --secret-json".into()).into()),
    }
}

fn show(args: &ShowArgs, ctx: &Context) -> Result<u8> {
    let secret = named_or_given(ctx, &args.secret)?;
    if args.output.json {
        print_json(&entry_json(&secret, args.reveal))?;
        return Ok(exit::OK);
    }
    println!("name:      {}", secret.name);
    println!(
        "provider:  {}",
        secret.provider.as_deref().unwrap_or("(base secret)")
    );
    println!("path:      {}", secret.path.as_deref().unwrap_or("-"));
    if let Some(vars) = &secret.env_vars {
        let vars: Vec<_> = vars.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!("env vars:  {}", vars.join(" "));
    }
    println!("values:");
    print_values(&secret, args.reveal);
    Ok(exit::OK)
}

fn list(args: &ListArgs, ctx: &Context) -> Result<u8> {
    let secrets = store::list(&ctx.home).context("list ~/.rh/secrets")?;
    // Session secrets (no values: minted at each sync).
    let sessions = crate::local_secrets::sessions(ctx, &|_| true);
    let session = |name: &str| sessions.iter().find(|s| s.name == name);
    if args.output.json {
        let rows: Vec<Value> = secrets
            .iter()
            .map(|s| match session(&s.name) {
                Some(sess) => session_json(sess, ctx),
                None => json!({"name": s.name, "provider": s.provider, "path": s.path,
                       "env_vars": s.env_vars, "keys": s.keys()}),
            })
            .collect();
        print_json(&rows)?;
        return Ok(exit::OK);
    }
    if secrets.is_empty() {
        eprintln!(
            "no saved secrets (see `controller secret detect` and `controller secret create`)"
        );
        return Ok(exit::OK);
    }
    let mut table = Table::new(&["name", "provider", "source", "keys"]);
    for s in &secrets {
        let (source, keys) = match session(&s.name) {
            Some(sess) => (sess.source_cell(ctx), sess.keys_cell()),
            None => (source_of(s), s.keys().join(", ")),
        };
        table.row(vec![
            s.name.clone(),
            s.provider.clone().unwrap_or_else(|| "-".into()),
            source,
            keys,
        ]);
    }
    table.print()?;
    Ok(exit::OK)
}

fn delete(args: &DeleteArgs, ctx: &Context) -> Result<u8> {
    validate_secret_name(&args.name).map_err(|e| UsageError(e.to_string()))?;
    store::delete(&ctx.home, &args.name)?;
    println!(
        "deleted secret {} (its credential files are left in place)",
        args.name
    );
    Ok(exit::OK)
}

fn write(args: &WriteArgs, ctx: &Context) -> Result<u8> {
    let secret = named_or_given(ctx, &args.secret)?;
    if secret.values.is_empty() {
        bail!("secret {} has no values to write", secret.name);
    }
    let provider = providers::for_secret(secret.provider.as_deref());
    let path = args
        .path
        .as_deref()
        .map(|p| user_path(ctx, p))
        .transpose()?;
    let no_file = path.is_none()
        && secret.path.is_none()
        && provider.default_path().is_none()
        && provider.id() != "ssh";
    if no_file {
        if provider.id() != "generic" {
            let vars: Vec<_> = provider.env_vars().iter().map(|(_, v)| *v).collect();
            bail!(
                "{} keeps its values in environment variables ({}), so there is no file to write; \
                 give --path FILE to write them as a JSON file",
                provider.id(),
                vars.join(", ")
            );
        }
        bail!(
            "secret {} has no file; give --path FILE to write its values as a JSON file",
            secret.name
        );
    }
    // The agent's confinement and link rules: a file (or a symlink on its
    // way) leading out of home is refused unless --path named it explicitly.
    // Where its files are, and its values checked by its provider.
    let placed = place(
        &secret,
        &PlaceOpts {
            path: path.as_deref(),
            files: Files::Yes,
            env: DEFAULT_ENV,
            vars: Vars::No,
        },
    )?;
    // The deny-list holds for paths the user gives too (and for where they lead).
    let policy = Policy::default();
    let canon_home = ctx.home.canonicalize().unwrap_or_else(|_| ctx.home.clone());
    let reach = if path.is_some() {
        Reach::Named
    } else {
        Reach::Home
    };
    let files = placed
        .paths()
        .into_iter()
        .map(|display| {
            let file = policy.may_write(
                &ctx.home,
                &canon_home,
                &secret,
                &display,
                Origin::Local,
                reach,
            );
            file.map_err(|e| match e {
                Refused::Policy(e) => anyhow::Error::new(e),
                Refused::Path(
                    e @ (PathError::OutsideHome { .. } | PathError::SymlinkEscape { .. }),
                ) => anyhow::Error::new(e).context(format!(
                    "write secret {}: give --path {display} to write there explicitly",
                    secret.name
                )),
                Refused::Path(e) => {
                    anyhow::Error::new(e).context(format!("write secret {}", secret.name))
                }
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let outcomes = write_files(provider, &files, &secret.values, args.overwrite, false)
        .map_err(|e: ProviderError| anyhow::Error::new(e))
        .with_context(|| format!("write secret {}", secret.name))?;
    let status = overall(&outcomes);
    if args.output.json {
        print_json(&json!({"name": secret.name, "status": status, "files": outcomes}))?;
    } else {
        let mut table = Table::new(&["file", "status"]);
        for o in &outcomes {
            table.row(vec![
                o.path.clone(),
                file_status_cell(o.status, &o.conflict_keys),
            ]);
        }
        table.print()?;
    }
    if status == FileStatus::Conflict {
        for o in outcomes.iter().filter(|o| o.status == FileStatus::Conflict) {
            eprintln!(
                "error: {} holds other values for {}; nothing was written (use --overwrite to replace them)",
                o.path,
                o.conflict_keys.join(", ")
            );
        }
        return Ok(exit::FAILURE);
    }
    Ok(exit::OK)
}
