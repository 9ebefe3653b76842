//! Lambda Cloud: `~/.lambda_cloud/lambda_keys`, a flat file with a line
//! `api_key = <key>`. Only that line is changed or removed; other lines stay.

use super::ini_file::IniFile;
use super::Facts;
use crate::formats::ini::{IniLayout, GLOBAL};

/// The Lambda provider.
pub static LAMBDA: IniFile = IniFile {
    facts: Facts::new(
        "lambda",
        Some("~/.lambda_cloud/lambda_keys"),
        &[],
        &["api_key"],
    ),
    layout: IniLayout {
        section: GLOBAL,
        keys: &[("api_key", "api_key")],
        companions: &[],
    },
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::testing::{
        conflict_then_overwrite, expect_write, merge, parse_one, parses_to, remove,
    };
    use crate::providers::Removal;
    use crate::secret_value::values_from;
    use crate::secret_value::SecretText;

    #[test]
    fn api_key_line_replaced_other_lines_kept() {
        let text = "# lambda\napi_key = secret_old\nregion = us-tx-1\n";
        parses_to(&LAMBDA, text, &[("api_key", "secret_old")]);
        let existing = SecretText::new(text.into());
        let v = values_from([("api_key", "secret_new")]);
        let out = conflict_then_overwrite(&LAMBDA, ("~/l", &existing), &v, &["api_key"]);
        assert_eq!(out, "# lambda\napi_key = secret_new\nregion = us-tx-1\n");
        assert_eq!(
            expect_write(merge(&LAMBDA, "~/l", None, &v, false)),
            "api_key = secret_new\n"
        );
        let removed = remove(
            &LAMBDA,
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
