//! Message authentication: RFC 3118 option 90 (delayed authentication and the reconfigure key of
//! RFC 3118 §5 / RFC 6704), HMAC-MD5 over DHCP messages, HMAC-SHA256 over ipsync messages, and
//! constant-time comparison.
//!
//! Contract: pure functions over borrowed bytes. The DHCP MAC is computed over the message as
//! received, with `hops`, `giaddr` and the MAC bytes themselves fed as zeros, without copying the
//! message. Every comparison of secret-dependent bytes goes through [`ct_eq`].

use hmac::{Hmac, Mac as _};
use md5::Md5;
use sha2::Sha256;

type HmacMd5 = Hmac<Md5>;
type HmacSha256 = Hmac<Sha256>;

pub const OPTION_AUTH: u8 = 90;
/// RFC 3118 protocol 1: delayed authentication.
pub const PROTOCOL_DELAYED: u8 = 1;
/// RFC 3118 §5 reconfigure key protocol, as RFC 6704 uses it for FORCERENEW.
pub const PROTOCOL_RECONFIGURE_KEY: u8 = 3;
pub const ALGORITHM_HMAC_MD5: u8 = 1;
pub const RDM_MONOTONIC: u8 = 0;
/// Reconfigure key information types (RFC 3118 §5).
pub const RKAP_KEY: u8 = 1;
pub const RKAP_HMAC_MD5: u8 = 2;

const HEADER: usize = 11; // protocol, algorithm, rdm, replay(8)
pub const DELAYED_LEN: usize = HEADER + 4 + 16;
pub const RKAP_LEN: usize = HEADER + 1 + 16;

pub use super::bytes::ct_eq;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// Shorter than its protocol requires.
    Length(usize),
    /// A protocol, algorithm or RDM we do not implement.
    Unsupported { protocol: u8, algorithm: u8, rdm: u8 },
}

/// What option 90 says, by protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Scheme {
    Delayed {
        secret_id: u32,
        mac: [u8; 16],
    },
    /// An RFC 6704 nonce handed out in an ACK: the key for later FORCERENEWs.
    ReconfigureKey {
        key: [u8; 16],
    },
    /// A FORCERENEW signed with that key.
    ReconfigureHmac {
        mac: [u8; 16],
    },
}

/// A parsed option 90. `mac_offset` is where the 16 MAC bytes sit inside the option value, so
/// the caller can zero them in the digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthRepr {
    pub protocol: u8,
    pub algorithm: u8,
    pub rdm: u8,
    pub replay: u64,
    pub scheme: Scheme,
}

impl AuthRepr {
    pub fn parse(value: &[u8]) -> Result<AuthRepr, Error> {
        if value.len() < HEADER {
            return Err(Error::Length(value.len()));
        }
        let (protocol, algorithm, rdm) = (value[0], value[1], value[2]);
        let replay = super::bytes::be64(value, 3..11);
        let unsupported = Err(Error::Unsupported { protocol, algorithm, rdm });
        if algorithm != ALGORITHM_HMAC_MD5 || rdm != RDM_MONOTONIC {
            return unsupported;
        }
        let info = &value[HEADER..];
        let scheme = match protocol {
            PROTOCOL_DELAYED => {
                if value.len() != DELAYED_LEN {
                    return Err(Error::Length(value.len()));
                }
                let mut mac = [0; 16];
                mac.copy_from_slice(&info[4..20]);
                Scheme::Delayed { secret_id: super::bytes::be32(info, 0..4), mac }
            }
            PROTOCOL_RECONFIGURE_KEY => {
                if value.len() != RKAP_LEN {
                    return Err(Error::Length(value.len()));
                }
                let mut v = [0; 16];
                v.copy_from_slice(&info[1..17]);
                match info[0] {
                    RKAP_KEY => Scheme::ReconfigureKey { key: v },
                    RKAP_HMAC_MD5 => Scheme::ReconfigureHmac { mac: v },
                    _ => return unsupported,
                }
            }
            _ => return unsupported,
        };
        Ok(AuthRepr { protocol, algorithm, rdm, replay, scheme })
    }

