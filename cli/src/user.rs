//! `cairn user register|login|logout|whoami`.
//!
//! A login keeps the server URL, the username and the refresh token in the config directory
//! (saved before anything else happens, since the token is the session), then pins the server's
//! QUIC certificate from `GET /sync/info`. Nothing here decides sync policy.

use std::path::{Path, PathBuf};

use cairn_client::config::{Config, QuicPin};
use cairn_client::rest::{RestClient, RestError, quic_addr_for};
use cairn_protocol::api::{LoginRequest, Password, RefreshToken, RegisterRequest, TokenResponse};
use serde::Serialize;

use crate::args::{LoginArgs, PasswordArgs, RegisterArgs};
use crate::output::{Report, fail, warn};
use crate::password::{self, Ask};

/// `--json` output of `register` and `login`.
#[derive(Serialize)]
struct LoggedIn {
    username: String,
    server: String,
    device: String,
    /// The pinned QUIC endpoint; `null` when the server did not say.
    quic: Option<QuicPin>,
}

/// `--json` output of `register`: the new user, then the login.
#[derive(Serialize)]
struct Registered {
    id: i64,
    email: String,
    #[serde(flatten)]
    login: LoggedIn,
}

/// `--json` output of `logout`.
#[derive(Serialize)]
struct LoggedOut {
    /// The server the session was for; `null` when nobody was logged in.
    server: Option<String>,
    /// True when the server confirmed the session is revoked.
    revoked: bool,
}

/// `--json` output of `whoami`.
#[derive(Serialize)]
struct WhoAmI {
    username: String,
    server: String,
    device: String,
}

/// `cairn user register`: registers, then logs in like `cairn user login`.
///
/// # Errors
/// Server refusals (taken name, weak password), transport and config errors.
pub(crate) async fn register(
    args: &RegisterArgs,
    config_dir: &Path,
    password_env: Option<String>,
) -> anyhow::Result<Report> {
    let rest = RestClient::new(&args.server)?;
    warn_if_unencrypted(&rest);
    let password = read_password(&args.password, password_env, Ask::Twice).await?;
    let user = rest
        .register(&RegisterRequest {
            username: args.username.clone(),
            email: args.email.clone(),
            password: password.clone(),
        })
        .await?;
    let login = log_in(&rest, &user.username, password, config_dir).await?;
    let human = format!(
        "registered {} at {}; logged in on device {}",
        login.username, login.server, login.device
    );
    let body = Registered {
        id: user.id,
        email: user.email,
        login,
    };
    Report::new(human, &body)
}

/// `cairn user login`.
///
/// # Errors
/// Wrong credentials, rate limits, transport and config errors; a missing server or username
/// when neither the flags nor the config have one.
pub(crate) async fn login(
    args: &LoginArgs,
    config_dir: &Path,
    password_env: Option<String>,
) -> anyhow::Result<Report> {
    let saved = load(config_dir).await?;
    let server = args.server.clone().or(saved.server).ok_or_else(|| {
        fail(
            "no_server",
            "no server given or saved; run `cairn user login --server URL --username U`",
        )
    })?;
    let username = args.username.clone().or(saved.username).ok_or_else(|| {
        fail(
            "no_username",
            "no username given or saved; run `cairn user login --username U`",
        )
    })?;
    let rest = RestClient::new(&server)?;
    warn_if_unencrypted(&rest);
    let password = read_password(&args.password, password_env, Ask::Once).await?;
    let login = log_in(&rest, &username, password, config_dir).await?;
    let human = format!(
        "logged in as {} at {} on device {}",
        login.username, login.server, login.device
    );
    Report::new(human, &login)
}

/// `cairn user logout`: revokes the session at the server, then forgets it here. Forgetting
/// happens even when the server cannot be reached; the command says so and still succeeds.
///
/// # Errors
/// Config errors only.
pub(crate) async fn logout(config_dir: &Path) -> anyhow::Result<Report> {
    let config = load(config_dir).await?;
    let (Some(server), Some(token)) = (config.server, config.refresh_token) else {
        let body = LoggedOut {
            server: None,
            revoked: false,
        };
        return Report::new("not logged in; nothing to do", &body);
    };
    let revoked = match RestClient::new(&server) {
        Ok(rest) => rest.logout(&token).await,
        Err(err) => Err(err),
    };
    update(config_dir, |config| config.refresh_token = None).await?;
    let human = match &revoked {
        Ok(()) => format!("logged out of {server}"),
        Err(err) => {
            warn(&format!(
                "could not end the session at the server: {err}; forgot it here anyway"
            ));
            format!("logged out here; the server at {server} was not told")
        }
    };
    let body = LoggedOut {
        server: Some(server),
        revoked: revoked.is_ok(),
    };
    Report::new(human, &body)
}

