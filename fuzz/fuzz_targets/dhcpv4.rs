//! DHCPv4: parse → emit → parse is the identity on the parsed form, and parse's structural
//! errors are the options walker's (it is the walker parse reads through).
#![no_main]
use ipsyncd::wire::dhcpv4::{Packet, Repr};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(p) = Packet::new_checked(data) else { return };
    let walked: Result<Vec<_>, _> = p.options().collect();
    let parsed = Repr::parse(&p, 224);
    if let Err(e) = walked {
        assert_eq!(parsed, Err(e), "parse and the options walker disagree");
    }
    let Ok(mut r) = parsed else { return };
    let out = r.to_bytes();
    let p2 = Packet::new_checked(&out[..]).expect("emitted message has a valid header");
    let mut r2 = Repr::parse(&p2, 224).expect("emitted message parses");
    r.auth_offset = None;
    r2.auth_offset = None;
    r.auth_invalid = false;
    assert_eq!(r, r2);
});
