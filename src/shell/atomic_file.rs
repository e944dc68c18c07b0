//! The one way the daemon and its tools write and read back their own files (DESIGN §10): the
//! state file, the status file and the announce/forcerenew sequence files all go through
//! [`write_atomic`] and [`read_own`].
//!
//! Contract: when [`write_atomic`] returns `Ok`, `dir/name` holds exactly the given bytes and
//! survives a crash (the file and the directory are fsynced); a crash or an error at any point
//! leaves either the old content or the new, never a torn file. The temp file is created with
//! O_CREAT|O_EXCL|O_NOFOLLOW|O_CLOEXEC, mode 0600, under a fresh unpredictable name in `dir`: a
//! symlink planted there is never followed, and a temp left by a crash never blocks the next
//! write. On any error the temp file is removed. An existing entry at `dir/name`, a symlink
//! included, is replaced by the rename, never written through.
//!
//! [`read_own`] opens `dir/name` with O_NOFOLLOW|O_NONBLOCK and reads at most `max` bytes: a
//! symlink, a FIFO, a device or a directory planted there is reported as what it is (never
//! followed, never blocked on), and a file larger than `max` is reported, not read.

use super::clock;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Fresh names to try before giving up. A collision of 64 random bits means someone is
/// planting names in our directory; a few retries make that harmless without looping forever.
const CREATE_ATTEMPTS: usize = 8;

/// Atomically replaces `dir/name` with `bytes`, mode 0600. `name` must be a plain file name.
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    write_atomic_mode(dir, name, bytes, 0o600)
}

/// [`write_atomic`] with the file's mode set to `mode` exactly (fchmod, so the process umask
/// cannot narrow it): the status file is 0640 for the state directory's group.
pub fn write_atomic_mode(dir: &Path, name: &str, bytes: &[u8], mode: u32) -> io::Result<()> {
    plain_name(name)?;
    let (tmp, file) = create_temp(dir, name)?;
    let filled = file
        .set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode & 0o777))
        .and_then(|()| fill_and_rename(file, bytes, &tmp, &dir.join(name)));
    if let Err(e) = filled {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    // The rename is only durable once the directory entry is on disk.
    File::open(dir)?.sync_all()
}

fn plain_name(name: &str) -> io::Result<()> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{name:?} is not a plain file name")));
    }
    Ok(())
}

/// Why [`read_own`] did not return a file's bytes.
#[derive(Debug)]
pub enum ReadError {
    /// A symbolic link: ours are never links, so someone planted it.
    Symlink(PathBuf),
    /// A directory, FIFO, socket or device: never something we wrote.
    NotRegular {
        path: PathBuf,
        kind: &'static str,
    },
    /// Larger than the caller's bound (checked before reading, and again while reading).
    TooLarge {
        path: PathBuf,
        len: u64,
        max: u64,
    },
    Io {
        path: PathBuf,
        error: io::Error,
    },
}

impl ReadError {
    /// True when the entry is there but cannot be ours (a link, not a file, too large), as
    /// opposed to an I/O error the system may recover from.
    pub fn is_foreign(&self) -> bool {
        !matches!(self, ReadError::Io { .. })
    }
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::Symlink(p) => write!(f, "{}: is a symbolic link (not followed)", p.display()),
            ReadError::NotRegular { path, kind } => write!(f, "{}: is a {kind}, not a regular file", path.display()),
            ReadError::TooLarge { path, len, max } => {
                write!(f, "{}: {len} bytes is more than the {max} this file may have", path.display())
            }
            ReadError::Io { path, error } => write!(f, "{}: {error}", path.display()),
        }
    }
}

impl std::error::Error for ReadError {}

impl From<ReadError> for io::Error {
    fn from(e: ReadError) -> io::Error {
        let kind = match &e {
            ReadError::Io { error, .. } => error.kind(),
            ReadError::TooLarge { .. } => io::ErrorKind::InvalidData,
            ReadError::Symlink(_) | ReadError::NotRegular { .. } => io::ErrorKind::InvalidInput,
        };
        io::Error::new(kind, e.to_string())
    }
}

/// The bytes of `dir/name`, at most `max` of them; `Ok(None)` when there is no such entry.
pub fn read_own(dir: &Path, name: &str, max: u64) -> Result<Option<Vec<u8>>, ReadError> {
    let path = dir.join(name);
    let io_err = |error: io::Error| ReadError::Io { path: path.clone(), error };
    plain_name(name).map_err(io_err)?;
    // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer forever.
    let opened = OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(&path);
    let mut file = match opened {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        // ELOOP is what O_NOFOLLOW answers for a link as the last component.
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            let link = fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink());
            return Err(if link { ReadError::Symlink(path) } else { io_err(e) });
        }
        Err(e) => return Err(io_err(e)),
    };
    let meta = file.metadata().map_err(io_err)?;
    let ft = meta.file_type();
    if !ft.is_file() {
        return Err(ReadError::NotRegular { path, kind: not_regular_kind(ft) });
    }
    if meta.len() > max {
        return Err(ReadError::TooLarge { path, len: meta.len(), max });
    }
    // The file may grow between fstat and read: read one byte more than allowed to see it.
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    (&mut file).take(max.saturating_add(1)).read_to_end(&mut bytes).map_err(io_err)?;
    if bytes.len() as u64 > max {
        return Err(ReadError::TooLarge { path, len: bytes.len() as u64, max });
    }
    Ok(Some(bytes))
}

