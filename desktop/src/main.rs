//! `cairn-desktop`: not built yet.
//!
//! The issue "The GTK4 desktop app (cairn-desktop)" builds it. Until then the binary says so and exits with status 1, so no
//! script can mistake it for a working program.

// A binary may talk to its user on stderr.
#![allow(clippy::print_stderr)]

fn main() -> std::process::ExitCode {
    eprintln!(
        "cairn-desktop: not built yet; see the issue \"The GTK4 desktop app (cairn-desktop)\""
    );
    std::process::ExitCode::FAILURE
}
