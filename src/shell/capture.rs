//! Live capture: an AF_PACKET socket with the kernel filter attached before bind.
//!
//! Contract: only inbound ARP and IPv4 UDP to port 68 or `server.port` reach user space (in
//! follow mode also outgoing UDP to port 67: the system client's REQUESTs); the filter is
//! locked (SO_LOCK_FILTER) and attached before bind so no unfiltered frame slips in.
//! A frame longer than the buffer is counted (MSG_TRUNC) and never parsed. PACKET_AUXDATA tells
//! whether the UDP checksum is verified, not ready (veth, lo) or to be checked by us. Our own
//! outgoing frames are dropped twice, by `inbound` in the filter and by packet type, except the
//! DHCP requests that follow mode asks for. The thread
//! blocks in poll(2) on the socket and a shutdown eventfd: no busy-waiting, no idle wakeups.

use super::clock::{Clock, SystemClock};
use super::source::{Frame, FrameSource, SourceError};
use crate::wire::frame::Checksum;
use crate::wire::Mac;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// `tcpdump -dd -y EN10MB 'inbound and (arp or (ip and udp and (dst port 68 or dst port 47474)))'`
/// Instruction 12 holds the ipsync port; [`filter_for_port`] patches it.
const FILTER: [libc::sock_filter; 15] = [
    bpf(0x28, 0, 0, 0xfffff004),  // ldh [type]          (SKF_AD_PKTTYPE)
    bpf(0x15, 12, 0, 0x00000004), // jeq #OUTGOING → drop
    bpf(0x28, 0, 0, 0x0000000c),  // ldh [12]            ethertype
    bpf(0x15, 9, 0, 0x00000806),  // jeq #ARP → accept
    bpf(0x15, 0, 9, 0x00000800),  // jeq #IPv4 else drop
    bpf(0x30, 0, 0, 0x00000017),  // ldb [23]            protocol
    bpf(0x15, 0, 7, 0x00000011),  // jeq #UDP else drop
    bpf(0x28, 0, 0, 0x00000014),  // ldh [20]            flags+fragment
    bpf(0x45, 5, 0, 0x00001fff),  // jset #0x1fff → drop (not the first fragment)
    bpf(0xb1, 0, 0, 0x0000000e),  // ldxb 4*([14]&0xf)   IHL
    bpf(0x48, 0, 0, 0x00000010),  // ldh [x + 16]        UDP destination port
    bpf(0x15, 1, 0, 0x00000044),  // jeq #68 → accept
    bpf(0x15, 0, 1, 0x0000b972),  // jeq #47474 → accept else drop
    bpf(0x06, 0, 0, 0x00040000),  // ret #262144         accept
    bpf(0x06, 0, 0, 0x00000000),  // ret #0              drop
];
const PORT_INSN: usize = 12;

