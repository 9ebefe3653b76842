//! Files whose whole content is one value: a Hugging Face token, an SSH
//! private or public key. Merging replaces the file (never appends); equal
//! content is left untouched. Never quotes the content in errors.

use crate::providers::{Merge, ProviderError, Removal};
use crate::secret_value::{ct_eq_bytes, SecretText, SecretValue};

/// How a whole-file value compares to the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compare {
    /// Byte for byte (SSH keys).
    Exact,
    /// Ignoring surrounding whitespace (a token file with or without a final newline).
    Trimmed,
}

fn same(compare: Compare, file: &str, value: &str) -> bool {
    match compare {
        Compare::Exact => ct_eq_bytes(file.as_bytes(), value.as_bytes()),
        Compare::Trimmed => ct_eq_bytes(file.trim().as_bytes(), value.trim().as_bytes()),
    }
}

/// The value as a string, or an error naming the key.
pub fn text_of<'a>(
    provider: &str,
    key: &str,
    value: &'a SecretValue,
) -> Result<&'a str, ProviderError> {
    value
        .expose_str()
        .ok_or_else(|| ProviderError::InvalidValue {
            provider: provider.into(),
            key: key.into(),
            reason: "must be a string".into(),
        })
}

/// Merge one whole-file value: `rendered` is what the file should hold.
pub fn merge(
    compare: Compare,
    key: &str,
    existing: Option<&SecretText>,
    value: &str,
    rendered: String,
    overwrite: bool,
) -> Merge {
    match existing {
        Some(old) if same(compare, old.expose_secret(), value) => Merge::Unchanged,
        Some(_) if !overwrite => Merge::Conflict(vec![key.to_owned()]),
        _ => Merge::Write(SecretText::new(rendered)),
    }
}

/// Remove the file when it holds exactly this value.
pub fn remove(compare: Compare, existing: &SecretText, value: &str) -> Removal {
    if same(compare, existing.expose_secret(), value) {
        Removal::Delete
    } else {
        Removal::Unchanged
    }
}

/// A token file: one non-empty line (surrounding blank lines allowed).
pub fn parse_single_line(path: &str, text: &SecretText) -> Result<String, ProviderError> {
    let mut found: Option<&str> = None;
    for (n, line) in text.expose_secret().lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        if found.is_some() {
            return Err(ProviderError::malformed(
                path,
                Some(n + 1),
                "expected a single token, found a second line",
            ));
        }
        found = Some(line.trim());
    }
    found
        .map(str::to_owned)
        .ok_or_else(|| ProviderError::malformed(path, None, "the file is empty"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_never_appends() {
        let old = SecretText::new("hf_old\n".into());
        let token = |new: &str, overwrite| {
            merge(
                Compare::Trimmed,
                "token",
                Some(&old),
                new,
                new.into(),
                overwrite,
            )
        };
        assert_eq!(token("hf_old", false), Merge::Unchanged);
        assert_eq!(
            token("hf_new", false),
            Merge::Conflict(vec!["token".into()])
        );
        assert_eq!(
            token("hf_new", true),
            Merge::Write(SecretText::new("hf_new".into()))
        );
        let err = parse_single_line("~/t", &SecretText::new("hf_a\nhf_b\n".into()))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("~/t line 2:") && !err.contains("hf_"),
            "{err}"
        );
    }
}
