//! `controller login` and `controller logout`.
//!
//! Login checks the servers (`/v1/sys/health` on each URL), the token
//! (`lookup-self`) and the mount before saving anything, then saves the
//! `"vault"` section of `~/.rh/config` and the token (`~/.rh/vault-token`,
//! 0600); `--upload` pushes every saved and detected secret, `--download`
//! pulls every remote one and writes its provider files (merged, conflicts
//! reported, never clobbered).
//! Logout asks, per saved or detected secret, before removing its files
//! (only its values: other content of a shared file is kept) and its saved
//! copy, then before forgetting the store; `--yes` answers yes to all and a
//! stdin that is not a terminal without `--yes` deletes nothing.
//! Never prints a value or the token.

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;
use std::process::{Command as Process, Stdio};

use anyhow::{Context as _, Result};
use common::apply::{self, FileOutcome, FileStatus, TargetFile};
use common::fsutil;
use common::placement;
use common::policy::{Origin, Reach, Refused};
use common::{providers, SecretText};
use serde::Serialize;

use crate::cli::{LoginArgs, LogoutArgs};
use crate::exit;
use crate::local_secrets::LocalSecrets;
use crate::outcome::file_status_cell;
use crate::outcome::outcome_table;
use crate::output::{print_json, Table};
use crate::vault::client::{Health, TokenInfo};
use crate::vault::config::{self, ConfigError, Token, TokenSource};
use crate::vault::{self, local, Outcome, VaultClient, VaultConfig};
use crate::Context;
use common::Secret;

/// Read a token on stdin (without echo on a terminal).
fn read_token(url: &str) -> Result<Token> {
    let stdin = std::io::stdin();
    let tty = stdin.is_terminal();
    let stty = |arg: &str| {
        let _ = Process::new("stty")
            .arg(arg)
            .stdin(Stdio::inherit())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    };
    if tty {
        eprint!("Token for {url}: ");
        let _ = std::io::stderr().flush();
        stty("-echo");
    }
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    if tty {
        stty("echo");
        eprintln!();
    }
    let line = SecretText::new(line);
    read.context("cannot read the token on stdin")?;
    let token = Token::new(line.expose_secret());
    if token.is_empty() {
        anyhow::bail!("no token given: set VAULT_TOKEN or type the token when asked");
    }
    Ok(token)
}

#[derive(Serialize)]
struct FileRow {
    secret: String,
    #[serde(flatten)]
    outcome: FileOutcome,
}

#[derive(Serialize)]
struct LoginDoc {
    servers: Vec<Health>,
    token: TokenInfo,
    config: String,
    mount: String,
    prefix: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    upload: Option<Vec<Outcome>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    download: Option<Vec<Outcome>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    files: Vec<FileRow>,
}

