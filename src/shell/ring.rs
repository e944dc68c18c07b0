//! The capture's receive ring: PACKET_RX_RING with TPACKET_V3, so the kernel hands frames over
//! a block at a time instead of one recvmsg each.
//!
//! Contract. The kernel fills fixed-size blocks in a shared mapping and passes each to user
//! space by setting TP_STATUS_USER in the block's header, either when the block is full or when
//! it has held a frame for [`RingConfig::retire_ms`]. A frame therefore waits at most that long
//! in the kernel, and an idle ring wakes nobody: an empty block is never retired. The reader
//! walks a retired block's `tpacket3_hdr` chain with [`Walker`], which is safe code over a byte
//! slice: every offset and length the kernel wrote is checked against the block before use, and
//! one that does not fit ends the walk with a typed [`BlockError`] (the caller counts it and
//! skips the rest of the block). Then the block goes back to the kernel with TP_STATUS_KERNEL.
//!
//! All of the capture's `unsafe` for the ring is in [`Ring`], and rests on these invariants:
//! 1. The mapping is `block_size * block_count` bytes, made once by [`Ring::new`] with exactly
//!    the sizes the kernel accepted for PACKET_RX_RING, and unmapped only in `Drop`. `Ring` is
//!    the only owner of the pointer; nothing else maps or unmaps it.
//! 2. Every block starts at `index * block_size` (page aligned: the kernel requires the block
//!    size to be a multiple of the page size), so the header's `block_status` word at offset 8
//!    is 4-byte aligned and inside the mapping for every `index < block_count`.
//! 3. `block_status` is shared with the kernel and only ever touched through an `AtomicU32`:
//!    loaded with Acquire (the kernel's writes to the block happen before it sets
//!    TP_STATUS_USER) and stored with Release (our reads of the block happen before the kernel
//!    may reuse it).
//! 4. A block's bytes are lent as `&[u8]` ([`Ring::block`]) only while its status is
//!    TP_STATUS_USER, and the kernel does not write a block it has passed to user space until it
//!    gets it back. The lend borrows the `Ring`, and [`Ring::release`] takes `&mut self`, so no
//!    slice of a block outlives its return to the kernel.
//! 5. The bytes may still hold any value (a buggy kernel, or a future layout): nothing read from
//!    them is trusted as an offset or length before [`Walker`] bounds-checked it.

use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

/// Sizes of the ring; see [`RingConfig::DEFAULT`] for the figures and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingConfig {
    pub block_size: u32,
    pub block_count: u32,
    /// TPACKET_V3 frames have variable size; this only satisfies the kernel's bookkeeping
    /// (`frame_nr * frame_size == block_nr * block_size`). The capture's own limit on a frame's
    /// length (the recv path's buffer) is applied by the reader.
    pub frame_size: u32,
    /// How long the kernel keeps a block that holds at least one frame before handing it over.
    pub retire_ms: u32,
}

impl RingConfig {
    /// 32 blocks of 16 KiB (512 KiB, pinned kernel memory that also shows in RSS), 1 ms timeout:
    /// - 1 ms is the shortest timeout the kernel takes: a frame arriving on a quiet link waits
    ///   0–1 ms (half on average) for its block to be retired; far under the 5 ms p99 of
    ///   announce → pin and the 1 s of a move under flood (DESIGN §12).
    /// - A 16 KiB block holds about 70 ANNOUNCE-sized frames (82 bytes of headers plus the frame,
    ///   16-byte aligned), so under a flood one wake-up carries dozens of frames, and at any rate
    ///   there are at most ~1000 wake-ups a second plus one per full block.
    /// - 32 blocks: a quiet link retires a block per frame, so the count is what bounds how long
    ///   the reader may be descheduled before the kernel drops (32 ms at one frame per ms); under
    ///   a flood 512 KiB is ~2300 such frames, more than the 1 MiB SO_RCVBUF of the recv path
    ///   holds (the kernel charges it ~700 bytes of skb per small frame).
    pub const DEFAULT: RingConfig =
        RingConfig { block_size: 16 << 10, block_count: 32, frame_size: 2048, retire_ms: 1 };

