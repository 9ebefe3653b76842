//! YAML helpers for the GitHub CLI's hosts.yml and kubeconfig: parse to a
//! mapping with errors that name the file and line (the parser's own messages
//! can quote the input, so they are never passed on), convert between YAML
//! and the JSON values secrets are held in, and render. The parser is
//! `yaml_serde`, the YAML organization's maintained fork of the deprecated
//! `serde_yaml` (same API and output; see `Cargo.toml`).

use yaml_serde::{Mapping, Value as Yaml};

use crate::providers::{FileMerge, Merge, ProviderError};
use crate::secret_value::SecretText;

/// The mapping of a file about to be merged into: its `text` parsed
/// ([`parse_mapping`]), or an empty mapping when the file does not exist yet.
pub fn existing_mapping(path: &str, text: Option<&SecretText>) -> Result<Mapping, ProviderError> {
    text.map_or_else(|| Ok(Mapping::new()), |t| parse_mapping(path, t))
}

/// Parse a YAML document whose top level is a mapping (empty text = empty mapping).
pub fn parse_mapping(path: &str, text: &SecretText) -> Result<Mapping, ProviderError> {
    if text.expose_secret().trim().is_empty() {
        return Ok(Mapping::new());
    }
    match yaml_serde::from_str::<Yaml>(text.expose_secret()) {
        Ok(Yaml::Mapping(map)) => Ok(map),
        Ok(Yaml::Null) => Ok(Mapping::new()),
        Ok(_) => Err(ProviderError::malformed(
            path,
            None,
            "expected a YAML mapping at the top level",
        )),
        Err(e) => Err(ProviderError::malformed(
            path,
            e.location().map(|l| l.line()),
            "invalid YAML",
        )),
    }
}

/// YAML -> JSON (mapping keys must be strings, numbers or booleans).
pub fn to_json(path: &str, value: &Yaml) -> Result<serde_json::Value, ProviderError> {
    Ok(match value {
        Yaml::Null => serde_json::Value::Null,
        Yaml::Bool(b) => serde_json::Value::Bool(*b),
        Yaml::Number(n) => serde_json::to_value(n).unwrap_or(serde_json::Value::Null),
        Yaml::String(s) => serde_json::Value::String(s.clone()),
        Yaml::Sequence(items) => serde_json::Value::Array(
            items
                .iter()
                .map(|i| to_json(path, i))
                .collect::<Result<_, _>>()?,
        ),
        Yaml::Mapping(map) => {
            let mut out = serde_json::Map::new();
            for (k, v) in map {
                let key = match k {
                    Yaml::String(s) => s.clone(),
                    Yaml::Number(n) => n.to_string(),
                    Yaml::Bool(b) => b.to_string(),
                    _ => {
                        return Err(ProviderError::malformed(
                            path,
                            None,
                            "a mapping key that is not a string",
                        ))
                    }
                };
                out.insert(key, to_json(path, v)?);
            }
            serde_json::Value::Object(out)
        }
        Yaml::Tagged(t) => to_json(path, &t.value)?,
    })
}

/// JSON -> YAML.
pub fn from_json(value: &serde_json::Value) -> Yaml {
    match value {
        serde_json::Value::Null => Yaml::Null,
        serde_json::Value::Bool(b) => Yaml::Bool(*b),
        serde_json::Value::Number(n) => yaml_serde::to_value(n).unwrap_or(Yaml::Null),
        serde_json::Value::String(s) => Yaml::String(s.clone()),
        serde_json::Value::Array(items) => Yaml::Sequence(items.iter().map(from_json).collect()),
        serde_json::Value::Object(map) => Yaml::Mapping(
            map.iter()
                .map(|(k, v)| (Yaml::String(k.clone()), from_json(v)))
                .collect(),
        ),
    }
}

/// Render a mapping as a YAML document.
pub fn render(map: &Mapping) -> SecretText {
    SecretText::new(yaml_serde::to_string(map).unwrap_or_default())
}

/// Merge a secret's values into `doc`, the mapping of the file (from
/// [`existing_mapping`]), key by key: `merge_one` puts one value, as YAML,
/// into the document and notes in the [`Tally`] what it changed or found in
/// conflict. A new file is always written; an existing one only when
/// something changed and nothing conflicted ([`Merge::decide`]).
pub fn merge_values(
    file: &FileMerge<'_>,
    mut doc: Mapping,
    mut merge_one: impl FnMut(&mut Mapping, &str, Yaml, &mut Tally) -> Result<(), ProviderError>,
) -> Result<Merge, ProviderError> {
    let mut tally = Tally {
        overwrite: file.overwrite,
        changed: file.existing.is_none(),
        conflicts: Vec::new(),
    };
    for (key, value) in file.values {
        merge_one(&mut doc, key, from_json(value.expose_secret()), &mut tally)?;
    }
    Ok(Merge::decide(tally.conflicts, tally.changed, || {
        render(&doc)
    }))
}

/// Where a key-by-key merge ([`merge_values`]) stands.
#[derive(Debug)]
pub struct Tally {
    /// Whether a differing value may be replaced (else it is a conflict).
    pub overwrite: bool,
    /// Whether the document changed.
    pub changed: bool,
    /// The keys (or `list/name` entries) in conflict.
    pub conflicts: Vec<String>,
}

impl Tally {
    /// Merge one key into `map`: an equal value changes nothing; a differing
    /// one is a conflict unless overwriting; otherwise the value is set.
    pub fn merge_key(&mut self, map: &mut Mapping, key: &str, new: Yaml) {
        match map.get(key) {
            Some(old) if *old == new => {}
            Some(_) if !self.overwrite => self.conflicts.push(key.to_owned()),
            _ => {
                map.insert(self::key(key), new);
                self.changed = true;
            }
        }
    }
}

/// The key as a YAML string value.
pub fn key(k: &str) -> Yaml {
    Yaml::String(k.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_have_line_and_no_content() {
        let bad = SecretText::new("a: 1\nb: [topsecret\nc: 2\n".into());
        let err = parse_mapping("~/.kube/config", &bad)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("~/.kube/config line "), "{err}");
        assert!(!err.contains("topsecret"), "{err}");
        let list = SecretText::new("- topsecret\n".into());
        let err = parse_mapping("~/x", &list).unwrap_err().to_string();
        assert!(!err.contains("topsecret"), "{err}");
    }

    #[test]
    fn json_round_trip() {
        let j = serde_json::json!({"a": [1, "x", {"b": null, "c": true}], "d": 1.5});
        let y = from_json(&j);
        assert_eq!(to_json("~/x", &y).unwrap(), j);
    }
}
