//! `ipsyncd serve`: answers each terminal's HELLO with a signed WELCOME ("connection success").
//!
//! Contract (DESIGN §4.3, §10):
//! - One thread runs an event loop (epoll, non-blocking sockets). A connection costs one socket
//!   and one record's buffer, never a thread, so many idle peers are cheap and no peer, hostile
//!   or broken, stops the server or blocks another's answer.
//! - Each connection has one deadline, [`HELLO_DEADLINE`] after it was accepted, for its whole
//!   HELLO and the WELCOME written back. A peer that drips one byte at a time is closed at that
//!   deadline however quick each read is.
//! - At most [`MAX_PER_PEER`] connections per peer address: a newcomer from a peer at its cap
//!   closes that peer's *oldest* connection, so an attacker cannot lock out terminals that share
//!   its address (NAT), only churn its own connections. At most [`MAX_CONNECTIONS`] in all
//!   (fewer when the file limit is lower; the soft limit is raised toward the hard one first):
//!   when full, the oldest connection is closed, never the new one. "Oldest" is by accept time:
//!   a genuine terminal sends its HELLO at once and is answered in the wakeup that reads it, so
//!   the connections that grow old are the idle and slow ones, and they are nearest their
//!   deadline anyway.
//! - Memory is bounded: one record in (at most 1024 bytes, the ipsync maximum, its length checked
//!   from the 8-byte prefix) and one out per connection, and a bounded number of connections.
//!   Bytes that cannot begin a HELLO close the connection at once, without an answer.
//! - A HELLO is answered when its key id is known and its HMAC verifies. There is no replay
//!   state: a WELCOME is valid only for the nonce of the HELLO its terminal is waiting on, so a
//!   replayed HELLO earns a WELCOME that nobody accepts, while a replay table would let whoever
//!   holds the HMAC key lock a terminal out by claiming its MAC with a huge sequence.
//! - [`Server::answer`] is the one place a HELLO becomes a WELCOME. One record each way: bytes
//!   after the HELLO are ignored, and the connection closes once the WELCOME is written.
//!   With `--service-port`/`--server-name` ([`Service`]) every WELCOME also carries
//!   SERVICE_PORT and SERVER_NAME, which the terminal hands to its SERVER_CONNECTED hook.
//! - With `--interface` ([`XidLearner`]) the same loop watches the DHCP clients' messages on
//!   that interface (inbound UDP to port 67, [`DhcpWatch`]) and keeps each client's last xid in
//!   `[forcerenew] xid_db` (DESIGN §6), for `forcerenew` to reach clients that check it
//!   (dhcpcd). Every client message counts, DISCOVER, REQUEST, DECLINE, RELEASE and INFORM,
//!   because what dhcpcd checks is the xid of its last exchange. The file is written as
//!   [`xid_db`](super::xid_db) schedules it (at once, then at most once a second), from the
//!   loop's own timeout: no thread, and no wakeup while nothing is pending. At most
//!   [`WATCH_BATCH`] frames are read per wakeup, so a flood to port 67 delays HELLOs by one
//!   batch, never starves them.
//! - The command (`run`) stops on SIGTERM or SIGINT, read from a signalfd in the same loop,
//!   and writes a pending xid change before it exits 0.

use super::conn_table::{Evicted, Eviction, Table, Token};
use super::dhcp_watch::{ClientMsg, DhcpWatch};
use super::error::ToolError;
use super::xid_db::{self, XidDb};
use crate::config::{Config, IpsyncKey};
use crate::shell::clock;
use crate::shell::netlink::Netlink;
use crate::wire::dhcpv4::MessageType;
use crate::wire::sig::{Signer, SigningKey, VerifyKey};
use crate::wire::{ipsync, Mac};
use nix::errno::Errno;
use nix::poll::PollTimeout;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::socket::{self as sock, AddressFamily, Backlog, SockFlag, SockType, SockaddrStorage};
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Connections open at once, when the file limit allows.
pub const MAX_CONNECTIONS: usize = 1024;
/// Connections open at once from one peer address.
pub const MAX_PER_PEER: usize = 32;
/// From accept to the WELCOME written: the whole exchange, not each read.
pub const HELLO_DEADLINE: Duration = Duration::from_secs(2);
/// Descriptors left for the rest of the process (listener, epoll, logs, config, the caller's).
const FD_RESERVE: usize = 64;
/// epoll user data of the listener, the DHCP watcher and the signalfd. Connection tokens never
/// take these: their low 32 bits are slot u32::MAX, which `conn_table` never uses.
const LISTENER: u64 = u64::MAX;
const DHCP_WATCH: u64 = 0xffff_fffe_ffff_ffff;
const SIGNALS: u64 = 0xffff_fffd_ffff_ffff;
/// DHCP frames read per wakeup at most (see the module's contract).
pub const WATCH_BATCH: usize = 1024;
const EVENTS_PER_WAIT: usize = 256;
/// Accepts per wakeup, so a connect flood cannot starve the reads of connections already open.
const ACCEPT_BATCH: usize = 128;
/// Pause after an accept error that closing our own connections cannot cure (ENOBUFS, ENOMEM,
/// descriptors held elsewhere): the listener stays ready, and retrying at once would spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);

