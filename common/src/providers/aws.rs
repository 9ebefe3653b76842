//! AWS: `~/.aws/credentials`, INI profile `[default]` with
//! `aws_access_key_id`, `aws_secret_access_key` and, when present,
//! `aws_session_token`. Merges key by key inside the profile: other profiles,
//! comments, `region` and every other line stay byte for byte.

use super::ini_file::IniFile;
use crate::formats::ini::IniLayout;

/// The AWS provider.
pub static AWS: IniFile = IniFile {
    id: "aws",
    path: "~/.aws/credentials",
    vars: &[
        ("access_key", "AWS_ACCESS_KEY_ID"),
        ("secret_key", "AWS_SECRET_ACCESS_KEY"),
    ],
    keys: &["access_key", "secret_key", "session_token"],
    required: &["access_key", "secret_key"],
    layout: IniLayout {
        section: "default",
        keys: &[
            ("access_key", "aws_access_key_id"),
            ("secret_key", "aws_secret_access_key"),
            ("session_token", "aws_session_token"),
        ],
    },
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::testing::{expect_write, parse_one};
    use crate::providers::{Merge, Provider, ProviderError};
    use crate::secret_value::values_from;
    use crate::secret_value::SecretText;

    pub(crate) const FIXTURE: &str =
        "[default]\naws_access_key_id = AKIAFIXTURE\naws_secret_access_key = fixture/secret+key\n";

    const RICH: &str = "# managed by me\n[default]\naws_access_key_id = AKIAOLD\naws_secret_access_key = oldsecret\naws_session_token = TOKEN//keep==\nregion = eu-west-3\n\n[profile-b]\naws_access_key_id = AKIAB\naws_secret_access_key = bsecret\n";

    #[test]
    fn parses_fixture() {
        let v = parse_one(&AWS, FIXTURE).unwrap();
        assert_eq!(
            v,
            values_from([
                ("access_key", "AKIAFIXTURE"),
                ("secret_key", "fixture/secret+key")
            ])
        );
        let v = parse_one(&AWS, RICH).unwrap();
        assert_eq!(v["session_token"].expose_str(), Some("TOKEN//keep=="));
    }

    #[test]
    fn overwrite_merges_at_key_level_keeping_everything_else() {
        let existing = SecretText::new(RICH.into());
        let new = values_from([("access_key", "AKIANEW"), ("secret_key", "newsecret")]);
        assert_eq!(
            AWS.merge(0, "~/.aws/credentials", Some(&existing), &new, false)
                .unwrap(),
            Merge::Conflict(vec!["access_key".into(), "secret_key".into()])
        );
        let text = expect_write(AWS.merge(0, "~/.aws/credentials", Some(&existing), &new, true));
        assert_eq!(
            text,
            RICH.replace("AKIAOLD", "AKIANEW")
                .replace("oldsecret", "newsecret")
        );
        // session token carried when given
        let with_token = values_from([
            ("access_key", "A"),
            ("secret_key", "S"),
            ("session_token", "T"),
        ]);
        let text = expect_write(AWS.merge(0, "~/.aws/credentials", None, &with_token, false));
        assert_eq!(
            text,
            "[default]\naws_access_key_id = A\naws_secret_access_key = S\naws_session_token = T\n"
        );
    }

    #[test]
    fn missing_key_and_newline_refused() {
        assert!(matches!(
            AWS.validate(&values_from([("access_key", "A")])),
            Err(ProviderError::MissingKey { .. })
        ));
        assert!(matches!(
            AWS.validate(&values_from([
                ("access_key", "A"),
                ("secret_key", "S\n[evil]")
            ])),
            Err(ProviderError::InvalidValue { .. })
        ));
        let err = parse_one(&AWS, "[default]\naws_access_key_id = A\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("aws_secret_access_key") && !err.contains("= A"),
            "{err}"
        );
    }
}