/// `.NAME.<16 random hex digits>.tmp`: hidden, recognisably ours, and not guessable in advance.
fn temp_name(name: &str) -> String {
    format!(".{name}.{:016x}.tmp", clock::random_u64())
}

fn create_temp(dir: &Path, name: &str) -> io::Result<(PathBuf, File)> {
    let mut last = None;
    for _ in 0..CREATE_ATTEMPTS {
        let tmp = dir.join(temp_name(name));
        // create_new is O_CREAT|O_EXCL: it fails on any existing entry, a symlink included;
        // O_NOFOLLOW says so a second time for kernels and filesystems that we have not met.
        // The standard library opens every file O_CLOEXEC, so no hook inherits it.
        let opened =
            OpenOptions::new().write(true).create_new(true).mode(0o600).custom_flags(libc::O_NOFOLLOW).open(&tmp);
        match opened {
            Ok(f) => return Ok((tmp, f)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::from(io::ErrorKind::AlreadyExists)))
}

fn fill_and_rename(mut file: File, bytes: &[u8], tmp: &Path, target: &Path) -> io::Result<()> {
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    fs::rename(tmp, target)
}

/// What a path that is not a regular file is, for error messages.
pub fn not_regular_kind(ft: fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    match () {
        _ if ft.is_dir() => "directory",
        _ if ft.is_fifo() => "FIFO",
        _ if ft.is_socket() => "socket",
        _ => "device",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("ipsyncd-atomic-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    fn leftovers(d: &Path) -> Vec<String> {
        fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".tmp"))
            .collect()
    }

    #[test]
    fn write_then_read_round_trips_with_mode_0600() {
        let d = tmpdir("rt");
        write_atomic(&d, "state.json", b"first").unwrap();
        write_atomic(&d, "state.json", b"second\n").unwrap();
        assert_eq!(fs::read(d.join("state.json")).unwrap(), b"second\n");
        assert_eq!(fs::metadata(d.join("state.json")).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(leftovers(&d).is_empty());
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn symlinks_at_predictable_temp_names_are_not_followed() {
        let d = tmpdir("symlink");
        let victim = d.join("victim");
        fs::write(&victim, b"untouched").unwrap();
        // Every temp name an earlier version used, plus the target itself.
        for name in ["state.json", "status.json", "announce.seq", "forcerenew.replay"] {
            std::os::unix::fs::symlink(&victim, d.join(format!(".{name}.tmp"))).unwrap();
        }
        std::os::unix::fs::symlink(&victim, d.join("status.json")).unwrap();
        for name in ["state.json", "status.json", "announce.seq", "forcerenew.replay"] {
            write_atomic(&d, name, name.as_bytes()).unwrap();
            assert_eq!(fs::read(d.join(name)).unwrap(), name.as_bytes());
        }
        assert_eq!(fs::read(&victim).unwrap(), b"untouched");
        // The planted link at the target was replaced, not written through.
        assert!(!fs::symlink_metadata(d.join("status.json")).unwrap().file_type().is_symlink());
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn temp_names_are_fresh_each_time() {
        let a = temp_name("state.json");
        assert!(a.starts_with(".state.json.") && a.ends_with(".tmp"));
        assert_ne!(a, temp_name("state.json"));
    }

    #[test]
    fn a_failed_write_removes_its_temp_and_keeps_the_target() {
        let d = tmpdir("fail");
        // A directory at the target: the rename fails after the temp was written.
        fs::create_dir(d.join("state.json")).unwrap();
        fs::write(d.join("state.json/keep"), b"x").unwrap();
        assert!(write_atomic(&d, "state.json", b"new").is_err());
        assert!(leftovers(&d).is_empty(), "{:?}", leftovers(&d));
        assert_eq!(fs::read(d.join("state.json/keep")).unwrap(), b"x");
        assert!(write_atomic(&d, "../escape", b"no").is_err());
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn read_own_refuses_links_fifos_directories_and_oversized_files() {
        let d = tmpdir("read");
        assert!(matches!(read_own(&d, "state.json", 16), Ok(None)));
        fs::write(d.join("victim"), b"secret").unwrap();
        std::os::unix::fs::symlink(d.join("victim"), d.join("state.json")).unwrap();
        assert!(matches!(read_own(&d, "state.json", 16), Err(ReadError::Symlink(_))));
        fs::remove_file(d.join("state.json")).unwrap();
        // A FIFO: opening it without O_NONBLOCK would hang this test.
        let fifo = std::ffi::CString::new(d.join("state.json").into_os_string().into_encoded_bytes()).unwrap();
        // SAFETY: a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        assert!(matches!(read_own(&d, "state.json", 16), Err(ReadError::NotRegular { kind: "FIFO", .. })));
        fs::remove_file(d.join("state.json")).unwrap();
        fs::create_dir(d.join("state.json")).unwrap();
        assert!(matches!(read_own(&d, "state.json", 16), Err(ReadError::NotRegular { kind: "directory", .. })));
        fs::remove_dir(d.join("state.json")).unwrap();
        fs::write(d.join("state.json"), [b'x'; 17]).unwrap();
        let e = read_own(&d, "state.json", 16).unwrap_err();
        assert!(matches!(e, ReadError::TooLarge { len: 17, max: 16, .. }) && e.is_foreign(), "{e}");
        fs::write(d.join("state.json"), [b'x'; 16]).unwrap();
        assert_eq!(read_own(&d, "state.json", 16).unwrap().unwrap().len(), 16);
        assert!(read_own(&d, "../victim", 16).is_err());
        fs::remove_dir_all(&d).unwrap();
    }
}
