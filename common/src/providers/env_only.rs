//! The shape shared by providers that live only in environment variables
//! (docker, anthropic, cohere, langchain, openai, pinecone, wandb): a value
//! key -> variable map and no default file. Given an explicit path, their
//! values are kept as a JSON object file like a generic secret.

use super::generic::{parse_json_object, values_from_object};
use super::{Provider, ProviderError, SourceFile};
use crate::secret_value::Values;

/// An env-only provider.
#[derive(Debug)]
pub struct EnvOnly {
    pub id: &'static str,
    pub vars: &'static [(&'static str, &'static str)],
    pub keys: &'static [&'static str],
}

impl Provider for EnvOnly {
    fn id(&self) -> &'static str {
        self.id
    }
    fn default_path(&self) -> Option<&'static str> {
        None
    }
    fn env_vars(&self) -> &'static [(&'static str, &'static str)] {
        self.vars
    }
    fn value_keys(&self) -> &'static [&'static str] {
        self.keys
    }
    fn parse(&self, files: &[SourceFile<'_>]) -> Result<Values, ProviderError> {
        let f = super::first_file(self, files)?;
        parse_json_object(f.path, f.text).map(values_from_object)
    }
}

/// Test helper: the provider reads its values from its variables and nothing else.
#[cfg(test)]
pub(crate) fn check_env_only(p: &EnvOnly, vars: &[(&str, &str)]) {
    assert_eq!(p.default_path(), None);
    assert_eq!(p.env_vars(), vars);
    assert_eq!(p.value_keys().len(), vars.len());
    assert!(super::lookup(p.id).is_some(), "{} is registered", p.id);
    let v = crate::secret_value::values_from(vars.iter().map(|(k, _)| (*k, "x")));
    assert!(p.validate(&v).is_ok());
    assert!(p.validate(&Values::new()).is_err());
}