/// Run `controller login`.
pub async fn run_login(args: LoginArgs, ctx: &Context) -> Result<u8> {
    let env = |k: &str| ctx.var(k).map(str::to_owned);
    let config = match VaultConfig::resolve(&ctx.home, &env, &args.urls, None) {
        Ok(c) => c,
        Err(ConfigError::NoToken { .. }) => {
            let shown = args
                .urls
                .first()
                .cloned()
                .or_else(|| env("VAULT_ADDR"))
                .unwrap_or_else(|| "the remote store".into());
            // Waits on the terminal: off the runtime's threads.
            let token = tokio::task::spawn_blocking(move || read_token(&shown))
                .await
                .context("reading the token")??;
            VaultConfig::resolve(&ctx.home, &env, &args.urls, Some(token))?
        }
        Err(e) => return Err(e.into()),
    };
    let client = VaultClient::new(&config)?;

    // 1. The servers answer, the token is valid, the mount exists.
    let servers = client.health_all().await;
    let serving = servers
        .iter()
        .any(|h| matches!(h.state.as_str(), "active" | "standby" | "perf-standby"));
    if !serving {
        let details: Vec<String> = servers
            .iter()
            .map(|h| {
                format!(
                    "{}: {}{}",
                    h.url,
                    h.state,
                    h.detail
                        .as_deref()
                        .map(|d| format!(" ({d})"))
                        .unwrap_or_default()
                )
            })
            .collect();
        anyhow::bail!(
            "no server of the remote store is ready; nothing saved: {}",
            details.join("; ")
        );
    }
    let token_info = client
        .lookup_self()
        .await
        .context("checking the token; nothing saved")?;
    client
        .check_mount()
        .await
        .context("checking the KV mount; nothing saved")?;

    // 2. Save the configuration and the token.
    let config_file = config::save_stored(&ctx.home, &config.to_stored())?;
    if config.token_source != TokenSource::File {
        config::save_token(&ctx.home, &config.token)?;
    }
    if !args.output.json {
        let mut table = Table::new(&["server", "state", "version"]);
        for h in &servers {
            let state = match &h.detail {
                Some(d) => format!("{} ({d})", h.state),
                None => h.state.clone(),
            };
            table.row(vec![
                h.url.clone(),
                state,
                h.version.clone().unwrap_or_else(|| "-".into()),
            ]);
        }
        table.print()?;
        println!(
            "logged in as {} (policies: {}); store {}/{}; config saved to {}; token in {}",
            token_info.display_name.as_deref().unwrap_or("?"),
            token_info.policies.join(", "),
            config.mount,
            config.prefix,
            fsutil::tilde_path(&ctx.home, &config_file),
            fsutil::tilde_path(&ctx.home, &config::token_path(&ctx.home)),
        );
    }

    let mut failed = false;
    // 3. Upload: every saved and detected secret.
    let upload = if args.upload {
        let secrets = LocalSecrets::load(ctx)?.all();
        let outcomes = vault::push(&client, &config, &ctx.home, &secrets, false).await?;
        failed |= outcomes.iter().any(|o| o.status.is_failure());
        if !args.output.json {
            println!("\nupload:");
            if outcomes.is_empty() {
                println!("no saved or detected secret to upload");
            } else {
                outcome_table(&outcomes).print()?;
            }
        }
        Some(outcomes)
    } else {
        None
    };

    // 4. Download: every remote secret, then its files.
    let mut files = Vec::new();
    let download = if args.download {
        let names = client.list().await?;
        let (outcomes, pulled) = vault::pull(&client, &config, &ctx.home, &names, false).await?;
        failed |= outcomes.iter().any(|o| o.status.is_failure());
        for secret in &pulled {
            match write_secret_files(&ctx.home, secret) {
                Ok(Some(outs)) => {
                    failed |= apply::overall(&outs) == FileStatus::Conflict;
                    files.extend(outs.into_iter().map(|outcome| FileRow {
                        secret: secret.name.clone(),
                        outcome,
                    }));
                }
                Ok(None) => {}
                Err(e) => {
                    failed = true;
                    eprintln!("error: writing the files of {}: {e:#}", secret.name);
                }
            }
        }
        if !args.output.json {
            println!("\ndownload:");
            if outcomes.is_empty() {
                println!("no secret in the remote store");
            } else {
                outcome_table(&outcomes).print()?;
            }
            if !files.is_empty() {
                println!();
                let mut table = Table::new(&["secret", "file", "status", "detail"]);
                for f in &files {
                    table.row(vec![
                        f.secret.clone(),
                        f.outcome.path.clone(),
                        file_status_cell(f.outcome.status, &f.outcome.conflict_keys),
                        if f.outcome.conflict_keys.is_empty() {
                            String::new()
                        } else {
                            format!(
                                "keys {} differ: kept the file as it is (`controller secret write {} --overwrite` replaces them)",
                                f.outcome.conflict_keys.join(", "),
                                f.secret
                            )
                        },
                    ]);
                }
                table.print()?;
            }
        }
        Some(outcomes)
    } else {
        None
    };

    if args.output.json {
        print_json(&LoginDoc {
            servers,
            token: token_info,
            config: fsutil::tilde_path(&ctx.home, &config_file),
            mount: config.mount.clone(),
            prefix: config.prefix.clone(),
            upload,
            download,
            files,
        })?;
    }
    Ok(if failed { exit::FAILURE } else { exit::OK })
}

/// The files of a secret, confined to home and checked by the placement
/// policy as paths of `origin` (a download: [`Origin::Remote`]), and where
/// they resolve to (a symlink in home cannot lead to a denied file); `None`
/// for a secret without files.
fn target_files(home: &Path, secret: &Secret, origin: Origin) -> Result<Option<Vec<TargetFile>>> {
    let Some(paths) = placement::files_of(secret, None)? else {
        return Ok(None);
    };
    let policy = local::policy(home)?;
    let canon_home = home.canonicalize().unwrap_or_else(|_| home.to_path_buf());
    let mut files = Vec::with_capacity(paths.len());
    for display in paths {
        match policy.may_write(home, &canon_home, secret, &display, origin, Reach::Home) {
            Ok(file) => files.push(file),
            Err(Refused::Policy(e)) => return Err(e.into()),
            Err(Refused::Path(e)) => {
                return Err(
                    anyhow::Error::new(e).context(format!("path of {} refused", secret.name))
                )
            }
        }
    }
    Ok(Some(files))
}

