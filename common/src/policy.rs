//! The placement policy: which files in home a secret may be written to.
//! Enforced on both sides: by the controller for secrets downloaded from the
//! remote store, and by the agent for everything it writes.
//!
//! Two rules. The deny-list applies to every path, whoever asks: shell
//! startup files, `~/.ssh/authorized_keys*`, `~/.ssh/rc`, `~/.ssh/config`,
//! `~/.ssh/environment`, systemd and autostart units, everything under
//! `~/.rh/`, and the [`Policy::reserved`] directories (the agent's state dir)
//! are never written by a secret. The location rule applies to paths that did
//! not come from the user on this machine ([`Origin::Remote`]: the store, a
//! fleet-mode pull): they must lie in the provider's own credential locations
//! ([`crate::providers::Provider::locations`]) or in the owner's allow-list.
//!
//! Secrets of remote origin also carry data only, never a program to run:
//! their fields are allow-listed per provider ([`data_only`]), and the env
//! vars they set are their provider's own or the owner's `allow_vars`
//! ([`Policy::check_env_var`]). Both are allow-lists, decided here once for
//! the agent's pull and the controller's `vault pull` / `login --download`.
//!
//! Paths are compared after lexical normalisation (`~`, `.`, `//`, `..`
//! folded), the deny-list case-insensitively. Callers that resolve symlinks
//! check the resolved target too ([`Policy::check_resolved`]). Errors name
//! the secret, the path, the var or the field, never a value.

use std::path::{Component, Path, PathBuf};

use thiserror::Error;

use crate::providers;

/// Where a path came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Chosen by the user on this machine (a CLI flag, a local file), or by
    /// a caller holding this agent's token (push mode).
    Local,
    /// Came from elsewhere: the remote store's metadata, a fleet-mode pull.
    Remote,
}

/// The placement policy of one machine.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// Absolute directories never written (the agent's state dir).
    pub reserved: Vec<PathBuf>,
    /// `~/...` prefixes the machine's owner allows for [`Origin::Remote`] paths.
    pub allow: Vec<String>,
    /// Env var names (exact) the machine's owner allows [`Origin::Remote`]
    /// secrets to set besides their provider's own (`allow_vars`).
    pub allow_vars: Vec<String>,
}

/// A path the policy refuses.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum PolicyError {
    /// On the deny-list (or a reserved directory): never written by a secret.
    #[error("secret {secret} may not write {path}: {what} is never written by a secret")]
    Reserved {
        secret: String,
        path: String,
        what: String,
    },
    /// A remote path outside the provider's locations and the allow-list.
    #[error(
        "secret {secret} may not write {path}: a path from the store or a remote caller must lie \
         in {provider}'s credential locations ({locations}) or in the owner's allow-list \
         (allow_paths)"
    )]
    NotAllowed {
        secret: String,
        path: String,
        provider: String,
        locations: String,
    },
    /// A var a secret from the store may not set: not one of its
    /// provider's, nor in the owner's allow-list.
    #[error(
        "secret {secret} may not set {var}: a secret from the store sets only its provider's \
         variables ({declared}) and the ones this machine's owner allows: add {var} to allow_vars \
         (the agent's config file on a node; ~/.rh/config for vault pull and login --download)"
    )]
    VarNotAllowed {
        secret: String,
        var: String,
        declared: String,
    },
    /// A field of a secret from the store that is not one of its provider's
    /// data fields (and may name a program to run).
    #[error(
        "secret {secret} may not carry {field} into {file}: a secret from the store carries data \
         only, and {field} is not one of {provider}'s data fields (fields that name a program to \
         run, such as a kube user's exec or auth-provider, are never taken from the store)"
    )]
    ProgramNotAllowed {
        secret: String,
        file: String,
        field: String,
        provider: String,
    },
}

