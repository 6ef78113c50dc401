//! What a command shows: a [`Report`] (text for people, JSON for `--json`), warnings, and the
//! one-line failure with its `{"error": {"code", "message"}}` twin.
//!
//! All printing of the binary happens here, so the rules (one line on stderr, JSON on stdout, a
//! closed stdout pipe is not an error) are kept in one place.

use std::io::{self, Write};

use cairn_client::config::ConfigError;
use cairn_client::rest::RestError;
use serde::Serialize;

/// A command's result, in both forms.
#[derive(Debug)]
pub(crate) struct Report {
    /// For people; empty prints nothing.
    pub(crate) human: String,
    /// For `--json`.
    pub(crate) json: serde_json::Value,
}

/// A failure the CLI itself detects, with its `--json` code.
#[derive(Debug)]
pub(crate) struct CliError {
    pub(crate) code: &'static str,
    pub(crate) message: String,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Serialize)]
struct ErrorDetail<'a> {
    code: &'a str,
    message: &'a str,
}

impl Report {
    /// A report from a `--json` output type and its human text.
    pub(crate) fn new(human: impl Into<String>, json: &impl Serialize) -> anyhow::Result<Report> {
        Ok(Report {
            human: human.into(),
            json: serde_json::to_value(json)?,
        })
    }
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CliError {}

/// A [`CliError`] as an `anyhow::Error`.
pub(crate) fn fail(code: &'static str, message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(CliError {
        code,
        message: message.into(),
    })
}

/// Prints a report on stdout.
///
/// # Errors
/// When stdout cannot be written (a closed pipe included; the caller decides what that means).
pub(crate) fn print_report(report: &Report, json: bool) -> io::Result<()> {
    let mut out = io::stdout().lock();
    if json {
        serde_json::to_writer(&mut out, &report.json)?;
        writeln!(out)?;
    } else if !report.human.is_empty() {
        writeln!(out, "{}", report.human)?;
    }
    out.flush()
}

/// Prints a warning on stderr: degraded, but the command goes on.
pub(crate) fn warn(message: &str) {
    eprintln!("cairn: warning: {}", one_line(message));
}

/// Prints a failure: one line on stderr and, with `--json`, the error body on stdout.
pub(crate) fn print_failure(code: &str, message: &str, json: bool) {
    let message = one_line(message);
    if json {
        let body = ErrorBody {
            error: ErrorDetail {
                code,
                message: &message,
            },
        };
        if let Ok(text) = serde_json::to_string(&body) {
            // A closed stdout cannot be reported anywhere better than the stderr line below.
            let _ = writeln!(io::stdout().lock(), "{text}");
        }
    }
    eprintln!("cairn: {message}");
}

/// The `--json` code of an error: the first code any error in the chain carries.
pub(crate) fn error_code(err: &anyhow::Error) -> &str {
    for cause in err.chain() {
        if let Some(cli) = cause.downcast_ref::<CliError>() {
            return cli.code;
        }
        if let Some(rest) = cause.downcast_ref::<RestError>() {
            return rest.code();
        }
        if cause.downcast_ref::<ConfigError>().is_some() {
            return "config";
        }
        if let Some(sync) = cause.downcast_ref::<cairn_client::engine::SyncError>() {
            return match sync {
                cairn_client::engine::SyncError::MassDelete { .. } => "mass_delete",
                cairn_client::engine::SyncError::Busy(_) => "busy",
                cairn_client::engine::SyncError::Corrupt(_) => "corrupt",
                cairn_client::engine::SyncError::Local(_) => "local",
                cairn_client::engine::SyncError::Remote(_) => "remote",
            };
        }
    }
    "error"
}

/// A byte count for people: `512 B`, `1.5 MiB`.
pub(crate) fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Collapses whitespace, newlines included, so a message is one line whatever its source.
pub(crate) fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_come_from_the_chain() {
        let err = fail("not_set", "'x' is not set");
        assert_eq!(error_code(&err), "not_set");
        let err = anyhow::Error::new(RestError::WrongCredentials).context("logging in");
        assert_eq!(error_code(&err), "wrong_credentials");
        assert_eq!(format!("{err:#}"), "logging in: wrong username or password");
        assert_eq!(error_code(&anyhow::anyhow!("plain")), "error");
    }

    #[test]
    fn one_line_collapses_newlines() {
        assert_eq!(one_line("a\n  b\r\nc "), "a b c");
    }
}
