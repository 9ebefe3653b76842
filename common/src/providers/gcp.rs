//! Google Cloud: `~/.config/gcloud/application_default_credentials.json`.
//! The values are the whole JSON object (client_id, client_secret,
//! refresh_token, type, ...); merging works per top-level key and keeps the
//! file's other keys. Paths are always resolved against the home directory,
//! so nothing is ever written under a literal `./~`.

use super::generic::{parse_json_object, values_from_object};
use super::{Provider, ProviderError, SourceFile};
use crate::secret_value::Values;

/// The GCP provider.
#[derive(Debug)]
pub struct Gcp;

/// The one instance.
pub static GCP: Gcp = Gcp;

impl Provider for Gcp {
    fn id(&self) -> &'static str {
        "gcp"
    }
    fn default_path(&self) -> Option<&'static str> {
        Some("~/.config/gcloud/application_default_credentials.json")
    }
    fn env_vars(&self) -> &'static [(&'static str, &'static str)] {
        &[
            ("client_id", "CLIENT_ID"),
            ("client_secret", "CLIENT_SECRET"),
        ]
    }
    fn value_keys(&self) -> &'static [&'static str] {
        &[]
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
    use crate::providers::testing::{expect_write, parse_one};
    use crate::secret_value::{values_from, SecretText};

    #[test]
    fn whole_object_and_merge_keeps_other_keys() {
        let text = r#"{"client_id": "cid", "client_secret": "csecret", "refresh_token": "r", "type": "authorized_user"}"#;
        let v = parse_one(&GCP, text).unwrap();
        assert_eq!(v.len(), 4);
        assert_eq!(v["client_secret"].expose_str(), Some("csecret"));
        let existing = SecretText::new(r#"{"quota_project_id": "p", "client_id": "cid"}"#.into());
        let out = expect_write(GCP.merge(
            0,
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
