//! A line-preserving INI editor: reads `[section]` / `key = value` files
//! (AWS credentials, Azure clouds.config, Lambda keys), changes or removes
//! single keys and renders the file again with every other byte (comments,
//! other sections, other keys, blank lines, line endings) kept as it was.
//! Parse errors name the file and the line number and what was expected;
//! they never quote the line (it may hold a key). The lines are zeroed on drop.
//!
//! Hand-written on purpose: INI crates (rust-ini, configparser) parse into a
//! map and render it again, which drops comments, reorders or re-spaces
//! keys and changes line endings in a file the user owns; here only the
//! changed value's bytes move. Duplicate sections and keys are found with
//! hash sets, so parsing stays linear in the file size (50k profiles).
//! Values keep no outer whitespace (it is trimmed on read), so values that
//! have some are refused rather than written ([`string_value`]).

use std::collections::HashSet;

use zeroize::Zeroize;

use crate::providers::{FileMerge, FileRemove, Merge, ProviderError, Removal};
use crate::secret_value::{SecretText, Values};

/// What one line is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Blank,
    Comment,
    Section(String),
    /// A key line: the key, and the byte range of its value in the raw line.
    Key {
        key: String,
        start: usize,
        end: usize,
    },
    /// An indented line continuing the value of the key above.
    Continuation,
}

/// An INI file held as its raw lines.
pub struct IniDoc {
    /// Raw lines, each with its line ending (the last one may have none).
    lines: Vec<String>,
    /// Kind and section index (0 = before any header) of each line.
    kinds: Vec<(Kind, usize)>,
    /// Section names by index; index 0 is the global (header-less) part.
    sections: Vec<String>,
    /// Whether `key = value` lines may come before any `[section]` header.
    allow_global: bool,
}

impl std::fmt::Debug for IniDoc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IniDoc")
            .field("lines", &self.lines.len())
            .field("sections", &self.sections)
            .finish()
    }
}

impl Drop for IniDoc {
    fn drop(&mut self) {
        self.lines.iter_mut().for_each(Zeroize::zeroize);
    }
}

/// The name of the header-less part of a file, for [`IniDoc::get`] and friends.
pub const GLOBAL: &str = "";