impl Policy {
    /// Whether a secret of `origin`, kept by `provider`, may set env var
    /// `var`. Local origins (the user on this machine, or a push by a token
    /// holder, who can already run commands) are not limited here. A secret
    /// from the store may set only the vars its provider declares
    /// ([`crate::providers::Provider::env_vars`]; none for generic secrets)
    /// and the owner's [`Policy::allow_vars`]: an allow-list, because the
    /// names that make programs load, run or trust something else
    /// (`LD_PRELOAD`, `SSH_ASKPASS`, `RUSTC_WRAPPER`, `PIP_INDEX_URL`,
    /// `NODE_TLS_REJECT_UNAUTHORIZED`, `DOCKER_HOST`...) cannot all be listed.
    pub fn check_env_var(
        &self,
        provider: Option<&str>,
        secret: &str,
        var: &str,
        origin: Origin,
    ) -> Result<(), PolicyError> {
        if origin == Origin::Local {
            return Ok(());
        }
        let p = providers::for_secret(provider);
        let declared = p.env_vars().iter().any(|(_, v)| *v == var);
        if declared || self.allow_vars.iter().any(|a| a == var) {
            return Ok(());
        }
        let names: Vec<&str> = p.env_vars().iter().map(|(_, v)| *v).collect();
        Err(PolicyError::VarNotAllowed {
            secret: secret.to_owned(),
            var: crate::providers::field_name(var),
            declared: if names.is_empty() {
                format!("{} declares none", p.id())
            } else {
                names.join(", ")
            },
        })
    }
}

/// Make the values of a secret of `origin` data only, in place: for a
/// secret from the store ([`Origin::Remote`]), every field must be one of
/// its provider's data fields ([`crate::providers::Provider::check_data`]:
/// an allow-list, so no field naming a program to run gets through), and
/// the keys never taken from the store are dropped
/// ([`crate::providers::Provider::remote_dropped`]: a kubeconfig's
/// `current-context`). `file` (its first file, if it has one) names where
/// it would go. The error names the secret, the file and the field, never a
/// value. Local origins are unchanged.
pub fn data_only(
    provider: Option<&str>,
    secret: &str,
    file: Option<&str>,
    values: &mut crate::Values,
    origin: Origin,
) -> Result<(), PolicyError> {
    if origin == Origin::Local {
        return Ok(());
    }
    let p = providers::for_secret(provider);
    p.check_data(values)
        .map_err(|field| PolicyError::ProgramNotAllowed {
            secret: secret.to_owned(),
            file: file.map_or_else(|| "its env vars".to_owned(), crate::fsutil::cut),
            field,
            provider: p.id().to_owned(),
        })?;
    for key in p.remote_dropped() {
        values.remove(*key);
    }
    Ok(())
}

impl PolicyError {
    /// The stable error code (`path_reserved`, `path_not_allowed`,
    /// `var_not_allowed`, `program_not_allowed`).
    pub fn code(&self) -> &'static str {
        match self {
            PolicyError::Reserved { .. } => "path_reserved",
            PolicyError::NotAllowed { .. } => "path_not_allowed",
            PolicyError::VarNotAllowed { .. } => "var_not_allowed",
            PolicyError::ProgramNotAllowed { .. } => "program_not_allowed",
        }
    }
}

/// Files in home that are never written (compared lowercase).
const DENY_FILES: &[&str] = &[
    // shell startup and logout files
    ".bashrc",
    ".bash_profile",
    ".bash_login",
    ".bash_logout",
    ".profile",
    ".shrc",
    ".kshrc",
    ".mkshrc",
    ".zshrc",
    ".zshenv",
    ".zprofile",
    ".zlogin",
    ".zlogout",
    ".login",
    ".logout",
    ".cshrc",
    ".tcshrc",
    // session startup and environment
    ".pam_environment",
    ".xprofile",
    ".xinitrc",
    ".xsession",
    ".xsessionrc",
    // git runs commands named in its config (core.sshCommand, hooks)
    ".gitconfig",
    // sshd: keys that log in, commands run at login, client config
    ".ssh/rc",
    ".ssh/config",
    ".ssh/environment",
];

/// Prefixes of file names in home that are never written (`authorized_keys2`...).
const DENY_FILE_PREFIXES: &[&str] = &[".ssh/authorized_keys", ".ssh/known_hosts"];

