//! The one type that holds credential material: [`SecretValue`].
//!
//! It owns a JSON value (a string for most keys, a whole object for gcp and
//! kubernetes), prints `<redacted>` under `{:?}` and `{:#?}`, has no `Display`,
//! and overwrites every string it holds with zeros when dropped. The only way
//! to read it is [`SecretValue::expose_secret`] (or [`SecretValue::expose_str`]),
//! so every place that touches a value can be found with grep.
//! It must never gain a `Display` impl or a derived `Debug`.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use zeroize::Zeroize;

/// A secret value. Redacted in `Debug`, zeroed on drop.
pub struct SecretValue(Value);

/// The values of one secret, keyed by value key (`access_key`, `api_key`, ...).
pub type Values = BTreeMap<String, SecretValue>;

impl SecretValue {
    /// Wrap a JSON value.
    pub fn new(value: Value) -> Self {
        Self(value)
    }

    /// Wrap a string.
    pub fn from_string(value: String) -> Self {
        Self(Value::String(value))
    }

    /// The value itself. Grep for this call to audit every use of secret material.
    pub fn expose_secret(&self) -> &Value {
        &self.0
    }

    /// The value as a string, when it is one.
    pub fn expose_str(&self) -> Option<&str> {
        self.0.as_str()
    }

    /// Whether two values are equal, without leaking timing on string contents.
    pub fn ct_eq(&self, other: &SecretValue) -> bool {
        match (&self.0, &other.0) {
            (Value::String(a), Value::String(b)) => ct_eq_bytes(a.as_bytes(), b.as_bytes()),
            (a, b) => a == b,
        }
    }
}

/// Constant-time comparison of two byte strings (length is not hidden).
pub fn ct_eq_bytes(a: &[u8], b: &[u8]) -> bool {
    // subtle: unequal lengths answer false at once (lengths are not secret).
    subtle::ConstantTimeEq::ct_eq(a, b).into()
}

fn zeroize_value(value: &mut Value) {
    match value {
        Value::String(s) => s.zeroize(),
        Value::Array(items) => items.iter_mut().for_each(zeroize_value),
        Value::Object(map) => map.values_mut().for_each(zeroize_value),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

impl Drop for SecretValue {
    fn drop(&mut self) {
        zeroize_value(&mut self.0);
    }
}

impl Clone for SecretValue {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl PartialEq for SecretValue {
    fn eq(&self, other: &Self) -> bool {
        self.ct_eq(other)
    }
}
impl Eq for SecretValue {}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl From<&str> for SecretValue {
    fn from(value: &str) -> Self {
        Self::from_string(value.to_owned())
    }
}

impl From<String> for SecretValue {
    fn from(value: String) -> Self {
        Self::from_string(value)
    }
}

impl Serialize for SecretValue {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for SecretValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Value::deserialize(deserializer).map(Self)
    }
}

/// Text that contains secret material (a rendered or read credential file).
/// Redacted in `Debug`, zeroed on drop, read through [`SecretText::expose_secret`].
#[derive(Default)]
pub struct SecretText(String);

impl SecretText {
    /// Wrap a string.
    pub fn new(text: String) -> Self {
        Self(text)
    }

    /// The text itself.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }
}

impl Drop for SecretText {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl Clone for SecretText {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl PartialEq for SecretText {
    fn eq(&self, other: &Self) -> bool {
        ct_eq_bytes(self.0.as_bytes(), other.0.as_bytes())
    }
}
impl Eq for SecretText {}

impl fmt::Debug for SecretText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<redacted {} bytes>", self.0.len())
    }
}

impl From<String> for SecretText {
    fn from(text: String) -> Self {
        Self(text)
    }
}

/// Build [`Values`] from string pairs (tests and fixtures).
pub fn values_from<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Values {
    pairs
        .into_iter()
        .map(|(k, v)| (k.to_owned(), SecretValue::from(v)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted_plain_and_pretty() {
        let v = SecretValue::from("hunter2-very-secret");
        assert_eq!(format!("{v:?}"), "<redacted>");
        assert_eq!(format!("{v:#?}"), "<redacted>");
        let map = values_from([("api_key", "hunter2-very-secret")]);
        let dbg = format!("{map:?} {map:#?}");
        assert!(!dbg.contains("hunter2"), "{dbg}");
        assert!(dbg.contains("api_key"));
    }

    #[test]
    fn nested_values_are_redacted_and_serialize_transparently() {
        let v = SecretValue::new(serde_json::json!({"client_secret": "s3cr3t", "n": [1, "x"]}));
        assert!(!format!("{v:#?}").contains("s3cr3t"));
        let json = serde_json::to_string(&v).unwrap();
        assert_eq!(json, r#"{"client_secret":"s3cr3t","n":[1,"x"]}"#);
        let back: SecretValue = serde_json::from_str(&json).unwrap();
        assert_eq!(back, v);
    }

    #[test]
    fn zeroize_clears_every_string() {
        let mut value = serde_json::json!({"a": "abc", "b": ["def", {"c": "ghi"}]});
        zeroize_value(&mut value);
        // zeroize on String clears it to empty after overwriting the bytes.
        assert_eq!(value, serde_json::json!({"a": "", "b": ["", {"c": ""}]}));
    }

    #[test]
    fn ct_eq_bytes_compares_content_and_length() {
        assert!(ct_eq_bytes(b"abc", b"abc"));
        assert!(!ct_eq_bytes(b"abc", b"abd"));
        assert!(!ct_eq_bytes(b"abc", b"abcd"));
    }
}
