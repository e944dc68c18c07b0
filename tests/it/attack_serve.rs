//! Attacks on `serve` (issue 8, item 3; DESIGN §4.3 and §10), against the library's server on
//! loopback: slow-drip floods from many addresses, from one address, and past the global cap
//! never keep genuine terminals from their WELCOME; one peer address holds at most its cap; a
//! HELLO has one deadline in all, not one per read; there is no replay state; garbage and bad
//! lengths get no answer and cost nobody else theirs.
//!
//! Every test is bounded in time and in threads: one thread drives all dripping sockets
//! (non-blocking, reconnecting whatever the server closes, as a real attacker would), and the
//! genuine terminals share a few threads.

use crate::lab::within;
use ipsyncd::config::IpsyncKey;
use ipsyncd::server::serve::{self, Server, HELLO_DEADLINE, MAX_CONNECTIONS, MAX_PER_PEER};
use ipsyncd::shell::channel::{hello, Terminal};
use ipsyncd::wire::sig::VerifyKey;
use ipsyncd::wire::{ipsync, Mac};
use nix::errno::Errno;
use nix::sys::socket::{self as sock, AddressFamily, SockFlag, SockType, SockaddrIn};
use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const KEY: [u8; 32] = [0x42; 32];
const LO: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// The library's server on 127.0.0.1 at a free port, in its own thread for the rest of the test
/// binary's life (idle, it waits without waking).
fn start() -> (Arc<Server>, u16) {
    let server = Server::new(BTreeMap::from([(1u32, IpsyncKey::Hmac(KEY.to_vec()))]), None);
    let listener = serve::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = listener.local_addr().unwrap().port();
    let s2 = Arc::clone(&server);
    std::thread::Builder::new().name("serve".into()).spawn(move || s2.run(listener)).unwrap();
    (server, port)
}

fn stat(c: &std::sync::atomic::AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

/// A TCP connection to 127.0.0.1:`port` from `src` (any 127.0.0.0/8 address is local).
fn connect_from(src: Ipv4Addr, port: u16, nonblocking: bool) -> io::Result<TcpStream> {
    let flags = if nonblocking { SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC } else { SockFlag::SOCK_CLOEXEC };
    let fd = sock::socket(AddressFamily::Inet, SockType::Stream, flags, None)?;
    sock::bind(fd.as_raw_fd(), &SockaddrIn::from(SocketAddrV4::new(src, 0)))?;
    match sock::connect(fd.as_raw_fd(), &SockaddrIn::from(SocketAddrV4::new(LO, port))) {
        Ok(()) | Err(Errno::EINPROGRESS) => Ok(TcpStream::from(fd)),
        Err(e) => Err(e.into()),
    }
}

/// The first bytes of a record that claims to be a 1024-byte HELLO: a valid prefix that never
/// completes at one byte per 1.5 s.
fn drip_prefix() -> Vec<u8> {
    let mut p = b"IPSY\x01\x02\x04\x00".to_vec();
    p.extend_from_slice(&1u32.to_be_bytes());
    p.extend_from_slice(&u64::MAX.to_be_bytes());
    p.resize(ipsync::MAX_LEN, 0);
    p
}

struct DripReport {
    connects: u64,
    bytes: u64,
    /// Bytes the server sent to a dripper: must stay 0 (no dripper ever completes a HELLO).
    answered: u64,
}

struct Dripper {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<DripReport>,
}

impl Dripper {
    fn stop(self) -> DripReport {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap()
    }
}

/// `n` connections, spread over `sources` in turn, each sending one byte of [`drip_prefix`]
/// every `every`; whatever the server closes is reconnected at once. One thread for all.
fn drip(port: u16, sources: &[Ipv4Addr], n: usize, every: Duration) -> Dripper {
    struct Slot {
        src: Ipv4Addr,
        s: Option<TcpStream>,
        sent: usize,
        next: Instant,
    }
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = Arc::clone(&stop);
    let sources = sources.to_vec();
    let handle = std::thread::spawn(move || {
        let prefix = drip_prefix();
        let mut r = DripReport { connects: 0, bytes: 0, answered: 0 };
        let start = Instant::now();
        let mut slots: Vec<Slot> = (0..n)
            .map(|i| {
                let src = sources[i % sources.len()];
                r.connects += 1;
                // Spread the drips evenly over one period.
                let next = start + every.mul_f64(i as f64 / n as f64);
                Slot { src, s: connect_from(src, port, true).ok(), sent: 0, next }
            })
            .collect();
        let mut buf = [0u8; 64];
        while !stop2.load(Ordering::Relaxed) {
            let now = Instant::now();
            for slot in &mut slots {
                if slot.next > now {
                    continue;
                }
                let mut closed = slot.s.is_none();
                if let Some(s) = &mut slot.s {
                    match s.read(&mut buf) {
                        Ok(0) => closed = true,
                        Ok(k) => r.answered += k as u64,
                        Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::NotConnected) => {}
                        Err(_) => closed = true,
                    }
                }
                if !closed {
                    let s = slot.s.as_mut().unwrap();
                    match s.write(&prefix[slot.sent % prefix.len()..][..1]) {
                        Ok(_) => {
                            slot.sent += 1;
                            r.bytes += 1;
                            slot.next = now + every;
                            continue;
                        }
                        // Still connecting: try again on the next pass.
                        Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::NotConnected) => {
                            slot.next = now + Duration::from_millis(5);
                            continue;
                        }
                        Err(_) => {}
                    }
                }
                // Closed by the server (deadline or eviction): reconnect, as an attacker would.
                r.connects += 1;
                slot.s = connect_from(slot.src, port, true).ok();
                slot.sent = 0;
                slot.next = now + Duration::from_millis(5);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        r
    });
    Dripper { stop, handle }
}

/// 127.0.0.`first` … 127.0.0.`first + count - 1`.
fn sources(first: u8, count: u8) -> Vec<Ipv4Addr> {
    (0..count).map(|i| Ipv4Addr::new(127, 0, 0, first + i)).collect()
}

fn terminal(i: usize) -> Terminal {
    Terminal {
        key_id: 1,
        key: KEY.to_vec(),
        keys: BTreeMap::from([(1, VerifyKey::Hmac(KEY.to_vec()))]),
        mac: Mac([2, 0, 0, 0, (i >> 8) as u8, i as u8]),
        ip: LO,
    }
}

/// `n` genuine HELLOs, built and checked as the terminal does (`shell::channel::hello`: HMAC,
/// nonce echoed, SERVER_IPV4 the dialled address, STATUS 0), from 8 threads, each exchange
/// within `HELLO_DEADLINE` and all of them started before `until`. Returns the failures.
fn genuine_hellos(port: u16, n: usize, until: Instant) -> Vec<String> {
    let threads = 8;
    let handles: Vec<_> = (0..threads)
        .map(|th| {
            std::thread::spawn(move || {
                let mut failures = Vec::new();
                for i in (th..n).step_by(threads) {
                    let left = until.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        failures.push(format!("terminal {i}: not tried before the test's bound"));
                        continue;
                    }
                    let nonce = [i as u8 ^ 0x5a; 16];
                    let seq = 1_800_000_000_000_000 + i as u64;
                    if let Err(e) = hello(&terminal(i), LO, port, left.min(HELLO_DEADLINE), nonce, seq) {
                        failures.push(format!("terminal {i}: {e}"));
                    }
                }
                failures
            })
        })
        .collect();
    handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
}