/// Counters over the server's life. Every connection accepted ends in exactly one of the outcome
/// counters, so `accepted` is their sum plus the connections open now.
#[derive(Debug, Default)]
pub struct Stats {
    pub accepted: AtomicU64,
    /// The WELCOME was written in full (counted just after, so a terminal may read it first).
    pub welcomed: AtomicU64,
    /// Closed unanswered: not a HELLO, a length outside the ipsync bounds, an unknown key id, a
    /// bad HMAC, or a connection to a non-IPv4 address (a WELCOME must name an IPv4).
    pub rejected: AtomicU64,
    /// Closed at its deadline before the exchange finished.
    pub deadline_expired: AtomicU64,
    /// Closed, as the oldest of all, to admit a newcomer while the table was full.
    pub evicted_idle: AtomicU64,
    /// Closed, as its peer's oldest, to admit a newcomer from a peer address at its cap.
    pub per_peer_capped: AtomicU64,
    /// The peer hung up or reset, or an I/O call failed, before the exchange finished.
    pub io_closed: AtomicU64,
}

impl Stats {
    fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

pub struct Server {
    /// The shared `[[key]]`s that terminals sign HELLO with.
    keys: BTreeMap<u32, VerifyKey>,
    /// Signs every WELCOME when the config has one (DESIGN §4.3); else the HELLO's own key does.
    ed25519: Option<(u32, SigningKey)>,
    server_mac: Option<Mac>,
    /// SERVICE_PORT and SERVER_NAME for every WELCOME (`--service-port`, `--server-name`).
    service: Service,
    last_sent: Mutex<Option<u64>>,
    pub stats: Stats,
}

/// What each WELCOME says about the VDI service (DESIGN §4.3 TLVs 5 and 4), so that a terminal
/// that connects without an ANNOUNCE (at start, to its persisted server) still hands the hook a
/// SERVICE_PORT and SERVER_NAME. `name` was checked by the command line (1-64 bytes, no control
/// characters); the wire cuts a longer one at a character boundary.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Service {
    pub port: Option<u16>,
    pub name: Option<String>,
}

/// Why a connection got no WELCOME; logged at debug level with the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// Wrong magic or version, or a record that does not parse.
    Garbage,
    /// The prefix's length field, outside 52..=1024.
    Length(u16),
    NotHello,
    UnknownKey(u32),
    BadMac,
    /// The terminal dialled an address that is not IPv4, which a WELCOME cannot name.
    NotIpv4,
}

impl Server {
    /// `keys` are the config's `[[key]]`s: the shared ones check HELLO, and an Ed25519 one
    /// with its signing half signs every WELCOME.
    pub fn new(keys: BTreeMap<u32, IpsyncKey>, server_mac: Option<Mac>) -> Arc<Server> {
        Server::with_service(keys, server_mac, Service::default())
    }

    /// As [`Server::new`], every WELCOME also carrying `service`.
    pub fn with_service(keys: BTreeMap<u32, IpsyncKey>, server_mac: Option<Mac>, service: Service) -> Arc<Server> {
        let ed25519 = keys.iter().find_map(|(id, k)| match k {
            IpsyncKey::Ed25519 { signing: Some(s), .. } => Some((*id, s.clone())),
            _ => None,
        });
        let keys = keys
            .into_iter()
            .filter(|(_, k)| matches!(k, IpsyncKey::Hmac(_)))
            .map(|(id, k)| (id, k.verify_key()))
            .collect();
        Arc::new(Server { keys, ed25519, server_mac, service, last_sent: Mutex::new(None), stats: Stats::default() })
    }

    /// Checks a HELLO and builds the signed WELCOME for it. `local` is the address the terminal
    /// dialled, which the WELCOME must name. No replay check (see the module's contract).
    fn answer(&self, hello: &[u8], local: Ipv4Addr) -> Result<Vec<u8>, Refusal> {
        let p = ipsync::Packet::new_checked(hello).map_err(|_| Refusal::Garbage)?;
        let h = ipsync::Repr::parse(&p).map_err(|_| Refusal::Garbage)?;
        if h.msg_type != ipsync::MessageType::Hello {
            return Err(Refusal::NotHello);
        }
        let key = self.keys.get(&h.key_id).ok_or(Refusal::UnknownKey(h.key_id))?;
        if !p.verify(key) {
            return Err(Refusal::BadMac);
        }
        let sequence = {
            let mut last = self.last_sent.lock();
            let s = super::next_sequence(*last, clock::unix_us());
            *last = Some(s);
            s
        };
        let (key_id, signer) = match (&self.ed25519, key) {
            (Some((id, sk)), _) => (*id, Signer::Ed25519(sk)),
            (None, VerifyKey::Hmac(k)) => (h.key_id, Signer::Hmac(k)),
            (None, VerifyKey::Ed25519(_)) => return Err(Refusal::UnknownKey(h.key_id)),
        };
        let mut w = ipsync::Repr::new(ipsync::MessageType::Welcome, key_id, sequence);
        w.server_ipv4 = Some(local);
        w.server_mac = self.server_mac;
        w.nonce = h.nonce;
        w.status = Some(ipsync::status::SUCCESS);
        w.service_port = self.service.port;
        w.server_name = self.service.name.as_deref();
        Ok(w.to_bytes_signed(signer))
    }

    /// Serves on `listener` from the calling thread until waiting for events fails (it does not
    /// in normal operation). Logs the bound address and the limits in force.
    pub fn run(&self, listener: TcpListener) -> io::Result<()> {
        self.run_with(listener, Extras::default())
    }

