//! Anthropic API key: environment variables only, no default file.
//! Never reads or writes a file unless a path is given explicitly.

use super::env_only::EnvOnly;

/// The anthropic provider.
pub static ANTHROPIC: EnvOnly = EnvOnly {
    id: "anthropic",
    vars: &[("api_key", "ANTHROPIC_API_KEY")],
    keys: &["api_key"],
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_vars_only() {
        crate::providers::env_only::check_env_only(&ANTHROPIC, &[("api_key", "ANTHROPIC_API_KEY")]);
    }
}
