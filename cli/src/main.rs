//! `cairn`: the command-line client.
//!
//! `main` parses the command line, resolves the config directory, runs one command and reports:
//! exit status 0 on success; on failure exactly one line `cairn: <reason>` on stderr (with
//! `--json`, also `{"error": {"code", "message"}}` on stdout) and status 1, 2 for a usage
//! error, or 3 when the command stopped for the user to decide (mass-delete guard, an
//! incomplete backup or restore, conflicts found by `sync start --once`). A closed stdout pipe is not a failure.
//!
//! `CAIRN_LOG` (a tracing filter such as `debug` or `cairn_client=debug`, as for the server)
//! turns on diagnostic logs on stderr; without it `cairn` prints only its own lines.

// A binary talks to its user on stdout and stderr; all of it goes through `output`.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod args;
mod config_cmd;
mod conflicts;
mod files;
mod output;
mod password;
mod progress;
mod snapshot;
mod sync;
mod user;

use std::path::Path;
use std::process::ExitCode;

use clap::Parser;

use crate::args::{Cli, Command, ConfigCommand, SyncCommand, UserCommand};
use crate::output::{Report, error_code, print_failure, print_report};

/// jemalloc, not glibc's malloc: a long-running `cairn sync start` gives memory back to the
/// system after each pass (glibc's per-thread arenas kept each pass's high-water mark).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    init_logs();
    // Parsing may fail before `--json` is known; look for it by hand so usage errors have the
    // JSON shape too.
    let json_requested = std::env::args_os().any(|arg| arg == "--json");
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => return usage_failure(&err, json_requested),
    };
    let json = cli.json;
    match run(cli) {
        Ok(Some(report)) => match print_report(&report, json) {
            Ok(()) => ExitCode::SUCCESS,
            // The reader went away (`cairn ... | head`); what it read was right.
            Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
            Err(err) => {
                print_failure("stdout", &format!("cannot write to stdout: {err}"), false);
                ExitCode::FAILURE
            }
        },
        Ok(None) => ExitCode::SUCCESS,
        Err(err) => {
            let code = error_code(&err);
            print_failure(code, &format!("{err:#}"), json);
            exit_status(code)
        }
    }
}

/// Diagnostic logs on stderr when `CAIRN_LOG` asks for them. A filter that does not parse is
/// reported and ignored: logs are an aid, not a reason to refuse the command.
fn init_logs() {
    let Some(spec) = std::env::var_os("CAIRN_LOG") else {
        return;
    };
    let spec = spec.to_string_lossy();
    match tracing_subscriber::EnvFilter::try_new(spec.as_ref()) {
        Ok(filter) => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        Err(err) => eprintln!("cairn: ignoring CAIRN_LOG='{spec}': {err}"),
    }
}

/// Exit status 3 for failures that wait for the user's decision, 1 for the others.
fn exit_status(code: &str) -> ExitCode {
    match code {
        "mass_delete" | "incomplete" | "conflicts_pending" => ExitCode::from(3),
        _ => ExitCode::FAILURE,
    }
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
}

/// Runs one command. `None` means the command printed its own output (sync).
fn run(cli: Cli) -> anyhow::Result<Option<Report>> {
    let json = cli.json;
    match cli.command {
        // Sync owns its runtime and output; it runs outside any runtime built here.
        Command::Sync(SyncCommand::Start(args)) => {
            sync::start(&args, json, cli.quiet).map(|()| None)
        }
        Command::Sync(SyncCommand::Status) => sync::status(json).map(|()| None),
        Command::Sync(SyncCommand::Stop) => sync::stop(json).map(|()| None),
        Command::Config(command) => {
            let dir = cairn_client::config::config_dir()?;
            match command {
                ConfigCommand::Get { key } => config_cmd::get(&dir, &key),
                ConfigCommand::Set { key, value } => config_cmd::set(&dir, &key, &value),
            }
            .map(Some)
        }
        Command::User(command) => {
            let dir = cairn_client::config::config_dir()?;
            run_user(command, &dir).map(Some)
        }
        Command::Completions { shell } => {
            use clap::CommandFactory;
            let mut command = Cli::command();
            clap_complete::generate(shell, &mut command, "cairn", &mut std::io::stdout());
            Ok(None)
        }
        Command::Files(command) => {
            let dir = cairn_client::config::config_dir()?;
            runtime()?
                .block_on(files::run(&command, &dir, cli.quiet, json))
                .map(Some)
        }
        Command::Backup(args) => {
            let dir = cairn_client::config::config_dir()?;
            let flags = (cli.quiet, cli.verbose, json);
            runtime()?
                .block_on(snapshot::backup(&args, &dir, flags))
                .map(Some)
        }
        Command::Snapshots(args) => {
            let dir = cairn_client::config::config_dir()?;
            runtime()?
                .block_on(snapshot::snapshots(&args, &dir))
                .map(Some)
        }
        Command::Restore(args) => {
            let dir = cairn_client::config::config_dir()?;
            let flags = (cli.quiet, cli.verbose, json);
            runtime()?
                .block_on(snapshot::restore(&args, &dir, flags))
                .map(Some)
        }
        Command::Conflicts(args) => {
            let dir = cairn_client::config::config_dir()?;
            conflicts::run(&args, &dir).map(Some)
        }
    }
}

fn run_user(command: UserCommand, dir: &Path) -> anyhow::Result<Report> {
    // Read here, in the binary, rather than as a clap `env` fallback of a `--password` flag: a
    // flag would invite passwords on command lines, where `ps` shows them.
    let password_env = std::env::var("CAIRN_PASSWORD").ok();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        match command {
            UserCommand::Register(args) => user::register(&args, dir, password_env).await,
            UserCommand::Login(args) => user::login(&args, dir, password_env).await,
            UserCommand::Logout => user::logout(dir).await,
            UserCommand::Whoami => user::whoami(dir),
        }
    })
}

/// A command line clap refused: one line (or help and version, which are not failures).
fn usage_failure(err: &clap::Error, json: bool) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        err.kind(),
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion
    ) {
        // Help goes to stdout; a closed pipe there is not worth reporting.
        let _ = err.print();
        return ExitCode::SUCCESS;
    }
    print_failure("usage", &usage_line(err), json);
    ExitCode::from(2)
}

/// clap's message up to its first blank line (before "Usage:" and tips), with a hint.
fn usage_line(err: &clap::Error) -> String {
    use clap::error::ErrorKind;
    if err.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        return "a subcommand is missing; see `cairn --help`".to_owned();
    }
    let rendered = err.render().to_string();
    let reason: Vec<&str> = rendered
        .lines()
        .map(str::trim)
        .take_while(|line| !line.is_empty() && !line.starts_with("Usage:"))
        .collect();
    let reason = reason.join(" ");
    let reason = reason.strip_prefix("error: ").unwrap_or(&reason);
    format!("{reason}; see `cairn --help`")
}