    /// As [`Server::run`], also learning xids and stopping on a signal as `extras` say. Returns
    /// `Ok` after a signal, once a pending xid change is written.
    pub fn run_with(&self, listener: TcpListener, extras: Extras) -> io::Result<()> {
        listener.set_nonblocking(true)?;
        let bound = listener.local_addr()?;
        let cap = connection_cap(MAX_CONNECTIONS);
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        epoll.add(&listener, EpollEvent::new(EpollFlags::EPOLLIN, LISTENER))?;
        log::info!(
            "serve: listening on {bound}; at most {cap} connections, {MAX_PER_PEER} per peer address, \
             {} ms for each whole HELLO",
            HELLO_DEADLINE.as_millis()
        );
        let bound_v4 = match bound.ip() {
            IpAddr::V4(ip) if !ip.is_unspecified() => Some(ip),
            _ => None,
        };
        if let Some(l) = &extras.learner {
            epoll.add(l.watch_fd(), EpollEvent::new(EpollFlags::EPOLLIN, DHCP_WATCH))?;
        }
        if let Some(sig) = &extras.signals {
            epoll.add(sig, EpollEvent::new(EpollFlags::EPOLLIN, SIGNALS))?;
        }
        let Extras { learner, signals } = extras;
        EventLoop { server: self, listener, bound_v4, epoll, table: Table::new(cap, MAX_PER_PEER), learner, signals }
            .run()
    }
}

/// What the loop does besides answering HELLO.
#[derive(Default)]
pub struct Extras {
    /// `--interface`: learn the DHCP clients' xids into the xid file.
    pub learner: Option<XidLearner>,
    /// SIGTERM/SIGINT, blocked by the caller: stop cleanly when one arrives.
    pub signals: Option<SignalFd>,
}

/// Watches the DHCP clients on one interface and keeps their last xids in the xid file.
pub struct XidLearner {
    interface: String,
    watch: DhcpWatch,
    db: XidDb,
    path: PathBuf,
    /// Whether the last write failed: its error is logged once, and its recovery.
    failing: bool,
}

impl XidLearner {
    /// Watches `ifindex` (needs CAP_NET_RAW), starting from the table in `db`.
    pub fn open(interface: &str, ifindex: u32, db: XidDb, path: PathBuf) -> io::Result<XidLearner> {
        let watch = DhcpWatch::open(ifindex)?;
        Ok(XidLearner { interface: interface.to_string(), watch, db, path, failing: false })
    }

    fn watch_fd(&self) -> BorrowedFd<'_> {
        // SAFETY: the watcher owns this descriptor and outlives the borrow (both are ours).
        unsafe { BorrowedFd::borrow_raw(self.watch.raw_fd()) }
    }

    /// The watcher's socket is readable (or in error): one batch of client messages.
    fn on_ready(&mut self, events: EpollFlags, now: Instant) {
        if events.intersects(EpollFlags::EPOLLERR) {
            // A packet socket reports ENETDOWN and the like as a pending error, which stays
            // reported (level-triggered) until read: read it, or the loop would spin.
            let mut err: libc::c_int = 0;
            let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
            // SAFETY: `err` and `len` are live and `len` is err's size.
            let r = unsafe {
                libc::getsockopt(
                    self.watch.raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_ERROR,
                    (&mut err as *mut libc::c_int).cast(),
                    &mut len,
                )
            };
            if r == 0 && err != 0 {
                log::warn!("serve: {}: DHCP watch: {}", self.interface, io::Error::from_raw_os_error(err));
            }
        }
        let (db, interface) = (&mut self.db, self.interface.as_str());
        let read = self.watch.drain_max(WATCH_BATCH, |m| learn(db, interface, m, now));
        if let Err(e) = read {
            log::warn!("serve: {interface}: DHCP watch: {e}");
        }
    }

    fn due(&self) -> Option<Instant> {
        self.db.write_due()
    }

    fn write_if_due(&mut self, now: Instant) {
        let r = self.db.write_if_due(&self.path, now);
        self.report(r);
    }

    /// At shutdown: a pending change is written, due or not. Its failure is always logged:
    /// there is no next try.
    fn flush(&mut self, now: Instant) {
        match self.db.flush(&self.path, now) {
            Some(Err(e)) => log::warn!("serve: {}: cannot write: {e}; the last changes are lost", self.path.display()),
            r => self.report(r),
        }
    }

    fn report(&mut self, r: Option<io::Result<()>>) {
        match r {
            None => {}
            Some(Ok(())) => {
                if std::mem::take(&mut self.failing) {
                    log::info!("serve: {}: written again ({} clients)", self.path.display(), self.db.len());
                }
                log::debug!("serve: wrote {} ({} clients)", self.path.display(), self.db.len());
            }
            Some(Err(e)) => {
                // Once per failing spell: it is retried every second, and would flood the log.
                if !std::mem::replace(&mut self.failing, true) {
                    log::warn!("serve: {}: cannot write: {e}; retrying every second", self.path.display());
                }
            }
        }
    }
}

/// Records one client message; only the clients' own message types count (an OFFER or ACK in a
/// BOOTREQUEST is nobody's exchange).
fn learn(db: &mut XidDb, interface: &str, m: ClientMsg, now: Instant) {
    let client = matches!(
        m.message_type,
        MessageType::Discover
            | MessageType::Request
            | MessageType::Decline
            | MessageType::Release
            | MessageType::Inform
    );
    if !client {
        log::debug!("serve: {interface}: {:?} from {} is not a client message; xid not learned", m.message_type, m.mac);
        return;
    }
    if db.record(m.mac, m.xid, now) {
        log::debug!(
            "serve: {interface}: learned xid {:#010x} for {} ({:?} from {})",
            m.xid,
            m.mac,
            m.message_type,
            m.src_ip
        );
    }
}

