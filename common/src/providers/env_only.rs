//! The providers that live only in environment variables, as one table:
//! docker (SkyPilot's `SKYPILOT_DOCKER_*`), anthropic, cohere, langchain,
//! openai and pinecone. Each is a value key -> variable map and no default
//! file; given an explicit path, their values are kept as a JSON object file
//! like a generic secret. Never reads or writes a file unless a path is given.

use super::generic::{parse_json_object, values_from_object};
use super::{Facts, Provider, ProviderError, SourceFile};
use crate::secret_value::Values;

/// An env-only provider.
#[derive(Debug)]
pub struct EnvOnly {
    /// Its id, vars and keys; never a default file.
    pub facts: Facts,
}

/// One provider whose only value is `api_key` in the variable `var`.
const fn api_key(id: &'static str, vars: &'static [(&'static str, &'static str)]) -> EnvOnly {
    EnvOnly {
        facts: Facts::new(id, None, vars, &["api_key"]),
    }
}

/// Docker registry credentials for SkyPilot.
pub static DOCKER: EnvOnly = EnvOnly {
    facts: Facts::new(
        "docker",
        None,
        &[
            ("username", "SKYPILOT_DOCKER_USERNAME"),
            ("password", "SKYPILOT_DOCKER_PASSWORD"),
            ("server", "SKYPILOT_DOCKER_SERVER"),
        ],
        &["username", "password", "server"],
    ),
};
pub static ANTHROPIC: EnvOnly = api_key("anthropic", &[("api_key", "ANTHROPIC_API_KEY")]);
pub static COHERE: EnvOnly = api_key("cohere", &[("api_key", "COHERE_API_KEY")]);
pub static LANGCHAIN: EnvOnly = api_key("langchain", &[("api_key", "LANGCHAIN_API_KEY")]);
pub static OPENAI: EnvOnly = api_key("openai", &[("api_key", "OPENAI_API_KEY")]);
pub static PINECONE: EnvOnly = api_key("pinecone", &[("api_key", "PINECONE_API_KEY")]);

impl Provider for EnvOnly {
    fn facts(&self) -> &Facts {
        &self.facts
    }
    fn parse(&self, files: &[SourceFile<'_>]) -> Result<Values, ProviderError> {
        let f = super::first_file(self, files)?;
        parse_json_object(f.path, f.text).map(values_from_object)
    }
}
