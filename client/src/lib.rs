//! `cairn-client`: the client side shared by the CLI and the desktop app.
//!
//! - [`config`]: the persistent client config (server, user, refresh token, device, QUIC pin,
//!   settings) and where per-folder sync state lives.
//! - [`rest`]: the REST client (register, login, refresh, logout, `/sync/info`) and
//!   [`rest::Session`], which keeps the rotating refresh token saved.
//! - [`files`]: authenticated REST calls: folders, commits (snapshots), file transfers.
//! - [`conflicts`]: the conflicts a folder recorded, until the user resolves them.
//! - [`ignores`]: `.cairnignore` and the built-in ignore patterns.
//! - [`plan`]: the sync planner, a pure three-way merge of the base, local and remote trees.
//!
//! - [`remote`]: the QUIC sync protocol client, with certificate pinning.
//! - [`push`]: the server's WebSocket, reduced to "this folder's head moved".
//! - [`daemon`]: the loop that keeps one folder in sync until stopped (CLI and desktop).
//! - [`control`]: a running daemon's control socket (status, pause, stop, event feed).
//! - [`engine`]: the sync engine (scan, pull, plan, push, apply) and its events.
//! - [`watch`]: debounced filesystem watching for the daemon.
//! - [`throttle`]: bandwidth limits for block transfers.
//! - [`state`]: the per-folder sync state (merge base, remote tree, scan cache).
//! - [`binding`]: what a state belongs to (server folder, directory), and a moved folder's
//!   state following it.
//! - [`db`]: where it is kept: `state.db` (SQLite), with the tree node cache.
//! - [`fetch`]: the pipelined block downloads of one pass.
//!
//! This crate never prints; its users decide what to show.

#![warn(missing_docs)]

pub mod binding;
pub mod config;
pub mod conflicts;
pub mod control;
pub mod daemon;
pub mod db;
pub mod engine;
pub mod fetch;
pub mod files;
pub mod ignores;
pub mod plan;
pub mod push;
pub mod remote;
pub mod rest;
pub mod state;
pub mod throttle;
pub mod time;
pub mod watch;
