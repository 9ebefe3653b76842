//! Cohere API key: environment variables only, no default file.
//! Never reads or writes a file unless a path is given explicitly.

use super::env_only::EnvOnly;

/// The cohere provider.
pub static COHERE: EnvOnly = EnvOnly {
    id: "cohere",
    vars: &[("api_key", "COHERE_API_KEY")],
    keys: &["api_key"],
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_vars_only() {
        crate::providers::env_only::check_env_only(&COHERE, &[("api_key", "COHERE_API_KEY")]);
    }
}
