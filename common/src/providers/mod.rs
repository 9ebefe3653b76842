//! The provider registry: what each builtin provider (aws, gcp, ssh, ...)
//! knows about its default file, its environment variables, its value keys,
//! and how to parse, render, merge and un-merge its file format.
//!
//! One module per provider; [`PROVIDERS`] lists them in the reference order.
//! Any other provider id is a generic provider secret ([`generic::GENERIC`]):
//! arbitrary values, a JSON file when a path is given.
//! Providers work on text in memory; reading and writing files is
//! [`crate::apply`]'s job. Errors name files, lines and keys, never values.

use std::collections::BTreeMap;

use thiserror::Error;

use crate::fsutil::PathError;
use crate::secret_value::{SecretText, Values};

pub mod aws;
pub mod azure;
pub mod env_only;
pub mod gcp;
pub mod generic;
pub mod github;
pub mod huggingface;
pub mod ini_file;
pub mod kubernetes;
pub mod lambda;
pub mod sky;
pub mod ssh;
pub mod wandb;

/// Something wrong with a provider, its file or its values.
#[derive(Debug, Error)]
pub enum ProviderError {
    #[error("unknown provider {id:?}; builtin providers are: {valid}")]
    Unknown { id: String, valid: String },
    #[error("{path}{}: {reason}", line.map(|l| format!(" line {l}")).unwrap_or_default())]
    Malformed {
        path: String,
        line: Option<usize>,
        reason: String,
    },
    #[error("{provider} secret is missing value {key:?}")]
    MissingKey { provider: String, key: String },
    #[error("{provider} value {key:?} {reason}")]
    InvalidValue {
        provider: String,
        key: String,
        reason: String,
    },
    #[error("{provider} has no file: give a path")]
    NoPath { provider: String },
    #[error(transparent)]
    Path(#[from] PathError),
}

impl ProviderError {
    /// A malformed-file error.
    pub fn malformed(path: &str, line: Option<usize>, reason: impl Into<String>) -> Self {
        Self::Malformed {
            path: path.to_owned(),
            line,
            reason: reason.into(),
        }
    }
}

/// A file a provider reads: its display path (`~/...`) and its text.
#[derive(Debug, Clone, Copy)]
pub struct SourceFile<'a> {
    pub path: &'a str,
    pub text: &'a SecretText,
}

/// One file a secret's values are merged into: the argument of
/// [`Provider::merge`].
#[derive(Debug, Clone, Copy)]
pub struct FileMerge<'a> {
    /// Which of the provider's files (the order of [`Provider::files`]).
    pub index: usize,
    /// Its display path (`~/...`), for errors.
    pub path: &'a str,
    /// Its text, when it exists.
    pub existing: Option<&'a SecretText>,
    /// The secret's values.
    pub values: &'a Values,
    /// Replace keys that hold other values (else they are a [`Merge::Conflict`]).
    pub overwrite: bool,
}

/// One existing file a secret's values are taken out of: the argument of
/// [`Provider::remove`].
#[derive(Debug, Clone, Copy)]
pub struct FileRemove<'a> {
    /// Which of the provider's files (the order of [`Provider::files`]).
    pub index: usize,
    /// Its display path (`~/...`), for errors.
    pub path: &'a str,
    /// Its text.
    pub existing: &'a SecretText,
    /// The values the secret put there.
    pub values: &'a Values,
}

/// What merging values into one file comes to.
#[derive(Debug, PartialEq, Eq)]
pub enum Merge {
    /// The file already holds exactly these values: leave it untouched.
    Unchanged,
    /// Write this new text.
    Write(SecretText),
    /// The file holds other values for these keys (and overwrite was off).
    Conflict(Vec<String>),
}

impl Merge {
    /// The outcome of merging key by key: a conflict when any key conflicted,
    /// else the rendered text when something changed, else unchanged.
    pub fn decide(
        conflicts: Vec<String>,
        changed: bool,
        render: impl FnOnce() -> SecretText,
    ) -> Self {
        if !conflicts.is_empty() {
            Merge::Conflict(conflicts)
        } else if changed {
            Merge::Write(render())
        } else {
            Merge::Unchanged
        }
    }
}

/// What removing a secret's values from one file comes to.
#[derive(Debug, PartialEq, Eq)]
pub enum Removal {
    /// Nothing of the secret is in the file.
    Unchanged,
    /// Write this text (other content kept).
    Write(SecretText),
    /// Nothing else is left: remove the file.
    Delete,
}

