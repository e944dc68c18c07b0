//! `ipsyncd serve`: answers each terminal's HELLO with a signed WELCOME ("connection success").
//!
//! Contract: a hostile or broken peer costs one bounded thread for at most the I/O timeout and
//! never stops the server. A HELLO is answered only when its key id is known, its HMAC verifies
//! and its sequence is newer than the last one from that terminal and key (replays get no
//! answer). Memory is bounded: at most [`MAX_CONNECTIONS`] at once, and the replay table forgets
//! the stalest terminal beyond [`MAX_TERMINALS`].

use super::error::ToolError;
use crate::config::{Config, IpsyncKey};
use crate::shell::channel::read_record;
use crate::shell::clock;
use crate::wire::sig::{Signer, SigningKey, VerifyKey};
use crate::wire::{ipsync, Mac};
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub const MAX_CONNECTIONS: usize = 512;
pub const MAX_TERMINALS: usize = 65_536;
const IO_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Default)]
pub struct Stats {
    pub welcomed: AtomicU64,
    pub rejected: AtomicU64,
    pub refused_busy: AtomicU64,
}

pub struct Server {
    /// The shared `[[key]]`s that terminals sign HELLO with.
    keys: BTreeMap<u32, VerifyKey>,
    /// Signs every WELCOME when the config has one (DESIGN §4.3); else the HELLO's own key does.
    ed25519: Option<(u32, SigningKey)>,
    server_mac: Option<Mac>,
    /// (terminal MAC, key id) → last HELLO sequence accepted.
    seen: Mutex<HashMap<(Mac, u32), u64>>,
    last_sent: Mutex<Option<u64>>,
    active: AtomicUsize,
    pub stats: Stats,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    Garbage,
    NotHello,
    UnknownKey,
    BadMac,
    Replayed,
}

impl Server {
    pub fn new(keys: BTreeMap<u32, IpsyncKey>, server_mac: Option<Mac>) -> Arc<Server> {
        let ed25519 = keys.iter().find_map(|(id, k)| match k {
            IpsyncKey::Ed25519 { signing: Some(s), .. } => Some((*id, s.clone())),
            _ => None,
        });
        let keys = keys.into_iter().filter(|(_, k)| matches!(k, IpsyncKey::Hmac(_))).map(|(id, k)| (id, k.verify_key())).collect();
        Arc::new(Server {
            keys,
            ed25519,
            server_mac,
            seen: Mutex::new(HashMap::new()),
            last_sent: Mutex::new(None),
            active: AtomicUsize::new(0),
            stats: Stats::default(),
        })
    }

    /// Checks a HELLO and builds the signed WELCOME for it. `local` is the address the terminal
    /// dialled, which the WELCOME must name.
    fn answer(&self, hello: &[u8], local: Ipv4Addr) -> Result<Vec<u8>, Refusal> {
        let p = ipsync::Packet::new_checked(hello).map_err(|_| Refusal::Garbage)?;
        let h = ipsync::Repr::parse(&p).map_err(|_| Refusal::Garbage)?;
        if h.msg_type != ipsync::MessageType::Hello {
            return Err(Refusal::NotHello);
        }
        let key = self.keys.get(&h.key_id).ok_or(Refusal::UnknownKey)?;
        if !p.verify(key) {
            return Err(Refusal::BadMac);
        }
        let terminal = h.terminal_mac.unwrap_or(Mac::ZERO);
        {
            let mut seen = self.seen.lock();
            if seen.get(&(terminal, h.key_id)).is_some_and(|&last| h.sequence <= last) {
                return Err(Refusal::Replayed);
            }
            if seen.len() >= MAX_TERMINALS && !seen.contains_key(&(terminal, h.key_id)) {
                if let Some(k) = seen.iter().min_by_key(|(_, s)| **s).map(|(k, _)| *k) {
                    seen.remove(&k);
                }
            }
            seen.insert((terminal, h.key_id), h.sequence);
        }
        let sequence = {
            let mut last = self.last_sent.lock();
            let s = super::next_sequence(*last, clock::unix_us());
            *last = Some(s);
            s
        };
        let (key_id, signer) = match (&self.ed25519, key) {
            (Some((id, sk)), _) => (*id, Signer::Ed25519(sk)),
            (None, VerifyKey::Hmac(k)) => (h.key_id, Signer::Hmac(k)),
            (None, VerifyKey::Ed25519(_)) => return Err(Refusal::UnknownKey),
        };
        let mut w = ipsync::Repr::new(ipsync::MessageType::Welcome, key_id, sequence);
        w.server_ipv4 = Some(local);
        w.server_mac = self.server_mac;
        w.nonce = h.nonce;
        w.status = Some(ipsync::status::SUCCESS);
        Ok(w.to_bytes_signed(signer))
    }

