//! `ipsyncd keygen`: a fresh key section to paste into the configs of a server and its
//! terminals.
//!
//! Contract: every secret is 32 bytes (16 for an RFC 6704 reconfigure key, its fixed size) from
//! the kernel's generator (through the shell's clock module, the one random source), printed as
//! hex in the form the config parser accepts. An Ed25519 pair is printed as two clearly
//! labelled sections: the server's (both halves) and the terminals' (the public half only), so
//! the signing half is never pasted onto a terminal by accident.

use crate::shell::clock;
use crate::wire::hex::to_hex;
use crate::wire::sig;

pub const KEY_BYTES: usize = 32;

/// Which key to make (`--kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `[[key]]` with an Ed25519 pair (the default: a stolen terminal cannot sign).
    Ed25519,
    /// `[[key]]` with a shared HMAC-SHA256 secret (what terminals sign HELLO with).
    Hmac,
    /// `[[dhcp_key]]`: an RFC 3118 delayed-authentication secret.
    Dhcp,
    /// `[forcerenew] reconfigure_key`: an RFC 6704 reconfigure key.
    Reconfigure,
}

/// The text for key `id`, without a trailing newline.
pub fn section(kind: Kind, id: u32) -> String {
    let secret = || format!("\"0x{}\"", to_hex(&clock::random_bytes::<KEY_BYTES>()));
    match kind {
        Kind::Hmac => format!("[[key]]\nid = {id}\nsecret = {}", secret()),
        Kind::Dhcp => format!(
            "[[dhcp_key]]\nid = {id}\nsecret = {}\n# dhcpcd: authtoken {id} \"\" forever <the same secret>",
            secret()
        ),
        Kind::Reconfigure => {
            let key = clock::random_bytes::<16>();
            let colons: Vec<String> = key.iter().map(|b| format!("{b:02x}")).collect();
            // RFC 6704 option 90 as a DHCP server hands it out: protocol 3, algorithm 1
            // (HMAC-MD5), RDM 0, an 8-byte replay counter of 0, type 1 (the key), the key.
            format!(
                "[forcerenew]\nauth = \"reconfigure-key\"\nreconfigure_key = \"0x{}\"\n# dnsmasq: --dhcp-option-force=90,03:01:00:00:00:00:00:00:00:00:00:01:{}",
                to_hex(&key),
                colons.join(":")
            )
        }
        Kind::Ed25519 => {
            let sk = sig::SigningKey::from_bytes(&clock::random_bytes::<{ sig::ED25519_KEY_LEN }>());
            let pk = to_hex(sk.verifying_key().as_bytes());
            let seed = to_hex(sk.as_bytes());
            format!(
                "# ---- for the SERVER only (announce, serve): keep it secret ----\n\
                 [[key]]\nid = {id}\npublic_key = \"0x{pk}\"\nsigning_key = \"0x{seed}\"\n\n\
                 # ---- for every TERMINAL: the public half only ----\n\
                 [[key]]\nid = {id}\npublic_key = \"0x{pk}\""
            )
        }
    }
}

/// Prints [`section`] on stdout. When stdout is a fresh regular file (`keygen > keys.toml`), it
/// is made 0600 first, before any secret is in it: the shell created it 0644 (umask 022), and a
/// key file every local user can read is a key every local user holds (see [`private_stdout`]). A terminal or a pipe is
/// left alone (its mode says nothing about who reads the secret).
pub fn run(kind: Kind, id: u32) {
    match private_stdout() {
        Ok(Some((old, new))) => eprintln!(
            "ipsyncd keygen: stdout is a file of mode {old:04o} that others could read; made it {new:04o} \
             (it holds secrets; `umask 077` first avoids the window)"
        ),
        Ok(None) => {}
        Err(e) => eprintln!("ipsyncd keygen: stdout is a file whose mode could not be made 0600: {e}"),
    }
    println!("{}", section(kind, id));
}

/// When stdout is a regular file others may read: a fresh, empty one (`keygen > keys.toml`) is
/// made 0600; one with content already (`keygen >> ipsyncd.toml`, which the daemon's group may
/// need to read) only loses its bits for others, so the daemon is never locked out of its own
/// config. Returns the mode it had when it changed it.
fn private_stdout() -> nix::Result<Option<(u32, u32)>> {
    use nix::sys::stat::{fchmod, fstat, Mode, SFlag};
    let st = fstat(1)?;
    let kind = SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits());
    let perm = st.st_mode & 0o7777;
    let want = if st.st_size == 0 { perm & 0o700 } else { perm & !0o007 };
    if kind != SFlag::S_IFREG || want == perm {
        return Ok(None);
    }
    fchmod(1, Mode::from_bits_truncate(want))?;
    Ok(Some((perm, want)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, IpsyncKey};

    #[test]
    fn the_config_accepts_a_fresh_section_of_every_kind() {
        let text = section(Kind::Hmac, 7);
        let c = Config::parse(&text).unwrap();
        assert!(matches!(&c.ipsync_keys()[&7], IpsyncKey::Hmac(k) if k.len() == KEY_BYTES));
        assert_ne!(text, section(Kind::Hmac, 7));
        let c = Config::parse(&section(Kind::Dhcp, 3)).unwrap();
        assert_eq!(c.dhcp_keys()[&3].len(), KEY_BYTES);
        let c = Config::parse(&section(Kind::Reconfigure, 1)).unwrap();
        assert!(c.forcerenew.unwrap().reconfigure_key.is_some());
        // The dnsmasq line hands out the same 16 bytes, colon-separated, after the option 90 head.
        let text = section(Kind::Reconfigure, 1);
        let hex = text.split("reconfigure_key = \"0x").nth(1).unwrap().split('"').next().unwrap().to_string();
        let line = text.lines().last().unwrap();
        assert!(line.starts_with("# dnsmasq: --dhcp-option-force=90,03:01:00:00:00:00:00:00:00:00:00:01:"), "{line}");
        assert_eq!(line.rsplit(",").next().unwrap().split(':').skip(12).collect::<String>(), hex);
    }

    #[test]
    fn an_ed25519_pair_splits_into_a_server_and_a_terminal_section() {
        let text = section(Kind::Ed25519, 2);
        let at = text.find("# ---- for every TERMINAL").unwrap();
        let (server, terminal) = text.split_at(at);
        let s = Config::parse(server).unwrap();
        let IpsyncKey::Ed25519 { public, signing: Some(sk) } = &s.ipsync_keys()[&2] else { panic!("{server}") };
        assert_eq!(sk.verifying_key(), *public);
        assert!(!terminal.contains("signing_key"), "{terminal}");
        let t = Config::parse(terminal).unwrap();
        assert!(matches!(&t.ipsync_keys()[&2], IpsyncKey::Ed25519 { public: p, signing: None } if p == public));
    }
}
