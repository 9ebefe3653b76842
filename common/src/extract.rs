//! Finding provider secrets on this machine: from an explicit path, explicit
//! env vars, or the provider's defaults (default file first, then default env
//! vars when every one of them is set), and detection of everything
//! configured (every builtin but ssh/sky, plus every `~/.ssh/NAME` with a
//! `NAME.pub`). Reads files and the environment through [`Sources`] so tests
//! and the controller choose the home and variables. Never logs, never writes.

use std::collections::BTreeMap;
use std::path::Path;

use crate::fsutil::{self, expand_home, tilde_path};
use crate::model::Secret;
use crate::providers::{self, Provider, ProviderError, SourceFile};
use crate::secret_value::{SecretValue, Values};

/// Where secrets are looked for: a home directory and an environment.
pub struct Sources<'a> {
    pub home: &'a Path,
    pub env: &'a dyn Fn(&str) -> Option<String>,
}

impl std::fmt::Debug for Sources<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sources")
            .field("home", &self.home)
            .finish_non_exhaustive()
    }
}

/// The key file of an ssh secret without a path: named by the secret
/// (`ssh-id_rsa` or `id_rsa` -> `~/.ssh/id_rsa`), `~/.ssh/id_rsa` by default.
fn ssh_default(name: Option<&str>) -> String {
    let key = name
        .map(|n| n.strip_prefix("ssh-").unwrap_or(n))
        .unwrap_or("id_rsa");
    format!("~/.ssh/{key}")
}

/// Read a provider's files at `path`; `None` when any of them is missing.
fn from_files(
    src: &Sources<'_>,
    provider: &dyn Provider,
    path: &str,
) -> Result<Option<(String, Values)>, ProviderError> {
    let full = expand_home(src.home, path);
    let display = tilde_path(src.home, &full);
    let names = provider.files(&display);
    let mut texts = Vec::with_capacity(names.len());
    for name in &names {
        // only regular files are read (a FIFO is an error, not a hang)
        match fsutil::explicit(src.home, name)?.read()? {
            Some(text) => texts.push(text),
            None => return Ok(None),
        }
    }
    let files: Vec<_> = names
        .iter()
        .zip(&texts)
        .map(|(path, text)| SourceFile { path, text })
        .collect();
    if !provider.present(&files) {
        return Ok(None);
    }
    Ok(Some((display, provider.parse(&files)?)))
}

/// Values from env vars (key -> VAR); `None` unless every variable is set.
fn from_env(src: &Sources<'_>, map: &BTreeMap<String, String>) -> Option<Values> {
    if map.is_empty() {
        return None;
    }
    map.iter()
        .map(|(key, var)| (src.env)(var).map(|v| (key.clone(), SecretValue::from_string(v))))
        .collect()
}

/// Extract one provider secret. `None` = nothing configured. An explicit
/// `path` or `env_vars` is the one source; with neither, the default file is
/// tried first, then the default env vars (only when every mapped var is set).
/// The secret is named `name`, else the provider id; paths are kept in `~/...`
/// form. An unknown provider id needs a path or env vars (it is then a
/// generic provider secret), else it is [`ProviderError::Unknown`].
pub fn extract(
    src: &Sources<'_>,
    provider: &str,
    name: Option<&str>,
    path: Option<&str>,
    env_vars: Option<&BTreeMap<String, String>>,
) -> Result<Option<Secret>, ProviderError> {
    let builtin = providers::lookup(provider);
    if builtin.is_none() && path.is_none() && env_vars.is_none() {
        providers::builtin(provider)?;
    }
    let p = providers::for_secret(Some(provider));
    let secret =
        |values: Values, path: Option<String>, env: Option<BTreeMap<String, String>>| Secret {
            name: name.unwrap_or(provider).to_owned(),
            provider: Some(provider.to_owned()),
            path,
            env_vars: env,
            values,
        };
    if let Some(path) = path {
        return Ok(
            from_files(src, p, path)?.map(|(display, values)| secret(values, Some(display), None))
        );
    }
    if let Some(map) = env_vars {
        return Ok(from_env(src, map).map(|values| secret(values, None, Some(map.clone()))));
    }
    let default = match (p.default_path(), p.id()) {
        (Some(d), _) => Some(d.to_owned()),
        (None, "ssh") => Some(ssh_default(name)),
        _ => None,
    };
    if let Some(default) = default {
        if let Some((display, values)) = from_files(src, p, &default)? {
            return Ok(Some(secret(values, Some(display), None)));
        }
    }
    let map = providers::env_var_map(p);
    Ok(from_env(src, &map).map(|values| secret(values, None, Some(map))))
}