/// What a provider declares as plain data: its id, default file, env vars
/// and value keys. Each provider has one, read through [`Provider::facts`].
#[derive(Debug)]
pub struct Facts {
    /// Provider id (`aws`).
    pub id: &'static str,
    /// Default file, `~/...` form; `None` for env-only providers and ssh.
    pub default_path: Option<&'static str>,
    /// Value key -> environment variable name.
    pub env_vars: &'static [(&'static str, &'static str)],
    /// The value keys; empty when the values are a whole document (gcp, kubernetes).
    pub value_keys: &'static [&'static str],
    /// Keys that must be present ([`Facts::new`]: all of the value keys).
    pub required_keys: &'static [&'static str],
}

impl Facts {
    /// The facts of a provider that requires all of its value keys.
    pub const fn new(
        id: &'static str,
        default_path: Option<&'static str>,
        env_vars: &'static [(&'static str, &'static str)],
        value_keys: &'static [&'static str],
    ) -> Self {
        Self {
            id,
            default_path,
            env_vars,
            value_keys,
            required_keys: value_keys,
        }
    }

    /// The same facts, requiring only `keys`.
    pub const fn requiring(self, keys: &'static [&'static str]) -> Self {
        Self {
            required_keys: keys,
            ..self
        }
    }
}

/// One builtin provider. Implementations are unit structs in their own module.
pub trait Provider: Sync + Send {
    /// What this provider declares: id, default file, env vars, value keys.
    fn facts(&self) -> &Facts;
    /// Provider id (`aws`).
    fn id(&self) -> &'static str {
        self.facts().id
    }
    /// Default file, `~/...` form; `None` for env-only providers and ssh.
    fn default_path(&self) -> Option<&'static str> {
        self.facts().default_path
    }
    /// Value key -> environment variable name.
    fn env_vars(&self) -> &'static [(&'static str, &'static str)] {
        self.facts().env_vars
    }
    /// The value keys; empty when the values are a whole document (gcp, kubernetes).
    fn value_keys(&self) -> &'static [&'static str] {
        self.facts().value_keys
    }
    /// Keys that must be present; default: all of [`Provider::value_keys`].
    fn required_keys(&self) -> &'static [&'static str] {
        self.facts().required_keys
    }
    /// The files this provider keeps for a secret at `path` (ssh: the key and its `.pub`).
    fn files(&self, path: &str) -> Vec<String> {
        vec![path.to_owned()]
    }
    /// Where this provider's credential files live: the only places a path
    /// that did not come from the user on this machine may point to (see
    /// [`crate::policy`]). Each is `~/dir/` (anything below it), `~/dir/*`
    /// (a file directly in it) or `~/file`. The default is the default
    /// file's directory, or the file itself when it lies directly in home;
    /// nothing for a provider without a default file.
    fn locations(&self) -> Vec<String> {
        match self
            .default_path()
            .and_then(|p| p.rsplit_once('/').map(|(d, _)| (p, d)))
        {
            Some((path, "~")) => self.files(path),
            Some((_, dir)) => vec![format!("{dir}/")],
            None => vec![],
        }
    }
    /// Whether its env vars go wherever its file goes: the provider keeps a
    /// secret in both places (wandb: the `~/.netrc` entry and
    /// `WANDB_API_KEY`, each read by a different client), so a secret placed
    /// in its file also sets its vars, however it was made (detected from the
    /// file, from the env, or created with explicit values). Default: no (a
    /// secret kept in a file goes to that file only).
    fn vars_with_file(&self) -> bool {
        false
    }
    /// Check that `values` carry data only, for a secret that did not come
    /// from the user on this machine ([`crate::policy::data_only`]): every
    /// field is one of this provider's data fields, so none names a program
    /// to run (kube `exec`, AWS `credential_process`, docker `credsStore`,
    /// gcloud `credential_source.executable`, a gh per-host `editor`...). An
    /// allow-list: the error is the first field that is not on it, as a path
    /// (`users[0].user.exec`). The default allows the declared
    /// [`Provider::value_keys`] (a provider whose values are a whole
    /// document declares none and overrides this).
    fn check_data(&self, values: &Values) -> Result<(), String> {
        only_fields(self.value_keys(), values.keys(), "")
    }
    /// Value keys never taken from a secret that did not come from the user
    /// on this machine (dropped, not refused: kubernetes' `current-context`,
    /// so a kubeconfig from the store never picks the context `kubectl` uses).
    fn remote_dropped(&self) -> &'static [&'static str] {
        &[]
    }
    /// Whether the files hold a secret of this provider at all (a shared
    /// file such as `~/.netrc` may hold only other tools' entries); when not,
    /// extraction finds nothing there rather than an error.
    fn present(&self, _files: &[SourceFile<'_>]) -> bool {
        true
    }
    /// Extract values from the files, given in the order of [`Provider::files`].
    fn parse(&self, files: &[SourceFile<'_>]) -> Result<Values, ProviderError>;
    /// Merge the values into one of its files ([`FileMerge`]). Without
    /// `overwrite`, keys holding other values are a [`Merge::Conflict`].
    /// The default is the JSON-object file format (per top-level key), used by
    /// generic secrets, env-only providers given a path, and gcp.
    fn merge(&self, file: &FileMerge<'_>) -> Result<Merge, ProviderError> {
        generic::merge_json_object(file)
    }
    /// Remove what the values put into one of its files ([`FileRemove`]),
    /// keeping everything else. The default is the JSON-object file format,
    /// like [`Provider::merge`].
    fn remove(&self, file: &FileRemove<'_>) -> Result<Removal, ProviderError> {
        generic::remove_json_object(file)
    }
    /// Check values before anything is written: required keys present, and
    /// no value the file format cannot hold (a newline in an INI value...).
    fn validate(&self, values: &Values) -> Result<(), ProviderError> {
        check_required(self, values)
    }
    /// The files for `values` at `path`, rendered from nothing (aligned with
    /// [`Provider::files`]): what [`Provider::merge`] writes into missing files.
    fn render(&self, path: &str, values: &Values) -> Result<Vec<SecretText>, ProviderError> {
        self.validate(values)?;
        self.files(path)
            .iter()
            .enumerate()
            .map(|(index, path)| {
                let file = FileMerge {
                    index,
                    path,
                    existing: None,
                    values,
                    overwrite: true,
                };
                match self.merge(&file)? {
                    Merge::Write(text) => Ok(text),
                    _ => Ok(SecretText::default()),
                }
            })
            .collect()
    }
}

/// Every required key of `provider` is in `values`.
pub fn check_required<P: Provider + ?Sized>(
    provider: &P,
    values: &Values,
) -> Result<(), ProviderError> {
    for key in provider.required_keys() {
        if !values.contains_key(*key) {
            return Err(ProviderError::MissingKey {
                provider: provider.id().into(),
                key: (*key).into(),
            });
        }
    }
    Ok(())
}

/// The first (usually only) file given to [`Provider::parse`].
pub(crate) fn first_file<'a, 'b, P: Provider + ?Sized>(
    provider: &P,
    files: &'b [SourceFile<'a>],
) -> Result<&'b SourceFile<'a>, ProviderError> {
    files.first().ok_or_else(|| ProviderError::NoPath {
        provider: provider.id().into(),
    })
}

impl std::fmt::Debug for dyn Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Provider({})", self.id())
    }
}

