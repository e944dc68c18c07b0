//! The wire's primitives: the Ethernet address, named field ranges, bounds-safe big-endian
//! readers and writers, and the Internet checksum.
//!
//! Contract: no reader panics on a short slice (it returns 0, and callers check lengths first);
//! a writer given a short buffer returns [`BufferTooSmall`].

use core::fmt;
use subtle::ConstantTimeEq;

/// Constant-time equality of two byte strings of equal length (unequal lengths are unequal, and
/// length is not secret).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// A named byte range inside a header, as smoltcp spells it.
pub type Field = core::ops::Range<usize>;

/// A 48-bit Ethernet address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    pub const BROADCAST: Mac = Mac([0xff; 6]);
    pub const ZERO: Mac = Mac([0; 6]);

    /// Copies a MAC out of a slice that the caller has already length-checked.
    pub fn from_slice(b: &[u8]) -> Option<Mac> {
        let a: [u8; 6] = b.get(..6)?.try_into().ok()?;
        Some(Mac(a))
    }

    /// Constant-time equality: an attacker probing chaddr or SERVER_MAC learns nothing from timing.
    pub fn ct_eq(&self, other: &Mac) -> bool {
        ct_eq(&self.0, &other.0)
    }

    pub fn is_unicast(&self) -> bool {
        self.0[0] & 1 == 0 && *self != Mac::ZERO
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(f, "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5])
    }
}

impl fmt::Debug for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl core::str::FromStr for Mac {
    type Err = ();
    fn from_str(s: &str) -> Result<Mac, ()> {
        let mut out = [0u8; 6];
        let mut n = 0;
        for part in s.split([':', '-']) {
            if n == 6 || part.len() != 2 {
                return Err(());
            }
            out[n] = u8::from_str_radix(part, 16).map_err(|_| ())?;
            n += 1;
        }
        if n == 6 {
            Ok(Mac(out))
        } else {
            Err(())
        }
    }
}

/// Big-endian readers over slices whose length the caller has checked. They still return a
/// value rather than panic if that promise is broken, because a wrong offset must never become
/// a crash on wire input.
#[inline]
pub(crate) fn be16(b: &[u8], f: Field) -> u16 {
    match b.get(f) {
        Some(&[a, c]) => u16::from_be_bytes([a, c]),
        _ => 0,
    }
}

#[inline]
pub(crate) fn be32(b: &[u8], f: Field) -> u32 {
    match b.get(f) {
        Some(&[a, c, d, e]) => u32::from_be_bytes([a, c, d, e]),
        _ => 0,
    }
}

#[inline]
pub(crate) fn be64(b: &[u8], f: Field) -> u64 {
    match b.get(f).and_then(|s| <[u8; 8]>::try_from(s).ok()) {
        Some(a) => u64::from_be_bytes(a),
        None => 0,
    }
}

#[inline]
pub(crate) fn ipv4_at(b: &[u8], f: Field) -> std::net::Ipv4Addr {
    std::net::Ipv4Addr::from(be32(b, f))
}

#[inline]
pub(crate) fn byte(b: &[u8], i: usize) -> u8 {
    b.get(i).copied().unwrap_or(0)
}

/// Writes into a buffer that `buffer_len` sized; a short buffer is an emit-side bug, reported
/// as an error instead of a panic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BufferTooSmall;

impl fmt::Display for BufferTooSmall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("emit buffer too small")
    }
}
impl std::error::Error for BufferTooSmall {}

pub(crate) fn put(buf: &mut [u8], f: Field, src: &[u8]) -> Result<(), BufferTooSmall> {
    match buf.get_mut(f) {
        Some(d) if d.len() == src.len() => {
            d.copy_from_slice(src);
            Ok(())
        }
        _ => Err(BufferTooSmall),
    }
}

/// The Internet checksum (RFC 1071) over `data`, unfolded, added to `initial`.
///
/// RFC 1071 §2(B): the sum is byte-order independent, so we add native little-endian 32-bit
/// words (no byte swaps, one add per 4 bytes) and swap once in [`checksum_fold`]. Partial sums
/// chain: every `data` but the last must have an even length so 16-bit words stay paired.
pub fn checksum_accumulate(initial: u32, data: &[u8]) -> u32 {
    // Four independent accumulators: the adds do not wait on each other.
    let (mut a, mut b, mut c, mut d) = (u64::from(initial), 0u64, 0u64, 0u64);
    let mut blocks = data.chunks_exact(16);
    for x in &mut blocks {
        a += u64::from(u32::from_le_bytes([x[0], x[1], x[2], x[3]]));
        b += u64::from(u32::from_le_bytes([x[4], x[5], x[6], x[7]]));
        c += u64::from(u32::from_le_bytes([x[8], x[9], x[10], x[11]]));
        d += u64::from(u32::from_le_bytes([x[12], x[13], x[14], x[15]]));
    }
    let mut sum = a + b + c + d;
    let mut words = blocks.remainder().chunks_exact(4);
    for w in &mut words {
        sum += u64::from(u32::from_le_bytes([w[0], w[1], w[2], w[3]]));
    }
    let rest = words.remainder();
    let mut tail = [0u8; 4];
    tail[..rest.len()].copy_from_slice(rest);
    sum += u64::from(u32::from_le_bytes(tail));
    // 2^32 ≡ 1 (mod 2^16 − 1): end-around carry from bit 32 keeps the one's-complement sum.
    sum = (sum & 0xffff_ffff) + (sum >> 32);
    sum = (sum & 0xffff_ffff) + (sum >> 32);
    sum as u32
}

/// Folds a partial sum from [`checksum_accumulate`] to 16 bits, in network byte order.
pub fn checksum_fold(sum: u32) -> u16 {
    let mut s = (sum & 0xffff) + (sum >> 16);
    s = (s & 0xffff) + (s >> 16);
    (s as u16).swap_bytes()
}