/// The attack of issue 8: `n` slow-drip connections from `attackers`, held for two deadlines so
/// the server is saturated and churning, then 40 genuine HELLOs, every one answered within 20 s.
fn slow_drip_then_hellos(attackers: &[Ipv4Addr], n: usize) -> (Arc<Server>, DripReport) {
    let (server, port) = start();
    let t0 = Instant::now();
    let dripper = drip(port, attackers, n, Duration::from_millis(1500));
    assert!(
        within(Duration::from_secs(10), || stat(&server.stats.accepted) >= n as u64).is_some(),
        "only {} of {n} dripping connections accepted",
        stat(&server.stats.accepted)
    );
    // Long enough that every first-generation dripper has met its deadline or an eviction.
    std::thread::sleep(HELLO_DEADLINE + Duration::from_millis(500));
    let hellos_at = Instant::now();
    let failures = genuine_hellos(port, 40, hellos_at + Duration::from_secs(20));
    let took = hellos_at.elapsed();
    let report = dripper.stop();
    let st = &server.stats;
    eprintln!(
        "{n} drippers from {} address(es): 40 HELLOs in {took:?} ({} failed); attacker made {} connections, \
         sent {} bytes; server: accepted {} welcomed {} rejected {} deadline_expired {} evicted_idle {} \
         per_peer_capped {} io_closed {}; whole test {:?}",
        attackers.len(),
        failures.len(),
        report.connects,
        report.bytes,
        stat(&st.accepted),
        stat(&st.welcomed),
        stat(&st.rejected),
        stat(&st.deadline_expired),
        stat(&st.evicted_idle),
        stat(&st.per_peer_capped),
        stat(&st.io_closed),
        t0.elapsed(),
    );
    assert!(failures.is_empty(), "{} of 40 genuine HELLOs unanswered:\n{}", failures.len(), failures.join("\n"));
    assert!(took < Duration::from_secs(20), "40 HELLOs took {took:?}");
    assert!(within(Duration::from_secs(1), || stat(&st.welcomed) >= 40).is_some());
    assert_eq!(report.answered, 0, "a dripper got an answer");
    (server, report)
}

