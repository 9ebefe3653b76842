//! Env definitions kept on this machine in `~/.rh/envs/NAME.json` (file 0600,
//! directory 0700, since plain vars may be sensitive): the secrets an env
//! brings in and its plain `KEY=VALUE` vars. `env sync` turns a definition
//! into an env process on each node. Var values are held as
//! [`SecretValue`]s and never appear in `Debug`, errors or listings.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use common::fsutil::{self, PathError};
use common::names::{validate_env_name, validate_env_var_name, validate_secret_name, NameError};
use common::{Secret, SecretValue};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Something wrong with an env definition or its file.
#[derive(Debug, Error)]
pub enum EnvError {
    #[error("unknown env {name:?}; defined envs: {known} (define one with `controller env create NAME`)")]
    NotFound { name: String, known: String },
    #[error("env file {path} is malformed: {reason}")]
    Malformed { path: String, reason: String },
    #[error("--var {arg:?} is not KEY=VALUE")]
    BadVar { arg: String },
    #[error(transparent)]
    Name(#[from] NameError),
    #[error(transparent)]
    Path(#[from] PathError),
}

/// An env as stored: its secrets (by name) and plain vars.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct EnvDef {
    pub name: String,
    #[serde(default)]
    pub secrets: Vec<String>,
    /// Plain variables, name -> value.
    #[serde(default)]
    pub vars: BTreeMap<String, SecretValue>,
}

impl fmt::Debug for EnvDef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnvDef")
            .field("name", &self.name)
            .field("secrets", &self.secrets)
            .field("vars", &self.vars.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl EnvDef {
    /// Check the env name, secret names and var names.
    pub fn validate(&self) -> Result<(), EnvError> {
        validate_env_name(&self.name)?;
        for s in &self.secrets {
            validate_secret_name(s)?;
        }
        for v in self.vars.keys() {
            validate_env_var_name(v)?;
        }
        Ok(())
    }
}

/// Parse `KEY=VALUE` arguments; the error names only the key part.
pub fn parse_vars(args: &[String]) -> Result<BTreeMap<String, SecretValue>, EnvError> {
    let mut vars = BTreeMap::new();
    for arg in args {
        let (key, value) = arg.split_once('=').ok_or_else(|| EnvError::BadVar {
            // No '=': the whole argument may be a value pasted by mistake; show its length only.
            arg: format!("<{} characters without '='>", arg.chars().count()),
        })?;
        validate_env_var_name(key)?;
        vars.insert(key.to_owned(), SecretValue::from(value));
    }
    Ok(vars)
}

/// `~/.rh/envs`.
pub fn envs_dir(home: &Path) -> PathBuf {
    home.join(".rh").join("envs")
}

fn env_file(home: &Path, name: &str) -> PathBuf {
    envs_dir(home).join(format!("{name}.json"))
}

/// Save an env (replacing one of the same name).
pub fn save(home: &Path, env: &EnvDef) -> Result<(), EnvError> {
    env.validate()?;
    fsutil::create_private_dir_all(&envs_dir(home))?;
    let mut json = serde_json::to_vec_pretty(env).expect("an env serializes");
    json.push(b'\n');
    fsutil::atomic_write(&env_file(home, &env.name), &json)?;
    Ok(())
}

/// Load an env by name.
pub fn load(home: &Path, name: &str) -> Result<EnvDef, EnvError> {
    validate_env_name(name)?;
    let path = env_file(home, name);
    let Some(text) = fsutil::read_optional(&path)? else {
        let known = list_names(home)?;
        return Err(EnvError::NotFound {
            name: name.into(),
            known: if known.is_empty() {
                "none".into()
            } else {
                known.join(", ")
            },
        });
    };
    // serde_json errors name a line and column, never the offending text.
    let env: EnvDef =
        serde_json::from_str(text.expose_secret()).map_err(|e| EnvError::Malformed {
            path: path.display().to_string(),
            reason: format!("line {} column {}", e.line(), e.column()),
        })?;
    if env.name != name {
        return Err(EnvError::Malformed {
            path: path.display().to_string(),
            reason: format!("it names env {:?}", env.name),
        });
    }
    env.validate()?;
    Ok(env)
}

/// Names of the defined envs, sorted.
pub fn list_names(home: &Path) -> Result<Vec<String>, EnvError> {
    let dir = envs_dir(home);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(PathError::io("read directory", &dir, e).into()),
    };
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_str()?.strip_suffix(".json")?.to_owned();
            validate_env_name(&name).is_ok().then_some(name)
        })
        .collect();
    names.sort();
    Ok(names)
}

/// Delete an env definition.
pub fn delete(home: &Path, name: &str) -> Result<(), EnvError> {
    load(home, name)?;
    fsutil::remove_file(&env_file(home, name))?;
    Ok(())
}

/// The name under which an env's plain vars are recorded on the nodes
/// (`env.NAME`): `env sync` sends them as that secret, `status` compares it.
pub fn vars_secret_name(env: &str) -> String {
    format!("env.{env}")
}

/// The env's plain vars as a base secret whose keys map to themselves
/// (each value set as the var of its own name).
pub fn vars_secret(env: &EnvDef) -> Secret {
    let mut s = Secret::base(vars_secret_name(&env.name), env.vars.clone());
    s.env_vars = Some(env.vars.keys().map(|k| (k.clone(), k.clone())).collect());
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn save_load_delete_private_and_redacted() {
        let home = tempfile::tempdir().unwrap();
        let h = home.path();
        let env = EnvDef {
            name: "train".into(),
            secrets: vec!["aws".into()],
            vars: parse_vars(&["MODE=fast-secret-mode".into()]).unwrap(),
        };
        save(h, &env).unwrap();
        let file = envs_dir(h).join("train.json");
        assert_eq!(
            std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let back = load(h, "train").unwrap();
        assert_eq!(back, env);
        assert_eq!(back.vars["MODE"].expose_str(), Some("fast-secret-mode"));
        let dbg = format!("{back:?} {back:#?}");
        assert!(
            dbg.contains("MODE") && !dbg.contains("fast-secret-mode"),
            "{dbg}"
        );
        assert_eq!(list_names(h).unwrap(), vec!["train"]);
        delete(h, "train").unwrap();
        let err = load(h, "train").unwrap_err().to_string();
        assert!(err.contains("unknown env \"train\""), "{err}");
    }

    #[test]
    fn bad_vars_never_echo_values() {
        let err = parse_vars(&["sk-live-123".into()]).unwrap_err().to_string();
        assert!(!err.contains("sk-live-123"), "{err}");
        assert!(parse_vars(&["1X=v".into()]).is_err());
        let ok = parse_vars(&["X=a=b".into()]).unwrap();
        assert_eq!(ok["X"].expose_str(), Some("a=b"));
    }
}