/// What [`detect`] found, and what it could not read (errors name files, never values).
#[derive(Debug, Default)]
pub struct Detected {
    pub secrets: Vec<Secret>,
    pub warnings: Vec<ProviderError>,
}

/// Every provider secret configured on this machine: each builtin except
/// ssh/sky through [`extract`], then every `~/.ssh/NAME` that has `NAME.pub`
/// as `ssh-NAME` (`sky-key` as `sky`). `only` filters by provider id (empty = all).
pub fn detect(src: &Sources<'_>, only: &[String]) -> Detected {
    let wanted = |id: &str| only.is_empty() || only.iter().any(|o| o == id);
    let mut found = Detected::default();
    for p in providers::PROVIDERS {
        if matches!(p.id(), "ssh" | "sky") || !wanted(p.id()) {
            continue;
        }
        match extract(src, p.id(), None, None, None) {
            Ok(Some(secret)) => found.secrets.push(secret),
            Ok(None) => {}
            Err(e) => found.warnings.push(e),
        }
    }
    if !wanted("ssh") && !wanted("sky") {
        return found;
    }
    let ssh_dir = src.home.join(".ssh");
    let Ok(entries) = std::fs::read_dir(&ssh_dir) else {
        return found;
    };
    let mut keys: Vec<String> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file() || t.is_symlink()))
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| !n.ends_with(".pub") && !n.starts_with('.'))
        .filter(|n| ssh_dir.join(format!("{n}.pub")).is_file())
        .collect();
    keys.sort();
    for key in keys {
        let (provider, name) = if key == "sky-key" {
            ("sky", "sky".to_owned())
        } else {
            ("ssh", format!("ssh-{key}"))
        };
        if !wanted(provider) {
            continue;
        }
        match extract(
            src,
            provider,
            Some(&name),
            Some(&format!("~/.ssh/{key}")),
            None,
        ) {
            Ok(Some(secret)) => found.secrets.push(secret),
            Ok(None) => {}
            Err(e) => found.warnings.push(e),
        }
    }
    found
}

