//! `cairn config get|set KEY [VALUE]`.
//!
//! Named keys map to config fields (`server`, `device`; `username` is read-only because login
//! sets it); any other well-formed key is a free-form setting. The session itself
//! (`refresh_token`, the QUIC pin) is never shown or set here.

use std::path::Path;

use cairn_client::config::{Config, check_device_name};
use cairn_client::rest::normalize_server_url;
use serde::Serialize;

use crate::output::{Report, fail, warn};

/// Longest free-form key, in bytes.
const SETTING_KEY_BYTES_MAX: usize = 64;

/// Longest free-form value, in bytes: settings are switches and short strings, and the whole
/// file stays far below `config::CONFIG_FILE_SIZE_MAX` even with hundreds of them.
const SETTING_VALUE_BYTES_MAX: usize = 4096;

/// `--json` output of `get` and `set`.
#[derive(Serialize)]
struct Setting {
    key: String,
    value: String,
}

/// What a key names.
#[derive(Debug, PartialEq, Eq)]
enum Key<'a> {
    Server,
    Device,
    Username,
    Secret,
    Free(&'a str),
}

/// `cairn config get KEY`.
///
/// # Errors
/// An unknown, secret or unset key; config errors.
pub(crate) fn get(config_dir: &Path, key: &str) -> anyhow::Result<Report> {
    let parsed = parse_key(key)?;
    let config = Config::load(config_dir)?;
    let value = match parsed {
        Key::Server => config.server,
        Key::Device => Some(config.device),
        Key::Username => config.username,
        Key::Secret => return Err(secret(key)),
        Key::Free(name) => config.settings.get(name).cloned(),
    };
    let Some(value) = value else {
        return Err(fail(
            "not_set",
            format!("'{key}' is not set; run `cairn config set {key} VALUE`"),
        ));
    };
    let body = Setting {
        key: key.to_owned(),
        value: value.clone(),
    };
    Report::new(value, &body)
}

/// `cairn config set KEY VALUE`. Changing `server` forgets the session and QUIC pin of the old
/// one, since they mean nothing to the new server.
///
/// # Errors
/// An unknown, secret or read-only key; an invalid value; config errors.
pub(crate) fn set(config_dir: &Path, key: &str, value: &str) -> anyhow::Result<Report> {
    let parsed = parse_key(key)?;
    let value = match parsed {
        Key::Server => normalize_server_url(value)?,
        Key::Device => {
            check_device_name(value)?;
            value.to_owned()
        }
        Key::Username => {
            return Err(fail(
                "read_only",
                "'username' is set by logging in; run `cairn user login --username U`",
            ));
        }
        Key::Secret => return Err(secret(key)),
        Key::Free(_) => {
            if value.len() > SETTING_VALUE_BYTES_MAX {
                return Err(fail(
                    "invalid_value",
                    format!(
                        "the value is {} bytes; the limit is {SETTING_VALUE_BYTES_MAX}",
                        value.len()
                    ),
                ));
            }
            value.to_owned()
        }
    };
    let stored = value.clone();
    let forgot_session = Config::update(config_dir, move |config| match parsed {
        Key::Server => {
            let changed = config.server.as_deref() != Some(stored.as_str());
            let forgot = changed && config.refresh_token.is_some();
            if changed {
                config.refresh_token = None;
                config.quic = None;
                config.username = None;
            }
            config.server = Some(stored);
            forgot
        }
        Key::Device => {
            config.device = stored;
            false
        }
        Key::Free(name) => {
            config.settings.insert(name.to_owned(), stored);
            false
        }
        // Refused above.
        Key::Username | Key::Secret => false,
    })?;
    if forgot_session {
        warn(
            "the server changed, so the session for the old one is forgotten; run `cairn user login`",
        );
    }
    let human = format!("{key} = {value}");
    let body = Setting {
        key: key.to_owned(),
        value,
    };
    Report::new(human, &body)
}

fn parse_key(key: &str) -> anyhow::Result<Key<'_>> {
    match key {
        "server" => return Ok(Key::Server),
        "device" => return Ok(Key::Device),
        "username" => return Ok(Key::Username),
        "refresh_token" | "quic" | "settings" => return Ok(Key::Secret),
        _ => {}
    }
    let first_ok = key.chars().next().is_some_and(|c| c.is_ascii_lowercase());
    let rest_ok = key
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '.' | '-'));
    if !first_ok || !rest_ok || key.len() > SETTING_KEY_BYTES_MAX {
        return Err(fail(
            "invalid_key",
            format!(
                "invalid key '{key}'; keys are server, device, username, or up to {SETTING_KEY_BYTES_MAX} lowercase letters, digits, '_', '.', '-' starting with a letter"
            ),
        ));
    }
    Ok(Key::Free(key))
}

fn secret(key: &str) -> anyhow::Error {
    fail(
        "reserved_key",
        format!("'{key}' is kept by `cairn user login` and cannot be read or set here"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        assert_eq!(parse_key("server").expect("key"), Key::Server);
        assert_eq!(parse_key("refresh_token").expect("key"), Key::Secret);
        assert_eq!(
            parse_key("conflict_copies").expect("key"),
            Key::Free("conflict_copies")
        );
        for bad in ["", "Upper", "1abc", "a b", "a/b", &"a".repeat(65)] {
            assert!(parse_key(bad).is_err(), "{bad:?}");
        }
    }
}