/// Write a pulled secret's provider files (merge, no overwrite).
fn write_secret_files(home: &Path, secret: &Secret) -> Result<Option<Vec<FileOutcome>>> {
    let Some(files) = target_files(home, secret, Origin::Remote)? else {
        return Ok(None);
    };
    let provider = providers::for_secret(secret.provider.as_deref());
    // Values from the store are untrusted: the provider's checks first.
    provider.validate(&secret.values)?;
    Ok(Some(apply::write_files(
        provider,
        &files,
        &secret.values,
        false,
        false,
    )?))
}

/// Ask a yes/no question on stderr; `yes` answers without asking.
fn confirm(question: &str, yes: bool) -> bool {
    if yes {
        eprintln!("{question} [y/N] y (--yes)");
        return true;
    }
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    if std::io::stdin().lock().read_line(&mut line).is_err() {
        return false;
    }
    matches!(line.trim().to_lowercase().as_str(), "y" | "yes")
}

/// Run `controller logout`.
pub fn run_logout(args: LogoutArgs, ctx: &Context) -> Result<u8> {
    let home = &ctx.home;
    if !args.yes && !std::io::stdin().is_terminal() {
        eprintln!(
            "stdin is not a terminal and --yes was not given: nothing deleted \
             (run `controller logout` in a terminal, or `controller logout --yes`)"
        );
        return Ok(exit::OK);
    }
    let local_secrets = LocalSecrets::load(ctx)?;
    let mut failed = false;
    for secret in &local_secrets.all() {
        let is_saved = local_secrets.is_saved(&secret.name);
        let files: Vec<TargetFile> = match target_files(home, secret, Origin::Local) {
            Ok(Some(files)) => files.into_iter().filter(|f| f.path.exists()).collect(),
            Ok(None) => vec![],
            Err(e) => {
                eprintln!("warning: {e:#}");
                vec![]
            }
        };
        let vars: Vec<String> = apply::secret_env_vars(secret)
            .into_keys()
            .filter(|var| ctx.var(var).is_some())
            .collect();
        let unset_hint = if vars.is_empty() {
            String::new()
        } else {
            format!(
                "; the controller cannot unset your shell's variables: remove {} yourself (`unset {}`)",
                vars.join(", "),
                vars.join(" ")
            )
        };
        let question = if !files.is_empty() {
            let shown: Vec<&str> = files.iter().map(|f| f.display.as_str()).collect();
            format!(
                "Delete credentials in [{}] for {}?",
                shown.join(", "),
                secret.name
            )
        } else if !vars.is_empty() && is_saved {
            format!(
                "Delete saved secret {} (env vars {})?",
                secret.name,
                vars.join(", ")
            )
        } else if !vars.is_empty() {
            println!(
                "{}: only in your shell environment{unset_hint}",
                secret.name
            );
            continue;
        } else if is_saved {
            format!("Delete saved secret {}?", secret.name)
        } else {
            continue;
        };
        if !confirm(&question, args.yes) {
            println!("{}: kept", secret.name);
            continue;
        }
        if !files.is_empty() {
            let provider = providers::for_secret(secret.provider.as_deref());
            match apply::remove_files(provider, &files, &secret.values, false) {
                Ok(outs) => {
                    for o in outs {
                        println!(
                            "{}: {} {}",
                            secret.name,
                            file_status_cell(o.status, &o.conflict_keys),
                            o.path
                        );
                    }
                }
                Err(e) => {
                    failed = true;
                    eprintln!("error: removing the files of {}: {e}", secret.name);
                    continue;
                }
            }
        }
        if is_saved {
            match local::delete(home, &secret.name) {
                Ok(()) => println!("{}: deleted saved secret", secret.name),
                Err(e) => {
                    failed = true;
                    eprintln!("error: deleting saved secret {}: {e}", secret.name);
                }
            }
        }
        if !vars.is_empty() {
            println!("{}: still set in your shell{unset_hint}", secret.name);
        }
    }
    let has_config = config::load_stored(home).ok().flatten().is_some()
        || config::token_path(home).exists()
        || vault::state_path(home).exists();
    if has_config
        && confirm(
            "Delete the remote store config (~/.rh/config vault section, ~/.rh/vault-token, ~/.rh/vault-state.json)?",
            args.yes,
        )
    {
        config::remove_stored(home)?;
        fsutil::remove_file(&config::token_path(home))?;
        fsutil::remove_file(&vault::state_path(home))?;
        println!("remote store config deleted");
    }
    Ok(if failed { exit::FAILURE } else { exit::OK })
}