/// What the bytes received so far say about the record: `Ok(None)` needs more, `Ok(Some(len))`
/// is its length, within the ipsync bounds; an error means these bytes can never begin a HELLO,
/// so garbage is closed at its first wrong byte rather than at the deadline.
fn record_len(prefix: &[u8]) -> Result<Option<usize>, Refusal> {
    if prefix.iter().zip(ipsync::MAGIC).any(|(a, b)| *a != b) {
        return Err(Refusal::Garbage);
    }
    if prefix.get(4).is_some_and(|&v| v != ipsync::VERSION) {
        return Err(Refusal::Garbage);
    }
    if prefix.get(5).is_some_and(|&t| ipsync::MessageType::from(t) != ipsync::MessageType::Hello) {
        return Err(Refusal::NotHello);
    }
    let (Some(&hi), Some(&lo)) = (prefix.get(6), prefix.get(7)) else {
        return Ok(None);
    };
    let len = u16::from_be_bytes([hi, lo]);
    if !(ipsync::MIN_LEN..=ipsync::MAX_LEN).contains(&usize::from(len)) {
        return Err(Refusal::Length(len));
    }
    Ok(Some(usize::from(len)))
}

/// The connection cap the file limit allows, each connection being one descriptor. A soft
/// RLIMIT_NOFILE short of `want` plus a reserve is first raised to the hard limit (logged): the
/// process's other descriptors (in tests, the clients' own sockets) count against it too, so
/// raising it only to our own need would move the shortage elsewhere.
fn connection_cap(want: usize) -> usize {
    let need = (want + FD_RESERVE) as libc::rlim_t;
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes one rlimit that we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        // Unknown: keep the cap; an EMFILE on accept still closes our oldest (`accept_batch`).
        return want;
    }
    if lim.rlim_cur < need {
        let raised = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
        // SAFETY: setrlimit reads one rlimit that we own.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            log::info!("serve: raised the soft file limit from {} to {}", lim.rlim_cur, raised.rlim_cur);
            lim.rlim_cur = raised.rlim_cur;
        } else {
            log::warn!("serve: could not raise the soft file limit {}: {}", lim.rlim_cur, io::Error::last_os_error());
        }
    }
    let cap = usize::try_from(lim.rlim_cur).unwrap_or(usize::MAX).saturating_sub(FD_RESERVE).clamp(1, want);
    if cap < want {
        log::warn!("serve: the file limit {} allows {cap} connections, not {want}", lim.rlim_cur);
    }
    cap
}

struct Conn {
    stream: TcpStream,
    peer: SocketAddr,
    /// The address the terminal dialled, which the WELCOME must name.
    local: Ipv4Addr,
    phase: Phase,
    /// What epoll watches for on this socket; `None` before it is registered.
    interest: Option<EpollFlags>,
    /// Who the answered HELLO said it was, for the debug line once the WELCOME is written.
    hello: Option<String>,
}

enum Phase {
    /// `filled` < the buffer's length always holds: once 8 bytes are in, the record's length is
    /// known and at most the buffer's, and a complete record leaves this phase.
    Reading {
        buf: Box<[u8; ipsync::MAX_LEN]>,
        filled: usize,
    },
    Writing {
        reply: Vec<u8>,
        written: usize,
    },
}

enum Step {
    Pending,
    /// The WELCOME is partly written and the socket's buffer is full.
    Blocked,
    Done(Outcome),
}

#[derive(Debug)]
enum Outcome {
    Welcomed,
    Refused(Refusal),
    Closed(Option<io::ErrorKind>),
}

fn transient(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted)
}

impl Conn {
    /// One readiness report: at most one read (level-triggered epoll reports what is left, and
    /// a drip costs one read, not a read and an EAGAIN), then, with the whole record in, its
    /// answer and as much of the WELCOME as the socket takes.
    fn on_ready(&mut self, server: &Server) -> Step {
        let Phase::Reading { buf, filled } = &mut self.phase else {
            return self.flush();
        };
        let Some(room) = buf.get_mut(*filled..).filter(|r| !r.is_empty()) else {
            return Step::Done(Outcome::Refused(Refusal::Garbage)); // unreachable by the invariant
        };
        match (&self.stream).read(room) {
            Ok(0) => return Step::Done(Outcome::Closed(None)),
            Ok(n) => *filled += n,
            Err(e) if transient(&e) => return Step::Pending,
            Err(e) => return Step::Done(Outcome::Closed(Some(e.kind()))),
        }
        let record = match record_len(&buf[..*filled]) {
            Err(why) => return Step::Done(Outcome::Refused(why)),
            Ok(Some(len)) if *filled >= len => &buf[..len],
            Ok(_) => return Step::Pending,
        };
        match server.answer(record, self.local) {
            Ok(reply) => {
                if log::log_enabled!(target: SERVE_TARGET, log::Level::Debug) {
                    self.hello = Some(hello_words(record));
                }
                self.phase = Phase::Writing { reply, written: 0 };
                self.flush()
            }
            Err(why) => Step::Done(Outcome::Refused(why)),
        }
    }

