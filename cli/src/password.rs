//! Where a password comes from: `--password-stdin`, else `$CAIRN_PASSWORD`, else a prompt on
//! the terminal (twice when choosing a new one). It never goes to a log or to stdout.

use std::io::BufRead;

use cairn_protocol::api::Password;

use crate::output::fail;

/// Longest password accepted, in bytes: the server's limit. Reading stops just past it, so a
/// huge stdin is never read into memory.
const PASSWORD_BYTES_MAX: usize = 1024;

/// How many times to ask on a terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ask {
    /// Logging in.
    Once,
    /// Choosing a new password: ask again and compare.
    Twice,
}

/// The sources, gathered by the caller.
#[derive(Debug)]
pub(crate) struct Sources {
    /// `--password-stdin`.
    pub(crate) from_stdin: bool,
    /// `$CAIRN_PASSWORD`.
    pub(crate) from_env: Option<String>,
}

/// Reads the password from the first available source. Blocks on stdin or the terminal.
///
/// # Errors
/// An empty or over-long password, mismatching prompts, or no source at all.
pub(crate) fn read(sources: Sources, ask: Ask) -> anyhow::Result<Password> {
    let password = if sources.from_stdin {
        first_line(std::io::stdin().lock())?
    } else if let Some(password) = sources.from_env {
        password
    } else {
        prompt(ask)?
    };
    if password.is_empty() {
        return Err(fail("empty_password", "the password is empty"));
    }
    if password.len() > PASSWORD_BYTES_MAX {
        return Err(fail(
            "password_too_long",
            format!("the password is over {PASSWORD_BYTES_MAX} bytes"),
        ));
    }
    Ok(Password(password))
}

/// The first line of `input`, without its line ending.
fn first_line(input: impl BufRead) -> anyhow::Result<String> {
    let limit = u64::try_from(PASSWORD_BYTES_MAX + 2).unwrap_or(u64::MAX);
    let mut line = String::new();
    input.take(limit).read_line(&mut line).map_err(|err| {
        fail(
            "password_stdin",
            format!("cannot read the password from stdin: {err}"),
        )
    })?;
    let line = line.strip_suffix('\n').unwrap_or(&line);
    let line = line.strip_suffix('\r').unwrap_or(line);
    Ok(line.to_owned())
}

fn prompt(ask: Ask) -> anyhow::Result<String> {
    let no_terminal = |err: std::io::Error| {
        fail(
            "no_password",
            format!(
                "cannot ask for a password ({err}); pipe it with --password-stdin or set CAIRN_PASSWORD"
            ),
        )
    };
    let first = rpassword::prompt_password("password: ").map_err(no_terminal)?;
    if ask == Ask::Twice {
        let again = rpassword::prompt_password("password again: ").map_err(no_terminal)?;
        if again != first {
            return Err(fail(
                "password_mismatch",
                "the passwords do not match; try again",
            ));
        }
    }
    Ok(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_line_strips_the_line_ending() {
        let check = |input: &str, expect: &str| {
            assert_eq!(
                first_line(input.as_bytes()).expect("read"),
                expect,
                "{input:?}"
            );
        };
        check("hunter22\n", "hunter22");
        check("hunter22\r\nsecond line\n", "hunter22");
        check("no newline", "no newline");
        check("", "");
    }

    #[test]
    fn sources_are_checked() {
        let from_env = |value: &str| Sources {
            from_stdin: false,
            from_env: Some(value.to_owned()),
        };
        assert_eq!(read(from_env("pw"), Ask::Once).expect("env").0, "pw");
        assert!(read(from_env(""), Ask::Once).is_err());
        assert!(read(from_env(&"x".repeat(PASSWORD_BYTES_MAX + 1)), Ask::Once).is_err());
    }
}
