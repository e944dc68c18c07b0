//! Threads and the operating system; no policy. The shell feeds the engine and carries out what
//! it decided.
//!
//! Contract: live capture and replay run the same three threads (capture → worker → applier)
//! over bounded crossbeam channels. Only the [`source::FrameSource`], the clock and the
//! [`applier::Applier`] differ. The clock is read once per wakeup, here, never in the engine.

pub mod applier;
pub mod atomic_file;
pub mod capture;
pub mod channel;
pub mod clock;
pub mod daemon;
pub mod decision_log;
pub mod hooks;
pub mod journal;
pub mod log_lines;
pub mod logging;
pub mod netlink;
pub mod pcap;
pub mod pipeline;
pub mod preflight;
pub mod replay;
pub mod ring;
pub mod source;
pub mod state_file;
pub mod status;
pub mod worker;