#[test]
fn serve_slow_drip_600_connections_then_40_hellos_all_answered() {
    // 30 addresses, 20 connections each: under the per-peer and the global cap, so only the
    // whole-HELLO deadline stands between the drip and the terminals.
    let (server, _) = slow_drip_then_hellos(&sources(2, 30), 600);
    assert!(stat(&server.stats.deadline_expired) >= 600, "the drip was not closed at its deadline");
}

#[test]
fn serve_slow_drip_600_connections_from_one_address_then_40_hellos_all_answered() {
    // The attacker shares the terminals' own address (think NAT): it holds at most 32 slots and
    // each newcomer of its own closes its oldest, while the terminals' newcomers are served.
    let (server, _) = slow_drip_then_hellos(&[LO], 600);
    assert!(stat(&server.stats.per_peer_capped) >= 600 - MAX_PER_PEER as u64);
}

#[test]
fn serve_slow_drip_past_the_global_cap_then_40_hellos_all_answered() {
    // 1100 connections from 40 addresses (28 or fewer each): past the 1024 in all, so the oldest
    // connections are closed for the new ones, and no newcomer is refused.
    let n = MAX_CONNECTIONS + 76;
    let (server, _) = slow_drip_then_hellos(&sources(40, 40), n);
    assert!(stat(&server.stats.evicted_idle) > 0, "the global cap was never reached");
}

/// True once the server has closed `s` (EOF or reset), false while it is open and silent.
fn closed_by_server(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 16];
    match s.read(&mut b) {
        Ok(0) => true,
        Ok(n) => panic!("the server sent {n} bytes to a connection that sent no HELLO"),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
        Err(_) => true,
    }
}

#[test]
fn serve_per_peer_cap_closes_that_peers_oldest_connection() {
    let (server, port) = start();
    let peer = Ipv4Addr::new(127, 0, 0, 77);
    let t0 = Instant::now();
    let mut conns: Vec<TcpStream> = (0..MAX_PER_PEER).map(|_| connect_from(peer, port, false).unwrap()).collect();
    let mut other = connect_from(Ipv4Addr::new(127, 0, 0, 78), port, false).unwrap();
    assert!(within(Duration::from_secs(1), || stat(&server.stats.accepted) == MAX_PER_PEER as u64 + 1).is_some());
    for s in conns.iter().chain([&other]) {
        s.set_nonblocking(true).unwrap();
    }
    // One more from the same address: its oldest goes, the newcomer stays.
    let mut newest = connect_from(peer, port, false).unwrap();
    newest.set_nonblocking(true).unwrap();
    assert!(
        within(Duration::from_secs(1), || closed_by_server(&mut conns[0])).is_some(),
        "the peer's oldest still open"
    );
    assert_eq!(stat(&server.stats.per_peer_capped), 1);
    // Well before the 2 s deadline: everyone else is still connected.
    assert!(t0.elapsed() < HELLO_DEADLINE, "too slow to tell the cap from the deadline: {:?}", t0.elapsed());
    for (i, s) in conns.iter_mut().enumerate().skip(1) {
        assert!(!closed_by_server(s), "connection {i} of the capped peer closed too");
    }
    assert!(!closed_by_server(&mut other), "another address's connection was closed");
    assert!(!closed_by_server(&mut newest), "the newcomer was refused");
    // The newcomer is a full connection: a HELLO on it is answered.
    let mut h = ipsync::Repr::new(ipsync::MessageType::Hello, 1, 7);
    h.nonce = Some([1; 16]);
    h.terminal_mac = Some(Mac([2, 0, 0, 0, 0, 77]));
    h.terminal_ipv4 = Some(peer);
    newest.set_nonblocking(false).unwrap();
    newest.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    newest.write_all(&h.to_bytes(&KEY)).unwrap();
    let w = ipsyncd::shell::channel::read_record(&mut newest).expect("WELCOME on the newcomer");
    let p = ipsync::Packet::new_checked(&w[..]).unwrap();
    assert!(p.verify(&VerifyKey::Hmac(KEY.to_vec())));
    assert_eq!(ipsync::Repr::parse(&p).unwrap().nonce, Some([1; 16]));
}

