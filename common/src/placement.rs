//! Where a secret goes: the one decision of which files and which env vars a
//! secret becomes ([`place`]), and the check of a [`Placement`] that came from
//! elsewhere ([`verify`]). Owns the file-or-env rule, the provider's value
//! validation and the env and variable name checks, so callers (the
//! controller's `sync`/`send`/`env sync`, the agent's single-purpose routes
//! and its fleet pull) never decide any of it again; [`files_of`] is the one
//! reading of a secret's files for those that only need the paths. It does
//! not confine paths or apply a machine's placement policy (writers ask
//! `crate::policy::Policy::may_write`), and it never logs; errors name
//! secrets, providers, paths and variables, never a value.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::apply::secret_paths;
use crate::model::Secret;
use crate::names::{validate_env_name, validate_env_var_name, NameError};
use crate::providers::{self, ProviderError};
use crate::secret_value::SecretValue;

/// What a secret becomes on a node: its files (aligned with its provider's
/// `files(..)`: the first is the one the others derive from) and its env
/// vars. Carries names and paths only, never a value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Placement {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<PlacedFile>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<PlacedEnv>,
}

/// One file of a placement: `~/...` or relative to home (absolute paths are
/// for the caller's confinement to refuse or allow).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlacedFile {
    pub path: String,
}

/// The env vars of a placement: the env they go to, and each variable with
/// the value key it takes its value from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlacedEnv {
    pub env: String,
    /// Variable name -> value key of the secret.
    pub vars: BTreeMap<String, String>,
}

/// Whether a secret's files are placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Files {
    /// Never.
    No,
    /// When the secret has a file (its own path, or its provider's default).
    IfAny,
    /// Always: an error when it has no file.
    Yes,
}

/// Whether a secret's values become env vars.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vars {
    /// Never.
    No,
    /// When its var map yields any.
    IfAny,
    /// When it has no file (and its var map yields any), or its provider
    /// keeps its vars with its file ([`crate::providers::Provider::vars_with_file`]).
    IfNoFile,
    /// When it defines its own var map (`env_vars`), or has no file: a secret
    /// kept in a file goes to that file, not into the env as well (unless
    /// its provider keeps both, as for [`Vars::IfNoFile`]).
    IfOwnOrNoFile,
    /// Always: an error when its var map yields none.
    Yes,
}

/// How to place a secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlaceOpts<'a> {
    /// Write its files here instead of its own path or its provider's default
    /// (then files are placed whatever `files` says).
    pub path: Option<&'a str>,
    pub files: Files,
    /// The env its vars go to.
    pub env: &'a str,
    pub vars: Vars,
}

impl<'a> PlaceOpts<'a> {
    /// `controller sync`: its file when it has one; its vars in `env` when it
    /// defines them or has no file.
    pub fn sync(env: &'a str) -> Self {
        Self {
            path: None,
            files: Files::IfAny,
            env,
            vars: Vars::IfOwnOrNoFile,
        }
    }

    /// `controller env sync`: its file when it has one, and its vars in `env`
    /// when it maps any.
    pub fn both(env: &'a str) -> Self {
        Self {
            path: None,
            files: Files::IfAny,
            env,
            vars: Vars::IfAny,
        }
    }

    /// `controller send [--path P] [--env E]`: its file (at `path` when
    /// given: then required) when it has one; its vars in `env` when given
    /// (then required), else in `base_env` when it has no file.
    pub fn send(path: Option<&'a str>, env: Option<&'a str>) -> Self {
        Self {
            path,
            files: if path.is_some() {
                Files::Yes
            } else {
                Files::IfAny
            },
            env: env.unwrap_or(crate::wire::DEFAULT_ENV),
            vars: if env.is_some() {
                Vars::Yes
            } else {
                Vars::IfNoFile
            },
        }
    }

    /// What a request asks for (a `SyncItem` without a
    /// placement, `_write_to_file`): files at `path` when given (or when
    /// `want_file`), vars in `env` when given (both required then). With
    /// neither: its file if it has one, else its vars in `base_env`.
    pub fn request(path: Option<&'a str>, env: Option<&'a str>, want_file: bool) -> Self {
        let files_asked = want_file || path.is_some();
        Self {
            path,
            files: match (files_asked, env) {
                (true, _) => Files::Yes,
                (false, Some(_)) => Files::No,
                (false, None) => Files::IfAny,
            },
            env: env.unwrap_or(crate::wire::DEFAULT_ENV),
            vars: match (files_asked, env) {
                (_, Some(_)) => Vars::Yes,
                (true, None) => Vars::No,
                (false, None) => Vars::IfNoFile,
            },
        }
    }
}

