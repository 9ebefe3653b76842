//! AWS: `~/.aws/credentials`, INI profile `[default]` with
//! `aws_access_key_id`, `aws_secret_access_key` and, when present,
//! `aws_session_token`. Merges key by key inside the profile: other profiles,
//! comments, `region` and every other line stay byte for byte. A secret that
//! replaces the access key without a session token also removes the
//! profile's `aws_session_token` / `aws_security_token` (botocore would sign
//! with the new key and the old token); without overwrite they are named in
//! the conflict. Values with leading or trailing whitespace are refused (the
//! file format trims them, so they would conflict with themselves forever).

use super::ini_file::IniFile;
use super::Facts;
use crate::formats::ini::IniLayout;

/// The AWS provider.
pub static AWS: IniFile = IniFile {
    facts: Facts::new(
        "aws",
        Some("~/.aws/credentials"),
        &[
            ("access_key", "AWS_ACCESS_KEY_ID"),
            ("secret_key", "AWS_SECRET_ACCESS_KEY"),
        ],
        &["access_key", "secret_key", "session_token"],
    )
    .requiring(&["access_key", "secret_key"]),
    layout: IniLayout {
        section: "default",
        keys: &[
            ("access_key", "aws_access_key_id"),
            ("secret_key", "aws_secret_access_key"),
            ("session_token", "aws_session_token"),
        ],
        companions: &["aws_session_token", "aws_security_token"],
    },
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::testing::{
        conflict_then_overwrite, expect_write, merge, parse_one, parses_to,
    };
    use crate::providers::{Provider, ProviderError};
    use crate::secret_value::values_from;
    use crate::secret_value::SecretText;

    const CREDENTIALS: &str = "~/.aws/credentials";

    pub(crate) const FIXTURE: &str =
        "[default]\naws_access_key_id = AKIAFIXTURE\naws_secret_access_key = fixture/secret+key\n";

    const RICH: &str = "# managed by me\n[default]\naws_access_key_id = AKIAOLD\naws_secret_access_key = oldsecret\naws_session_token = TOKEN//keep==\nregion = eu-west-3\n\n[profile-b]\naws_access_key_id = AKIAB\naws_secret_access_key = bsecret\n";

    #[test]
    fn parses_fixture() {
        let v = parse_one(&AWS, RICH).unwrap();
        assert_eq!(v["session_token"].expose_str(), Some("TOKEN//keep=="));
        let want = [
            ("access_key", "AKIAFIXTURE"),
            ("secret_key", "fixture/secret+key"),
        ];
        parses_to(&AWS, FIXTURE, &want);
    }

    #[test]
    fn overwrite_merges_at_key_level_keeping_everything_else() {
        let existing = SecretText::new(RICH.into());
        let new = values_from([("access_key", "AKIANEW"), ("secret_key", "newsecret")]);
        let keys = ["access_key", "aws_session_token", "secret_key"];
        let text = conflict_then_overwrite(&AWS, (CREDENTIALS, &existing), &new, &keys);
        assert_eq!(
            text,
            RICH.replace("AKIAOLD", "AKIANEW")
                .replace("oldsecret", "newsecret")
                .replace("aws_session_token = TOKEN//keep==\n", "")
        );
        // session token carried when given
        let with_token = values_from([
            ("access_key", "A"),
            ("secret_key", "S"),
            ("session_token", "T"),
        ]);
        let text = expect_write(merge(&AWS, CREDENTIALS, None, &with_token, false));
        assert_eq!(
            text,
            "[default]\naws_access_key_id = A\naws_secret_access_key = S\naws_session_token = T\n"
        );
    }

    /// A profile holding temporary (STS) credentials, both token spellings.
    const STS: &str = "[default]\naws_access_key_id = ASIAOLD\naws_secret_access_key = stssecret\naws_session_token = OLDTOKEN\naws_security_token = OLDTOKEN\nregion = eu-west-3\n\n[other]\naws_session_token = KEEP\n";

    #[test]
    fn new_keys_take_the_stale_session_token_with_them() {
        let existing = SecretText::new(STS.into());
        let long_term = values_from([("access_key", "AKIANEW"), ("secret_key", "newsecret")]);
        // Without overwrite the conflict names the tokens that would go.
        let keys = [
            "access_key",
            "aws_session_token",
            "aws_security_token",
            "secret_key",
        ];
        let text = conflict_then_overwrite(&AWS, (CREDENTIALS, &existing), &long_term, &keys);
        assert_eq!(
            text,
            "[default]\naws_access_key_id = AKIANEW\naws_secret_access_key = newsecret\nregion = eu-west-3\n\n[other]\naws_session_token = KEEP\n"
        );
        // New temporary credentials replace the token and drop the legacy spelling.
        let sts = values_from([
            ("access_key", "ASIANEW"),
            ("secret_key", "s2"),
            ("session_token", "NEWTOKEN"),
        ]);
        let text = expect_write(merge(&AWS, CREDENTIALS, Some(&existing), &sts, true));
        assert!(text.contains("aws_session_token = NEWTOKEN\n"), "{text}");
        assert!(!text.contains("OLDTOKEN"), "{text}");
        // The same access key (only the secret changes) leaves the token alone.
        let same_key = values_from([("access_key", "ASIAOLD"), ("secret_key", "rotated")]);
        let text = expect_write(merge(&AWS, CREDENTIALS, Some(&existing), &same_key, true));
        assert!(text.contains("aws_session_token = OLDTOKEN\n"), "{text}");
    }

    #[test]
    fn values_with_outer_whitespace_refused_naming_the_key() {
        for (key, value) in [
            ("access_key", " AKIAPAD"),
            ("secret_key", "padded-secret\t"),
            ("session_token", " QWERTY "),
        ] {
            let mut v = values_from([("access_key", "AKIA"), ("secret_key", "s")]);
            v.insert(key.into(), value.into());
            let err = AWS.validate(&v).unwrap_err().to_string();
            assert!(err.contains(key) && err.contains("whitespace"), "{err}");
            assert!(!err.contains(value.trim()), "{err}");
            assert!(merge(&AWS, "~/c", None, &v, true).is_err());
        }
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
