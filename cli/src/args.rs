//! The command line, as clap types. Command names and flags are the design's contract; this
//! module only describes them and does no work.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::sync::SyncStartArgs;

/// Exit statuses, shown under `cairn --help`.
const EXIT_CODES: &str = "\
Exit status:
  0  success
  1  error (one line on stderr says what failed and why)
  2  usage error (a flag or argument is wrong)
  3  stopped for you to decide: the mass-delete guard tripped, conflicts are pending,
     or a backup or restore had to skip files

Environment:
  CAIRN_CONFIG_DIR  config and state directory (default: $XDG_CONFIG_HOME/cairn)
  CAIRN_PASSWORD    password for `user register|login` (else --password-stdin or a prompt)";

/// Keep folders in sync with a Cairn server.
#[derive(Debug, Parser)]
#[command(name = "cairn", version, propagate_version = true, after_help = EXIT_CODES)]
pub(crate) struct Cli {
    /// Print machine-readable JSON on stdout, errors included
    #[arg(long, global = true)]
    pub(crate) json: bool,
    /// Print only errors (no progress, no per-file lines)
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub(crate) quiet: bool,
    /// Print more: every file as it is transferred
    #[arg(short, long, global = true)]
    pub(crate) verbose: bool,

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
    /// List, upload, download, delete and restore files of the `default` folder
    #[command(subcommand)]
    Files(FilesCommand),
    /// Show the conflicts sync recorded, or resolve one
    Conflicts(ConflictsArgs),
    /// Push DIR as a new snapshot of a server folder (one-way; nothing local changes)
    Backup(BackupArgs),
    /// List a folder's snapshots (its commits)
    Snapshots(SnapshotsArgs),
    /// Write a snapshot of a folder into DEST
    Restore(RestoreArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell)
    Completions {
        /// The shell
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum FilesCommand {
    /// List files, all or those at or under PATH
    Ls {
        /// A file or directory in the folder
        path: Option<String>,
    },
    /// Upload a local file as REMOTE (default: its file name)
    Add {
        /// The local file
        local: PathBuf,
        /// Its path in the folder
        remote: Option<String>,
    },
    /// Download REMOTE to LOCAL (default: its file name, in the current directory)
    #[command(disable_version_flag = true)]
    Get {
        /// The file's path in the folder
        remote: String,
        /// Where to write it (an existing directory: inside it)
        local: Option<PathBuf>,
        /// Replace LOCAL if it exists
        #[arg(long)]
        force: bool,
        /// Download this version instead of the current one
        #[arg(long, value_name = "N")]
        version: Option<u64>,
    },
    /// Delete REMOTE (its versions stay restorable)
    Rm {
        /// The file's path in the folder
        remote: String,
    },
    /// Show REMOTE's version history
    Versions {
        /// The file's path in the folder
        remote: String,
    },
    /// Make version N of REMOTE its current version again (a deleted file comes back)
    #[command(disable_version_flag = true)]
    Restore {
        /// The file's path in the folder
        remote: String,
        /// The version to bring back (see `cairn files versions`)
        #[arg(long, value_name = "N")]
        version: u64,
    },
}

#[derive(Debug, Args)]
pub(crate) struct ConflictsArgs {
    /// End the conflict at PATH (relative to its synced folder)
    #[arg(long, value_name = "PATH", requires = "keep")]
    pub(crate) resolve: Option<String>,
    /// Which content stays at PATH: `remote` (the winner now there) or `local` (the copy)
    #[arg(long, value_enum, requires = "resolve")]
    pub(crate) keep: Option<Keep>,
}

/// Which side of a conflict to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Keep {
    /// The content that won (it is at the path): the conflict copy is deleted
    Remote,
    /// Your content (in the conflict copy): it is moved back over the path
    Local,
    /// Both: the conflict copy stays as a file of its own
    Both,
}

#[derive(Debug, Args)]
pub(crate) struct BackupArgs {
    /// The directory to back up
    pub(crate) dir: PathBuf,
    /// The server folder to commit to, created if missing [default: backup-<hostname>]
    #[arg(long, value_name = "NAME")]
    pub(crate) remote: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct SnapshotsArgs {
    /// The server folder [default: backup-<hostname>]
    #[arg(long, value_name = "NAME")]
    pub(crate) remote: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct RestoreArgs {
    /// Where to write the snapshot (created if missing)
    pub(crate) dest: PathBuf,
    /// The server folder [default: backup-<hostname>]
    #[arg(long, value_name = "NAME")]
    pub(crate) remote: Option<String>,
    /// The snapshot (commit seq) to restore [default: the latest]
    #[arg(long, value_name = "SEQ")]
    pub(crate) at: Option<u64>,
    /// Write into a non-empty DEST (files the snapshot has are replaced; others stay)
    #[arg(long)]
    pub(crate) force: bool,
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