    /// Offset of the MAC inside the option value, for schemes that carry one.
    pub fn mac_offset(&self) -> Option<usize> {
        match self.scheme {
            Scheme::Delayed { .. } => Some(HEADER + 4),
            Scheme::ReconfigureHmac { .. } => Some(HEADER + 1),
            Scheme::ReconfigureKey { .. } => None,
        }
    }

    pub fn buffer_len(&self) -> usize {
        match self.scheme {
            Scheme::Delayed { .. } => DELAYED_LEN,
            _ => RKAP_LEN,
        }
    }

    /// Writes the option value (without code and length bytes).
    pub fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&[self.protocol, self.algorithm, self.rdm]);
        out.extend_from_slice(&self.replay.to_be_bytes());
        match self.scheme {
            Scheme::Delayed { secret_id, mac } => {
                out.extend_from_slice(&secret_id.to_be_bytes());
                out.extend_from_slice(&mac);
            }
            Scheme::ReconfigureKey { key } => {
                out.push(RKAP_KEY);
                out.extend_from_slice(&key);
            }
            Scheme::ReconfigureHmac { mac } => {
                out.push(RKAP_HMAC_MD5);
                out.extend_from_slice(&mac);
            }
        }
    }
}

/// Offsets in the BOOTP header that RFC 3118 §2 zeroes for the digest (relay agents change them).
const HOPS: core::ops::Range<usize> = 3..4;
const GIADDR: core::ops::Range<usize> = 24..28;

/// HMAC-MD5 over a whole DHCP message with `hops`, `giaddr` and `mac` (absolute offsets of the
/// 16 MAC bytes) fed as zeros. Ranges that fall outside the message are simply not zeroed.
pub fn dhcp_hmac_md5(key: &[u8], msg: &[u8], mac: core::ops::Range<usize>) -> [u8; 16] {
    // HMAC accepts keys of any length; the Err arm is unreachable but must not panic.
    let mut h = match HmacMd5::new_from_slice(key) {
        Ok(h) => h,
        Err(_) => return [0; 16],
    };
    let zeros = [0u8; 16];
    let mut holes = [HOPS, GIADDR, mac];
    holes.sort_by_key(|r| r.start);
    let mut at = 0;
    for hole in holes {
        let start = hole.start.clamp(at, msg.len());
        let end = hole.end.clamp(start, msg.len());
        h.update(&msg[at..start]);
        h.update(&zeros[..(end - start).min(16)]);
        at = end;
    }
    h.update(&msg[at..]);
    h.finalize().into_bytes().into()
}

/// Checks the 16 MAC bytes at `mac` (absolute offsets) of a received DHCP message in constant
/// time.
pub fn verify_dhcp_mac(key: &[u8], msg: &[u8], mac: core::ops::Range<usize>) -> bool {
    match msg.get(mac.clone()) {
        Some(got) => ct_eq(&dhcp_hmac_md5(key, msg, mac), got),
        None => false,
    }
}

pub fn hmac_md5(key: &[u8], data: &[u8]) -> [u8; 16] {
    match HmacMd5::new_from_slice(key) {
        Ok(mut h) => {
            h.update(data);
            h.finalize().into_bytes().into()
        }
        Err(_) => [0; 16],
    }
}

pub fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    match HmacSha256::new_from_slice(key) {
        Ok(mut h) => {
            h.update(data);
            h.finalize().into_bytes().into()
        }
        Err(_) => [0; 32],
    }
}