/// A secret that cannot be placed as asked, or a placement that does not fit
/// its secret.
#[derive(Debug, Error)]
pub enum PlaceError {
    #[error(transparent)]
    Provider(#[from] ProviderError),
    /// A bad env or variable name; `context` names the secret (or env).
    #[error("{context}: {source}")]
    Name {
        context: String,
        #[source]
        source: NameError,
    },
    #[error(
        "secret {secret} maps no value to an environment variable (give env_vars, or use a \
         provider with default variables)"
    )]
    NoVars { secret: String },
    #[error("value of environment variable {var} contains a NUL byte")]
    NulValue { var: String },
    #[error("placement of secret {secret}: {reason}")]
    Invalid { secret: String, reason: String },
}

impl PlaceError {
    fn invalid(secret: &Secret, reason: impl Into<String>) -> Self {
        Self::Invalid {
            secret: secret.name.clone(),
            reason: reason.into(),
        }
    }
}

/// Decide where `secret` goes, once: its files and its env vars as `opts`
/// asks, its values checked by its provider when it has files, and the env
/// and variable names checked. An empty placement (nothing to place) is not
/// an error here; callers say what it means for them.
pub fn place(secret: &Secret, opts: &PlaceOpts<'_>) -> Result<Placement, PlaceError> {
    let provider = providers::for_secret(secret.provider.as_deref());
    let want_files = opts.path.is_some() || opts.files != Files::No;
    let files = match files_of(secret, opts.path)? {
        Some(paths) if want_files => paths,
        Some(_) => vec![],
        None if opts.path.is_none() && opts.files != Files::Yes => vec![],
        None => return Err(no_path(secret)),
    };
    let has_file = !files.is_empty();
    if has_file {
        provider.validate(&secret.values)?;
    }
    // A provider that keeps its secret in its file and its vars alike
    // (wandb) gets both wherever its file goes.
    let file_only = has_file && !provider.vars_with_file();
    let want_vars = match opts.vars {
        Vars::No => false,
        Vars::IfAny | Vars::Yes => true,
        Vars::IfNoFile => !file_only,
        Vars::IfOwnOrNoFile => secret.env_vars.is_some() || !file_only,
    };
    let env = if want_vars {
        let vars = var_map(secret);
        if vars.is_empty() {
            if opts.vars == Vars::Yes {
                return Err(PlaceError::NoVars {
                    secret: secret.name.clone(),
                });
            }
            None
        } else {
            Some(PlacedEnv {
                env: opts.env.to_owned(),
                vars,
            })
        }
    } else {
        None
    };
    let placement = Placement {
        files: files.into_iter().map(|path| PlacedFile { path }).collect(),
        env,
    };
    check_env(secret, &placement)?;
    Ok(placement)
}