    fn map_len(&self) -> usize {
        self.block_size as usize * self.block_count as usize
    }
}

/// Offsets in `struct tpacket_block_desc` (linux/if_packet.h), host byte order.
mod block {
    pub const STATUS: usize = 8;
    pub const NUM_PKTS: usize = 12;
    pub const FIRST: usize = 16;
    pub const LEN: usize = 20;
    /// The descriptor with `tpacket_hdr_v1`, as the kernel lays it out.
    pub const HEADER: usize = 48;
}

/// Offsets in `struct tpacket3_hdr`, followed (at its 16-byte aligned size) by a `sockaddr_ll`.
mod pkt {
    pub const NEXT: usize = 0;
    pub const SNAPLEN: usize = 12;
    pub const LEN: usize = 16;
    pub const STATUS: usize = 20;
    pub const MAC: usize = 24;
    /// TPACKET_ALIGN(sizeof(struct tpacket3_hdr)): where the sockaddr_ll starts.
    pub const SLL: usize = 48;
    /// `sll_pkttype` inside the sockaddr_ll.
    pub const SLL_PKTTYPE: usize = SLL + 10;
    /// tpacket3_hdr plus sockaddr_ll (TPACKET3_HDRLEN): the least a frame's data starts after.
    pub const HEADERS: usize = SLL + 20;
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    let end = at.checked_add(4)?;
    Some(u32::from_ne_bytes(b.get(at..end)?.try_into().ok()?))
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    let end = at.checked_add(2)?;
    Some(u16::from_ne_bytes(b.get(at..end)?.try_into().ok()?))
}

/// A block whose header or frame chain does not fit the block. The walk stops there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockError {
    /// The block is shorter than its own descriptor.
    Short { len: usize },
    /// `blk_len` (bytes in use) is below the descriptor or beyond the block.
    Length { blk_len: u32, block: usize },
    /// `offset_to_first_pkt` is inside the descriptor or beyond `blk_len`.
    FirstOffset { offset: u32, blk_len: u32 },
    /// Frame `index`'s headers run past `blk_len`.
    Header { index: u32, offset: usize },
    /// Frame `index`'s data (`tp_mac`, `tp_snaplen`) overlaps its headers or runs past `blk_len`,
    /// or it claims more captured bytes than it had on the wire.
    Data { index: u32, mac: u16, snaplen: u32, len: u32 },
    /// `tp_next_offset` of frame `index` does not move past its data.
    Next { index: u32, next: u32 },
}

impl fmt::Display for BlockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BlockError::Short { len } => write!(f, "ring block of {len} bytes is shorter than its header"),
            BlockError::Length { blk_len, block } => {
                write!(f, "ring block claims {blk_len} bytes in use of {block}")
            }
            BlockError::FirstOffset { offset, blk_len } => {
                write!(f, "ring block's first frame at {offset} is outside 48..{blk_len}")
            }
            BlockError::Header { index, offset } => {
                write!(f, "ring frame {index}: headers at {offset} overrun the block")
            }
            BlockError::Data { index, mac, snaplen, len } => {
                write!(f, "ring frame {index}: data at +{mac}, {snaplen} of {len} bytes, does not fit the block")
            }
            BlockError::Next { index, next } => write!(f, "ring frame {index}: next offset {next} does not advance"),
        }
    }
}

impl std::error::Error for BlockError {}

/// One frame of a block, as positions in that block (so the caller can lend the bytes after
/// it moved its own cursor).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RingFrame {
    /// Where the captured bytes are in the block; never past its `blk_len`.
    pub data: std::ops::Range<usize>,
    /// `tp_len`: the frame's length on the wire. Greater than `data.len()` when truncated.
    pub wire_len: u32,
    /// `tp_status`: TP_STATUS_CSUMNOTREADY, TP_STATUS_CSUM_VALID and friends, as in PACKET_AUXDATA.
    pub status: u32,
    /// `sll_pkttype`: PACKET_HOST, PACKET_OUTGOING, …
    pub pkttype: u8,
}

