//! Kernel-facing code in a throwaway network namespace (root only): rtnetlink pins, addresses,
//! the event monitor. The namespace is removed when the guard drops, even on a failed assert.

use ipsyncd::engine::Cidr;
use ipsyncd::shell::netlink::{next_events, Event, Netlink};
use ipsyncd::wire::Mac;
use netlink_packet_route::neighbour::NeighbourState;
use std::net::Ipv4Addr;
use std::process::Command;

pub struct Ns(pub String);

impl Ns {
    /// A namespace with a veth pair `a0`/`b0`, both up. The tests that call this are
    /// `#[ignore = "needs root"]`; run without root they fail here rather than pass having done
    /// nothing.
    pub fn new(tag: &str) -> Ns {
        assert!(
            unsafe { libc::geteuid() } == 0,
            "network namespace tests need root (run them as root with --include-ignored)"
        );
        let name = format!("ipsyt{}{}", tag, std::process::id());
        let ns = Ns(name.clone());
        let ip = |args: &[&str]| {
            let ok = Command::new("ip").args(args).status().map(|s| s.success()).unwrap_or(false);
            assert!(ok, "ip {args:?}");
        };
        ip(&["netns", "add", &name]);
        ip(&["-n", &name, "link", "add", "a0", "type", "veth", "peer", "name", "b0"]);
        ip(&["-n", &name, "link", "set", "a0", "address", "02:00:00:00:00:10", "up"]);
        ip(&["-n", &name, "link", "set", "b0", "up"]);
        ns
    }