    fn flush(&mut self) -> Step {
        let Phase::Writing { reply, written } = &mut self.phase else {
            return Step::Pending;
        };
        while let Some(rest) = reply.get(*written..).filter(|r| !r.is_empty()) {
            match (&self.stream).write(rest) {
                Ok(0) => return Step::Done(Outcome::Closed(None)),
                Ok(n) => *written += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Step::Blocked,
                Err(e) => return Step::Done(Outcome::Closed(Some(e.kind()))),
            }
        }
        Step::Done(Outcome::Welcomed)
    }
}

struct EventLoop<'a> {
    server: &'a Server,
    listener: TcpListener,
    /// The listener's address when it is one IPv4 address: then it is every connection's local
    /// address, and accepting costs no getsockname.
    bound_v4: Option<Ipv4Addr>,
    epoll: Epoll,
    table: Table<Conn>,
    learner: Option<XidLearner>,
    signals: Option<SignalFd>,
}

impl EventLoop<'_> {
    fn run(mut self) -> io::Result<()> {
        let mut events = [EpollEvent::empty(); EVENTS_PER_WAIT];
        let mut now = Instant::now();
        loop {
            let n = match self.epoll.wait(&mut events, self.timeout(now)) {
                Ok(n) => n,
                Err(Errno::EINTR) => 0,
                Err(e) => return Err(e.into()),
            };
            // The clock is read once per wakeup: it stamps this wakeup's accepts and deadlines.
            now = Instant::now();
            let mut stop = None;
            for ev in events.get(..n).unwrap_or_default() {
                match ev.data() {
                    LISTENER => self.accept_batch(now),
                    DHCP_WATCH => {
                        if let Some(l) = &mut self.learner {
                            l.on_ready(ev.events(), now);
                        }
                    }
                    SIGNALS => stop = stop.or_else(|| self.signalled()),
                    data => self.ready(Token::from_u64(data)),
                }
            }
            // After the events: a HELLO that completes in the wakeup of its deadline is answered.
            self.expire(now);
            if let Some(l) = &mut self.learner {
                l.write_if_due(now);
            }
            if let Some(sig) = stop {
                log::info!("serve: stopping on {sig:?}");
                if let Some(l) = &mut self.learner {
                    l.flush(now);
                }
                return Ok(());
            }
        }
    }

    /// The signal read from the signalfd, if one was there.
    fn signalled(&mut self) -> Option<Signal> {
        let info = self.signals.as_ref()?.read_signal().ok()??;
        Signal::try_from(i32::try_from(info.ssi_signo).ok()?).ok()
    }

    /// Until the oldest connection's deadline or the xid file's write, whichever is first;
    /// forever with neither (no wakeups when idle).
    fn timeout(&self, now: Instant) -> PollTimeout {
        let hello = self.table.oldest().map(|(_, since)| since.checked_add(HELLO_DEADLINE).unwrap_or(now));
        let write = self.learner.as_ref().and_then(XidLearner::due);
        let Some(at) = hello.into_iter().chain(write).min() else {
            return PollTimeout::NONE;
        };
        let left = at.saturating_duration_since(now);
        // Rounded up: waking before the deadline would find nothing due and spin until it is.
        PollTimeout::try_from(left.as_micros().div_ceil(1000)).unwrap_or(PollTimeout::MAX)
    }

    fn expire(&mut self, now: Instant) {
        while let Some((token, since)) = self.table.oldest() {
            if since.checked_add(HELLO_DEADLINE).is_some_and(|d| d > now) {
                break;
            }
            if let Some(c) = self.table.remove(token) {
                Stats::bump(&self.server.stats.deadline_expired);
                log::debug!("serve: {}: HELLO deadline passed", c.peer);
            }
        }
    }

    fn accept_batch(&mut self, now: Instant) {
        for _ in 0..ACCEPT_BATCH {
            match self.listener.accept() {
                Ok((stream, peer)) => self.admit(stream, peer, now),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                // That connection is gone (aborted before we took it) or a signal came: the
                // next one is unaffected.
                Err(e) if matches!(e.kind(), io::ErrorKind::ConnectionAborted | io::ErrorKind::Interrupted) => {}
                // Out of descriptors: pressure like any other. The oldest connection goes and the
                // next accept takes its descriptor.
                Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) && self.evict_oldest() => {}
                Err(e) => {
                    log::warn!("serve: accept: {e}");
                    std::thread::sleep(ACCEPT_BACKOFF);
                    return;
                }
            }
        }
    }

    /// Closes the oldest connection to free its descriptor; false when none is open.
    fn evict_oldest(&mut self) -> bool {
        let Some((token, _)) = self.table.oldest() else { return false };
        if let Some(c) = self.table.remove(token) {
            Stats::bump(&self.server.stats.evicted_idle);
            log::debug!("serve: {}: closed as the oldest, out of descriptors", c.peer);
        }
        true
    }

    fn admit(&mut self, stream: TcpStream, peer: SocketAddr, now: Instant) {
        let stats = &self.server.stats;
        Stats::bump(&stats.accepted);
        if let Err(e) = stream.set_nonblocking(true) {
            log::warn!("serve: {peer}: non-blocking: {e}");
            Stats::bump(&stats.io_closed);
            return;
        }
        let local = match self.bound_v4 {
            Some(ip) => Some(ip),
            None => stream.local_addr().ok().and_then(|a| match a.ip().to_canonical() {
                IpAddr::V4(ip) => Some(ip),
                IpAddr::V6(_) => None,
            }),
        };
        let Some(local) = local else {
            log::debug!("serve: {peer}: {:?}", Refusal::NotIpv4);
            Stats::bump(&stats.rejected);
            return;
        };
        let buf = Box::new([0u8; ipsync::MAX_LEN]);
        let conn = Conn { stream, peer, local, phase: Phase::Reading { buf, filled: 0 }, interest: None, hello: None };
        // An IPv4 peer on a dual-stack listener counts as the same address as over IPv4.
        let (token, evicted) = self.table.admit(peer.ip().to_canonical(), now, conn);
        if let Some(e) = evicted {
            self.count_eviction(e);
        }
        // A terminal writes its HELLO as soon as it is connected, so it is usually here already:
        // read it now. It is then answered before any later accept in this batch could evict it,
        // and without ever being registered with epoll.
        self.ready(token);
    }

    fn count_eviction(&self, e: Evicted<Conn>) {
        let stats = &self.server.stats;
        match e.why {
            Eviction::PerPeer => Stats::bump(&stats.per_peer_capped),
            Eviction::Pressure => Stats::bump(&stats.evicted_idle),
        }
        log::debug!("serve: {}: closed to admit a newcomer ({:?})", e.conn.peer, e.why);
    }

    /// Drives one connection as far as it goes now, then watches for what it waits on (input,
    /// or room for the rest of its WELCOME), or closes and counts it.
    fn ready(&mut self, token: Token) {
        // None: closed earlier in this same batch of events (evicted or finished).
        let Some(conn) = self.table.get_mut(token) else { return };
        let want = match conn.on_ready(self.server) {
            Step::Pending => EpollFlags::EPOLLIN,
            Step::Blocked => EpollFlags::EPOLLOUT,
            Step::Done(o) => return self.finish(token, o),
        };
        if conn.interest == Some(want) {
            return;
        }
        let mut ev = EpollEvent::new(want, token.to_u64());
        let watched = match conn.interest {
            None => self.epoll.add(&conn.stream, ev),
            Some(_) => self.epoll.modify(&conn.stream, &mut ev),
        };
        match watched {
            Ok(()) => conn.interest = Some(want),
            Err(e) => {
                log::warn!("serve: {}: epoll: {e}", conn.peer);
                self.finish(token, Outcome::Closed(Some(io::Error::from(e).kind())));
            }
        }
    }

    /// Closes the connection (dropping its socket also takes it out of the epoll set) and counts
    /// how it ended.
    fn finish(&mut self, token: Token, outcome: Outcome) {
        let Some(c) = self.table.remove(token) else { return };
        let stats = &self.server.stats;
        match outcome {
            Outcome::Welcomed => {
                Stats::bump(&stats.welcomed);
                log::debug!(
                    target: SERVE_TARGET,
                    "serve: HELLO from {} (peer {}): WELCOME status {} (success) sent",
                    c.hello.as_deref().unwrap_or("?"),
                    c.peer,
                    ipsync::status::SUCCESS
                );
            }
            Outcome::Refused(why) => {
                Stats::bump(&stats.rejected);
                log::debug!(target: SERVE_TARGET, "serve: refused HELLO from {}: {why:?}", c.peer);
            }
            Outcome::Closed(kind) => {
                Stats::bump(&stats.io_closed);
                log::debug!(target: SERVE_TARGET, "serve: {}: closed before the exchange finished ({kind:?})", c.peer);
            }
        }
    }
}

