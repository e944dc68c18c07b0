//! ARP: parse → emit → parse is the identity, and emit reproduces the 28 header bytes.
#![no_main]
use ipsyncd::wire::arp::{Packet, Repr};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(p) = Packet::new_checked(data) else { return };
    let r = Repr::parse(&p).expect("checked packet parses");
    let out = r.to_bytes();
    assert_eq!(&out[..], &data[..28]);
    assert_eq!(Repr::parse(&Packet::new_checked(&out[..]).expect("emitted")).expect("parses"), r);
});