const fn bpf(code: u16, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

pub fn filter_for_port(port: u16) -> [libc::sock_filter; 15] {
    let mut f = FILTER;
    f[PORT_INSN].k = u32::from(port);
    f
}

/// Follow mode (DESIGN §5): the same, and also the system client's REQUESTs on their way out:
/// `(inbound and (arp or (ip and udp and (dst port 68 or dst port P)))) or
///  (outbound and ip and udp and dst port 67)`, with first fragments only.
pub fn follow_filter_for_port(port: u16) -> [libc::sock_filter; 26] {
    let f = filter_for_port(port);
    let mut out = [bpf(0x06, 0, 0, 0); 26];
    out[..15].copy_from_slice(&f);
    out[1] = bpf(0x15, 13, 0, 0x00000004); // jeq #OUTGOING → 15
    out[15] = bpf(0x28, 0, 0, 0x0000000c); // ldh [12]            ethertype
    out[16] = bpf(0x15, 0, 8, 0x00000800); // jeq #IPv4 else drop (25)
    out[17] = bpf(0x30, 0, 0, 0x00000017); // ldb [23]            protocol
    out[18] = bpf(0x15, 0, 6, 0x00000011); // jeq #UDP else drop
    out[19] = bpf(0x28, 0, 0, 0x00000014); // ldh [20]            flags+fragment
    out[20] = bpf(0x45, 4, 0, 0x00001fff); // jset #0x1fff → drop
    out[21] = bpf(0xb1, 0, 0, 0x0000000e); // ldxb 4*([14]&0xf)   IHL
    out[22] = bpf(0x48, 0, 0, 0x00000010); // ldh [x + 16]        UDP destination port
    out[23] = bpf(0x15, 0, 1, 0x00000043); // jeq #67 → accept else drop
    out[24] = bpf(0x06, 0, 0, 0x00040000); // ret #262144         accept
    out[25] = bpf(0x06, 0, 0, 0x00000000); // ret #0              drop
    out
}

/// dhcp mode: a UDP socket bound to port 68 on the interface and never read. The kernel then
/// drops replies unicast to our address quietly (we read them on the packet socket) instead of
/// answering them with ICMP port unreachable. Fails when another client holds the port.
pub fn hold_client_port(ifname: &str) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall; the fd is owned from here on.
    let fd = cvt(unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: fresh descriptor.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let raw = fd.as_raw_fd();
    let name = std::ffi::CString::new(ifname).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let bytes = name.as_bytes_with_nul();
    // SAFETY: `bytes` is a live NUL-terminated buffer and its length is passed.
    cvt(unsafe {
        libc::setsockopt(raw, libc::SOL_SOCKET, libc::SO_BINDTODEVICE, bytes.as_ptr().cast(), bytes.len() as u32)
    })?;
    // The smallest queue the kernel allows: a full one drops silently, which is the point.
    setsockopt(raw, libc::SOL_SOCKET, libc::SO_RCVBUF, &1i32)?;
    // SAFETY: sockaddr_in is plain old data; all-zero is INADDR_ANY.
    let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    sa.sin_family = libc::AF_INET as u16;
    sa.sin_port = crate::wire::dhcpv4::CLIENT_PORT.to_be();
    // SAFETY: `sa` is a valid sockaddr_in and its size is passed.
    cvt(unsafe {
        libc::bind(raw, (&sa as *const libc::sockaddr_in).cast(), std::mem::size_of::<libc::sockaddr_in>() as u32)
    })?;
    Ok(fd)
}

const TP_STATUS_CSUMNOTREADY: u32 = 1 << 3;
const TP_STATUS_CSUM_VALID: u32 = 1 << 7;
const SO_LOCK_FILTER: libc::c_int = 44;
/// Ethernet + 802.1Q + the largest IPv4 datagram we accept in one frame.
const BUFFER: usize = 2048;

#[derive(Debug, Default)]
pub struct CaptureStats {
    pub frames: AtomicU64,
    pub truncated: AtomicU64,
    pub outgoing: AtomicU64,
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn setsockopt<T>(fd: RawFd, level: libc::c_int, name: libc::c_int, v: &T) -> io::Result<()> {
    // SAFETY: `v` points to a live T for the duration of the call, and its size is passed.
    let r = unsafe {
        libc::setsockopt(fd, level, name, (v as *const T).cast(), std::mem::size_of::<T>() as libc::socklen_t)
    };
    cvt(r).map(|_| ())
}

fn packet_socket() -> io::Result<OwnedFd> {
    // Protocol 0: the socket receives nothing until bind, so the filter is in place first.
    // SAFETY: plain syscall; the fd is owned from here on.
    let fd = cvt(unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn sockaddr_ll(ifindex: u32, protocol: u16, dst: Option<Mac>) -> libc::sockaddr_ll {
    // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
    let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sa.sll_family = libc::AF_PACKET as u16;
    sa.sll_protocol = protocol.to_be();
    sa.sll_ifindex = ifindex as i32;
    if let Some(m) = dst {
        sa.sll_halen = 6;
        sa.sll_addr[..6].copy_from_slice(&m.0);
    }
    sa
}

/// Wakes a blocked capture thread for shutdown.
#[derive(Clone)]
pub struct Shutdown(Arc<OwnedFd>);

impl Shutdown {
    pub fn new() -> io::Result<Shutdown> {
        // SAFETY: plain syscall; the fd is owned from here on.
        let fd = cvt(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) })?;
        // SAFETY: fresh descriptor.
        Ok(Shutdown(Arc::new(unsafe { OwnedFd::from_raw_fd(fd) })))
    }
    pub fn trigger(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to our eventfd.
        let _ = unsafe { libc::write(self.0.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }
    pub fn fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

pub struct LiveSource {
    fd: OwnedFd,
    /// Follow mode: outgoing frames passed by the filter (the system client's REQUESTs) are kept.
    own_requests: bool,
    shutdown: Shutdown,
    buf: Vec<u8>,
    index: u64,
    pub stats: Arc<CaptureStats>,
}

impl LiveSource {
    /// `own_requests`: also pass our own outgoing DHCP requests (follow mode, DESIGN §5).
    pub fn open(ifindex: u32, port: u16, own_requests: bool, shutdown: Shutdown) -> io::Result<LiveSource> {
        let fd = packet_socket()?;
        let raw = fd.as_raw_fd();
        let mut plain = filter_for_port(port);
        let mut follow = follow_filter_for_port(port);
        let prog = if own_requests {
            libc::sock_fprog { len: follow.len() as u16, filter: follow.as_mut_ptr() }
        } else {
            libc::sock_fprog { len: plain.len() as u16, filter: plain.as_mut_ptr() }
        };
        setsockopt(raw, libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &prog)?;
        setsockopt(raw, libc::SOL_SOCKET, SO_LOCK_FILTER, &1i32)?;
        setsockopt(raw, libc::SOL_PACKET, libc::PACKET_AUXDATA, &1i32)?;
        // Room for a burst (the filter already keeps unrelated traffic out of it).
        setsockopt(raw, libc::SOL_SOCKET, libc::SO_RCVBUF, &(1i32 << 20))?;
        let sa = sockaddr_ll(ifindex, libc::ETH_P_ALL as u16, None);
        // SAFETY: `sa` is a valid sockaddr_ll and its size is passed.
        cvt(unsafe {
            libc::bind(raw, (&sa as *const libc::sockaddr_ll).cast(), std::mem::size_of::<libc::sockaddr_ll>() as u32)
        })?;
        Ok(LiveSource {
            fd,
            own_requests,
            shutdown,
            buf: vec![0; BUFFER],
            index: 0,
            stats: Arc::new(CaptureStats::default()),
        })
    }

    /// Blocks until the socket is readable (true) or shutdown was triggered (false).
    fn wait(&self) -> io::Result<bool> {
        let mut fds = [
            libc::pollfd { fd: self.fd.as_raw_fd(), events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: self.shutdown.fd(), events: libc::POLLIN, revents: 0 },
        ];
        loop {
            // SAFETY: `fds` is a live array of two pollfd.
            let r = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
            if r < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if fds[1].revents != 0 {
                return Ok(false);
            }
            if fds[0].revents != 0 {
                return Ok(true);
            }
        }
    }

    /// One recvmsg: (length on the wire, packet type, aux status), or None if nothing is queued.
    fn recv(&mut self) -> io::Result<Option<(usize, u8, u32)>> {
        // SAFETY: zeroed sockaddr_ll / msghdr are valid initial values.
        let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        let mut iov = libc::iovec { iov_base: self.buf.as_mut_ptr().cast(), iov_len: self.buf.len() };
        let mut cmsg = [0u64; 16];
        // SAFETY: as above.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_name = (&mut sa as *mut libc::sockaddr_ll).cast();
        msg.msg_namelen = std::mem::size_of::<libc::sockaddr_ll>() as u32;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cmsg.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&cmsg);
        // SAFETY: every pointer in `msg` refers to a live buffer of the stated size.
        let n = unsafe { libc::recvmsg(self.fd.as_raw_fd(), &mut msg, libc::MSG_TRUNC | libc::MSG_DONTWAIT) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::EAGAIN | libc::EINTR) => Ok(None),
                // The link went down under us (reported once per event): keep listening; the
                // socket delivers again when it comes back up.
                Some(libc::ENETDOWN | libc::ENXIO) => {
                    log::info!("capture: {e}; waiting for the link");
                    Ok(None)
                }
                _ => Err(e),
            };
        }
        let mut status = 0u32;
        // SAFETY: the CMSG_* macros walk the control buffer the kernel just filled.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&msg);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_PACKET && (*c).cmsg_type == libc::PACKET_AUXDATA {
                    let aux = libc::CMSG_DATA(c).cast::<libc::tpacket_auxdata>().read_unaligned();
                    status = aux.tp_status;
                }
                c = libc::CMSG_NXTHDR(&msg, c);
            }
        }
        Ok(Some((n as usize, sa.sll_pkttype, status)))
    }
}

