//! `cairn-protocol`: what client and server say to each other.
//!
//! - [`path`]: [`path::RelPath`], the only way a path enters the system (canonical, relative,
//!   checked once).
//! - [`api`]: the REST request and response bodies of the design's API contract.
//!
//! Not built yet: the QUIC wire messages, codec and tree diff (the sync protocol issue). This
//! crate does no IO.

#![warn(missing_docs)]

pub mod api;
pub mod limits;
pub mod path;
