//! Bytes only. Checked, zero-copy views over wire formats and their owned `Repr`s.
//!
//! Contract: nothing in here performs I/O, reads a clock or allocates on the parse path. Every
//! view is built with `new_checked`, which validates every length that a field accessor later
//! relies on, so accessors never index out of bounds. Any byte sequence yields either a view or a
//! typed error that names the layer and field (see [`Malformed::reason`]).

pub mod arp;
pub mod auth;
pub mod bytes;
pub mod dhcpv4;
pub mod frame;
pub mod hex;
pub mod ipsync;
pub mod sig;

pub use bytes::{checksum_accumulate, checksum_fold, BufferTooSmall, Field, Mac};
pub use frame::Malformed;
