//! The secret model: a [`Secret`] is a name and values; with a provider it is
//! a provider secret that also knows where it lives on disk (`path`) and in
//! the environment (`env_vars`, value key -> variable name).
//! `Debug` prints names, paths and keys, never values.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::secret_value::Values;

/// A base secret (`provider: None`) or a provider secret.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Secret {
    /// Name, unique in the local store (`aws`, `ssh-id_rsa`, `my_secret`).
    pub name: String,
    /// Provider id (`aws`, `openai`, ...) or any other string for a generic
    /// provider secret; `None` for a base secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// Where the secret lives on disk, `~/...` form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Value key -> environment variable name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_vars: Option<BTreeMap<String, String>>,
    /// The values, by key.
    #[serde(default)]
    pub values: Values,
}

/// A provider secret is a [`Secret`] whose `provider` is set.
pub type ProviderSecret = Secret;

impl Secret {
    /// A base secret with these values.
    pub fn base(name: impl Into<String>, values: Values) -> Self {
        Self {
            name: name.into(),
            provider: None,
            path: None,
            env_vars: None,
            values,
        }
    }

    /// Whether this is a provider secret.
    pub fn is_provider(&self) -> bool {
        self.provider.is_some()
    }

    /// The value keys, in order.
    pub fn keys(&self) -> Vec<String> {
        self.values.keys().cloned().collect()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secret")
            .field("name", &self.name)
            .field("provider", &self.provider)
            .field("path", &self.path)
            .field("env_vars", &self.env_vars)
            .field("keys", &self.values.keys().collect::<Vec<_>>())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret_value::values_from;

    #[test]
    fn debug_shows_keys_not_values() {
        let mut s = Secret::base("x", values_from([("api_key", "sk-very-secret")]));
        s.provider = Some("openai".into());
        let out = format!("{s:?} {s:#?}");
        assert!(out.contains("api_key") && out.contains("openai"), "{out}");
        assert!(!out.contains("sk-very-secret"), "{out}");
    }
}
