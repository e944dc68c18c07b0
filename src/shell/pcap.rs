//! A checked reader for classic pcap (µs and ns) and pcapng (SHB, IDB with if_tsresol, EPB,
//! SPB), and a pcapng writer for fixtures.
//!
//! Contract: [`Reader::open`] reads only regular files of at most [`MAX_FILE`] bytes (a device
//! such as /dev/zero, a FIFO or a directory is refused before it is opened, so it can neither
//! hang the reader nor make it allocate without bound), and checks the header before reading the
//! rest. The whole file is then read once (its size is the only allocation that grows with
//! input); every block and record length is checked against what remains before it is used, a
//! record longer than [`MAX_RECORD`] is an error, and so is a timestamp past [`MAX_TS_US`], so a
//! hostile file can neither panic the reader, nor make it allocate, nor hand the engine a clock
//! near `u64::MAX`. We read with our own code because pcap-file 2.0's pcapng path unwraps inside
//! block parsing and ignores `if_tsresol`; pcap-file is still used to write classic pcap.

use std::fmt;
use std::io::Read;

/// Larger than any Ethernet snaplen in use (tcpdump's maximum is 262144).
pub const MAX_RECORD: usize = 262_144;
/// The largest capture replay reads: the file is held in memory whole.
pub const MAX_FILE: u64 = 1 << 30;
/// The last microsecond classic pcap can express (u32 seconds, early 2106). Later timestamps are
/// errors in both formats, which keeps every clock the engine sees far below `u64::MAX`.
pub const MAX_TS_US: u64 = u32::MAX as u64 * 1_000_000 + 999_999;
const LINKTYPE_ETHERNET: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PcapError {
    TooShort,
    /// Replay reads a capture file; this path is a device, FIFO, socket or directory.
    NotAFile,
    /// Larger than [`MAX_FILE`].
    FileTooLarge {
        len: u64,
    },
    BadMagic(u32),
    LinkType(u32),
    /// Record `n` (1-based) runs past the end of the file.
    Truncated {
        record: u64,
    },
    RecordTooLarge {
        record: u64,
        len: u64,
    },
    Block {
        record: u64,
        what: &'static str,
    },
    /// A sub-second part out of range, or a time past [`MAX_TS_US`].
    Timestamp {
        record: u64,
    },
}

impl fmt::Display for PcapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PcapError::TooShort => write!(f, "file is shorter than a pcap header"),
            PcapError::NotAFile => write!(f, "not a regular file (replay reads a pcap or pcapng file)"),
            PcapError::FileTooLarge { len } => write!(f, "file is {len} bytes (max {MAX_FILE})"),
            PcapError::BadMagic(m) => write!(f, "not a pcap or pcapng file (magic {m:#010x})"),
            PcapError::LinkType(l) => write!(f, "link type {l} is not Ethernet (1)"),
            PcapError::Truncated { record } => write!(f, "record {record} is truncated"),
            PcapError::RecordTooLarge { record, len } => {
                write!(f, "record {record} claims {len} bytes (max {MAX_RECORD})")
            }
            PcapError::Block { record, what } => {
                write!(f, "pcapng block after record {record}: {what}")
            }
            PcapError::Timestamp { record } => write!(f, "record {record} has an impossible timestamp"),
        }
    }
}

impl std::error::Error for PcapError {}

#[derive(Debug, Clone, Copy)]
enum Format {
    Classic { big: bool, nanos: bool },
    Ng { big: bool },
}

/// One record: timestamp in µs since the epoch and the captured bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    pub ts_us: u64,
    pub data: &'a [u8],
}

pub struct Reader {
    data: Vec<u8>,
    pos: usize,
    format: Format,
    /// pcapng: per interface, (linktype, units per second).
    ifaces: Vec<(u32, u64)>,
    records: u64,
    last_ts: u64,
}

fn rd32(b: &[u8], at: usize, big: bool) -> Option<u32> {
    let s: [u8; 4] = b.get(at..at.checked_add(4)?)?.try_into().ok()?;
    Some(if big { u32::from_be_bytes(s) } else { u32::from_le_bytes(s) })
}

