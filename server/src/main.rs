//! `cairn-server`: not built yet.
//!
//! The issue "cairn-server: REST + WebSocket API, auth, metadata on SQLite and PostgreSQL" builds it. Until then the binary says so and exits with status 1, so no
//! script can mistake it for a working program.

// A binary may talk to its user on stderr.
#![allow(clippy::print_stderr)]

fn main() -> std::process::ExitCode {
    eprintln!(
        "cairn-server: not built yet; see the issue \"cairn-server: REST + WebSocket API, auth, metadata on SQLite and PostgreSQL\""
    );
    std::process::ExitCode::FAILURE
}
