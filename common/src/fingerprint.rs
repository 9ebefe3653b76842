//! Keyed fingerprints: an HMAC-SHA256 of a value under a per-node key, cut to
//! 16 hex digits. Two fingerprints from the same node are equal exactly when
//! the values are; without the key they reveal nothing about the value.

use hmac::{Hmac, Mac};
use sha2::Sha256;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_and_deterministic() {
        assert_eq!(fingerprint(b"k", b"v"), fingerprint(b"k", b"v"));
        assert_ne!(fingerprint(b"k", b"v"), fingerprint(b"k2", b"v"));
        assert_ne!(fingerprint(b"k", b"v"), fingerprint(b"k", b"w"));
        assert_eq!(fingerprint(b"k", b"v").len(), 16);
        assert_eq!(random_hex(32).len(), 64);
        assert_ne!(random_hex(32), random_hex(32));
    }
}
