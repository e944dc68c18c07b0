//! The xid file, `[forcerenew] xid_db` (DESIGN §6, §7): for each DHCP client, by its chaddr, the
//! xid of the last message it sent. dhcpcd drops a FORCERENEW whose xid is not that of its last
//! exchange (dhcpcd issue 615), so `forcerenew` reads the xid from here and `serve --interface`
//! keeps it, from the clients' own DISCOVERs, REQUESTs, DECLINEs, RELEASEs and INFORMs.
//!
//! Contract:
//! - Format: text; `#` starts a comment; one `<mac> 0x<8 hex digits>` per line; a later line for
//!   the same MAC wins. A line that is not that is reported by its 1-based number and kept out.
//!   No input makes the parser panic or allocate more than the text it was given.
//! - [`XidDb`] holds at most its cap ([`MAX_ENTRIES`] by default). A site has tens of thousands
//!   of terminals, and every MAC anyone puts on the wire is a new entry, so the table must not
//!   grow with what a flood of forged DISCOVERs claims: when it is full the client seen least
//!   recently goes, which is the one least likely to be sent a FORCERENEW (a terminal that is
//!   on renews at T1, so live clients keep refreshing their place). Recency is not in the file
//!   (its format is fixed, and it is sorted by MAC so that two versions diff cleanly): entries
//!   loaded at start count as older than anything seen since, in file order.
//! - [`XidDb::write`] renders a `#` header line, then one line per client sorted by MAC
//!   (lowercase, colon-separated; the xid as `0x` and 8 lowercase hex digits), and replaces the
//!   file through the shell's one atomic writer: a reader (`forcerenew`) sees the old file or
//!   the new one, never half of either.
//! - Writes are debounced ([`Debounce`]): the first change after a quiet spell is written at
//!   once, later ones at most one write per [`WRITE_INTERVAL`], so a boot storm of a whole site
//!   costs one rewrite a second, and no change waits longer than that. [`XidDb::flush`] writes
//!   a pending change regardless (at shutdown).
//! - What is learned is what clients claim: DHCP is unauthenticated, so a host on the segment
//!   can put a wrong xid here for another's MAC, just as it can send that client's RELEASE.
//!   The worst it does is make a FORCERENEW that dhcpcd ignores; ipsyncd terminals accept any
//!   xid.

use crate::shell::atomic_file::{self, ReadError};
use crate::wire::Mac;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Clients kept at most (some 15 MB of table, 7.6 MB of file): ample for the largest site, and a
/// bound on what a flood of forged chaddrs can cost.
pub const MAX_ENTRIES: usize = 262_144;
/// At most one write per this while changes arrive; a pending change waits no longer.
pub const WRITE_INTERVAL: Duration = Duration::from_secs(1);
/// The largest file [`XidDb::load`] reads: [`MAX_ENTRIES`] lines of ours are 7.6 MB; the rest
/// is room for comments an operator added.
pub const MAX_FILE_BYTES: u64 = 64 << 20;
/// Bad line numbers named in one warning; the rest are counted.
const BAD_LINES_SHOWN: usize = 10;

const HEADER: &str =
    "# ipsyncd xid_db: <client MAC> <its last xid>, kept by `ipsyncd serve --interface` (rewritten, comments are not kept)\n";

/// One line of the file: a client and its xid, or not understood.
fn parse_line(line: &str) -> Option<Option<(Mac, u32)>> {
    let line = line.split('#').next().unwrap_or("").trim();
    if line.is_empty() {
        return None;
    }
    let mut it = line.split_whitespace();
    let parsed = match (it.next(), it.next(), it.next()) {
        (Some(m), Some(x), None) => parse_mac(m).zip(parse_xid(x)),
        _ => None,
    };
    Some(parsed)
}

/// Six pairs of hex digits separated by `:` (`Mac`'s own parser also takes `-` and, through
/// `from_str_radix`, a sign; the file is ours, so it is held to what we write, any case).
fn parse_mac(s: &str) -> Option<Mac> {
    let ok =
        s.len() == 17 && s.bytes().enumerate().all(|(i, b)| if i % 3 == 2 { b == b':' } else { b.is_ascii_hexdigit() });
    ok.then(|| s.parse().ok()).flatten()
}

