//! What DHCP clients send to the server, watched on the DHCP server's interface: the xids that
//! `serve --interface` learns and the REQUESTs by which `forcerenew` knows a client renewed.
//!
//! Contract: frames come from the shell's packet socket with the DHCP server's filter (inbound
//! UDP to port 67, first fragments), and are decoded with our own checked views only. A frame
//! that is not a well-formed BOOTREQUEST from an Ethernet client (htype 1, hlen 6) is counted
//! in [`WatchStats`] and otherwise ignored: the watcher never decides anything, it reports
//! [`ClientMsg`]s to its caller. Reading never blocks: [`DhcpWatch::drain`] hands over what is
//! queued and returns, so the caller can wait on [`DhcpWatch::raw_fd`] in its own event loop.

use crate::shell::capture::{LiveSource, Shutdown};
use crate::shell::source::FrameSource;
use crate::wire::dhcpv4::{self, MessageType};
use crate::wire::frame::{self, Body};
use crate::wire::Mac;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::RawFd;

/// One client message, as much of it as the senders use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientMsg {
    /// chaddr (which is what dhcpcd matches a FORCERENEW's chaddr against).
    pub mac: Mac,
    pub xid: u32,
    pub message_type: MessageType,
    pub ciaddr: Ipv4Addr,
    pub requested_ip: Option<Ipv4Addr>,
    pub src_ip: Ipv4Addr,
}

impl ClientMsg {
    /// The address the client holds or asks for: ciaddr when renewing, else option 50.
    pub fn address(&self) -> Option<Ipv4Addr> {
        Some(self.ciaddr).filter(|a| !a.is_unspecified()).or(self.requested_ip)
    }
}

/// Frames the watcher passed over.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WatchStats {
    pub messages: u64,
    /// Not Ethernet/IPv4/UDP to port 67, or a DHCP message that does not parse.
    pub malformed: u64,
    /// A BOOTREPLY, or a client that is not Ethernet.
    pub ignored: u64,
}

/// Decodes one frame as a client message. Pure, for the tests and the fuzz target.
pub fn decode(bytes: &[u8], csum: frame::Checksum, stats: &mut WatchStats) -> Option<ClientMsg> {
    let Ok(f) = frame::decode(bytes, csum) else {
        stats.malformed += 1;
        return None;
    };
    let Body::Udp(udp) = f.body else {
        stats.malformed += 1;
        return None;
    };
    if udp.dst_port != dhcpv4::SERVER_PORT {
        stats.ignored += 1;
        return None;
    }
    // Option 224 is irrelevant here; 0 keeps the scan from looking for it.
    let parsed = dhcpv4::Packet::new_checked(udp.payload).and_then(|p| dhcpv4::Repr::parse(&p, 0));
    let Ok(r) = parsed else {
        stats.malformed += 1;
        return None;
    };
    let mac = (r.op == 1 && r.htype == 1).then(|| Mac::from_slice(r.chaddr)).flatten();
    let Some(mac) = mac else {
        stats.ignored += 1;
        return None;
    };
    stats.messages += 1;
    Some(ClientMsg {
        mac,
        xid: r.xid,
        message_type: r.message_type,
        ciaddr: r.ciaddr,
        requested_ip: r.requested_ip,
        src_ip: udp.src_ip,
    })
}

/// The live watcher on one interface.
pub struct DhcpWatch {
    source: LiveSource,
    pub stats: WatchStats,
}

impl DhcpWatch {
    /// Needs CAP_NET_RAW.
    pub fn open(ifindex: u32) -> io::Result<DhcpWatch> {
        let source = LiveSource::open_dhcp_server(ifindex, Shutdown::new()?)?;
        Ok(DhcpWatch { source, stats: WatchStats::default() })
    }

    /// Readable when client messages are queued.
    pub fn raw_fd(&self) -> RawFd {
        self.source.raw_fd()
    }

    /// Hands every queued client message to `f`, without waiting. Returns how many frames were
    /// read (decoded or not).
    pub fn drain(&mut self, f: impl FnMut(ClientMsg)) -> io::Result<usize> {
        self.drain_max(usize::MAX, f)
    }

    /// As [`DhcpWatch::drain`], reading at most `max` frames: an event loop that serves others
    /// too bounds its turn, since frames can arrive as fast as they are read (a flood to port 67)
    /// and an unbounded drain would then never return. What is left stays queued, and the
    /// socket stays readable.
    pub fn drain_max(&mut self, max: usize, mut f: impl FnMut(ClientMsg)) -> io::Result<usize> {
        let mut n = 0;
        while n < max {
            let frame = match self.source.next_ready() {
                Ok(Some(fr)) => fr,
                Ok(None) => return Ok(n),
                Err(e) => return Err(io::Error::other(e.to_string())),
            };
            n += 1;
            if let Some(m) = decode(frame.bytes, frame.csum, &mut self.stats) {
                f(m);
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::frame::{Checksum, UdpFrameRepr};

    fn request(mac: Mac, xid: u32, op: u8) -> Vec<u8> {
        let mut r = dhcpv4::Repr::new(MessageType::Request, xid, &mac.0);
        r.op = op;
        r.ciaddr = Ipv4Addr::new(10, 77, 0, 50);
        let udp = UdpFrameRepr {
            src_mac: mac,
            dst_mac: Mac([2, 0, 0, 0, 0, 1]),
            src_ip: Ipv4Addr::new(10, 77, 0, 50),
            dst_ip: Ipv4Addr::new(10, 77, 0, 1),
            src_port: 68,
            dst_port: 67,
            ttl: 64,
        };
        udp.emit(&r.to_bytes())
    }

    #[test]
    fn a_renewing_request_gives_its_chaddr_xid_and_ciaddr() {
        let mac = Mac([2, 0, 0, 0, 0, 0x50]);
        let mut st = WatchStats::default();
        let m = decode(&request(mac, 0xdead_beef, 1), Checksum::Verify, &mut st).unwrap();
        assert_eq!((m.mac, m.xid, m.message_type), (mac, 0xdead_beef, MessageType::Request));
        assert_eq!(m.address(), Some(Ipv4Addr::new(10, 77, 0, 50)));
        assert_eq!(st, WatchStats { messages: 1, ..Default::default() });
    }

    #[test]
    fn replies_and_garbage_are_counted_not_reported() {
        let mut st = WatchStats::default();
        assert!(decode(&request(Mac([2, 0, 0, 0, 0, 0x50]), 1, 2), Checksum::Verify, &mut st).is_none());
        let mut cut = request(Mac([2, 0, 0, 0, 0, 0x50]), 1, 1);
        cut.truncate(100);
        assert!(decode(&cut, Checksum::Verify, &mut st).is_none());
        assert!(decode(&[0u8; 3], Checksum::Verify, &mut st).is_none());
        assert_eq!(st, WatchStats { messages: 0, malformed: 2, ignored: 1 });
    }
}
