//! ipsync, under both trailers: parse → emit (signed) → parse is the identity, and the signature
//! verifies. A parsed Repr is already in normal form, so emit changes nothing in it. The first
//! input byte picks the trailer, so the Ed25519 path (84-byte minimum, 64-byte signature,
//! `verify_strict` on hostile bytes) is fuzzed as much as the HMAC one.
#![no_main]
use ipsyncd::wire::ipsync::{Packet, Repr};
use ipsyncd::wire::sig::{Signer, SigningKey, Trailer, VerifyKey};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let Some((&pick, data)) = input.split_first() else { return };
    let sk = SigningKey::from_bytes(&[0x5a; 32]);
    let (key, signer) = if pick & 1 == 0 {
        (VerifyKey::Hmac(b"fuzz-key-16bytes".to_vec()), Signer::Hmac(b"fuzz-key-16bytes"))
    } else {
        (VerifyKey::Ed25519(sk.verifying_key()), Signer::Ed25519(&sk))
    };
    let trailer: Trailer = key.trailer();
    let Ok(p) = Packet::new_checked(data) else { return };
    let _ = p.verify(&key);
    let Ok(r) = Repr::parse_with(&p, trailer) else { return };
    assert_eq!(r.normalised(), r);
    let mut out = [0u8; ipsyncd::wire::ipsync::MAX_LEN];
    let n = r.emit_signed(&mut out, signer).expect("a parsed message emits");
    let p2 = Packet::new_checked(&out[..n]).expect("emitted message checks");
    assert!(p2.verify(&key));
    assert_eq!(Repr::parse_with(&p2, trailer).expect("emitted message parses"), r);
});