/// `0x` and exactly 8 hex digits.
fn parse_xid(s: &str) -> Option<u32> {
    let h = s.strip_prefix("0x")?;
    (h.len() == 8 && h.bytes().all(|b| b.is_ascii_hexdigit())).then(|| u32::from_str_radix(h, 16).ok()).flatten()
}

/// Every client line in file order (a later line for a MAC overrides an earlier one), and the
/// 1-based numbers of the lines that were not understood.
fn parse_ordered(text: &str) -> (Vec<(Mac, u32)>, Vec<usize>) {
    let mut good = Vec::new();
    let mut bad = Vec::new();
    for (i, line) in text.lines().enumerate() {
        match parse_line(line) {
            None => {}
            Some(Some(entry)) => good.push(entry),
            Some(None) => bad.push(i + 1),
        }
    }
    (good, bad)
}

/// Parses the xid file: the map (a later line wins) and the 1-based numbers of lines that were
/// not understood.
pub fn parse_xid_db(text: &str) -> (HashMap<Mac, u32>, Vec<usize>) {
    let (good, bad) = parse_ordered(text);
    (good.into_iter().collect(), bad)
}

/// "lines 3, 5 and 12 more" for a warning.
pub fn describe_lines(bad: &[usize]) -> String {
    let shown: Vec<String> = bad.iter().take(BAD_LINES_SHOWN).map(|n| n.to_string()).collect();
    let more = bad.len().saturating_sub(BAD_LINES_SHOWN);
    let word = if bad.len() == 1 { "line" } else { "lines" };
    if more == 0 {
        format!("{word} {}", shown.join(", "))
    } else {
        format!("{word} {} and {more} more", shown.join(", "))
    }
}

/// When the file is next due to be written: the first change after a quiet spell at once, then
/// at most one write per interval. Pure: the caller passes the time in.
#[derive(Debug, Clone)]
pub struct Debounce {
    interval: Duration,
    last_write: Option<Instant>,
    due_at: Option<Instant>,
}

impl Debounce {
    pub fn new(interval: Duration) -> Debounce {
        Debounce { interval, last_write: None, due_at: None }
    }

    /// Something changed at `now`: a write is due at once, or one interval after the last.
    pub fn changed(&mut self, now: Instant) {
        if self.due_at.is_some() {
            return;
        }
        let earliest = self.last_write.and_then(|t| t.checked_add(self.interval)).map_or(now, |t| t.max(now));
        self.due_at = Some(earliest);
    }

    /// When the pending change is to be written; `None` when nothing is pending.
    pub fn due_at(&self) -> Option<Instant> {
        self.due_at
    }

    pub fn is_due(&self, now: Instant) -> bool {
        self.due_at.is_some_and(|d| d <= now)
    }

    pub fn pending(&self) -> bool {
        self.due_at.is_some()
    }

    /// The write at `now` succeeded: nothing is pending.
    pub fn written(&mut self, now: Instant) {
        self.last_write = Some(now);
        self.due_at = None;
    }

    /// The write at `now` failed: the change stays pending and is tried again an interval later
    /// (a full disk is not helped by trying in a loop).
    pub fn failed(&mut self, now: Instant) {
        self.last_write = Some(now);
        self.due_at = Some(now.checked_add(self.interval).unwrap_or(now));
    }
}

/// Why the file could not be loaded (a file that is not there is an empty table, not an error).
#[derive(Debug)]
pub enum XidDbError {
    /// The path names no file (it ends in `..` or `/`).
    NotAFileName(PathBuf),
    /// A link, a directory, a FIFO or a device, or larger than [`MAX_FILE_BYTES`]: not ours.
    Foreign(ReadError),
    Io(ReadError),
    /// Not UTF-8 (a line number cannot be given for bytes that are not text).
    NotText(PathBuf),
}

impl fmt::Display for XidDbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            XidDbError::NotAFileName(p) => write!(f, "{}: expected the path of a file", p.display()),
            XidDbError::Foreign(e) | XidDbError::Io(e) => write!(f, "{e}"),
            XidDbError::NotText(p) => write!(f, "{}: is not UTF-8 text", p.display()),
        }
    }
}

