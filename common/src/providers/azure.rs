//! Azure: `~/.azure/clouds.config`, INI section `[AzureCloud]` with
//! `subscription`. Merges that one key; everything else in the file stays.

use super::ini_file::IniFile;
use super::Facts;
use crate::formats::ini::IniLayout;

/// The Azure provider.
pub static AZURE: IniFile = IniFile {
    facts: Facts::new(
        "azure",
        Some("~/.azure/clouds.config"),
        &[("subscription_id", "AZURE_SUBSCRIPTION_ID")],
        &["subscription_id"],
    ),
    layout: IniLayout {
        section: "AzureCloud",
        keys: &[("subscription_id", "subscription")],
        companions: &[],
    },
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::testing::{expect_write, merge, parse_one, parses_to};
    use crate::secret_value::values_from;
    use crate::secret_value::SecretText;

    #[test]
    fn parses_and_merges_keeping_other_sections() {
        let text =
            "[AzureCloud]\nsubscription = sub-1234\n\n[AzureChinaCloud]\nsubscription = other\n";
        parses_to(&AZURE, text, &[("subscription_id", "sub-1234")]);
        let existing = SecretText::new(text.into());
        let v = values_from([("subscription_id", "sub-9")]);
        let out = expect_write(merge(
            &AZURE,
            "~/.azure/clouds.config",
            Some(&existing),
            &v,
            true,
        ));
        assert_eq!(out, text.replace("sub-1234", "sub-9"));
        assert!(parse_one(&AZURE, "[Other]\nsubscription = x\n").is_err());
    }
}