fn strip_eol(line: &str) -> &str {
    line.strip_suffix('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .unwrap_or(line)
}

impl IniDoc {
    /// Parse `text` (read from `path`, used in errors). With `allow_global`,
    /// keys may appear before the first section header (Lambda's flat file).
    pub fn parse(path: &str, text: &str, allow_global: bool) -> Result<Self, ProviderError> {
        let lines: Vec<String> = text.split_inclusive('\n').map(str::to_owned).collect();
        let mut doc = Self {
            lines,
            kinds: Vec::new(),
            sections: Vec::new(),
            allow_global,
        };
        doc.index(path)?;
        Ok(doc)
    }

    /// The document of a file about to be merged into: its `text` parsed,
    /// or an empty document when the file does not exist yet.
    pub fn existing(
        path: &str,
        text: Option<&SecretText>,
        allow_global: bool,
    ) -> Result<Self, ProviderError> {
        match text {
            Some(t) => Self::parse(path, t.expose_secret(), allow_global),
            None => Ok(Self::empty(allow_global)),
        }
    }

    /// An empty document.
    pub fn empty(allow_global: bool) -> Self {
        Self {
            lines: Vec::new(),
            kinds: Vec::new(),
            sections: vec![GLOBAL.to_owned()],
            allow_global,
        }
    }

    /// Classify every line; errors carry 1-based line numbers.
    fn index(&mut self, path: &str) -> Result<(), ProviderError> {
        let mut kinds = Vec::with_capacity(self.lines.len());
        let mut sections = vec![GLOBAL.to_owned()];
        let mut current = 0usize;
        // Hash sets keep duplicate detection linear in the file size.
        let mut seen_sections: HashSet<String> = HashSet::new();
        let mut seen_keys: HashSet<(usize, String)> = HashSet::new();
        for (n, raw) in self.lines.iter().enumerate() {
            let lineno = n + 1;
            let line = strip_eol(raw);
            let trimmed = line.trim();
            let prev_is_key = matches!(
                kinds.last(),
                Some((Kind::Key { .. }, _)) | Some((Kind::Continuation, _))
            );
            let kind = if trimmed.is_empty() {
                Kind::Blank
            } else if trimmed.starts_with('#') || trimmed.starts_with(';') {
                Kind::Comment
            } else if line.starts_with([' ', '\t']) && prev_is_key {
                Kind::Continuation
            } else if let Some(rest) = trimmed.strip_prefix('[') {
                let Some(name) = rest.strip_suffix(']') else {
                    return Err(ProviderError::malformed(
                        path,
                        Some(lineno),
                        "section header without a closing ']'",
                    ));
                };
                let name = name.trim().to_owned();
                if !seen_sections.insert(name.clone()) {
                    return Err(ProviderError::malformed(
                        path,
                        Some(lineno),
                        format!("duplicate section [{name}]"),
                    ));
                }
                sections.push(name.clone());
                current = sections.len() - 1;
                Kind::Section(name)
            } else if let Some(sep) = line.find(['=', ':']) {
                let key = line[..sep].trim();
                if key.is_empty() {
                    return Err(ProviderError::malformed(
                        path,
                        Some(lineno),
                        "a value without a key",
                    ));
                }
                if current == 0 && !self.allow_global {
                    return Err(ProviderError::malformed(
                        path,
                        Some(lineno),
                        "a key before any [section] header",
                    ));
                }
                let key = key.to_ascii_lowercase();
                if !seen_keys.insert((current, key.clone())) {
                    return Err(ProviderError::malformed(
                        path,
                        Some(lineno),
                        format!("duplicate key {key}"),
                    ));
                }
                let after = &line[sep + 1..];
                let start = sep + 1 + (after.len() - after.trim_start().len());
                let end = line.trim_end().len().max(start);
                Kind::Key { key, start, end }
            } else {
                return Err(ProviderError::malformed(
                    path,
                    Some(lineno),
                    "expected `key = value`, a [section] header or a comment",
                ));
            };
            kinds.push((kind, current));
        }
        self.kinds = kinds;
        self.sections = sections;
        Ok(())
    }

    fn reindex(&mut self) {
        // Edits only ever produce well-formed lines.
        self.index("").expect("edited INI stays well formed");
    }

    fn section_index(&self, section: &str) -> Option<usize> {
        if section == GLOBAL {
            return Some(0);
        }
        self.sections
            .iter()
            .enumerate()
            .skip(1)
            .find(|(_, s)| *s == section)
            .map(|(i, _)| i)
    }

    fn key_line(&self, section: &str, key: &str) -> Option<usize> {
        let sec = self.section_index(section)?;
        let key = key.to_ascii_lowercase();
        self.kinds
            .iter()
            .position(|(k, s)| *s == sec && matches!(k, Kind::Key { key: k2, .. } if *k2 == key))
    }

    /// Whether the section exists (the global part always does).
    pub fn has_section(&self, section: &str) -> bool {
        self.section_index(section).is_some()
    }

    /// The value of `key` in `section` (keys compare case-insensitively).
    pub fn get(&self, section: &str, key: &str) -> Option<&str> {
        let n = self.key_line(section, key)?;
        match &self.kinds[n].0 {
            Kind::Key { start, end, .. } => Some(&self.lines[n][*start..*end]),
            _ => None,
        }
    }

    /// Set `key` in `section`: in place when the key exists (the rest of the
    /// line kept), else appended after the section's last key, else in a new
    /// section at the end of the file. `value` must not contain a newline.
    pub fn set(&mut self, section: &str, key: &str, value: &str) {
        debug_assert!(!value.contains(['\n', '\r']));
        if let Some(n) = self.key_line(section, key) {
            if let Kind::Key { start, end, .. } = self.kinds[n].0 {
                let line = &mut self.lines[n];
                let mut new = String::with_capacity(line.len() + value.len());
                new.push_str(&line[..start]);
                new.push_str(value);
                new.push_str(&line[end..]);
                line.zeroize();
                *line = new;
            }
        } else if let Some(sec) = self.section_index(section) {
            // After the last key/continuation of the section, else after its header.
            let last = self
                .kinds
                .iter()
                .rposition(|(k, s)| *s == sec && matches!(k, Kind::Key { .. } | Kind::Continuation))
                .or_else(|| {
                    self.kinds
                        .iter()
                        .position(|(k, _)| matches!(k, Kind::Section(name) if name == section))
                });
            let at = last.map_or(0, |n| n + 1);
            self.ensure_eol(at);
            self.lines.insert(at, format!("{key} = {value}\n"));
        } else {
            let n = self.lines.len();
            self.ensure_eol(n);
            if self.lines.iter().any(|l| !l.trim().is_empty()) {
                self.lines.push("\n".to_owned());
            }
            self.lines.push(format!("[{section}]\n"));
            self.lines.push(format!("{key} = {value}\n"));
        }
        self.reindex();
    }

    /// Make sure the line before index `at` ends with a newline.
    fn ensure_eol(&mut self, at: usize) {
        if at > 0 {
            let prev = &mut self.lines[at - 1];
            if !prev.ends_with('\n') {
                prev.push('\n');
            }
        }
    }

    /// Remove `key` (and its continuation lines) from `section`. A section
    /// left with nothing but blank lines loses its header too.
    pub fn remove(&mut self, section: &str, key: &str) -> bool {
        let Some(n) = self.key_line(section, key) else {
            return false;
        };
        let mut end = n + 1;
        while end < self.kinds.len() && self.kinds[end].0 == Kind::Continuation {
            end += 1;
        }
        for line in self.lines.drain(n..end) {
            let mut line = line;
            line.zeroize();
        }
        self.reindex();
        if section != GLOBAL {
            if let Some(sec) = self.section_index(section) {
                let members: Vec<usize> = (0..self.kinds.len())
                    .filter(|&i| self.kinds[i].1 == sec)
                    .collect();
                let only_blank = members
                    .iter()
                    .all(|&i| matches!(self.kinds[i].0, Kind::Blank | Kind::Section(_)));
                if only_blank {
                    for &i in members.iter().rev() {
                        self.lines.remove(i);
                    }
                    // Drop a blank separator left dangling at the end of the file.
                    while self.lines.last().is_some_and(|l| l.trim().is_empty()) {
                        self.lines.pop();
                    }
                    self.reindex();
                }
            }
        }
        true
    }

    /// Whether nothing but blank lines is left.
    pub fn is_blank(&self) -> bool {
        self.lines.iter().all(|l| l.trim().is_empty())
    }

    /// The file text.
    pub fn render(&self) -> SecretText {
        SecretText::new(self.lines.concat())
    }
}

/// How a provider's value keys map onto keys of one INI section.
#[derive(Debug, Clone, Copy)]
pub struct IniLayout {
    /// The section (`default`, `AzureCloud`), or [`GLOBAL`] for a flat file.
    pub section: &'static str,
    /// Value key -> key in the file.
    pub keys: &'static [(&'static str, &'static str)],
    /// Keys in the file that belong to the credential whose identity is the
    /// first of [`IniLayout::keys`] (AWS: the session token belongs to the
    /// access key). When a merge replaces that key, each of these the
    /// values do not set is removed with it (or, without overwrite, named in
    /// the conflict): a new key never runs with the old key's token.
    pub companions: &'static [&'static str],
}

