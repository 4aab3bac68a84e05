//! The ZFS send stream side of zpipe-verify: the record layout
//! ([`format`](mod@format)), the cheap [`Follower`] that the framing encoder runs to
//! tell a complete stream from a cut one, and the strict [`Checker`] behind
//! `zpipe-verify --zfs`.

pub mod builder;
mod checker;
mod follower;
pub mod format;

pub use checker::{
    check_stream, looks_like_zfs, CheckOptions, Checker, CompoundHeader, SubstreamSummary, Summary,
    ZfsError, ZfsErrorKind, DEFAULT_MAX_BEGIN_PAYLOAD, MAX_LISTED_SUBSTREAMS,
};
pub use follower::{Follower, MAX_REMEMBERED_SUBSTREAMS};
pub use format::{ByteOrder, RecordType};