/// Fill in the values of a saved provider secret that has none (the
/// reference's files keep only a path or env vars): from its path, else its
/// env vars. Leaves the values empty when nothing is there.
pub fn fill_values(src: &Sources<'_>, secret: &mut Secret) -> Result<(), ProviderError> {
    if !secret.values.is_empty() || secret.provider.is_none() {
        return Ok(());
    }
    let p = providers::for_secret(secret.provider.as_deref());
    if let Some(path) = secret.path.clone() {
        if let Some((_, values)) = from_files(src, p, &path)? {
            secret.values = values;
            return Ok(());
        }
    }
    let map = secret
        .env_vars
        .clone()
        .unwrap_or_else(|| providers::env_var_map(p));
    if let Some(values) = from_env(src, &map) {
        secret.values = values;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn with_env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn default_file_first_then_env_only_when_all_set() {
        let home = tempfile::tempdir().unwrap();
        let env = with_env(&[("AWS_ACCESS_KEY_ID", "ENVKEY")]);
        let src = Sources {
            home: home.path(),
            env: &env,
        };
        assert!(extract(&src, "aws", None, None, None).unwrap().is_none());
        let env2 = with_env(&[
            ("AWS_ACCESS_KEY_ID", "ENVKEY"),
            ("AWS_SECRET_ACCESS_KEY", "ENVSECRET"),
        ]);
        let src2 = Sources {
            home: home.path(),
            env: &env2,
        };
        let s = extract(&src2, "aws", None, None, None).unwrap().unwrap();
        assert_eq!(s.name, "aws");
        assert_eq!(s.path, None);
        assert_eq!(
            s.env_vars.as_ref().unwrap()["access_key"],
            "AWS_ACCESS_KEY_ID"
        );
        fs::create_dir_all(home.path().join(".aws")).unwrap();
        fs::write(
            home.path().join(".aws/credentials"),
            "[default]\naws_access_key_id = FILEKEY\naws_secret_access_key = FILESECRET\n",
        )
        .unwrap();
        let s = extract(&src2, "aws", Some("mine"), None, None)
            .unwrap()
            .unwrap();
        assert_eq!(
            (s.name.as_str(), s.path.as_deref()),
            ("mine", Some("~/.aws/credentials"))
        );
        assert_eq!(s.values["access_key"].expose_str(), Some("FILEKEY"));
        assert!(s.env_vars.is_none());
    }

    #[test]
    fn unknown_provider_needs_a_source() {
        let home = tempfile::tempdir().unwrap();
        let env = with_env(&[("MY_TOKEN", "t")]);
        let src = Sources {
            home: home.path(),
            env: &env,
        };
        assert!(matches!(
            extract(&src, "acme", None, None, None),
            Err(ProviderError::Unknown { .. })
        ));
        let map = [("token".to_string(), "MY_TOKEN".to_string())].into();
        let s = extract(&src, "acme", None, None, Some(&map))
            .unwrap()
            .unwrap();
        assert_eq!(s.values["token"].expose_str(), Some("t"));
        fs::write(home.path().join("acme.json"), "{\"k\": \"v\"}").unwrap();
        let s = extract(&src, "acme", None, Some("~/acme.json"), None)
            .unwrap()
            .unwrap();
        assert_eq!(s.values["k"].expose_str(), Some("v"));
    }

    #[test]
    fn detect_lists_key_pairs_and_warns_on_malformed_files() {
        let home = tempfile::tempdir().unwrap();
        let ssh = home.path().join(".ssh");
        fs::create_dir_all(&ssh).unwrap();
        for (f, t) in [
            ("id_ed25519", "P"),
            ("id_ed25519.pub", "p"),
            ("sky-key", "S"),
            ("sky-key.pub", "s"),
            ("lonely", "L"),
            ("known_hosts", ""),
        ] {
            fs::write(ssh.join(f), t).unwrap();
        }
        fs::create_dir_all(home.path().join(".aws")).unwrap();
        fs::write(
            home.path().join(".aws/credentials"),
            "[default]\nnot a key line hunter2\n",
        )
        .unwrap();
        let env = with_env(&[("OPENAI_API_KEY", "sk-x")]);
        let src = Sources {
            home: home.path(),
            env: &env,
        };
        let d = detect(&src, &[]);
        let names: Vec<_> = d.secrets.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["openai", "ssh-id_ed25519", "sky"]);
        assert_eq!(d.secrets[2].provider.as_deref(), Some("sky"));
        assert_eq!(d.secrets[1].path.as_deref(), Some("~/.ssh/id_ed25519"));
        assert_eq!(d.warnings.len(), 1);
        let w = d.warnings[0].to_string();
        assert!(
            w.starts_with("~/.aws/credentials line 2") && !w.contains("hunter2"),
            "{w}"
        );
        let only: Vec<_> = detect(&src, &["sky".into()])
            .secrets
            .into_iter()
            .map(|s| s.name)
            .collect();
        assert_eq!(only, ["sky"]);
    }
}
