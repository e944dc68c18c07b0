//! Decode throughput on the fixture frames: our full descent (Ethernet → IPv4 → UDP → DHCP with
//! the option scan, option 224 and the option-90 lookup) against dhcproto decoding only the DHCP
//! payloads of the same frames, with its owned and its borrowed API. `make bench` prints the
//! ratios (benches/run.sh).

use criterion::{black_box, criterion_group, Criterion};
use dhcproto::{Decodable, Decoder};
use ipsyncd::shell::pcap::Reader;
use ipsyncd::wire::dhcpv4;
use ipsyncd::wire::frame::{self, Body, Checksum};

fn dhcp_frames() -> Vec<Vec<u8>> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/pcap-fixtures");
    let mut paths: Vec<_> = std::fs::read_dir(dir).unwrap().filter_map(|e| e.ok()).map(|e| e.path()).collect();
    paths.sort();
    let mut out = Vec::new();
    for p in paths {
        let ext = p.extension().and_then(|x| x.to_str()).unwrap_or("");
        if ext != "pcap" && ext != "pcapng" {
            continue;
        }
        let mut r = Reader::new(std::fs::read(&p).unwrap()).unwrap();
        while let Ok(Some(rec)) = r.next_record() {
            // Only frames that are valid DHCP all the way down, so every decoder does full work.
            let ok = match frame::decode(rec.data, Checksum::Infer) {
                Ok(f) => match f.body {
                    Body::Udp(u) => {
                        dhcpv4::Packet::new_checked(u.payload).is_ok_and(|p| dhcpv4::Repr::parse(&p, 224).is_ok())
                    }
                    _ => false,
                },
                Err(_) => false,
            };
            if ok {
                out.push(rec.data.to_vec());
            }
        }
    }
    out
}

fn payload(f: &[u8]) -> &[u8] {
    match frame::decode(f, Checksum::Infer).map(|f| f.body) {
        Ok(Body::Udp(u)) => u.payload,
        _ => &[],
    }
}

fn descend(frames: &[Vec<u8>], csum: Checksum) -> u32 {
    let mut acc = 0u32;
    for f in frames {
        if let Ok(fr) = frame::decode(black_box(f), csum) {
            if let Body::Udp(u) = fr.body {
                if let Ok(p) = dhcpv4::Packet::new_checked(u.payload) {
                    if let Ok(r) = dhcpv4::Repr::parse(&p, 224) {
                        acc ^= r.xid
                            ^ r.cloud_server.map_or(0, |c| u32::from(c.addr))
                            ^ r.auth.map_or(0, |a| a.replay as u32);
                    }
                }
            }
        }
    }
    acc
}

fn owned(payloads: &[&[u8]]) -> u32 {
    let mut acc = 0u32;
    for p in payloads {
        if let Ok(m) = dhcproto::v4::Message::decode(&mut Decoder::new(black_box(p))) {
            acc ^= m.xid();
        }
    }
    acc
}

fn borrowed(payloads: &[&[u8]]) -> u32 {
    let mut acc = 0u32;
    for p in payloads {
        if let Ok(m) = dhcproto::v4::borrowed::Message::new(black_box(p)) {
            acc ^= m.xid();
            // The same work our parse does: walk every option, pick 53, 224 and 90.
            for o in m.opts() {
                match u8::from(o.code()) {
                    53 | 224 | 90 => acc ^= o.data().first().copied().map_or(0, u32::from),
                    _ => {}
                }
            }
        }
    }
    acc
}

fn bench(c: &mut Criterion) {
    let frames = dhcp_frames();
    let payloads: Vec<&[u8]> = frames.iter().map(|f| payload(f)).collect();
    let n = frames.len();
    let _ = std::fs::create_dir_all(concat!(env!("CARGO_MANIFEST_DIR"), "/target/criterion"));
    let _ = std::fs::write(concat!(env!("CARGO_MANIFEST_DIR"), "/target/criterion/decode-frames.txt"), n.to_string());
    let mut g = c.benchmark_group("decode");
    // Replay and kernels without checksum offload: the UDP checksum is verified in software.
    g.bench_function("ours_full_descent", |b| b.iter(|| descend(&frames, Checksum::Infer)));
    // Live with PACKET_AUXDATA saying the kernel validated it (TP_STATUS_CSUM_VALID) or it is
    // not ready (veth): the same descent without the software checksum.
    g.bench_function("ours_full_descent_csum_offloaded", |b| b.iter(|| descend(&frames, Checksum::Skip)));
    g.bench_function("dhcproto_owned", |b| b.iter(|| owned(&payloads)));
    g.bench_function("dhcproto_borrowed", |b| b.iter(|| borrowed(&payloads)));
    g.finish();
    eprintln!("decode: {n} DHCP frames per iteration");
}

/// Ratios on a noisy VM: criterion measures each function in its own time window, so a change in
/// steal time between windows skews their ratio. Here every round times all four decoders back
/// to back, and the median of the per-round ratios is reported.
fn interleaved() {
    let frames = dhcp_frames();
    let payloads: Vec<&[u8]> = frames.iter().map(|f| payload(f)).collect();
    let time = |f: &mut dyn FnMut() -> u32| {
        let t = std::time::Instant::now();
        for _ in 0..20 {
            black_box(f());
        }
        t.elapsed().as_nanos() as f64 / (20.0 * frames.len() as f64)
    };
    let mut rows: Vec<[f64; 4]> = Vec::new();
    for _ in 0..301 {
        let a = time(&mut || descend(&frames, Checksum::Infer));
        let b = time(&mut || descend(&frames, Checksum::Skip));
        let c = time(&mut || borrowed(&payloads));
        let d = time(&mut || owned(&payloads));
        rows.push([a, b, c, d]);
    }
    let med = |f: &dyn Fn(&[f64; 4]) -> f64| {
        let mut v: Vec<f64> = rows.iter().map(f).collect();
        v.sort_by(|x, y| x.total_cmp(y));
        v[v.len() / 2]
    };
    let out = format!(
        "ours_ns {:.1}\nours_offloaded_ns {:.1}\nborrowed_ns {:.1}\nowned_ns {:.1}\nours_over_borrowed {:.3}\noffloaded_over_borrowed {:.3}\nowned_over_ours {:.2}\nowned_over_offloaded {:.2}\n",
        med(&|r| r[0]),
        med(&|r| r[1]),
        med(&|r| r[2]),
        med(&|r| r[3]),
        med(&|r| r[0] / r[2]),
        med(&|r| r[1] / r[2]),
        med(&|r| r[3] / r[0]),
        med(&|r| r[3] / r[1]),
    );
    let _ = std::fs::write(concat!(env!("CARGO_MANIFEST_DIR"), "/target/criterion/decode-interleaved.txt"), out);
}

criterion_group!(benches, bench);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    interleaved();
}
