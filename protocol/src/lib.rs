//! `cairn-protocol`: what client and server say to each other.
//!
//! - [`path`]: [`path::RelPath`], the only way a path enters the system (canonical, relative,
//!   checked once).
//! - [`api`]: the REST request and response bodies of the design's API contract.
//!
//! - [`wire`]: the QUIC sync protocol's messages and length-prefixed framing (ALPN `cairn/1`).
//! - [`diff`]: the tree diff between two Merkle trees, descending only where hashes differ.
//!
//! This crate does no IO beyond reading nodes through `cairn_store::NodeStore`.

#![warn(missing_docs)]

pub mod api;
pub mod diff;
pub mod limits;
pub mod path;
#[cfg(feature = "quic")]
pub mod stream;
pub mod wire;