    fn handle(&self, mut s: TcpStream) {
        let _ = s.set_read_timeout(Some(IO_TIMEOUT));
        let _ = s.set_write_timeout(Some(IO_TIMEOUT));
        let _ = s.set_nodelay(true);
        let local = match s.local_addr().map(|a| a.ip()) {
            Ok(IpAddr::V4(ip)) => ip,
            _ => return,
        };
        let peer = s.peer_addr().ok();
        let reply = read_record(&mut s).map_err(|_| Refusal::Garbage).and_then(|hello| self.answer(&hello, local));
        match reply {
            Ok(w) => {
                if s.write_all(&w).is_ok() {
                    self.stats.welcomed.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(why) => {
                self.stats.rejected.fetch_add(1, Ordering::Relaxed);
                log::debug!("refused HELLO from {peer:?}: {why:?}");
            }
        }
    }

    /// Accepts until the listener fails. Each connection gets its own short-lived thread.
    pub fn run(self: &Arc<Server>, listener: TcpListener) -> std::io::Result<()> {
        for conn in listener.incoming() {
            let s = match conn {
                Ok(s) => s,
                // Transient accept errors (EMFILE, ECONNABORTED) must not stop the service.
                Err(e) => {
                    log::warn!("accept: {e}");
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
            };
            if self.active.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
                self.active.fetch_sub(1, Ordering::AcqRel);
                self.stats.refused_busy.fetch_add(1, Ordering::Relaxed);
                continue; // dropping `s` closes it
            }
            let me = Arc::clone(self);
            let spawned = std::thread::Builder::new().name("serve-conn".into()).spawn(move || {
                me.handle(s);
                me.active.fetch_sub(1, Ordering::AcqRel);
            });
            if spawned.is_err() {
                self.active.fetch_sub(1, Ordering::AcqRel);
            }
        }
        Ok(())
    }
}

pub fn bind(listen: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(listen)
}

/// `ipsyncd serve`: WELCOME signed with the config's `[[key]]`s, on `listen` or on all addresses
/// at the config's port. Runs until killed. `config_path` names the config in errors.
pub fn run(cfg: &Config, config_path: &Path, listen: Option<&str>) -> Result<(), ToolError> {
    let keys = cfg.ipsync_keys();
    if !keys.values().any(|k| matches!(k, IpsyncKey::Hmac(_))) {
        return Err(ToolError::Usage(format!(
            "{}: [[key]]: serve needs a shared `secret` key, the one terminals sign HELLO with",
            config_path.display()
        )));
    }
    let addr: SocketAddr = match listen {
        Some(l) => l.parse().map_err(|_| ToolError::Usage(format!("--listen: expected ADDR:PORT, got {l:?}")))?,
        None => SocketAddr::from(([0, 0, 0, 0], cfg.server.port)),
    };
    let listener = bind(addr).map_err(|e| ToolError::Runtime(format!("listen {addr}: {e}")))?;
    log::info!("serving HELLO on {addr}");
    Server::new(keys, None).run(listener).map_err(|e| ToolError::Runtime(format!("serve {addr}: {e}")))
}