fn rd16(b: &[u8], at: usize, big: bool) -> Option<u16> {
    let s: [u8; 2] = b.get(at..at.checked_add(2)?)?.try_into().ok()?;
    Some(if big { u16::from_be_bytes(s) } else { u16::from_le_bytes(s) })
}

fn pad4(n: usize) -> usize {
    (n + 3) & !3
}

/// The longest file header: classic pcap's 24 bytes (pcapng's SHB needs 12 to know its order).
const HEADER_LEN: usize = 24;

/// The format a file's first bytes announce; for classic pcap, also its link type.
fn header(data: &[u8]) -> Result<Format, PcapError> {
    let magic = rd32(data, 0, false).ok_or(PcapError::TooShort)?;
    let format = match magic {
        0xa1b2_c3d4 => Format::Classic { big: false, nanos: false },
        0xa1b2_3c4d => Format::Classic { big: false, nanos: true },
        0xd4c3_b2a1 => Format::Classic { big: true, nanos: false },
        0x4d3c_b2a1 => Format::Classic { big: true, nanos: true },
        0x0a0d_0d0a => {
            let bom = rd32(data, 8, false).ok_or(PcapError::TooShort)?;
            Format::Ng { big: bom != 0x1a2b_3c4d }
        }
        m => return Err(PcapError::BadMagic(m)),
    };
    if let Format::Classic { big, .. } = format {
        // The top bits carry FCS information (pcap-linktype(7)), not the link type.
        let link = rd32(data, 20, big).ok_or(PcapError::TooShort)? & 0x0fff_ffff;
        if link != LINKTYPE_ETHERNET {
            return Err(PcapError::LinkType(link));
        }
    }
    Ok(format)
}

impl Reader {
    pub fn new(data: Vec<u8>) -> Result<Reader, PcapError> {
        let format = header(&data)?;
        let pos = if let Format::Classic { .. } = format { HEADER_LEN } else { 0 };
        Ok(Reader { data, pos, format, ifaces: Vec::new(), records: 0, last_ts: 0 })
    }

    /// Reads a capture file. The outer error is I/O (missing, unreadable); the inner one says
    /// why the file is not a capture we read, as soon as that is known: the file's type and size
    /// before it is opened, its header before the rest is read.
    pub fn open(path: &std::path::Path) -> std::io::Result<Result<Reader, PcapError>> {
        let regular = |m: &std::fs::Metadata| -> Result<(), PcapError> {
            if !m.is_file() {
                return Err(PcapError::NotAFile);
            }
            if m.len() > MAX_FILE {
                return Err(PcapError::FileTooLarge { len: m.len() });
            }
            Ok(())
        };
        // stat first: opening a FIFO would block until a writer came.
        if let Err(e) = regular(&std::fs::metadata(path)?) {
            return Ok(Err(e));
        }
        let file = std::fs::File::open(path)?;
        // And fstat what was opened, in case the path changed in between.
        let meta = file.metadata()?;
        if let Err(e) = regular(&meta) {
            return Ok(Err(e));
        }
        // The cap holds even if the file grows while it is read.
        let mut limited = file.take(MAX_FILE + 1);
        let mut data = Vec::with_capacity(HEADER_LEN);
        (&mut limited).take(HEADER_LEN as u64).read_to_end(&mut data)?;
        if let Err(e) = header(&data) {
            return Ok(Err(e));
        }
        data.reserve(usize::try_from(meta.len()).unwrap_or(0).saturating_sub(data.len()));
        limited.read_to_end(&mut data)?;
        if data.len() as u64 > MAX_FILE {
            return Ok(Err(PcapError::FileTooLarge { len: data.len() as u64 }));
        }
        Ok(Reader::new(data))
    }

