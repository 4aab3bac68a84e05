//! zpipe-core: the mechanics every zpipe tool shares.
//!
//! - [`exit`]: the exit-code policy of docs/EXIT-CODES.md and the typed
//!   [`exit::Failure`] errors that carry it.
//! - [`cli`]: the `main` helper every binary uses (argument errors, signals,
//!   one-line error reports).
//! - [`parse`]: sizes, rates and durations, with clap value parsers.
//! - [`pool`]: fixed-capacity, reusable blocks with a bounded count.
//! - [`pipeline`]: reader thread → stages → writer thread over bounded channels.
//! - [`par`]: an order-preserving parallel map used by hashing and compression.
//! - [`fdio`]: cancellable, poll-based reads and writes on raw descriptors.
//! - [`splice`]: the zero-copy pass-through with pipe sizing.
//! - [`lend`]: a sink that hands its blocks' pages to a pipe (vmsplice).
//! - [`cancel`]: the shared shutdown token and the child-process registry.
//! - [`fletcher4`]: the Fletcher-4 checksum of ZFS streams and resume tokens.
//! - [`nvlist`]: the packed (native) nvlist codec of ZFS resume tokens.
//! - [`child`]: child processes from argv vectors with captured stderr.
#![deny(missing_docs)]

pub mod cancel;
pub mod child;
pub mod cli;
pub mod exit;
pub mod fdio;
pub mod fletcher4;
pub mod lend;
pub mod nvlist;
pub mod par;
pub mod parse;
pub mod pipeline;
pub mod pool;
pub mod splice;

pub use cancel::Cancel;
pub use exit::{Exit, Failure};

/// Default size of one pooled block: 1 MiB, the unit every stage moves.
pub const DEFAULT_BLOCK_SIZE: usize = 1 << 20;
