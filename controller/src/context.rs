//! What every command needs from its surroundings: the home directory (all
//! state lives under `$HOME`, which tests point at a temp dir) and the
//! process environment, read through one function so tests can replace it.
//! With `--stdin-env` the environment comes from the first line of stdin
//! instead (the Python package keeps values out of its child's environ);
//! that line is held as a [`SecretText`] and never printed.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use common::SecretText;

/// The surroundings of one command run. `Debug` lists variable names only:
/// the environment holds API keys.
#[derive(Clone)]
pub struct Context {
    /// `$HOME`.
    pub home: PathBuf,
    /// Environment variables visible to the command (a snapshot).
    pub env: BTreeMap<String, String>,
}

impl Context {
    /// From the real process environment.
    pub fn from_process() -> Result<Self> {
        let home = std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .map(PathBuf::from)
            .context("HOME is not set")?;
        Ok(Self {
            home,
            env: std::env::vars().collect(),
        })
    }

    /// Like [`Context::from_process`], with the variables of the first line
    /// of `input` (stdin; one JSON object of string values) added over the
    /// process environment. The rest of `input` is left for the command.
    pub fn from_stdin_env(input: &mut impl std::io::BufRead) -> Result<Self> {
        let mut line = String::new();
        let read = input.read_line(&mut line);
        let line = SecretText::new(line);
        read.context("--stdin-env: read the environment from stdin")?;
        let env: BTreeMap<String, String> =
            serde_json::from_str(line.expose_secret()).map_err(|e| {
                crate::exit::UsageError(format!(
                    "--stdin-env: the first line of stdin is not a JSON object of strings \
                     ({:?} error at column {})",
                    e.classify(),
                    e.column()
                ))
            })?;
        let mut ctx = Self::from_process()?;
        ctx.env.extend(env);
        Ok(ctx)
    }

    /// For tests: this home and these variables only.
    pub fn for_home(home: &Path, env: BTreeMap<String, String>) -> Self {
        Self {
            home: home.to_path_buf(),
            env,
        }
    }

    /// One environment variable.
    pub fn var(&self, name: &str) -> Option<&str> {
        self.env.get(name).map(String::as_str)
    }

    /// `~/.rh`.
    pub fn rh_dir(&self) -> PathBuf {
        self.home.join(".rh")
    }
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("home", &self.home)
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stdin_env_is_added_over_the_process_environment_and_leaves_the_rest() {
        let mut input =
            std::io::Cursor::new(b"{\"OPENAI_API_KEY\":\"sk-from-stdin\"}\n{\"rest\":1}".to_vec());
        let ctx = Context::from_stdin_env(&mut input).unwrap();
        assert_eq!(ctx.var("OPENAI_API_KEY"), Some("sk-from-stdin"));
        assert!(ctx.var("PATH").is_some());
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut input, &mut rest).unwrap();
        assert_eq!(rest, "{\"rest\":1}");
        let err = Context::from_stdin_env(&mut std::io::Cursor::new(b"[\"sk-x\"]\n".to_vec()))
            .unwrap_err();
        assert_eq!(crate::exit::code_of(&err), crate::exit::USAGE);
        assert!(!format!("{err:#}").contains("sk-x"), "{err:#}");
    }

    #[test]
    fn debug_lists_variable_names_not_values() {
        let env = [("OPENAI_API_KEY".to_string(), "sk-do-not-print".to_string())].into();
        let ctx = Context::for_home(Path::new("/h"), env);
        let out = format!("{ctx:?} {ctx:#?}");
        assert!(out.contains("OPENAI_API_KEY"), "{out}");
        assert!(!out.contains("sk-do-not-print"), "{out}");
    }
}