/// Walks a retired block's frames. Pure: it reads only the slice it is given.
#[derive(Debug, Clone)]
pub struct Walker {
    /// `blk_len`, checked to lie inside the block.
    limit: usize,
    /// Offset of the next frame's tpacket3_hdr.
    next: usize,
    index: u32,
    count: u32,
    done: bool,
}

impl Walker {
    /// Checks the block descriptor. `block` is the whole block as mapped.
    pub fn new(block: &[u8]) -> Result<Walker, BlockError> {
        let short = BlockError::Short { len: block.len() };
        if block.len() < block::HEADER {
            return Err(short);
        }
        let count = u32_at(block, block::NUM_PKTS).ok_or(short)?;
        let first = u32_at(block, block::FIRST).ok_or(short)?;
        let blk_len = u32_at(block, block::LEN).ok_or(short)?;
        let limit = blk_len as usize;
        if limit < block::HEADER || limit > block.len() {
            return Err(BlockError::Length { blk_len, block: block.len() });
        }
        if count > 0 && ((first as usize) < block::HEADER || first as usize >= limit) {
            return Err(BlockError::FirstOffset { offset: first, blk_len });
        }
        Ok(Walker { limit, next: first as usize, index: 0, count, done: count == 0 })
    }

    /// Frames the descriptor says the block holds.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// The next frame, `None` after the last, or the error that ends the walk (once).
    pub fn next_frame(&mut self, block: &[u8]) -> Option<Result<RingFrame, BlockError>> {
        if self.done {
            return None;
        }
        let r = self.step(block);
        if r.is_err() || self.index >= self.count {
            self.done = true;
        }
        Some(r)
    }

    fn step(&mut self, block: &[u8]) -> Result<RingFrame, BlockError> {
        let index = self.index;
        let off = self.next;
        // Bound every read by `limit` (≤ block.len(), checked in `new`), not by the slice.
        let headers_end = off.checked_add(pkt::HEADERS).filter(|&e| e <= self.limit);
        let hdr = match headers_end {
            Some(end) => block.get(off..end).ok_or(BlockError::Header { index, offset: off })?,
            None => return Err(BlockError::Header { index, offset: off }),
        };
        let bad_header = BlockError::Header { index, offset: off };
        let next = u32_at(hdr, pkt::NEXT).ok_or(bad_header)?;
        let snaplen = u32_at(hdr, pkt::SNAPLEN).ok_or(bad_header)?;
        let wire_len = u32_at(hdr, pkt::LEN).ok_or(bad_header)?;
        let status = u32_at(hdr, pkt::STATUS).ok_or(bad_header)?;
        let mac = u16_at(hdr, pkt::MAC).ok_or(bad_header)?;
        let pkttype = *hdr.get(pkt::SLL_PKTTYPE).ok_or(bad_header)?;
        let bad_data = BlockError::Data { index, mac, snaplen, len: wire_len };
        if (mac as usize) < pkt::HEADERS || snaplen > wire_len {
            return Err(bad_data);
        }
        let start = off.checked_add(mac as usize).ok_or(bad_data)?;
        let end = start.checked_add(snaplen as usize).filter(|&e| e <= self.limit).ok_or(bad_data)?;
        self.index += 1;
        if self.index < self.count {
            // The next header must start after this frame's data: that both keeps frames apart
            // and makes every step advance, so a walk ends within blk_len / 68 steps.
            match off.checked_add(next as usize) {
                Some(n) if next != 0 && n >= end => self.next = n,
                _ => return Err(BlockError::Next { index, next }),
            }
        }
        Ok(RingFrame { data: start..end, wire_len, status, pkttype })
    }
}

/// The mapped ring (see the module contract for the invariants every `unsafe` here rests on).
pub struct Ring {
    base: NonNull<u8>,
    cfg: RingConfig,
    /// The block to look at next; blocks are retired in order.
    next: usize,
}

// SAFETY: the mapping is owned by this value alone (invariant 1) and only reached through it;
// the kernel side is synchronised through block_status (invariant 3), not through thread
// identity, so moving the owner to another thread is sound.
unsafe impl Send for Ring {}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn setsockopt<T>(fd: BorrowedFd<'_>, name: libc::c_int, v: &T) -> io::Result<()> {
    // SAFETY: `v` points to a live T for the call, and its size is passed.
    cvt(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            name,
            (v as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    })
    .map(|_| ())
}

