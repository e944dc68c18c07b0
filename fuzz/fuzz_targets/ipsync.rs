//! ipsync: parse → emit (signed) → parse is the identity, and the signature verifies.
#![no_main]
use ipsyncd::wire::ipsync::{Packet, Repr};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(p) = Packet::new_checked(data) else { return };
    let _ = p.verify(b"fuzz-key");
    let Ok(r) = Repr::parse(&p) else { return };
    let out = r.to_bytes(b"fuzz-key");
    let p2 = Packet::new_checked(&out[..]).expect("emitted message checks");
    assert!(p2.verify(b"fuzz-key"));
    assert_eq!(Repr::parse(&p2).expect("emitted message parses"), r);
});
