//! Where frames come from. Live capture (AF_PACKET, issue 3) and replay (a pcap) both implement
//! [`FrameSource`] and yield the same [`Frame`], so everything downstream is shared.
//!
//! Contract: a source lends one frame at a time from its own buffer (no copy); the capture
//! thread decodes it before asking for the next. [`FrameSource::next_ready`] never blocks, so
//! the capture thread can hand on everything already at hand (a ring block's worth) at once.

use super::pcap::{PcapError, Reader};
use crate::engine::Instant;
use crate::wire::frame::Checksum;
use std::fmt;
use std::path::Path;

#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    /// 1-based position in the source.
    pub index: u64,
    pub ts: Instant,
    pub bytes: &'a [u8],
    /// What the source knows about the UDP checksum's state.
    pub csum: Checksum,
    /// Live sources know whether the frame was received or sent; a capture file does not.
    pub dir: crate::engine::input::Direction,
}

#[derive(Debug)]
pub enum SourceError {
    Io(std::io::Error),
    Pcap(PcapError),
}

impl fmt::Display for SourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SourceError::Io(e) => write!(f, "{e}"),
            SourceError::Pcap(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for SourceError {}

pub trait FrameSource: Send {
    /// The next frame, or `Ok(None)` when the source is exhausted (end of file, shutdown).
    fn next_frame(&mut self) -> Result<Option<Frame<'_>>, SourceError>;

    /// The next frame only if it is at hand without waiting; `Ok(None)` says nothing about the
    /// end (ask [`FrameSource::next_frame`]). The default has never anything at hand.
    fn next_ready(&mut self) -> Result<Option<Frame<'_>>, SourceError> {
        Ok(None)
    }
}

pub struct PcapSource {
    reader: Reader,
    index: u64,
}

impl PcapSource {
    /// A capture file, read whole through [`Reader::open`], which refuses anything but a
    /// regular file of bounded size (so `/dev/zero` or a FIFO fails at once, typed).
    pub fn open(path: &Path) -> Result<PcapSource, SourceError> {
        let reader = Reader::open(path).map_err(SourceError::Io)?.map_err(SourceError::Pcap)?;
        Ok(PcapSource { reader, index: 0 })
    }

    pub fn from_bytes(bytes: Vec<u8>) -> Result<PcapSource, SourceError> {
        Ok(PcapSource { reader: Reader::new(bytes).map_err(SourceError::Pcap)?, index: 0 })
    }
}

impl FrameSource for PcapSource {
    /// A file never makes the reader wait.
    fn next_ready(&mut self) -> Result<Option<Frame<'_>>, SourceError> {
        self.next_frame()
    }

    fn next_frame(&mut self) -> Result<Option<Frame<'_>>, SourceError> {
        match self.reader.next_record().map_err(SourceError::Pcap)? {
            None => Ok(None),
            Some(r) => {
                self.index += 1;
                // A capture has no PACKET_AUXDATA: infer partial checksums (see wire::frame).
                Ok(Some(Frame {
                    index: self.index,
                    ts: Instant::from_micros(r.ts_us),
                    bytes: r.data,
                    csum: Checksum::Infer,
                    dir: crate::engine::input::Direction::Unknown,
                }))
            }
        }
    }
}
