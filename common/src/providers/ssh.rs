//! SSH key pairs: `~/.ssh/<key>` and `~/.ssh/<key>.pub` (two files,
//! `private_key` and `public_key`). Each file is replaced whole, byte for
//! byte; equal content is left untouched. [`KeyPair`] is shared with `sky`.
//! An ssh secret without a path lives at `~/.ssh/<key>`, never at `~/.ssh`
//! itself (see [`crate::apply::secret_paths`]).

use super::generic::{merge_json_object, parse_json_object, values_from_object};
use super::{Facts, FileMerge, FileRemove, Merge, Provider, ProviderError, Removal, SourceFile};
use crate::formats::whole::{self, Compare};
use crate::secret_value::Values;

/// A provider whose secret is a private key file and its `.pub`.
#[derive(Debug)]
pub struct KeyPair {
    /// Its id and default file; the keys are always [`KEYS`], no vars.
    facts: Facts,
}

impl KeyPair {
    /// The key pair provider `id`, its pair at `default_path` when given.
    pub const fn new(id: &'static str, default_path: Option<&'static str>) -> Self {
        Self {
            facts: Facts::new(id, default_path, &[], &KEYS),
        }
    }
}

/// The ssh provider.
pub static SSH: KeyPair = KeyPair::new("ssh", None);

/// Value key of file number `index`.
const KEYS: [&str; 2] = ["private_key", "public_key"];

impl Provider for KeyPair {
    fn facts(&self) -> &Facts {
        &self.facts
    }
    fn files(&self, path: &str) -> Vec<String> {
        vec![path.to_owned(), format!("{path}.pub")]
    }
    /// Key files directly in `~/.ssh` (`<key>`, `<key>.pub`); the policy's
    /// deny-list keeps `authorized_keys`, `rc`, `config`... out of it.
    fn locations(&self) -> Vec<String> {
        vec!["~/.ssh/*".to_owned()]
    }
    fn parse(&self, files: &[SourceFile<'_>]) -> Result<Values, ProviderError> {
        match files {
            [private, public] => Ok([
                (
                    KEYS[0].to_owned(),
                    private.text.expose_secret().to_owned().into(),
                ),
                (
                    KEYS[1].to_owned(),
                    public.text.expose_secret().to_owned().into(),
                ),
            ]
            .into()),
            // a single JSON file given explicitly
            [one] => parse_json_object(one.path, one.text).map(values_from_object),
            _ => Err(ProviderError::NoPath {
                provider: self.id().into(),
            }),
        }
    }
    fn merge(&self, file: &FileMerge<'_>) -> Result<Merge, ProviderError> {
        let Some(key) = KEYS.get(file.index) else {
            return merge_json_object(file);
        };
        let Some(value) = file.values.get(*key) else {
            return Ok(Merge::Unchanged);
        };
        let text = whole::text_of(self.id(), key, value)?;
        Ok(whole::merge(
            Compare::Exact,
            key,
            file.existing,
            text,
            text.to_owned(),
            file.overwrite,
        ))
    }
    fn remove(&self, file: &FileRemove<'_>) -> Result<Removal, ProviderError> {
        Ok(
            match KEYS
                .get(file.index)
                .and_then(|k| file.values.get(*k))
                .and_then(|v| v.expose_str())
            {
                Some(text) => whole::remove(Compare::Exact, file.existing, text),
                None => Removal::Unchanged,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::testing::merge;
    use crate::secret_value::{values_from, SecretText};

    const PRIVATE: &str = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAAfixture\n-----END OPENSSH PRIVATE KEY-----\n";
    const PUBLIC: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIfixture me@host\n";

    #[test]
    fn two_files_byte_for_byte() {
        assert_eq!(
            SSH.files("~/.ssh/id_ed25519"),
            ["~/.ssh/id_ed25519", "~/.ssh/id_ed25519.pub"]
        );
        let (a, b) = (
            SecretText::new(PRIVATE.into()),
            SecretText::new(PUBLIC.into()),
        );
        let v = SSH
            .parse(&[
                SourceFile {
                    path: "~/.ssh/k",
                    text: &a,
                },
                SourceFile {
                    path: "~/.ssh/k.pub",
                    text: &b,
                },
            ])
            .unwrap();
        assert_eq!(
            v,
            values_from([("private_key", PRIVATE), ("public_key", PUBLIC)])
        );
        assert_eq!(
            merge(&SSH, "~/.ssh/k", Some(&a), &v, false).unwrap(),
            Merge::Unchanged
        );
        assert_eq!(
            SSH.merge(&FileMerge {
                index: 1,
                path: "~/.ssh/k.pub",
                existing: Some(&b),
                values: &v,
                overwrite: false
            })
            .unwrap(),
            Merge::Unchanged
        );
        let other = SecretText::new(PRIVATE.replace("fixture", "other"));
        assert_eq!(
            merge(&SSH, "~/.ssh/k", Some(&other), &v, false).unwrap(),
            Merge::Conflict(vec!["private_key".into()])
        );
        assert_eq!(
            SSH.remove(&FileRemove {
                index: 1,
                path: "~/.ssh/k.pub",
                existing: &b,
                values: &v
            })
            .unwrap(),
            Removal::Delete
        );
        assert!(matches!(
            SSH.validate(&values_from([("public_key", PUBLIC)])),
            Err(ProviderError::MissingKey { .. })
        ));
    }
}
