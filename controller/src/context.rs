//! What every command needs from its surroundings: the home directory (all
//! state lives under `$HOME`, which tests point at a temp dir) and the
//! process environment, read through one function so tests can replace it.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};

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
    fn debug_lists_variable_names_not_values() {
        let env = [("OPENAI_API_KEY".to_string(), "sk-do-not-print".to_string())].into();
        let ctx = Context::for_home(Path::new("/h"), env);
        let out = format!("{ctx:?} {ctx:#?}");
        assert!(out.contains("OPENAI_API_KEY"), "{out}");
        assert!(!out.contains("sk-do-not-print"), "{out}");
    }
}