/// Directories in home never written into (compared lowercase).
const DENY_DIRS: &[&str] = &[
    ".rh",
    ".config/fish",
    ".config/systemd",
    ".config/autostart",
    ".config/environment.d",
    ".config/git",
    ".local/share/systemd",
];

/// `path` relative to `home` as normalised components, or `None` when it
/// does not lie in home. `~`, `~/x`, relative (to home) and absolute paths.
fn home_relative(home: &Path, path: &str) -> Option<Vec<String>> {
    let joined = normalise(&expand(home, path))?;
    let home = normalise(home)?;
    let rel = joined.strip_prefix(&home).ok()?;
    Some(
        rel.components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect(),
    )
}

/// Like [`crate::fsutil::expand_home`], but `~//x` is `~/x` (the writer
/// would take it for `/x` and refuse it as outside home; the policy judges the
/// stricter reading).
fn expand(home: &Path, path: &str) -> PathBuf {
    match path.strip_prefix("~/") {
        Some(rest) => home.join(rest.trim_start_matches('/')),
        None => crate::fsutil::expand_home(home, path),
    }
}

/// Fold `.`, `..` and repeated separators of an absolute path; `None` when
/// `..` climbs above the root or the path is relative.
fn normalise(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::RootDir => out.push("/"),
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() || out.as_os_str().is_empty() {
                    return None;
                }
            }
            Component::Normal(n) => out.push(n),
            Component::Prefix(_) => return None,
        }
    }
    out.has_root().then_some(out)
}

/// Whether `rel` (components) is `prefix` or lies under it.
fn under(rel: &[String], prefix: &[&str]) -> bool {
    rel.len() >= prefix.len() && rel.iter().zip(prefix).all(|(a, b)| a == b)
}

/// The deny-list entry `rel` falls under, if any.
fn denied(rel: &[String]) -> Option<String> {
    let lower: Vec<String> = rel.iter().map(|c| c.to_lowercase()).collect();
    let joined = lower.join("/");
    for dir in DENY_DIRS {
        let parts: Vec<&str> = dir.split('/').collect();
        if under(&lower, &parts) {
            return Some(format!("~/{dir}/"));
        }
    }
    if let Some(file) = DENY_FILES.iter().find(|f| joined == **f) {
        return Some(format!("~/{file}"));
    }
    DENY_FILE_PREFIXES
        .iter()
        .find(|p| joined.starts_with(**p))
        .map(|p| format!("~/{p}*"))
}

/// Whether `rel` matches one location: `~/dir/` (anything under it),
/// `~/dir/*` (a file directly in it), or an exact `~/file`.
fn in_location(rel: &[String], location: &str) -> bool {
    let Some(loc) = location.strip_prefix("~/") else {
        return false;
    };
    if let Some(dir) = loc.strip_suffix("/*") {
        let parts: Vec<&str> = dir.split('/').collect();
        rel.len() == parts.len() + 1 && under(rel, &parts)
    } else {
        let parts: Vec<&str> = loc.trim_end_matches('/').split('/').collect();
        if loc.ends_with('/') {
            rel.len() > parts.len() && under(rel, &parts)
        } else {
            rel.len() == parts.len() && under(rel, &parts)
        }
    }
}

/// Whether `rel` lies under an allow-list entry (`~/x`: x itself or below).
fn allowed(rel: &[String], allow: &[String]) -> bool {
    allow.iter().any(|entry| {
        let Some(prefix) = entry.strip_prefix("~/") else {
            return false;
        };
        let parts: Vec<&str> = prefix.split('/').filter(|p| !p.is_empty()).collect();
        !parts.is_empty() && under(rel, &parts)
    })
}

impl Policy {
    /// Check one file `path` (`~/...`, relative to home, or absolute) of
    /// `secret_name`, kept by `provider` (`None` or an unknown id: generic).
    pub fn check(
        &self,
        home: &Path,
        provider: Option<&str>,
        secret_name: &str,
        path: &str,
        origin: Origin,
    ) -> Result<(), PolicyError> {
        self.check_denied(home, secret_name, path)?;
        if origin == Origin::Local {
            return Ok(());
        }
        let p = providers::for_secret(provider);
        let locations = p.locations();
        let ok = home_relative(home, path).is_some_and(|rel| {
            !rel.is_empty()
                && (locations.iter().any(|l| in_location(&rel, l)) || allowed(&rel, &self.allow))
        });
        if ok {
            return Ok(());
        }
        Err(PolicyError::NotAllowed {
            secret: secret_name.to_owned(),
            path: path.to_owned(),
            provider: p.id().to_owned(),
            locations: if locations.is_empty() {
                "none".to_owned()
            } else {
                locations.join(", ")
            },
        })
    }