impl std::error::Error for XidDbError {}

#[derive(Debug, Clone, Copy)]
struct Entry {
    xid: u32,
    /// The logical time it was last seen: the key of its place in `by_age`.
    seen: u64,
}

/// The clients' last xids, bounded, with the write schedule of their file.
#[derive(Debug, Clone)]
pub struct XidDb {
    cap: usize,
    by_mac: HashMap<Mac, Entry>,
    /// Logical time last seen → client, oldest first: the eviction order.
    by_age: BTreeMap<u64, Mac>,
    /// A counter rather than the clock: two messages in one wakeup still have an order.
    tick: u64,
    schedule: Debounce,
}

/// What [`XidDb::load`] found: how many clients, and the lines kept out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Loaded {
    pub clients: usize,
    pub bad_lines: Vec<usize>,
    /// Clients beyond the cap, dropped oldest (earliest line) first.
    pub evicted: usize,
}

impl XidDb {
    /// An empty table of at most `cap` clients (0 is taken as 1).
    pub fn new(cap: usize) -> XidDb {
        XidDb {
            cap: cap.max(1),
            by_mac: HashMap::new(),
            by_age: BTreeMap::new(),
            tick: 0,
            schedule: Debounce::new(WRITE_INTERVAL),
        }
    }

    /// The table of `text` (the file's content), each line in order as if just seen.
    pub fn from_text(text: &str, cap: usize) -> (XidDb, Loaded) {
        let mut db = XidDb::new(cap);
        let (good, bad_lines) = parse_ordered(text);
        let mut evicted = 0;
        for (mac, xid) in good {
            evicted += usize::from(db.insert(mac, xid).1);
        }
        let loaded = Loaded { clients: db.len(), bad_lines, evicted };
        (db, loaded)
    }

    /// Loads `path`: missing is empty; bad lines are reported in [`Loaded`] and kept out (the
    /// caller warns). Read with the shell's reader: a link is not followed, a FIFO not waited on.
    pub fn load(path: &Path, cap: usize) -> Result<(XidDb, Loaded), XidDbError> {
        let (dir, name) = split(path)?;
        let bytes = match atomic_file::read_own(&dir, &name, MAX_FILE_BYTES) {
            Ok(Some(b)) => b,
            Ok(None) => return Ok((XidDb::new(cap), Loaded::default())),
            Err(e) if e.is_foreign() => return Err(XidDbError::Foreign(e)),
            Err(e) => return Err(XidDbError::Io(e)),
        };
        let text = String::from_utf8(bytes).map_err(|_| XidDbError::NotText(path.to_path_buf()))?;
        Ok(XidDb::from_text(&text, cap))
    }

    pub fn len(&self) -> usize {
        self.by_mac.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_mac.is_empty()
    }

    pub fn get(&self, mac: Mac) -> Option<u32> {
        self.by_mac.get(&mac).map(|e| e.xid)
    }

    /// `mac` just sent `xid` at `now`. Returns whether the file's content changed (a new client
    /// or a new xid); then a write is scheduled. A repeated xid only refreshes its recency.
    pub fn record(&mut self, mac: Mac, xid: u32, now: Instant) -> bool {
        let (changed, _) = self.insert(mac, xid);
        if changed {
            self.schedule.changed(now);
        }
        changed
    }

    /// (changed, evicted another to make room).
    fn insert(&mut self, mac: Mac, xid: u32) -> (bool, bool) {
        self.tick += 1;
        let tick = self.tick;
        if let Some(e) = self.by_mac.get_mut(&mac) {
            self.by_age.remove(&e.seen);
            self.by_age.insert(tick, mac);
            e.seen = tick;
            let changed = e.xid != xid;
            e.xid = xid;
            return (changed, false);
        }
        let mut evicted = false;
        if self.by_mac.len() >= self.cap {
            if let Some((_, old)) = self.by_age.pop_first() {
                self.by_mac.remove(&old);
                evicted = true;
            }
        }
        self.by_mac.insert(mac, Entry { xid, seen: tick });
        self.by_age.insert(tick, mac);
        (true, evicted)
    }

