//! ipsync: parse → emit (signed) → parse is the identity, and the signature verifies. A parsed
//! Repr is already in normal form, so emit changes nothing in it.
#![no_main]
use ipsyncd::wire::ipsync::{Packet, Repr};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(p) = Packet::new_checked(data) else { return };
    let _ = p.verify(b"fuzz-key");
    let Ok(r) = Repr::parse(&p) else { return };
    assert_eq!(r.normalised(), r);
    let mut out = [0u8; ipsyncd::wire::ipsync::MAX_LEN];
    let n = r.emit(&mut out, b"fuzz-key").expect("a parsed message emits");
    let p2 = Packet::new_checked(&out[..n]).expect("emitted message checks");
    assert!(p2.verify(b"fuzz-key"));
    assert_eq!(Repr::parse(&p2).expect("emitted message parses"), r);
});