impl Ring {
    /// Switches the AF_PACKET socket `fd` to TPACKET_V3, gives it a receive ring of `cfg`'s
    /// sizes and maps that ring. On error nothing stays mapped; the socket may be left at
    /// TPACKET_V3 without a ring, which changes nothing for recvmsg.
    pub fn new(fd: BorrowedFd<'_>, cfg: RingConfig) -> io::Result<Ring> {
        let page = 4096u32;
        let valid = cfg.block_size >= page
            && cfg.block_size % page == 0
            && cfg.block_count > 0
            && cfg.frame_size >= 64
            && cfg.frame_size % 16 == 0
            && cfg.block_size % cfg.frame_size == 0
            && cfg.block_size.checked_mul(cfg.block_count).is_some();
        if !valid {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("ring sizes {cfg:?}")));
        }
        setsockopt(fd, libc::PACKET_VERSION, &(libc::tpacket_versions::TPACKET_V3 as libc::c_int))?;
        let req = libc::tpacket_req3 {
            tp_block_size: cfg.block_size,
            tp_block_nr: cfg.block_count,
            tp_frame_size: cfg.frame_size,
            tp_frame_nr: cfg.block_size / cfg.frame_size * cfg.block_count,
            tp_retire_blk_tov: cfg.retire_ms,
            tp_sizeof_priv: 0,
            tp_feature_req_word: 0,
        };
        setsockopt(fd, libc::PACKET_RX_RING, &req)?;
        // SAFETY: a fresh shared mapping of the ring the kernel just allocated for this socket,
        // of exactly its size; the result is checked before use.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                cfg.map_len(),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = NonNull::new(p.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(Ring { base, cfg, next: 0 })
    }

    pub fn config(&self) -> RingConfig {
        self.cfg
    }

    fn status_word(&self, index: usize) -> &AtomicU32 {
        debug_assert!(index < self.cfg.block_count as usize);
        // SAFETY: invariants 1 and 2: `index < block_count` (callers pass `self.next`, kept in
        // range), so the word is inside the mapping and 4-byte aligned, and it lives as long as
        // `self`; invariant 3: it is only ever accessed atomically.
        unsafe {
            AtomicU32::from_ptr(self.base.as_ptr().add(index * self.cfg.block_size as usize + block::STATUS).cast())
        }
    }

    /// The next block, if the kernel has handed it to user space: its index and its status
    /// word (TP_STATUS_USER, plus TP_STATUS_LOSING when frames were dropped since the last
    /// PACKET_STATISTICS read, and TP_STATUS_BLK_TMO when the timeout retired it).
    pub fn ready(&self) -> Option<(usize, u32)> {
        let s = self.status_word(self.next).load(Ordering::Acquire);
        (s & libc::TP_STATUS_USER != 0).then_some((self.next, s))
    }

    /// The bytes of block `index`, which [`Ring::ready`] returned and which has not been
    /// released since. Any other index gives an empty slice.
    pub fn block(&self, index: usize) -> &[u8] {
        if index != self.next || self.ready().is_none() {
            return &[];
        }
        // SAFETY: invariant 4: block `index` is user-owned (just checked with Acquire) and stays
        // so until `release`, which needs `&mut self` and so cannot run while this borrow lives;
        // invariants 1 and 2 put `[index * block_size, +block_size)` inside the mapping.
        unsafe {
            std::slice::from_raw_parts(
                self.base.as_ptr().add(index * self.cfg.block_size as usize),
                self.cfg.block_size as usize,
            )
        }
    }

    /// Gives the current block back to the kernel and moves to the next one.
    pub fn release(&mut self) {
        if self.ready().is_none() {
            return;
        }
        self.status_word(self.next).store(libc::TP_STATUS_KERNEL, Ordering::Release);
        self.next = (self.next + 1) % self.cfg.block_count as usize;
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: invariant 1: this is the mapping `new` made, of this length, unmapped once;
        // no block slice outlives `self`.
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), self.cfg.map_len());
        }
    }
}