    /// The file's content: the header, then the clients sorted by MAC.
    pub fn render(&self) -> String {
        let mut rows: Vec<(Mac, u32)> = self.by_mac.iter().map(|(m, e)| (*m, e.xid)).collect();
        rows.sort_unstable_by_key(|r| r.0);
        let mut out = String::with_capacity(HEADER.len() + rows.len() * 29);
        out.push_str(HEADER);
        for (mac, xid) in rows {
            // Writing to a String cannot fail.
            let _ = fmt::Write::write_fmt(&mut out, format_args!("{mac} 0x{xid:08x}\n"));
        }
        out
    }

    /// Replaces `path` with [`XidDb::render`], atomically. Does not touch the schedule.
    pub fn write(&self, path: &Path) -> io::Result<()> {
        let (dir, name) = split(path).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        atomic_file::write_atomic(&dir, &name, self.render().as_bytes())
    }

    /// When the pending change is due to be written (`None`: nothing pending).
    pub fn write_due(&self) -> Option<Instant> {
        self.schedule.due_at()
    }

    /// Writes `path` if a change is pending and its time has come; `None` when nothing was due.
    pub fn write_if_due(&mut self, path: &Path, now: Instant) -> Option<io::Result<()>> {
        if !self.schedule.is_due(now) {
            return None;
        }
        Some(self.write_now(path, now))
    }

    /// Writes `path` if a change is pending, due or not (at shutdown).
    pub fn flush(&mut self, path: &Path, now: Instant) -> Option<io::Result<()>> {
        if !self.schedule.pending() {
            return None;
        }
        Some(self.write_now(path, now))
    }

    fn write_now(&mut self, path: &Path, now: Instant) -> io::Result<()> {
        let r = self.write(path);
        match &r {
            Ok(()) => self.schedule.written(now),
            Err(_) => self.schedule.failed(now),
        }
        r
    }
}