/// The target of the per-client debug lines (`RUST_LOG=info,ipsyncd::serve=debug`).
pub const SERVE_TARGET: &str = "ipsyncd::serve";

/// "MAC/IP for key K" as an answered HELLO names its terminal (TERMINAL_MAC and TERMINAL_IPV4,
/// each `?` when absent).
fn hello_words(record: &[u8]) -> String {
    let Ok(p) = ipsync::Packet::new_checked(record) else { return "?".into() };
    let Ok(h) = ipsync::Repr::parse(&p) else { return "?".into() };
    let mac = h.terminal_mac.map_or("?".to_string(), |m| m.to_string());
    let ip = h.terminal_ipv4.map_or("?".to_string(), |i| i.to_string());
    format!("{mac}/{ip} for key {}", h.key_id)
}

/// A listener for `serve`: SO_REUSEADDR (a restart does not wait out TIME_WAIT) and a backlog as
/// deep as the connection cap, so a fleet that reconnects at once after a move is queued rather
/// than dropped to a SYN retry a second later.
pub fn bind(listen: SocketAddr) -> io::Result<TcpListener> {
    let family = if listen.is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 };
    let fd = sock::socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
    sock::setsockopt(&fd, sock::sockopt::ReuseAddr, &true)?;
    sock::bind(fd.as_raw_fd(), &SockaddrStorage::from(listen))?;
    let backlog = Backlog::new(i32::try_from(MAX_CONNECTIONS).unwrap_or(i32::MAX)).unwrap_or(Backlog::MAXCONN);
    sock::listen(&fd, backlog)?;
    Ok(TcpListener::from(fd))
}

