//! Kubernetes: `~/.kube/config`. The values are the whole parsed kubeconfig,
//! one value per top-level key (apiVersion, clusters, contexts, users,
//! current-context, ...). Merging merges the named lists (`clusters`,
//! `contexts`, `users`) entry by entry by `name`: other entries stay; the same
//! name with different content is a conflict (`clusters/NAME`) unless
//! overwriting. `current-context` is set only when the file has none (a merge
//! never switches the user's context, with or without overwrite; it is
//! removed with the secret only when it still names the secret's context).
//! Other keys merge like JSON keys.
//!
//! A kubeconfig from the store carries data only ([`Provider::check_data`]):
//! its top-level keys and each user's fields are allow-listed, so a user
//! with `exec` or `auth-provider` (both run a program on every `kubectl`) is
//! refused, and its `current-context` is dropped ([`Provider::remote_dropped`]).

use yaml_serde::{Mapping, Value as Yaml};

use super::{Facts, FileMerge, FileRemove, Merge, Provider, ProviderError, Removal, SourceFile};
use crate::formats::yaml::{self, Tally};
use crate::secret_value::{SecretValue, Values};

/// The Kubernetes provider.
#[derive(Debug)]
pub struct Kubernetes;

/// The one instance.
pub static KUBERNETES: Kubernetes = Kubernetes;

/// Lists whose entries are identified by their `name`.
const NAMED_LISTS: &[&str] = &["clusters", "contexts", "users"];
/// The context kubectl uses: the user's choice once the file has one.
const CURRENT_CONTEXT: &str = "current-context";
/// Keys only removed when nothing else is left.
const STRUCTURAL: &[&str] = &["apiVersion", "kind", "preferences"];
/// The top-level keys a kubeconfig from the store may carry.
const DATA_KEYS: &[&str] = &[
    "apiVersion",
    "kind",
    "clusters",
    "contexts",
    "users",
    "preferences",
    "extensions",
    CURRENT_CONTEXT,
];
/// The fields of a `users[].user` from the store: credentials given as data
/// (tokens, certificates and keys, inline or as files, basic auth,
/// impersonation). Not `exec` nor `auth-provider` (they run a program), nor
/// `tokenFile` (it makes kubectl send a file of this machine, any file, as a
/// bearer token to a server the store chose).
const USER_FIELDS: &[&str] = &[
    "token",
    "client-certificate",
    "client-certificate-data",
    "client-key",
    "client-key-data",
    "username",
    "password",
    "as",
    "as-uid",
    "as-groups",
    "as-user-extra",
    "extensions",
];

fn entry_name(entry: &Yaml) -> Option<&str> {
    entry.get("name").and_then(Yaml::as_str)
}

fn list_mut<'a>(
    path: &str,
    doc: &'a mut Mapping,
    key: &str,
) -> Result<&'a mut Vec<Yaml>, ProviderError> {
    let slot = doc
        .entry(yaml::key(key))
        .or_insert_with(|| Yaml::Sequence(vec![]));
    if slot.is_null() {
        *slot = Yaml::Sequence(vec![]);
    }
    slot.as_sequence_mut()
        .ok_or_else(|| ProviderError::malformed(path, None, format!("{key} is not a list")))
}

/// Merge `entries` into the named list `key` entry by entry, by `name`: the
/// same name with other content is a conflict (`key/name`) unless overwriting.
fn merge_named(list: &mut Vec<Yaml>, key: &str, entries: Vec<Yaml>, tally: &mut Tally) {
    for entry in entries {
        let name = entry_name(&entry).map(str::to_owned);
        let at = name
            .as_deref()
            .and_then(|n| list.iter().position(|e| entry_name(e) == Some(n)))
            .or_else(|| list.iter().position(|e| *e == entry));
        match at {
            Some(i) if list[i] == entry => {}
            Some(_) if !tally.overwrite => tally
                .conflicts
                .push(format!("{key}/{}", name.unwrap_or_default())),
            Some(i) => {
                list[i] = entry;
                tally.changed = true;
            }
            None => {
                list.push(entry);
                tally.changed = true;
            }
        }
    }
}

