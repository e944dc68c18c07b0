//! Live capture: an AF_PACKET socket with the kernel filter attached before bind.
//!
//! Contract: only inbound ARP and IPv4 UDP to port 68 or `server.port` reach user space (in
//! follow mode also outgoing UDP to port 67: the system client's REQUESTs); the filter is
//! locked (SO_LOCK_FILTER) and attached before bind so no unfiltered frame slips in.
//! A frame longer than [`BUFFER`] is counted (`truncated`) and never parsed. The kernel's
//! checksum status (PACKET_AUXDATA, or `tp_status` in the ring) tells whether the UDP checksum
//! is verified, not ready (veth, lo) or to be checked by us. Our own outgoing frames are
//! dropped twice, by `inbound` in the filter and by packet type, except the DHCP requests that
//! follow mode asks for.
//!
//! Frames come from a TPACKET_V3 receive ring ([`super::ring`]) a block at a time: one wake-up
//! per block instead of one recvmsg per frame, for at most [`RingConfig::retire_ms`] of extra
//! latency on a quiet link. Frames the kernel dropped because the ring was full are counted
//! (`ring_drops`, from PACKET_STATISTICS when a block says TP_STATUS_LOSING), and a block whose
//! headers do not fit it is skipped and counted (`ring_bad_blocks`). When the ring cannot be set
//! up (an old or sandboxed kernel), or when the environment says `IPSYNCD_CAPTURE=recv`, the
//! capture reads one frame per recvmsg instead, and says so once at start. That knob is for
//! operators who would rather pay a system call per frame than the block latency, and for
//! measuring one path beside the other (benches/live.rs). Either way the thread blocks in
//! poll(2) on the socket and a shutdown eventfd: no busy-waiting, no idle wakeups.