impl IniLayout {
    fn doc(&self, path: &str, text: Option<&SecretText>) -> Result<IniDoc, ProviderError> {
        IniDoc::existing(path, text, self.section == GLOBAL)
    }

    fn where_(&self) -> String {
        if self.section == GLOBAL {
            String::new()
        } else {
            format!(" in [{}]", self.section)
        }
    }

    /// Read the values; `required` keys must be present.
    pub fn parse(
        &self,
        path: &str,
        text: &SecretText,
        required: &[&str],
    ) -> Result<Values, ProviderError> {
        let doc = self.doc(path, Some(text))?;
        if !doc.has_section(self.section) {
            return Err(ProviderError::malformed(
                path,
                None,
                format!("no [{}] section", self.section),
            ));
        }
        let mut values = Values::new();
        for (value_key, file_key) in self.keys {
            match doc.get(self.section, file_key) {
                Some(v) => {
                    values.insert((*value_key).to_owned(), v.to_owned().into());
                }
                None if required.contains(value_key) => {
                    return Err(ProviderError::malformed(
                        path,
                        None,
                        format!("no {file_key}{}", self.where_()),
                    ))
                }
                None => {}
            }
        }
        Ok(values)
    }

    /// Merge the values of `provider` key by key; other keys, sections and
    /// comments stay.
    pub fn merge(&self, provider: &str, file: &FileMerge<'_>) -> Result<Merge, ProviderError> {
        let FileMerge {
            path,
            existing,
            values,
            overwrite,
            ..
        } = *file;
        let mut doc = self.doc(path, existing)?;
        let mut changed = existing.is_none();
        let mut conflicts = Vec::new();
        for (n, (value_key, file_key)) in self.keys.iter().enumerate() {
            let Some(value) = values.get(*value_key) else {
                continue;
            };
            let new = string_value(provider, value_key, value)?;
            match doc.get(self.section, file_key) {
                Some(old) if crate::secret_value::ct_eq_bytes(old.as_bytes(), new.as_bytes()) => {}
                Some(_) if !overwrite => {
                    conflicts.push((*value_key).to_owned());
                    if n == 0 {
                        conflicts.extend(self.stale_companions(&doc, values));
                    }
                }
                _ => {
                    doc.set(self.section, file_key, new);
                    changed = true;
                    if n == 0 {
                        for key in self.stale_companions(&doc, values) {
                            doc.remove(self.section, &key);
                        }
                    }
                }
            }
        }
        Ok(Merge::decide(conflicts, changed, || doc.render()))
    }

