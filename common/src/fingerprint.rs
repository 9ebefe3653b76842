//! Keyed fingerprints: an HMAC-SHA256 of a value under a key, cut to 16 hex
//! digits. Two fingerprints under the same key are equal exactly when the
//! values are; without the key they reveal nothing about the value.
//!
//! This module owns the one canonical encoding values are fingerprinted
//! over, so the agent (which fingerprints what it installed) and the
//! controller (which fingerprints its local copy to detect drift) always
//! agree: [`value_fingerprint`] for one value (an env var: a string as it is,
//! any other JSON compact with sorted keys) and [`values_fingerprint`] for
//! the values a secret wrote into its files (a JSON object of value key to
//! value, sorted keys, compact). The key is either a node's own key or a
//! caller's [`FingerprintKey`]. Nothing here logs, prints or returns a value
//! or a key; the canonical text is zeroed on drop.

use std::fmt;

use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;
use sha2::Sha256;
use thiserror::Error;
use zeroize::Zeroize;

use crate::secret_value::{SecretText, SecretValue, Values};

/// Fewest hex digits of a caller's fingerprint key (16 bytes).
pub const MIN_KEY_HEX: usize = 32;
/// Most hex digits of a caller's fingerprint key (64 bytes).
pub const MAX_KEY_HEX: usize = 128;

/// A fingerprint of `data` under `key`.
pub fn fingerprint(key: &[u8], data: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("hmac accepts any key length");
    mac.update(data);
    let out = mac.finalize().into_bytes();
    hex::encode(&out[..8])
}

/// `n` random bytes from the OS, hex encoded (tokens, fingerprint keys).
pub fn random_hex(n: usize) -> String {
    let mut buf = vec![0u8; n];
    getrandom::getrandom(&mut buf).expect("the OS random source is available");
    hex::encode(buf)
}

/// Why a fingerprint key was refused (never quotes the key).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum KeyError {
    #[error(
        "fingerprint key must be {MIN_KEY_HEX} to {MAX_KEY_HEX} hex digits (16 to 64 bytes), an \
         even number; got {len} characters"
    )]
    Length { len: usize },
    #[error("fingerprint key must be hex digits only (0-9, a-f)")]
    NotHex,
}

/// A caller-chosen fingerprint key (16 to 64 bytes, given as hex). Redacted
/// in `Debug`, zeroed on drop.
#[derive(Clone)]
pub struct FingerprintKey(Vec<u8>);

impl FingerprintKey {
    /// Parse a hex key: [`MIN_KEY_HEX`]..=[`MAX_KEY_HEX`] hex digits, even length.
    pub fn from_hex(text: &str) -> Result<Self, KeyError> {
        let len = text.len();
        if !(MIN_KEY_HEX..=MAX_KEY_HEX).contains(&len) || len % 2 != 0 {
            return Err(KeyError::Length { len });
        }
        hex::decode(text).map(Self).map_err(|_| KeyError::NotHex)
    }

    /// The key bytes (what the HMAC is keyed with).
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for FingerprintKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for FingerprintKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FingerprintKey(<redacted {} bytes>)", self.0.len())
    }
}

/// Compact JSON with object keys sorted at every level (independent of how
/// `serde_json` orders maps).
fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_canonical(&map[k], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        // Scalars have one compact form; strings are escaped by serde_json.
        scalar => {
            let mut text = scalar.to_string();
            out.push_str(&text);
            text.zeroize();
        }
    }
}

/// The canonical text of one value: a string as it is, any other JSON
/// compact with sorted keys. This is also the text an env var gets.
pub fn canonical_value(value: &SecretValue) -> SecretText {
    match value.expose_str() {
        Some(s) => SecretText::new(s.to_owned()),
        None => {
            let mut out = String::new();
            write_canonical(value.expose_secret(), &mut out);
            SecretText::new(out)
        }
    }
}

/// The canonical text of a secret's values: a compact JSON object of value
/// key to value, keys sorted at every level.
pub fn canonical_values(values: &Values) -> SecretText {
    let mut out = String::from("{");
    for (i, (k, v)) in values.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&Value::String(k.clone()).to_string());
        out.push(':');
        write_canonical(v.expose_secret(), &mut out);
    }
    out.push('}');
    SecretText::new(out)
}

/// The fingerprint of one value (an env var) under `key`.
pub fn value_fingerprint(key: &[u8], value: &SecretValue) -> String {
    fingerprint(key, canonical_value(value).expose_secret().as_bytes())
}

/// The fingerprint of the values a secret wrote into its files under `key`
/// (every value key of the secret, not the whole file).
pub fn values_fingerprint(key: &[u8], values: &Values) -> String {
    fingerprint(key, canonical_values(values).expose_secret().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret_value::values_from;
    use serde_json::json;

    #[test]
    fn keyed_and_deterministic() {
        assert_eq!(fingerprint(b"k", b"v"), fingerprint(b"k", b"v"));
        assert_ne!(fingerprint(b"k", b"v"), fingerprint(b"k2", b"v"));
        assert_ne!(fingerprint(b"k", b"v"), fingerprint(b"k", b"w"));
        assert_eq!(fingerprint(b"k", b"v").len(), 16);
        assert_eq!(random_hex(32).len(), 64);
        assert_ne!(random_hex(32), random_hex(32));
    }

    #[test]
    fn canonical_encoding_matches_serde_json_of_sorted_maps() {
        // Fingerprints recorded by earlier agents were computed over
        // `serde_json::to_string(&values)`; the canonical form is the same bytes.
        let mut values = values_from([("b", "x\"y"), ("a", "é\n")]);
        values.insert(
            "sa".into(),
            SecretValue::new(json!({"z": 1, "a": [true, null, 1.5], "m": {"y": "q", "b": "r"}})),
        );
        let old = serde_json::to_string(&values).unwrap();
        assert_eq!(canonical_values(&values).expose_secret(), old);
        let v = SecretValue::new(json!({"z": 1, "a": "s"}));
        assert_eq!(canonical_value(&v).expose_secret(), r#"{"a":"s","z":1}"#);
        assert_eq!(
            canonical_value(&SecretValue::from("plain")).expose_secret(),
            "plain"
        );
        assert_eq!(
            value_fingerprint(b"k", &SecretValue::from("plain")),
            fingerprint(b"k", b"plain")
        );
        assert_eq!(
            values_fingerprint(b"k", &values_from([("api_key", "v")])),
            fingerprint(b"k", br#"{"api_key":"v"}"#)
        );
        assert_ne!(
            values_fingerprint(b"k", &values_from([("api_key", "v")])),
            values_fingerprint(b"k", &values_from([("api_key", "w")]))
        );
    }

    #[test]
    fn keys_are_checked_and_redacted() {
        let hex = "00112233445566778899aabbccddeeff";
        let key = FingerprintKey::from_hex(hex).unwrap();
        assert_eq!(key.as_bytes().len(), 16);
        assert!(!format!("{key:?}").contains(hex));
        assert!(FingerprintKey::from_hex(&"ab".repeat(64)).is_ok());
        assert!(FingerprintKey::from_hex(&"AB".repeat(20)).is_ok());
        for bad in [
            String::new(),
            "ab".repeat(15),
            "ab".repeat(65),
            format!("{hex}0"),
            "zz".repeat(16),
            "é".repeat(16),
        ] {
            let err = FingerprintKey::from_hex(&bad).unwrap_err().to_string();
            assert!(bad.is_empty() || !err.contains(&bad), "{err}");
        }
    }
}