    /// The next record, `Ok(None)` at a clean end of file.
    pub fn next_record(&mut self) -> Result<Option<Record<'_>>, PcapError> {
        match self.format {
            Format::Classic { big, nanos } => self.next_classic(big, nanos),
            Format::Ng { .. } => self.next_ng(),
        }
    }

    fn next_classic(&mut self, big: bool, nanos: bool) -> Result<Option<Record<'_>>, PcapError> {
        if self.pos >= self.data.len() {
            return Ok(None);
        }
        let record = self.records + 1;
        let at = self.pos;
        let h = |o| rd32(&self.data, at + o, big).ok_or(PcapError::Truncated { record });
        let (sec, frac, caplen) = (h(0)?, h(4)?, h(8)? as usize);
        if caplen > MAX_RECORD {
            return Err(PcapError::RecordTooLarge { record, len: caplen as u64 });
        }
        let start = at + 16;
        if start + caplen > self.data.len() {
            return Err(PcapError::Truncated { record });
        }
        // A fraction of a second that is a second or more is not a time.
        let frac_us = match nanos {
            true if frac < 1_000_000_000 => u64::from(frac) / 1000,
            false if frac < 1_000_000 => u64::from(frac),
            _ => return Err(PcapError::Timestamp { record }),
        };
        // At most MAX_TS_US: u32 seconds and a fraction below one.
        let ts_us = u64::from(sec) * 1_000_000 + frac_us;
        self.pos = start + caplen;
        self.records = record;
        Ok(Some(Record { ts_us, data: &self.data[start..start + caplen] }))
    }

    fn next_ng(&mut self) -> Result<Option<Record<'_>>, PcapError> {
        loop {
            if self.pos >= self.data.len() {
                return Ok(None);
            }
            let record = self.records;
            let bad = |what| PcapError::Block { record, what };
            let at = self.pos;
            // The SHB carries its own byte order; every other block uses the current section's.
            let raw_type = rd32(&self.data, at, false).ok_or(bad("truncated block header"))?;
            if raw_type == 0x0a0d_0d0a {
                let bom = rd32(&self.data, at + 8, false).ok_or(bad("truncated section header"))?;
                self.format = Format::Ng { big: bom != 0x1a2b_3c4d };
                self.ifaces.clear();
            }
            let Format::Ng { big } = self.format else {
                return Ok(None);
            };
            let btype = rd32(&self.data, at, big).ok_or(bad("truncated block header"))?;
            let blen = rd32(&self.data, at + 4, big).ok_or(bad("truncated block header"))? as usize;
            if blen < 12 || blen % 4 != 0 || at.checked_add(blen).map_or(true, |e| e > self.data.len()) {
                return Err(bad("block length out of bounds"));
            }
            if rd32(&self.data, at + blen - 4, big) != Some(blen as u32) {
                return Err(bad("block trailer length mismatch"));
            }
            self.pos = at + blen;
            let body = &self.data[at + 8..at + blen - 4];
            match btype {
                1 => {
                    let link = u32::from(rd16(body, 0, big).ok_or(bad("short interface block"))?);
                    let mut units = 1_000_000u64;
                    let mut o = 8;
                    while let (Some(code), Some(len)) = (rd16(body, o, big), rd16(body, o + 2, big)) {
                        let len = usize::from(len);
                        if code == 0 {
                            break;
                        }
                        if code == 9 && len == 1 {
                            let v = body.get(o + 4).copied().unwrap_or(6);
                            units = if v & 0x80 == 0 {
                                10u64.checked_pow(u32::from(v))
                            } else {
                                1u64.checked_shl(u32::from(v & 0x7f))
                            }
                            .filter(|&u| u > 0)
                            .ok_or(bad("if_tsresol out of range"))?;
                        }
                        o += 4 + pad4(len);
                    }
                    if self.ifaces.len() >= 4096 {
                        return Err(bad("too many interfaces"));
                    }
                    self.ifaces.push((link, units));
                }
                6 => {
                    let iface = rd32(body, 0, big).ok_or(bad("short packet block"))? as usize;
                    let hi = u64::from(rd32(body, 4, big).ok_or(bad("short packet block"))?);
                    let lo = u64::from(rd32(body, 8, big).ok_or(bad("short packet block"))?);
                    let caplen = rd32(body, 12, big).ok_or(bad("short packet block"))? as usize;
                    let &(link, units) = self.ifaces.get(iface).ok_or(bad("packet for an undeclared interface"))?;
                    if link != LINKTYPE_ETHERNET {
                        return Err(PcapError::LinkType(link));
                    }
                    if caplen > MAX_RECORD {
                        return Err(PcapError::RecordTooLarge { record: record + 1, len: caplen as u64 });
                    }
                    let data = body.get(20..20 + caplen).ok_or(PcapError::Truncated { record: record + 1 })?;
                    let ts = (hi << 32) | lo;
                    // u64 units times 10^6 fits u128; the quotient may not fit u64.
                    let ts_us = u64::try_from(u128::from(ts) * 1_000_000 / u128::from(units))
                        .ok()
                        .filter(|&t| t <= MAX_TS_US)
                        .ok_or(PcapError::Timestamp { record: record + 1 })?;
                    self.records += 1;
                    self.last_ts = ts_us;
                    let start = at + 8 + 20;
                    return Ok(Some(Record { ts_us, data: &self.data[start..start + data.len()] }));
                }
                3 => {
                    let &(link, _) = self.ifaces.first().ok_or(bad("packet for an undeclared interface"))?;
                    if link != LINKTYPE_ETHERNET {
                        return Err(PcapError::LinkType(link));
                    }
                    let orig = rd32(body, 0, big).ok_or(bad("short simple packet block"))? as usize;
                    let caplen = orig.min(body.len().saturating_sub(4));
                    self.records += 1;
                    let start = at + 8 + 4;
                    return Ok(Some(Record { ts_us: self.last_ts, data: &self.data[start..start + caplen] }));
                }
                _ => {}
            }
        }
    }
}

