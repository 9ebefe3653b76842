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
//! Paths are compared after lexical normalisation (`~`, `.`, `//`, `..`
//! folded), the deny-list case-insensitively. Callers that resolve symlinks
//! check the resolved target too ([`Policy::check_resolved`]). Errors name
//! the secret and the path, never a value (this module never sees one).

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
    /// An env var that changes how programs run, asked for by the store.
    #[error(
        "secret {secret} may not set {var}: a variable from the store may not change how programs \
         run (loader, shell, interpreter, path and command variables are refused)"
    )]
    VarNotAllowed { secret: String, var: String },
}

/// Env var names a secret from the store may never set: they make every
/// program started in an env process load, run or trust something else
/// (`LD_PRELOAD`, `PATH`, `BASH_ENV`, `GIT_SSH_COMMAND`, `NODE_OPTIONS`,
/// ...). Exact names, then prefixes, then suffixes; compared upper-case.
const DENIED_VARS: &[&str] = &[
    "PATH",
    "HOME",
    "SHELL",
    "ENV",
    "BASH_ENV",
    "SHELLOPTS",
    "BASHOPTS",
    "IFS",
    "PS4",
    "PROMPT_COMMAND",
    "CDPATH",
    "GLOBIGNORE",
    "TMPDIR",
    "EDITOR",
    "VISUAL",
    "PAGER",
    "LESSOPEN",
    "LESSCLOSE",
    "MANPAGER",
    "BROWSER",
    "PERL5LIB",
    "PERL5OPT",
    "PERLLIB",
    "RUBYOPT",
    "RUBYLIB",
    "NODE_OPTIONS",
    "NODE_PATH",
    "JAVA_TOOL_OPTIONS",
    "_JAVA_OPTIONS",
    "JDK_JAVA_OPTIONS",
    "CLASSPATH",
    "GCONV_PATH",
    "HOSTALIASES",
    "LOCALDOMAIN",
    "RES_OPTIONS",
    "NLSPATH",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "AWS_CA_BUNDLE",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "SSH_AUTH_SOCK",
    "KUBECONFIG",
];
const DENIED_VAR_PREFIXES: &[&str] = &["LD_", "DYLD_", "PYTHON", "GIT_", "XDG_", "BASH_FUNC_"];
const DENIED_VAR_SUFFIXES: &[&str] = &["_COMMAND", "_EDITOR", "_PAGER", "_PROXY"];

/// Whether a store-originated secret may set env var `var`: refused when
/// it changes how programs run (see `DENIED_VARS`). Local origins (the
/// user on this machine, or a push by a token holder, who can already run
/// commands) are not limited here.
pub fn check_env_var(secret: &str, var: &str, origin: Origin) -> Result<(), PolicyError> {
    if matches!(origin, Origin::Local) {
        return Ok(());
    }
    let upper = var.to_ascii_uppercase();
    let denied = DENIED_VARS.contains(&upper.as_str())
        || DENIED_VAR_PREFIXES.iter().any(|p| upper.starts_with(p))
        || DENIED_VAR_SUFFIXES.iter().any(|s| upper.ends_with(s));
    if denied {
        return Err(PolicyError::VarNotAllowed {
            secret: secret.to_owned(),
            var: var.to_owned(),
        });
    }
    Ok(())
}

impl PolicyError {
    /// The stable error code (`path_reserved`, `path_not_allowed`).
    pub fn code(&self) -> &'static str {
        match self {
            PolicyError::Reserved { .. } => "path_reserved",
            PolicyError::NotAllowed { .. } => "path_not_allowed",
            PolicyError::VarNotAllowed { .. } => "var_not_allowed",
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

    #[test]
    fn remote_env_vars_may_not_change_how_programs_run() {
        for var in [
            "LD_PRELOAD",
            "ld_library_path",
            "DYLD_INSERT_LIBRARIES",
            "PATH",
            "BASH_ENV",
            "PYTHONPATH",
            "PYTHONSTARTUP",
            "GIT_SSH_COMMAND",
            "NODE_OPTIONS",
            "PROMPT_COMMAND",
            "HTTPS_PROXY",
            "SSL_CERT_FILE",
        ] {
            let err = check_env_var("s", var, Origin::Remote).unwrap_err();
            assert_eq!(err.code(), "var_not_allowed", "{var}");
            assert!(check_env_var("s", var, Origin::Local).is_ok(), "{var}");
        }
        for var in [
            "OPENAI_API_KEY",
            "AWS_ACCESS_KEY_ID",
            "HF_TOKEN",
            "WANDB_API_KEY",
            "MY_TOKEN",
        ] {
            assert!(check_env_var("s", var, Origin::Remote).is_ok(), "{var}");
        }
    }
}
