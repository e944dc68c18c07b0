//! The sans-IO decision engine: `(now, input) → decisions + actions`, deterministic.
//!
//! Contract (quinn-proto style, DESIGN §3): the shell feeds `handle_frame`, `handle_timeout` and
//! `handle_result`, drains `poll_decision` and `poll_action`, and sleeps until `poll_timeout`.
//! The engine never reads a clock, a socket or a random source: `now` (monotonic) comes in as an
//! argument, wall time through `set_wall_clock`, and randomness from a seeded [`Rng`]. The same
//! inputs therefore give the same decision log, which is what makes replay and goldens possible.
//! The engine imports `wire` and nothing of `config` or `shell`.
//!
//! Where things are:
//! - [`vocab`]: time, addresses, the RNG, the engine's configuration, actions and their results;
//! - [`decision`]: inputs, verdicts, reasons, the decision record and its counters;
//! - [`limits`]: rate limits, ARP evidence and alarm coalescing, all bounded;
//! - [`core`]: the [`Engine`] and its API; [`sync`], [`channel`], [`dhcp_client`] and [`acd`]
//!   hold its rules; [`lease`] and [`pending`] what it waits on; [`input`] turns a frame into an
//!   [`Inbound`]; [`state`] is what persists, and [`persist`] what a failed write leads to.

pub mod acd;
pub mod channel;
pub mod core;
pub mod decision;
pub mod dhcp_client;
pub mod input;
pub mod lease;
pub mod limits;
pub mod pending;
pub mod persist;
pub mod state;
pub mod sync;
pub mod vocab;

pub use self::core::Engine;
pub use decision::{reason, Counters, Decision, Input, Verdict};
pub use input::{DhcpMsg, Inbound, InboundKind, IpsyncMsg};
pub use state::State;
pub use vocab::{
    AcdMode, Action, ActionResult, ChannelFailure, Cidr, EngineConfig, HookEnv, HookReason, Instant, Mode, Rng,
    ServerName, Service, TxKind, Wall,
};
