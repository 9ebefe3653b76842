//! Weights & Biases: `WANDB_API_KEY` in env processes, and the entry
//! `machine api.wandb.ai` / `login user` / `password KEY` in `~/.netrc`,
//! where `wandb login` keeps it and where `wandb` in a plain shell looks.
//! Both, always ([`Provider::vars_with_file`]): a secret placed in its file
//! sets the var too, whether it was detected or created with values.
//! Merging changes or appends only that entry (other machines' lines stay
//! byte for byte); removal takes out only that entry.

use super::{Facts, FileMerge, FileRemove, Merge, Provider, ProviderError, Removal, SourceFile};
use crate::formats::netrc::{self, Set};
use crate::secret_value::Values;

/// The wandb provider.
#[derive(Debug)]
pub struct Wandb;

/// The one instance.
pub static WANDB: Wandb = Wandb;

/// The host `wandb login` writes to `~/.netrc`.
const MACHINE: &str = "api.wandb.ai";

/// What the provider declares.
static FACTS: Facts = Facts::new(
    "wandb",
    Some("~/.netrc"),
    &[("api_key", "WANDB_API_KEY")],
    &["api_key"],
);

impl Provider for Wandb {
    fn facts(&self) -> &Facts {
        &FACTS
    }
    /// The key lives in both places: `wandb` in a plain shell reads
    /// `~/.netrc`, the SDK in a job reads `WANDB_API_KEY` first.
    fn vars_with_file(&self) -> bool {
        true
    }
    fn present(&self, files: &[SourceFile<'_>]) -> bool {
        files
            .first()
            .is_some_and(|f| netrc::password(f.text, MACHINE).is_some())
    }
    fn parse(&self, files: &[SourceFile<'_>]) -> Result<Values, ProviderError> {
        let f = super::first_file(self, files)?;
        let key = netrc::password(f.text, MACHINE).ok_or_else(|| {
            ProviderError::malformed(
                f.path,
                None,
                format!("no machine {MACHINE} with a password"),
            )
        })?;
        Ok([("api_key".to_owned(), key.to_owned().into())].into())
    }
    fn validate(&self, values: &Values) -> Result<(), ProviderError> {
        super::check_required(self, values)?;
        let key = crate::formats::ini::string_value(self.id(), "api_key", &values["api_key"])?;
        netrc::check_token(self.id(), "api_key", key)
    }
    fn merge(&self, file: &FileMerge<'_>) -> Result<Merge, ProviderError> {
        self.validate(file.values)?;
        let key = file.values["api_key"].expose_str().unwrap_or_default();
        Ok(
            match netrc::set_password(file.existing, MACHINE, "user", key, file.overwrite) {
                Set::Same => Merge::Unchanged,
                Set::Differs => Merge::Conflict(vec!["api_key".into()]),
                Set::Text(text) => Merge::Write(text),
            },
        )
    }
    fn remove(&self, file: &FileRemove<'_>) -> Result<Removal, ProviderError> {
        let Some(key) = file.values.get("api_key").and_then(|v| v.expose_str()) else {
            return Ok(Removal::Unchanged);
        };
        Ok(match netrc::remove_entry(file.existing, MACHINE, key) {
            None => Removal::Unchanged,
            Some(left) if left.expose_secret().trim().is_empty() => Removal::Delete,
            Some(left) => Removal::Write(left),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::testing::{
        assert_same_kept_other_conflicts, expect_write, merge, parse_one, remove,
    };
    use crate::secret_value::{values_from, SecretText};

    const OTHERS: &str = "machine github.com\n  login me\n  password ghp_keep\n";

    #[test]
    fn netrc_entry_merged_next_to_other_machines_and_removed_alone() {
        let existing = SecretText::new(OTHERS.into());
        let ours = values_from([("api_key", "fixture-wandb-api-key-0001")]);
        let out = expect_write(merge(&WANDB, "~/.netrc", Some(&existing), &ours, false));
        assert_eq!(
            out,
            format!("{OTHERS}machine api.wandb.ai\n  login user\n  password fixture-wandb-api-key-0001\n")
        );
        assert_eq!(parse_one(&WANDB, &out).unwrap(), ours);
        let merged = SecretText::new(out);
        let other = values_from([("api_key", "another-key")]);
        let file = ("~/.netrc", &merged);
        assert_same_kept_other_conflicts(&WANDB, file, &ours, &other, &["api_key"]);
        assert_eq!(
            remove(&WANDB, "~/.netrc", &merged, &ours).unwrap(),
            Removal::Write(SecretText::new(OTHERS.into()))
        );
        let alone = expect_write(merge(&WANDB, "~/.netrc", None, &ours, false));
        assert_eq!(
            remove(&WANDB, "~/.netrc", &SecretText::new(alone), &ours).unwrap(),
            Removal::Delete
        );
    }

    #[test]
    fn keys_netrc_cannot_hold_are_refused() {
        for bad in ["two words", "", "quo\"te", " pad"] {
            let err = WANDB
                .validate(&values_from([("api_key", bad)]))
                .unwrap_err()
                .to_string();
            assert!(err.contains("api_key"), "{err}");
        }
        // a netrc without the wandb machine holds no wandb secret
        let text = SecretText::new(OTHERS.into());
        assert!(!WANDB.present(&[SourceFile {
            path: "~/.netrc",
            text: &text
        }]));
    }
}
