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
//! Paths are read as the writer reads them ([`crate::fsutil::HomePath`])
//! and compared after lexical normalisation (`.`, `//`, `..` folded), the
//! deny-list case-insensitively. Writers ask [`Policy::may_write`], which
//! judges the path, confines it and judges the target it resolves to
//! ([`Policy::check_resolved`]). Errors name the secret, the path, the var
//! or the field, never a value.

mod target;

use std::path::{Path, PathBuf};

use thiserror::Error;

pub use target::{Reach, Refused};

use crate::fsutil::{normalise, HomePath};
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
        self.check_parsed(
            home,
            provider,
            secret_name,
            &HomePath::parse(home, path),
            origin,
        )
    }

    /// [`Policy::check`] of a path already read ([`HomePath::parse`]
    /// against `home`).
    pub fn check_parsed(
        &self,
        home: &Path,
        provider: Option<&str>,
        secret_name: &str,
        path: &HomePath,
        origin: Origin,
    ) -> Result<(), PolicyError> {
        self.check_denied(home, secret_name, path)?;
        if origin == Origin::Local {
            return Ok(());
        }
        let p = providers::for_secret(provider);
        let locations = p.locations();
        let ok = path.in_home(home).is_some_and(|rel| {
            !rel.is_empty()
                && (locations.iter().any(|l| in_location(&rel, l)) || allowed(&rel, &self.allow))
        });
        if ok {
            return Ok(());
        }
        Err(PolicyError::NotAllowed {
            secret: secret_name.to_owned(),
            path: path.text().to_owned(),
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
        let resolved = HomePath::parse(home, &resolved.to_string_lossy());
        self.check_denied(home, secret_name, &resolved)
    }

    fn check_denied(&self, home: &Path, secret: &str, path: &HomePath) -> Result<(), PolicyError> {
        let reserved = |what: String| PolicyError::Reserved {
            secret: secret.to_owned(),
            path: path.text().to_owned(),
            what,
        };
        let absolute = path.normalised();
        for dir in &self.reserved {
            if let (Some(abs), Some(dir)) = (&absolute, normalise(dir)) {
                if abs.starts_with(&dir) {
                    return Err(reserved(format!("the agent's state dir {}", dir.display())));
                }
            }
        }
        match path.in_home(home) {
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
mod tests;