/// The directory and plain file name of `path`, for the atomic writer (a bare name is in the
/// working directory).
fn split(path: &Path) -> Result<(PathBuf, String), XidDbError> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| !n.is_empty())
        .ok_or_else(|| XidDbError::NotAFileName(path.to_path_buf()))?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok((dir, name.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Mac = Mac([2, 0, 0, 0, 0, 0x20]);
    const B: Mac = Mac([2, 0, 0, 0, 0, 0x21]);

    fn mac(i: u32) -> Mac {
        let b = i.to_be_bytes();
        Mac([2, 0, b[0], b[1], b[2], b[3]])
    }

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("ipsyncd-xid-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn xid_db_format_later_line_wins_and_bad_lines_are_numbered() {
        let text = "# comment\n02:00:00:00:00:20 0x0000beef\nnonsense\n02:00:00:00:00:20 0x12345678 # later wins\n02:00:00:00:00:21 0x123\n";
        let (m, bad) = parse_xid_db(text);
        assert_eq!(m.get(&A), Some(&0x1234_5678));
        assert_eq!(m.len(), 1);
        assert_eq!(bad, vec![3, 5]);
        let (db, loaded) = XidDb::from_text(text, 16);
        assert_eq!(db.get(A), Some(0x1234_5678));
        assert_eq!(loaded, Loaded { clients: 1, bad_lines: vec![3, 5], evicted: 0 });
    }

    #[test]
    fn xid_db_is_held_to_the_format_it_writes() {
        for line in [
            "02-00-00-00-00-20 0x12345678",  // dashes
            "02:00:00:00:00:20 0x+1234567",  // a sign from_str_radix would take
            "+2:00:00:00:00:20 0x12345678",  // likewise in the MAC
            "02:00:00:00:00:20 12345678",    // no 0x
            "02:00:00:00:00:20 0x123456789", // nine digits
            "02:00:00:00:00:20 0x1234567g",
            "02:00:00:00:00:20:00 0x12345678",
            "02:00:00:00:00:20 0x12345678 extra",
            "02:00:00:00:00:20",
        ] {
            assert_eq!(parse_xid_db(line).1, vec![1], "{line:?}");
        }
        // Upper case is read (an operator may type it); we write lower case.
        assert_eq!(parse_xid_db("02:00:00:00:00:2A 0xDEADBEEF").0.get(&Mac([2, 0, 0, 0, 0, 0x2a])), Some(&0xdead_beef));
    }

    #[test]
    fn xid_db_round_trip_sorted_by_mac_with_a_header() {
        let now = Instant::now();
        let mut db = XidDb::new(16);
        assert!(db.record(B, 0xdead_beef, now));
        assert!(db.record(A, 0x0000_0001, now));
        let text = db.render();
        let mut lines = text.lines();
        assert!(lines.next().unwrap().starts_with('#'));
        assert_eq!(lines.collect::<Vec<_>>(), vec!["02:00:00:00:00:20 0x00000001", "02:00:00:00:00:21 0xdeadbeef"]);
        let (back, loaded) = XidDb::from_text(&text, 16);
        assert_eq!(loaded, Loaded { clients: 2, bad_lines: vec![], evicted: 0 });
        assert_eq!((back.get(A), back.get(B)), (Some(1), Some(0xdead_beef)));
        assert_eq!(back.render(), text);
        // Through the file and the atomic writer.
        let d = tmpdir("rt");
        let path = d.join("xids");
        assert!(XidDb::load(&path, 16).unwrap().0.is_empty(), "a missing file is an empty table");
        db.write(&path).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
        let (loaded_db, _) = XidDb::load(&path, 16).unwrap();
        assert_eq!(loaded_db.render(), text);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn xid_record_reports_changes_only() {
        let now = Instant::now();
        let mut db = XidDb::new(16);
        assert!(db.record(A, 7, now));
        assert!(!db.record(A, 7, now), "the same xid again changes nothing");
        assert!(db.write_due().is_some());
        let d = tmpdir("changes");
        db.flush(&d.join("xids"), now).unwrap().unwrap();
        std::fs::remove_dir_all(&d).unwrap();
        assert!(!db.record(A, 7, now));
        assert_eq!(db.write_due(), None, "nothing to write for a repeated xid");
        assert!(db.record(A, 8, now));
        assert_eq!(db.get(A), Some(8));
    }

    #[test]
    fn xid_db_is_bounded_and_evicts_the_least_recently_seen() {
        let now = Instant::now();
        let mut db = XidDb::new(3);
        for i in 0..3 {
            db.record(mac(i), i, now);
        }
        // mac(0) is seen again (same xid): it is now the most recent, so mac(1) goes first.
        assert!(!db.record(mac(0), 0, now));
        assert!(db.record(mac(3), 3, now));
        assert_eq!(db.len(), 3);
        assert_eq!(db.get(mac(1)), None);
        assert_eq!((db.get(mac(0)), db.get(mac(2)), db.get(mac(3))), (Some(0), Some(2), Some(3)));
        assert!(db.record(mac(4), 4, now));
        assert_eq!(db.get(mac(2)), None);
        // A flood of new MACs never grows it past the cap.
        for i in 100..10_000 {
            db.record(mac(i), i, now);
        }
        assert_eq!(db.len(), 3);
        assert_eq!(db.by_age.len(), 3);
        // Loading more lines than the cap keeps the last ones.
        let text: String = (0..10).map(|i| format!("{} 0x{i:08x}\n", mac(i))).collect();
        let (db, loaded) = XidDb::from_text(&text, 4);
        assert_eq!((loaded.clients, loaded.evicted), (4, 6));
        assert!((6..10).all(|i| db.get(mac(i)) == Some(i)) && db.get(mac(5)).is_none());
    }

    #[test]
    fn xid_db_garbage_never_panics() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let alphabet = b"0123456789abcdefABCDEFxX:-# \t\n\r\xc3\xa9+g";
        for _ in 0..2_000 {
            let len = (next() % 80) as usize;
            let bytes: Vec<u8> = (0..len).map(|_| alphabet[(next() % alphabet.len() as u64) as usize]).collect();
            let text = String::from_utf8_lossy(&bytes);
            let (db, loaded) = XidDb::from_text(&text, 8);
            assert!(db.len() <= 8 && loaded.clients == db.len());
            let _ = db.render();
        }
        for s in ["", "\n\n\n", "#", "   #  ", "\u{0}", "é 0x12345678", "02:00:00:00:00:2é 0x1234567", "0x", ":::::"]
        {
            let _ = parse_xid_db(s);
        }
        assert_eq!(describe_lines(&[3]), "line 3");
        assert_eq!(describe_lines(&(1..=12).collect::<Vec<_>>()), "lines 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 and 2 more");
    }

    #[test]
    fn xid_db_load_refuses_what_is_not_its_own_file() {
        let d = tmpdir("foreign");
        std::fs::write(d.join("victim"), "02:00:00:00:00:20 0x00000001\n").unwrap();
        std::os::unix::fs::symlink(d.join("victim"), d.join("xids")).unwrap();
        assert!(matches!(XidDb::load(&d.join("xids"), 16), Err(XidDbError::Foreign(_))));
        std::fs::remove_file(d.join("xids")).unwrap();
        std::fs::write(d.join("xids"), b"\xff\xfe 0x00000001\n").unwrap();
        assert!(matches!(XidDb::load(&d.join("xids"), 16), Err(XidDbError::NotText(_))));
        assert!(matches!(XidDb::load(Path::new("/"), 16), Err(XidDbError::NotAFileName(_))));
        // Writing replaces a planted link, never writes through it.
        std::fs::remove_file(d.join("xids")).unwrap();
        std::os::unix::fs::symlink(d.join("victim"), d.join("xids")).unwrap();
        let mut db = XidDb::new(4);
        db.record(B, 2, Instant::now());
        db.write(&d.join("xids")).unwrap();
        assert_eq!(std::fs::read_to_string(d.join("victim")).unwrap(), "02:00:00:00:00:20 0x00000001\n");
        assert!(std::fs::read_to_string(d.join("xids")).unwrap().contains("02:00:00:00:00:21 0x00000002"));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn xid_debounce_writes_at_once_then_at_most_once_per_interval() {
        let t0 = Instant::now();
        let s = Duration::from_millis;
        let mut d = Debounce::new(WRITE_INTERVAL);
        assert_eq!(d.due_at(), None);
        d.changed(t0);
        assert_eq!(d.due_at(), Some(t0), "the first change after a quiet spell is written at once");
        d.written(t0);
        // Changes while the interval runs wait for its end, and share one write.
        d.changed(t0 + s(10));
        d.changed(t0 + s(500));
        assert_eq!(d.due_at(), Some(t0 + WRITE_INTERVAL));
        assert!(!d.is_due(t0 + s(999)) && d.is_due(t0 + WRITE_INTERVAL));
        d.written(t0 + WRITE_INTERVAL);
        // A change long after the last write is written at once again.
        d.changed(t0 + s(5_000));
        assert_eq!(d.due_at(), Some(t0 + s(5_000)));
        // A failed write is retried an interval later, not in a loop.
        d.failed(t0 + s(5_000));
        assert_eq!(d.due_at(), Some(t0 + s(6_000)));
    }

    #[test]
    fn xid_db_write_if_due_follows_the_schedule() {
        let d = tmpdir("due");
        let path = d.join("xids");
        let t0 = Instant::now();
        let mut db = XidDb::new(16);
        assert!(db.write_if_due(&path, t0).is_none());
        db.record(A, 1, t0);
        db.write_if_due(&path, t0).unwrap().unwrap();
        db.record(A, 2, t0 + Duration::from_millis(100));
        assert!(db.write_if_due(&path, t0 + Duration::from_millis(200)).is_none());
        assert!(std::fs::read_to_string(&path).unwrap().contains(" 0x00000001"));
        // At shutdown the pending change is written though not yet due.
        db.flush(&path, t0 + Duration::from_millis(300)).unwrap().unwrap();
        assert!(std::fs::read_to_string(&path).unwrap().contains(" 0x00000002"));
        assert!(db.flush(&path, t0 + Duration::from_millis(400)).is_none());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
