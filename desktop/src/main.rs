//! `cairn-desktop`: Cairn's GTK4 (libadwaita) desktop app.
//!
//! - [`model`]: the view models, plain structs fed by the backend (tested without a display).
//! - [`backend`]: a thread with a tokio runtime that logs in, runs or attaches to the folder's
//!   sync daemon, and answers the window's commands.
//! - [`ui`]: the window: setup, status, files, activity, conflicts, history and preferences.
//!
//! The config dir is the CLI's (`CAIRN_CONFIG_DIR` or the XDG config dir), so a login made with
//! `cairn user login` is the app's login too.

// A binary may talk to its user on stderr.
#![allow(clippy::print_stderr, clippy::print_stdout)]

mod backend;
mod model;
mod ui;

use std::process::ExitCode;

/// jemalloc for Rust's allocations, as in `cairn`: the sync daemon this app runs gives memory
/// back to the system between passes (glibc's arenas kept each pass's high-water mark).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const HELP: &str = "\
cairn-desktop: Cairn's desktop app — keeps a folder in sync with a Cairn server.

Usage: cairn-desktop [--background]

Options:
  --background  start without raising the window (used when starting at login)
  -h, --help    print this help
  -V, --version print the version

Environment:
  CAIRN_CONFIG_DIR  where the login and sync state live (default: the XDG config dir), shared
                    with the `cairn` command line
";

fn main() -> ExitCode {
    let mut background = false;
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "-h" | "--help" => {
                print!("{HELP}");
                return ExitCode::SUCCESS;
            }
            "-V" | "--version" => {
                println!("cairn-desktop {}", env!("CARGO_PKG_VERSION"));
                return ExitCode::SUCCESS;
            }
            "--background" => background = true,
            other => {
                eprintln!("cairn-desktop: unknown argument '{other}'; see `cairn-desktop --help`");
                return ExitCode::from(2);
            }
        }
    }
    let config_dir = match cairn_client::config::config_dir() {
        Ok(dir) => dir,
        Err(err) => {
            eprintln!("cairn-desktop: {err}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(err) = gtk::init() {
        eprintln!("cairn-desktop: cannot open a display ({err}); run it in a desktop session");
        return ExitCode::FAILURE;
    }
    ui::run(config_dir, background)
}
