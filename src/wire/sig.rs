//! The ipsync trailer (DESIGN §4.3 "Two kinds of key"): an HMAC-SHA256 tag under a shared
//! secret, or an Ed25519 signature (RFC 8032) under a key pair of which terminals hold only the
//! public half.
//!
//! Contract: the key_id names the key and so the trailer's kind and length; nothing here guesses
//! the kind from the bytes. Verification is constant-time for HMAC ([`ct_eq`]) and uses
//! ed25519-dalek's `verify_strict`, which refuses non-canonical signatures and small-order
//! public keys and `R` points, so one message has one valid signature and a signature cannot be
//! malleated into a second "fresh" frame. Signing is deterministic (RFC 8032 §5.1.6), so this
//! module reads no random source; fresh key pairs are the caller's (keygen's) job.

use super::auth;
use super::bytes::ct_eq;
pub use ed25519_dalek::{SigningKey, VerifyingKey};

pub const HMAC_LEN: usize = 32;
pub const ED25519_LEN: usize = ed25519_dalek::SIGNATURE_LENGTH;
/// Length of an Ed25519 public key, signing key (seed) and HMAC tag alike in hex config values.
pub const ED25519_KEY_LEN: usize = 32;

/// Which trailer a message carries, named by its key_id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trailer {
    HmacSha256,
    Ed25519,
}

impl Trailer {
    pub const fn len(self) -> usize {
        match self {
            Trailer::HmacSha256 => HMAC_LEN,
            Trailer::Ed25519 => ED25519_LEN,
        }
    }
}

/// What a receiver holds for one key_id.
#[derive(Clone, PartialEq, Eq)]
pub enum VerifyKey {
    Hmac(Vec<u8>),
    Ed25519(VerifyingKey),
}

impl core::fmt::Debug for VerifyKey {
    // A shared secret never reaches a log line; a public key may.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            VerifyKey::Hmac(s) => write!(f, "Hmac({} bytes)", s.len()),
            VerifyKey::Ed25519(k) => write!(f, "Ed25519({})", super::hex::to_hex(k.as_bytes())),
        }
    }
}

impl VerifyKey {
    pub fn trailer(&self) -> Trailer {
        match self {
            VerifyKey::Hmac(_) => Trailer::HmacSha256,
            VerifyKey::Ed25519(_) => Trailer::Ed25519,
        }
    }

    /// Checks `tag` over `signed`. A tag of the wrong length is simply not valid.
    pub fn verify(&self, signed: &[u8], tag: &[u8]) -> bool {
        match self {
            VerifyKey::Hmac(k) => ct_eq(&auth::hmac_sha256(k, signed), tag),
            VerifyKey::Ed25519(k) => match ed25519_dalek::Signature::from_slice(tag) {
                Ok(sig) => k.verify_strict(signed, &sig).is_ok(),
                Err(_) => false,
            },
        }
    }
}

/// What a sender signs with: borrowed, so signing allocates nothing.
#[derive(Clone, Copy)]
pub enum Signer<'a> {
    Hmac(&'a [u8]),
    Ed25519(&'a SigningKey),
}

impl core::fmt::Debug for Signer<'_> {
    // Names the kind only: neither half of a secret reaches a log line.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Signer::Hmac(_) => "Signer::Hmac",
            Signer::Ed25519(_) => "Signer::Ed25519",
        })
    }
}

impl Signer<'_> {
    pub fn trailer(&self) -> Trailer {
        match self {
            Signer::Hmac(_) => Trailer::HmacSha256,
            Signer::Ed25519(_) => Trailer::Ed25519,
        }
    }

    /// The trailer over `signed`; `out` is exactly [`Trailer::len`] long (the caller sized it).
    pub fn sign(&self, signed: &[u8], out: &mut [u8]) {
        use ed25519_dalek::Signer as _;
        match self {
            Signer::Hmac(k) => out.copy_from_slice(&auth::hmac_sha256(k, signed)),
            Signer::Ed25519(k) => out.copy_from_slice(&k.sign(signed).to_bytes()),
        }
    }
}

