//! Pinecone API key: environment variables only, no default file.
//! Never reads or writes a file unless a path is given explicitly.

use super::env_only::EnvOnly;

/// The pinecone provider.
pub static PINECONE: EnvOnly = EnvOnly {
    id: "pinecone",
    vars: &[("api_key", "PINECONE_API_KEY")],
    keys: &["api_key"],
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_vars_only() {
        crate::providers::env_only::check_env_only(&PINECONE, &[("api_key", "PINECONE_API_KEY")]);
    }
}