    /// Check the resolved target of a path (after following symlinks)
    /// against the deny-list and the reserved directories only: a link in
    /// home that points at `~/.bashrc` does not get around them.
    pub fn check_resolved(
        &self,
        home: &Path,
        secret_name: &str,
        resolved: &Path,
    ) -> Result<(), PolicyError> {
        self.check_denied(home, secret_name, &resolved.to_string_lossy())
    }

    fn check_denied(&self, home: &Path, secret: &str, path: &str) -> Result<(), PolicyError> {
        let reserved = |what: String| PolicyError::Reserved {
            secret: secret.to_owned(),
            path: path.to_owned(),
            what,
        };
        let absolute = normalise(&expand(home, path));
        for dir in &self.reserved {
            if let (Some(abs), Some(dir)) = (&absolute, normalise(dir)) {
                if abs.starts_with(&dir) {
                    return Err(reserved(format!("the agent's state dir {}", dir.display())));
                }
            }
        }
        match home_relative(home, path) {
            Some(rel) => match denied(&rel) {
                Some(entry) => Err(reserved(entry)),
                None => Ok(()),
            },
            // `..` above the root: never a place to write.
            None if absolute.is_none() => Err(reserved("a path above the root".to_owned())),
            // Outside home: confinement refuses it; nothing to deny here.
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOME: &str = "/home/u";

    fn policy() -> Policy {
        Policy {
            reserved: vec![PathBuf::from("/srv/agent-state")],
            allow: vec!["~/work/creds".into()],
            allow_vars: vec![],
        }
    }

    fn code(provider: Option<&str>, path: &str, origin: Origin) -> &'static str {
        match policy().check(Path::new(HOME), provider, "s", path, origin) {
            Ok(()) => "ok",
            Err(e) => e.code(),
        }
    }

    #[test]
    fn deny_list_applies_to_every_origin() {
        for path in [
            "~/.bashrc",
            "~/.bash_profile",
            "~/.profile",
            "~/.zshrc",
            "~/.zshenv",
            "~/.config/fish/config.fish",
            "~/.ssh/authorized_keys",
            "~/.ssh/authorized_keys2",
            "~/.ssh/rc",
            "~/.ssh/config",
            "~/.ssh/environment",
            "~/.config/systemd/user/x.service",
            "~/.config/autostart/x.desktop",
            "~/.local/share/systemd/x",
            "~/.rh/agent/token",
            "~/.rh/secrets/other.json",
            "~/.rh",
            "~/.gitconfig",
            // spellings of the same files
            "~/./.bashrc",
            "~//.bashrc",
            "~/x/../.bashrc",
            "~/.BASHRC",
            "~/.ssh/./Authorized_Keys",
            ".bashrc",
            "/home/u/.bashrc",
            "/home/u/.ssh/../.ssh/rc",
            // the reserved state dir, anywhere
            "/srv/agent-state/token",
            "/srv/agent-state/../agent-state/x",
        ] {
            for origin in [Origin::Local, Origin::Remote] {
                for provider in [None, Some("aws"), Some("ssh"), Some("wandb")] {
                    assert_eq!(
                        code(provider, path, origin),
                        "path_reserved",
                        "{path} {origin:?} {provider:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn remote_paths_stay_in_the_providers_locations_or_the_allow_list() {
        for (provider, path, remote) in [
            (Some("aws"), "~/.aws/credentials", "ok"),
            (Some("aws"), "~/.aws/sub/creds", "ok"),
            (Some("aws"), "~/.kube/config", "path_not_allowed"),
            (Some("aws"), "~/.aws", "path_not_allowed"),
            (Some("aws"), "~/.aws/../notes", "path_not_allowed"),
            (Some("kubernetes"), "~/.kube/config", "ok"),
            (Some("gcp"), "~/.config/gcloud/adc.json", "ok"),
            (Some("gcp"), "~/.config/other.json", "path_not_allowed"),
            (
                Some("gcp"),
                "~/.config/gcloud/virtenv/bin/activate",
                "path_not_allowed",
            ),
            (Some("ssh"), "~/.ssh/id_work", "ok"),
            (Some("ssh"), "~/.ssh/id_work.pub", "ok"),
            (Some("ssh"), "~/.ssh/keys/id_work", "path_not_allowed"),
            (Some("ssh"), "~/id_work", "path_not_allowed"),
            (Some("sky"), "~/.ssh/sky-key.pub", "ok"),
            (Some("wandb"), "~/.netrc", "ok"),
            (Some("wandb"), "~/.netrc.d/x", "path_not_allowed"),
            (Some("openai"), "~/openai.json", "path_not_allowed"),
            (Some("huggingface"), "~/.cache/huggingface/token", "ok"),
            (Some("huggingface"), "~/.cache/pip/x", "path_not_allowed"),
            (
                Some("huggingface"),
                "~/.cache/huggingface/modules/transformers_modules/__init__.py",
                "path_not_allowed",
            ),
            (
                Some("huggingface"),
                "~/.cache/huggingface/token.d/x",
                "path_not_allowed",
            ),
            (None, "~/app/secret.json", "path_not_allowed"),
            (Some("custom-id"), "~/.aws/credentials", "path_not_allowed"),
            (None, "~/work/creds", "ok"),
            (None, "~/work/creds/a.json", "ok"),
            (None, "~/work/credsx/a.json", "path_not_allowed"),
            (None, "~/work", "path_not_allowed"),
            (None, "/etc/passwd", "path_not_allowed"),
            (None, "~", "path_not_allowed"),
        ] {
            assert_eq!(code(provider, path, Origin::Remote), remote, "{path}");
            assert_eq!(code(provider, path, Origin::Local), "ok", "{path}");
        }
    }

    #[test]
    fn the_allow_list_never_opens_the_deny_list() {
        let p = Policy {
            reserved: vec![],
            allow: vec!["~/.ssh".into(), "~/".into(), "~/.rh".into()],
            allow_vars: vec![],
        };
        let home = Path::new(HOME);
        for path in ["~/.ssh/authorized_keys", "~/.rh/agent/token"] {
            let err = p.check(home, None, "s", path, Origin::Remote).unwrap_err();
            assert_eq!(err.code(), "path_reserved", "{path}");
        }
        // `~/` allows nothing (an empty prefix is not an allow entry).
        assert!(p
            .check(home, None, "s", "~/x.json", Origin::Remote)
            .is_err());
        assert!(p
            .check(home, None, "s", "~/.ssh/id_x", Origin::Remote)
            .is_ok());
    }

    #[test]
    fn resolved_targets_are_checked_against_the_deny_list() {
        let p = policy();
        let home = Path::new(HOME);
        assert_eq!(
            p.check_resolved(home, "s", Path::new("/home/u/.bashrc"))
                .unwrap_err()
                .code(),
            "path_reserved"
        );
        assert!(p
            .check_resolved(home, "s", Path::new("/home/u/notes/x"))
            .is_ok());
        let err = p
            .check(home, Some("aws"), "mine", "~/.bashrc", Origin::Local)
            .unwrap_err()
            .to_string();
        assert!(err.contains("mine") && err.contains("~/.bashrc"), "{err}");
    }

    /// A remote secret sets its provider's vars and the owner's
    /// `allow_vars`, nothing else: the names the old deny-list missed
    /// (issue 19) among them; a local one sets anything.
    #[test]
    fn remote_env_vars_are_the_providers_or_the_owners_allowed_ones() {
        let p = Policy {
            allow_vars: vec!["MY_TOKEN".into()],
            ..Policy::default()
        };
        let check = |provider: Option<&str>, var: &str, origin| {
            p.check_env_var(provider, "s", var, origin)
                .map_err(|e| e.code())
        };
        for var in [
            // missed by the deny-list
            "SSH_ASKPASS",
            "RUSTC_WRAPPER",
            "NODE_TLS_REJECT_UNAUTHORIZED",
            "PIP_INDEX_URL",
            "GLIBC_TUNABLES",
            "GOOGLE_EXTERNAL_ACCOUNT_ALLOW_EXECUTABLES",
            "DOCKER_HOST",
            // and what it had
            "LD_PRELOAD",
            "PATH",
            "BASH_ENV",
            "PYTHONPATH",
            "GIT_SSH_COMMAND",
            // another provider's var, a case variant of an allowed one
            "AWS_ACCESS_KEY_ID",
            "my_token",
        ] {
            for provider in [None, Some("openai"), Some("custom-id")] {
                assert_eq!(
                    check(provider, var, Origin::Remote),
                    Err("var_not_allowed"),
                    "{var} {provider:?}"
                );
                assert_eq!(check(provider, var, Origin::Local), Ok(()), "{var}");
            }
        }
        for (provider, var) in [
            (Some("openai"), "OPENAI_API_KEY"),
            (Some("aws"), "AWS_ACCESS_KEY_ID"),
            (Some("aws"), "AWS_SECRET_ACCESS_KEY"),
            (Some("huggingface"), "HF_TOKEN"),
            (Some("wandb"), "WANDB_API_KEY"),
            (None, "MY_TOKEN"),
            (Some("custom-id"), "MY_TOKEN"),
            (Some("aws"), "MY_TOKEN"),
        ] {
            assert_eq!(check(provider, var, Origin::Remote), Ok(()), "{var}");
        }
        let err = p
            .check_env_var(Some("openai"), "api", "DOCKER_HOST", Origin::Remote)
            .unwrap_err()
            .to_string();
        for part in ["api", "DOCKER_HOST", "OPENAI_API_KEY", "allow_vars"] {
            assert!(err.contains(part), "{part}: {err}");
        }
        let err = Policy::default()
            .check_env_var(None, "x", "A\u{1b}[2J", Origin::Remote)
            .unwrap_err()
            .to_string();
        assert!(!err.contains('\u{1b}'), "{err}");
    }

    fn json_values(v: serde_json::Value) -> crate::Values {
        let serde_json::Value::Object(map) = v else {
            panic!("not an object")
        };
        map.into_iter()
            .map(|(k, v)| (k, crate::SecretValue::new(v)))
            .collect()
    }

    /// What `data_only` says of a remote secret: `Ok` with the keys left
    /// after dropping, or the refused field.
    fn data(provider: &str, v: serde_json::Value) -> Result<Vec<String>, String> {
        let mut values = json_values(v);
        match data_only(
            Some(provider),
            "s",
            Some("~/f"),
            &mut values,
            Origin::Remote,
        ) {
            Ok(()) => Ok(values.into_keys().collect()),
            Err(PolicyError::ProgramNotAllowed { field, .. }) => Err(field),
            Err(e) => panic!("{e}"),
        }
    }

    /// Each provider field that names a program, from the store, is refused
    /// by name; the same values pushed by the user pass untouched.
    #[test]
    fn remote_secrets_carry_data_only() {
        use serde_json::json;
        let kube = |user: serde_json::Value| {
            json!({"apiVersion": "v1", "clusters": [{"name": "c", "cluster": {"server": "https://c"}}],
                   "users": [{"name": "ok", "user": {"token": "t"}}, {"name": "u", "user": user}],
                   "current-context": "c"})
        };
        let refused = [
            (
                "kubernetes",
                kube(json!({"exec": {"command": "/bin/sh", "args": ["-c", "id"]}})),
                "users[1].user.exec",
            ),
            (
                "kubernetes",
                kube(json!({"auth-provider": {"name": "gcp", "config": {"cmd-path": "/bin/sh"}}})),
                "users[1].user.auth-provider",
            ),
            (
                "kubernetes",
                kube(json!({"tokenFile": "/etc/shadow"})),
                "users[1].user.tokenFile",
            ),
            (
                "kubernetes",
                json!({"clusters": [], "users": [{"name": "u", "exec": {}}]}),
                "users[0].exec",
            ),
            (
                "kubernetes",
                json!({"clusters": [], "users": {"u": {}}}),
                "users",
            ),
            (
                "kubernetes",
                json!({"clusters": [], "plugins": {}}),
                "plugins",
            ),
            (
                "aws",
                json!({"access_key": "A", "secret_key": "S", "credential_process": "/bin/sh -c id"}),
                "credential_process",
            ),
            (
                "docker",
                json!({"username": "u", "password": "p", "credsStore": "evil"}),
                "credsStore",
            ),
            (
                "docker",
                json!({"username": "u", "credHelpers": {"r.io": "evil"}}),
                "credHelpers",
            ),
            (
                "gcp",
                json!({"type": "external_account", "audience": "a",
                       "credential_source": {"executable": {"command": "/bin/sh -c id"}}}),
                "credential_source.executable",
            ),
            (
                "gcp",
                json!({"type": "impersonated_service_account",
                       "source_credentials": {"type": "external_account",
                           "credential_source": {"executable": {"command": "id"}}}}),
                "source_credentials.credential_source.executable",
            ),
            ("gcp", json!({"type": "gdch_service_account"}), "type"),
            ("gcp", json!({"client_id": "c", "cmd": "id"}), "cmd"),
            (
                "github",
                json!({"oauth_token": "t", "editor": "/bin/sh -c id"}),
                "editor",
            ),
            (
                "github",
                json!({"oauth_token": "t", "users": {"me": {"oauth_token": "t", "pager": "x"}}}),
                "users[0].pager",
            ),
            ("wandb", json!({"api_key": "k", "macdef": "init"}), "macdef"),
            (
                "ssh",
                json!({"private_key": "k", "public_key": "p", "config": "x"}),
                "config",
            ),
            (
                "huggingface",
                json!({"token": "t", "\u{1b}[2J": "x"}),
                "\"\\u{1b}[2J\"",
            ),
        ];
        for (provider, values, field) in refused {
            assert_eq!(
                data(provider, values.clone()),
                Err(field.to_owned()),
                "{provider}"
            );
            let mut local = json_values(values);
            let before = local.len();
            data_only(Some(provider), "s", None, &mut local, Origin::Local).unwrap();
            assert_eq!(local.len(), before, "{provider}: local values untouched");
        }
        // Data passes; a kubeconfig's current-context is dropped.
        assert_eq!(
            data(
                "kubernetes",
                kube(json!({"client-certificate-data": "c", "client-key-data": "k"}))
            ),
            Ok(vec!["apiVersion".into(), "clusters".into(), "users".into()])
        );
        for (provider, values) in [
            (
                "aws",
                json!({"access_key": "A", "secret_key": "S", "session_token": "T"}),
            ),
            (
                "gcp",
                json!({"type": "authorized_user", "client_id": "c", "refresh_token": "r"}),
            ),
            (
                "gcp",
                json!({"type": "external_account", "audience": "a",
                           "credential_source": {"file": "/var/run/token", "format": {"type": "text"}}}),
            ),
            (
                "github",
                json!({"user": "me", "oauth_token": "t", "users": {"me": {"oauth_token": "t"}, "other": null}}),
            ),
            ("mytool", json!({"anything": {"nested": ["data"]}})),
        ] {
            assert!(data(provider, values).is_ok(), "{provider}");
        }
        // The message names the secret, the file and the field, no value.
        let mut v = json_values(kube(json!({"exec": {"command": "/bin/sh"}})));
        let err = data_only(
            Some("kubernetes"),
            "kube",
            Some("~/.kube/config"),
            &mut v,
            Origin::Remote,
        )
        .unwrap_err();
        assert_eq!(err.code(), "program_not_allowed");
        let text = err.to_string();
        for part in ["kube", "~/.kube/config", "users[1].user.exec"] {
            assert!(text.contains(part), "{part}: {text}");
        }
        assert!(!text.contains("/bin/sh"), "{text}");
    }
}
