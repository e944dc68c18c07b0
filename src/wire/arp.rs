//! ARP for Ethernet/IPv4 (RFC 826), as conflict evidence and for RFC 5227 probes.
//!
//! Contract: [`Packet::new_checked`] accepts only htype 1, ptype 0x0800, hlen 6, plen 4 and at
//! least 28 bytes; other hardware or protocol types are errors, not guesses.

use super::bytes::{be16, byte, ipv4_at, put, BufferTooSmall, Mac};
use std::net::Ipv4Addr;

mod field {
    use crate::wire::bytes::Field;
    pub const HTYPE: Field = 0..2;
    pub const PTYPE: Field = 2..4;
    pub const HLEN: usize = 4;
    pub const PLEN: usize = 5;
    pub const OPER: Field = 6..8;
    pub const SHA: Field = 8..14;
    pub const SPA: Field = 14..18;
    pub const THA: Field = 18..24;
    pub const TPA: Field = 24..28;
    pub const LEN: usize = 28;
}

pub const LEN: usize = field::LEN;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    Truncated(usize),
    /// Not Ethernet/IPv4: (htype, ptype, hlen, plen).
    Format(u16, u16, u8, u8),
}

impl Error {
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Truncated(_) => "arp_truncated",
            Error::Format(..) => "arp_format",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Operation {
    Request,
    Reply,
    Unknown(u16),
}

impl From<u16> for Operation {
    fn from(v: u16) -> Self {
        match v {
            1 => Operation::Request,
            2 => Operation::Reply,
            o => Operation::Unknown(o),
        }
    }
}

impl From<Operation> for u16 {
    fn from(v: Operation) -> u16 {
        match v {
            Operation::Request => 1,
            Operation::Reply => 2,
            Operation::Unknown(o) => o,
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    pub fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }
    pub fn new_checked(buffer: T) -> Result<Packet<T>, Error> {
        let p = Packet::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }
    pub fn check_len(&self) -> Result<(), Error> {
        let b = self.buffer.as_ref();
        if b.len() < field::LEN {
            return Err(Error::Truncated(b.len()));
        }
        let (h, p, hl, pl) = (be16(b, field::HTYPE), be16(b, field::PTYPE), byte(b, field::HLEN), byte(b, field::PLEN));
        if (h, p, hl, pl) != (1, 0x0800, 6, 4) {
            return Err(Error::Format(h, p, hl, pl));
        }
        Ok(())
    }
    pub fn operation(&self) -> Operation {
        Operation::from(be16(self.buffer.as_ref(), field::OPER))
    }
    pub fn sha(&self) -> Mac {
        self.buffer.as_ref().get(field::SHA).and_then(Mac::from_slice).unwrap_or(Mac::ZERO)
    }
    pub fn spa(&self) -> Ipv4Addr {
        ipv4_at(self.buffer.as_ref(), field::SPA)
    }
    pub fn tha(&self) -> Mac {
        self.buffer.as_ref().get(field::THA).and_then(Mac::from_slice).unwrap_or(Mac::ZERO)
    }
    pub fn tpa(&self) -> Ipv4Addr {
        ipv4_at(self.buffer.as_ref(), field::TPA)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    pub operation: Operation,
    pub sha: Mac,
    pub spa: Ipv4Addr,
    pub tha: Mac,
    pub tpa: Ipv4Addr,
}

impl Repr {
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Result<Repr, Error> {
        p.check_len()?;
        Ok(Repr { operation: p.operation(), sha: p.sha(), spa: p.spa(), tha: p.tha(), tpa: p.tpa() })
    }

    pub fn buffer_len(&self) -> usize {
        field::LEN
    }

    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, BufferTooSmall> {
        put(buf, field::HTYPE, &1u16.to_be_bytes())?;
        put(buf, field::PTYPE, &0x0800u16.to_be_bytes())?;
        put(buf, field::HLEN..field::HLEN + 1, &[6])?;
        put(buf, field::PLEN..field::PLEN + 1, &[4])?;
        put(buf, field::OPER, &u16::from(self.operation).to_be_bytes())?;
        put(buf, field::SHA, &self.sha.0)?;
        put(buf, field::SPA, &self.spa.octets())?;
        put(buf, field::THA, &self.tha.0)?;
        put(buf, field::TPA, &self.tpa.octets())?;
        Ok(field::LEN)
    }

    /// RFC 5227 §2.1.1 probe: sender IP all zeros, target the address being probed.
    pub fn probe(our_mac: Mac, candidate: Ipv4Addr) -> Repr {
        Repr { operation: Operation::Request, sha: our_mac, spa: Ipv4Addr::UNSPECIFIED, tha: Mac::ZERO, tpa: candidate }
    }

    /// RFC 5227 §2.3 announcement: sender and target IP both the claimed address.
    pub fn announcement(our_mac: Mac, addr: Ipv4Addr) -> Repr {
        Repr { operation: Operation::Request, sha: our_mac, spa: addr, tha: Mac::ZERO, tpa: addr }
    }

    pub fn to_bytes(&self) -> [u8; LEN] {
        let mut b = [0u8; LEN];
        let _ = self.emit(&mut b);
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A reply "10.77.0.20 is-at 02:00:00:00:00:02" to 10.77.0.10, laid out from RFC 826.
    const REPLY: [u8; 28] =
        [0, 1, 8, 0, 6, 4, 0, 2, 2, 0, 0, 0, 0, 2, 10, 77, 0, 20, 2, 0, 0, 0, 0, 0x10, 10, 77, 0, 10];

    fn reply() -> Repr {
        Repr {
            operation: Operation::Reply,
            sha: Mac([2, 0, 0, 0, 0, 2]),
            spa: Ipv4Addr::new(10, 77, 0, 20),
            tha: Mac([2, 0, 0, 0, 0, 0x10]),
            tpa: Ipv4Addr::new(10, 77, 0, 10),
        }
    }

    #[test]
    fn parse_emit() {
        assert_eq!(Repr::parse(&Packet::new_checked(&REPLY[..]).unwrap()).unwrap(), reply());
        assert_eq!(reply().to_bytes(), REPLY);
    }

    #[test]
    fn rejects_short_and_foreign() {
        assert_eq!(Packet::new_checked(&REPLY[..27]).unwrap_err(), Error::Truncated(27));
        let mut b = REPLY;
        b[1] = 6;
        assert!(matches!(Packet::new_checked(&b[..]), Err(Error::Format(6, ..))));
    }

    #[test]
    fn unchecked_short_view_reads_zeros_instead_of_panicking() {
        // sha() and tha() indexed the buffer directly and panicked on a short unchecked view.
        let p = Packet::new_unchecked(&REPLY[..10]);
        assert_eq!((p.sha(), p.tha(), p.tpa()), (Mac::ZERO, Mac::ZERO, Ipv4Addr::UNSPECIFIED));
    }
}