/// What the provider declares.
static FACTS: Facts =
    Facts::new("kubernetes", Some("~/.kube/config"), &[], &[]).requiring(&["clusters"]);

impl Provider for Kubernetes {
    fn facts(&self) -> &Facts {
        &FACTS
    }
    fn check_data(&self, values: &Values) -> Result<(), String> {
        super::only_fields(DATA_KEYS, values.keys(), "")?;
        let Some(users) = values.get("users") else {
            return Ok(());
        };
        let Some(users) = users.expose_secret().as_array() else {
            return Err("users".into());
        };
        for (i, entry) in users.iter().enumerate() {
            let at = format!("users[{i}]");
            let entry = entry.as_object().ok_or_else(|| at.clone())?;
            super::only_fields(&["name", "user"], entry.keys(), &at)?;
            match entry.get("user") {
                None | Some(serde_json::Value::Null) => {}
                Some(serde_json::Value::Object(user)) => {
                    super::only_fields(USER_FIELDS, user.keys(), &format!("{at}.user"))?
                }
                Some(_) => return Err(format!("{at}.user")),
            }
        }
        Ok(())
    }
    fn remote_dropped(&self) -> &'static [&'static str] {
        &[CURRENT_CONTEXT]
    }
    fn parse(&self, files: &[SourceFile<'_>]) -> Result<Values, ProviderError> {
        let f = super::first_file(self, files)?;
        let doc = yaml::parse_mapping(f.path, f.text)?;
        let serde_json::Value::Object(map) = yaml::to_json(f.path, &Yaml::Mapping(doc))? else {
            return Err(ProviderError::malformed(f.path, None, "expected a mapping"));
        };
        if !map.contains_key("clusters") {
            return Err(ProviderError::malformed(f.path, None, "no clusters"));
        }
        Ok(map
            .into_iter()
            .map(|(k, v)| (k, SecretValue::new(v)))
            .collect())
    }
    fn merge(&self, file: &FileMerge<'_>) -> Result<Merge, ProviderError> {
        let doc = yaml::existing_mapping(file.path, file.existing)?;
        yaml::merge_values(file, doc, |doc, key, new, tally| {
            if NAMED_LISTS.contains(&key) {
                let Yaml::Sequence(entries) = new else {
                    return Err(ProviderError::InvalidValue {
                        provider: self.id().into(),
                        key: key.to_owned(),
                        reason: "must be a list".into(),
                    });
                };
                merge_named(list_mut(file.path, doc, key)?, key, entries, tally);
            } else if key == CURRENT_CONTEXT {
                // Set only when the file has none: never switch the user's context.
                let unset = match doc.get(CURRENT_CONTEXT) {
                    None => true,
                    Some(v) => v.is_null() || v.as_str() == Some(""),
                };
                if unset {
                    doc.insert(yaml::key(CURRENT_CONTEXT), new);
                    tally.changed = true;
                }
            } else {
                tally.merge_key(doc, key, new);
            }
            Ok(())
        })
    }
    fn remove(&self, file: &FileRemove<'_>) -> Result<Removal, ProviderError> {
        let mut doc = yaml::parse_mapping(file.path, file.existing)?;
        let mut removed = false;
        for (key, value) in file.values {
            let ours = yaml::from_json(value.expose_secret());
            if NAMED_LISTS.contains(&key.as_str()) {
                let (Some(Yaml::Sequence(list)), Yaml::Sequence(entries)) =
                    (doc.get_mut(key.as_str()), ours)
                else {
                    continue;
                };
                let before = list.len();
                list.retain(|e| !entries.contains(e));
                removed |= list.len() != before;
                if list.is_empty() {
                    doc.remove(key.as_str());
                }
            } else if !STRUCTURAL.contains(&key.as_str()) && doc.get(key.as_str()) == Some(&ours) {
                doc.remove(key.as_str());
                removed = true;
            }
        }
        if !removed {
            return Ok(Removal::Unchanged);
        }
        if doc
            .keys()
            .all(|k| k.as_str().is_some_and(|k| STRUCTURAL.contains(&k)))
        {
            return Ok(Removal::Delete);
        }
        Ok(Removal::Write(yaml::render(&doc)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::testing::{
        conflict_then_overwrite, expect_write, merge, parse_one, remove,
    };
    use crate::secret_value::SecretText;

    const OURS: &str = "apiVersion: v1\nkind: Config\nclusters:\n- name: prod\n  cluster:\n    server: https://prod:6443\ncontexts:\n- name: prod\n  context:\n    cluster: prod\n    user: admin\nusers:\n- name: admin\n  user:\n    token: kube-token-fixture\ncurrent-context: prod\n";
    const THEIRS: &str = "apiVersion: v1\nkind: Config\nclusters:\n- name: dev\n  cluster:\n    server: https://dev:6443\ncontexts:\n- name: dev\n  context:\n    cluster: dev\n    user: dev\nusers:\n- name: dev\n  user:\n    token: dev-token\n";

    fn names(doc: &yaml_serde::Value, list: &str) -> Vec<String> {
        doc[list]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn merge_keeps_other_clusters_contexts_users() {
        let ours = parse_one(&KUBERNETES, OURS).unwrap();
        let existing = SecretText::new(THEIRS.into());
        let out = expect_write(merge(
            &KUBERNETES,
            "~/.kube/config",
            Some(&existing),
            &ours,
            false,
        ));
        let doc: yaml_serde::Value = yaml_serde::from_str(&out).unwrap();
        assert_eq!(names(&doc, "clusters"), ["dev", "prod"]);
        assert_eq!(names(&doc, "contexts"), ["dev", "prod"]);
        assert_eq!(names(&doc, "users"), ["dev", "admin"]);
        assert_eq!(doc["current-context"].as_str(), Some("prod"));
        // merging again: unchanged
        let merged = SecretText::new(out.clone());
        assert_eq!(
            merge(&KUBERNETES, "~/k", Some(&merged), &ours, false).unwrap(),
            Merge::Unchanged
        );
        // remove takes exactly ours back out
        let Removal::Write(left) = remove(&KUBERNETES, "~/k", &merged, &ours).unwrap() else {
            panic!("expected a write")
        };
        let left: yaml_serde::Value = yaml_serde::from_str(left.expose_secret()).unwrap();
        let theirs: yaml_serde::Value = yaml_serde::from_str(THEIRS).unwrap();
        assert_eq!(left, theirs);
    }

    #[test]
    fn current_context_is_only_set_when_the_file_has_none() {
        let ours = parse_one(&KUBERNETES, OURS).unwrap();
        let mine = format!("{THEIRS}current-context: dev\n");
        for overwrite in [false, true] {
            let existing = SecretText::new(mine.clone());
            let out = expect_write(merge(&KUBERNETES, "~/k", Some(&existing), &ours, overwrite));
            let doc: yaml_serde::Value = yaml_serde::from_str(&out).unwrap();
            assert_eq!(doc["current-context"].as_str(), Some("dev"), "{overwrite}");
            assert_eq!(names(&doc, "clusters"), ["dev", "prod"]);
            // merging again changes nothing
            let merged = SecretText::new(out);
            assert_eq!(
                merge(&KUBERNETES, "~/k", Some(&merged), &ours, overwrite).unwrap(),
                Merge::Unchanged
            );
        }
        // an empty current-context is the file having none
        let existing = SecretText::new(format!("{THEIRS}current-context: \n"));
        let out = expect_write(merge(&KUBERNETES, "~/k", Some(&existing), &ours, false));
        let doc: yaml_serde::Value = yaml_serde::from_str(&out).unwrap();
        assert_eq!(doc["current-context"].as_str(), Some("prod"));
    }

    #[test]
    fn same_name_different_content_conflicts() {
        let ours = parse_one(&KUBERNETES, OURS).unwrap();
        let changed = OURS.replace("kube-token-fixture", "other-token");
        let existing = SecretText::new(changed);
        let file = ("~/k", &existing);
        let out = conflict_then_overwrite(&KUBERNETES, file, &ours, &["users/admin"]);
        assert!(out.contains("kube-token-fixture") && !out.contains("other-token"));
    }
}
