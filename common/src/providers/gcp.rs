//! Google Cloud: `~/.config/gcloud/application_default_credentials.json`.
//! The values are the whole JSON object (client_id, client_secret,
//! refresh_token, type, ...); merging works per top-level key and keeps the
//! file's other keys. Paths are always resolved against the home directory,
//! so nothing is ever written under a literal `./~`.
//!
//! Credentials from the store carry data only ([`Provider::check_data`]):
//! the fields of google-auth's credential types (`authorized_user`,
//! `service_account`, `external_account`, `external_account_authorized_user`,
//! `impersonated_service_account`), an `external_account` token read from a
//! file or a URL (never `credential_source.executable`, a command google-auth
//! runs), and the source credentials of an impersonated account checked the
//! same way.

use serde_json::{Map, Value};

use super::generic::{parse_json_object, values_from_object};
use super::{only_fields, Facts, Provider, ProviderError, SourceFile};
use crate::secret_value::Values;

/// The credential types google-auth loads from a file that run nothing.
const TYPES: &[&str] = &[
    "authorized_user",
    "service_account",
    "external_account",
    "external_account_authorized_user",
    "impersonated_service_account",
];

/// The top-level fields of those types.
const FIELDS: &[&str] = &[
    "type",
    "account",
    "audience",
    "auth_provider_x509_cert_url",
    "auth_uri",
    "client_email",
    "client_id",
    "client_secret",
    "client_x509_cert_url",
    "credential_source",
    "delegates",
    "private_key",
    "private_key_id",
    "project_id",
    "quota_project_id",
    "refresh_token",
    "revoke_url",
    "service_account_impersonation",
    "service_account_impersonation_url",
    "source_credentials",
    "subject_token_type",
    "token_info_url",
    "token_uri",
    "token_url",
    "universe_domain",
    "workforce_pool_user_project",
];

/// Where an `external_account` may read its subject token: a file, a URL
/// (with headers and a response format), or AWS metadata; not `executable`.
const SOURCE_FIELDS: &[&str] = &[
    "environment_id",
    "file",
    "format",
    "headers",
    "imdsv2_session_token_url",
    "region_url",
    "regional_cred_verification_url",
    "url",
];

/// Deepest chain of `source_credentials` checked (and accepted).
const MAX_SOURCE_DEPTH: usize = 4;

/// Check one credential object (the file, or a `source_credentials` in it)
/// against the allow-lists; `at` is its field path.
fn check_credential<'a>(
    fields: impl Iterator<Item = (&'a String, &'a Value)>,
    at: &str,
    depth: usize,
) -> Result<(), String> {
    let join = |key: &str| {
        if at.is_empty() {
            key.to_owned()
        } else {
            format!("{at}.{key}")
        }
    };
    for (key, value) in fields {
        only_fields(FIELDS, [key], at)?;
        match key.as_str() {
            "type" if !value.as_str().is_some_and(|t| TYPES.contains(&t)) => {
                return Err(join("type"));
            }
            "credential_source" => {
                let source: &Map<String, Value> = value.as_object().ok_or_else(|| join(key))?;
                only_fields(SOURCE_FIELDS, source.keys(), &join(key))?;
            }
            "source_credentials" => {
                let inner = value
                    .as_object()
                    .filter(|_| depth < MAX_SOURCE_DEPTH)
                    .ok_or_else(|| join(key))?;
                check_credential(inner.iter(), &join(key), depth + 1)?;
            }
            _ => {}
        }
    }
    Ok(())
}

/// The GCP provider.
#[derive(Debug)]
pub struct Gcp;

/// The one instance.
pub static GCP: Gcp = Gcp;

/// What the provider declares.
static FACTS: Facts = Facts::new(
    "gcp",
    Some("~/.config/gcloud/application_default_credentials.json"),
    &[
        ("client_id", "CLIENT_ID"),
        ("client_secret", "CLIENT_SECRET"),
    ],
    &[],
);

impl Provider for Gcp {
    fn facts(&self) -> &Facts {
        &FACTS
    }
    /// Files directly in `~/.config/gcloud/` (the ADC file, a named key
    /// file), not its subdirectories: `virtenv/` is a Python virtualenv the
    /// gcloud launcher can run, and its `bin/activate` is sourced by a shell.
    fn locations(&self) -> Vec<String> {
        vec!["~/.config/gcloud/*".to_owned()]
    }
    fn check_data(&self, values: &Values) -> Result<(), String> {
        check_credential(values.iter().map(|(k, v)| (k, v.expose_secret())), "", 0)
    }
    fn parse(&self, files: &[SourceFile<'_>]) -> Result<Values, ProviderError> {
        let f = super::first_file(self, files)?;
        let map = parse_json_object(f.path, f.text)?;
        if map.is_empty() {
            return Err(ProviderError::malformed(
                f.path,
                None,
                "the JSON object is empty",
            ));
        }
        Ok(values_from_object(map))
    }
    fn validate(&self, values: &Values) -> Result<(), ProviderError> {
        if values.is_empty() {
            return Err(ProviderError::MissingKey {
                provider: self.id().into(),
                key: "client_id".into(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::testing::{expect_write, merge, parse_one};
    use crate::secret_value::{values_from, SecretText};

    #[test]
    fn whole_object_and_merge_keeps_other_keys() {
        let text = r#"{"client_id": "cid", "client_secret": "csecret", "refresh_token": "r", "type": "authorized_user"}"#;
        let v = parse_one(&GCP, text).unwrap();
        assert_eq!(v.len(), 4);
        assert_eq!(v["client_secret"].expose_str(), Some("csecret"));
        let existing = SecretText::new(r#"{"quota_project_id": "p", "client_id": "cid"}"#.into());
        let out = expect_write(merge(
            &GCP,
            "~/g.json",
            Some(&existing),
            &values_from([("client_id", "cid"), ("client_secret", "s")]),
            false,
        ));
        let j: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            j,
            serde_json::json!({"quota_project_id": "p", "client_id": "cid", "client_secret": "s"})
        );
        let err = parse_one(&GCP, "{\n\"client_secret\": \"csecret\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line") && !err.contains("csecret"), "{err}");
    }
}