impl FrameSource for LiveSource {
    fn next_frame(&mut self) -> Result<Option<Frame<'_>>, SourceError> {
        loop {
            let Some((len, pkttype, status)) = self.recv().map_err(SourceError::Io)? else {
                if !self.wait().map_err(SourceError::Io)? {
                    return Ok(None);
                }
                continue;
            };
            if pkttype == libc::PACKET_OUTGOING && !self.own_requests {
                self.stats.outgoing.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            if len > self.buf.len() {
                self.stats.truncated.fetch_add(1, Ordering::Relaxed);
                log::debug!("dropped a truncated frame of {len} bytes");
                continue;
            }
            self.stats.frames.fetch_add(1, Ordering::Relaxed);
            self.index += 1;
            let csum = if status & (TP_STATUS_CSUMNOTREADY | TP_STATUS_CSUM_VALID) != 0 {
                Checksum::Skip
            } else {
                Checksum::Verify
            };
            return Ok(Some(Frame { index: self.index, ts: SystemClock.now(), bytes: &self.buf[..len], csum }));
        }
    }
}

/// Sends whole Ethernet frames on one interface.
pub struct Transmitter {
    fd: OwnedFd,
    ifindex: u32,
}

impl Transmitter {
    pub fn open(ifindex: u32) -> io::Result<Transmitter> {
        Ok(Transmitter { fd: packet_socket()?, ifindex })
    }

    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        let dst = Mac::from_slice(frame.get(..6).unwrap_or(&[]))
            .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        let sa = sockaddr_ll(self.ifindex, 0, Some(dst));
        // SAFETY: `frame` and `sa` are live for the call and their sizes are passed.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&sa as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }
}