/// `cairn user whoami`: reads the config only; it does not ask the server.
///
/// # Errors
/// [`RestError::NotLoggedIn`] when no session is kept.
pub(crate) fn whoami(config_dir: &Path) -> anyhow::Result<Report> {
    let config = Config::load(config_dir)?;
    let (Some(server), Some(_), Some(username)) =
        (config.server, config.refresh_token, config.username)
    else {
        return Err(RestError::NotLoggedIn.into());
    };
    let human = format!("{username} at {server} (device {})", config.device);
    let body = WhoAmI {
        username,
        server,
        device: config.device,
    };
    Report::new(human, &body)
}

/// Warns before a password goes over plain HTTP to another machine.
fn warn_if_unencrypted(rest: &RestClient) {
    if cairn_client::rest::is_unencrypted_remote(rest.server()) {
        warn(&format!(
            "{} is plain http: your password and session travel unencrypted; for a server on another machine use https:// (a TLS reverse proxy in front of it)",
            rest.server()
        ));
    }
}

/// Logs in, saves the session, pins the QUIC certificate (warning when the server cannot say).
async fn log_in(
    rest: &RestClient,
    username: &str,
    password: Password,
    config_dir: &Path,
) -> anyhow::Result<LoggedIn> {
    let tokens = rest
        .login(&LoginRequest {
            username: username.to_owned(),
            password,
        })
        .await?;
    let server = rest.server().to_owned();
    let (config, replaced) = save_session(config_dir, &server, username, &tokens).await?;
    if let (Some(old_server), Some(old_token)) = replaced {
        // The session this login replaces ends at its server too, or its refresh token would
        // stay usable, unseen, until it expires. Best effort: it may be spent or expired
        // already, or its server gone.
        if let Ok(old) = RestClient::new(&old_server) {
            let _ = old.logout(&old_token).await;
        }
    }
    let quic = pin_quic(rest, config_dir).await?;
    Ok(LoggedIn {
        username: username.to_owned(),
        server,
        device: config.device,
        quic,
    })
}

/// Saves the server, username and refresh token at once: the token is the session, and a
/// failure after this point must not lose it. Also returns the session it replaced (server and
/// refresh token), read under the same lock, so a daemon's rotation of it is not missed.
async fn save_session(
    config_dir: &Path,
    server: &str,
    username: &str,
    tokens: &TokenResponse,
) -> anyhow::Result<(Config, (Option<String>, Option<RefreshToken>))> {
    let server = server.to_owned();
    let username = username.to_owned();
    let refresh_token = tokens.refresh_token.clone();
    update(config_dir, move |config| {
        let replaced = (config.server.clone(), config.refresh_token.take());
        if config.server.as_deref() != Some(server.as_str()) {
            // A pin belongs to the server it came from.
            config.quic = None;
        }
        config.server = Some(server);
        config.username = Some(username);
        config.refresh_token = Some(refresh_token);
        (config.clone(), replaced)
    })
    .await
}

/// Asks the server for its QUIC endpoint and certificate fingerprint and pins them. A server
/// without `/sync/info` (or a failing one) is a warning: the login itself has succeeded.
async fn pin_quic(rest: &RestClient, config_dir: &Path) -> anyhow::Result<Option<QuicPin>> {
    match rest.sync_info().await {
        Ok(info) => {
            let pin = QuicPin {
                addr: quic_addr_for(rest.server(), &info),
                fingerprint: info.fingerprint,
            };
            let saved = pin.clone();
            update(config_dir, move |config| config.quic = Some(saved)).await?;
            Ok(Some(pin))
        }
        Err(err) => {
            let kept = load(config_dir).await?.quic;
            let next = if kept.is_some() {
                "keeping the pin from before"
            } else {
                "continuing without a pin"
            };
            warn(&format!(
                "could not pin the server's QUIC certificate: {err}; {next}"
            ));
            Ok(kept)
        }
    }
}

async fn read_password(
    args: &PasswordArgs,
    password_env: Option<String>,
    ask: Ask,
) -> anyhow::Result<Password> {
    let sources = password::Sources {
        from_stdin: args.password_stdin,
        from_env: password_env,
    };
    // Reading stdin or the terminal blocks; keep it off the runtime's threads.
    tokio::task::spawn_blocking(move || password::read(sources, ask)).await?
}

async fn load(config_dir: &Path) -> anyhow::Result<Config> {
    let dir = PathBuf::from(config_dir);
    Ok(tokio::task::spawn_blocking(move || Config::load(&dir)).await??)
}

async fn update<T: Send + 'static>(
    config_dir: &Path,
    change: impl FnOnce(&mut Config) -> T + Send + 'static,
) -> anyhow::Result<T> {
    let dir = PathBuf::from(config_dir);
    Ok(tokio::task::spawn_blocking(move || Config::update(&dir, change)).await??)
}
