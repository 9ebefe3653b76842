//! What every command needs from its surroundings: the home directory (all
//! state lives under `$HOME`, which tests point at a temp dir) and the
//! process environment, read through one function so tests can replace it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};

/// The surroundings of one command run.
#[derive(Debug, Clone)]
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
