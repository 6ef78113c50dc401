//! `cairn-client`: the sync engine shared by the CLI and the desktop app.
//!
//! Not built yet: issue "QUIC sync protocol (cairn-protocol) and the client sync engine" fills
//! this crate. It deliberately exports nothing until then, so nothing can depend on a stub.
