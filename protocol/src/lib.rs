//! `cairn-protocol`: the QUIC sync protocol's wire messages, codec and tree diff.
//!
//! Not built yet: issue "QUIC sync protocol (cairn-protocol) and the client sync engine" fills
//! this crate. It deliberately exports nothing until then, so nothing can depend on a stub.
