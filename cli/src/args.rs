//! The command line, as clap types. Command names and flags are the design's contract; this
//! module only describes them and does no work.

use clap::{Args, Parser, Subcommand};

use crate::sync::SyncStartArgs;

/// Keep folders in sync with a Cairn server.
#[derive(Debug, Parser)]
#[command(name = "cairn", version, propagate_version = true)]
pub(crate) struct Cli {
    /// Print machine-readable JSON on stdout, errors included
    #[arg(long, global = true)]
    pub(crate) json: bool,

    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Register, log in and out, show who is logged in
    #[command(subcommand)]
    User(UserCommand),
    /// Read and change settings kept in the config directory ($CAIRN_CONFIG_DIR)
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Keep a local folder in sync with the server
    #[command(subcommand)]
    Sync(SyncCommand),
}

#[derive(Debug, Subcommand)]
pub(crate) enum UserCommand {
    /// Create an account on a server, then log in to it
    Register(RegisterArgs),
    /// Log in and keep the session in the config directory
    Login(LoginArgs),
    /// End the session at the server and forget it here
    Logout,
    /// Show the logged-in user, server and device
    Whoami,
}

#[derive(Debug, Args)]
pub(crate) struct RegisterArgs {
    /// Server base URL, e.g. http://127.0.0.1:8000
    #[arg(long, value_name = "URL")]
    pub(crate) server: String,
    /// The new account's name (3 to 64 letters, digits, '.', '_', '-')
    #[arg(long, value_name = "U")]
    pub(crate) username: String,
    /// Contact address
    #[arg(long, value_name = "E")]
    pub(crate) email: String,
    #[command(flatten)]
    pub(crate) password: PasswordArgs,
}

#[derive(Debug, Args)]
pub(crate) struct LoginArgs {
    /// Server base URL, e.g. http://127.0.0.1:8000 [default: the one saved at the last login]
    #[arg(long, value_name = "URL")]
    pub(crate) server: Option<String>,
    /// Account name [default: the one saved at the last login]
    #[arg(long, value_name = "U")]
    pub(crate) username: Option<String>,
    #[command(flatten)]
    pub(crate) password: PasswordArgs,
}

/// Where the password comes from: `--password-stdin`, else `$CAIRN_PASSWORD`, else a prompt on
/// the terminal.
#[derive(Debug, Args)]
pub(crate) struct PasswordArgs {
    /// Read the password from the first line of stdin (else $CAIRN_PASSWORD, else a prompt)
    #[arg(long)]
    pub(crate) password_stdin: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum ConfigCommand {
    /// Print a setting: server, device, username, or a free-form key such as conflict_copies
    Get {
        /// The setting's name
        key: String,
    },
    /// Change a setting: server, device, or a free-form key such as conflict_copies
    Set {
        /// The setting's name
        key: String,
        /// Its new value
        value: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum SyncCommand {
    /// Sync a folder: in the foreground until `cairn sync stop` or a signal, or one pass with --once
    Start(SyncStartArgs),
    /// Show what the running sync is doing
    Status,
    /// Stop the running sync
    Stop,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }
}