    /// The [`IniLayout::companions`] present in the file that `values` do not set.
    fn stale_companions(&self, doc: &IniDoc, values: &Values) -> Vec<String> {
        self.companions
            .iter()
            .filter(|file_key| doc.get(self.section, file_key).is_some())
            .filter(|file_key| {
                !self
                    .keys
                    .iter()
                    .any(|(v, f)| f == *file_key && values.contains_key(*v))
            })
            .map(|file_key| (*file_key).to_owned())
            .collect()
    }

    /// Check that every value this layout writes is one the file keeps as
    /// given: a string on one line, without leading or trailing whitespace
    /// (the parser trims it, so it would never compare equal again).
    pub fn validate(&self, provider: &str, values: &Values) -> Result<(), ProviderError> {
        for (value_key, _) in self.keys {
            if let Some(value) = values.get(*value_key) {
                string_value(provider, value_key, value)?;
            }
        }
        Ok(())
    }

    /// Remove the keys whose value in the file is the secret's.
    pub fn remove(&self, file: &FileRemove<'_>) -> Result<Removal, ProviderError> {
        let mut doc = self.doc(file.path, Some(file.existing))?;
        let mut removed = false;
        for (value_key, file_key) in self.keys {
            let Some(new) = file.values.get(*value_key).and_then(|v| v.expose_str()) else {
                continue;
            };
            if doc.get(self.section, file_key) == Some(new) {
                removed |= doc.remove(self.section, file_key);
            }
        }
        Ok(if !removed {
            Removal::Unchanged
        } else if doc.is_blank() {
            Removal::Delete
        } else {
            Removal::Write(doc.render())
        })
    }
}

