//! `cairn-store`: the content-addressed core of Cairn.
//!
//! It cuts byte streams into content-defined blocks ([`chunk`]), names them by BLAKE3
//! ([`BlockId`]), keeps them in a [`BlockStore`] (a local sharded directory in [`fs`]), and
//! describes folders as Merkle trees of [`node`]s, with huge directories split into a prolly tree
//! of entry chunks ([`dir`]). [`tree`] builds such a tree from a directory on disk and [`fsck`]
//! checks one.
//!
//! This crate deliberately knows nothing about networks, SQL, HTTP, async runtimes or users: IO
//! sits behind the [`BlockStore`] trait (the filesystem adapter is [`fs::FsBlockStore`]); the
//! decisions (chunk boundaries, node encoding, directory chunk boundaries) are pure functions.

#![warn(missing_docs)]

pub mod chunk;
pub mod dir;
pub mod edit;
mod error;
pub mod fs;
pub mod fsck;
pub mod gc;
mod id;
pub mod ingest;
pub mod limits;
pub mod mem;
pub mod node;
pub mod read;
mod store;
pub mod tree;

pub use chunk::ChunkConfig;
pub use error::{Error, Result};
pub use id::{BlockId, IdParseError, NodeId};
pub use store::{BlockStore, NodeStore, Put};