/// The builtin providers, in the reference order.
pub static PROVIDERS: &[&dyn Provider] = &[
    &aws::AWS,
    &azure::AZURE,
    &gcp::GCP,
    &github::GITHUB,
    &huggingface::HUGGINGFACE,
    &kubernetes::KUBERNETES,
    &lambda::LAMBDA,
    &env_only::DOCKER,
    &ssh::SSH,
    &sky::SKY,
    &env_only::ANTHROPIC,
    &env_only::COHERE,
    &env_only::LANGCHAIN,
    &env_only::OPENAI,
    &env_only::PINECONE,
    &wandb::WANDB,
];

/// The builtin provider with this id.
pub fn lookup(id: &str) -> Option<&'static dyn Provider> {
    PROVIDERS.iter().copied().find(|p| p.id() == id)
}

/// The builtin provider with this id, or an error listing the valid ids.
pub fn builtin(id: &str) -> Result<&'static dyn Provider, ProviderError> {
    lookup(id).ok_or_else(|| ProviderError::Unknown {
        id: id.to_owned(),
        valid: builtin_ids().join(", "),
    })
}

/// The provider that handles secrets of `provider` (generic for any unknown id or none).
pub fn for_secret(provider: Option<&str>) -> &'static dyn Provider {
    provider.and_then(lookup).unwrap_or(&generic::GENERIC)
}

/// Ids of the builtin providers, in order.
pub fn builtin_ids() -> Vec<&'static str> {
    PROVIDERS.iter().map(|p| p.id()).collect()
}

/// The default env var map of a provider, as owned strings.
pub fn env_var_map(provider: &dyn Provider) -> BTreeMap<String, String> {
    provider
        .env_vars()
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// Every key of `keys` is one of `allowed`; else the first one that is not,
/// as a field path under `at` (`users[0].user` + `exec`), shown safely
/// ([`field_name`]).
pub fn only_fields<'a>(
    allowed: &[&str],
    keys: impl IntoIterator<Item = &'a String>,
    at: &str,
) -> Result<(), String> {
    match keys.into_iter().find(|k| !allowed.contains(&k.as_str())) {
        None => Ok(()),
        Some(key) if at.is_empty() => Err(field_name(key)),
        Some(key) => Err(format!("{at}.{}", field_name(key))),
    }
}