/// Why a configured Ed25519 key was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyError {
    /// Not 32 bytes.
    Length(usize),
    /// Not a point on the curve, or one of small order (a key any signature could satisfy).
    Weak,
    /// The signing key's public half is not the configured public key.
    Mismatch,
}

impl core::fmt::Display for KeyError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            KeyError::Length(n) => write!(f, "expected 32 bytes (\"0x\" + 64 hex digits), got {n}"),
            KeyError::Weak => write!(f, "not a usable Ed25519 public key (invalid or small-order point)"),
            KeyError::Mismatch => write!(f, "signing_key does not belong to public_key"),
        }
    }
}

pub fn public_key(bytes: &[u8]) -> Result<VerifyingKey, KeyError> {
    let b: &[u8; ED25519_KEY_LEN] = bytes.try_into().map_err(|_| KeyError::Length(bytes.len()))?;
    let k = VerifyingKey::from_bytes(b).map_err(|_| KeyError::Weak)?;
    if k.is_weak() {
        return Err(KeyError::Weak);
    }
    Ok(k)
}

/// An Ed25519 signing key from its 32-byte seed (RFC 8032 §5.1.5), checked against `public`
/// when the config gives both.
pub fn signing_key(seed: &[u8], public: Option<&VerifyingKey>) -> Result<SigningKey, KeyError> {
    let b: &[u8; ED25519_KEY_LEN] = seed.try_into().map_err(|_| KeyError::Length(seed.len()))?;
    let k = SigningKey::from_bytes(b);
    match public {
        Some(p) if k.verifying_key() != *p => Err(KeyError::Mismatch),
        _ => Ok(k),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        crate::wire::hex::parse_hex(s).unwrap()
    }

    // RFC 8032 §7.1 TEST 2: one-byte message 0x72.
    const SK: &str = "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb";
    const PK: &str = "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c";
    const SIG: &str = "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da\
                       085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00";

    #[test]
    fn rfc8032_test_2_signs_and_verifies() {
        let pk = public_key(&hex(PK)).unwrap();
        let sk = signing_key(&hex(SK), Some(&pk)).unwrap();
        let mut out = [0u8; ED25519_LEN];
        Signer::Ed25519(&sk).sign(&[0x72], &mut out);
        assert_eq!(out.to_vec(), hex(SIG));
        let vk = VerifyKey::Ed25519(pk);
        assert!(vk.verify(&[0x72], &out));
        assert!(!vk.verify(&[0x73], &out));
        let mut flipped = out;
        flipped[10] ^= 1;
        assert!(!vk.verify(&[0x72], &flipped));
        assert!(!vk.verify(&[0x72], &out[..63]), "a short tag is not a signature");
    }

    #[test]
    fn refuses_weak_mismatched_and_short_keys() {
        assert_eq!(public_key(&[0; 31]), Err(KeyError::Length(31)));
        // The identity point (y = 1) has small order: every message would verify under it.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert_eq!(public_key(&identity), Err(KeyError::Weak));
        let other = signing_key(&[7; 32], None).unwrap().verifying_key();
        assert_eq!(signing_key(&hex(SK), Some(&other)).map(|_| ()), Err(KeyError::Mismatch));
    }

    #[test]
    fn hmac_key_checks_its_tag_and_debug_hides_it() {
        let k = VerifyKey::Hmac(b"0123456789abcdef".to_vec());
        let mut tag = [0u8; HMAC_LEN];
        Signer::Hmac(b"0123456789abcdef").sign(b"msg", &mut tag);
        assert!(k.verify(b"msg", &tag));
        assert!(!k.verify(b"msh", &tag));
        assert!(!format!("{k:?}").contains("0123"));
    }
}