/// `ipsyncd serve`: WELCOME signed with the config's `[[key]]`s, on `listen` or on all addresses
/// at the config's port; with `interface`, also the xid file (see the module's contract). Runs
/// until SIGTERM or SIGINT. `config_path` names the config in errors.
pub fn run(
    cfg: &Config,
    config_path: &Path,
    listen: Option<&str>,
    interface: Option<&str>,
    service: Service,
) -> Result<(), ToolError> {
    let in_file = |m: String| ToolError::Usage(format!("{}: {m}", config_path.display()));
    let keys = cfg.ipsync_keys();
    if !keys.values().any(|k| matches!(k, IpsyncKey::Hmac(_))) {
        return Err(in_file("[[key]]: serve needs a shared `secret` key, the one terminals sign HELLO with".into()));
    }
    let addr: SocketAddr = match listen {
        Some(l) => l.parse().map_err(|_| ToolError::Usage(format!("--listen: expected ADDR:PORT, got {l:?}")))?,
        None => SocketAddr::from(([0, 0, 0, 0], cfg.server.port)),
    };
    let xid_path = match interface {
        Some(_) => Some(cfg.forcerenew.as_ref().and_then(|f| f.xid_db.clone()).ok_or_else(|| {
            in_file("[forcerenew] xid_db: required by serve --interface (the file the learned xids are kept in)".into())
        })?),
        None => None,
    };
    // Blocked before anything else starts, and read from a signalfd in the loop: the pending
    // xid change is written before the process exits. serve starts no threads or children.
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGTERM);
    mask.add(Signal::SIGINT);
    mask.thread_block().map_err(|e| ToolError::Runtime(format!("sigprocmask: {e}")))?;
    let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .map_err(|e| ToolError::Runtime(format!("signalfd: {e}")))?;
    let learner = match (interface, xid_path) {
        (Some(ifname), Some(path)) => Some(open_learner(ifname, path)?),
        _ => None,
    };
    let listener = bind(addr).map_err(|e| ToolError::Runtime(format!("listen {addr}: {e}")))?;
    Server::with_service(keys, None, service)
        .run_with(listener, Extras { learner, signals: Some(signals) })
        .map_err(|e| ToolError::Runtime(format!("serve {addr}: {e}")))
}

