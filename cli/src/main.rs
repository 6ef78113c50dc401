//! `cairn`: not built yet.
//!
//! The issue "The cairn CLI and headless sync daemon" builds it. Until then the binary says so and exits with status 1, so no
//! script can mistake it for a working program.

// A binary may talk to its user on stderr.
#![allow(clippy::print_stderr)]

fn main() -> std::process::ExitCode {
    eprintln!("cairn: not built yet; see the issue \"The cairn CLI and headless sync daemon\"");
    std::process::ExitCode::FAILURE
}