/// Writes a little-endian pcapng file with one Ethernet interface at µs resolution.
pub fn write_pcapng(records: &[(u64, Vec<u8>)]) -> Vec<u8> {
    fn block(out: &mut Vec<u8>, btype: u32, body: &[u8]) {
        let len = (12 + pad4(body.len())) as u32;
        out.extend_from_slice(&btype.to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(body);
        out.resize(out.len() + pad4(body.len()) - body.len(), 0);
        out.extend_from_slice(&len.to_le_bytes());
    }
    let mut out = Vec::new();
    let mut shb = Vec::new();
    shb.extend_from_slice(&0x1a2b_3c4du32.to_le_bytes());
    shb.extend_from_slice(&1u16.to_le_bytes());
    shb.extend_from_slice(&0u16.to_le_bytes());
    shb.extend_from_slice(&u64::MAX.to_le_bytes());
    block(&mut out, 0x0a0d_0d0a, &shb);
    let mut idb = Vec::new();
    idb.extend_from_slice(&1u16.to_le_bytes());
    idb.extend_from_slice(&0u16.to_le_bytes());
    idb.extend_from_slice(&262_144u32.to_le_bytes());
    idb.extend_from_slice(&[9, 0, 1, 0, 6, 0, 0, 0, 0, 0, 0, 0]); // if_tsresol = 6, opt_endofopt
    block(&mut out, 1, &idb);
    for (ts, data) in records {
        let mut epb = Vec::new();
        epb.extend_from_slice(&0u32.to_le_bytes());
        epb.extend_from_slice(&((ts >> 32) as u32).to_le_bytes());
        epb.extend_from_slice(&(*ts as u32).to_le_bytes());
        epb.extend_from_slice(&(data.len() as u32).to_le_bytes());
        epb.extend_from_slice(&(data.len() as u32).to_le_bytes());
        epb.extend_from_slice(data);
        block(&mut out, 6, &epb);
    }
    out
}

/// Writes a classic big-endian (pcap-file's default) µs pcap (Ethernet) through pcap-file.
pub fn write_pcap(records: &[(u64, Vec<u8>)]) -> Vec<u8> {
    use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
    use std::time::Duration;
    let header = PcapHeader { datalink: pcap_file::DataLink::ETHERNET, ..PcapHeader::default() };
    let mut out = Vec::new();
    if let Ok(mut w) = PcapWriter::with_header(&mut out, header) {
        for (ts, data) in records {
            let p = PcapPacket::new(Duration::from_micros(*ts), data.len() as u32, data);
            if w.write_packet(&p).is_err() {
                break;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recs() -> Vec<(u64, Vec<u8>)> {
        vec![(1_764_138_625_123_456, vec![1, 2, 3]), (1_764_138_626_000_001, vec![9; 61])]
    }

    fn read_all(bytes: Vec<u8>) -> Result<Vec<(u64, Vec<u8>)>, PcapError> {
        let mut r = Reader::new(bytes)?;
        let mut out = Vec::new();
        while let Some(rec) = r.next_record()? {
            out.push((rec.ts_us, rec.data.to_vec()));
        }
        Ok(out)
    }

    #[test]
    fn both_formats_round_trip() {
        assert_eq!(read_all(write_pcap(&recs())).unwrap(), recs());
        assert_eq!(read_all(write_pcapng(&recs())).unwrap(), recs());
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        for bytes in [write_pcap(&recs()), write_pcapng(&recs())] {
            for n in 0..bytes.len() {
                let _ = read_all(bytes[..n].to_vec());
            }
            let mut huge = bytes.clone();
            let len = huge.len();
            huge[len - 8] = 0xff;
            let _ = read_all(huge);
        }
        assert!(matches!(read_all(write_pcap(&recs())[..30].to_vec()), Err(PcapError::Truncated { record: 1 })));
        assert!(matches!(read_all(vec![0; 40]), Err(PcapError::BadMagic(0))));
    }

    // Offsets into write_pcap's output: the 24-byte file header (link type at 20), then record
    // 1's header (seconds at 24, fraction at 28, caplen at 32), all big-endian.
    fn classic() -> Vec<u8> {
        write_pcap(&recs())
    }

    // Offsets into write_pcapng's output: SHB (28 bytes), IDB at 28 (link type at 36, the
    // if_tsresol value at 48), EPB at 60 (timestamp high word at 72, low word at 76).
    fn ng() -> Vec<u8> {
        write_pcapng(&recs())
    }

    fn put32(b: &mut [u8], at: usize, v: u32) {
        b[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }

    fn put32be(b: &mut [u8], at: usize, v: u32) {
        b[at..at + 4].copy_from_slice(&v.to_be_bytes());
    }

    #[test]
    fn a_record_claiming_4_gib_is_an_error_before_any_allocation() {
        let mut b = classic();
        put32be(&mut b, 32, u32::MAX);
        assert_eq!(read_all(b), Err(PcapError::RecordTooLarge { record: 1, len: u64::from(u32::MAX) }));
        let mut n = ng();
        put32(&mut n, 60 + 8 + 12, u32::MAX); // EPB captured length
        assert_eq!(read_all(n), Err(PcapError::RecordTooLarge { record: 1, len: u64::from(u32::MAX) }));
    }

    #[test]
    fn a_link_type_other_than_ethernet_is_refused() {
        let mut b = classic();
        put32be(&mut b, 20, 113); // LINKTYPE_LINUX_SLL
        assert_eq!(read_all(b).unwrap_err(), PcapError::LinkType(113));
        let mut fcs = classic();
        put32be(&mut fcs, 20, 0x1000_0001); // Ethernet with the FCS-length bits set is Ethernet
        assert_eq!(read_all(fcs).unwrap(), recs());
        let mut n = ng();
        n[36..38].copy_from_slice(&101u16.to_le_bytes()); // LINKTYPE_RAW
        assert_eq!(read_all(n).unwrap_err(), PcapError::LinkType(101));
        assert_eq!(PcapError::LinkType(101).to_string(), "link type 101 is not Ethernet (1)");
    }

    #[test]
    fn impossible_timestamps_are_errors_and_the_last_possible_one_reads() {
        let mut last = classic();
        put32be(&mut last, 24, u32::MAX);
        put32be(&mut last, 28, 999_999);
        assert_eq!(read_all(last).unwrap()[0].0, MAX_TS_US);
        let mut frac = classic();
        put32be(&mut frac, 28, 1_000_000);
        assert_eq!(read_all(frac), Err(PcapError::Timestamp { record: 1 }));
        let mut nanos = classic();
        nanos[..4].copy_from_slice(&0xa1b2_3c4du32.to_be_bytes());
        put32be(&mut nanos, 28, 999_999_999);
        assert_eq!(read_all(nanos.clone()).unwrap()[0].0, 1_764_138_625_999_999);
        put32be(&mut nanos, 28, 1_000_000_000);
        assert_eq!(read_all(nanos), Err(PcapError::Timestamp { record: 1 }));
        // pcapng: u64::MAX microseconds, then u64::MAX seconds (if_tsresol 0: units of 1 s),
        // whose microsecond count does not fit 64 bits.
        let mut n = ng();
        put32(&mut n, 72, u32::MAX);
        put32(&mut n, 76, u32::MAX);
        assert_eq!(read_all(n.clone()), Err(PcapError::Timestamp { record: 1 }));
        n[48] = 0;
        assert_eq!(read_all(n.clone()), Err(PcapError::Timestamp { record: 1 }));
        // MAX_TS_US itself, in µs units, is the last one that reads.
        n[48] = 6;
        let at = |mut n: Vec<u8>, ts: u64| {
            put32(&mut n, 72, (ts >> 32) as u32);
            put32(&mut n, 76, ts as u32);
            read_all(n)
        };
        assert_eq!(at(n.clone(), MAX_TS_US).unwrap()[0].0, MAX_TS_US);
        assert_eq!(at(n, MAX_TS_US + 1), Err(PcapError::Timestamp { record: 1 }));
    }

    fn open(path: &std::path::Path) -> Result<Vec<(u64, Vec<u8>)>, PcapError> {
        let mut r = Reader::open(path).expect("no I/O error")?;
        let mut out = Vec::new();
        while let Some(rec) = r.next_record()? {
            out.push((rec.ts_us, rec.data.to_vec()));
        }
        Ok(out)
    }

    fn tmp(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("ipsyncd-pcap-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn open_reads_only_bounded_regular_files() {
        // Endless or blocking inputs are refused before they are opened, so this test cannot
        // hang: a device that never ends, a FIFO with no writer (opening it would block), a
        // directory.
        assert_eq!(open("/dev/zero".as_ref()), Err(PcapError::NotAFile));
        let d = tmp("open");
        let fifo = d.join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        assert_eq!(open(&fifo), Err(PcapError::NotAFile));
        assert_eq!(open(&d), Err(PcapError::NotAFile));
        // Larger than MAX_FILE (sparse, so it costs no disk): refused from its size alone.
        let huge = d.join("huge.pcap");
        std::fs::File::create(&huge).unwrap().set_len(MAX_FILE + 1).unwrap();
        assert_eq!(open(&huge), Err(PcapError::FileTooLarge { len: MAX_FILE + 1 }));
        // A bad header is reported from the first bytes alone.
        let junk = d.join("junk.pcap");
        std::fs::write(&junk, [0u8; 4096]).unwrap();
        assert_eq!(open(&junk), Err(PcapError::BadMagic(0)));
        let good = d.join("good.pcap");
        std::fs::write(&good, classic()).unwrap();
        assert_eq!(open(&good).unwrap(), recs());
        let good = d.join("good.pcapng");
        std::fs::write(&good, ng()).unwrap();
        assert_eq!(open(&good).unwrap(), recs());
        assert!(Reader::open(&d.join("missing.pcap")).is_err());
        let _ = std::fs::remove_dir_all(&d);
    }
}