    /// Runs `f` on a thread that has joined the namespace (setns affects only that thread).
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        crate::lab::in_netns(&self.0, f)
    }

    pub fn ip(&self, args: &[&str]) -> bool {
        Command::new("ip").arg("-n").arg(&self.0).args(args).status().map(|s| s.success()).unwrap_or(false)
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

#[test]
#[ignore = "needs root"]
fn netlink_pins_and_addresses_in_a_namespace() {
    let ns = Ns::new("nl");
    let b = Ipv4Addr::new(10, 77, 0, 20);
    let mac = Mac([2, 0, 0, 0, 0, 2]);
    let (link, after_pin, after_unpin, addrs, after_del) = ns.run(move || {
        let mut nl = Netlink::open().unwrap();
        let link = nl.link("a0").unwrap();
        nl.add_address(link.index, "10.77.0.10/24".parse::<Cidr>().unwrap()).unwrap();
        nl.add_address(link.index, "10.77.0.10/24".parse::<Cidr>().unwrap()).unwrap(); // idempotent
        nl.pin(link.index, b, mac).unwrap();
        nl.pin(link.index, b, mac).unwrap(); // replace is idempotent
        let after_pin = nl.neighbour(link.index, b).unwrap();
        nl.unpin(link.index, b).unwrap();
        nl.unpin(link.index, b).unwrap(); // already gone is fine
        let after_unpin = nl.neighbour(link.index, b).unwrap();
        let gw = Ipv4Addr::new(10, 77, 0, 1);
        nl.set_default_route(link.index, gw).unwrap();
        nl.set_default_route(link.index, gw).unwrap(); // replace is idempotent
        assert_eq!(nl.default_gateway().unwrap(), Some(gw));
        nl.del_default_route(link.index, gw).unwrap();
        nl.del_default_route(link.index, gw).unwrap();
        assert_eq!(nl.default_gateway().unwrap(), None);
        let addrs = nl.addresses(link.index).unwrap();
        nl.del_address(link.index, "10.77.0.10/24".parse::<Cidr>().unwrap()).unwrap();
        let after_del = nl.addresses(link.index).unwrap();
        (link, after_pin, after_unpin, addrs, after_del)
    });
    assert_eq!(link.mac, Some(Mac([2, 0, 0, 0, 0, 0x10])));
    assert!(link.up);
    assert_eq!(after_pin, Some((Some(mac), NeighbourState::Permanent)));
    assert_eq!(after_unpin, None);
    assert_eq!(addrs, vec!["10.77.0.10/24".parse::<Cidr>().unwrap()]);
    assert!(after_del.is_empty());
    let err = ns.run(|| Netlink::open().unwrap().link("nope0").unwrap_err());
    assert_eq!(err.errno, libc::ENODEV);
    assert!(err.to_string().contains("nope0"), "{err}");
}

#[test]
#[ignore = "needs root"]
fn monitor_sees_a_deleted_pin_and_link_flaps() {
    let ns = Ns::new("mon");
    let b = Ipv4Addr::new(10, 77, 0, 20);
    let name = ns.0.clone();
    let events = ns.run(move || {
        let mut nl = Netlink::open().unwrap();
        let link = nl.link("a0").unwrap();
        nl.add_address(link.index, "10.77.0.10/24".parse::<Cidr>().unwrap()).unwrap();
        nl.pin(link.index, b, Mac([2, 0, 0, 0, 0, 2])).unwrap();
        let mon = Netlink::monitor().unwrap();
        let ip = |args: &[&str]| Command::new("ip").arg("-n").arg(&name).args(args).status().unwrap().success();
        assert!(ip(&["neigh", "del", "10.77.0.20", "dev", "a0"]));
        let mut buf = Vec::new();
        let mut seen = Vec::new();
        // Bounded: a few reads are plenty for two changes.
        for _ in 0..10 {
            seen.extend(next_events(&mon, link.index, &mut buf).unwrap());
            if seen.contains(&Event::NeighbourGone(b)) {
                break;
            }
        }
        assert!(ip(&["link", "set", "a0", "down"]));
        assert!(ip(&["link", "set", "a0", "up"]));
        for _ in 0..10 {
            seen.extend(next_events(&mon, link.index, &mut buf).unwrap());
            if seen.contains(&Event::LinkUp) {
                break;
            }
        }
        seen
    });
    assert!(events.contains(&Event::NeighbourGone(b)), "{events:?}");
    assert!(events.contains(&Event::LinkDown) && events.contains(&Event::LinkUp), "{events:?}");
}

#[test]
#[ignore = "needs root"]
fn live_capture_passes_only_what_the_filter_allows() {
    use ipsyncd::shell::capture::{LiveSource, Shutdown, Transmitter};
    use ipsyncd::shell::source::FrameSource;
    use ipsyncd::wire::frame::{classify, Class, UdpFrameRepr};
    let ns = Ns::new("cap");
    assert!(ns.ip(&["link", "set", "a0", "mtu", "9000"]) && ns.ip(&["link", "set", "b0", "mtu", "9000"]));
    let (classes, truncated, outgoing) = ns.run(|| {
        let mut nl = Netlink::open().unwrap();
        let a0 = nl.link("a0").unwrap();
        let b0 = nl.link("b0").unwrap();
        let stop = Shutdown::new().unwrap();
        let mut src = LiveSource::open(a0.index, 47474, false, stop.clone()).unwrap();
        let stats = src.stats.clone();
        let peer = Transmitter::open(b0.index).unwrap();
        let us = Transmitter::open(a0.index).unwrap();
        let udp = |port: u16, len: usize| {
            UdpFrameRepr {
                src_mac: b0.mac.unwrap(),
                dst_mac: Mac::BROADCAST,
                src_ip: Ipv4Addr::new(10, 77, 0, 1),
                dst_ip: Ipv4Addr::BROADCAST,
                src_port: port,
                dst_port: port,
                ttl: 64,
            }
            .emit(&vec![0u8; len])
        };
        peer.send(&udp(47474, 60)).unwrap(); // passes
        peer.send(&udp(53, 60)).unwrap(); // filtered in the kernel
        peer.send(&udp(68, 300)).unwrap(); // passes
        peer.send(&udp(47474, 3000)).unwrap(); // passes the filter, too long: counted
        let arp = ipsyncd::wire::arp::Repr::announcement(b0.mac.unwrap(), Ipv4Addr::new(10, 77, 0, 1));
        peer.send(&ipsyncd::wire::frame::emit_arp_frame(b0.mac.unwrap(), Mac::BROADCAST, &arp.to_bytes())).unwrap();
        us.send(&udp(47474, 60)).unwrap(); // our own outgoing frame: never delivered
        std::thread::sleep(std::time::Duration::from_millis(100));
        stop.trigger();
        let mut classes = Vec::new();
        while let Some(f) = src.next_frame().unwrap() {
            classes.push(classify(f.bytes));
        }
        use std::sync::atomic::Ordering::Relaxed;
        (classes, stats.truncated.load(Relaxed), stats.outgoing.load(Relaxed))
    });
    assert_eq!(
        classes,
        vec![Some(Class::Udp { dst_port: 47474 }), Some(Class::Udp { dst_port: 68 }), Some(Class::Arp)]
    );
    assert_eq!(truncated, 1);
    assert_eq!(outgoing, 0, "the filter drops outgoing frames before user space");
}

/// Reads `want` frames from `src` (or until `shutdown` fires): (bytes, checksum, direction).
fn read_frames(
    src: &mut dyn ipsyncd::shell::source::FrameSource,
    want: usize,
) -> Vec<(Vec<u8>, ipsyncd::wire::frame::Checksum, ipsyncd::engine::input::Direction)> {
    let mut out = Vec::new();
    while out.len() < want {
        match src.next_frame() {
            Ok(Some(f)) => out.push((f.bytes.to_vec(), f.csum, f.dir)),
            _ => break,
        }
        // What is at hand without waiting: the rest of a ring block.
        while out.len() < want {
            match src.next_ready() {
                Ok(Some(f)) => out.push((f.bytes.to_vec(), f.csum, f.dir)),
                _ => break,
            }
        }
    }
    out
}

#[test]
#[ignore = "needs root"]
fn r8_capture_ring_and_recv_paths_yield_the_same_frames_and_a_ring_that_cannot_be_set_up_falls_back() {
    use ipsyncd::shell::capture::{LiveSource, Shutdown, Transmitter};
    use ipsyncd::shell::ring::RingConfig;
    use ipsyncd::wire::frame::UdpFrameRepr;
    let ns = Ns::new("ring");
    let (got_ring, got_recv, used, stats) = ns.run(|| {
        let mut nl = Netlink::open().unwrap();
        let (a, b) = (nl.link("a0").unwrap().index, nl.link("b0").unwrap().index);
        let shutdown = Shutdown::new().unwrap();
        let mut ring = LiveSource::open_with(a, 47474, false, shutdown.clone(), Some(RingConfig::DEFAULT)).unwrap();
        let mut recv = LiveSource::open_with(a, 47474, false, shutdown.clone(), None).unwrap();
        // Sizes the kernel refuses (not a multiple of the page): the recv path, not an error.
        let bad = RingConfig { block_size: 5000, ..RingConfig::DEFAULT };
        let fallback = LiveSource::open_with(a, 47474, false, shutdown.clone(), Some(bad)).unwrap();
        let used = (ring.uses_ring(), recv.uses_ring(), fallback.uses_ring());
        let tx = Transmitter::open(b).unwrap();
        let udp = |port: u16, i: u32, len: usize| {
            UdpFrameRepr {
                src_mac: Mac([2, 0, 0, 0, 0, 0x66]),
                dst_mac: Mac::BROADCAST,
                src_ip: Ipv4Addr::new(10, 77, 0, 66),
                dst_ip: Ipv4Addr::BROADCAST,
                src_port: 9,
                dst_port: port,
                ttl: 64,
            }
            .emit(&vec![(i % 251) as u8; len])
        };
        // 900 frames of varied sizes: 600 that the filter passes (dozens of ring blocks), 300 it drops.
        let mut sent = Vec::new();
        for i in 0..900u32 {
            let f = match i % 3 {
                0 => udp(47474, i, 40 + (i as usize * 7) % 1400),
                1 => udp(68, i, 300),
                _ => udp(9999, i, 64),
            };
            tx.send(&f).unwrap();
            if i % 3 != 2 {
                sent.push(f);
            }
        }
        let stop = shutdown.clone();
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_secs(10));
            stop.trigger();
        });
        let got_ring = read_frames(&mut ring, sent.len());
        let got_recv = read_frames(&mut recv, sent.len());
        let stats = (
            ring.stats.ring_drops.load(std::sync::atomic::Ordering::Relaxed),
            ring.stats.ring_bad_blocks.load(std::sync::atomic::Ordering::Relaxed),
        );
        ((got_ring, sent.clone()), got_recv, used, stats)
    });
    let (got_ring, sent) = got_ring;
    assert_eq!(used, (true, false, false), "ring, recv, and the fallback");
    assert_eq!(stats, (0, 0), "no drops, no bad blocks");
    assert_eq!(got_ring.len(), sent.len());
    assert_eq!(got_ring, got_recv, "both paths yield the same frames, checksum state and direction");
    assert!(got_ring.iter().zip(&sent).all(|(g, s)| g.0 == *s && g.2 == ipsyncd::engine::input::Direction::Inbound));
}
