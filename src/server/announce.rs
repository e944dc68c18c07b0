//! `ipsyncd announce`: broadcasts the server's signed ANNOUNCE on one interface.
//!
//! Contract: the sequence follows DESIGN §4.3 (max(last + 1, µs since the epoch)) and the last
//! value sent is persisted in `state_dir/announce.seq` before the datagram leaves, so a restart
//! never reuses a sequence. The datagram is sent from the announced address through a UDP socket
//! bound to the interface (SO_BINDTODEVICE), so it never leaves on any other interface.

use super::Announce;
use crate::wire::Mac;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::Path;

pub const SEQ_FILE: &str = "announce.seq";

pub struct Sender {
    sock: UdpSocket,
    port: u16,
}

impl Sender {
    pub fn open(interface: &str, from: Ipv4Addr, port: u16) -> std::io::Result<Sender> {
        let sock = UdpSocket::bind(SocketAddrV4::new(from, 0))?;
        sock.set_broadcast(true)?;
        let name = interface.as_bytes();
        // SAFETY: passes the interface name bytes and their length to setsockopt.
        let r = unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_BINDTODEVICE,
                name.as_ptr().cast(),
                name.len() as u32,
            )
        };
        if r < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Sender { sock, port })
    }

    pub fn send(&self, payload: &[u8]) -> std::io::Result<()> {
        self.sock.send_to(payload, SocketAddrV4::new(Ipv4Addr::BROADCAST, self.port)).map(|_| ())
    }
}

/// Builds, persists and sends one announcement; returns its sequence.
#[allow(clippy::too_many_arguments)]
pub fn announce_once(
    sender: &Sender,
    state_dir: &Path,
    key_id: u32,
    key: &[u8],
    ip: Ipv4Addr,
    mac: Mac,
    previous: Option<Ipv4Addr>,
    now_unix_us: u64,
) -> std::io::Result<u64> {
    let sequence = super::sequence::take_persisted(state_dir, SEQ_FILE, now_unix_us)?;
    let a = Announce {
        key_id,
        key,
        sequence,
        server_ip: ip,
        server_mac: mac,
        previous_ip: previous,
        server_name: None,
        service_port: None,
    };
    sender.send(&a.payload())?;
    Ok(sequence)
}
