//! GitHub CLI: `~/.config/gh/hosts.yml`. The values are the `github.com:`
//! mapping (user, oauth_token, git_protocol, ...). Merging changes only that
//! host's keys; other hosts and keys stay (the YAML is re-rendered, so
//! comments are not kept when the file changes; an unchanged file is untouched).
//! From the store, only the credential keys are taken ([`Provider::check_data`]).

use yaml_serde::{Mapping, Value as Yaml};

use super::{Facts, FileMerge, FileRemove, Merge, Provider, ProviderError, Removal, SourceFile};
use crate::formats::yaml;
use crate::secret_value::{SecretValue, Values};

/// The GitHub provider.
#[derive(Debug)]
pub struct GitHub;

/// The one instance.
pub static GITHUB: GitHub = GitHub;

const HOST: &str = "github.com";
/// gh's per-host map of accounts (gh 2.40 and later).
const USERS: &str = "users";

fn host_entry<'a>(path: &str, doc: &'a mut Mapping) -> Result<&'a mut Mapping, ProviderError> {
    let entry = doc
        .entry(yaml::key(HOST))
        .or_insert_with(|| Yaml::Mapping(Mapping::new()));
    if entry.is_null() {
        *entry = Yaml::Mapping(Mapping::new());
    }
    entry
        .as_mapping_mut()
        .ok_or_else(|| ProviderError::malformed(path, None, "github.com is not a mapping"))
}

/// What the provider declares.
static FACTS: Facts = Facts::new(
    "github",
    Some("~/.config/gh/hosts.yml"),
    &[],
    &["user", "oauth_token", "git_protocol"],
)
.requiring(&["oauth_token"]);

impl Provider for GitHub {
    fn facts(&self) -> &Facts {
        &FACTS
    }
    /// The value keys, and gh's multi-account `users` map (user name ->
    /// `oauth_token`); not the per-host settings gh also reads from
    /// `hosts.yml` (`editor`, `pager`, `browser`: programs it runs).
    fn check_data(&self, values: &Values) -> Result<(), String> {
        let mut keys = self.value_keys().to_vec();
        keys.push(USERS);
        super::only_fields(&keys, values.keys(), "")?;
        let Some(users) = values.get(USERS) else {
            return Ok(());
        };
        let users = users
            .expose_secret()
            .as_object()
            .ok_or_else(|| USERS.to_owned())?;
        for (i, user) in users.values().enumerate() {
            let at = format!("{USERS}[{i}]");
            match user {
                serde_json::Value::Null => {}
                serde_json::Value::Object(fields) => {
                    super::only_fields(&["oauth_token"], fields.keys(), &at)?
                }
                _ => return Err(at),
            }
        }
        Ok(())
    }
    fn parse(&self, files: &[SourceFile<'_>]) -> Result<Values, ProviderError> {
        let f = super::first_file(self, files)?;
        let doc = yaml::parse_mapping(f.path, f.text)?;
        let Some(entry) = doc.get(HOST) else {
            return Err(ProviderError::malformed(
                f.path,
                None,
                "no github.com entry",
            ));
        };
        let serde_json::Value::Object(map) = yaml::to_json(f.path, entry)? else {
            return Err(ProviderError::malformed(
                f.path,
                None,
                "github.com is not a mapping",
            ));
        };
        let values: Values = map
            .into_iter()
            .map(|(k, v)| (k, SecretValue::new(v)))
            .collect();
        super::check_required(self, &values)
            .map_err(|_| ProviderError::malformed(f.path, None, "github.com has no oauth_token"))?;
        Ok(values)
    }
    fn merge(&self, file: &FileMerge<'_>) -> Result<Merge, ProviderError> {
        let mut doc = yaml::existing_mapping(file.path, file.existing)?;
        host_entry(file.path, &mut doc)?;
        yaml::merge_values(file, doc, |doc, key, new, tally| {
            tally.merge_key(host_entry(file.path, doc)?, key, new);
            Ok(())
        })
    }
    fn remove(&self, file: &FileRemove<'_>) -> Result<Removal, ProviderError> {
        let mut doc = yaml::parse_mapping(file.path, file.existing)?;
        let Some(entry) = doc.get_mut(HOST).and_then(Yaml::as_mapping_mut) else {
            return Ok(Removal::Unchanged);
        };
        let before = entry.len();
        for (key, value) in file.values {
            if entry.get(key.as_str()) == Some(&yaml::from_json(value.expose_secret())) {
                entry.remove(key.as_str());
            }
        }
        if entry.len() == before {
            return Ok(Removal::Unchanged);
        }
        if entry.is_empty() {
            doc.remove(HOST);
        }
        Ok(if doc.is_empty() {
            Removal::Delete
        } else {
            Removal::Write(yaml::render(&doc))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::testing::{
        assert_same_kept_other_conflicts, expect_write, merge, parse_one, parses_to, remove,
    };
    use crate::secret_value::{values_from, SecretText};

    const HOSTS: &str = "github.com:\n    user: octo\n    oauth_token: gho_fixture\n    git_protocol: https\nghe.corp.example:\n    user: me\n    oauth_token: ghe_other\n";

    #[test]
    fn parse_merge_keeps_other_hosts_and_remove() {
        let want = [
            ("user", "octo"),
            ("oauth_token", "gho_fixture"),
            ("git_protocol", "https"),
        ];
        let v = parses_to(&GITHUB, HOSTS, &want);
        let existing = SecretText::new(HOSTS.into());
        let new = values_from([("oauth_token", "gho_new")]);
        let file = ("~/h", &existing);
        assert_same_kept_other_conflicts(&GITHUB, file, &v, &new, &["oauth_token"]);
        let out = expect_write(merge(&GITHUB, "~/h", Some(&existing), &new, true));
        let doc: yaml_serde::Value = yaml_serde::from_str(&out).unwrap();
        assert_eq!(
            doc["ghe.corp.example"]["oauth_token"].as_str(),
            Some("ghe_other")
        );
        assert_eq!(doc["github.com"]["oauth_token"].as_str(), Some("gho_new"));
        assert_eq!(doc["github.com"]["user"].as_str(), Some("octo"));
        let Removal::Write(left) = remove(&GITHUB, "~/h", &existing, &v).unwrap() else {
            panic!("expected a write")
        };
        let doc: yaml_serde::Value = yaml_serde::from_str(left.expose_secret()).unwrap();
        assert!(doc.get("github.com").is_none());
        assert_eq!(doc["ghe.corp.example"]["user"].as_str(), Some("me"));
        assert!(parse_one(&GITHUB, "other.host:\n  user: x\n").is_err());
    }
}
