//! Lambda Cloud: `~/.lambda_cloud/lambda_keys`, a flat file with a line
//! `api_key = <key>`. Only that line is changed or removed; other lines stay.

use super::{reject_newlines, Merge, Provider, ProviderError, Removal, SourceFile};
use crate::formats::ini::{IniLayout, GLOBAL};
use crate::secret_value::{SecretText, Values};

/// The Lambda provider.
#[derive(Debug)]
pub struct Lambda;

/// The one instance.
pub static LAMBDA: Lambda = Lambda;

const LAYOUT: IniLayout = IniLayout {
    section: GLOBAL,
    keys: &[("api_key", "api_key")],
};

impl Provider for Lambda {
    fn id(&self) -> &'static str {
        "lambda"
    }
    fn default_path(&self) -> Option<&'static str> {
        Some("~/.lambda_cloud/lambda_keys")
    }
    fn env_vars(&self) -> &'static [(&'static str, &'static str)] {
        &[]
    }
    fn value_keys(&self) -> &'static [&'static str] {
        &["api_key"]
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
    fn api_key_line_replaced_other_lines_kept() {
        let text = "# lambda\napi_key = secret_old\nregion = us-tx-1\n";
        assert_eq!(
            parse_one(&LAMBDA, text).unwrap(),
            values_from([("api_key", "secret_old")])
        );
        let existing = SecretText::new(text.into());
        let v = values_from([("api_key", "secret_new")]);
        assert_eq!(
            LAMBDA.merge(0, "~/l", Some(&existing), &v, false).unwrap(),
            Merge::Conflict(vec!["api_key".into()])
        );
        let out = expect_write(LAMBDA.merge(0, "~/l", Some(&existing), &v, true));
        assert_eq!(out, "# lambda\napi_key = secret_new\nregion = us-tx-1\n");
        assert_eq!(
            expect_write(LAMBDA.merge(0, "~/l", None, &v, false)),
            "api_key = secret_new\n"
        );
        let removed = LAMBDA
            .remove(
                0,
                "~/l",
                &existing,
                &values_from([("api_key", "secret_old")]),
            )
            .unwrap();
        assert_eq!(
            removed,
            Removal::Write(SecretText::new("# lambda\nregion = us-tx-1\n".into()))
        );
        let err = parse_one(&LAMBDA, "region = x\n").unwrap_err().to_string();
        assert!(err.contains("no api_key"), "{err}");
    }
}