/// Verifies a received HMAC-SHA256 tag in constant time.
pub fn verify_sha256(key: &[u8], data: &[u8], tag: &[u8]) -> bool {
    ct_eq(&hmac_sha256(key, data), tag)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    // RFC 2202 §2: HMAC-MD5 test cases 1–7.
    #[test]
    fn rfc2202_hmac_md5() {
        let cases: [(Vec<u8>, Vec<u8>, &str); 7] = [
            (vec![0x0b; 16], b"Hi There".to_vec(), "9294727a3638bb1c13f48ef8158bfc9d"),
            (b"Jefe".to_vec(), b"what do ya want for nothing?".to_vec(), "750c783e6ab0b503eaa86e310a5db738"),
            (vec![0xaa; 16], vec![0xdd; 50], "56be34521d144c88dbb8c733f0e8b3f6"),
            (
                hex("0102030405060708090a0b0c0d0e0f10111213141516171819"),
                vec![0xcd; 50],
                "697eaf0aca3a3aea3a75164746ffaa79",
            ),
            (vec![0x0c; 16], b"Test With Truncation".to_vec(), "56461ef2342edc00f9bab995690efd4c"),
            (
                vec![0xaa; 80],
                b"Test Using Larger Than Block-Size Key - Hash Key First".to_vec(),
                "6b1ab7fe4bd7bf8f0b62e6ce61b9d0cd",
            ),
            (
                vec![0xaa; 80],
                b"Test Using Larger Than Block-Size Key and Larger Than One Block-Size Data".to_vec(),
                "6f630fad67cda0ee1fb1f562db3aa53e",
            ),
        ];
        for (key, data, want) in cases {
            assert_eq!(hmac_md5(&key, &data).to_vec(), hex(want));
        }
    }

    // RFC 4231 §4: HMAC-SHA-256 test cases 1–4, 6, 7 (case 5 is a truncated output).
    #[test]
    fn rfc4231_hmac_sha256() {
        let cases: [(Vec<u8>, Vec<u8>, &str); 6] = [
            (vec![0x0b; 20], b"Hi There".to_vec(), "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"),
            (
                b"Jefe".to_vec(),
                b"what do ya want for nothing?".to_vec(),
                "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
            ),
            (vec![0xaa; 20], vec![0xdd; 50], "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe"),
            (
                hex("0102030405060708090a0b0c0d0e0f10111213141516171819"),
                vec![0xcd; 50],
                "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b",
            ),
            (
                vec![0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First".to_vec(),
                "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
            ),
            (
                vec![0xaa; 131],
                b"This is a test using a larger than block-size key and a larger than block-size data. The key needs to be hashed before being used by the HMAC algorithm.".to_vec(),
                "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2",
            ),
        ];
        for (key, data, want) in cases {
            assert_eq!(hmac_sha256(&key, &data).to_vec(), hex(want));
        }
    }

    #[test]
    fn dhcp_digest_ignores_hops_giaddr_and_mac_bytes() {
        let mut msg: Vec<u8> = (0..300u32).map(|i| i as u8).collect();
        let a = dhcp_hmac_md5(b"k", &msg, 250..266);
        msg[3] = 9;
        msg[25] = 0xee;
        msg[255] = 0x42;
        assert_eq!(a, dhcp_hmac_md5(b"k", &msg, 250..266));
        msg[100] ^= 1;
        assert_ne!(a, dhcp_hmac_md5(b"k", &msg, 250..266));
        // Equivalent to the copy-and-zero definition.
        let mut z = msg.clone();
        z[3] = 0;
        z[24..28].fill(0);
        z[250..266].fill(0);
        assert_eq!(dhcp_hmac_md5(b"k", &msg, 250..266), hmac_md5(b"k", &z));
    }

    #[test]
    fn option90_parse_emit() {
        let r = AuthRepr {
            protocol: 1,
            algorithm: 1,
            rdm: 0,
            replay: 0x0102030405060708,
            scheme: Scheme::Delayed { secret_id: 7, mac: [0xab; 16] },
        };
        let mut v = Vec::new();
        r.emit(&mut v);
        assert_eq!(v.len(), DELAYED_LEN);
        assert_eq!(&v[..11], &[1, 1, 0, 1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(AuthRepr::parse(&v), Ok(r));
        assert!(AuthRepr::parse(&v[..30]).is_err());
        let mut bad = v.clone();
        bad[1] = 2;
        assert!(matches!(AuthRepr::parse(&bad), Err(Error::Unsupported { .. })));
    }

    #[test]
    fn ct_eq_is_equality() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
    }
}
