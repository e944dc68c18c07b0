//! `ipsyncd keygen`: a fresh `[[key]]` section to paste into the config of a server and its
//! terminals.
//!
//! Contract: 32 bytes from the kernel's generator (through the shell's clock module, the one
//! random source), printed as hex in the form the config parser accepts.

use crate::shell::clock;
use crate::wire::hex::to_hex;

pub const KEY_BYTES: usize = 32;

/// The section for key `id`, without a trailing newline.
pub fn section(id: u32) -> String {
    format!("[[key]]\nid = {id}\nsecret = \"0x{}\"", to_hex(&clock::random_bytes::<KEY_BYTES>()))
}

/// Prints [`section`] on stdout.
pub fn run(id: u32) {
    println!("{}", section(id));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_accepts_a_fresh_section() {
        let text = section(7);
        let c = crate::config::Config::parse(&text).unwrap();
        assert_eq!(c.keys()[&7].len(), KEY_BYTES);
        assert_ne!(text, section(7));
    }
}
