//! Hugging Face: `~/.cache/huggingface/token`, the bare token. Writing
//! replaces the file's token (never appends a second one); a file with more
//! than one token line is reported as malformed, naming the line.

use super::{reject_newlines, Facts, FileMerge, FileRemove, Merge, Provider, ProviderError};
use super::{Removal, SourceFile};
use crate::formats::whole::{self, Compare};
use crate::secret_value::Values;

/// The Hugging Face provider.
#[derive(Debug)]
pub struct HuggingFace;

/// The one instance.
pub static HUGGINGFACE: HuggingFace = HuggingFace;

/// What the provider declares.
static FACTS: Facts = Facts::new(
    "huggingface",
    Some("~/.cache/huggingface/token"),
    &[("token", "HF_TOKEN")],
    &["token"],
);

impl Provider for HuggingFace {
    fn facts(&self) -> &Facts {
        &FACTS
    }
    /// The token file only, not its directory: `~/.cache/huggingface/` also
    /// holds Python that runs (`modules/transformers_modules/`, model code in
    /// `hub/`), and a one-line token is a valid line of Python.
    fn locations(&self) -> Vec<String> {
        vec!["~/.cache/huggingface/token".to_owned()]
    }
    fn parse(&self, files: &[SourceFile<'_>]) -> Result<Values, ProviderError> {
        let f = super::first_file(self, files)?;
        let token = whole::parse_single_line(f.path, f.text)?;
        Ok([("token".to_owned(), token.into())].into())
    }
    fn merge(&self, file: &FileMerge<'_>) -> Result<Merge, ProviderError> {
        let Some(value) = file.values.get("token") else {
            return Ok(Merge::Unchanged);
        };
        let token = whole::text_of(self.id(), "token", value)?.trim();
        // huggingface_hub writes the token without a final newline
        Ok(whole::merge(
            Compare::Trimmed,
            "token",
            file.existing,
            token,
            token.to_owned(),
            file.overwrite,
        ))
    }
    fn remove(&self, file: &FileRemove<'_>) -> Result<Removal, ProviderError> {
        Ok(
            match file.values.get("token").and_then(|v| v.expose_str()) {
                Some(token) => whole::remove(Compare::Trimmed, file.existing, token),
                None => Removal::Unchanged,
            },
        )
    }
    fn validate(&self, values: &Values) -> Result<(), ProviderError> {
        super::check_required(self, values)?;
        reject_newlines(self.id(), values)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::testing::{expect_write, merge, parses_to, remove};
    use crate::secret_value::{values_from, SecretText};

    #[test]
    fn overwrite_replaces_the_token() {
        parses_to(&HUGGINGFACE, "hf_abc\n", &[("token", "hf_abc")]);
        let existing = SecretText::new("hf_abc\n".into());
        let same = values_from([("token", "hf_abc")]);
        assert_eq!(
            merge(&HUGGINGFACE, "~/t", Some(&existing), &same, false).unwrap(),
            Merge::Unchanged
        );
        let new = values_from([("token", "hf_new")]);
        assert_eq!(
            expect_write(merge(&HUGGINGFACE, "~/t", Some(&existing), &new, true)),
            "hf_new"
        );
        assert!(HUGGINGFACE
            .validate(&values_from([("token", "a\nb")]))
            .is_err());
        assert_eq!(
            remove(&HUGGINGFACE, "~/t", &existing, &same).unwrap(),
            Removal::Delete
        );
    }
}
