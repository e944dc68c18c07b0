//! Lease sources (`--leases`): no input panics, and what loads keeps the contract: every lease
//! is live at `now` and no two share a MAC. The same bytes go to the file parser (as text, when
//! they are UTF-8) and to the parser of Kea's `lease4-get-all` reply.
#![no_main]
use ipsyncd::server::leases::{parse_kea_reply, parse_text, Loaded};
use libfuzzer_sys::fuzz_target;

const NOW: u64 = 1_796_149_800;

fn check(l: &Loaded) {
    let mut macs: Vec<_> = l.leases.iter().map(|l| l.mac).collect();
    macs.sort();
    macs.dedup();
    assert_eq!(macs.len(), l.leases.len(), "two leases share a MAC");
    assert!(l.leases.iter().all(|l| l.expires.map_or(true, |e| e > NOW)), "an expired lease was kept");
}

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(l) = parse_text(text, NOW) {
            check(&l);
        }
    }
    if let Ok(l) = parse_kea_reply(data, NOW) {
        check(&l);
    }
});
