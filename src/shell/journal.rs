//! journald's native protocol (systemd.journal-fields(7), "Native Journal Protocol"): one
//! datagram per entry on a unix socket, each field `NAME=value\n`, or `NAME\n`, the value's
//! length as a little-endian u64, the value and `\n` when the value holds a newline; an entry
//! too large for a datagram goes as a sealed memfd passed with SCM_RIGHTS.
//!
//! Contract: the socket path is a parameter ([`JOURNAL_SOCKET`] for the daemon), so a test can
//! bind its own socket and read what the daemon would send. Field names are checked here
//! (uppercase ASCII, digits and `_`, not leading `_`, which journald reserves for trusted
//! fields); a bad one is dropped, never sent, since journald would drop the whole entry.
//!
//! Why not the crate `systemd-journal-logger`: it fixes the socket path
//! (`/run/systemd/journal/socket`, not configurable) and fails to build a logger when that
//! path does not answer, so no unprivileged test could read what it sends; the protocol is
//! this small file.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};

/// Where journald listens for native entries.
pub const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";

/// A connection (an unbound datagram socket and the path it sends to).
#[derive(Debug)]
pub struct Journal {
    sock: UnixDatagram,
    path: PathBuf,
}

#[derive(Debug)]
pub enum JournalError {
    /// The socket could not be made, or the entry not sent (journald is gone, the socket is
    /// full); the caller falls back to stderr.
    Io(std::io::Error),
}

impl std::fmt::Display for JournalError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JournalError::Io(e) => write!(f, "journal: {e}"),
        }
    }
}

impl From<std::io::Error> for JournalError {
    fn from(e: std::io::Error) -> JournalError {
        JournalError::Io(e)
    }
}

/// Whether systemd connected our stderr to the journal: `$JOURNAL_STREAM` is `DEV:INODE` of the
/// stream, and it must be stderr's own (a child of a service inherits the variable with its
/// stderr redirected elsewhere; systemd.exec(5)).
pub fn stderr_is_journal() -> bool {
    let Some(want) = std::env::var_os("JOURNAL_STREAM") else { return false };
    match nix::sys::stat::fstat(2) {
        Ok(st) => want.to_string_lossy() == format!("{}:{}", st.st_dev, st.st_ino),
        Err(_) => false,
    }
}

/// A journal field name journald accepts from a client.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('_')
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}

/// Appends one field to an entry.
pub fn put_field(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    if !valid_name(name) {
        return;
    }
    out.extend_from_slice(name.as_bytes());
    if value.contains(&b'\n') {
        out.push(b'\n');
        out.extend_from_slice(&(value.len() as u64).to_le_bytes());
    } else {
        out.push(b'=');
    }
    out.extend_from_slice(value);
    out.push(b'\n');
}

/// Parses an entry back into its fields, in order (for tests and for reading what was sent).
pub fn parse_entry(mut b: &[u8]) -> Option<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let nl = b.iter().position(|&c| c == b'\n')?;
        match b[..nl].iter().position(|&c| c == b'=') {
            Some(eq) => {
                out.push((String::from_utf8(b[..eq].to_vec()).ok()?, b[eq + 1..nl].to_vec()));
                b = &b[nl + 1..];
            }
            None => {
                let name = String::from_utf8(b[..nl].to_vec()).ok()?;
                let len = u64::from_le_bytes(b.get(nl + 1..nl + 9)?.try_into().ok()?) as usize;
                let value = b.get(nl + 9..nl + 9 + len)?.to_vec();
                if b.get(nl + 9 + len) != Some(&b'\n') {
                    return None;
                }
                out.push((name, value));
                b = &b[nl + 10 + len..];
            }
        }
    }
    Some(out)
}

impl Journal {
    /// A client for the socket at `path`. Nothing is sent yet: whether journald answers shows
    /// on the first entry.
    pub fn open(path: &Path) -> Result<Journal, JournalError> {
        Ok(Journal { sock: UnixDatagram::unbound()?, path: path.to_path_buf() })
    }

    /// Sends one entry (fields as [`put_field`] laid them out).
    pub fn send(&self, entry: &[u8]) -> Result<(), JournalError> {
        match self.sock.send_to(entry, &self.path) {
            Ok(_) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EMSGSIZE) || e.raw_os_error() == Some(libc::ENOBUFS) => {
                self.send_memfd(entry)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// An entry too large for one datagram: journald reads it from a sealed memfd (the
    /// protocol requires the seals, so the file cannot change while it is read).
    fn send_memfd(&self, entry: &[u8]) -> Result<(), JournalError> {
        use nix::sys::memfd::{memfd_create, MemFdCreateFlag};
        use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags, UnixAddr};
        let errno = |e: nix::Error| JournalError::Io(std::io::Error::from(e));
        let fd = memfd_create(c"ipsyncd-journal", MemFdCreateFlag::MFD_ALLOW_SEALING | MemFdCreateFlag::MFD_CLOEXEC)
            .map_err(errno)?;
        let mut f = std::fs::File::from(fd);
        f.write_all(entry)?;
        // As systemd seals it; F_SEAL_FUTURE_WRITE (all()) needs Linux 5.1 and would make the
        // whole call fail on older thin-client kernels.
        use nix::fcntl::SealFlag;
        let seals = SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_WRITE | SealFlag::F_SEAL_SEAL;
        nix::fcntl::fcntl(f.as_raw_fd(), nix::fcntl::FcntlArg::F_ADD_SEALS(seals)).map_err(errno)?;
        let addr = UnixAddr::new(&self.path).map_err(errno)?;
        let fds = [f.as_raw_fd()];
        sendmsg(self.sock.as_raw_fd(), &[], &[ControlMessage::ScmRights(&fds)], MsgFlags::empty(), Some(&addr))
            .map_err(errno)?;
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A journal socket of the test's own, bound in a fresh temp directory named by `tag`:
    /// the directory (to remove), the socket's path, and the receiving end (non-blocking).
    pub(crate) fn test_socket(tag: &str) -> (std::path::PathBuf, std::path::PathBuf, UnixDatagram) {
        let dir = std::env::temp_dir().join(format!("ipsyncd-{tag}-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("socket");
        let _ = std::fs::remove_file(&path);
        let server = UnixDatagram::bind(&path).unwrap();
        server.set_nonblocking(true).unwrap();
        (dir, path, server)
    }

    #[test]
    fn fields_round_trip_with_and_without_newlines() {
        let mut e = Vec::new();
        put_field(&mut e, "MESSAGE", b"two\nlines");
        put_field(&mut e, "PRIORITY", b"4");
        put_field(&mut e, "_PID", b"1"); // trusted: journald's own, never a client's
        put_field(&mut e, "lower", b"x");
        let got = parse_entry(&e).unwrap_or_default();
        assert_eq!(got, vec![("MESSAGE".into(), b"two\nlines".to_vec()), ("PRIORITY".into(), b"4".to_vec())]);
        assert_eq!(&e[..8], b"MESSAGE\n", "a value with a newline is length-prefixed");
    }

    #[test]
    fn sends_to_the_socket_it_is_given() {
        let (dir, path, server) = test_socket("journal");
        let j = Journal::open(&path).unwrap();
        let mut e = Vec::new();
        put_field(&mut e, "MESSAGE", b"hello");
        j.send(&e).unwrap();
        let mut buf = [0u8; 256];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"MESSAGE=hello\n");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
