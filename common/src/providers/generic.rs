//! Generic provider secrets (any provider id that is not builtin, and base
//! secrets given a path): arbitrary values, kept as a JSON object file.
//! Merging works per top-level key; other keys in the file stay.

use serde_json::{Map, Value};

use super::{Facts, FileMerge, FileRemove, Merge, Provider, ProviderError, Removal, SourceFile};
use crate::secret_value::{SecretText, SecretValue, Values};

/// The generic provider.
#[derive(Debug)]
pub struct Generic;

/// The one instance.
pub static GENERIC: Generic = Generic;

/// Parse a JSON object file; errors name the file and line.
pub fn parse_json_object(
    path: &str,
    text: &SecretText,
) -> Result<Map<String, Value>, ProviderError> {
    if text.expose_secret().trim().is_empty() {
        return Ok(Map::new());
    }
    match serde_json::from_str::<Value>(text.expose_secret()) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ProviderError::malformed(
            path,
            None,
            "expected a JSON object",
        )),
        // serde_json's message has no input in it, only line/column and a category
        Err(e) => Err(ProviderError::malformed(
            path,
            Some(e.line()),
            format!(
                "invalid JSON ({:?} error at column {})",
                e.classify(),
                e.column()
            ),
        )),
    }
}

/// Render a JSON object as a pretty file with a trailing newline.
pub fn render_json_object(map: &Map<String, Value>) -> SecretText {
    let mut text = serde_json::to_string_pretty(map).unwrap_or_default();
    text.push('\n');
    SecretText::new(text)
}

/// Merge the values into the JSON object in the file, top-level key by key.
pub fn merge_json_object(file: &FileMerge<'_>) -> Result<Merge, ProviderError> {
    let mut map = match file.existing {
        Some(text) => parse_json_object(file.path, text)?,
        None => Map::new(),
    };
    let mut changed = file.existing.is_none();
    let mut conflicts = Vec::new();
    for (key, value) in file.values {
        match map.get(key) {
            Some(old) if old == value.expose_secret() => {}
            Some(_) if !file.overwrite => conflicts.push(key.clone()),
            _ => {
                map.insert(key.clone(), value.expose_secret().clone());
                changed = true;
            }
        }
    }
    Ok(Merge::decide(conflicts, changed, || {
        render_json_object(&map)
    }))
}

/// Remove the keys of `values` whose value in the file is the same.
pub fn remove_json_object(file: &FileRemove<'_>) -> Result<Removal, ProviderError> {
    let mut map = parse_json_object(file.path, file.existing)?;
    let before = map.len();
    for (key, value) in file.values {
        if map.get(key) == Some(value.expose_secret()) {
            map.remove(key);
        }
    }
    Ok(if map.len() == before {
        Removal::Unchanged
    } else if map.is_empty() {
        Removal::Delete
    } else {
        Removal::Write(render_json_object(&map))
    })
}

/// Values from a JSON object.
pub fn values_from_object(map: Map<String, Value>) -> Values {
    map.into_iter()
        .map(|(k, v)| (k, SecretValue::new(v)))
        .collect()
}

/// What the provider declares.
static FACTS: Facts = Facts::new("generic", None, &[], &[]);

impl Provider for Generic {
    fn facts(&self) -> &Facts {
        &FACTS
    }
    /// Any JSON object: a generic secret declares no fields. From the
    /// store it is only written under the owner's `allow_paths` (it has no
    /// credential location of its own, see [`crate::policy`]) and sets only
    /// the vars the owner allows.
    fn check_data(&self, _values: &Values) -> Result<(), String> {
        Ok(())
    }
    fn parse(&self, files: &[SourceFile<'_>]) -> Result<Values, ProviderError> {
        let file = files.first().ok_or(ProviderError::NoPath {
            provider: "generic".into(),
        })?;
        parse_json_object(file.path, file.text).map(values_from_object)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::testing::{conflict_then_overwrite, merge, remove};
    use crate::secret_value::values_from;

    #[test]
    fn merge_keeps_other_keys_and_reports_conflicts() {
        let existing = SecretText::new("{\"other\": 1, \"key\": \"old\"}".into());
        let vals = values_from([("key", "new")]);
        let file = ("~/x.json", &existing);
        let text = conflict_then_overwrite(&GENERIC, file, &vals, &["key"]);
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v, serde_json::json!({"other": 1, "key": "new"}));
        let same = SecretText::new(text);
        assert_eq!(
            merge(&GENERIC, "~/x.json", Some(&same), &vals, false).unwrap(),
            Merge::Unchanged
        );
        assert_eq!(
            remove(&GENERIC, "~/x.json", &same, &vals).unwrap(),
            Removal::Write(SecretText::new("{\n  \"other\": 1\n}\n".into()))
        );
    }

    #[test]
    fn malformed_json_names_file_and_line_without_content() {
        let bad = SecretText::new("{\n \"k\": \"topsecret\"\n,,}".into());
        let err = GENERIC
            .parse(&[SourceFile {
                path: "~/x.json",
                text: &bad,
            }])
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("~/x.json line 3"), "{err}");
        assert!(!err.contains("topsecret"), "{err}");
    }
}
