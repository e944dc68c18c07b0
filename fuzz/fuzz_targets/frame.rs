//! Whole frames: the checked descent, the filter twin, and the engine's input decoder. Whatever
//! decodes as UDP is re-wrapped with our emitter and must decode to the same datagram.
#![no_main]
use ipsyncd::engine::input::{decode_frame, DecodeContext};
use ipsyncd::wire::frame::{self, Body, Checksum, UdpFrameRepr};
use ipsyncd::wire::Mac;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = frame::classify(data);
    let ctx = DecodeContext { mac: Mac([2, 0, 0, 0, 0, 0x10]), port: 47474, server_option: 224 };
    let _ = decode_frame(Some(1), data, Checksum::Infer, &ctx);
    if let Ok(f) = frame::decode(data, Checksum::Skip) {
        if let Body::Udp(u) = f.body {
            let repr = UdpFrameRepr { src_mac: f.src, dst_mac: f.dst, src_ip: u.src_ip, dst_ip: u.dst_ip, src_port: u.src_port, dst_port: u.dst_port, ttl: 64 };
            let again = repr.emit(u.payload);
            let f2 = frame::decode(&again, Checksum::Verify).expect("our own frame decodes");
            match f2.body {
                Body::Udp(u2) => assert_eq!((u2.src_ip, u2.dst_ip, u2.src_port, u2.dst_port, u2.payload), (u.src_ip, u.dst_ip, u.src_port, u.dst_port, u.payload)),
                other => panic!("re-emitted UDP decoded as {other:?}"),
            }
        }
    }
});
