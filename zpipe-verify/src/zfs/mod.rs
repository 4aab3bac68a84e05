//! The ZFS send stream side of zpipe-verify: the record layout
//! ([`format`]), the cheap [`Follower`] that the framing encoder runs to
//! tell a complete stream from a cut one, and the strict [`Checker`] behind
//! `zpipe-verify --zfs`.

mod follower;
pub mod format;

pub use follower::Follower;