/// Loads the xid file (bad lines warned with their numbers) and opens the watcher on `ifname`.
fn open_learner(ifname: &str, path: PathBuf) -> Result<XidLearner, ToolError> {
    let (db, loaded) =
        XidDb::load(&path, xid_db::MAX_ENTRIES).map_err(|e| ToolError::Runtime(format!("[forcerenew] xid_db: {e}")))?;
    if !loaded.bad_lines.is_empty() {
        log::warn!(
            "{}: not `<mac> 0x<8 hex digits>`, left out (and out of the next write): {}",
            path.display(),
            xid_db::describe_lines(&loaded.bad_lines)
        );
    }
    // The directory is made now, as forcerenew makes its state_dir: a missing one would
    // otherwise surface only as a warning at the first write.
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| ToolError::Runtime(format!("[forcerenew] xid_db: {}: {e}", dir.display())))?;
    }
    if loaded.evicted > 0 {
        log::warn!(
            "{}: {} clients beyond the cap of {}; the earliest lines were left out",
            path.display(),
            loaded.evicted,
            xid_db::MAX_ENTRIES
        );
    }
    let mut nl = Netlink::open().map_err(|e| ToolError::Runtime(format!("netlink: {e}")))?;
    let link = nl.link(ifname).map_err(|e| ToolError::Runtime(e.to_string()))?;
    let learner = XidLearner::open(ifname, link.index, db, path.clone())
        .map_err(|e| ToolError::Runtime(format!("{ifname}: DHCP watch: {e} (needs CAP_NET_RAW)")))?;
    log::info!(
        "serve: watching DHCP clients on {ifname}; their last xids kept in {} ({} known)",
        path.display(),
        loaded.clients
    );
    Ok(learner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(key_id: u32, key: &[u8], sequence: u64) -> Vec<u8> {
        let mut h = ipsync::Repr::new(ipsync::MessageType::Hello, key_id, sequence);
        h.nonce = Some([5; 16]);
        h.terminal_mac = Some(Mac([2, 0, 0, 0, 0, 9]));
        h.terminal_ipv4 = Some(Ipv4Addr::new(10, 0, 0, 9));
        h.to_bytes(key)
    }

    #[test]
    fn record_len_refuses_at_the_first_wrong_byte() {
        let h = hello(1, &[7; 32], 1);
        for cut in 0..8 {
            assert_eq!(record_len(&h[..cut]), Ok(None), "prefix of {cut}");
        }
        assert_eq!(record_len(&h), Ok(Some(h.len())));
        assert_eq!(record_len(b"G"), Err(Refusal::Garbage));
        assert_eq!(record_len(b"IPSX"), Err(Refusal::Garbage));
        assert_eq!(record_len(b"IPSY\x02"), Err(Refusal::Garbage));
        assert_eq!(record_len(b"IPSY\x01\x01"), Err(Refusal::NotHello));
        assert_eq!(record_len(b"IPSY\x01\x03"), Err(Refusal::NotHello));
        assert_eq!(record_len(b"IPSY\x01\x02\xff\xff"), Err(Refusal::Length(0xffff)));
        assert_eq!(record_len(b"IPSY\x01\x02\x04\x01"), Err(Refusal::Length(1025)));
        assert_eq!(record_len(b"IPSY\x01\x02\x00\x33"), Err(Refusal::Length(51)));
        assert_eq!(record_len(b"IPSY\x01\x02\x04\x00"), Ok(Some(1024)));
    }

    #[test]
    fn hello_words_name_the_terminal_and_key() {
        let mut h = ipsync::Repr::new(ipsync::MessageType::Hello, 3, 1);
        h.nonce = Some([1; 16]);
        h.terminal_mac = Some(crate::wire::Mac([2, 0, 0, 0, 0, 0x10]));
        h.terminal_ipv4 = Some(Ipv4Addr::new(10, 77, 0, 10));
        assert_eq!(hello_words(&h.to_bytes(&[7; 32])), "02:00:00:00:00:10/10.77.0.10 for key 3");
        assert_eq!(hello_words(b"IPSY"), "?");
    }

    #[test]
    fn answer_has_no_replay_state() {
        // DESIGN §4.3: a huge sequence for a MAC must not lock that MAC out afterwards.
        let s = Server::new(BTreeMap::from([(1, IpsyncKey::Hmac(vec![7; 32]))]), None);
        let lo = Ipv4Addr::LOCALHOST;
        assert!(s.answer(&hello(1, &[7; 32], u64::MAX), lo).is_ok());
        assert!(s.answer(&hello(1, &[7; 32], 1), lo).is_ok());
        assert!(s.answer(&hello(1, &[7; 32], 1), lo).is_ok());
    }

    #[test]
    fn answer_refuses_unknown_keys_bad_macs_and_non_hellos() {
        let s = Server::new(BTreeMap::from([(1, IpsyncKey::Hmac(vec![7; 32]))]), None);
        let lo = Ipv4Addr::LOCALHOST;
        assert_eq!(s.answer(&hello(2, &[7; 32], 1), lo), Err(Refusal::UnknownKey(2)));
        assert_eq!(s.answer(&hello(1, &[8; 32], 1), lo), Err(Refusal::BadMac));
        let mut a = ipsync::Repr::new(ipsync::MessageType::Announce, 1, 1);
        a.server_ipv4 = Some(lo);
        a.server_mac = Some(Mac([2, 0, 0, 0, 0, 1]));
        assert_eq!(s.answer(&a.to_bytes(&[7; 32]), lo), Err(Refusal::NotHello));
        assert_eq!(s.answer(b"IPSY", lo), Err(Refusal::Garbage));
    }

    #[test]
    fn the_welcome_names_the_dialled_address_and_echoes_the_nonce() {
        let s = Server::new(BTreeMap::from([(1, IpsyncKey::Hmac(vec![7; 32]))]), Some(Mac([2, 0, 0, 0, 0, 1])));
        let at = Ipv4Addr::new(10, 0, 0, 1);
        let w = s.answer(&hello(1, &[7; 32], 1), at).unwrap();
        let p = ipsync::Packet::new_checked(&w[..]).unwrap();
        assert!(p.verify(&VerifyKey::Hmac(vec![7; 32])));
        let r = ipsync::Repr::parse(&p).unwrap();
        assert_eq!(r.msg_type, ipsync::MessageType::Welcome);
        assert_eq!((r.server_ipv4, r.nonce, r.status), (Some(at), Some([5; 16]), Some(ipsync::status::SUCCESS)));
    }

    #[test]
    fn the_welcome_carries_the_service_when_given() {
        let key = BTreeMap::from([(1, IpsyncKey::Hmac(vec![7; 32]))]);
        let at = Ipv4Addr::new(10, 0, 0, 1);
        let parse = |w: &[u8]| {
            let p = ipsync::Packet::new_checked(w).unwrap();
            let r = ipsync::Repr::parse(&p).unwrap();
            (r.service_port, r.server_name.map(str::to_string))
        };
        let plain = Server::new(key.clone(), None).answer(&hello(1, &[7; 32], 1), at).unwrap();
        assert_eq!(parse(&plain), (None, None));
        let service = Service { port: Some(3389), name: Some("rdp-1".into()) };
        let s = Server::with_service(key, None, service);
        let w = s.answer(&hello(1, &[7; 32], 1), at).unwrap();
        assert_eq!(parse(&w), (Some(3389), Some("rdp-1".into())));
    }

    #[test]
    fn with_a_signing_key_every_welcome_is_signed_by_it() {
        // DESIGN §4.3: HELLO under the shared key 1, WELCOME under Ed25519 key 2, so whoever
        // holds key 1 (any terminal) still cannot make a WELCOME.
        let sk = SigningKey::from_bytes(&[9; 32]);
        let keys = BTreeMap::from([
            (1, IpsyncKey::Hmac(vec![7; 32])),
            (2, IpsyncKey::Ed25519 { public: sk.verifying_key(), signing: Some(sk.clone()) }),
        ]);
        let s = Server::new(keys, None);
        let w = s.answer(&hello(1, &[7; 32], 1), Ipv4Addr::LOCALHOST).unwrap();
        let p = ipsync::Packet::new_checked(&w[..]).unwrap();
        assert_eq!(p.key_id(), 2);
        assert!(p.verify(&VerifyKey::Ed25519(sk.verifying_key())));
        assert!(!p.verify(&VerifyKey::Hmac(vec![7; 32])));
        let r = ipsync::Repr::parse_with(&p, crate::wire::sig::Trailer::Ed25519).unwrap();
        assert_eq!(r.nonce, Some([5; 16]));
        // A HELLO under the Ed25519 key id is not one serve can check.
        assert_eq!(s.answer(&hello(2, &[7; 32], 1), Ipv4Addr::LOCALHOST), Err(Refusal::UnknownKey(2)));
    }

    #[test]
    fn the_file_limit_bounds_the_cap() {
        let cap = connection_cap(MAX_CONNECTIONS);
        assert!((1..=MAX_CONNECTIONS).contains(&cap));
    }
}
