//! Azure: `~/.azure/clouds.config`, INI section `[AzureCloud]` with
//! `subscription`. Merges that one key; everything else in the file stays.

use super::{reject_newlines, Merge, Provider, ProviderError, Removal, SourceFile};
use crate::formats::ini::IniLayout;
use crate::secret_value::{SecretText, Values};

/// The Azure provider.
#[derive(Debug)]
pub struct Azure;

/// The one instance.
pub static AZURE: Azure = Azure;

const LAYOUT: IniLayout = IniLayout {
    section: "AzureCloud",
    keys: &[("subscription_id", "subscription")],
};

impl Provider for Azure {
    fn id(&self) -> &'static str {
        "azure"
    }
    fn default_path(&self) -> Option<&'static str> {
        Some("~/.azure/clouds.config")
    }
    fn env_vars(&self) -> &'static [(&'static str, &'static str)] {
        &[("subscription_id", "AZURE_SUBSCRIPTION_ID")]
    }
    fn value_keys(&self) -> &'static [&'static str] {
        &["subscription_id"]
    }
    fn parse(&self, files: &[SourceFile<'_>]) -> Result<Values, ProviderError> {
        let f = super::first_file(self, files)?;
        LAYOUT.parse(f.path, f.text, self.required_keys())
    }
    fn merge(
        &self,
        _index: usize,
        path: &str,
        existing: Option<&SecretText>,
        values: &Values,
        overwrite: bool,
    ) -> Result<Merge, ProviderError> {
        LAYOUT.merge(self.id(), path, existing, values, overwrite)
    }
    fn remove(
        &self,
        _index: usize,
        path: &str,
        existing: &SecretText,
        values: &Values,
    ) -> Result<Removal, ProviderError> {
        LAYOUT.remove(path, existing, values)
    }
    fn validate(&self, values: &Values) -> Result<(), ProviderError> {
        super::check_required(self, values)?;
        reject_newlines(self.id(), values)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::testing::{expect_write, parse_one};
    use crate::secret_value::values_from;

    #[test]
    fn parses_and_merges_keeping_other_sections() {
        let text =
            "[AzureCloud]\nsubscription = sub-1234\n\n[AzureChinaCloud]\nsubscription = other\n";
        assert_eq!(
            parse_one(&AZURE, text).unwrap(),
            values_from([("subscription_id", "sub-1234")])
        );
        let existing = SecretText::new(text.into());
        let v = values_from([("subscription_id", "sub-9")]);
        let out = expect_write(AZURE.merge(0, "~/.azure/clouds.config", Some(&existing), &v, true));
        assert_eq!(out, text.replace("sub-1234", "sub-9"));
        assert!(parse_one(&AZURE, "[Other]\nsubscription = x\n").is_err());
    }
}
