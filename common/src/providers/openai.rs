//! OpenAI API key: environment variables only, no default file.
//! Never reads or writes a file unless a path is given explicitly.

use super::env_only::EnvOnly;

/// The openai provider.
pub static OPENAI: EnvOnly = EnvOnly {
    id: "openai",
    vars: &[("api_key", "OPENAI_API_KEY")],
    keys: &["api_key"],
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_vars_only() {
        crate::providers::env_only::check_env_only(&OPENAI, &[("api_key", "OPENAI_API_KEY")]);
    }
}
