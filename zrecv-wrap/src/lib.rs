//! zrecv-wrap: reads a stream made by zsend-wrap (or any zstd or bare ZFS
//! send stream), decodes and verifies it in-process, and feeds `zfs recv`.
//!
//! Data path: stdin → (decompress) → (verify-decode) → meter → `zfs recv -s`.
//! No byte reaches `zfs recv` before the frame holding it was verified. After
//! a successful receive the received snapshot must exist with the guid the
//! stream announced; an interrupted receive prints its resume token and the
//! command that resumes it.

pub mod prune;
pub mod pull;
pub mod recv;
pub mod sniff;

pub use recv::{command, run, Args};
/// The OpenZFS resume-token codec (it lives in zsend-wrap, which checks
/// tokens before resuming a send).
pub use zsend_wrap::token;
