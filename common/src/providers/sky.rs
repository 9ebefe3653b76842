//! SkyPilot's key pair: `~/.ssh/sky-key` and `~/.ssh/sky-key.pub`
//! (`private_key`, `public_key`), handled like any ssh key pair.

use super::ssh::KeyPair;

/// The sky provider.
pub static SKY: KeyPair = KeyPair::new("sky", Some("~/.ssh/sky-key"));

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::{Provider, SourceFile};
    use crate::secret_value::{values_from, SecretText};

    #[test]
    fn default_files_and_parse() {
        assert_eq!(SKY.default_path(), Some("~/.ssh/sky-key"));
        assert_eq!(
            SKY.files("~/.ssh/sky-key"),
            ["~/.ssh/sky-key", "~/.ssh/sky-key.pub"]
        );
        let (a, b) = (
            SecretText::new("PRIV\n".into()),
            SecretText::new("PUB\n".into()),
        );
        let v = SKY
            .parse(&[
                SourceFile {
                    path: "~/.ssh/sky-key",
                    text: &a,
                },
                SourceFile {
                    path: "~/.ssh/sky-key.pub",
                    text: &b,
                },
            ])
            .unwrap();
        assert_eq!(
            v,
            values_from([("private_key", "PRIV\n"), ("public_key", "PUB\n")])
        );
    }
}