/// A field name from untrusted input, as shown in an error: as it is when it
/// is a plain name (letters, digits, `_`, `-`, `.`, at most 64 bytes), else
/// quoted with escapes and cut, so no terminal escape or long text gets through.
pub fn field_name(key: &str) -> String {
    let plain = !key.is_empty()
        && key.len() <= 64
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if plain {
        key.to_owned()
    } else {
        crate::fsutil::cut(&format!("{key:?}"))
    }
}

/// Refuse a string value containing a newline (for line-based formats).
pub fn reject_newlines(provider: &str, values: &Values) -> Result<(), ProviderError> {
    for (key, value) in values {
        if let Some(s) = value.expose_str() {
            if s.contains('\n') || s.contains('\r') {
                return Err(ProviderError::InvalidValue {
                    provider: provider.into(),
                    key: key.clone(),
                    reason: "contains a newline, which this file format cannot hold".into(),
                });
            }
        }
    }
    Ok(())
}

/// Helpers for the providers' unit tests.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// Parse one file's text as `provider` would read it from `~/f`.
    pub(crate) fn parse_one(provider: &dyn Provider, text: &str) -> Result<Values, ProviderError> {
        let text = SecretText::new(text.to_owned());
        provider.parse(&[SourceFile {
            path: "~/f",
            text: &text,
        }])
    }

    /// Parse `text` as [`parse_one`] does, assert the values are `want`,
    /// and return them.
    pub(crate) fn parses_to(provider: &dyn Provider, text: &str, want: &[(&str, &str)]) -> Values {
        let values = parse_one(provider, text).unwrap();
        assert_eq!(
            values,
            crate::secret_value::values_from(want.iter().copied())
        );
        values
    }

    /// Merging `same` into `existing` (the first file, at `path`) leaves it
    /// unchanged; merging `other` without overwrite is a conflict on `keys`.
    pub(crate) fn assert_same_kept_other_conflicts(
        provider: &dyn Provider,
        (path, existing): (&str, &SecretText),
        same: &Values,
        other: &Values,
        keys: &[&str],
    ) {
        let existing = Some(existing);
        assert_eq!(
            merge(provider, path, existing, same, false).unwrap(),
            Merge::Unchanged
        );
        assert_eq!(
            merge(provider, path, existing, other, false).unwrap(),
            conflict(keys)
        );
    }

    /// Merging `values` into `existing` (the first file, at `path`) without
    /// overwrite is a conflict on `keys`; with overwrite it writes: the text.
    pub(crate) fn conflict_then_overwrite(
        provider: &dyn Provider,
        (path, existing): (&str, &SecretText),
        values: &Values,
        keys: &[&str],
    ) -> String {
        let existing = Some(existing);
        assert_eq!(
            merge(provider, path, existing, values, false).unwrap(),
            conflict(keys)
        );
        expect_write(merge(provider, path, existing, values, true))
    }

    /// A conflict on `keys`, in this order.
    fn conflict(keys: &[&str]) -> Merge {
        Merge::Conflict(keys.iter().map(|k| (*k).to_owned()).collect())
    }

    /// `provider.merge` of its first file, at `path`.
    pub(crate) fn merge(
        provider: &dyn Provider,
        path: &str,
        existing: Option<&SecretText>,
        values: &Values,
        overwrite: bool,
    ) -> Result<Merge, ProviderError> {
        provider.merge(&FileMerge {
            index: 0,
            path,
            existing,
            values,
            overwrite,
        })
    }

    /// `provider.remove` from its first file, at `path`.
    pub(crate) fn remove(
        provider: &dyn Provider,
        path: &str,
        existing: &SecretText,
        values: &Values,
    ) -> Result<Removal, ProviderError> {
        provider.remove(&FileRemove {
            index: 0,
            path,
            existing,
            values,
        })
    }

    /// The text of a `Merge::Write`, panicking on anything else.
    pub(crate) fn expect_write(merge: Result<Merge, ProviderError>) -> String {
        match merge {
            Ok(Merge::Write(text)) => text.expose_secret().to_owned(),
            other => panic!("expected a write, got {other:?}"),
        }
    }

    #[test]
    fn registry_order_and_ids() {
        assert_eq!(
            builtin_ids(),
            [
                "aws",
                "azure",
                "gcp",
                "github",
                "huggingface",
                "kubernetes",
                "lambda",
                "docker",
                "ssh",
                "sky",
                "anthropic",
                "cohere",
                "langchain",
                "openai",
                "pinecone",
                "wandb"
            ]
        );
        let err = builtin("nope").unwrap_err().to_string();
        assert!(err.contains("aws, azure") && err.contains("wandb"), "{err}");
        assert_eq!(for_secret(Some("custom")).id(), "generic");
        assert_eq!(for_secret(Some("aws")).id(), "aws");
    }
}
