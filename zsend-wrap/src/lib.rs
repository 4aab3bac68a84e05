//! zsend-wrap: runs `zfs send` and writes a verified, optionally compressed
//! and metered stream to stdout or, with `--to`, to `zrecv-wrap` on another
//! host over ssh.
//!
//! Data path, all in this process:
//! `zfs send` → meter → verify-encode → (compress) → (buffer) → stdout or ssh.
//! When `zfs send` fails the stream ends with an ABORT trailer carrying its
//! error text and we exit 4; when the downstream breaks we exit 3 and stop
//! the `zfs` child.

pub mod remote;
pub mod send;
pub mod serve;
pub mod token;
pub mod zfs;

pub use send::{command, run, Args};