/// PACKET_STATISTICS: frames the kernel dropped since the last call (the call resets them).
pub fn take_drops(fd: BorrowedFd<'_>) -> io::Result<u32> {
    let mut st = libc::tpacket_stats_v3 { tp_packets: 0, tp_drops: 0, tp_freeze_q_cnt: 0 };
    let mut len = std::mem::size_of::<libc::tpacket_stats_v3>() as libc::socklen_t;
    // SAFETY: `st` and `len` are live for the call and `len` is `st`'s size.
    cvt(unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_STATISTICS,
            (&mut st as *mut libc::tpacket_stats_v3).cast(),
            &mut len,
        )
    })?;
    Ok(st.tp_drops)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BLOCK: usize = 4096;

    /// A block as the kernel writes it: descriptor, then each frame at `TPACKET_ALIGN`ed offsets
    /// with tp_mac = 82 (netoff 96 − 14, the kernel's value for Ethernet), next offsets chained
    /// and 0 in the last.
    fn block_with(frames: &[(&[u8], u8)]) -> Vec<u8> {
        let mut b = vec![0u8; BLOCK];
        let mut off = block::HEADER;
        b[block::FIRST..block::FIRST + 4].copy_from_slice(&(off as u32).to_ne_bytes());
        b[block::NUM_PKTS..block::NUM_PKTS + 4].copy_from_slice(&(frames.len() as u32).to_ne_bytes());
        for (i, (data, pkttype)) in frames.iter().enumerate() {
            let mac = 82usize;
            let total = (mac + data.len() + 15) & !15;
            let next = if i + 1 == frames.len() { 0 } else { total as u32 };
            b[off..off + 4].copy_from_slice(&next.to_ne_bytes());
            b[off + pkt::SNAPLEN..off + pkt::SNAPLEN + 4].copy_from_slice(&(data.len() as u32).to_ne_bytes());
            b[off + pkt::LEN..off + pkt::LEN + 4].copy_from_slice(&(data.len() as u32).to_ne_bytes());
            b[off + pkt::STATUS..off + pkt::STATUS + 4].copy_from_slice(&(libc::TP_STATUS_CSUMNOTREADY).to_ne_bytes());
            b[off + pkt::MAC..off + pkt::MAC + 2].copy_from_slice(&(mac as u16).to_ne_bytes());
            b[off + pkt::SLL_PKTTYPE] = *pkttype;
            b[off + mac..off + mac + data.len()].copy_from_slice(data);
            off += total;
        }
        b[block::LEN..block::LEN + 4].copy_from_slice(&(off as u32).to_ne_bytes());
        b[block::STATUS..block::STATUS + 4].copy_from_slice(&libc::TP_STATUS_USER.to_ne_bytes());
        b
    }

    fn put32(b: &mut [u8], at: usize, v: u32) {
        b[at..at + 4].copy_from_slice(&v.to_ne_bytes());
    }

    fn walk(b: &[u8]) -> Result<Vec<RingFrame>, BlockError> {
        let mut w = Walker::new(b)?;
        let mut out = Vec::new();
        while let Some(f) = w.next_frame(b) {
            out.push(f?);
        }
        Ok(out)
    }

    #[test]
    fn walks_a_well_formed_block() {
        let a = [0xaau8; 60];
        let c = [0xccu8; 342];
        let b = block_with(&[(&a, 0), (&c, libc::PACKET_OUTGOING)]);
        let got = walk(&b).expect("walk");
        assert_eq!(got.len(), 2);
        assert_eq!(&b[got[0].data.clone()], &a[..]);
        assert_eq!(&b[got[1].data.clone()], &c[..]);
        assert_eq!(got[1].pkttype, libc::PACKET_OUTGOING);
        assert_eq!(got[0].status, libc::TP_STATUS_CSUMNOTREADY);
        assert_eq!(got[0].wire_len, 60);
    }

    #[test]
    fn an_empty_block_has_no_frames() {
        let b = block_with(&[]);
        assert_eq!(walk(&b), Ok(vec![]));
    }

    #[test]
    fn bad_descriptors_are_typed_errors() {
        assert_eq!(walk(&[0u8; 20]).unwrap_err(), BlockError::Short { len: 20 });
        let good = block_with(&[(&[1u8; 60], 0)]);
        let mut b = good.clone();
        put32(&mut b, block::LEN, BLOCK as u32 + 1);
        assert!(matches!(walk(&b), Err(BlockError::Length { .. })));
        let mut b = good.clone();
        put32(&mut b, block::LEN, 10);
        assert!(matches!(walk(&b), Err(BlockError::Length { .. })));
        for first in [0u32, 47, u32::MAX, BLOCK as u32] {
            let mut b = good.clone();
            put32(&mut b, block::FIRST, first);
            assert!(matches!(walk(&b), Err(BlockError::FirstOffset { .. })), "first {first}");
        }
    }

    #[test]
    fn frames_that_leave_the_block_are_typed_errors() {
        let good = block_with(&[(&[1u8; 60], 0), (&[2u8; 60], 0)]);
        let off = block::HEADER;
        // Captured length past blk_len, or more than on the wire.
        for (snaplen, len) in [(u32::MAX, u32::MAX), (4000, 4000), (61, 60)] {
            let mut b = good.clone();
            put32(&mut b, off + pkt::SNAPLEN, snaplen);
            put32(&mut b, off + pkt::LEN, len);
            assert!(matches!(walk(&b), Err(BlockError::Data { index: 0, .. })), "{snaplen}/{len}");
        }
        // Data inside the headers, or at u16::MAX.
        for mac in [0u16, 67, u16::MAX] {
            let mut b = good.clone();
            b[off + pkt::MAC..off + pkt::MAC + 2].copy_from_slice(&mac.to_ne_bytes());
            assert!(matches!(walk(&b), Err(BlockError::Data { index: 0, .. })), "mac {mac}");
        }
        // A next offset of 0, one that points back into this frame, and one past the block.
        for next in [0u32, 1, 100] {
            let mut b = good.clone();
            put32(&mut b, off + pkt::NEXT, next);
            assert_eq!(walk(&b), Err(BlockError::Next { index: 0, next }), "next {next}");
        }
        let mut b = good.clone();
        put32(&mut b, off + pkt::NEXT, u32::MAX);
        assert!(matches!(walk(&b), Err(BlockError::Header { index: 1, .. }) | Err(BlockError::Next { .. })));
        // More frames claimed than the block holds: the walk stops at the first that overruns.
        let mut b = good.clone();
        put32(&mut b, block::NUM_PKTS, u32::MAX);
        let mut w = Walker::new(&b).expect("descriptor");
        assert!(matches!(w.next_frame(&b), Some(Ok(_))));
        assert!(matches!(w.next_frame(&b), Some(Err(BlockError::Next { index: 1, next: 0 }))));
        assert_eq!(w.next_frame(&b), None, "a walk ends at its first error");
    }

    #[test]
    fn no_byte_pattern_panics_or_reads_outside_the_block() {
        // Deterministic pseudo-random blocks and mutations of a good one: never a panic, and
        // every frame handed out lies inside blk_len.
        let good = block_with(&[(&[1u8; 60], 0), (&[2u8; 300], 4), (&[3u8; 90], 0)]);
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut rnd = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for round in 0..20_000 {
            let mut b = if round % 2 == 0 { good.clone() } else { vec![0u8; 256 + (rnd() % 4000) as usize] };
            let flips = 1 + rnd() % 8;
            for _ in 0..flips {
                let at = (rnd() % b.len() as u64) as usize;
                // Bias towards the header words, where the lengths live.
                let at = if rnd() % 2 == 0 { at % 200 } else { at };
                b[at] = rnd() as u8;
            }
            if let Ok(mut w) = Walker::new(&b) {
                let limit = u32_at(&b, block::LEN).unwrap_or(0) as usize;
                let mut n = 0;
                while let Some(f) = w.next_frame(&b) {
                    n += 1;
                    assert!(n <= b.len() / pkt::HEADERS + 1, "walk did not end");
                    if let Ok(f) = f {
                        assert!(f.data.start <= f.data.end && f.data.end <= limit && limit <= b.len());
                    }
                }
            }
        }
    }
}
