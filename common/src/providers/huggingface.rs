//! Hugging Face: `~/.cache/huggingface/token`, the bare token. Writing
//! replaces the file's token (never appends a second one); a file with more
//! than one token line is reported as malformed, naming the line.

use super::{reject_newlines, Facts, Merge, Provider, ProviderError, Removal, SourceFile};
use crate::formats::whole::{self, Compare};
use crate::secret_value::{SecretText, Values};

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
    fn merge(
        &self,
        _index: usize,
        _path: &str,
        existing: Option<&SecretText>,
        values: &Values,
        overwrite: bool,
    ) -> Result<Merge, ProviderError> {
        let Some(value) = values.get("token") else {
            return Ok(Merge::Unchanged);
        };
        let token = whole::text_of(self.id(), "token", value)?.trim();
        // huggingface_hub writes the token without a final newline
        Ok(whole::merge(
            Compare::Trimmed,
            "token",
            existing,
            token,
            token.to_owned(),
            overwrite,
        ))
    }
    fn remove(
        &self,
        _index: usize,
        _path: &str,
        existing: &SecretText,
        values: &Values,
    ) -> Result<Removal, ProviderError> {
        Ok(match values.get("token").and_then(|v| v.expose_str()) {
            Some(token) => whole::remove(Compare::Trimmed, existing, token),
            None => Removal::Unchanged,
        })
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
    fn overwrite_replaces_the_token() {
        assert_eq!(
            parse_one(&HUGGINGFACE, "hf_abc\n").unwrap(),
            values_from([("token", "hf_abc")])
        );
        let existing = SecretText::new("hf_abc\n".into());
        let same = values_from([("token", "hf_abc")]);
        assert_eq!(
            HUGGINGFACE
                .merge(0, "~/t", Some(&existing), &same, false)
                .unwrap(),
            Merge::Unchanged
        );
        let new = values_from([("token", "hf_new")]);
        assert_eq!(
            expect_write(HUGGINGFACE.merge(0, "~/t", Some(&existing), &new, true)),
            "hf_new"
        );
        assert!(HUGGINGFACE
            .validate(&values_from([("token", "a\nb")]))
            .is_err());
        assert_eq!(
            HUGGINGFACE.remove(0, "~/t", &existing, &same).unwrap(),
            Removal::Delete
        );
    }
}