#[test]
fn serve_whole_hello_deadline_closes_a_drip_of_one_byte_every_half_second() {
    let (server, port) = start();
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let t0 = Instant::now();
    s.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    let prefix = drip_prefix();
    let mut sent = 0;
    let mut reply = [0u8; 16];
    // Each read of the server's is quick (a byte is there every 0.5 s); only a deadline for the
    // whole HELLO ends this. Bounded: 10 s.
    let closed_at = loop {
        assert!(t0.elapsed() < Duration::from_secs(10), "still open after {sent} bytes over {:?}", t0.elapsed());
        if s.write_all(&prefix[sent..sent + 1]).is_err() {
            break t0.elapsed();
        }
        sent += 1;
        match s.read(&mut reply) {
            Ok(0) => break t0.elapsed(),
            Ok(n) => panic!("{n} bytes of answer to an incomplete HELLO"),
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
            Err(_) => break t0.elapsed(),
        }
    };
    eprintln!("closed after {closed_at:?} and {sent} bytes");
    assert!(closed_at >= HELLO_DEADLINE - Duration::from_millis(100), "closed early: {closed_at:?}");
    assert!(closed_at < HELLO_DEADLINE + Duration::from_millis(1500), "closed late: {closed_at:?}");
    assert!(sent <= 6, "{sent} bytes dripped before the close");
    assert_eq!(stat(&server.stats.deadline_expired), 1);
    assert_eq!(stat(&server.stats.welcomed), 0);
}

#[test]
fn serve_hello_sequence_1_after_u64_max_for_the_same_mac_is_still_answered() {
    // DESIGN §4.3: serve keeps no replay state for HELLO, so a HELLO that claims a terminal's MAC
    // with the largest sequence cannot lock that terminal out.
    let (server, port) = start();
    let t = terminal(1);
    let timeout = Duration::from_secs(2);
    hello(&t, LO, port, timeout, [1; 16], u64::MAX).expect("WELCOME for u64::MAX");
    hello(&t, LO, port, timeout, [2; 16], 1).expect("WELCOME for sequence 1 after u64::MAX");
    hello(&t, LO, port, timeout, [3; 16], 1).expect("WELCOME for sequence 1 again");
    // The server counts a WELCOME once written, which the terminal may read first.
    assert!(within(Duration::from_secs(1), || stat(&server.stats.welcomed) == 3).is_some());
}

#[test]
fn serve_garbage_and_bad_lengths_get_no_answer_and_others_are_served() {
    let (server, port) = start();
    let genuine = || {
        let mut h = ipsync::Repr::new(ipsync::MessageType::Hello, 1, 9);
        h.nonce = Some([9; 16]);
        h.terminal_mac = Some(Mac([2, 0, 0, 0, 0, 9]));
        h.terminal_ipv4 = Some(LO);
        h
    };
    let mut bad_mac = genuine().to_bytes(&KEY);
    let last = bad_mac.len() - 1;
    bad_mac[last] ^= 1;
    let mut unknown_key = genuine();
    unknown_key.key_id = 99;
    let mut junk_1024 = b"IPSY\x01\x02\x04\x00".to_vec();
    junk_1024.resize(1024, 0xff);
    let mut oversized = b"IPSY\x01\x02\xff\xff".to_vec();
    oversized.resize(4096, 0);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("http", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
        ("length 0xffff, 4 KiB sent", oversized),
        ("length 1025", b"IPSY\x01\x02\x04\x01".to_vec()),
        ("length 51", b"IPSY\x01\x02\x00\x33".to_vec()),
        ("length 0", b"IPSY\x01\x02\x00\x00".to_vec()),
        ("version 2", b"IPSY\x02\x02\x00\x40".to_vec()),
        ("a WELCOME", b"IPSY\x01\x03\x00\x40".to_vec()),
        ("1024 bytes that do not parse", junk_1024),
        ("bad HMAC", bad_mac),
        ("unknown key id", unknown_key.to_bytes(&KEY)),
    ];
    let t0 = Instant::now();
    let mut open: Vec<(&str, TcpStream)> = cases
        .iter()
        .map(|(name, bytes)| {
            let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
            // The server may close before taking all of it: a failed write is fine.
            let _ = s.write_all(bytes);
            s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            (*name, s)
        })
        .collect();
    // While those are being refused, a genuine terminal is served.
    hello(&terminal(9), LO, port, Duration::from_secs(2), [9; 16], 10).expect("genuine HELLO among the garbage");
    for (name, s) in &mut open {
        let mut b = [0u8; 64];
        match s.read(&mut b) {
            Ok(0) => {}
            Ok(n) => panic!("{name}: {n} bytes of answer"),
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                panic!("{name}: still open after {:?}", t0.elapsed())
            }
            Err(_) => {} // reset: closed with our unread bytes in its buffer
        }
    }
    // Refused at once, not left to the deadline.
    assert!(t0.elapsed() < HELLO_DEADLINE, "refusals took {:?}", t0.elapsed());
    let st = &server.stats;
    assert_eq!(stat(&st.rejected), cases.len() as u64);
    assert!(within(Duration::from_secs(1), || stat(&st.welcomed) == 1).is_some());
    assert_eq!(stat(&st.deadline_expired), 0);
}