use super::clock::{Clock, SystemClock};
use super::ring::{self, Ring, RingConfig, Walker};
use super::source::{Frame, FrameSource, SourceError};
use crate::engine::input::Direction;
use crate::engine::Instant;
use crate::wire::frame::Checksum;
use crate::wire::Mac;
use std::io;
use std::ops::Range;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// `tcpdump -dd -y EN10MB 'inbound and (arp or (ip and udp and (dst port 68 or dst port 47474)))'`,
/// with its `jeq #OUTGOING` made `jge #OTHERHOST`: frames for other hosts' MACs (a bridge
/// flooding unknown unicast, a hub, a VM's promiscuous tap) are dropped in the kernel too, so
/// a server's FORCERENEWs to the rest of the fleet never reach, or rate-limit, this terminal.
/// Instruction 12 holds the ipsync port; [`filter_for_port`] patches it.
const FILTER: [libc::sock_filter; 15] = [
    bpf(0x28, 0, 0, 0xfffff004),  // ldh [type]          (SKF_AD_PKTTYPE)
    bpf(0x35, 12, 0, 0x00000003), // jge #OTHERHOST → drop (also OUTGOING, LOOPBACK)
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

/// `tcpdump -dd -y EN10MB 'inbound and ip and udp and dst port 67'`, first fragments only: what
/// DHCP clients send to the server.
const DHCP_SERVER_FILTER: [libc::sock_filter; 13] = [
    bpf(0x28, 0, 0, 0xfffff004),  // ldh [type]          (SKF_AD_PKTTYPE)
    bpf(0x15, 10, 0, 0x00000004), // jeq #OUTGOING → drop
    bpf(0x28, 0, 0, 0x0000000c),  // ldh [12]            ethertype
    bpf(0x15, 0, 8, 0x00000800),  // jeq #IPv4 else drop
    bpf(0x30, 0, 0, 0x00000017),  // ldb [23]            protocol
    bpf(0x15, 0, 6, 0x00000011),  // jeq #UDP else drop
    bpf(0x28, 0, 0, 0x00000014),  // ldh [20]            flags+fragment
    bpf(0x45, 4, 0, 0x00001fff),  // jset #0x1fff → drop (not the first fragment)
    bpf(0xb1, 0, 0, 0x0000000e),  // ldxb 4*([14]&0xf)   IHL
    bpf(0x48, 0, 0, 0x00000010),  // ldh [x + 16]        UDP destination port
    bpf(0x15, 0, 1, 0x00000043),  // jeq #67 → accept else drop
    bpf(0x06, 0, 0, 0x00040000),  // ret #262144         accept
    bpf(0x06, 0, 0, 0x00000000),  // ret #0              drop
];

const fn bpf(code: u16, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

pub fn filter_for_port(port: u16) -> [libc::sock_filter; 15] {
    let mut f = FILTER;
    f[PORT_INSN].k = u32::from(port);
    f
}

/// Follow mode (DESIGN §5): the same, and also the system client's REQUESTs on their way out:
/// `(inbound and not otherhost and (arp or (ip and udp and (dst port 68 or dst port P)))) or
///  (outbound and ip and udp and dst port 67)`, with first fragments only.
pub fn follow_filter_for_port(port: u16) -> [libc::sock_filter; 27] {
    let f = filter_for_port(port);
    let mut out = [bpf(0x06, 0, 0, 0); 27];
    out[0] = f[0]; //                         ldh [type]
    out[1] = bpf(0x15, 14, 0, 0x00000004); // jeq #OUTGOING → 16
    out[2] = bpf(0x35, 12, 0, 0x00000003); // jge #OTHERHOST → drop (15)
                                           // The inbound part as in FILTER, one further down: its jumps are relative and land on its
                                           // own accept (14) and drop (15).
    out[3..16].copy_from_slice(&f[2..15]);
    out[16] = bpf(0x28, 0, 0, 0x0000000c); // ldh [12]            ethertype
    out[17] = bpf(0x15, 0, 8, 0x00000800); // jeq #IPv4 else drop (26)
    out[18] = bpf(0x30, 0, 0, 0x00000017); // ldb [23]            protocol
    out[19] = bpf(0x15, 0, 6, 0x00000011); // jeq #UDP else drop
    out[20] = bpf(0x28, 0, 0, 0x00000014); // ldh [20]            flags+fragment
    out[21] = bpf(0x45, 4, 0, 0x00001fff); // jset #0x1fff → drop
    out[22] = bpf(0xb1, 0, 0, 0x0000000e); // ldxb 4*([14]&0xf)   IHL
    out[23] = bpf(0x48, 0, 0, 0x00000010); // ldh [x + 16]        UDP destination port
    out[24] = bpf(0x15, 0, 1, 0x00000043); // jeq #67 → accept else drop
    out[25] = bpf(0x06, 0, 0, 0x00040000); // ret #262144         accept
    out[26] = bpf(0x06, 0, 0, 0x00000000); // ret #0              drop
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
pub const BUFFER: usize = 2048;
/// The environment variable that picks the capture path: `recv` for one recvmsg per frame;
/// unset or `ring` for the TPACKET_V3 ring.
pub const CAPTURE_ENV: &str = "IPSYNCD_CAPTURE";

#[derive(Debug, Default)]
pub struct CaptureStats {
    pub frames: AtomicU64,
    pub truncated: AtomicU64,
    pub outgoing: AtomicU64,
    /// Frames the kernel dropped because every ring block was still ours.
    pub ring_drops: AtomicU64,
    /// Ring blocks skipped because their headers did not fit them (see [`ring::BlockError`]).
    pub ring_bad_blocks: AtomicU64,
    /// Whether frames come from the ring (false: one recvmsg per frame).
    pub ring: std::sync::atomic::AtomicBool,
}

impl CaptureStats {
    /// The counters `status` shows under `dropped` (only those that are not zero).
    pub fn drops(&self) -> Vec<(&'static str, u64)> {
        [
            ("capture_truncated", self.truncated.load(Ordering::Relaxed)),
            ("ring_drops", self.ring_drops.load(Ordering::Relaxed)),
            ("ring_bad_blocks", self.ring_bad_blocks.load(Ordering::Relaxed)),
        ]
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .collect()
    }

    /// The sum of [`CaptureStats::drops`], without allocating: it changes when any of them does.
    pub fn dropped_total(&self) -> u64 {
        self.truncated.load(Ordering::Relaxed)
            + self.ring_drops.load(Ordering::Relaxed)
            + self.ring_bad_blocks.load(Ordering::Relaxed)
    }
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

/// Where the frames are read from.
enum Path {
    /// One recvmsg per frame into `buf`.
    Recv { buf: Vec<u8> },
    /// The TPACKET_V3 ring; `walk` is the block being read, with the time it was picked up.
    Ring { ring: Ring, walk: Option<(usize, Walker)>, ts: Instant },
}

/// A frame found by [`LiveSource::advance`]: where its bytes are in the current buffer.
struct Found {
    data: Range<usize>,
    csum: Checksum,
    dir: Direction,
    ts: Instant,
}

pub struct LiveSource {
    fd: OwnedFd,
    /// Follow mode: outgoing frames passed by the filter (the system client's REQUESTs) are kept.
    own_requests: bool,
    shutdown: Shutdown,
    path: Path,
    index: u64,
    pub stats: Arc<CaptureStats>,
}

/// What the environment asks of the capture path (see the module comment).
fn ring_wanted() -> bool {
    match std::env::var(CAPTURE_ENV).as_deref() {
        Ok("recv") => {
            log::info!("capture: {CAPTURE_ENV}=recv: one recvmsg per frame, no receive ring");
            false
        }
        Ok("ring") | Err(_) => true,
        Ok(other) => {
            log::warn!("capture: {CAPTURE_ENV}={other:?} is neither \"ring\" nor \"recv\"; using the ring");
            true
        }
    }
}

/// The checks every frame passes on either path: direction and length. Counts what it drops.
fn admit(stats: &CaptureStats, own_requests: bool, pkttype: u8, wire_len: usize, captured: usize) -> Option<Direction> {
    if pkttype == libc::PACKET_OUTGOING && !own_requests {
        stats.outgoing.fetch_add(1, Ordering::Relaxed);
        return None;
    }
    if wire_len > BUFFER || captured < wire_len {
        stats.truncated.fetch_add(1, Ordering::Relaxed);
        log::debug!("dropped a truncated frame of {wire_len} bytes");
        return None;
    }
    stats.frames.fetch_add(1, Ordering::Relaxed);
    Some(if pkttype == libc::PACKET_OUTGOING { Direction::Outgoing } else { Direction::Inbound })
}

/// Counts a ring block that does not fit its own headers; the first one is also logged.
fn bad_block(stats: &CaptureStats, e: &ring::BlockError, skipped: &str) {
    if stats.ring_bad_blocks.fetch_add(1, Ordering::Relaxed) == 0 {
        log::warn!("capture: {e}; skipping {skipped} (counted as ring_bad_blocks)");
    }
}

fn checksum(status: u32) -> Checksum {
    if status & (TP_STATUS_CSUMNOTREADY | TP_STATUS_CSUM_VALID) != 0 {
        Checksum::Skip
    } else {
        Checksum::Verify
    }
}

impl LiveSource {
    /// `own_requests`: also pass our own outgoing DHCP requests (follow mode, DESIGN §5).
    pub fn open(ifindex: u32, port: u16, own_requests: bool, shutdown: Shutdown) -> io::Result<LiveSource> {
        LiveSource::open_with(ifindex, port, own_requests, shutdown, ring_wanted().then_some(RingConfig::DEFAULT))
    }

    /// As [`LiveSource::open`], with the ring's sizes given (`None`: the recv path).
    pub fn open_with(
        ifindex: u32,
        port: u16,
        own_requests: bool,
        shutdown: Shutdown,
        ring: Option<RingConfig>,
    ) -> io::Result<LiveSource> {
        let mut plain = filter_for_port(port);
        let mut follow = follow_filter_for_port(port);
        let filter: &mut [libc::sock_filter] = if own_requests { &mut follow } else { &mut plain };
        LiveSource::open_filter(ifindex, filter, own_requests, shutdown, ring)
    }

    /// The DHCP server's side (`serve --interface`, `forcerenew`): inbound UDP to port 67 only,
    /// the clients' DISCOVERs, REQUESTs and RELEASEs, whose xids and addresses the senders learn.
    pub fn open_dhcp_server(ifindex: u32, shutdown: Shutdown) -> io::Result<LiveSource> {
        let mut f = DHCP_SERVER_FILTER;
        LiveSource::open_filter(ifindex, &mut f, false, shutdown, ring_wanted().then_some(RingConfig::DEFAULT))
    }

    fn open_filter(
        ifindex: u32,
        filter: &mut [libc::sock_filter],
        own_requests: bool,
        shutdown: Shutdown,
        ring: Option<RingConfig>,
    ) -> io::Result<LiveSource> {
        let fd = packet_socket()?;
        let raw = fd.as_raw_fd();
        let len = u16::try_from(filter.len()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let prog = libc::sock_fprog { len, filter: filter.as_mut_ptr() };
        setsockopt(raw, libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &prog)?;
        setsockopt(raw, libc::SOL_SOCKET, SO_LOCK_FILTER, &1i32)?;
        setsockopt(raw, libc::SOL_PACKET, libc::PACKET_AUXDATA, &1i32)?;
        // Room for a burst (the filter already keeps unrelated traffic out of it).
        setsockopt(raw, libc::SOL_SOCKET, libc::SO_RCVBUF, &(1i32 << 20))?;
        // The ring goes in before bind, like the filter: no frame is queued the other way first.
        let stats = Arc::new(CaptureStats::default());
        let path = match ring.map(|cfg| Ring::new(fd.as_fd(), cfg)) {
            Some(Ok(ring)) => {
                let c = ring.config();
                log::debug!(
                    "capture: TPACKET_V3 ring of {} × {} KiB blocks, {} ms block timeout",
                    c.block_count,
                    c.block_size >> 10,
                    c.retire_ms
                );
                stats.ring.store(true, Ordering::Relaxed);
                Path::Ring { ring, walk: None, ts: Instant::from_micros(0) }
            }
            Some(Err(e)) => {
                log::info!("capture: no receive ring ({e}); reading one frame per recvmsg");
                Path::Recv { buf: vec![0; BUFFER] }
            }
            None => Path::Recv { buf: vec![0; BUFFER] },
        };
        let sa = sockaddr_ll(ifindex, libc::ETH_P_ALL as u16, None);
        // SAFETY: `sa` is a valid sockaddr_ll and its size is passed.
        cvt(unsafe {
            libc::bind(raw, (&sa as *const libc::sockaddr_ll).cast(), std::mem::size_of::<libc::sockaddr_ll>() as u32)
        })?;
        Ok(LiveSource { fd, own_requests, shutdown, path, index: 0, stats })
    }

    /// The socket, for an event loop that waits on it beside other descriptors (`serve`).
    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Whether frames come from the ring.
    pub fn uses_ring(&self) -> bool {
        matches!(self.path, Path::Ring { .. })
    }

    /// Blocks until the socket is readable or in error (its revents), or shutdown was
    /// triggered (None).
    fn wait(&self) -> io::Result<Option<libc::c_short>> {
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
                return Ok(None);
            }
            if fds[0].revents != 0 {
                return Ok(Some(fds[0].revents));
            }
        }
    }

    /// Errors the link reports (reported once per event) that mean "keep listening": the socket
    /// delivers again when the link comes back up.
    fn transient(e: &io::Error) -> bool {
        if matches!(e.raw_os_error(), Some(libc::ENETDOWN | libc::ENXIO)) {
            log::info!("capture: {e}; waiting for the link");
            return true;
        }
        false
    }

    /// A pending socket error (SO_ERROR, which also clears it): the ring reports a link going
    /// down only through poll's POLLERR, and an uncleared error would make poll return at once
    /// for ever.
    fn take_socket_error(&self) -> io::Result<()> {
        let mut err: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `err` and `len` are live for the call and `len` is `err`'s size.
        cvt(unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_ERROR,
                (&mut err as *mut libc::c_int).cast(),
                &mut len,
            )
        })?;
        match err {
            0 => Ok(()),
            e => {
                let e = io::Error::from_raw_os_error(e);
                if LiveSource::transient(&e) {
                    Ok(())
                } else {
                    Err(e)
                }
            }
        }
    }

    /// One recvmsg: (length on the wire, packet type, aux status), or None if nothing is queued.
    fn recv(fd: RawFd, buf: &mut [u8]) -> io::Result<Option<(usize, u8, u32)>> {
        // SAFETY: zeroed sockaddr_ll / msghdr are valid initial values.
        let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
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
        let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_TRUNC | libc::MSG_DONTWAIT) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::EAGAIN | libc::EINTR) => Ok(None),
                _ if LiveSource::transient(&e) => Ok(None),
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

    /// Finds the next frame that passes [`admit`]; None at shutdown, or (`block` false) when
    /// none is at hand without waiting. The bytes stay where they are (the recv buffer or the
    /// ring block).
    fn advance(&mut self, block: bool) -> io::Result<Option<Found>> {
        loop {
            match &mut self.path {
                Path::Recv { buf } => {
                    if let Some((len, pkttype, status)) = LiveSource::recv(self.fd.as_raw_fd(), buf)? {
                        let Some(dir) = admit(&self.stats, self.own_requests, pkttype, len, len.min(buf.len())) else {
                            continue;
                        };
                        return Ok(Some(Found { data: 0..len, csum: checksum(status), dir, ts: SystemClock.now() }));
                    }
                }
                Path::Ring { ring, walk, ts } => {
                    if let Some((block, w)) = walk.as_mut() {
                        match w.next_frame(ring.block(*block)) {
                            Some(Ok(f)) => {
                                let (wire, captured) = (f.wire_len as usize, f.data.len());
                                let Some(dir) = admit(&self.stats, self.own_requests, f.pkttype, wire, captured) else {
                                    continue;
                                };
                                return Ok(Some(Found { data: f.data, csum: checksum(f.status), dir, ts: *ts }));
                            }
                            Some(Err(e)) => bad_block(&self.stats, &e, "the rest of the block"),
                            None => {}
                        }
                        // The walk is over: every frame lent from this block has been decoded.
                        *walk = None;
                        ring.release();
                        continue;
                    }
                    if let Some((block, status)) = ring.ready() {
                        if status & libc::TP_STATUS_LOSING != 0 {
                            match ring::take_drops(self.fd.as_fd()) {
                                Ok(n) => {
                                    self.stats.ring_drops.fetch_add(u64::from(n), Ordering::Relaxed);
                                }
                                Err(e) => log::debug!("capture: PACKET_STATISTICS: {e}"),
                            }
                        }
                        match Walker::new(ring.block(block)) {
                            Ok(w) => {
                                // One clock read per block: the worker reads its own anyway.
                                *ts = SystemClock.now();
                                *walk = Some((block, w));
                            }
                            Err(e) => {
                                bad_block(&self.stats, &e, "the block");
                                ring.release();
                            }
                        }
                        continue;
                    }
                }
            }
            if !block {
                return Ok(None);
            }
            let Some(revents) = self.wait()? else { return Ok(None) };
            if revents & libc::POLLERR != 0 && matches!(self.path, Path::Ring { .. }) {
                self.take_socket_error()?;
            }
        }
    }
}