/// The files `secret` is written to: at `path` when given, else at its own
/// path or its provider's default file, with the files its provider derives
/// from that one (an ssh key's `.pub`); `None` when it has no file (an
/// env-only secret). Where a secret's files are is read here (and by
/// [`place`]), never by a caller on its own.
pub fn files_of(secret: &Secret, path: Option<&str>) -> Result<Option<Vec<String>>, ProviderError> {
    match secret_paths(secret, path) {
        Ok(paths) => Ok(Some(paths)),
        Err(ProviderError::NoPath { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Check a placement that came from elsewhere (the wire) against its secret:
/// the files are the set its provider derives from the first one, the values
/// pass the provider's checks when there are files, the env and variable
/// names are valid and every variable names a value the secret has (and no
/// value holds a NUL byte). Where the files are is for the caller to confine.
pub fn verify(secret: &Secret, placement: &Placement) -> Result<(), PlaceError> {
    let provider = providers::for_secret(secret.provider.as_deref());
    if let Some(first) = placement.files.first() {
        if provider.files(&first.path) != placement.paths() {
            return Err(PlaceError::invalid(
                secret,
                format!(
                    "files must be {} (the files of a {} secret at {})",
                    provider.files(&first.path).join(", "),
                    provider.id(),
                    first.path
                ),
            ));
        }
        provider.validate(&secret.values)?;
    }
    if let Some(env) = &placement.env {
        if let Some((var, key)) = env
            .vars
            .iter()
            .find(|(_, key)| !secret.values.contains_key(*key))
        {
            return Err(PlaceError::invalid(
                secret,
                format!("variable {var} names value {key:?}, which the secret does not have"),
            ));
        }
    }
    check_env(secret, placement)
}

/// The env name, the variable names, and no NUL byte in a value.
fn check_env(secret: &Secret, placement: &Placement) -> Result<(), PlaceError> {
    let Some(env) = &placement.env else {
        return Ok(());
    };
    check_vars(
        &format!("secret {}", secret.name),
        &env.env,
        &placement.env_values(secret),
    )
}

/// Check an env's name and its vars (names, and no NUL byte in a value), as
/// a placement's are checked; errors name `context` (`secret NAME`, `env
/// NAME`), never a value.
pub fn check_vars(
    context: &str,
    env: &str,
    vars: &BTreeMap<String, SecretValue>,
) -> Result<(), PlaceError> {
    let named = |source| PlaceError::Name {
        context: context.to_owned(),
        source,
    };
    validate_env_name(env).map_err(named)?;
    for (var, value) in vars {
        validate_env_var_name(var).map_err(named)?;
        let text = as_text(value);
        if text.expose_str().is_some_and(|s| s.contains('\0')) {
            return Err(PlaceError::NulValue { var: var.clone() });
        }
    }
    Ok(())
}

/// The variable -> value key map of a secret: its `env_vars` (else its
/// provider's default map), only keys it has a value for.
fn var_map(secret: &Secret) -> BTreeMap<String, String> {
    let map = match &secret.env_vars {
        Some(map) => map.clone(),
        None => providers::env_var_map(providers::for_secret(secret.provider.as_deref())),
    };
    map.into_iter()
        .filter(|(key, _)| secret.values.contains_key(key))
        .map(|(key, var)| (var, key))
        .collect()
}

/// No file where one is required: an unknown provider (nothing to default
/// to) says so, listing the builtin ones.
fn no_path(secret: &Secret) -> PlaceError {
    match &secret.provider {
        Some(id) if providers::lookup(id).is_none() => ProviderError::Unknown {
            id: id.clone(),
            valid: providers::builtin_ids().join(", "),
        }
        .into(),
        _ => ProviderError::NoPath {
            provider: secret
                .provider
                .clone()
                .unwrap_or_else(|| secret.name.clone()),
        }
        .into(),
    }
}

impl Placement {
    /// Whether it places nothing.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty() && self.env.is_none()
    }

    /// The file paths, in order.
    pub fn paths(&self) -> Vec<String> {
        self.files.iter().map(|f| f.path.clone()).collect()
    }

    /// The env and variable names.
    pub fn env_vars(&self) -> Option<(String, Vec<String>)> {
        self.env
            .as_ref()
            .map(|e| (e.env.clone(), e.vars.keys().cloned().collect()))
    }

    /// Each variable with its value as text (strings as they are, other JSON
    /// values compact); variables naming a value the secret lacks are left
    /// out ([`verify`] refuses them).
    pub fn env_values(&self, secret: &Secret) -> BTreeMap<String, SecretValue> {
        let Some(env) = &self.env else {
            return BTreeMap::new();
        };
        env.vars
            .iter()
            .filter_map(|(var, key)| {
                let value = secret.values.get(key)?;
                Some((var.clone(), as_text(value)))
            })
            .collect()
    }

    /// The same placement as the older wire form of a sync item: the first
    /// file's path and the env's name (what [`PlaceOpts::request`] turns back
    /// into this placement).
    pub fn as_request(&self) -> (Option<String>, Option<String>) {
        (
            self.files.first().map(|f| f.path.clone()),
            self.env.as_ref().map(|e| e.env.clone()),
        )
    }
}

/// A value as text: strings as they are, other JSON values compact.
pub fn as_text(value: &SecretValue) -> SecretValue {
    match value.expose_str() {
        Some(s) => SecretValue::from_string(s.to_owned()),
        None => SecretValue::from_string(value.expose_secret().to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::PROVIDERS;
    use crate::secret_value::values_from;
    use crate::Values;

    /// A builtin provider's fixture values (`tests/data/providers/<id>/values.json`).
    fn fixture(id: &str) -> Values {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/providers")
            .join(id)
            .join("values.json");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{id}: {e}"));
        serde_json::from_str(&text).unwrap()
    }

    fn provider_secret(id: &str) -> Secret {
        let mut s = Secret::base(format!("{id}-x"), fixture(id));
        s.provider = Some(id.to_owned());
        s
    }

    /// Every builtin provider, by each rule: files where its provider keeps
    /// them, vars (named by its default map) only when asked for or when it
    /// has no file; and what `place` decides, `verify` accepts.
    #[test]
    fn every_provider_by_every_rule() {
        for p in PROVIDERS {
            let id = p.id();
            let s = provider_secret(id);
            let own_files = match (p.default_path(), id) {
                (Some(path), _) => p.files(path),
                (None, "ssh") => p.files("~/.ssh/x"),
                (None, _) => vec![],
            };
            let default_vars: Vec<String> = {
                let mut v: Vec<String> = p
                    .env_vars()
                    .iter()
                    .filter(|(key, _)| s.values.contains_key(*key))
                    .map(|(_, var)| (*var).to_owned())
                    .collect();
                v.sort();
                v
            };
            for (rule, opts) in [
                ("sync", PlaceOpts::sync("e1")),
                ("both", PlaceOpts::both("e1")),
                ("request", PlaceOpts::request(None, Some("e1"), false)),
                ("default", PlaceOpts::request(None, None, false)),
            ] {
                let placed = place(&s, &opts);
                let want_vars = match rule {
                    "sync" | "default" => own_files.is_empty() || p.vars_with_file(),
                    _ => true,
                };
                let want_files = rule != "request";
                if rule == "request" && default_vars.is_empty() {
                    assert!(
                        matches!(placed, Err(PlaceError::NoVars { .. })),
                        "{id} {rule}: {placed:?}"
                    );
                    continue;
                }
                let placed = placed.unwrap_or_else(|e| panic!("{id} {rule}: {e}"));
                let files = if want_files {
                    own_files.clone()
                } else {
                    vec![]
                };
                assert_eq!(placed.paths(), files, "{id} {rule}");
                let env = if rule == "default" { "base_env" } else { "e1" };
                let vars = (want_vars && !default_vars.is_empty())
                    .then(|| (env.into(), default_vars.clone()));
                assert_eq!(placed.env_vars(), vars, "{id} {rule}");
                verify(&s, &placed).unwrap_or_else(|e| panic!("{id} {rule}: {e}"));
                assert!(
                    !placed.is_empty() || rule == "default",
                    "{id} {rule}: places nothing"
                );
            }
        }
    }

    /// wandb (issue 19 item 17): created with values, detected from
    /// `~/.netrc` or from `WANDB_API_KEY`, a secret gets the netrc entry and
    /// the var alike, by every rule that places its file; a provider that
    /// keeps its secret in a file only (huggingface) still gets the file only.
    #[test]
    fn wandb_gets_its_netrc_entry_and_its_var_however_it_was_made() {
        let created = provider_secret("wandb");
        let mut from_netrc = created.clone();
        from_netrc.path = Some("~/.netrc".into());
        let mut from_env = created.clone();
        from_env.env_vars = Some(providers::env_var_map(providers::for_secret(Some("wandb"))));
        for (how, s) in [
            ("created", &created),
            ("netrc", &from_netrc),
            ("env", &from_env),
        ] {
            for (rule, opts, env) in [
                ("sync", PlaceOpts::sync("e1"), "e1"),
                ("send", PlaceOpts::send(None, None), "base_env"),
                ("default", PlaceOpts::request(None, None, false), "base_env"),
            ] {
                let placed = place(s, &opts).unwrap();
                assert_eq!(placed.paths(), ["~/.netrc"], "{how} {rule}");
                assert_eq!(
                    placed.env_vars(),
                    Some((env.into(), vec!["WANDB_API_KEY".into()])),
                    "{how} {rule}"
                );
                assert_eq!(
                    placed.env_values(s)["WANDB_API_KEY"].expose_str(),
                    Some("fixture-wandb-api-key-0001")
                );
                verify(s, &placed).unwrap();
            }
        }
        // `_write_to_file` asks for the file alone.
        let file = place(&created, &PlaceOpts::request(None, None, true)).unwrap();
        assert!(file.env.is_none());
        let hf = place(&provider_secret("huggingface"), &PlaceOpts::sync("e1")).unwrap();
        assert_eq!(hf.paths(), ["~/.cache/huggingface/token"]);
        assert!(hf.env.is_none());
    }

    #[test]
    fn base_secrets_paths_and_own_var_maps() {
        let plain = Secret::base("plain", values_from([("k", "v")]));
        assert!(place(&plain, &PlaceOpts::sync("e")).unwrap().is_empty());
        assert!(place(&plain, &PlaceOpts::request(None, None, false))
            .unwrap()
            .is_empty());
        let at = place(&plain, &PlaceOpts::request(Some("~/p.json"), None, true)).unwrap();
        assert_eq!(at.paths(), ["~/p.json"]);
        assert!(at.env.is_none());
        assert!(matches!(
            place(&plain, &PlaceOpts::request(None, None, true)),
            Err(PlaceError::Provider(ProviderError::NoPath { .. }))
        ));

        // A secret in a file with its own var map: both, by the sync rule.
        let mut both = plain.clone();
        both.path = Some("~/cfg.json".into());
        both.env_vars = Some([("k".to_string(), "TOK".to_string())].into());
        let placed = place(&both, &PlaceOpts::sync("e")).unwrap();
        assert_eq!(placed.paths(), ["~/cfg.json"]);
        assert_eq!(placed.env_vars(), Some(("e".into(), vec!["TOK".into()])));
        assert_eq!(
            placed.env_values(&both)["TOK"].expose_str(),
            Some("v"),
            "a var takes the value of its key"
        );
        // ... and only its file by the default rule of a bare request.
        let placed = place(&both, &PlaceOpts::request(None, None, false)).unwrap();
        assert_eq!(placed.paths(), ["~/cfg.json"]);
        assert!(placed.env.is_none());
    }

    #[test]
    fn refusals_name_the_problem() {
        let mut unknown = Secret::base("x", values_from([("k", "v")]));
        unknown.provider = Some("nosuchprovider".into());
        assert!(matches!(
            place(&unknown, &PlaceOpts::request(None, None, true)),
            Err(PlaceError::Provider(ProviderError::Unknown { .. }))
        ));
        let mut bad_var = Secret::base("tok", values_from([("k", "v")]));
        bad_var.env_vars = Some([("k".to_string(), "NOT-A-VAR".to_string())].into());
        let err = place(&bad_var, &PlaceOpts::sync("e")).unwrap_err();
        assert!(matches!(err, PlaceError::Name { .. }), "{err}");
        assert!(err.to_string().contains("tok"), "{err}");
        let mut nul = Secret::base("tok", values_from([("k", "a\0b")]));
        nul.env_vars = Some([("k".to_string(), "TOK".to_string())].into());
        assert!(matches!(
            place(&nul, &PlaceOpts::sync("e")),
            Err(PlaceError::NulValue { .. })
        ));
        assert!(matches!(
            place(&bad_var, &PlaceOpts::sync("bad..env")),
            Err(PlaceError::Name { .. })
        ));
        let mut aws = provider_secret("aws");
        aws.values.remove("secret_key");
        assert!(matches!(
            place(&aws, &PlaceOpts::sync("e")),
            Err(PlaceError::Provider(ProviderError::MissingKey { .. }))
        ));
    }

    /// A placement from the wire is checked against its secret: the
    /// provider's whole set of files, variables naming values it has, and the
    /// provider's checks on the values.
    #[test]
    fn verify_refuses_what_place_would_not_make() {
        let ssh = provider_secret("ssh");
        let one_file = Placement {
            files: vec![PlacedFile {
                path: "~/.ssh/k".into(),
            }],
            env: None,
        };
        assert!(matches!(
            verify(&ssh, &one_file),
            Err(PlaceError::Invalid { .. })
        ));
        let pair = place(&ssh, &PlaceOpts::request(Some("~/.ssh/k"), None, true)).unwrap();
        verify(&ssh, &pair).unwrap();

        let openai = provider_secret("openai");
        let mut placed = place(&openai, &PlaceOpts::sync("e")).unwrap();
        verify(&openai, &placed).unwrap();
        let env = placed.env.as_mut().unwrap();
        env.vars.insert("OTHER".into(), "no_such_key".into());
        let err = verify(&openai, &placed).unwrap_err();
        assert!(matches!(err, PlaceError::Invalid { .. }), "{err}");
        placed.env.as_mut().unwrap().vars = [("LD_X-Y".to_string(), "api_key".to_string())].into();
        assert!(matches!(
            verify(&openai, &placed),
            Err(PlaceError::Name { .. })
        ));

        let mut bad = provider_secret("huggingface");
        let placed = place(&bad, &PlaceOpts::sync("e")).unwrap();
        bad.values.insert("token".into(), SecretValue::from("a\nb"));
        assert!(matches!(
            verify(&bad, &placed),
            Err(PlaceError::Provider(ProviderError::InvalidValue { .. }))
        ));
    }

    #[test]
    fn as_request_places_the_same() {
        for id in ["aws", "ssh", "openai", "kubernetes"] {
            let s = provider_secret(id);
            let placed = place(&s, &PlaceOpts::both("e")).unwrap();
            let (path, env) = placed.as_request();
            let again = place(
                &s,
                &PlaceOpts::request(path.as_deref(), env.as_deref(), false),
            );
            assert_eq!(again.unwrap(), placed, "{id}");
        }
    }
}