/// A value that must be a single-line string.
pub fn string_value<'a>(
    provider: &str,
    key: &str,
    value: &'a crate::secret_value::SecretValue,
) -> Result<&'a str, ProviderError> {
    let s = value
        .expose_str()
        .ok_or_else(|| ProviderError::InvalidValue {
            provider: provider.into(),
            key: key.into(),
            reason: "must be a string".into(),
        })?;
    if s.contains(['\n', '\r']) {
        return Err(ProviderError::InvalidValue {
            provider: provider.into(),
            key: key.into(),
            reason: "contains a newline, which this file format cannot hold".into(),
        });
    }
    if s.trim() != s {
        return Err(ProviderError::InvalidValue {
            provider: provider.into(),
            key: key.into(),
            reason: "has leading or trailing whitespace, which this file format drops \
                     (remove it)"
                .into(),
        });
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret_value::values_from;

    const AWS: &str = "# my creds\n[default]\naws_access_key_id = OLD\naws_secret_access_key=OLDS\r\nregion = us-east-1\n\n[prod]\naws_access_key_id = P\n";

    #[test]
    fn set_in_place_keeps_every_other_byte() {
        let mut doc = IniDoc::parse("~/c", AWS, false).unwrap();
        assert_eq!(doc.get("default", "AWS_ACCESS_KEY_ID"), Some("OLD"));
        assert_eq!(doc.get("default", "aws_secret_access_key"), Some("OLDS"));
        doc.set("default", "aws_secret_access_key", "NEWS");
        doc.set("default", "aws_session_token", "T");
        doc.set("staging", "k", "v");
        assert_eq!(
            doc.render().expose_secret(),
            "# my creds\n[default]\naws_access_key_id = OLD\naws_secret_access_key=NEWS\r\nregion = us-east-1\naws_session_token = T\n\n[prod]\naws_access_key_id = P\n\n[staging]\nk = v\n"
        );
    }

    #[test]
    fn remove_drops_emptied_sections_only() {
        let mut doc = IniDoc::parse("~/c", "[a]\nk = 1\n\n[b]\nk = 2\n", false).unwrap();
        assert!(doc.remove("b", "k"));
        assert_eq!(doc.render().expose_secret(), "[a]\nk = 1\n");
        assert!(!doc.remove("b", "k"));
        assert!(doc.remove("a", "k"));
        assert!(doc.is_blank());
        let mut doc = IniDoc::parse("~/c", "[a]\n# keep\nk = 1\n", false).unwrap();
        doc.remove("a", "k");
        assert_eq!(doc.render().expose_secret(), "[a]\n# keep\n");
    }

    #[test]
    fn appends_to_a_file_without_final_newline() {
        let mut doc = IniDoc::parse("~/c", "[a]\nk = 1", false).unwrap();
        doc.set("a", "j", "2");
        assert_eq!(doc.render().expose_secret(), "[a]\nk = 1\nj = 2\n");
        let mut flat = IniDoc::parse("~/l", "other = x", true).unwrap();
        flat.set(GLOBAL, "api_key", "k");
        assert_eq!(flat.render().expose_secret(), "other = x\napi_key = k\n");
    }

    #[test]
    fn errors_name_file_and_line_never_content() {
        for (text, line, what) in [
            ("[default]\nsecretstuff-no-separator\n", 2, "expected"),
            ("secret-key = topsecret\n", 1, "before any"),
            ("[default\n", 1, "closing"),
            ("[a]\nk = topsecret\n[a]\n", 3, "duplicate section"),
            ("[a]\nk = topsecret\nK = topsecret2\n", 3, "duplicate key"),
            ("[a]\n = topsecret\n", 2, "without a key"),
        ] {
            let err = IniDoc::parse("~/.aws/credentials", text, false)
                .unwrap_err()
                .to_string();
            assert!(
                err.starts_with(&format!("~/.aws/credentials line {line}:")),
                "{err}"
            );
            assert!(err.contains(what), "{err}");
            assert!(
                !err.contains("topsecret") && !err.contains("secretstuff"),
                "{err}"
            );
        }
    }

    /// A file with `n` profiles of two keys each, `[p0]` .. `[p{n-1}]`.
    fn profiles(n: usize) -> String {
        (0..n)
            .map(|i| format!("[p{i}]\naws_access_key_id = A{i}\naws_secret_access_key = S{i}\n"))
            .collect()
    }

    #[test]
    fn duplicates_found_in_large_files() {
        // 50k profiles (the bench's size): every section and key is unique.
        let text = profiles(50_000);
        let doc = IniDoc::parse("~/c", &text, false).unwrap();
        assert_eq!(doc.get("p49999", "aws_secret_access_key"), Some("S49999"));
        // The same key name in every section is not a duplicate; a repeated
        // section or key at the very end is, with its line number.
        let line = text.lines().count() + 1;
        let error_with = |tail: &str| {
            let err = IniDoc::parse("~/c", &format!("{text}{tail}"), false).unwrap_err();
            err.to_string()
        };
        let err = error_with("[p123]\n");
        let want = format!("~/c line {line}: duplicate section [p123]");
        assert!(err.starts_with(&want), "{err}");
        let err = error_with("AWS_Secret_Access_Key = x\n");
        let want = format!("~/c line {line}: duplicate key");
        assert!(err.starts_with(&want), "{err}");
    }

    #[test]
    fn layout_merge_conflict_and_remove() {
        const L: IniLayout = IniLayout {
            section: "default",
            keys: &[("access_key", "aws_access_key_id")],
            companions: &[],
        };
        let text = SecretText::new(AWS.into());
        let merge = |existing: Option<&SecretText>, values: &Values, overwrite: bool| {
            L.merge(
                "aws",
                &FileMerge {
                    index: 0,
                    path: "~/c",
                    existing,
                    values,
                    overwrite,
                },
            )
        };
        let remove = |values: &Values| {
            L.remove(&FileRemove {
                index: 0,
                path: "~/c",
                existing: &text,
                values,
            })
        };
        let same = values_from([("access_key", "OLD")]);
        assert_eq!(merge(Some(&text), &same, false).unwrap(), Merge::Unchanged);
        let other = values_from([("access_key", "NEW")]);
        assert_eq!(
            merge(Some(&text), &other, false).unwrap(),
            Merge::Conflict(vec!["access_key".into()])
        );
        let bad = values_from([("access_key", "a\nb")]);
        assert!(matches!(
            merge(None, &bad, true),
            Err(ProviderError::InvalidValue { .. })
        ));
        let Removal::Write(left) = remove(&same).unwrap() else {
            panic!("expected a write")
        };
        assert!(!left.expose_secret().contains("= OLD\n"));
        assert!(left
            .expose_secret()
            .contains("[prod]\naws_access_key_id = P\n"));
        assert_eq!(remove(&other).unwrap(), Removal::Unchanged);
    }
}
