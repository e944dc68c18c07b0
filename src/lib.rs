//! ipsyncd keeps a Linux thin client pointed at its cloud server when the server's address moves.
//!
//! Layering (imports point one way): `wire` ← `engine` ← `shell` ← `main`; `server` uses `wire`
//! and `shell`. `wire` is bytes only, `engine` is sans-IO (time and randomness are passed in),
//! `shell` owns threads, sockets and the clock.
#![forbid(unsafe_op_in_unsafe_fn)]

pub mod cli;
pub mod config;
pub mod engine;
pub mod server;
pub mod shell;
pub mod wire;