impl LiveSource {
    fn lend(&mut self, block: bool) -> Result<Option<Frame<'_>>, SourceError> {
        let Some(found) = self.advance(block).map_err(SourceError::Io)? else {
            return Ok(None);
        };
        self.index += 1;
        let bytes = match &self.path {
            Path::Recv { buf } => buf.get(found.data).unwrap_or(&[]),
            Path::Ring { ring, walk, .. } => match walk {
                Some((block, _)) => ring.block(*block).get(found.data).unwrap_or(&[]),
                None => &[],
            },
        };
        Ok(Some(Frame { index: self.index, ts: found.ts, bytes, csum: found.csum, dir: found.dir }))
    }
}

impl FrameSource for LiveSource {
    fn next_frame(&mut self) -> Result<Option<Frame<'_>>, SourceError> {
        self.lend(true)
    }

    /// The rest of the current ring block, and the next block if the kernel has retired it;
    /// on the recv path one recvmsg that does not wait.
    fn next_ready(&mut self) -> Result<Option<Frame<'_>>, SourceError> {
        self.lend(false)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::frame::UdpFrameRepr;
    use std::net::Ipv4Addr;

    /// The classic-BPF subset our filters use, run as the kernel would: the verdict for one
    /// frame of packet type `pkttype`. Any other opcode fails the test.
    fn run(prog: &[libc::sock_filter], pkttype: u16, f: &[u8]) -> u32 {
        let (mut a, mut x, mut pc) = (0u32, 0u32, 0usize);
        let ld = |off: usize, n: usize| f.get(off..off + n).map(|b| b.iter().fold(0u32, |v, &c| v << 8 | u32::from(c)));
        loop {
            let i = prog[pc];
            pc += 1;
            let k = i.k as usize;
            match i.code {
                0x28 if i.k == 0xfffff004 => a = u32::from(pkttype),
                0x28 => {
                    a = match ld(k, 2) {
                        Some(v) => v,
                        None => return 0,
                    }
                }
                0x30 => {
                    a = match ld(k, 1) {
                        Some(v) => v,
                        None => return 0,
                    }
                }
                0xb1 => {
                    x = match ld(k, 1) {
                        Some(v) => (v & 0xf) * 4,
                        None => return 0,
                    }
                }
                0x48 => {
                    a = match ld(x as usize + k, 2) {
                        Some(v) => v,
                        None => return 0,
                    }
                }
                0x06 => return i.k,
                0x15 | 0x35 | 0x45 => {
                    let t = match i.code {
                        0x15 => a == i.k,
                        0x35 => a >= i.k,
                        _ => a & i.k != 0,
                    };
                    pc += usize::from(if t { i.jt } else { i.jf });
                }
                c => panic!("opcode {c:#x} not in the interpreter"),
            }
        }
    }

    fn udp(dst_port: u16) -> Vec<u8> {
        let r = UdpFrameRepr {
            src_mac: Mac([2, 0, 0, 0, 0, 1]),
            dst_mac: Mac([2, 0, 0, 0, 0, 0x10]),
            src_ip: Ipv4Addr::new(10, 77, 0, 1),
            dst_ip: Ipv4Addr::new(10, 77, 0, 10),
            src_port: 67,
            dst_port,
            ttl: 64,
        };
        r.emit(&[0u8; 300])
    }

    const HOST: u16 = 0;
    const BROADCAST: u16 = 1;
    const OTHERHOST: u16 = 3;
    const OUTGOING: u16 = 4;

    #[test]
    fn r9_the_terminal_filters_drop_frames_for_other_hosts_and_keep_what_they_did() {
        let plain = filter_for_port(47474);
        let follow = follow_filter_for_port(47474);
        let mut arp = vec![0u8; 42];
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        let mut fragment = udp(68);
        fragment[20] = 0x20;
        fragment[21] = 0x10; // fragment offset ≠ 0
        for prog in [&plain[..], &follow[..]] {
            assert_ne!(run(prog, HOST, &udp(68)), 0, "DHCP to us");
            assert_ne!(run(prog, BROADCAST, &udp(47474)), 0, "an ANNOUNCE");
            assert_ne!(run(prog, HOST, &arp), 0, "ARP");
            assert_eq!(run(prog, OTHERHOST, &udp(68)), 0, "a FORCERENEW to another terminal's MAC");
            assert_eq!(run(prog, OTHERHOST, &udp(47474)), 0);
            assert_eq!(run(prog, HOST, &udp(1234)), 0, "unrelated UDP");
            assert_eq!(run(prog, HOST, &fragment), 0, "a later fragment");
            assert_eq!(run(prog, OUTGOING, &udp(68)), 0, "our own frames");
        }
        assert_eq!(run(&plain, OUTGOING, &udp(67)), 0);
        assert_ne!(run(&follow, OUTGOING, &udp(67)), 0, "follow mode: the system client's REQUEST");
        assert_eq!(run(&follow, OUTGOING, &udp(1234)), 0);
        assert_eq!(run(&filter_for_port(5000), BROADCAST, &udp(47474)), 0, "the port is patched");
    }

    #[test]
    fn the_dhcp_server_filter_takes_inbound_port_67_only() {
        let f = DHCP_SERVER_FILTER;
        assert_ne!(run(&f, HOST, &udp(67)), 0);
        assert_ne!(run(&f, BROADCAST, &udp(67)), 0);
        assert_eq!(run(&f, HOST, &udp(68)), 0);
        assert_eq!(run(&f, OUTGOING, &udp(67)), 0);
    }
}
