//! Proof that the process answering on an agent's port holds the agent's
//! token, given BEFORE the controller sends the token: the controller sends a
//! fresh random nonce to `GET /healthz?challenge=<hex>` and the agent answers
//! `proof = hex(HMAC-SHA256(token, "rh-agent-proof-v1:" || nonce))`. Anyone
//! who merely took the agent's port (the agent was down, another user bound
//! it) cannot compute it, so the controller refuses to send the bearer token
//! to them.
//!
//! The agent and the controller share this one definition. Proofs are
//! compared in constant time. The HMAC is domain-separated from every other
//! use of the token (the token itself is only ever sent as a bearer token,
//! never an HMAC under it), so answering chosen nonces gives nothing that
//! helps authenticate. Nothing here logs or returns the token; errors never
//! quote the nonce.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use thiserror::Error;

/// What the HMAC covers before the nonce: a version and purpose label, so a
/// proof is never valid for anything else.
pub const PROOF_CONTEXT: &[u8] = b"rh-agent-proof-v1:";
/// Fewest hex digits of a challenge nonce (16 bytes).
pub const MIN_NONCE_HEX: usize = 32;
/// Most hex digits of a challenge nonce (64 bytes).
pub const MAX_NONCE_HEX: usize = 128;
/// Bytes of nonce the controller sends (64 hex digits).
pub const NONCE_BYTES: usize = 32;

/// Why a challenge nonce was refused (never quotes it).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ChallengeError {
    #[error(
        "challenge must be {MIN_NONCE_HEX} to {MAX_NONCE_HEX} hex digits (16 to 64 bytes), an \
         even number; got {len} characters"
    )]
    Length { len: usize },
    #[error("challenge must be hex digits only (0-9, a-f)")]
    NotHex,
}

/// Parse a hex challenge: [`MIN_NONCE_HEX`]..=[`MAX_NONCE_HEX`] hex digits,
/// even length. Returns the nonce bytes the proof is computed over.
pub fn parse_challenge(text: &str) -> Result<Vec<u8>, ChallengeError> {
    let len = text.len();
    if !(MIN_NONCE_HEX..=MAX_NONCE_HEX).contains(&len) || len % 2 != 0 {
        return Err(ChallengeError::Length { len });
    }
    hex::decode(text).map_err(|_| ChallengeError::NotHex)
}

fn mac(token: &[u8], nonce: &[u8]) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(token).expect("hmac accepts any key length");
    mac.update(PROOF_CONTEXT);
    mac.update(nonce);
    mac
}

/// The proof an agent holding `token` gives for `nonce` (the decoded bytes):
/// 64 lowercase hex digits.
pub fn agent_proof(token: &[u8], nonce: &[u8]) -> String {
    hex::encode(mac(token, nonce).finalize().into_bytes())
}

/// Whether `proof` (hex, as answered) is the proof for `token` and `nonce`.
/// The comparison is constant time; a proof that is not 64 hex digits is
/// simply wrong.
pub fn verify_agent_proof(token: &[u8], nonce: &[u8], proof: &str) -> bool {
    match hex::decode(proof.trim()) {
        Ok(bytes) => mac(token, nonce).verify_slice(&bytes).is_ok(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proof_is_the_hmac_of_the_context_and_nonce() {
        // Recomputed with the plain HMAC API over context then nonce.
        let mut m = Hmac::<Sha256>::new_from_slice(b"tok").unwrap();
        m.update(b"rh-agent-proof-v1:\x01\x02");
        let want = hex::encode(m.finalize().into_bytes());
        assert_eq!(agent_proof(b"tok", &[1, 2]), want);
        assert_eq!(want.len(), 64);
        assert!(verify_agent_proof(b"tok", &[1, 2], &want));
        assert!(verify_agent_proof(b"tok", &[1, 2], &want.to_uppercase()));
    }

    #[test]
    fn wrong_token_nonce_or_shape_fails() {
        let p = agent_proof(b"tok", b"nonce");
        assert!(!verify_agent_proof(b"tok2", b"nonce", &p));
        assert!(!verify_agent_proof(b"tok", b"nonce2", &p));
        assert!(!verify_agent_proof(b"tok", b"nonce", &p[..62]));
        assert!(!verify_agent_proof(b"tok", b"nonce", ""));
        assert!(!verify_agent_proof(b"tok", b"nonce", "zz"));
        assert!(!verify_agent_proof(b"tok", b"nonce", &format!("{p}00")));
        // Not the bare HMAC of the nonce: the context is part of it.
        let mut m = Hmac::<Sha256>::new_from_slice(b"tok").unwrap();
        m.update(b"nonce");
        assert!(!verify_agent_proof(
            b"tok",
            b"nonce",
            &hex::encode(m.finalize().into_bytes())
        ));
    }

    #[test]
    fn challenges_are_checked_and_not_quoted() {
        assert_eq!(parse_challenge(&"ab".repeat(16)).unwrap().len(), 16);
        assert_eq!(parse_challenge(&"AB".repeat(64)).unwrap().len(), 64);
        for bad in [
            String::new(),
            "ab".repeat(15),
            "ab".repeat(65),
            format!("{}0", "ab".repeat(16)),
            "zz".repeat(16),
            "é".repeat(16),
        ] {
            let err = parse_challenge(&bad).unwrap_err().to_string();
            assert!(bad.is_empty() || !err.contains(&bad), "{err}");
        }
    }
}
