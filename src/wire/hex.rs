//! Hex text for keys and nonces in config and state files.
//!
//! Contract: pure functions; a bad digit or an odd length is an error that names it.

pub fn parse_hex(h: &str) -> Result<Vec<u8>, String> {
    if h.len() % 2 != 0 {
        return Err(format!("hex has an odd number of digits ({})", h.len()));
    }
    (0..h.len())
        .step_by(2)
        .map(|i| {
            h.get(i..i + 2)
                .and_then(|d| u8::from_str_radix(d, 16).ok())
                .ok_or_else(|| format!("{:?} is not hex", h.get(i..i + 2).unwrap_or("")))
        })
        .collect()
}

pub fn to_hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
